//! Failures explained as they happen: for `trace` and `top`, each failed bind()
//! (`EADDRINUSE`) and connect() (`EADDRNOTAVAIL`) of a batch of events gets the
//! explanation `explain bind`/`explain connect` would give, attached to its event (the
//! reducer passes it on to the failure's transition).
//!
//! Cost: nothing for successful events. A failed bind reads its port's bucket with owners
//! once (a hash lookup, not a table walk); a failed connect reads its namespace's buckets
//! once. Failures of one batch on the same (namespace, port), or of connect() in the same
//! namespace, share one read. Holders come from a process table rescanned at most once a
//! second, only when a named socket is missing from it.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use super::{
    ask::rtnetlink_route_source,
    query::{explain_bind, explain_connect, BindQuery, ConnectQuery},
    variant::Variant,
};
use crate::{
    model::{Drift, Errno, Explanation, Family, Op, Snapshot, SocketEvent},
    netns::{netns_path_for_inode, run_in},
    procs::CachedProcessTable,
};

/// Reads buckets for explanations: the owners of one port, or a namespace's buckets with
/// its NET record. `ProbeSession` in production.
pub trait BucketSource {
    /// The bucket of `port` in the namespace of `struct net` `net`, with its owners.
    fn port_owners(&mut self, net: u64, port: u16) -> anyhow::Result<Snapshot>;
    /// Every bucket of namespace `netns` with owners, and its NET record from `net`.
    fn namespace(&mut self, net: u64, netns: u32) -> anyhow::Result<Snapshot>;
}

/// Explains failures with the rules of one kernel.
pub struct Explainer {
    variant: Variant,
    procs: CachedProcessTable,
    /// Routing's source address per (namespace, destination).
    sources: HashMap<(u32, SocketAddr), Option<IpAddr>>,
}

/// A failure this module explains.
fn wanted(ev: &SocketEvent) -> bool {
    match (ev.op, ev.errno) {
        (Op::Bind, Some(e)) => e == Errno::EADDRINUSE && ev.local.is_some() && ev.port != 0,
        (Op::Connect, Some(e)) => e == Errno::EADDRNOTAVAIL && ev.remote.is_some(),
        _ => false,
    }
}

impl Explainer {
    pub fn new(variant: Variant) -> Explainer {
        Explainer {
            variant,
            procs: CachedProcessTable::new(Duration::from_secs(1)),
            sources: HashMap::new(),
        }
    }

    /// Attaches an explanation to every failure of `events` this module explains and
    /// whose buckets could be read (a read that fails leaves the event unexplained).
    pub fn annotate(&mut self, src: &mut dyn BucketSource, events: &mut [SocketEvent]) {
        if !events.iter().any(|e| wanted(e) && e.net != 0) {
            return;
        }
        // Processes first: an owner that closes right after the bucket is read is still
        // in a table scanned before (a socket made since is found by a rescan).
        self.procs.refresh();
        let mut ports: HashMap<(u64, u16), Option<Snapshot>> = HashMap::new();
        let mut spaces: HashMap<u64, Option<Snapshot>> = HashMap::new();
        for ev in events.iter_mut().filter(|e| wanted(e) && e.net != 0) {
            let explained = match ev.op {
                Op::Bind => {
                    let snap = ports
                        .entry((ev.net, ev.port))
                        .or_insert_with(|| src.port_owners(ev.net, ev.port).ok());
                    match snap.as_mut() {
                        Some(s) => self.bind(s, ev),
                        None => None,
                    }
                }
                _ => {
                    let snap = spaces
                        .entry(ev.net)
                        .or_insert_with(|| src.namespace(ev.net, ev.netns).ok());
                    match snap.as_mut() {
                        Some(s) => self.connect(s, ev),
                        None => None,
                    }
                }
            };
            ev.explanation = explained;
        }
    }

    fn fill_holders(&mut self, snap: &mut Snapshot) {
        let inodes: Vec<u64> = snap
            .buckets
            .iter()
            .flat_map(|b| b.addresses.iter().flat_map(|a| a.owners.iter()))
            .filter_map(|o| o.inode)
            .collect();
        self.procs.covering(inodes).fill(snap);
    }

