//! What the rules read about a socket: the fields of `struct sock` (and of
//! `struct inet_timewait_sock` for TIME-WAIT owners) that `inet_csk_get_port()` and
//! `__inet_hash_connect()` look at, with the address comparisons the kernel makes on them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::Serialize;

/// `LOOPBACK4_IPV6`: the IPv4 address the kernel stores in `sk_rcv_saddr` of an IPv6
/// socket whose address has no IPv4 form (`__inet6_bind`, `tcp_v6_connect`).
pub const LOOPBACK4_IPV6: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);

/// The sharing options and identity of one socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct SharingOpts {
    /// `SO_REUSEADDR` (`sk_reuse`).
    pub reuseaddr: bool,
    /// `SO_REUSEPORT` (`sk_reuseport`).
    pub reuseport: bool,
    /// Owner uid of the socket (`sk_uid`: the fsuid that created it).
    pub uid: u32,
    /// `IPV6_V6ONLY` (`sk_ipv6only`). The kernel sets it on an IPv6 socket bound to a
    /// specific, non-v4-mapped address.
    pub v6only: bool,
    /// `SO_BINDTODEVICE` ifindex (`sk_bound_dev_if`), 0 for none.
    pub bound_dev: u32,
}

impl SharingOpts {
    pub const fn plain(uid: u32) -> Self {
        SharingOpts {
            reuseaddr: false,
            reuseport: false,
            uid,
            v6only: false,
            bound_dev: 0,
        }
    }
}

/// A local address as a socket holds it: `V4` for an AF_INET socket, `V6` (possibly
/// v4-mapped) for an AF_INET6 socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Local(pub IpAddr);

/// The classes `ipv6_addr_type()` results are compared against in the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum V6Type {
    /// `IPV6_ADDR_ANY`: `::`.
    Any,
    /// `IPV6_ADDR_MAPPED`: `::ffff:a.b.c.d` (including `::ffff:0.0.0.0`).
    Mapped,
    Other,
}

fn v6_type(a: &Ipv6Addr) -> V6Type {
    if a.is_unspecified() {
        V6Type::Any
    } else if a.to_ipv4_mapped().is_some() {
        V6Type::Mapped
    } else {
        V6Type::Other
    }
}

impl Local {
    pub fn is_v6(self) -> bool {
        matches!(self.0, IpAddr::V6(_))
    }

    pub fn family(self) -> Family {
        if self.is_v6() {
            Family::Inet6
        } else {
            Family::Inet
        }
    }

    /// The IPv4 address a v4-mapped IPv6 address stands for.
    pub fn mapped_v4(self) -> Option<Ipv4Addr> {
        match self.0 {
            IpAddr::V6(a) => a.to_ipv4_mapped(),
            IpAddr::V4(_) => None,
        }
    }

    /// True for an IPv6 socket's v4-mapped address.
    pub fn is_mapped(self) -> bool {
        self.mapped_v4().is_some()
    }

    /// `sk_rcv_saddr`: the address itself for IPv4; for IPv6, 0 for `::`, the IPv4 address
    /// of a v4-mapped one, `LOOPBACK4_IPV6` otherwise.
    pub fn rcv_saddr(self) -> Ipv4Addr {
        match self.0 {
            IpAddr::V4(a) => a,
            IpAddr::V6(a) => match v6_type(&a) {
                V6Type::Any => Ipv4Addr::UNSPECIFIED,
                V6Type::Mapped => a.to_ipv4_mapped().unwrap_or(LOOPBACK4_IPV6),
                V6Type::Other => LOOPBACK4_IPV6,
            },
        }
    }

    /// `!inet_use_bhash2_on_bind(sk)`: `0.0.0.0`, `::` and `::ffff:0.0.0.0`.
    pub fn is_wildcard(self) -> bool {
        match self.0 {
            IpAddr::V4(a) => a.is_unspecified(),
            IpAddr::V6(a) => match v6_type(&a) {
                V6Type::Any => true,
                V6Type::Mapped => self.rcv_saddr().is_unspecified(),
                V6Type::Other => false,
            },
        }
    }

