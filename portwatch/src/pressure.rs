//! Port pressure of a network namespace: how many ports of its ephemeral range connect()
//! may still take, may share, or must skip, given the bind buckets the reducer knows.
//! One function for every view that shows it (`top`'s header, `export`'s
//! `portwatch_ephemeral_ports`).

use crate::model::{BucketInfo, BucketKey, NetInfo};

/// Port pressure of one netns over its ephemeral range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pressure {
    pub netns: u32,
    /// `ip_local_port_range`.
    pub lo: u16,
    pub hi: u16,
    /// Ports of the range in `ip_local_reserved_ports`: the ephemeral search never takes
    /// them, so they are in none of the three counts below.
    pub reserved: u32,
    /// Ports without any bucket.
    pub free: u32,
    /// Ports whose buckets are all fastreuse -1 / fastreuseport -1: connect() can still
    /// pick them (given a unique 4-tuple).
    pub shared: u32,
    /// Ports with a bucket in fastreuse 0/+1 or fastreuseport >= 0: connect() skips them.
    pub blocked: u32,
}

impl Pressure {
    /// Ports of `ip_local_port_range` (reserved ones included).
    pub fn size(&self) -> u32 {
        if self.hi < self.lo {
            0
        } else {
            u32::from(self.hi - self.lo) + 1
        }
    }

    /// Ports the ephemeral search may pick: `free + shared + blocked`.
    pub fn usable(&self) -> u32 {
        self.size().saturating_sub(self.reserved)
    }
}

const PORT_FREE: u8 = 0;
const PORT_SHARED: u8 = 1;
const PORT_BLOCKED: u8 = 2;

