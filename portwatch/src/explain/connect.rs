//! Would a connect() that leaves the local port to the kernel find one: the scan of
//! `__inet_hash_connect()` over the namespace's `ip_local_port_range`, port by port.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
};

use serde::{Deserialize, Serialize};

use super::{
    sock::{BucketState, Local, Owner, OwnerState},
    variant::Variant,
};

/// `net.ipv4.tcp_tw_reuse`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TwReuse {
    /// 0: a TIME-WAIT socket on the same 4-tuple always blocks the port.
    Off,
    /// 1: it may be taken over once it is about a second old, if both ends used TCP
    /// timestamps.
    On,
    /// 2 (the default): as 1, for TIME-WAIT sockets on loopback addresses only.
    Loopback,
}

impl TwReuse {
    pub fn from_sysctl(v: u32) -> TwReuse {
        match v {
            0 => TwReuse::Off,
            1 => TwReuse::On,
            _ => TwReuse::Loopback,
        }
    }
}

/// The connect() in question.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Query {
    /// The source address (as routing picks it, or as bound with
    /// `IP_BIND_ADDRESS_NO_PORT`).
    pub src: IpAddr,
    pub dst: SocketAddr,
    /// `net.ipv4.ip_local_port_range`.
    pub range: (u16, u16),
    /// `net.ipv4.ip_local_reserved_ports`, as inclusive ranges.
    pub reserved: Vec<(u16, u16)>,
    pub tw_reuse: TwReuse,
}

/// One bucket of the range: its state and owners.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Bucket {
    pub state: BucketState,
    pub owners: Vec<Owner>,
}

/// What one port of the range is for this connect().
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// No bucket: connect() creates one.
    Free,
    /// A bucket at -1/-1 whose owners use other 4-tuples: connect() shares it.
    Shared,
    /// A bucket at -1/-1 with an owner on this very (source, destination) pair.
    UsedToDestination,
    /// As `UsedToDestination`, but every such owner is a TIME-WAIT socket that
    /// `tcp_tw_reuse` lets connect() take over once it is old enough.
    TimeWaitReusable,
    /// `fastreuse` or `fastreuseport` is not -1: bind() put a socket there.
    Blocked,
    /// Listed in `ip_local_reserved_ports`.
    Reserved,
}

/// Whether the scan reaches a port. It steps by two over `remaining &= ~1` ports from a
/// per-destination, randomly perturbed even offset, so in a range with an odd number of
/// ports (more than one) each attempt misses one end: the top port when the offset is 0,
/// the bottom port otherwise (with three ports the offset is always 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scan {
    Always,
    /// Reached by some attempts only.
    Sometimes,
    Never,
}

/// Which ports of `lo..=hi` the scan reaches.
pub fn scan_of(lo: u16, hi: u16, port: u16) -> Scan {
    let count = u32::from(hi) - u32::from(lo) + 1;
    if count <= 1 || count % 2 == 0 {
        return Scan::Always;
    }
    if count == 3 {
        return if port == hi {
            Scan::Never
        } else {
            Scan::Always
        };
    }
    if port == lo || port == hi {
        Scan::Sometimes
    } else {
        Scan::Always
    }
}

/// One port's verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PortVerdict {
    pub port: u16,
    pub class: Class,
    pub scan: Scan,
    /// Indices into the bucket's owners: for `Blocked`, the owners that did not come from
    /// connect(); for `UsedToDestination`/`TimeWaitReusable`, the owners on the same
    /// 4-tuple.
    pub holders: Vec<usize>,
    /// Closing every holder makes the port usable for this connect().
    pub freed_by_closing_holders: bool,
}

/// The result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    #[serde(rename = "ok")]
    Ok,
    #[serde(rename = "EADDRNOTAVAIL")]
    Eaddrnotavail,
    /// Only ports that some attempts skip are usable (see [`Scan`]): the kernel's
    /// randomly perturbed start decides.
    #[serde(rename = "ok_or_EADDRNOTAVAIL")]
    Depends,
}

