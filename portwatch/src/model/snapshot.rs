//! A racy copy of the bind hash table and the part of it a walk covered.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
};

use serde::{Deserialize, Serialize};

use super::{BucketInfo, BucketKey, Fastreuse, PortRange, TcpState};

/// An address family, as a socket or a per-address bucket has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Inet,
    Inet6,
}

/// A process holding a socket through a file descriptor (from `/proc/PID/fd`, as
/// `ss -p` finds them; several processes can hold one socket).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub comm: String,
    pub fd: u32,
}

/// One owner socket in a verbose snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerRow {
    /// Its local address and port; `None` when its address family could not be read. A
    /// v4-mapped address of an IPv6 socket shows as IPv4: see `family`.
    pub local: Option<SocketAddr>,
    /// The socket's own family (an IPv6 socket may hold an IPv4 address, v4-mapped).
    pub family: Option<Family>,
    pub state: TcpState,
    pub reuseaddr: bool,
    pub reuseport: bool,
    /// `IPV6_V6ONLY`.
    pub v6only: bool,
    /// `sk_uid`; `None` for TIME-WAIT sockets, which keep none.
    pub uid: Option<u32>,
    /// `SO_BINDTODEVICE` interface index, 0 for none.
    pub bound_dev: i32,
    /// The socket's inode (`socket:[N]` in /proc/PID/fd); `None` without one (TIME-WAIT,
    /// a connection not yet accepted, a socket whose file is closed).
    pub inode: Option<u64>,
    /// The remote end of a connected or TIME-WAIT socket.
    pub remote: Option<SocketAddr>,
    /// The family of the per-address bucket it hangs on, where buckets keep one (6.1 to
    /// 6.7: the family of the socket that created the bucket).
    pub bucket_family: Option<Family>,
    /// The processes holding it; empty until [`crate::procs`] fills them in.
    pub holders: Vec<Holder>,
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
    /// The bucket's own family where the kernel keeps one (6.1 to 6.7: the family of the
    /// socket that created it); `None` elsewhere.
    pub family: Option<Family>,
    /// Per-address state (6.18+ keeps its own); `None` where the kernel has none.
    pub fastreuse: Option<Fastreuse>,
    pub fastreuseport: Option<Fastreuse>,
    pub owners: Vec<OwnerRow>,
}

/// What a bucket's fast path remembers for `SO_REUSEPORT` (`sk_reuseport_match()`):
/// `fastuid`, and the address (in its socket's family) and `IPV6_V6ONLY` of the socket
/// that last made `fastreuseport` strict. Meaningful while `fastreuseport` is positive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FastPath {
    pub uid: u32,
    /// `None` when its family could not be read.
    pub address: Option<IpAddr>,
    pub family: Option<Family>,
    pub ipv6_only: bool,
}

/// One bucket in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketRow {
    pub key: BucketKey,
    pub info: BucketInfo,
    /// Verbose only.
    pub addresses: Vec<AddrRow>,
    /// Verbose only.
    pub fast: Option<FastPath>,
}

/// A network namespace's settings for connect()'s port search, read from its
/// `struct net`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetInfo {
    /// Its inode (as in /proc/PID/ns/net).
    pub netns: u32,
    /// `net.ipv4.ip_local_port_range`.
    pub range: (u16, u16),
    /// The ports of `net.ipv4.ip_local_reserved_ports` inside `range`, as inclusive
    /// ranges in order.
    pub reserved: Vec<(u16, u16)>,
    /// `net.ipv4.tcp_tw_reuse`.
    pub tw_reuse: u8,
}

impl NetInfo {
    /// Whether `port` is reserved.
    pub fn is_reserved(&self, port: u16) -> bool {
        self.reserved
            .iter()
            .any(|(lo, hi)| (*lo..=*hi).contains(&port))
    }

    /// Ports of `ip_local_port_range` (reserved ones included); 0 for an inverted range.
    pub fn size(&self) -> u32 {
        let (lo, hi) = self.range;
        if hi < lo {
            0
        } else {
            u32::from(hi - lo) + 1
        }
    }

    /// Reserved ports inside the range (the ephemeral search skips them).
    pub fn reserved_count(&self) -> u32 {
        self.reserved
            .iter()
            .map(|(lo, hi)| u32::from(hi.saturating_sub(*lo)) + 1)
            .sum()
    }

    /// Ports the ephemeral search may pick: the range minus its reserved ports.
    pub fn usable(&self) -> u32 {
        self.size().saturating_sub(self.reserved_count())
    }
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
    /// The namespace asked for, when asked.
    pub net: Option<NetInfo>,
    /// The kernel address of the `struct net` of each namespace with a bucket in the walk:
    /// an identity, and the handle by which its NET record is read
    /// ([`crate::snapshot::NetAsk::Kernel`]). Not part of any report.
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
            net: None,
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
    pub const ALL: Scope = Scope {
        netns: None,
        port: None,
    };

    /// Whether the walk covered `key`.
    pub fn contains(&self, key: &BucketKey) -> bool {
        self.netns.is_none_or(|ns| ns == key.netns) && self.port.is_none_or(|p| p == key.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_info_counts_reserved_ports_inside_the_range() {
        let n = NetInfo {
            netns: 1,
            range: (60000, 60009),
            reserved: vec![(60000, 60000), (60003, 60005)],
            tw_reuse: 2,
        };
        assert_eq!((n.size(), n.reserved_count(), n.usable()), (10, 4, 6));
        assert!(n.is_reserved(60004) && !n.is_reserved(60006));
        let inverted = NetInfo {
            range: (10, 5),
            reserved: vec![],
            ..n.clone()
        };
        assert_eq!((inverted.size(), inverted.usable()), (0, 0));
        let all = NetInfo {
            range: (0, 65535),
            reserved: vec![(0, 65535)],
            ..n
        };
        assert_eq!(
            (all.size(), all.reserved_count(), all.usable()),
            (65536, 65536, 0)
        );
    }

    #[test]
    fn scope_covers_its_netns_and_port() {
        let k = BucketKey {
            netns: 7,
            l3mdev: 3,
            port: 80,
        };
        assert!(Scope::ALL.contains(&k));
        assert!(Scope {
            netns: Some(7),
            port: None
        }
        .contains(&k));
        assert!(!Scope {
            netns: Some(8),
            port: None
        }
        .contains(&k));
        assert!(Scope {
            netns: Some(7),
            port: Some(80)
        }
        .contains(&k));
        assert!(!Scope {
            netns: None,
            port: Some(81)
        }
        .contains(&k));
    }
}
