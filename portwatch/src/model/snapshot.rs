//! A racy copy of the bind hash table and the part of it a walk covered.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
};

use serde::{Deserialize, Serialize};

use super::{BucketInfo, BucketKey, Fastreuse, PortRange, TcpState};

/// One owner socket in a verbose snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerRow {
    /// Its local address and port; `None` when its address family could not be read.
    pub local: Option<SocketAddr>,
    pub state: TcpState,
    pub reuseaddr: bool,
    pub reuseport: bool,
    /// connect() chose its port (`SOCK_CONNECT_BIND` / `tw_connect_bind`), not bind();
    /// `None` on kernels that do not record it (before 6.18).
    #[serde(default)]
    pub connect_bound: Option<bool>,
    /// Its own ephemeral range (IP_LOCAL_PORT_RANGE), `None` when it set none.
    #[serde(default)]
    pub local_port_range: Option<PortRange>,
}

/// One per-address bucket (bhash2) in a verbose snapshot, or the owners of one address
/// on kernels whose owners hang off the port's bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddrRow {
    /// `None` when the owners' address family could not be read.
    pub address: Option<IpAddr>,
    /// Per-address state (6.18+ keeps its own); `None` where the kernel has none.
    pub fastreuse: Option<Fastreuse>,
    pub fastreuseport: Option<Fastreuse>,
    pub owners: Vec<OwnerRow>,
}

/// One bucket in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketRow {
    pub key: BucketKey,
    pub info: BucketInfo,
    /// Verbose only.
    pub addresses: Vec<AddrRow>,
}

/// A racy (lock-free) copy of the bind hash table, like the article's drgn script makes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Sorted by key.
    pub buckets: Vec<BucketRow>,
    /// The walk covered its whole scope: every slot, every chain to its end. A bucket in
    /// scope that a complete walk did not find is gone; one an incomplete walk did not
    /// find may still exist.
    pub complete: bool,
    /// Some owner list was cut short: those owner counts are lower bounds (`≥N`).
    pub owners_truncated: bool,
    /// Slots of the bind hash table walked.
    pub slots: u32,
    /// The kernel address of the `struct net` of each namespace with a bucket in the walk:
    /// an identity, and the handle by which its ephemeral range is read
    /// ([`crate::snapshot::NetnsRef::Kernel`]). Not part of any report.
    #[serde(skip)]
    pub nets: BTreeMap<u32, u64>,
}

impl Default for Snapshot {
    /// An empty table, walked completely.
    fn default() -> Self {
        Snapshot {
            buckets: Vec::new(),
            complete: true,
            owners_truncated: false,
            slots: 0,
            nets: BTreeMap::new(),
        }
    }
}

/// The buckets a walk covered: one network namespace or all, one port or all. A bucket
/// in scope but missing from the walk is gone; one outside it is simply not covered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Scope {
    /// `None`: every namespace.
    pub netns: Option<u32>,
    /// `None`: every port.
    pub port: Option<u16>,
}

impl Scope {
    /// Every bucket of every namespace.
    pub const ALL: Scope = Scope { netns: None, port: None };

    /// Whether the walk covered `key`.
    pub fn contains(&self, key: &BucketKey) -> bool {
        self.netns.is_none_or(|ns| ns == key.netns) && self.port.is_none_or(|p| p == key.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_covers_its_netns_and_port() {
        let k = BucketKey { netns: 7, l3mdev: 3, port: 80 };
        assert!(Scope::ALL.contains(&k));
        assert!(Scope { netns: Some(7), port: None }.contains(&k));
        assert!(!Scope { netns: Some(8), port: None }.contains(&k));
        assert!(Scope { netns: Some(7), port: Some(80) }.contains(&k));
        assert!(!Scope { netns: None, port: Some(81) }.contains(&k));
    }
}