    /// The address with IPv4 and v4-mapped forms made equal (for 4-tuple comparisons).
    pub fn canonical(self) -> IpAddr {
        match self.mapped_v4() {
            Some(v4) => IpAddr::V4(v4),
            None => self.0,
        }
    }
}

/// A socket for the rules: its local address and options.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Sock {
    pub local: Local,
    pub opts: SharingOpts,
}

impl Sock {
    pub fn new(addr: IpAddr, opts: SharingOpts) -> Self {
        Sock {
            local: Local(addr),
            opts,
        }
    }

    /// `ipv6_only_sock(sk)`: only IPv6 sockets can be v6-only.
    pub fn ipv6_only(&self) -> bool {
        self.local.is_v6() && self.opts.v6only
    }

    /// The options as the kernel holds them after bind(): an IPv6 socket bound to a
    /// specific non-v4-mapped address is made v6-only (`__inet6_bind`).
    pub fn effective(mut self) -> Self {
        if let IpAddr::V6(a) = self.local.0 {
            if v6_type(&a) == V6Type::Other {
                self.opts.v6only = true;
            }
        }
        self
    }
}

/// `ipv4_rcv_saddr_equal()`.
fn ipv4_rcv_saddr_equal(
    a1: Ipv4Addr,
    a2: Ipv4Addr,
    sk2_ipv6only: bool,
    w1: bool,
    w2: bool,
) -> bool {
    if sk2_ipv6only {
        return false;
    }
    a1 == a2 || (w1 && a1.is_unspecified()) || (w2 && a2.is_unspecified())
}

/// `ipv6_rcv_saddr_equal()`; `sk2_v6` is `None` for an IPv4 `sk2` (`inet6_rcv_saddr()`).
#[allow(clippy::too_many_arguments)]
fn ipv6_rcv_saddr_equal(
    sk1_v6: &Ipv6Addr,
    sk2_v6: Option<&Ipv6Addr>,
    sk1_v4: Ipv4Addr,
    sk2_v4: Ipv4Addr,
    sk1_ipv6only: bool,
    sk2_ipv6only: bool,
    w1: bool,
    w2: bool,
) -> bool {
    let t1 = v6_type(sk1_v6);
    let t2 = sk2_v6.map_or(V6Type::Mapped, v6_type);
    if t1 == V6Type::Mapped && t2 == V6Type::Mapped {
        if !sk2_ipv6only {
            return sk1_v4 == sk2_v4
                || (w1 && sk1_v4.is_unspecified())
                || (w2 && sk2_v4.is_unspecified());
        }
        return false;
    }
    if t1 == V6Type::Any && t2 == V6Type::Any {
        return true;
    }
    if t2 == V6Type::Any && w2 && !(sk2_ipv6only && t1 == V6Type::Mapped) {
        return true;
    }
    if t1 == V6Type::Any && w1 && !(sk1_ipv6only && t2 == V6Type::Mapped) {
        return true;
    }
    matches!(sk2_v6, Some(a2) if a2 == sk1_v6)
}

/// `inet_rcv_saddr_equal(sk, sk2, true)`: do the two local addresses overlap?
pub fn rcv_saddr_equal(sk: &Sock, sk2: &Sock) -> bool {
    match sk.local.0 {
        IpAddr::V6(a1) => {
            let a2 = match sk2.local.0 {
                IpAddr::V6(a) => Some(a),
                IpAddr::V4(_) => None,
            };
            ipv6_rcv_saddr_equal(
                &a1,
                a2.as_ref(),
                sk.local.rcv_saddr(),
                sk2.local.rcv_saddr(),
                sk.ipv6_only(),
                sk2.ipv6_only(),
                true,
                true,
            )
        }
        IpAddr::V4(a1) => {
            ipv4_rcv_saddr_equal(a1, sk2.local.rcv_saddr(), sk2.ipv6_only(), true, true)
        }
    }
}

