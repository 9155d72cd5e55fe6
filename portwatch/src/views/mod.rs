//! What the user sees: the `dump` table/JSON and the `top` live view.
//!
//! Everything here renders the backend-neutral model of [`crate::model`]; the data comes
//! from the lead's eBPF engine through [`top::TopSource`] (or a plain [`Snapshot`] for
//! `dump`). Formatting helpers shared by both views live in this module.
//!
//! [`Snapshot`]: crate::model::Snapshot

pub mod dump;
pub mod top;

use crate::model::{BucketInfo, BucketKey};

/// A fastreuse / fastreuseport value as the article writes it: `-1`, `0`, `+1`
/// (anything else, which no kernel produces today, verbatim).
pub fn fmt_reuse(v: i8) -> String {
    if v > 0 {
        format!("+{v}")
    } else {
        v.to_string()
    }
}

/// An owner count, `≥N` when the bounded walk stopped early (a lower bound).
pub fn fmt_owners(info: &BucketInfo) -> String {
    if info.owners_truncated {
        format!("≥{}", info.owners)
    } else {
        info.owners.to_string()
    }
}

/// Whether several network namespaces (or any VRF) appear among `keys`, i.e. whether a
/// NETNS (L3MDEV) column is needed to tell rows apart.
pub fn needs_columns<'a>(keys: impl IntoIterator<Item = &'a BucketKey>) -> (bool, bool) {
    let mut first_ns = None;
    let mut several_ns = false;
    let mut any_l3 = false;
    for k in keys {
        match first_ns {
            None => first_ns = Some(k.netns),
            Some(ns) if ns != k.netns => several_ns = true,
            Some(_) => {}
        }
        any_l3 |= k.l3mdev != 0;
    }
    (several_ns, any_l3)
}

/// Whether connect() may still pick this port as an ephemeral source port: the kernel
/// (`__inet_hash_connect`) reuses only buckets with fastreuse == -1 and
/// fastreuseport == -1.
pub fn connect_can_share(info: &BucketInfo) -> bool {
    info.fastreuse == -1 && info.fastreuseport == -1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(fr: i8, frp: i8, owners: u32, trunc: bool) -> BucketInfo {
        BucketInfo {
            fastreuse: fr,
            fastreuseport: frp,
            owners,
            owners_truncated: trunc,
        }
    }

    #[test]
    fn reuse_values_are_signed_like_the_article() {
        assert_eq!(fmt_reuse(-1), "-1");
        assert_eq!(fmt_reuse(0), "0");
        assert_eq!(fmt_reuse(1), "+1");
    }

    #[test]
    fn truncated_owner_counts_are_lower_bounds() {
        assert_eq!(fmt_owners(&info(0, -1, 3, false)), "3");
        assert_eq!(fmt_owners(&info(0, -1, 3, true)), "≥3");
    }

    #[test]
    fn columns_needed_only_when_ambiguous() {
        let a = BucketKey {
            netns: 1,
            l3mdev: 0,
            port: 80,
        };
        let b = BucketKey {
            netns: 1,
            l3mdev: 0,
            port: 81,
        };
        let c = BucketKey {
            netns: 2,
            l3mdev: 0,
            port: 80,
        };
        let d = BucketKey {
            netns: 1,
            l3mdev: 5,
            port: 80,
        };
        assert_eq!(needs_columns([&a, &b]), (false, false));
        assert_eq!(needs_columns([&a, &c]), (true, false));
        assert_eq!(needs_columns([&a, &d]), (false, true));
        assert_eq!(needs_columns(std::iter::empty()), (false, false));
    }

    #[test]
    fn connect_shares_only_minus_one_minus_one() {
        assert!(connect_can_share(&info(-1, -1, 1, false)));
        assert!(!connect_can_share(&info(0, -1, 1, false)));
        assert!(!connect_can_share(&info(1, -1, 1, false)));
        assert!(!connect_can_share(&info(-1, 0, 1, false)));
    }
}
