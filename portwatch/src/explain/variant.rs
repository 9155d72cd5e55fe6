//! Which of the kernel's port-sharing rules hold on a given kernel: the rows of the
//! compatibility table (`kernel::compat`) whose change alters a rule, what the rule is
//! then, and the switches the rules engine reads ([`Variant`]).
//!
//! A row's release, commit and stable backports (to the patch level) live in that table
//! only; a rule holds on a release that carries its row's change.

use serde::Serialize;

use crate::kernel::compat::{self, Id};
pub use crate::kernel::KernelVersion;

/// One kernel change that alters a port-sharing rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Row {
    /// The switch in [`Variant`] this row sets.
    pub name: &'static str,
    /// The compatibility-table row of the change.
    pub change: Id,
    /// What the rule is on kernels that have the change.
    pub effect: &'static str,
}

impl Row {
    /// The change's row in the compatibility table.
    pub fn variant(&self) -> &'static compat::Variant {
        compat::variant(self.change)
    }

    /// True when `v` has this change (mainline or a listed stable backport; a later
    /// release that reworked the same structures keeps the rule).
    pub fn holds_on(&self, v: KernelVersion) -> bool {
        self.variant().introduced_in(v)
    }
}

/// Every change the rules engine knows, oldest first.
pub const ROWS: &[Row] = &[
    Row {
        name: "bhash2_bind",
        change: Id::Bhash2,
        effect: "a bind() to a specific address checks only the owners of its own \
                 (port, address) bucket and of the port's wildcard buckets \
                 (inet_bhash2_conflict, inet_bhash2_addr_any_conflict); a wildcard bind \
                 still compares every owner of the port with inet_rcv_saddr_equal()",
    },
    Row {
        name: "bhash2_timewait",
        change: Id::Tb2Deathrow,
        effect: "TIME-WAIT sockets sit in the per-address buckets too (on tb2->deathrow, \
                 with the other owners from 6.8), so they conflict with a bind() to a \
                 specific address",
    },
    Row {
        name: "bind2_no_family",
        change: Id::Tb2AddrType,
        effect: "per-address buckets hold IPv4 addresses in v4-mapped form and no family: a \
                 wildcard bucket of 0.0.0.0 / ::ffff:0.0.0.0 is checked by a v4-mapped bind() \
                 whoever created it; from 6.1 to 6.7 a bucket keeps the family of the socket \
                 that created it (IPv4 and v4-mapped sockets of one address share it), and a \
                 v4-mapped bind() checks that wildcard bucket only when an IPv4 socket created it",
    },
    Row {
        name: "first_owner_sets_fastreuse",
        change: Id::OwnersOnTb2,
        effect: "inet_csk_update_fastreuse() no longer sees a new bucket as empty (its \
                 per-address bucket is linked first, 8002d44fe84d): a bucket made by an \
                 SO_REUSEADDR bind starts at fastreuse 0, not +1, and one made by an \
                 SO_REUSEPORT bind at fastreuseport 2 (strict), not 1 (any); this row is the \
                 change, the switch is true before it",
    },
    Row {
        name: "bhash2_v6only_owner",
        change: Id::V6onlyOwnerOnTb2,
        effect: "on the per-address path an IPV6_V6ONLY owner never conflicts with an IPv4 \
                 or v4-mapped bind() (__inet_bhash2_conflict)",
    },
    Row {
        name: "release_resets_bucket",
        change: Id::ConnectBind,
        effect: "when an owner leaves and every owner left was bound by connect() \
                 (SOCK_CONNECT_BIND), the bucket returns to fastreuse -1 / fastreuseport -1 \
                 and connect() can share its port again; before, the state stays until the \
                 bucket dies",
    },
];

/// The switches of one kernel, one per row of [`ROWS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Variant {
    pub version: KernelVersion,
    pub bhash2_bind: bool,
    pub bhash2_timewait: bool,
    pub bhash2_v6only_owner: bool,
    pub bind2_no_family: bool,
    /// True on kernels where the first owner's bind sets fastreuse (+1 with SO_REUSEADDR)
    /// and fastreuseport 1 (any): before row `first_owner_sets_fastreuse`.
    pub first_owner_sets_fastreuse: bool,
    pub release_resets_bucket: bool,
}

impl Variant {
    /// The switches that hold on `v`.
    pub fn for_version(v: KernelVersion) -> Variant {
        let row = |name: &str| {
            ROWS.iter()
                .find(|r| r.name == name)
                .is_some_and(|r| r.holds_on(v))
        };
        Variant {
            version: v,
            bhash2_bind: row("bhash2_bind"),
            bhash2_timewait: row("bhash2_timewait"),
            bhash2_v6only_owner: row("bhash2_v6only_owner"),
            bind2_no_family: row("bind2_no_family"),
            first_owner_sets_fastreuse: !row("first_owner_sets_fastreuse"),
            release_resets_bucket: row("release_resets_bucket"),
        }
    }

    /// The rows whose change this kernel has.
    pub fn rows(&self) -> impl Iterator<Item = &'static Row> + '_ {
        ROWS.iter().filter(move |r| r.holds_on(self.version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn kv(major: u16, minor: u16, patch: u16) -> KernelVersion {
        KernelVersion::new(major, minor, patch)
    }

    #[test]
    fn rows_by_release() {
        let v510 = Variant::for_version(kv(5, 10, 262));
        assert!(!v510.bhash2_bind && !v510.bhash2_timewait && !v510.release_resets_bucket);
        assert!(v510.first_owner_sets_fastreuse);
        let v61 = Variant::for_version(kv(6, 1, 192));
        assert!(v61.bhash2_bind && v61.bhash2_timewait && v61.bhash2_v6only_owner);
        assert!(!v61.bind2_no_family && v61.first_owner_sets_fastreuse);
        let v61_old = Variant::for_version(kv(6, 1, 100));
        assert!(!v61_old.bhash2_v6only_owner);
        let v612 = Variant::for_version(kv(6, 12, 117));
        assert!(v612.bind2_no_family && !v612.first_owner_sets_fastreuse);
        assert!(!v612.release_resets_bucket);
        let v618 = Variant::for_version(kv(6, 18, 15));
        assert!(v618.release_resets_bucket);
        assert_eq!(Variant::for_version(kv(7, 3, 4)).rows().count(), ROWS.len());
        for r in ROWS {
            assert!(!r.variant().commits.is_empty(), "{}", r.name);
        }
        assert!(ROWS
            .windows(2)
            .all(|w| w[0].variant().since <= w[1].variant().since));
    }
}
