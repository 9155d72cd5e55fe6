//! Would a bind() of (address, port) succeed, and if not, which owners conflict and why:
//! `inet_csk_get_port()` for an explicit port, as each kernel variant runs it.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{
    sock::{
        fast_addr_match, rcv_saddr_equal, BucketState, Family, FastAddr, Owner, OwnerState, Sock,
        FASTREUSEPORT_ANY, FASTREUSEPORT_STRICT,
    },
    variant::Variant,
};

/// The result of a bind().
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// The bind succeeds.
    #[serde(rename = "ok")]
    Ok,
    #[serde(rename = "EADDRINUSE")]
    Eaddrinuse,
    /// `EINVAL`: the address cannot be bound by this socket at all.
    #[serde(rename = "EINVAL")]
    Einval,
}

/// Which part of `inet_csk_get_port()` decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Path {
    /// The port has no owner.
    NoOwners,
    /// `tb->fastreuse > 0` and the socket has `SO_REUSEADDR`: no conflict check.
    FastReuse,
    /// `sk_reuseport_match()`: no conflict check.
    FastReuseport,
    /// `inet_csk_bind_conflict()` (and `inet_bhash2_addr_any_conflict()`).
    ConflictCheck,
}

/// How a conflicting owner's address overlaps the bind's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// The same address (and family).
    SameAddress,
    /// One side is the wildcard of the same family (`0.0.0.0`, `::`).
    WildcardOverlap,
    /// Across IPv4 and IPv6: an IPv6 socket without `IPV6_V6ONLY` on `::` (or on an
    /// address whose IPv4 form is shared), or a v4-mapped address.
    DualStackOverlap,
}

/// Why the two sockets may not share the port although their addresses overlap
/// (`inet_bind_conflict()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Rule {
    /// Neither `SO_REUSEADDR` nor `SO_REUSEPORT` is set on both sockets.
    NotShared {
        candidate_reuseaddr: bool,
        owner_reuseaddr: bool,
        candidate_reuseport: bool,
        owner_reuseport: bool,
    },
    /// Both have `SO_REUSEADDR`, but the owner is listening.
    ReuseaddrOwnerListening,
    /// Both have `SO_REUSEPORT`, but they belong to different users (and the owner is not
    /// in TIME-WAIT).
    ReuseportOtherUid { candidate_uid: u32, owner_uid: u32 },
}

/// Where in the bucket the kernel found the owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// Every owner of the port compared with `inet_rcv_saddr_equal()` (before 6.1, and
    /// for wildcard binds).
    OwnerWalk,
    /// The per-address bucket of the bind's own address (6.1+).
    SameAddressBucket,
    /// A wildcard per-address bucket of the port (6.1+).
    WildcardBucket,
}

/// One owner the bind conflicts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Conflict {
    /// Index into the owners given to [`check`].
    pub owner: usize,
    pub overlap: Overlap,
    pub rule: Rule,
    pub via: Via,
}

/// Options to add to a socket; [`Fix`] says to which.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub reuseaddr: bool,
    pub reuseport: bool,
    pub v6only: bool,
    /// Create the socket as this user (`SO_REUSEPORT` shares only within one uid).
    pub uid: Option<u32>,
}

impl Change {
    fn apply(self, s: &mut Sock) {
        s.opts.reuseaddr |= self.reuseaddr;
        s.opts.reuseport |= self.reuseport;
        s.opts.v6only |= self.v6only;
        if let Some(u) = self.uid {
            s.opts.uid = u;
        }
    }

    fn size(self) -> usize {
        usize::from(self.reuseaddr)
            + usize::from(self.reuseport)
            + usize::from(self.v6only)
            + usize::from(self.uid.is_some())
    }

    /// Every option set in `self` is also set in `other`.
    fn within(self, other: Change) -> bool {
        (!self.reuseaddr || other.reuseaddr)
            && (!self.reuseport || other.reuseport)
            && (!self.v6only || other.v6only)
            && (self.uid.is_none() || self.uid == other.uid)
    }
}