/// The address a bucket's `fast_*` fields remember (the socket that last reset
/// `fastreuseport` to strict), for `sk_reuseport_match()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct FastAddr {
    pub local: Local,
    pub ipv6_only: bool,
}

/// `sk_reuseport_match()`'s strict address test: `ipv6/ipv4_rcv_saddr_equal(tb->fast_*,
/// sk, ..., true, false)`; the bucket's address may be a wildcard, the socket's may not.
pub fn fast_addr_match(fast: &FastAddr, sk: &Sock) -> bool {
    match fast.local.0 {
        IpAddr::V6(f) => {
            let a2 = match sk.local.0 {
                IpAddr::V6(a) => Some(a),
                IpAddr::V4(_) => None,
            };
            ipv6_rcv_saddr_equal(
                &f,
                a2.as_ref(),
                fast.local.rcv_saddr(),
                sk.local.rcv_saddr(),
                fast.ipv6_only,
                sk.ipv6_only(),
                true,
                false,
            )
        }
        IpAddr::V4(f) => ipv4_rcv_saddr_equal(f, sk.local.rcv_saddr(), sk.ipv6_only(), true, false),
    }
}

/// What the rules tell apart among TCP states: `inet_bind_conflict()` tests for
/// `TCP_LISTEN` and `TCP_TIME_WAIT` only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OwnerState {
    Listen,
    TimeWait,
    /// Any other state (bound only, connecting, connected, closing).
    Other,
}

/// A socket family (the model's).
pub use crate::model::Family;

/// One owner of a port: a socket in the port's bind bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Owner {
    pub sock: Sock,
    pub state: OwnerState,
    /// The family of the per-address bucket the owner hangs on (`inet_bind2_bucket`,
    /// 6.1 to 6.7): IPv4 and v4-mapped sockets of one address share a bucket, which keeps
    /// the family of the socket that created it. `None`: the owner's own family.
    pub bucket_family: Option<Family>,
    /// The remote end of a connected (or TIME-WAIT) owner.
    pub remote: Option<SocketAddr>,
    /// The port was taken by connect() (`SOCK_CONNECT_BIND` / `tw_connect_bind`, 6.18+);
    /// `None` where the kernel does not record it.
    pub connect_bind: Option<bool>,
}

impl Owner {
    pub fn new(sock: Sock, state: OwnerState) -> Self {
        Owner {
            sock,
            state,
            bucket_family: None,
            remote: None,
            connect_bind: None,
        }
    }

    /// The family of the owner's per-address bucket.
    pub fn bucket_family(&self) -> Family {
        self.bucket_family.unwrap_or(self.sock.local.family())
    }
}

/// The fast-path state of a bind bucket (`struct inet_bind_bucket`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct BucketState {
    pub fastreuse: i8,
    pub fastreuseport: i8,
    /// `fastuid`, and the `fast_*` address, when known: `sk_reuseport_match()` needs them
    /// when `fastreuseport` is positive.
    pub fastuid: Option<u32>,
    pub fast_addr: Option<FastAddr>,
}

impl BucketState {
    /// The state `__inet_hash_connect()` gives a bucket it creates.
    pub const CONNECT: BucketState = BucketState {
        fastreuse: -1,
        fastreuseport: -1,
        fastuid: None,
        fast_addr: None,
    };

    /// `connect()` may share the port: only a -1/-1 bucket is considered.
    pub fn shared_by_connect(&self) -> bool {
        self.fastreuse < 0 && self.fastreuseport < 0
    }
}

/// `FASTREUSEPORT_ANY`.
pub const FASTREUSEPORT_ANY: i8 = 1;
/// `FASTREUSEPORT_STRICT`.
pub const FASTREUSEPORT_STRICT: i8 = 2;

#[cfg(test)]
mod tests {
    use super::*;

