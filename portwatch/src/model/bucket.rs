//! A bind bucket: its identity and the state the article is about.

use serde::{Deserialize, Serialize};

/// A bind bucket is identified by (network namespace, VRF/l3mdev, local port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BucketKey {
    /// Inode number of the network namespace (as in /proc/PID/ns/net).
    pub netns: u32,
    /// The VRF device index; 0 outside any VRF.
    pub l3mdev: i32,
    pub port: u16,
}

/// A bucket's `fastreuse` or `fastreuseport` field, as the kernel keeps it in an `i8`.
///
/// fastreuse: -1 the bucket was created by connect() and only connect() may share it,
/// 0 bound without SO_REUSEADDR, +1 bound with SO_REUSEADDR. fastreuseport: -1 created by
/// connect(), 0 no SO_REUSEPORT sharing, +1 (`FASTREUSEPORT_ANY`) or +2
/// (`FASTREUSEPORT_STRICT`). Per-address buckets (6.18+) keep the same fields.
///
/// Displayed as the article writes it: `-1`, `0`, `+1` (see [`crate::render`]); in JSON
/// it is the plain number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fastreuse(pub i8);

impl Fastreuse {
    /// -1: created by connect(); only connect() may share the port.
    pub const CONNECT_ONLY: Fastreuse = Fastreuse(-1);

    pub fn get(self) -> i8 {
        self.0
    }
}

/// How many sockets own a bucket. The owner walk is bounded: when it stopped early the
/// count is a lower bound (`truncated`), displayed `≥N`.
///
/// In JSON the two fields are the keys `owners` and `owners_truncated` of the enclosing
/// object (see [`BucketInfo`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OwnerCount {
    #[serde(rename = "owners")]
    pub n: u32,
    /// `n` is a lower bound: the bounded walk stopped early.
    #[serde(rename = "owners_truncated")]
    pub truncated: bool,
}

impl OwnerCount {
    /// An exact count.
    pub const fn exact(n: u32) -> OwnerCount {
        OwnerCount {
            n,
            truncated: false,
        }
    }

    /// A lower bound (the walk stopped after `n` owners).
    pub const fn at_least(n: u32) -> OwnerCount {
        OwnerCount { n, truncated: true }
    }
}

/// A port range `lo..=hi`, e.g. a socket's IP_LOCAL_PORT_RANGE. Displayed `lo-hi`; in
/// JSON `{"lo": .., "hi": ..}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    /// The kernel's packed form (`lo | hi << 16`); `None` for 0 (no range set). A socket
    /// may set only one bound (the other stays 0: the netns's bound applies).
    pub fn from_packed(v: u32) -> Option<PortRange> {
        (v != 0).then_some(PortRange {
            lo: v as u16,
            hi: (v >> 16) as u16,
        })
    }
}

/// The state of a per-address bucket (`inet_bind2_bucket`) on kernels where it keeps its
/// own (6.18+).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AddrState {
    pub fastreuse: Fastreuse,
    pub fastreuseport: Fastreuse,
}

/// The observable state of one bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BucketInfo {
    pub fastreuse: Fastreuse,
    pub fastreuseport: Fastreuse,
    #[serde(flatten)]
    pub owners: OwnerCount,
}

impl BucketInfo {
    /// Whether connect() may still pick this port as an ephemeral source port: the kernel
    /// (`__inet_hash_connect`) reuses only buckets with fastreuse == -1 and
    /// fastreuseport == -1.
    pub fn connect_can_share(&self) -> bool {
        self.fastreuse == Fastreuse::CONNECT_ONLY && self.fastreuseport == Fastreuse::CONNECT_ONLY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(fr: i8, frp: i8, owners: u32, truncated: bool) -> BucketInfo {
        BucketInfo {
            fastreuse: Fastreuse(fr),
            fastreuseport: Fastreuse(frp),
            owners: OwnerCount {
                n: owners,
                truncated,
            },
        }
    }

    #[test]
    fn port_range_from_the_kernels_packed_form() {
        assert_eq!(PortRange::from_packed(0), None);
        assert_eq!(
            PortRange::from_packed(40009 << 16 | 40000),
            Some(PortRange {
                lo: 40000,
                hi: 40009
            })
        );
        // Only an upper bound set: lo 0 means the netns's lower bound.
        assert_eq!(
            PortRange::from_packed(50000 << 16),
            Some(PortRange { lo: 0, hi: 50000 })
        );
    }

    #[test]
    fn connect_shares_only_minus_one_minus_one() {
        assert!(info(-1, -1, 1, false).connect_can_share());
        assert!(!info(0, -1, 1, false).connect_can_share());
        assert!(!info(1, -1, 1, false).connect_can_share());
        assert!(!info(-1, 0, 1, false).connect_can_share());
    }

    #[test]
    fn json_is_flat_with_plain_numbers_and_round_trips() {
        let i = info(1, -1, 64, true);
        let v = serde_json::to_value(i).expect("serialises");
        assert_eq!(
            v,
            serde_json::json!({"fastreuse": 1, "fastreuseport": -1, "owners": 64, "owners_truncated": true})
        );
        let back: BucketInfo = serde_json::from_value(v).expect("deserialises");
        assert_eq!(back, i);
    }
}
