//! Explanations from what the kernel holds: the owners of a port (or of every port of
//! the range) as a verbose snapshot read them, turned into the rules engine's input,
//! judged by [`super::bind`] / [`super::connect`], and the verdict returned as the
//! model's [`Explanation`] with each named owner's processes.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
};

use super::{
    bind::{self, Phase},
    connect::{self, Class, Query, TwReuse},
    sock::{BucketState, FastAddr, Local, Owner, OwnerState, SharingOpts, Sock},
    variant::Variant,
};
use crate::model::{
    BindExplanation, BucketRow, Candidate, Conflict, ConflictRule, ConnectExplanation, Family,
    FastPath, NamedOwner, OwnerRow, PortHolder, ProcessPorts, Snapshot, TcpState, HOLDERS_SHOWN,
};

/// A bind() to explain: the address and options of the socket that would make it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindQuery {
    /// The address as the socket would hold it: IPv4 for an IPv4 socket, IPv6 (possibly
    /// v4-mapped) for an IPv6 socket.
    pub addr: SocketAddr,
    pub reuseaddr: bool,
    pub reuseport: bool,
    pub v6only: bool,
    /// The socket's owner uid (`SO_REUSEPORT` shares only within one uid); `None`
    /// when not known (then taken as differing from every owner's).
    pub uid: Option<u32>,
    /// `SO_BINDTODEVICE` interface index, 0 for none.
    pub bound_dev: u32,
}

/// A connect() to explain: from `source` (routing's choice or `--from`) to `destination`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectQuery {
    pub source: IpAddr,
    pub destination: SocketAddr,
}

/// The address an owner holds, in its socket's family (an IPv6 socket's IPv4 address is
/// v4-mapped).
fn in_family(ip: IpAddr, family: Option<Family>) -> IpAddr {
    match (ip, family) {
        (IpAddr::V4(v4), Some(Family::Inet6)) => IpAddr::V6(v4.to_ipv6_mapped()),
        _ => ip,
    }
}

fn family_of(ip: IpAddr) -> Family {
    if ip.is_ipv6() {
        Family::Inet6
    } else {
        Family::Inet
    }
}

/// The engine's view of an owner row (`None` when its address could not be read).
fn owner_of(o: &OwnerRow, bucket_family: Option<Family>) -> Option<Owner> {
    let local = o.local?;
    let state = match o.state {
        TcpState::Listen => OwnerState::Listen,
        TcpState::TimeWait => OwnerState::TimeWait,
        _ => OwnerState::Other,
    };
    Some(Owner {
        sock: Sock::new(
            in_family(local.ip(), o.family),
            SharingOpts {
                reuseaddr: o.reuseaddr,
                reuseport: o.reuseport,
                // A TIME-WAIT owner's uid is never compared.
                uid: o.uid.unwrap_or(0),
                v6only: o.v6only,
                bound_dev: u32::try_from(o.bound_dev).unwrap_or(0),
            },
        ),
        state,
        bucket_family,
        remote: o.remote,
        connect_bind: None,
    })
}

/// The bucket's fast-path state as the engine reads it.
fn bucket_state(b: &BucketRow) -> BucketState {
    let fast: Option<&FastPath> = b.fast.as_ref();
    BucketState {
        fastreuse: b.info.fastreuse.get(),
        fastreuseport: b.info.fastreuseport.get(),
        fastuid: fast.map(|f| f.uid),
        fast_addr: fast.and_then(|f| {
            f.address.map(|a| FastAddr {
                local: Local(in_family(a, f.family)),
                ipv6_only: f.ipv6_only,
            })
        }),
    }
}

/// The owners of a bucket, each with the row it came from.
fn owners_of(b: &BucketRow) -> Vec<(Owner, &OwnerRow)> {
    b.addresses
        .iter()
        .flat_map(|a| {
            a.owners
                .iter()
                .map(move |o| (o.bucket_family.or(a.family), o))
        })
        .filter_map(|(fam, o)| owner_of(o, fam).map(|owner| (owner, o)))
        .collect()
}

/// An owner row as an explanation names it.
pub fn named(o: &OwnerRow) -> Option<NamedOwner> {
    let local = o.local?;
    let first = o.holders.first();
    Some(NamedOwner {
        local,
        family: o.family.unwrap_or(family_of(local.ip())),
        state: o.state,
        reuseaddr: o.reuseaddr,
        reuseport: o.reuseport,
        v6only: o.v6only,
        uid: o.uid,
        inode: o.inode,
        remote: o.remote,
        pid: first.map(|h| h.pid),
        comm: first.map(|h| h.comm.clone()),
        holders: o.holders.clone(),
    })
}