    fn bind(&mut self, snap: &mut Snapshot, ev: &SocketEvent) -> Option<Explanation> {
        let local = ev.local?;
        self.fill_holders(snap);
        let ip = match (local.ip(), ev.family) {
            (IpAddr::V4(v4), Some(Family::Inet6)) => IpAddr::V6(v4.to_ipv6_mapped()),
            (ip, _) => ip,
        };
        let q = BindQuery {
            addr: SocketAddr::new(ip, ev.port),
            reuseaddr: ev.opts.reuseaddr,
            reuseport: ev.opts.reuseport,
            v6only: ev.v6only,
            uid: ev.uid,
            bound_dev: u32::try_from(ev.bound_dev).unwrap_or(0),
        };
        let mut e = explain_bind(snap, ev.netns, &q, &self.variant);
        let at_failure = ev.bucket.map(|b| b.info);
        let when_read = crate::explain::query::bucket(snap, ev.netns, ev.port).map(|b| b.info);
        if at_failure != when_read {
            e.drift = Some(Drift {
                at_failure,
                when_read,
            });
        }
        Some(Explanation::Bind(e))
    }

    fn connect(&mut self, snap: &mut Snapshot, ev: &SocketEvent) -> Option<Explanation> {
        let destination = ev.remote?;
        let source = match ev.local {
            Some(l) => l.ip(),
            None => self.route_source(ev.netns, destination)?,
        };
        self.fill_holders(snap);
        let q = ConnectQuery {
            source,
            destination,
        };
        explain_connect(snap, ev.netns, &q, &self.variant).map(Explanation::Connect)
    }

    /// Routing's source address toward `dst` in namespace `netns` (remembered).
    fn route_source(&mut self, netns: u32, dst: SocketAddr) -> Option<IpAddr> {
        *self.sources.entry((netns, dst)).or_insert_with(|| {
            let path = netns_path_for_inode(netns).ok()?;
            run_in(&path, move || rtnetlink_route_source(dst.ip()).ok())
                .ok()
                .flatten()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        explain::variant::KernelVersion,
        model::{
            AddrRow, BucketInfo, BucketKey, BucketRow, Fastreuse, OwnerCount, OwnerRow, SockOpts,
            Task, TcpState,
        },
    };

    struct Fake {
        reads: usize,
        snap: Snapshot,
    }

    impl BucketSource for Fake {
        fn port_owners(&mut self, _net: u64, _port: u16) -> anyhow::Result<Snapshot> {
            self.reads += 1;
            Ok(self.snap.clone())
        }
        fn namespace(&mut self, _net: u64, _netns: u32) -> anyhow::Result<Snapshot> {
            self.reads += 1;
            Ok(self.snap.clone())
        }
    }

    fn failed_bind(ts: u64) -> SocketEvent {
        SocketEvent {
            ts_ns: ts,
            op: Op::Bind,
            netns: 1,
            port: 7000,
            bucket: None,
            errno: Errno::new(libc::EADDRINUSE),
            had_port: false,
            task: Task::Kernel,
            local: Some("127.0.0.1:7000".parse().unwrap()),
            remote: None,
            opts: SockOpts::default(),
            port_from_range: false,
            net: 0xffff_0000,
            family: Some(Family::Inet),
            v6only: false,
            uid: Some(0),
            bound_dev: 0,
            explanation: None,
            lookup_truncated: false,
            addr: None,
        }
    }

    #[test]
    fn failures_of_one_port_share_one_read_and_successes_cost_nothing() {
        let owner = OwnerRow {
            local: Some("127.0.0.1:7000".parse().unwrap()),
            family: Some(Family::Inet),
            state: TcpState::Listen,
            reuseaddr: false,
            reuseport: false,
            v6only: false,
            uid: Some(0),
            bound_dev: 0,
            inode: None,
            remote: None,
            bucket_family: None,
            holders: vec![],
            connect_bound: None,
            local_port_range: None,
        };
        let snap = Snapshot {
            buckets: vec![BucketRow {
                key: BucketKey {
                    netns: 1,
                    l3mdev: 0,
                    port: 7000,
                },
                info: BucketInfo {
                    fastreuse: Fastreuse(0),
                    fastreuseport: Fastreuse(0),
                    owners: OwnerCount::exact(1),
                },
                addresses: vec![AddrRow {
                    address: owner.local.map(|a| a.ip()),
                    family: None,
                    fastreuse: None,
                    fastreuseport: None,
                    owners: vec![owner],
                }],
                fast: None,
            }],
            ..Snapshot::default()
        };
        let mut src = Fake { reads: 0, snap };
        let mut ex = Explainer::new(Variant::for_version(KernelVersion::new(6, 18, 0)));
        let ok = SocketEvent {
            errno: None,
            ..failed_bind(1)
        };
        let mut evs = vec![failed_bind(2), ok, failed_bind(3)];
        ex.annotate(&mut src, &mut evs);
        assert_eq!(src.reads, 1);
        assert!(evs[1].explanation.is_none());
        for e in [&evs[0], &evs[2]] {
            match &e.explanation {
                Some(Explanation::Bind(b)) => {
                    assert_eq!(b.verdict.name(), "EADDRINUSE");
                    assert_eq!(b.conflicts.len(), 1);
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
