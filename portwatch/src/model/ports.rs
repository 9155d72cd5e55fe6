//! A network namespace's ephemeral port range, as connect() and bind(0) search it.

use serde::{Deserialize, Serialize};

/// `ip_local_port_range` of a namespace with its `ip_local_reserved_ports` inside it: the
/// kernel's ephemeral search skips reserved ports, so they are never free for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EphemeralRange {
    pub lo: u16,
    pub hi: u16,
    /// The reserved ports inside `lo..=hi`, ascending (those outside never matter to the
    /// ephemeral search).
    reserved: Vec<u16>,
}

impl EphemeralRange {
    /// The range `lo..=hi` with the reserved ports among `reserved` that fall inside it.
    pub fn new(lo: u16, hi: u16, reserved: impl IntoIterator<Item = u16>) -> EphemeralRange {
        let mut inside: Vec<u16> = reserved
            .into_iter()
            .filter(|p| (lo..=hi).contains(p))
            .collect();
        inside.sort_unstable();
        inside.dedup();
        EphemeralRange {
            lo,
            hi,
            reserved: inside,
        }
    }

    /// Ports of `ip_local_port_range` (reserved ones included); 0 for an inverted range.
    pub fn size(&self) -> u32 {
        if self.hi < self.lo {
            0
        } else {
            u32::from(self.hi - self.lo) + 1
        }
    }

    /// The reserved ports inside the range, ascending.
    pub fn reserved(&self) -> &[u16] {
        &self.reserved
    }

    /// Ports the ephemeral search may pick: the range minus its reserved ports.
    pub fn usable(&self) -> u32 {
        self.size().saturating_sub(self.reserved.len() as u32)
    }

    pub fn is_reserved(&self, port: u16) -> bool {
        self.reserved.binary_search(&port).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_ports_count_only_inside_the_range() {
        let r = EphemeralRange::new(60000, 60009, [60003, 80, 60003, 60009, 60010, 60000]);
        assert_eq!(r.size(), 10);
        assert_eq!(r.reserved(), [60000, 60003, 60009]);
        assert_eq!(r.usable(), 7);
        assert!(r.is_reserved(60003) && !r.is_reserved(60004) && !r.is_reserved(80));
        let inverted = EphemeralRange::new(10, 5, [7]);
        assert_eq!((inverted.size(), inverted.usable()), (0, 0));
        let all = EphemeralRange::new(0, 65535, 0..=65535);
        assert_eq!((all.size(), all.usable()), (65536, 0));
    }
}
