//! Builders shared by the `top` test modules (app, ui, run loop).
use crate::model::{BucketInfo, BucketKey, BucketRow, Op, Snapshot, SockOpts, Transition, TransitionKind};

pub fn key(netns: u32, port: u16) -> BucketKey {
    BucketKey { netns, l3mdev: 0, port }
}

pub fn info(fr: i8, frp: i8, owners: u32) -> BucketInfo {
    BucketInfo { fastreuse: fr, fastreuseport: frp, owners, owners_truncated: false }
}

pub fn snap(rows: &[(BucketKey, BucketInfo)]) -> Snapshot {
    Snapshot {
        buckets: rows.iter().map(|(k, i)| BucketRow { key: *k, info: *i, addresses: vec![] }).collect(),
        truncated: false,
        slots: 65536,
    }
}

/// A transition by pid 42 (`nc`) from 127.0.0.1 on the key's port.
pub fn tr(kind: TransitionKind, op: Op, k: BucketKey, after: Option<BucketInfo>) -> Transition {
    Transition {
        ts_ns: 1,
        kind,
        op,
        key: k,
        after,
        from: None,
        to: None,
        errno: 0,
        pid: 42,
        comm: "nc".into(),
        local: Some(format!("127.0.0.1:{}", k.port)),
        remote: None,
        opts: SockOpts::default(),
        port_from_range: false,
    }
}