/// A change that makes the bind succeed, checked by running the rules again with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Fix {
    /// Set these on the new socket.
    Candidate { change: Change },
    /// Set these on the new socket and on every conflicting owner (which then has to be
    /// restarted).
    CandidateAndOwners { change: Change },
    /// Every conflict is a TIME-WAIT socket: the port frees itself when they expire
    /// (60 s on Linux).
    WaitForTimeWait,
}

/// What [`check`] found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    pub verdict: Verdict,
    pub path: Path,
    /// Owners the bind conflicts with under the conflict check. Empty for `Ok`, except
    /// when a fast path let the bind through without checking: then see `bypassed`.
    pub conflicts: Vec<Conflict>,
    /// Conflicts the conflict check would find but the bucket's fast path skips.
    pub bypassed: Vec<Conflict>,
    /// Changes that make a refused bind succeed (smallest first).
    pub fixes: Vec<Fix>,
    /// For `Einval`: why.
    pub invalid: Option<&'static str>,
}

/// What the bind asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Phase {
    /// bind() with an explicit port.
    Bind,
    /// listen() on a socket already bound to the port: `inet_csk_get_port()` runs again
    /// with the socket in `TCP_LISTEN`, so the `SO_REUSEADDR` fast path is off.
    Listen,
}

/// `EINVAL` cases of `__inet6_bind()` / `__inet_bind()` that depend on the address.
fn invalid(cand: &Sock) -> Option<&'static str> {
    match cand.local.0 {
        IpAddr::V6(a) if a.to_ipv4_mapped().is_some() && cand.opts.v6only => {
            Some("an IPV6_V6ONLY socket cannot bind a v4-mapped address")
        }
        IpAddr::V6(a) if a.is_multicast() => Some("a TCP socket cannot bind a multicast address"),
        _ => None,
    }
}

/// `!sk->sk_bound_dev_if || !sk2->sk_bound_dev_if || equal`.
fn devices_overlap(a: &Sock, b: &Sock) -> bool {
    a.opts.bound_dev == 0 || b.opts.bound_dev == 0 || a.opts.bound_dev == b.opts.bound_dev
}