    fn s(a: &str, v6only: bool) -> Sock {
        let mut o = SharingOpts::plain(0);
        o.v6only = v6only;
        Sock::new(a.parse().unwrap(), o).effective()
    }

    #[test]
    fn shadow_addresses() {
        assert_eq!(
            Local("::".parse().unwrap()).rcv_saddr(),
            Ipv4Addr::UNSPECIFIED
        );
        assert_eq!(Local("::1".parse().unwrap()).rcv_saddr(), LOOPBACK4_IPV6);
        assert_eq!(
            Local("::ffff:127.0.0.2".parse().unwrap()).rcv_saddr(),
            Ipv4Addr::new(127, 0, 0, 2)
        );
        assert!(Local("::ffff:0.0.0.0".parse().unwrap()).is_wildcard());
        assert!(!Local("::1".parse().unwrap()).is_wildcard());
        assert!(
            s("::1", false).opts.v6only,
            "a specific IPv6 bind is made v6-only"
        );
        assert!(!s("::ffff:127.0.0.1", false).opts.v6only);
    }

    #[test]
    fn overlap_follows_inet_rcv_saddr_equal() {
        // Same family.
        assert!(rcv_saddr_equal(
            &s("127.0.0.1", false),
            &s("127.0.0.1", false)
        ));
        assert!(!rcv_saddr_equal(
            &s("127.0.0.1", false),
            &s("127.0.0.2", false)
        ));
        assert!(rcv_saddr_equal(
            &s("0.0.0.0", false),
            &s("127.0.0.2", false)
        ));
        assert!(rcv_saddr_equal(
            &s("127.0.0.2", false),
            &s("0.0.0.0", false)
        ));
        // Dual stack: [::] without V6ONLY covers IPv4, with V6ONLY it does not.
        assert!(rcv_saddr_equal(&s("127.0.0.1", false), &s("::", false)));
        assert!(!rcv_saddr_equal(&s("127.0.0.1", false), &s("::", true)));
        assert!(rcv_saddr_equal(&s("::", false), &s("127.0.0.1", false)));
        assert!(!rcv_saddr_equal(&s("::", true), &s("127.0.0.1", false)));
        assert!(rcv_saddr_equal(&s("::", true), &s("::", false)));
        // v4-mapped and IPv4 are the same address.
        assert!(rcv_saddr_equal(
            &s("::ffff:127.0.0.1", false),
            &s("127.0.0.1", false)
        ));
        assert!(rcv_saddr_equal(
            &s("127.0.0.1", false),
            &s("::ffff:127.0.0.1", false)
        ));
        assert!(rcv_saddr_equal(
            &s("::ffff:127.0.0.1", false),
            &s("::ffff:0.0.0.0", false)
        ));
        assert!(!rcv_saddr_equal(
            &s("::ffff:127.0.0.1", false),
            &s("::1", false)
        ));
        // A specific IPv6 address never overlaps IPv4 addresses ...
        assert!(!rcv_saddr_equal(&s("0.0.0.0", false), &s("::1", false)));
        // ... unless the socket is not v6-only (connected from [::] to [::1]): its
        // sk_rcv_saddr 127.0.0.6 then meets an IPv4 wildcard.
        let connected = Sock::new("::1".parse().unwrap(), SharingOpts::plain(0));
        assert!(rcv_saddr_equal(&s("0.0.0.0", false), &connected));
        assert!(!rcv_saddr_equal(&s("127.0.0.1", false), &connected));
    }

    #[test]
    fn fast_address_may_be_wildcard_only_on_the_bucket_side() {
        let any = FastAddr {
            local: Local("0.0.0.0".parse().unwrap()),
            ipv6_only: false,
        };
        let one = FastAddr {
            local: Local("127.0.0.1".parse().unwrap()),
            ipv6_only: false,
        };
        assert!(fast_addr_match(&any, &s("127.0.0.1", false)));
        assert!(fast_addr_match(&one, &s("127.0.0.1", false)));
        assert!(!fast_addr_match(&one, &s("0.0.0.0", false)));
    }
}