/// What [`check`] found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    pub verdict: Verdict,
    pub range: (u16, u16),
    /// Ports of the range that are reserved.
    pub reserved: usize,
    pub free: usize,
    pub shared_usable: usize,
    pub used_to_destination: usize,
    pub time_wait_reusable: usize,
    pub blocked: usize,
    /// Usable ports that only some attempts reach.
    pub usable_sometimes_skipped: usize,
    /// Every port of the range, in order.
    pub ports: Vec<PortVerdict>,
}

impl Report {
    /// Ports a connect() can take now (free or shared), whether or not every attempt
    /// reaches them.
    pub fn usable(&self) -> impl Iterator<Item = u16> + '_ {
        self.ports
            .iter()
            .filter(|p| matches!(p.class, Class::Free | Class::Shared) && p.scan != Scan::Never)
            .map(|p| p.port)
    }
}

fn is_loopback(a: IpAddr) -> bool {
    match Local(a).canonical() {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback(),
    }
}

/// `tcp_twsk_unique()` as reached from the port scan (`twp != NULL`): can connect() take
/// over this TIME-WAIT socket's 4-tuple (given that it is old enough)?
fn tw_takeover_allowed(o: &Owner, reuse: TwReuse) -> bool {
    match reuse {
        TwReuse::Off => false,
        TwReuse::On => true,
        TwReuse::Loopback => {
            o.sock.opts.bound_dev == 1
                || is_loopback(o.sock.local.0)
                || o.remote.is_some_and(|r| is_loopback(r.ip()))
        }
    }
}

fn same_tuple(o: &Owner, q: &Query) -> bool {
    let Some(r) = o.remote else { return false };
    r.port() == q.dst.port()
        && Local(r.ip()).canonical() == Local(q.dst.ip()).canonical()
        && o.sock.local.canonical() == Local(q.src).canonical()
}

fn is_reserved(q: &Query, port: u16) -> bool {
    q.reserved
        .iter()
        .any(|(lo, hi)| (*lo..=*hi).contains(&port))
}

/// Classifies one port with a bucket at -1/-1 (or after its holders left).
fn shared_class(owners: &[Owner], skip: &[usize], q: &Query) -> (Class, Vec<usize>) {
    let same: Vec<usize> = owners
        .iter()
        .enumerate()
        .filter(|(i, o)| !skip.contains(i) && same_tuple(o, q))
        .map(|(i, _)| i)
        .collect();
    if same.is_empty() {
        return (Class::Shared, same);
    }
    let all_tw = same.iter().all(|i| {
        owners[*i].state == OwnerState::TimeWait && tw_takeover_allowed(&owners[*i], q.tw_reuse)
    });
    (
        if all_tw {
            Class::TimeWaitReusable
        } else {
            Class::UsedToDestination
        },
        same,
    )
}