/// `inet_bind_conflict()` with `relax = true`, `reuseport_ok = true` (an explicit port; a
/// new socket has no reuseport group): `None` when the two may share the port whatever
/// their addresses.
fn sharing_refused(cand: &Sock, owner: &Owner) -> Option<Rule> {
    let o = &owner.sock.opts;
    let c = &cand.opts;
    if c.reuseaddr && o.reuseaddr && owner.state != OwnerState::Listen {
        return None;
    }
    let reuseport_shares =
        c.reuseport && o.reuseport && (owner.state == OwnerState::TimeWait || c.uid == o.uid);
    if reuseport_shares {
        return None;
    }
    Some(if c.reuseport && o.reuseport {
        Rule::ReuseportOtherUid {
            candidate_uid: c.uid,
            owner_uid: o.uid,
        }
    } else if c.reuseaddr && o.reuseaddr {
        Rule::ReuseaddrOwnerListening
    } else {
        Rule::NotShared {
            candidate_reuseaddr: c.reuseaddr,
            owner_reuseaddr: o.reuseaddr,
            candidate_reuseport: c.reuseport,
            owner_reuseport: o.reuseport,
        }
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    V4,
    Mapped,
    V6,
}

fn kind(s: &Sock) -> Kind {
    if !s.local.is_v6() {
        Kind::V4
    } else if s.local.is_mapped() {
        Kind::Mapped
    } else {
        Kind::V6
    }
}

fn overlap(cand: &Sock, owner: &Sock) -> Overlap {
    let (a, b) = (kind(cand), kind(owner));
    if a == b {
        if cand.local == owner.local {
            Overlap::SameAddress
        } else {
            Overlap::WildcardOverlap
        }
    } else {
        Overlap::DualStackOverlap
    }
}

/// `inet_bind2_bucket_addr_match()`: does the owner hang on the bind's own per-address
/// bucket? Buckets hold IPv4 and v4-mapped forms of one address together.
fn same_bind2_bucket(cand: &Sock, owner: &Sock) -> bool {
    match (kind(cand), kind(owner)) {
        (Kind::V6, Kind::V6) => cand.local == owner.local,
        (Kind::V6, _) | (_, Kind::V6) => false,
        _ => cand.local.rcv_saddr() == owner.local.rcv_saddr(),
    }
}

/// `inet_bind2_bucket_match_addr_any()`: is the owner on a wildcard per-address bucket
/// that this bind must check?
fn wildcard_bind2_bucket(cand: &Sock, owner: &Owner, v: &Variant) -> bool {
    let ok = owner.sock.local;
    let owner_is_any6 = ok.is_v6() && !ok.is_mapped() && ok.is_wildcard(); // `::`
    let owner_is_any4 = ok.is_wildcard() && !owner_is_any6; // 0.0.0.0, ::ffff:0.0.0.0
    match kind(cand) {
        Kind::V4 => owner_is_any6 || owner_is_any4,
        Kind::Mapped => {
            owner_is_any6
                || (owner_is_any4 && (v.bind2_no_family || owner.bucket_family() == Family::Inet))
        }
        Kind::V6 => owner_is_any6,
    }
}

/// The conflict check (`inet_csk_bind_conflict()` plus, for a specific address on 6.1+,
/// `inet_bhash2_addr_any_conflict()`): every owner `cand` conflicts with.
pub fn conflicts(cand: &Sock, owners: &[Owner], v: &Variant) -> Vec<Conflict> {
    let cand = cand.effective();
    let per_address = v.bhash2_bind && !cand.local.is_wildcard();
    let mut out = Vec::new();
    for (i, o) in owners.iter().enumerate() {
        let via = if per_address {
            if o.state == OwnerState::TimeWait && !v.bhash2_timewait {
                continue;
            }
            let via = if same_bind2_bucket(&cand, &o.sock) {
                Via::SameAddressBucket
            } else if wildcard_bind2_bucket(&cand, o, v) {
                Via::WildcardBucket
            } else {
                continue;
            };
            // __inet_bhash2_conflict(): a v6-only owner and an IPv4 / v4-mapped bind.
            if v.bhash2_v6only_owner
                && o.sock.ipv6_only()
                && (!cand.local.is_v6() || cand.local.is_mapped())
            {
                continue;
            }
            via
        } else {
            if !rcv_saddr_equal(&cand, &o.sock) {
                continue;
            }
            Via::OwnerWalk
        };
        if !devices_overlap(&cand, &o.sock) {
            continue;
        }
        if let Some(rule) = sharing_refused(&cand, o) {
            out.push(Conflict {
                owner: i,
                overlap: overlap(&cand, &o.sock),
                rule,
                via,
            });
        }
    }
    out
}

/// `sk_reuseport_match()`; `None` when the bucket's `fast_*` fields needed are unknown.
fn reuseport_fast_match(cand: &Sock, b: &BucketState) -> Option<bool> {
    if b.fastreuseport <= 0 || !cand.opts.reuseport {
        return Some(false);
    }
    let uid = b.fastuid?;
    if uid != cand.opts.uid {
        return Some(false);
    }
    if b.fastreuseport == FASTREUSEPORT_ANY {
        return Some(true);
    }
    Some(fast_addr_match(&b.fast_addr?, cand))
}

/// The bucket's fast-path state after `sk` took the port (`inet_csk_update_fastreuse()`,
/// run by every successful bind() and by listen()): `bucket` is the state before (`None`:
/// the bind creates the bucket, `inet_bind_bucket_create()` starts it at 0/0), `others`
/// tells whether other sockets already own the port.
pub fn after(
    bucket: Option<&BucketState>,
    sk: &Sock,
    others: bool,
    v: &Variant,
    phase: Phase,
) -> BucketState {
    let sk = sk.effective();
    let mut b = bucket.copied().unwrap_or(BucketState {
        fastreuse: 0,
        fastreuseport: 0,
        fastuid: None,
        fast_addr: None,
    });
    let reuse = sk.opts.reuseaddr && phase == Phase::Bind;
    let remember = |b: &mut BucketState, strength: i8| {
        b.fastreuseport = strength;
        b.fastuid = Some(sk.opts.uid);
        b.fast_addr = Some(FastAddr {
            local: sk.local,
            ipv6_only: sk.ipv6_only(),
        });
    };
    // Before 6.8 the bucket is empty for the first owner's bind (the socket joins the
    // owner list after this runs; listen() finds it there). Since, its per-address
    // bucket is linked first, so this branch is never taken.
    if v.first_owner_sets_fastreuse && !others && phase == Phase::Bind {
        b.fastreuse = i8::from(reuse);
        if sk.opts.reuseport {
            remember(&mut b, FASTREUSEPORT_ANY);
        } else {
            b.fastreuseport = 0;
        }
        return b;
    }
    if !reuse {
        b.fastreuse = 0;
    }
    if sk.opts.reuseport {
        if reuseport_fast_match(&sk, &b) != Some(true) {
            remember(&mut b, FASTREUSEPORT_STRICT);
        }
    } else {
        b.fastreuseport = 0;
    }
    b
}

/// Would `cand` get the port now? `owners` are the port's owners (the socket itself
/// excluded for [`Phase::Listen`]); `bucket` is the bucket's fast-path state when known
/// (without it only the conflict check is modelled).
pub fn check(
    cand: &Sock,
    owners: &[Owner],
    bucket: Option<&BucketState>,
    v: &Variant,
    phase: Phase,
) -> Report {
    let cand = cand.effective();
    if let Some(why) = invalid(&cand) {
        return Report {
            verdict: Verdict::Einval,
            path: Path::ConflictCheck,
            conflicts: Vec::new(),
            bypassed: Vec::new(),
            fixes: Vec::new(),
            invalid: Some(why),
        };
    }
    let found = conflicts(&cand, owners, v);
    let mut path = if owners.is_empty() {
        Path::NoOwners
    } else {
        Path::ConflictCheck
    };
    if let (Some(b), false) = (bucket, owners.is_empty()) {
        if b.fastreuse > 0 && cand.opts.reuseaddr && phase == Phase::Bind {
            path = Path::FastReuse;
        } else if reuseport_fast_match(&cand, b) == Some(true) {
            path = Path::FastReuseport;
        }
    }
    let fast = matches!(path, Path::FastReuse | Path::FastReuseport);
    if found.is_empty() || fast {
        return Report {
            verdict: Verdict::Ok,
            path,
            conflicts: Vec::new(),
            bypassed: if fast { found } else { Vec::new() },
            fixes: Vec::new(),
            invalid: None,
        };
    }
    let fixes = fixes(&cand, owners, &found, v);
    Report {
        verdict: Verdict::Eaddrinuse,
        path,
        conflicts: found,
        bypassed: Vec::new(),
        fixes,
        invalid: None,
    }
}

/// Changes that make the bind pass the conflict check, smallest first: options on the new
/// socket alone, then options on both it and the conflicting owners, then waiting when only
/// TIME-WAIT sockets are in the way.
fn fixes(cand: &Sock, owners: &[Owner], found: &[Conflict], v: &Variant) -> Vec<Fix> {
    let mut uids: Vec<u32> = found
        .iter()
        .map(|c| owners[c.owner].sock.opts.uid)
        .filter(|u| *u != cand.opts.uid)
        .collect();
    uids.sort_unstable();
    uids.dedup();
    let v6only_possible = cand.local.is_v6() && !cand.local.is_mapped() && !cand.opts.v6only;
    let mut changes: Vec<Change> = Vec::new();
    // A sharing option the new socket already sets still counts: the owners may need it
    // too (both sockets must set SO_REUSEADDR, or SO_REUSEPORT).
    for bits in 0u8..8 {
        let base = Change {
            reuseaddr: bits & 1 != 0,
            reuseport: bits & 2 != 0,
            v6only: bits & 4 != 0 && v6only_possible,
            uid: None,
        };
        changes.push(base);
        if uids.len() == 1 {
            changes.push(Change {
                uid: Some(uids[0]),
                ..base
            });
        }
    }
    changes.retain(|c| c.size() > 0);
    changes.sort_by_key(|c| c.size());
    changes.dedup();

    let passes = |c: Change, on_owners: bool| {
        let mut s = *cand;
        c.apply(&mut s);
        let mut os = owners.to_vec();
        if on_owners {
            let owner_change = Change {
                v6only: false,
                uid: None,
                ..c
            };
            for f in found {
                owner_change.apply(&mut os[f.owner].sock);
            }
        }
        invalid(&s.effective()).is_none() && conflicts(&s, &os, v).is_empty()
    };
    let mut out: Vec<Fix> = Vec::new();
    let minimal = |c: Change, on_owners: bool, out: &mut Vec<Fix>| {
        let covered = out.iter().any(|f| match (f, on_owners) {
            (Fix::Candidate { change }, _) => change.within(c),
            (Fix::CandidateAndOwners { change }, true) => change.within(c),
            _ => false,
        });
        if !covered && passes(c, on_owners) {
            out.push(if on_owners {
                Fix::CandidateAndOwners { change: c }
            } else {
                Fix::Candidate { change: c }
            });
        }
    };
    for c in &changes {
        minimal(*c, false, &mut out);
    }
    for c in &changes {
        if c.reuseaddr || c.reuseport {
            minimal(*c, true, &mut out);
        }
    }
    if found
        .iter()
        .all(|c| owners[c.owner].state == OwnerState::TimeWait)
    {
        out.push(Fix::WaitForTimeWait);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{
        super::{
            sock::{Local, SharingOpts},
            variant::KernelVersion,
        },
        *,
    };

    fn v(major: u16, minor: u16) -> Variant {
        Variant::for_version(KernelVersion::new(major, minor, 999))
    }

    fn sock(a: &str, f: &str, uid: u32) -> Sock {
        Sock::new(
            a.parse().unwrap(),
            SharingOpts {
                reuseaddr: f.contains('a'),
                reuseport: f.contains('p'),
                uid,
                v6only: f.contains('6'),
                bound_dev: 0,
            },
        )
        .effective()
    }

    fn owner(a: &str, f: &str, uid: u32, state: OwnerState) -> Owner {
        Owner::new(sock(a, f, uid), state)
    }

    const ALL: [(u16, u16); 5] = [(5, 10), (6, 1), (6, 12), (6, 18), (7, 3)];

    #[test]
    fn same_address_without_options_conflicts_everywhere() {
        // Quiz 6: s1 holds 127.0.0.1:60000, s2 binds it again.
        let owners = [owner("127.0.0.1", "", 0, OwnerState::Other)];
        for (ma, mi) in ALL {
            let r = check(
                &sock("127.0.0.1", "", 0),
                &owners,
                None,
                &v(ma, mi),
                Phase::Bind,
            );
            assert_eq!(r.verdict, Verdict::Eaddrinuse);
            assert_eq!(r.conflicts.len(), 1);
            assert_eq!(r.conflicts[0].overlap, Overlap::SameAddress);
            // The article's fix: both set SO_REUSEADDR.
            let both = Change {
                reuseaddr: true,
                ..Change::default()
            };
            assert!(
                r.fixes.contains(&Fix::CandidateAndOwners { change: both }),
                "{:?}",
                r.fixes
            );
            assert!(!r.fixes.iter().any(
                |f| matches!(f, Fix::Candidate { change } if change.reuseaddr && !change.reuseport)
            ));
        }
    }

    #[test]
    fn reuseaddr_is_refused_by_a_listener_and_reuseport_by_another_uid() {
        let listener = [owner("0.0.0.0", "a", 0, OwnerState::Listen)];
        let r = check(
            &sock("127.0.0.1", "a", 0),
            &listener,
            None,
            &v(6, 18),
            Phase::Bind,
        );
        assert_eq!(r.verdict, Verdict::Eaddrinuse);
        assert_eq!(r.conflicts[0].rule, Rule::ReuseaddrOwnerListening);
        assert_eq!(r.conflicts[0].overlap, Overlap::WildcardOverlap);
        assert_eq!(r.conflicts[0].via, Via::WildcardBucket);
        let bound = [owner("0.0.0.0", "a", 0, OwnerState::Other)];
        assert_eq!(
            check(
                &sock("127.0.0.1", "a", 0),
                &bound,
                None,
                &v(6, 18),
                Phase::Bind
            )
            .verdict,
            Verdict::Ok
        );

        let other_uid = [owner("127.0.0.1", "p", 1000, OwnerState::Listen)];
        let r = check(
            &sock("127.0.0.1", "p", 0),
            &other_uid,
            None,
            &v(5, 10),
            Phase::Bind,
        );
        assert_eq!(
            r.conflicts[0].rule,
            Rule::ReuseportOtherUid {
                candidate_uid: 0,
                owner_uid: 1000
            }
        );
        let same_uid = Change {
            uid: Some(1000),
            ..Change::default()
        };
        assert_eq!(r.fixes[0], Fix::Candidate { change: same_uid });
        // A TIME-WAIT owner's uid does not matter.
        let tw = [owner("127.0.0.1", "p", 1000, OwnerState::TimeWait)];
        assert_eq!(
            check(
                &sock("127.0.0.1", "p", 0),
                &tw,
                None,
                &v(5, 10),
                Phase::Bind
            )
            .verdict,
            Verdict::Ok
        );
    }

    #[test]
    fn dual_stack() {
        let any6 = [owner("::", "", 0, OwnerState::Listen)];
        let any6_v6only = [owner("::", "6", 0, OwnerState::Listen)];
        for (ma, mi) in ALL {
            let r = check(
                &sock("127.0.0.1", "", 0),
                &any6,
                None,
                &v(ma, mi),
                Phase::Bind,
            );
            assert_eq!(r.verdict, Verdict::Eaddrinuse, "{ma}.{mi}");
            assert_eq!(r.conflicts[0].overlap, Overlap::DualStackOverlap);
            let r = check(
                &sock("127.0.0.1", "", 0),
                &any6_v6only,
                None,
                &v(ma, mi),
                Phase::Bind,
            );
            assert_eq!(r.verdict, Verdict::Ok, "{ma}.{mi}");
            // Binding [::] next to 0.0.0.0 needs IPV6_V6ONLY.
            let v4any = [owner("0.0.0.0", "", 0, OwnerState::Listen)];
            let r = check(&sock("::", "", 0), &v4any, None, &v(ma, mi), Phase::Bind);
            assert_eq!(r.verdict, Verdict::Eaddrinuse);
            assert_eq!(
                r.fixes[0],
                Fix::Candidate {
                    change: Change {
                        v6only: true,
                        ..Change::default()
                    }
                }
            );
        }
        // A v6-only [::] owner and a v4-mapped bind: before the 6.9 fix (and its 6.1.168
        // backport) the per-address path reported a conflict.
        let mapped = sock("::ffff:127.0.0.1", "", 0);
        assert_eq!(
            check(&mapped, &any6_v6only, None, &v(5, 10), Phase::Bind).verdict,
            Verdict::Ok
        );
        let old61 = Variant::for_version(KernelVersion::new(6, 1, 100));
        assert_eq!(
            check(&mapped, &any6_v6only, None, &old61, Phase::Bind).verdict,
            Verdict::Eaddrinuse
        );
        assert_eq!(
            check(&mapped, &any6_v6only, None, &v(6, 12), Phase::Bind).verdict,
            Verdict::Ok
        );
    }

    #[test]
    fn mapped_wildcard_bucket_family_decides_from_6_1_to_6_7() {
        let owners = [owner("::ffff:0.0.0.0", "", 0, OwnerState::Other)];
        let cand = sock("::ffff:127.0.0.1", "", 0);
        assert_eq!(
            check(&cand, &owners, None, &v(5, 10), Phase::Bind).verdict,
            Verdict::Eaddrinuse
        );
        assert_eq!(
            check(&cand, &owners, None, &v(6, 1), Phase::Bind).verdict,
            Verdict::Ok
        );
        assert_eq!(
            check(&cand, &owners, None, &v(6, 12), Phase::Bind).verdict,
            Verdict::Eaddrinuse
        );
        // IPv4 binds see it on every kernel.
        for (ma, mi) in ALL {
            let r = check(
                &sock("127.0.0.1", "", 0),
                &owners,
                None,
                &v(ma, mi),
                Phase::Bind,
            );
            assert_eq!(r.verdict, Verdict::Eaddrinuse);
        }
        // Seen on 6.1.192: ::ffff:0.0.0.0 created the bucket, then an IPv4 0.0.0.0 listener
        // joined it; a v4-mapped bind checks neither. Had the IPv4 socket come first, both.
        let mut listener = owner("0.0.0.0", "a", 0, OwnerState::Listen);
        listener.bucket_family = Some(Family::Inet6);
        let cand2 = sock("::ffff:127.0.0.2", "a", 0);
        let r = check(&cand2, &[owners[0], listener], None, &v(6, 1), Phase::Bind);
        assert_eq!(r.verdict, Verdict::Ok);
        listener.bucket_family = Some(Family::Inet);
        let r = check(&cand2, &[owners[0], listener], None, &v(6, 1), Phase::Bind);
        assert_eq!(r.verdict, Verdict::Eaddrinuse);
        let mut joined = owners[0];
        joined.bucket_family = Some(Family::Inet);
        let r = check(&cand, &[joined], None, &v(6, 1), Phase::Bind);
        assert_eq!(r.verdict, Verdict::Eaddrinuse);
    }

    #[test]
    fn timewait_on_the_per_address_path_needs_the_6_2_change() {
        let owners = [owner("127.0.0.1", "", 0, OwnerState::TimeWait)];
        let cand = sock("127.0.0.1", "a", 0);
        assert_eq!(
            check(&cand, &owners, None, &v(5, 10), Phase::Bind).verdict,
            Verdict::Eaddrinuse
        );
        let early61 = Variant::for_version(KernelVersion::new(6, 1, 0));
        assert_eq!(
            check(&cand, &owners, None, &early61, Phase::Bind).verdict,
            Verdict::Ok
        );
        let r = check(&cand, &owners, None, &v(6, 18), Phase::Bind);
        assert_eq!(r.verdict, Verdict::Eaddrinuse);
        assert!(r.fixes.contains(&Fix::WaitForTimeWait));
    }

    #[test]
    fn connected_ipv6_socket_without_v6only_meets_the_ipv4_wildcard() {
        // Bound to [::], then connected to [::1]: address ::1 but not v6-only.
        let o = Owner::new(
            Sock::new("::1".parse().unwrap(), SharingOpts::plain(0)),
            OwnerState::Other,
        );
        for (ma, mi) in ALL {
            let r = check(&sock("0.0.0.0", "", 0), &[o], None, &v(ma, mi), Phase::Bind);
            assert_eq!(r.verdict, Verdict::Eaddrinuse, "{ma}.{mi}");
            assert_eq!(r.conflicts[0].overlap, Overlap::DualStackOverlap);
        }
        // 127.0.0.6 (LOOPBACK4_IPV6) meets it only on the pre-6.1 owner walk.
        assert_eq!(
            check(
                &sock("127.0.0.6", "", 0),
                &[o],
                None,
                &v(5, 10),
                Phase::Bind
            )
            .verdict,
            Verdict::Eaddrinuse
        );
        assert_eq!(
            check(
                &sock("127.0.0.6", "", 0),
                &[o],
                None,
                &v(6, 18),
                Phase::Bind
            )
            .verdict,
            Verdict::Ok
        );
    }

    #[test]
    fn fast_paths() {
        // The owner bound with SO_REUSEADDR (bucket +1) and cleared the option afterwards:
        // the conflict check would refuse, the fast path lets the bind through.
        let owners = [owner("127.0.0.1", "", 0, OwnerState::Other)];
        let plus1 = BucketState {
            fastreuse: 1,
            fastreuseport: 0,
            fastuid: None,
            fast_addr: None,
        };
        let r = check(
            &sock("127.0.0.1", "a", 0),
            &owners,
            Some(&plus1),
            &v(5, 10),
            Phase::Bind,
        );
        assert_eq!((r.verdict, r.path), (Verdict::Ok, Path::FastReuse));
        assert_eq!(r.bypassed.len(), 1);
        // listen() runs without the SO_REUSEADDR fast path.
        let r = check(
            &sock("127.0.0.1", "a", 0),
            &owners,
            Some(&plus1),
            &v(5, 10),
            Phase::Listen,
        );
        assert_eq!(r.verdict, Verdict::Eaddrinuse);

        let owners = [owner("0.0.0.0", "p", 1000, OwnerState::Other)];
        let strict = BucketState {
            fastreuse: 0,
            fastreuseport: FASTREUSEPORT_STRICT,
            fastuid: Some(1000),
            fast_addr: Some(FastAddr {
                local: Local("0.0.0.0".parse().unwrap()),
                ipv6_only: false,
            }),
        };
        let r = check(
            &sock("127.0.0.1", "p", 1000),
            &owners,
            Some(&strict),
            &v(6, 18),
            Phase::Bind,
        );
        assert_eq!((r.verdict, r.path), (Verdict::Ok, Path::FastReuseport));
        let unknown = BucketState {
            fastuid: None,
            ..strict
        };
        let r = check(
            &sock("127.0.0.1", "p", 1000),
            &owners,
            Some(&unknown),
            &v(6, 18),
            Phase::Bind,
        );
        assert_eq!((r.verdict, r.path), (Verdict::Ok, Path::ConflictCheck));
    }

    #[test]
    fn bucket_state_after_binds() {
        let a = sock("127.0.0.1", "a", 0);
        // Before 6.8 the first SO_REUSEADDR bind sets +1; since, it stays 0.
        assert_eq!(after(None, &a, false, &v(6, 1), Phase::Bind).fastreuse, 1);
        assert_eq!(after(None, &a, false, &v(6, 12), Phase::Bind).fastreuse, 0);
        // listen() takes it to 0.
        let b = after(None, &a, false, &v(6, 1), Phase::Bind);
        assert_eq!(
            after(Some(&b), &a, true, &v(6, 1), Phase::Listen).fastreuse,
            0
        );
        // SO_REUSEPORT: any (1) for the first owner before 6.8, strict (2) since.
        let p = sock("0.0.0.0", "p", 7);
        let b = after(None, &p, false, &v(6, 1), Phase::Bind);
        assert_eq!((b.fastreuseport, b.fastuid), (FASTREUSEPORT_ANY, Some(7)));
        let b = after(None, &p, false, &v(6, 18), Phase::Bind);
        assert_eq!(
            (b.fastreuseport, b.fastuid),
            (FASTREUSEPORT_STRICT, Some(7))
        );
        assert_eq!(
            after(Some(&b), &sock("::", "", 7), true, &v(6, 18), Phase::Bind).fastreuseport,
            0
        );
    }

    #[test]
    fn strict_reuseport_fast_path_skips_owners_the_check_would_refuse() {
        // Seen on 6.18: [::1] (v6-only, no options) is bound, then 0.0.0.0 with
        // SO_REUSEPORT (no overlap); the bucket remembers 0.0.0.0 as strict. A [::]
        // SO_REUSEPORT bind of the same uid matches 0.0.0.0 and skips the check that would
        // find [::1].
        let vv = v(6, 18);
        let o0 = owner("::1", "", 0, OwnerState::Other);
        let b0 = after(None, &o0.sock, false, &vv, Phase::Bind);
        let o1 = owner("0.0.0.0", "p", 0, OwnerState::Other);
        assert_eq!(
            check(&o1.sock, &[o0], Some(&b0), &vv, Phase::Bind).verdict,
            Verdict::Ok
        );
        let b1 = after(Some(&b0), &o1.sock, true, &vv, Phase::Bind);
        let r = check(&sock("::", "p", 0), &[o0, o1], Some(&b1), &vv, Phase::Bind);
        assert_eq!((r.verdict, r.path), (Verdict::Ok, Path::FastReuseport));
        assert_eq!(r.bypassed.len(), 1);
        assert_eq!(
            check(&sock("::", "p", 0), &[o0, o1], None, &vv, Phase::Bind).verdict,
            Verdict::Eaddrinuse
        );
    }

    #[test]
    fn bound_devices_and_invalid_addresses() {
        let mut o = owner("127.0.0.1", "", 0, OwnerState::Other);
        o.sock.opts.bound_dev = 2;
        let mut c = sock("127.0.0.1", "", 0);
        c.opts.bound_dev = 3;
        assert_eq!(
            check(&c, &[o], None, &v(6, 18), Phase::Bind).verdict,
            Verdict::Ok
        );
        c.opts.bound_dev = 0;
        assert_eq!(
            check(&c, &[o], None, &v(6, 18), Phase::Bind).verdict,
            Verdict::Eaddrinuse
        );
        let r = check(
            &sock("::ffff:127.0.0.1", "6", 0),
            &[],
            None,
            &v(6, 18),
            Phase::Bind,
        );
        assert_eq!(r.verdict, Verdict::Einval);
    }
}
