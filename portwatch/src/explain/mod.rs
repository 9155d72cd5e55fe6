//! `explain`: why a bind() fails with `EADDRINUSE` or a connect() with `EADDRNOTAVAIL`,
//! from the kernel's own rules applied to the owners of the port.
//!
//! [`ask`] is the command path of `explain bind`/`explain connect` (the owners read from
//! the kernel by a verbose snapshot, turned into the engine's input by [`query`]);
//! [`live`] explains the failures `trace` and `top` see, as they happen.
//!
//! The engine ([`bind`], [`connect`]) is pure: it is given the owners (address, family,
//! TCP state, `SO_REUSEADDR`, `SO_REUSEPORT`, uid, `IPV6_V6ONLY`, bound device), the
//! bucket's fast-path state, the candidate socket and the kernel [`variant::Variant`],
//! and returns the verdict, every conflicting owner with the rule it trips and the changes
//! that would make the call succeed. [`judge`] generates cases, asks the engine, then makes
//! the calls in private network namespaces: the running kernel decides who is right.
//!
//! # The rules, as the kernel sources state them
//!
//! Read in `net/ipv4/inet_connection_sock.c`, `net/ipv4/inet_hashtables.c`,
//! `net/ipv4/tcp_ipv4.c` and `net/ipv6/af_inet6.c` of 5.10.251, 6.1.176 and 6.18.15
//! (Debian's sources), and of mainline between 6.12 and 6.14 for the 6.8 clean-up.
//!
//! | rule | condition | kernels | change |
//! |------|-----------|---------|--------|
//! | `reuseaddr` | two sockets share a port when both have `SO_REUSEADDR` and the owner is not listening (`inet_bind_conflict()`, `relax`) | all | — |
//! | `reuseport` | two sockets share a port when both have `SO_REUSEPORT` and the same uid, or the owner is in TIME-WAIT | all | — |
//! | `device` | owners bound to another device (`SO_BINDTODEVICE`, both non-zero and different) never conflict | all | — |
//! | `owner_walk` | otherwise an owner conflicts when `inet_rcv_saddr_equal(sk, sk2, true)`: same address; a wildcard of the same family; `::` without `IPV6_V6ONLY` against any IPv4; a v4-mapped address against its IPv4 form (and `::ffff:0.0.0.0` against IPv4 and v4-mapped addresses) | every bind before 6.1; wildcard binds (`0.0.0.0`, `::`, `::ffff:0.0.0.0`) since | 28044fc1d495 (6.1) |
//! | `ipv6_specific_is_v6only` | an IPv6 socket bound to a specific non-v4-mapped address is made v6-only; one bound to `::` and connected keeps `IPV6_V6ONLY` off and an IPv4 shadow address 127.0.0.6, which an IPv4 wildcard bind meets | all | — |
//! | `bhash2_bind` | a bind to a specific address checks only owners hanging on its own (port, address) bucket — IPv4 and v4-mapped forms share one — and on the port's wildcard buckets | 6.1+ | 28044fc1d495 |
//! | `bhash2_timewait` | TIME-WAIT owners are on those per-address buckets too | 6.2+, 6.1.y stable | 936a192f9740 |
//! | `bhash2_v6only_owner` | on the per-address path a v6-only owner never conflicts with an IPv4 or v4-mapped bind | 6.9+, 6.1.168+ | ea111449501e |
//! | `bind2_no_family` | per-address buckets hold IPv4 as v4-mapped and no family, so a `0.0.0.0` / `::ffff:0.0.0.0` bucket is a wildcard bucket for v4-mapped binds; from 6.1 to 6.7 a bucket keeps the family of the socket that created it (IPv4 and v4-mapped sockets of one address share it) and a v4-mapped bind checks it only when an IPv4 socket created it | 6.8+ | 06a8c04f8994 |
//! | `fast_reuse` | an `SO_REUSEADDR` bind skips the conflict check when `fastreuse > 0`; `sk_reuseport_match()` skips it for a same-uid `SO_REUSEPORT` bind when `fastreuseport > 0` (strict: the address must match the bucket's) | all | — |
//! | `first_owner_sets_fastreuse` | the first bind sets `fastreuse` = `SO_REUSEADDR` and `fastreuseport` = 1 (any); since 6.8 a new bucket is never seen empty: `SO_REUSEADDR` leaves 0, `SO_REUSEPORT` sets 2 (strict) | until 6.7 | 8002d44fe84d (6.8) |
//! | `listen_recheck` | listen() runs `inet_csk_get_port()` again with the socket in `TCP_LISTEN`: no `SO_REUSEADDR` fast path, and `fastreuse` drops to 0 | all | — |
//! | `connect_bucket` | connect() without a bound port scans `ip_local_port_range` minus `ip_local_reserved_ports`; a port without bucket is taken; a bucket is shared only at `fastreuse == -1 && fastreuseport == -1`, and only when the 4-tuple is unique (`__inet_check_established()`) | all | — |
//! | `connect_odd_range` | the scan steps by two over `remaining &= ~1`: in a range with an odd number of ports (more than one) the top port is never tried | all | — |
//! | `tw_reuse` | a TIME-WAIT socket on the same 4-tuple blocks the port unless `tcp_tw_reuse` (1, or 2 on loopback) lets connect() take it over once it is about a second old and both ends used timestamps (`tcp_twsk_unique()`) | all | — |
//! | `release_resets_bucket` | when an owner leaves and every remaining owner took its port through connect(), the bucket returns to -1/-1 | 6.18+ | d57f4b874946 |
//!
//! Each dated row is one [`variant::Row`], naming its change's row of the compatibility
//! table (`kernel::compat`, which holds the release, commit and backports);
//! [`variant::Variant`] holds the switches for one kernel.

pub mod ask;
pub mod bind;
pub mod connect;
pub mod judge;
pub mod lab;
pub mod live;
pub mod observe;
pub mod query;
pub mod sock;
pub mod variant;
