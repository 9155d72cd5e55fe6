//! Builders shared by the `top` test modules (app, ui, run loop).
use crate::model::{
    BucketInfo, BucketKey, BucketRow, Errno, Fastreuse, NetInfo, Op, OwnerCount, SeenBucket,
    Snapshot, SockOpts, SocketEvent, Task,
};

/// The NET record of a namespace with ephemeral range `lo..=hi` and no reserved port.
pub fn net(lo: u16, hi: u16) -> NetInfo {
    NetInfo {
        netns: 1,
        range: (lo, hi),
        reserved: vec![],
        tw_reuse: 0,
    }
}

pub fn key(netns: u32, port: u16) -> BucketKey {
    BucketKey {
        netns,
        l3mdev: 0,
        port,
    }
}

pub fn info(fr: i8, frp: i8, owners: u32) -> BucketInfo {
    BucketInfo {
        fastreuse: Fastreuse(fr),
        fastreuseport: Fastreuse(frp),
        owners: OwnerCount::exact(owners),
    }
}

pub fn snap(rows: &[(BucketKey, BucketInfo)]) -> Snapshot {
    Snapshot {
        buckets: rows
            .iter()
            .map(|(k, i)| BucketRow {
                key: *k,
                info: *i,
                addresses: vec![],
                fast: None,
            })
            .collect(),
        complete: true,
        owners_truncated: false,
        slots: 65536,
        ..Default::default()
    }
}

/// An event of pid 42 (`nc`) from 127.0.0.1 on the key's port: after `op`, the key's
/// bucket is `after` (`None`: no bucket). Close/release/timewait are of a socket that
/// held the port; bind/connect/listen of one that had none (so they add an owner).
pub fn ev(op: Op, k: BucketKey, after: Option<BucketInfo>) -> SocketEvent {
    SocketEvent {
        ts_ns: 1,
        op,
        netns: k.netns,
        port: k.port,
        bucket: after.map(|info| SeenBucket {
            id: 0,
            l3mdev: k.l3mdev,
            info,
        }),
        errno: None,
        had_port: matches!(op, Op::Close | Op::Release | Op::Timewait),
        task: Task::Process {
            pid: 42,
            comm: "nc".into(),
        },
        local: Some(std::net::SocketAddr::from(([127, 0, 0, 1], k.port))),
        remote: None,
        opts: SockOpts::default(),
        port_from_range: false,
        net: 0,
        family: None,
        v6only: false,
        uid: None,
        bound_dev: 0,
        explanation: None,
        lookup_truncated: false,
        addr: None,
    }
}

/// As [`ev`], for a call that failed with `errno`.
pub fn failed(op: Op, k: BucketKey, after: Option<BucketInfo>, errno: i32) -> SocketEvent {
    SocketEvent {
        errno: Errno::new(errno),
        ..ev(op, k, after)
    }
}