/// Scans the range as `__inet_hash_connect()` does. `buckets` holds the buckets of the
/// namespace by port (ports outside the range are ignored).
pub fn check(q: &Query, buckets: &BTreeMap<u16, Bucket>, v: &Variant) -> Report {
    let (lo, hi) = q.range;
    let mut ports = Vec::new();
    for port in lo..=hi {
        let scan = scan_of(lo, hi, port);
        let pv = |class, holders, freed| PortVerdict {
            port,
            class,
            scan,
            holders,
            freed_by_closing_holders: freed,
        };
        let v_ = if is_reserved(q, port) {
            pv(Class::Reserved, Vec::new(), false)
        } else {
            match buckets.get(&port) {
                None => pv(Class::Free, Vec::new(), false),
                Some(b) if b.state.shared_by_connect() => {
                    let (class, holders) = shared_class(&b.owners, &[], q);
                    let freed = class != Class::Shared
                        && shared_class(&b.owners, &holders, q).0 == Class::Shared;
                    pv(class, holders, freed)
                }
                Some(b) => {
                    // The owners connect() did not put there keep the bucket off -1/-1.
                    let holders: Vec<usize> = (0..b.owners.len())
                        .filter(|i| b.owners[*i].connect_bind != Some(true))
                        .collect();
                    let freed = if holders.len() == b.owners.len() {
                        true
                    } else if v.release_resets_bucket {
                        shared_class(&b.owners, &holders, q).0 == Class::Shared
                    } else {
                        false
                    };
                    pv(Class::Blocked, holders, freed)
                }
            }
        };
        ports.push(v_);
    }
    let n = |c: Class| ports.iter().filter(|p| p.class == c).count();
    let usable = |p: &&PortVerdict| {
        matches!(
            p.class,
            Class::Free | Class::Shared | Class::TimeWaitReusable
        )
    };
    let always = ports.iter().filter(usable).any(|p| p.scan == Scan::Always);
    let sometimes = ports
        .iter()
        .filter(usable)
        .filter(|p| p.scan == Scan::Sometimes)
        .count();
    Report {
        verdict: if always {
            Verdict::Ok
        } else if sometimes > 0 {
            Verdict::Depends
        } else {
            Verdict::Eaddrnotavail
        },
        range: q.range,
        reserved: n(Class::Reserved),
        free: n(Class::Free),
        shared_usable: n(Class::Shared),
        used_to_destination: n(Class::UsedToDestination),
        time_wait_reusable: n(Class::TimeWaitReusable),
        blocked: n(Class::Blocked),
        usable_sometimes_skipped: sometimes,
        ports,
    }
}

#[cfg(test)]
mod tests {
    use super::{
        super::{
            sock::{SharingOpts, Sock},
            variant::KernelVersion,
        },
        *,
    };

    fn q(lo: u16, hi: u16) -> Query {
        Query {
            src: "127.0.0.1".parse().unwrap(),
            dst: "127.9.9.9:1234".parse().unwrap(),
            range: (lo, hi),
            reserved: Vec::new(),
            tw_reuse: TwReuse::Off,
        }
    }

    fn connected(
        local: &str,
        remote: &str,
        state: OwnerState,
        connect_bind: Option<bool>,
    ) -> Owner {
        Owner {
            sock: Sock::new(local.parse().unwrap(), SharingOpts::plain(0)),
            state,
            remote: Some(remote.parse().unwrap()),
            bucket_family: None,
            connect_bind,
        }
    }

    fn v(major: u16, minor: u16) -> Variant {
        Variant::for_version(KernelVersion::new(major, minor, 0))
    }

    #[test]
    fn quiz_3_bound_port_blocks_connect() {
        // s1 bound 127.1.1.1:0 (got 60000, bucket 0) and connected; s2's connect fails.
        let mut b = BTreeMap::new();
        b.insert(
            60000,
            Bucket {
                state: BucketState {
                    fastreuse: 0,
                    fastreuseport: 0,
                    fastuid: None,
                    fast_addr: None,
                },
                owners: vec![connected(
                    "127.1.1.1",
                    "127.9.9.9:1234",
                    OwnerState::Other,
                    Some(false),
                )],
            },
        );
        let r = check(&q(60000, 60000), &b, &v(6, 18));
        assert_eq!(r.verdict, Verdict::Eaddrnotavail);
        assert_eq!((r.blocked, r.free), (1, 0));
        assert_eq!(r.ports[0].holders, vec![0]);
        assert!(r.ports[0].freed_by_closing_holders);
    }