/// Counts free / shared / blocked ports of the ephemeral range of `net` (reserved ports
/// left out) in `netns` over `buckets`; buckets of other namespaces are skipped. `scratch` is reused between
/// calls (65,536 bytes once, then no allocation).
pub fn pressure<'a>(
    buckets: impl IntoIterator<Item = (&'a BucketKey, &'a BucketInfo)>,
    netns: u32,
    net: &NetInfo,
    scratch: &mut Vec<u8>,
) -> Pressure {
    let (lo, hi) = net.range;
    let mut p = Pressure {
        netns,
        lo,
        hi,
        reserved: net.reserved_count(),
        free: 0,
        shared: 0,
        blocked: 0,
    };
    if hi < lo {
        return p;
    }
    scratch.clear();
    scratch.resize(usize::from(u16::MAX) + 1, PORT_FREE);
    for (key, info) in buckets {
        if key.netns != netns || key.port < lo || key.port > hi {
            continue;
        }
        let slot = &mut scratch[usize::from(key.port)];
        let state = if info.connect_can_share() {
            PORT_SHARED
        } else {
            PORT_BLOCKED
        };
        *slot = (*slot).max(state);
    }
    for (port, &s) in (lo..=hi).zip(&scratch[usize::from(lo)..=usize::from(hi)]) {
        if net.is_reserved(port) {
            continue;
        }
        match s {
            PORT_FREE => p.free += 1,
            PORT_SHARED => p.shared += 1,
            _ => p.blocked += 1,
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::model::{Fastreuse, OwnerCount};

    fn key(netns: u32, port: u16) -> BucketKey {
        BucketKey {
            netns,
            l3mdev: 0,
            port,
        }
    }

    fn info(fr: i8, frp: i8, owners: u32) -> BucketInfo {
        BucketInfo {
            fastreuse: Fastreuse(fr),
            fastreuseport: Fastreuse(frp),
            owners: OwnerCount::exact(owners),
        }
    }

    /// A namespace's NET record with `reserved` (any order, outside the range too) as
    /// the kernel side reports them: those inside the range, in order.
    fn net_info(lo: u16, hi: u16, reserved: impl IntoIterator<Item = u16>) -> NetInfo {
        let mut inside: Vec<u16> = reserved
            .into_iter()
            .filter(|p| (lo..=hi).contains(p))
            .collect();
        inside.sort_unstable();
        inside.dedup();
        NetInfo {
            netns: 1,
            range: (lo, hi),
            reserved: inside.into_iter().map(|p| (p, p)).collect(),
            tw_reuse: 0,
        }
    }

    fn range(lo: u16, hi: u16) -> NetInfo {
        net_info(lo, hi, [])
    }

    #[test]
    fn pressure_counts_free_shared_blocked() {
        let rows = [
            (key(1, 60000), info(-1, -1, 2)), // shared
            (key(1, 60001), info(0, -1, 1)),  // blocked (fastreuse 0)
            (key(1, 60002), info(1, -1, 1)),  // blocked (+1)
            (key(1, 60003), info(-1, 0, 1)),  // blocked (fastreuseport 0)
            (key(2, 60004), info(0, -1, 1)),  // other netns: ignored
            (key(1, 1234), info(0, -1, 1)),   // outside the range
        ];
        let mut scratch = Vec::new();
        let p = pressure(
            rows.iter().map(|(k, i)| (k, i)),
            1,
            &range(60000, 60009),
            &mut scratch,
        );
        assert_eq!(
            p,
            Pressure {
                netns: 1,
                lo: 60000,
                hi: 60009,
                reserved: 0,
                free: 6,
                shared: 1,
                blocked: 3
            }
        );
        assert_eq!((p.size(), p.usable()), (10, 10));
        // The article's setup: a one-port range.
        let p = pressure(
            rows.iter().map(|(k, i)| (k, i)),
            1,
            &range(60000, 60000),
            &mut scratch,
        );
        assert_eq!((p.free, p.shared, p.blocked), (0, 1, 0));
        // Whole port space, edges included.
        let edge = [
            (key(1, 0), info(0, -1, 1)),
            (key(1, 65535), info(-1, -1, 1)),
        ];
        let p = pressure(
            edge.iter().map(|(k, i)| (k, i)),
            1,
            &range(0, 65535),
            &mut scratch,
        );
        assert_eq!((p.free, p.shared, p.blocked), (65534, 1, 1));
        // Inverted range: nothing.
        let p = pressure(
            edge.iter().map(|(k, i)| (k, i)),
            1,
            &range(10, 5),
            &mut scratch,
        );
        assert_eq!((p.free, p.shared, p.blocked, p.size()), (0, 0, 0, 0));
    }

    #[test]
    fn reserved_ports_are_in_no_state() {
        let rows = [
            (key(1, 60000), info(-1, -1, 1)), // shared, but reserved
            (key(1, 60001), info(0, -1, 1)),  // blocked
            (key(1, 60002), info(0, -1, 1)),  // blocked, but reserved
        ];
        let r = net_info(60000, 60004, [60000, 60002, 60004, 1234]);
        let p = pressure(rows.iter().map(|(k, i)| (k, i)), 1, &r, &mut Vec::new());
        assert_eq!((p.reserved, p.free, p.shared, p.blocked), (3, 1, 0, 1));
        assert_eq!((p.size(), p.usable()), (5, 2));
    }

    #[test]
    fn pressure_port_with_two_vrf_buckets_is_blocked_if_any_blocks() {
        let a = BucketKey {
            netns: 1,
            l3mdev: 0,
            port: 100,
        };
        let b = BucketKey {
            netns: 1,
            l3mdev: 7,
            port: 100,
        };
        let rows = [(a, info(-1, -1, 1)), (b, info(0, -1, 1))];
        let p = pressure(
            rows.iter().map(|(k, i)| (k, i)),
            1,
            &range(100, 100),
            &mut Vec::new(),
        );
        assert_eq!((p.free, p.shared, p.blocked), (0, 0, 1));
    }

    fn arb_info() -> impl Strategy<Value = BucketInfo> {
        (-1i8..=1, -1i8..=1, 0u32..5).prop_map(|(fr, frp, n)| info(fr, frp, n))
    }

    fn arb_key() -> impl Strategy<Value = BucketKey> {
        (1u32..4, 0i32..2, 0u16..40).prop_map(|(netns, l3mdev, port)| BucketKey {
            netns,
            l3mdev,
            port,
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn pressure_partitions_the_usable_range(
            rows in proptest::collection::vec((arb_key(), arb_info()), 0..60),
            lo in 0u16..50, len in 0u16..30,
            reserved in proptest::collection::vec(0u16..90, 0..10),
        ) {
            let hi = lo.saturating_add(len);
            let r = net_info(lo, hi, reserved.iter().copied());
            let p = pressure(rows.iter().map(|(k, i)| (k, i)), 2, &r, &mut Vec::new());
            prop_assert_eq!(p.free + p.shared + p.blocked, p.usable());
            prop_assert_eq!(p.usable(), r.usable());
            let ports_with_bucket: std::collections::HashSet<u16> = rows
                .iter()
                .filter(|(k, _)| k.netns == 2 && k.port >= lo && k.port <= hi && !r.is_reserved(k.port))
                .map(|(k, _)| k.port)
                .collect();
            prop_assert_eq!(p.shared + p.blocked, ports_with_bucket.len() as u32);
        }
    }
}