/// The owners of `port` in `netns`, named, in the order the engine's owner indices
/// (`connect::PortVerdict::holders`, `bind::Conflict::owner`) count them.
pub fn port_owners(snap: &Snapshot, netns: u32, port: u16) -> Vec<Option<NamedOwner>> {
    bucket(snap, netns, port)
        .map(|b| owners_of(b).into_iter().map(|(_, o)| named(o)).collect())
        .unwrap_or_default()
}

/// The bucket of `port` outside any VRF in `netns`, from a snapshot.
pub fn bucket(snap: &Snapshot, netns: u32, port: u16) -> Option<&BucketRow> {
    snap.buckets
        .iter()
        .find(|b| b.key.netns == netns && b.key.port == port && b.key.l3mdev == 0)
}

/// What a bind() of `q` would do against the owners of its port in `netns`, as `snap`
/// (a verbose snapshot covering that port, holders filled in) shows them.
pub fn explain_bind(snap: &Snapshot, netns: u32, q: &BindQuery, v: &Variant) -> BindExplanation {
    let port = q.addr.port();
    let row = bucket(snap, netns, port);
    let owned: Vec<(Owner, &OwnerRow)> = row.map(owners_of).unwrap_or_default();
    let owners: Vec<Owner> = owned.iter().map(|(o, _)| *o).collect();
    let cand = Sock::new(
        q.addr.ip(),
        SharingOpts {
            reuseaddr: q.reuseaddr,
            reuseport: q.reuseport,
            // An unknown uid matches no owner's (u32::MAX is no user's).
            uid: q.uid.unwrap_or(u32::MAX),
            v6only: q.v6only,
            bound_dev: q.bound_dev,
        },
    );
    let state = row.map(bucket_state);
    let report = bind::check(&cand, &owners, state.as_ref(), v, Phase::Bind);
    let conflict = |c: &bind::Conflict| -> Option<Conflict> {
        let (_, row) = owned.get(c.owner)?;
        Some(Conflict {
            owner: named(row)?,
            rule: ConflictRule::of(c.overlap, &c.rule),
            overlap: c.overlap,
            sharing: c.rule,
            via: c.via,
        })
    };
    let effective = cand.effective();
    BindExplanation {
        verdict: report.verdict,
        port,
        netns,
        candidate: Candidate {
            local: SocketAddr::new(Local(q.addr.ip()).canonical(), port),
            family: family_of(q.addr.ip()),
            reuseaddr: q.reuseaddr,
            reuseport: q.reuseport,
            v6only: effective.ipv6_only(),
            uid: q.uid,
        },
        path: report.path,
        conflicts: report.conflicts.iter().filter_map(conflict).collect(),
        bypassed: report.bypassed.iter().filter_map(conflict).collect(),
        fixes: report.fixes,
        invalid: report.invalid.map(str::to_owned),
        owners: row.map_or(0, |r| r.info.owners.n as usize),
        truncated: row.is_some_and(|r| r.info.owners.truncated),
        drift: None,
    }
}

/// What a connect() from `q.source` to `q.destination` finds in the range of `netns`, as
/// `snap` (a verbose walk of that namespace with its NET record, holders filled in)
/// shows it. `None` when the snapshot lacks the namespace's NET record.
pub fn explain_connect(
    snap: &Snapshot,
    netns: u32,
    q: &ConnectQuery,
    v: &Variant,
) -> Option<ConnectExplanation> {
    connect_report(snap, netns, q, v).map(|(e, _)| e)
}