    #[test]
    fn shared_ports_and_four_tuples() {
        let mut b = BTreeMap::new();
        b.insert(
            60000,
            Bucket {
                state: BucketState::CONNECT,
                owners: vec![connected(
                    "127.0.0.1",
                    "127.8.8.8:1234",
                    OwnerState::Other,
                    None,
                )],
            },
        );
        b.insert(
            60001,
            Bucket {
                state: BucketState::CONNECT,
                owners: vec![connected(
                    "127.0.0.1",
                    "127.9.9.9:1234",
                    OwnerState::Other,
                    None,
                )],
            },
        );
        b.insert(
            60002,
            Bucket {
                state: BucketState::CONNECT,
                owners: vec![connected(
                    "127.0.0.2",
                    "127.9.9.9:1234",
                    OwnerState::Other,
                    None,
                )],
            },
        );
        b.insert(
            60003,
            Bucket {
                state: BucketState::CONNECT,
                owners: vec![connected(
                    "127.0.0.1",
                    "127.9.9.9:1234",
                    OwnerState::TimeWait,
                    None,
                )],
            },
        );
        let r = check(&q(60000, 60003), &b, &v(6, 1));
        let classes: Vec<Class> = r.ports.iter().map(|p| p.class).collect();
        assert_eq!(
            classes,
            vec![
                Class::Shared,
                Class::UsedToDestination,
                Class::Shared,
                Class::UsedToDestination
            ]
        );
        assert_eq!(r.verdict, Verdict::Ok);
        let mut tw = q(60000, 60003);
        tw.tw_reuse = TwReuse::Loopback;
        assert_eq!(
            check(&tw, &b, &v(6, 1)).ports[3].class,
            Class::TimeWaitReusable
        );
    }

    #[test]
    fn odd_ranges_skip_an_end_port_and_reserved_ports_are_skipped() {
        let mut query = q(60000, 60002);
        query.reserved = vec![(60000, 60000)];
        let r = check(&query, &BTreeMap::new(), &v(6, 18));
        let classes: Vec<(Class, Scan)> = r.ports.iter().map(|p| (p.class, p.scan)).collect();
        assert_eq!(
            classes,
            vec![
                (Class::Reserved, Scan::Always),
                (Class::Free, Scan::Always),
                (Class::Free, Scan::Never)
            ]
        );
        assert_eq!(r.verdict, Verdict::Ok);
        // Five ports: each attempt misses 60000 or 60004.
        let mut query = q(60000, 60004);
        query.reserved = vec![(60001, 60003)];
        let r = check(&query, &BTreeMap::new(), &v(6, 18));
        assert_eq!(r.verdict, Verdict::Depends);
        assert_eq!(r.usable_sometimes_skipped, 2);
        assert_eq!(scan_of(60000, 60003, 60003), Scan::Always);
        // A single-port range is scanned.
        assert_eq!(check(&q(60000, 60000), &BTreeMap::new(), &v(6, 18)).free, 1);
    }

    #[test]
    fn closing_the_bound_owner_frees_the_port_on_6_18_only() {
        let bound = Owner::new(
            Sock::new("127.0.0.2".parse().unwrap(), SharingOpts::plain(0)),
            OwnerState::Other,
        );
        let mut b = BTreeMap::new();
        b.insert(
            60000,
            Bucket {
                state: BucketState {
                    fastreuse: 0,
                    fastreuseport: 0,
                    fastuid: None,
                    fast_addr: None,
                },
                owners: vec![
                    connected("127.0.0.1", "127.8.8.8:1234", OwnerState::Other, Some(true)),
                    bound,
                ],
            },
        );
        let r = check(&q(60000, 60000), &b, &v(6, 18));
        assert_eq!(r.ports[0].holders, vec![1]);
        assert!(r.ports[0].freed_by_closing_holders);
        let mut old = b.clone();
        if let Some(x) = old.get_mut(&60000) {
            x.owners[0].connect_bind = None;
        }
        let r = check(&q(60000, 60000), &old, &v(6, 12));
        assert_eq!(r.ports[0].holders, vec![0, 1]);
        assert!(
            r.ports[0].freed_by_closing_holders,
            "closing every owner destroys the bucket"
        );
    }
}