/// As [`explain_connect`], with the engine's verdict on every port of the range.
pub fn connect_report(
    snap: &Snapshot,
    netns: u32,
    q: &ConnectQuery,
    v: &Variant,
) -> Option<(ConnectExplanation, connect::Report)> {
    let net = snap.net.as_ref()?;
    let (lo, hi) = net.range;
    let mut rows: BTreeMap<u16, &BucketRow> = BTreeMap::new();
    let mut buckets: BTreeMap<u16, connect::Bucket> = BTreeMap::new();
    for b in snap
        .buckets
        .iter()
        .filter(|b| b.key.netns == netns && b.key.l3mdev == 0 && (lo..=hi).contains(&b.key.port))
    {
        rows.insert(b.key.port, b);
        buckets.insert(
            b.key.port,
            connect::Bucket {
                state: bucket_state(b),
                owners: owners_of(b).into_iter().map(|(o, _)| o).collect(),
            },
        );
    }
    let query = Query {
        src: q.source,
        dst: q.destination,
        range: net.range,
        reserved: net.reserved.clone(),
        tw_reuse: TwReuse::from_sysctl(u32::from(net.tw_reuse)),
    };
    let report = connect::check(&query, &buckets, v);
    let holders_of = |class: Class| -> Vec<PortHolder> {
        let mut out = Vec::new();
        for p in report.ports.iter().filter(|p| p.class == class) {
            let Some(row) = rows.get(&p.port) else {
                continue;
            };
            let owned = owners_of(row);
            for i in &p.holders {
                let Some(owner) = owned.get(*i).and_then(|(_, o)| named(o)) else {
                    continue;
                };
                out.push(PortHolder {
                    port: p.port,
                    fastreuse: row.info.fastreuse,
                    fastreuseport: row.info.fastreuseport,
                    owner,
                    freed_by_closing: p.freed_by_closing_holders,
                });
            }
        }
        out
    };
    let blocked = holders_of(Class::Blocked);
    // Processes by how many blocked ports they hold.
    let mut per_process: HashMap<(u32, String), std::collections::BTreeSet<u16>> = HashMap::new();
    for h in &blocked {
        for p in &h.owner.holders {
            per_process
                .entry((p.pid, p.comm.clone()))
                .or_default()
                .insert(h.port);
        }
    }
    let mut by_process: Vec<ProcessPorts> = per_process
        .into_iter()
        .map(|((pid, comm), ports)| ProcessPorts {
            pid,
            comm,
            ports: ports.len(),
        })
        .collect();
    by_process.sort_by(|a, b| b.ports.cmp(&a.ports).then(a.pid.cmp(&b.pid)));
    by_process.truncate(HOLDERS_SHOWN);
    let mut used_by = holders_of(Class::UsedToDestination);
    used_by.truncate(HOLDERS_SHOWN);
    let mut blocked_by = blocked;
    blocked_by.truncate(HOLDERS_SHOWN);
    let explanation = ConnectExplanation {
        verdict: report.verdict,
        netns,
        source: q.source,
        destination: q.destination,
        range: net.range,
        reserved: report.reserved,
        free: report.free,
        shared_usable: report.shared_usable,
        used_to_destination: report.used_to_destination,
        time_wait_reusable: report.time_wait_reusable,
        blocked: report.blocked,
        usable_sometimes_skipped: report.usable_sometimes_skipped,
        tw_reuse: net.tw_reuse,
        blocked_by,
        blocked_by_process: by_process,
        used_by,
        truncated: !snap.complete || snap.owners_truncated,
    };
    Some((explanation, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        explain::variant::KernelVersion,
        model::{AddrRow, BucketInfo, BucketKey, Fastreuse, Holder, NetInfo, OwnerCount},
    };

    fn v618() -> Variant {
        Variant::for_version(KernelVersion::new(6, 18, 0))
    }

    fn owner(local: &str, family: Family, state: TcpState, reuseaddr: bool) -> OwnerRow {
        OwnerRow {
            local: Some(local.parse().unwrap()),
            family: Some(family),
            state,
            reuseaddr,
            reuseport: false,
            v6only: false,
            uid: (state != TcpState::TimeWait).then_some(0),
            bound_dev: 0,
            inode: (state != TcpState::TimeWait).then_some(77),
            remote: None,
            bucket_family: None,
            holders: if state == TcpState::TimeWait {
                vec![]
            } else {
                vec![Holder {
                    pid: 42,
                    comm: "nc".into(),
                    fd: 3,
                }]
            },
            connect_bound: None,
            local_port_range: None,
        }
    }

    fn row(port: u16, fr: i8, owners: Vec<OwnerRow>) -> BucketRow {
        BucketRow {
            key: BucketKey {
                netns: 1,
                l3mdev: 0,
                port,
            },
            info: BucketInfo {
                fastreuse: Fastreuse(fr),
                fastreuseport: Fastreuse(fr.min(0)),
                owners: OwnerCount::exact(owners.len() as u32),
            },
            addresses: vec![AddrRow {
                address: owners.first().and_then(|o| o.local).map(|a| a.ip()),
                family: None,
                fastreuse: None,
                fastreuseport: None,
                owners,
            }],
            fast: None,
        }
    }

    fn query(addr: &str, reuseaddr: bool) -> BindQuery {
        BindQuery {
            addr: addr.parse().unwrap(),
            reuseaddr,
            reuseport: false,
            v6only: false,
            uid: Some(0),
            bound_dev: 0,
        }
    }

    #[test]
    fn quiz_6_names_the_holder_its_process_and_the_article_fix() {
        let snap = Snapshot {
            buckets: vec![row(
                60000,
                0,
                vec![owner(
                    "127.0.0.1:60000",
                    Family::Inet,
                    TcpState::Established,
                    false,
                )],
            )],
            ..Snapshot::default()
        };
        let e = explain_bind(&snap, 1, &query("127.0.0.1:60000", false), &v618());
        assert_eq!(e.verdict, bind::Verdict::Eaddrinuse);
        assert_eq!(e.conflicts.len(), 1);
        let c = &e.conflicts[0];
        assert_eq!(c.rule, ConflictRule::SameAddress);
        assert_eq!(
            (c.owner.pid, c.owner.comm.as_deref()),
            (Some(42), Some("nc"))
        );
        assert!(e
            .fixes
            .iter()
            .any(|f| matches!(f, bind::Fix::CandidateAndOwners { change } if change.reuseaddr)));
        // Another address of the port: no conflict.
        let e = explain_bind(&snap, 1, &query("127.0.0.2:60000", false), &v618());
        assert_eq!(e.verdict, bind::Verdict::Ok);
        // Another namespace: no owners at all.
        let e = explain_bind(&snap, 2, &query("127.0.0.1:60000", false), &v618());
        assert_eq!((e.verdict, e.owners), (bind::Verdict::Ok, 0));
    }

    #[test]
    fn time_wait_owner_has_no_process_and_v4_mapped_owner_keeps_its_family() {
        let tw = owner("127.0.0.1:7000", Family::Inet, TcpState::TimeWait, false);
        let mapped = owner("127.0.0.2:7000", Family::Inet6, TcpState::Listen, false);
        let snap = Snapshot {
            buckets: vec![row(7000, 0, vec![tw, mapped])],
            ..Snapshot::default()
        };
        let e = explain_bind(&snap, 1, &query("127.0.0.1:7000", true), &v618());
        assert_eq!(e.verdict, bind::Verdict::Eaddrinuse);
        assert!(e.conflicts[0].owner.time_wait() && e.conflicts[0].owner.pid.is_none());
        // The IPv6 owner on ::ffff:127.0.0.2 conflicts with an IPv4 bind of 127.0.0.2 across
        // families.
        let e = explain_bind(&snap, 1, &query("127.0.0.2:7000", false), &v618());
        assert_eq!(e.conflicts[0].rule, ConflictRule::DualStackOverlap);
        assert_eq!(e.conflicts[0].owner.family, Family::Inet6);
    }

    /// 6.1 to 6.7: a v4-mapped bind checks the wildcard bucket 0.0.0.0 only when an IPv4
    /// socket created it; the kernel reports each owner's bucket family.
    #[test]
    fn bucket_family_read_from_the_kernel_decides_on_6_1() {
        let v61 = Variant::for_version(KernelVersion::new(6, 1, 192));
        let mut listener = owner("0.0.0.0:7000", Family::Inet, TcpState::Listen, true);
        listener.reuseport = true;
        let snap = |bucket: Family| {
            let mut o = listener.clone();
            o.bucket_family = Some(bucket);
            Snapshot {
                buckets: vec![row(7000, 0, vec![o])],
                ..Snapshot::default()
            }
        };
        let q = query("[::ffff:127.0.0.2]:7000", true);
        // Created by ::ffff:0.0.0.0 (an IPv6 socket): not checked.
        let e = explain_bind(&snap(Family::Inet6), 1, &q, &v61);
        assert_eq!(e.verdict, bind::Verdict::Ok);
        // Created by the IPv4 listener: checked, and a listener refuses SO_REUSEADDR.
        let e = explain_bind(&snap(Family::Inet), 1, &q, &v61);
        assert_eq!(e.verdict, bind::Verdict::Eaddrinuse);
        assert_eq!(e.conflicts[0].rule, ConflictRule::ReuseaddrOwnerListening);
    }

    #[test]
    fn quiz_3_connect_counts_and_blocking_process() {
        let mut bound = owner(
            "127.1.1.1:60000",
            Family::Inet,
            TcpState::Established,
            false,
        );
        bound.remote = Some("127.9.9.9:1234".parse().unwrap());
        let snap = Snapshot {
            buckets: vec![row(60000, 0, vec![bound])],
            net: Some(NetInfo {
                netns: 1,
                range: (60000, 60000),
                reserved: vec![],
                tw_reuse: 2,
            }),
            ..Snapshot::default()
        };
        let q = ConnectQuery {
            source: "127.0.0.1".parse().unwrap(),
            destination: "127.9.9.9:1234".parse().unwrap(),
        };
        let e = explain_connect(&snap, 1, &q, &v618()).unwrap();
        assert_eq!(e.verdict, connect::Verdict::Eaddrnotavail);
        assert_eq!((e.range, e.free, e.blocked), ((60000, 60000), 0, 1));
        assert_eq!(e.blocked_by[0].owner.pid, Some(42));
        assert_eq!(e.blocked_by_process[0].ports, 1);
        let mut no_net = snap.clone();
        no_net.net = None;
        assert!(explain_connect(&no_net, 1, &q, &v618()).is_none());
    }
}
