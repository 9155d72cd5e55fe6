//! The bucket-state reducer: turns a stream of backend-neutral [`Event`]s into
//! [`Transition`]s of bind buckets by diffing each observed state against the last known
//! state of the same bucket.
//!
//! An event says: after operation `op` on a socket, the bucket of (netns, `ev.port`) is
//! `ev.bucket` if `flag::BUCKET_PRESENT` is set, else there is no bucket. Nothing here
//! assumes what the kernel *should* do; transitions come from observed states, plus a
//! few inferences about a bucket seen for the first time (documented on [`Reducer`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use portwatch_common::{flag, op, Event};

use crate::{
    decode::{comm_str, fmt_addr, op_of},
    model::{BucketInfo, BucketKey, Op, Snapshot, SockOpts, Transition, TransitionKind},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Known {
    info: BucketInfo,
    /// Kernel address of the bucket (identity only), 0 when not known.
    tb: u64,
}

/// Last known state of every bucket seen, keyed by [`BucketKey`].
///
/// Rules, per event (`apply`):
/// - events with an unknown `op`, and successful events on port 0, are ignored
///   (counted in [`Reducer::ignored`]);
/// - a failure (`errno != 0`) of bind/listen first yields `BindFailed`, of connect
///   `ConnectFailed`, carrying the errno and the bucket that made it fail; a failure on
///   port 0 yields only that transition;
/// - then the observed state is diffed against the known one:
///   - bucket address changed (both non-zero): `BucketDestroyed` for the old one, and the
///     new one is treated as first seen;
///   - known and present: `OwnerAdded`/`OwnerRemoved` when the owner count moved, then
///     `FastreuseChanged`, `FastreuseportChanged` when those moved;
///   - known and absent: `BucketDestroyed`, forgotten;
///   - first seen and present, after a successful owner-adding op (bind, accept, and
///     connect/listen that allocated the port, i.e. without `HAD_PORT`): `BucketCreated`
///     when it has exactly one owner, `OwnerAdded` when more; otherwise just remembered;
///   - first seen and absent after close/release/timewait of a socket that had the
///     port: `BucketDestroyed` (that socket held it).
#[derive(Debug, Default)]
pub struct Reducer {
    known: BTreeMap<BucketKey, Known>,
    /// (netns, port) -> l3mdevs with a known bucket, to key events without a bucket.
    by_port: HashMap<(u32, u16), BTreeSet<i32>>,
    /// Buckets whose destruction was already reported: a second report of the same
    /// release (e.g. `sock:inet_sock_set_state` and then close()) stays silent.
    gone: HashSet<BucketKey>,
    ignored: u64,
}

/// Bound on remembered destroyed buckets (a soak across many ports must not grow memory).
const MAX_GONE: usize = 65536;

fn info_of(ev: &Event) -> BucketInfo {
    BucketInfo {
        fastreuse: ev.bucket.fastreuse,
        fastreuseport: ev.bucket.fastreuseport,
        owners: ev.bucket.owners,
        owners_truncated: ev.flags & flag::OWNERS_TRUNCATED != 0,
    }
}

fn is_owner_adding(op_v: u8, flags: u16) -> bool {
    match op_v {
        op::BIND | op::ACCEPT => true,
        op::CONNECT | op::LISTEN => flags & flag::HAD_PORT == 0,
        _ => false,
    }
}

impl Reducer {
    pub fn new() -> Self {
        Self::default()
    }

    /// All buckets currently known, ordered by key.
    pub fn known(&self) -> impl Iterator<Item = (&BucketKey, &BucketInfo)> {
        self.known.iter().map(|(k, v)| (k, &v.info))
    }

    /// The last known state of one bucket.
    pub fn get(&self, key: &BucketKey) -> Option<&BucketInfo> {
        self.known.get(key).map(|k| &k.info)
    }

    /// Number of known buckets.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// Events ignored so far (unknown op, or success on port 0).
    pub fn ignored(&self) -> u64 {
        self.ignored
    }

    /// Records a bucket as known without emitting anything (e.g. from a snapshot).
    /// `tb` is the kernel bucket address, 0 when not known.
    pub fn seed(&mut self, key: BucketKey, info: BucketInfo, tb: u64) {
        self.insert(key, Known { info, tb });
    }

    /// Seeds every bucket of a snapshot (bucket addresses unknown: 0). Buckets of the
    /// snapshot's namespaces that the snapshot no longer shows are not removed; call
    /// [`Reducer::forget_netns`] first for a full resync.
    pub fn seed_snapshot(&mut self, snap: &Snapshot) {
        for row in &snap.buckets {
            self.seed(row.key, row.info, 0);
        }
    }

    /// Forgets every bucket of a network namespace (e.g. when it went away).
    pub fn forget_netns(&mut self, netns: u32) {
        self.known.retain(|k, _| k.netns != netns);
        self.gone.retain(|k| k.netns != netns);
        self.by_port.retain(|&(ns, _), _| ns != netns);
    }

    fn insert(&mut self, key: BucketKey, v: Known) {
        self.gone.remove(&key);
        self.known.insert(key, v);
        self.by_port
            .entry((key.netns, key.port))
            .or_default()
            .insert(key.l3mdev);
    }

    /// Remembers that the destruction of `key` was reported.
    fn mark_gone(&mut self, key: BucketKey) {
        if self.gone.len() >= MAX_GONE {
            self.gone.clear();
        }
        self.gone.insert(key);
    }

    fn remove(&mut self, key: &BucketKey) {
        self.mark_gone(*key);
        self.known.remove(key);
        if let Some(set) = self.by_port.get_mut(&(key.netns, key.port)) {
            set.remove(&key.l3mdev);
            if set.is_empty() {
                self.by_port.remove(&(key.netns, key.port));
            }
        }
    }

    /// The key an event is about: the bucket's l3mdev if present, else the (lowest)
    /// l3mdev of a known bucket of (netns, port), else 0.
    fn key_of(&self, ev: &Event) -> BucketKey {
        let l3mdev = if ev.flags & flag::BUCKET_PRESENT != 0 {
            ev.bucket.l3mdev
        } else {
            self.by_port
                .get(&(ev.netns, ev.port))
                .and_then(|s| s.iter().next().copied())
                .unwrap_or(0)
        };
        BucketKey {
            netns: ev.netns,
            l3mdev,
            port: ev.port,
        }
    }

    /// Applies one event; returns the transitions it implies, in order.
    pub fn apply(&mut self, ev: &Event) -> Vec<Transition> {
        let op_m = match op_of(ev.op) {
            Ok(o) => o,
            Err(_) => {
                self.ignored += 1;
                return Vec::new();
            }
        };
        let failed = ev.errno != 0;
        if ev.port == 0 && !failed {
            self.ignored += 1;
            return Vec::new();
        }
        let present = ev.flags & flag::BUCKET_PRESENT != 0;
        let after = present.then(|| info_of(ev));
        let key = self.key_of(ev);
        let base = base_transition(ev, op_m, key, after);
        let mut out = Vec::new();

        if failed {
            let kind = match op_m {
                Op::Bind | Op::Listen => Some(TransitionKind::BindFailed),
                Op::Connect => Some(TransitionKind::ConnectFailed),
                _ => None,
            };
            if let Some(kind) = kind {
                out.push(Transition {
                    kind,
                    errno: ev.errno,
                    ..base.clone()
                });
            }
            if ev.port == 0 {
                return out;
            }
        }

        let mut prior = self.known.get(&key).copied();
        if let (Some(p), true) = (prior, present) {
            if p.tb != 0 && ev.bucket.tb != 0 && p.tb != ev.bucket.tb {
                out.push(Transition {
                    kind: TransitionKind::BucketDestroyed,
                    after: None,
                    ..base.clone()
                });
                self.remove(&key);
                prior = None;
            }
        }

        match (prior, after) {
            (Some(p), Some(now)) => {
                let old = p.info;
                if now.owners > old.owners {
                    out.push(Transition {
                        kind: TransitionKind::OwnerAdded,
                        ..base.clone()
                    });
                } else if now.owners < old.owners {
                    out.push(Transition {
                        kind: TransitionKind::OwnerRemoved,
                        ..base.clone()
                    });
                }
                if now.fastreuse != old.fastreuse {
                    out.push(Transition {
                        kind: TransitionKind::FastreuseChanged,
                        from: Some(old.fastreuse),
                        to: Some(now.fastreuse),
                        ..base.clone()
                    });
                }
                if now.fastreuseport != old.fastreuseport {
                    out.push(Transition {
                        kind: TransitionKind::FastreuseportChanged,
                        from: Some(old.fastreuseport),
                        to: Some(now.fastreuseport),
                        ..base.clone()
                    });
                }
                let tb = if ev.bucket.tb != 0 {
                    ev.bucket.tb
                } else {
                    p.tb
                };
                self.insert(key, Known { info: now, tb });
            }
            (Some(_), None) => {
                out.push(Transition {
                    kind: TransitionKind::BucketDestroyed,
                    ..base.clone()
                });
                self.remove(&key);
            }
            (None, Some(now)) => {
                if !failed && is_owner_adding(ev.op, ev.flags) {
                    if now.owners == 1 {
                        out.push(Transition {
                            kind: TransitionKind::BucketCreated,
                            ..base.clone()
                        });
                    } else if now.owners > 1 {
                        out.push(Transition {
                            kind: TransitionKind::OwnerAdded,
                            ..base.clone()
                        });
                    }
                }
                self.insert(
                    key,
                    Known {
                        info: now,
                        tb: ev.bucket.tb,
                    },
                );
            }
            (None, None) => {
                let releasing = matches!(ev.op, op::CLOSE | op::RELEASE | op::TIMEWAIT);
                if !failed && releasing && ev.flags & flag::HAD_PORT != 0 && !self.gone.contains(&key) {
                    out.push(Transition {
                        kind: TransitionKind::BucketDestroyed,
                        ..base.clone()
                    });
                    self.mark_gone(key);
                }
            }
        }
        out
    }
}

/// The fields every transition of `ev` shares; `kind` is a placeholder to overwrite.
fn base_transition(ev: &Event, op_m: Op, key: BucketKey, after: Option<BucketInfo>) -> Transition {
    // A socket whose bind/connect failed holds no port: its address says nothing then.
    let sock_known =
        ev.flags & flag::SOCK_KNOWN != 0 && (ev.errno == 0 || ev.flags & flag::HAD_PORT != 0);
    Transition {
        ts_ns: ev.ts_ns,
        kind: TransitionKind::OwnerAdded,
        op: op_m,
        key,
        after,
        from: None,
        to: None,
        errno: 0,
        pid: ev.pid,
        comm: comm_str(&ev.comm),
        local: sock_known.then(|| fmt_addr(ev.family, &ev.laddr, ev.port)),
        remote: (sock_known && ev.rport != 0).then(|| fmt_addr(ev.family, &ev.raddr, ev.rport)),
        opts: SockOpts {
            reuseaddr: ev.flags & flag::REUSEADDR != 0,
            reuseport: ev.flags & flag::REUSEPORT != 0,
            bind_address_no_port: ev.flags & flag::BIND_ADDRESS_NO_PORT != 0,
        },
        port_from_range: ev.flags & flag::PORT_FROM_RANGE != 0,
    }
}

#[cfg(test)]
mod tests {
    use portwatch_common::BucketState;
    use TransitionKind as K;

    use super::*;
    use crate::decode::AF_INET;

    const NS: u32 = 4026532290;
    const TB: u64 = 0xffff_8880_0000_1000;

    fn comm(s: &str) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[..s.len()].copy_from_slice(s.as_bytes());
        c
    }

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut x = [0u8; 16];
        x[..4].copy_from_slice(&a);
        x
    }

    /// An event on port 60000 in NS after `op_v`; bucket present with the given state
    /// when `state` is Some((fastreuse, owners)).
    fn ev(op_v: u8, flags: u16, state: Option<(i8, u32)>) -> Event {
        let mut e = Event {
            ts_ns: 1_000,
            pid: 4242,
            tid: 4242,
            netns: NS,
            family: AF_INET,
            port: 60000,
            laddr: v4([127, 0, 0, 1]),
            flags: flags | flag::SOCK_KNOWN,
            op: op_v,
            comm: comm("python3"),
            ..Default::default()
        };
        if let Some((fr, owners)) = state {
            e.flags |= flag::BUCKET_PRESENT;
            e.bucket = BucketState {
                tb: TB,
                owners,
                l3mdev: 0,
                port: 60000,
                fastreuse: fr,
                fastreuseport: -1,
                _pad: [0; 4],
            };
        }
        e
    }

    fn kinds(ts: &[Transition]) -> Vec<K> {
        ts.iter().map(|t| t.kind).collect()
    }

    fn key() -> BucketKey {
        BucketKey {
            netns: NS,
            l3mdev: 0,
            port: 60000,
        }
    }

    fn info(fr: i8, owners: u32) -> BucketInfo {
        BucketInfo {
            fastreuse: fr,
            fastreuseport: -1,
            owners,
            owners_truncated: false,
        }
    }

    #[test]
    fn article_scenario() {
        let mut r = Reducer::new();
        // s1: connect() from an ephemeral port creates 60000 at -1 with one owner.
        let mut e = ev(op::CONNECT, 0, Some((-1, 1)));
        e.raddr = v4([127, 9, 9, 9]);
        e.rport = 1234;
        let t = r.apply(&e);
        assert_eq!(kinds(&t), [K::BucketCreated]);
        assert_eq!(t[0].after, Some(info(-1, 1)));
        assert_eq!(t[0].local.as_deref(), Some("127.0.0.1:60000"));
        assert_eq!(t[0].remote.as_deref(), Some("127.9.9.9:1234"));
        assert_eq!(t[0].op, Op::Connect);
        assert_eq!(t[0].key, key());
        assert_eq!(t[0].comm, "python3");
        assert_eq!(t[0].pid, 4242);

        // s2: plain bind of another IP on that port: owner added, then -1 -> 0.
        let mut e = ev(op::BIND, 0, Some((0, 2)));
        e.laddr = v4([127, 2, 2, 2]);
        let t = r.apply(&e);
        assert_eq!(kinds(&t), [K::OwnerAdded, K::FastreuseChanged]);
        assert_eq!(t[0].after, Some(info(0, 2)));
        assert_eq!((t[1].from, t[1].to), (Some(-1), Some(0)));
        assert_eq!(t[1].local.as_deref(), Some("127.2.2.2:60000"));
        assert_eq!(t[1].remote, None);

        // close x2: owner removed, then bucket destroyed.
        let t = r.apply(&ev(op::CLOSE, flag::HAD_PORT, Some((0, 1))));
        assert_eq!(kinds(&t), [K::OwnerRemoved]);
        assert_eq!(t[0].after, Some(info(0, 1)));
        let t = r.apply(&ev(op::CLOSE, flag::HAD_PORT, None));
        assert_eq!(kinds(&t), [K::BucketDestroyed]);
        assert_eq!(t[0].after, None);
        assert_eq!(t[0].key, key());
        assert!(r.is_empty());
    }

    #[test]
    fn quiz3_connect_failure() {
        let mut r = Reducer::new();
        // s1: bind 127.1.1.1:0 takes 60000 at fastreuse 0.
        let mut e = ev(op::BIND, 0, Some((0, 1)));
        e.laddr = v4([127, 1, 1, 1]);
        assert_eq!(kinds(&r.apply(&e)), [K::BucketCreated]);
        // s1 connect (had its port): no transition.
        assert!(r
            .apply(&ev(op::CONNECT, flag::HAD_PORT, Some((0, 1))))
            .is_empty());
        // s2 connect fails: the only port's bucket is 0, not -1.
        let mut e = ev(op::CONNECT, flag::PORT_FROM_RANGE, Some((0, 1)));
        e.errno = 99;
        let t = r.apply(&e);
        assert_eq!(kinds(&t), [K::ConnectFailed]);
        assert_eq!(t[0].errno, 99);
        assert_eq!(t[0].after, Some(info(0, 1)));
        assert!(t[0].port_from_range);
        assert_eq!(r.get(&key()), Some(&info(0, 1)));
    }

    #[test]
    fn bind_failure_has_no_owner_inference() {
        let mut r = Reducer::new();
        let mut e = ev(op::BIND, 0, Some((0, 1)));
        e.errno = 98;
        let t = r.apply(&e);
        assert_eq!(kinds(&t), [K::BindFailed]);
        assert_eq!(t[0].errno, 98);
        // But the state is remembered.
        assert_eq!(r.get(&key()), Some(&info(0, 1)));
        // Listen failure is a bind failure too.
        let mut e = ev(op::LISTEN, flag::HAD_PORT, Some((0, 1)));
        e.errno = 98;
        assert_eq!(kinds(&r.apply(&e)), [K::BindFailed]);
    }

    #[test]
    fn failure_then_diff() {
        let mut r = Reducer::new();
        r.seed(key(), info(0, 1), TB);
        let mut e = ev(op::BIND, 0, Some((-1, 2)));
        e.errno = 98;
        let t = r.apply(&e);
        assert_eq!(
            kinds(&t),
            [K::BindFailed, K::OwnerAdded, K::FastreuseChanged]
        );
        assert_eq!(t[1].errno, 0);
        // Failure with the bucket gone: failure, then destroyed.
        let mut e = ev(op::CONNECT, 0, None);
        e.errno = 99;
        let t = r.apply(&e);
        assert_eq!(kinds(&t), [K::ConnectFailed, K::BucketDestroyed]);
        assert_eq!(t[0].after, None);
    }

    #[test]
    fn failure_on_port_zero_is_still_reported() {
        let mut r = Reducer::new();
        let mut e = ev(op::CONNECT, flag::HAD_PORT, None);
        e.port = 0;
        e.errno = 99;
        let t = r.apply(&e);
        assert_eq!(kinds(&t), [K::ConnectFailed]);
        assert_eq!(t[0].key.port, 0);
        assert!(r.is_empty());
        assert_eq!(r.ignored(), 0);
    }

    #[test]
    fn success_on_port_zero_and_unknown_op_are_ignored() {
        let mut r = Reducer::new();
        let mut e = ev(op::BIND, 0, Some((0, 1)));
        e.port = 0;
        assert!(r.apply(&e).is_empty());
        let mut e = ev(op::BIND, 0, Some((0, 1)));
        e.op = 99;
        assert!(r.apply(&e).is_empty());
        assert!(r.is_empty());
        assert_eq!(r.ignored(), 2);
    }

    #[test]
    fn failure_of_other_ops_has_no_failure_kind() {
        let mut r = Reducer::new();
        r.seed(key(), info(0, 1), TB);
        let mut e = ev(op::ACCEPT, flag::HAD_PORT, Some((0, 1)));
        e.errno = 11;
        assert!(r.apply(&e).is_empty());
    }

    #[test]
    fn owner_adding_ops_on_unknown_buckets() {
        // connect/listen with HAD_PORT on an unknown bucket: remembered, silent.
        for o in [op::CONNECT, op::LISTEN] {
            let mut r = Reducer::new();
            assert!(r.apply(&ev(o, flag::HAD_PORT, Some((0, 1)))).is_empty());
            assert_eq!(r.len(), 1);
        }
        // connect/listen autobind, bind, accept: created (1 owner) or owner added (>1).
        for o in [op::CONNECT, op::LISTEN, op::BIND, op::ACCEPT] {
            let mut r = Reducer::new();
            assert_eq!(
                kinds(&r.apply(&ev(o, 0, Some((0, 1))))),
                [K::BucketCreated],
                "op {o}"
            );
            let mut r = Reducer::new();
            assert_eq!(
                kinds(&r.apply(&ev(o, 0, Some((0, 3))))),
                [K::OwnerAdded],
                "op {o}"
            );
        }
        // accept adds an owner even though the listener had the port.
        let mut r = Reducer::new();
        assert_eq!(
            kinds(&r.apply(&ev(op::ACCEPT, flag::HAD_PORT, Some((0, 2))))),
            [K::OwnerAdded]
        );
        // Zero owners (odd but possible mid-walk): remembered, silent.
        let mut r = Reducer::new();
        assert!(r.apply(&ev(op::BIND, 0, Some((0, 0)))).is_empty());
        // Close on an unknown present bucket: remembered, silent.
        let mut r = Reducer::new();
        assert!(r
            .apply(&ev(op::CLOSE, flag::HAD_PORT, Some((0, 1))))
            .is_empty());
        assert_eq!(r.get(&key()), Some(&info(0, 1)));
    }

    #[test]
    fn unknown_and_absent() {
        for o in [op::CLOSE, op::RELEASE, op::TIMEWAIT] {
            let mut r = Reducer::new();
            let t = r.apply(&ev(o, flag::HAD_PORT, None));
            assert_eq!(kinds(&t), [K::BucketDestroyed], "op {o}");
            assert_eq!(t[0].after, None);
            // Without HAD_PORT we know nothing.
            assert!(r.apply(&ev(o, 0, None)).is_empty());
        }
        let mut r = Reducer::new();
        assert!(r.apply(&ev(op::BIND, flag::HAD_PORT, None)).is_empty());
        assert!(r.is_empty());
    }

    #[test]
    fn tb_change_means_destroyed_then_created() {
        let mut r = Reducer::new();
        r.seed(key(), info(-1, 1), TB);
        let mut e = ev(op::BIND, 0, Some((0, 1)));
        e.bucket.tb = TB + 64;
        let t = r.apply(&e);
        assert_eq!(kinds(&t), [K::BucketDestroyed, K::BucketCreated]);
        assert_eq!(t[0].after, None);
        assert_eq!(t[1].after, Some(info(0, 1)));
        // Same owners/state under a new address after a non-owner op: destroyed, remembered.
        let mut e = ev(op::CLOSE, flag::HAD_PORT, Some((0, 1)));
        e.bucket.tb = TB + 128;
        assert_eq!(kinds(&r.apply(&e)), [K::BucketDestroyed]);
        assert_eq!(r.get(&key()), Some(&info(0, 1)));
        // Unknown (0) address on one side: no identity check.
        r.seed(key(), info(0, 1), 0);
        let e = ev(op::CLOSE, flag::HAD_PORT, Some((0, 1)));
        assert!(r.apply(&e).is_empty());
    }

    #[test]
    fn release_returns_to_minus_one_on_new_kernels() {
        // 6.18: removing the last bind()-ed owner when the rest are connect()-bound
        // returns 0 -> -1 without destroying the bucket.
        let mut r = Reducer::new();
        r.seed(key(), info(0, 2), TB);
        let t = r.apply(&ev(op::CLOSE, flag::HAD_PORT, Some((-1, 1))));
        assert_eq!(kinds(&t), [K::OwnerRemoved, K::FastreuseChanged]);
        assert_eq!((t[1].from, t[1].to), (Some(0), Some(-1)));
    }

    #[test]
    fn fastreuseport_change_and_truncation() {
        let mut r = Reducer::new();
        r.seed(key(), info(0, 1), TB);
        let mut e = ev(op::BIND, flag::REUSEPORT | flag::REUSEADDR, Some((0, 2)));
        e.bucket.fastreuseport = 1;
        e.flags |= flag::OWNERS_TRUNCATED | flag::BIND_ADDRESS_NO_PORT;
        let t = r.apply(&e);
        assert_eq!(kinds(&t), [K::OwnerAdded, K::FastreuseportChanged]);
        assert_eq!((t[1].from, t[1].to), (Some(-1), Some(1)));
        assert!(t[0].after.is_some_and(|a| a.owners_truncated));
        assert_eq!(
            t[0].opts,
            SockOpts {
                reuseaddr: true,
                reuseport: true,
                bind_address_no_port: true
            }
        );
        // No change at all: nothing.
        assert!(r.apply(&e).is_empty());
    }

    #[test]
    fn socket_unknown_has_no_addresses() {
        let mut r = Reducer::new();
        let mut e = ev(op::CONNECT, 0, Some((-1, 1)));
        e.flags &= !flag::SOCK_KNOWN;
        e.rport = 1234;
        let t = r.apply(&e);
        assert_eq!(t[0].local, None);
        assert_eq!(t[0].remote, None);
    }

    #[test]
    fn l3mdev_keys() {
        let mut r = Reducer::new();
        let mut e = ev(op::BIND, 0, Some((0, 1)));
        e.bucket.l3mdev = 7;
        let t = r.apply(&e);
        assert_eq!(
            t[0].key,
            BucketKey {
                netns: NS,
                l3mdev: 7,
                port: 60000
            }
        );
        // The bucket-less close is attributed to the known l3mdev 7 bucket.
        let t = r.apply(&ev(op::CLOSE, flag::HAD_PORT, None));
        assert_eq!(kinds(&t), [K::BucketDestroyed]);
        assert_eq!(t[0].key.l3mdev, 7);
        assert!(r.is_empty());
    }

    #[test]
    fn forget_netns_and_seed() {
        let mut r = Reducer::new();
        r.seed(key(), info(0, 1), TB);
        let other = BucketKey {
            netns: 1,
            l3mdev: 0,
            port: 22,
        };
        r.seed(other, info(0, 1), TB + 8);
        assert_eq!(r.len(), 2);
        r.forget_netns(NS);
        let ks: Vec<_> = r.known().map(|(k, _)| *k).collect();
        assert_eq!(ks, [other]);
        // Seeding from a snapshot.
        let snap = Snapshot {
            buckets: vec![crate::model::BucketRow {
                key: key(),
                info: info(-1, 1),
                addresses: vec![],
            }],
            truncated: false,
            slots: 65536,
        };
        let mut r2 = Reducer::new();
        r2.seed_snapshot(&snap);
        assert_eq!(r2.get(&key()), Some(&info(-1, 1)));
        assert_eq!(
            kinds(&r2.apply(&ev(op::BIND, 0, Some((0, 2))))),
            [K::OwnerAdded, K::FastreuseChanged]
        );
        // The forgotten bucket is now unknown: a close with HAD_PORT infers destruction.
        assert_eq!(
            kinds(&r.apply(&ev(op::CLOSE, flag::HAD_PORT, None))),
            [K::BucketDestroyed]
        );
    }

    mod prop {
        use std::collections::BTreeMap;

        use proptest::prelude::*;

        use super::*;

        prop_compose! {
            fn arb_event()(
                op_v in prop_oneof![8 => 1u8..=7, 1 => any::<u8>()],
                flags in any::<u16>(),
                netns in 1u32..3,
                port in prop_oneof![1 => Just(0u16), 6 => 60000u16..60003],
                l3mdev in prop_oneof![4 => Just(0i32), 1 => Just(5i32)],
                tb in 0u64..4,
                owners in 0u32..4,
                fr in -1i8..=1,
                frp in -1i8..=1,
                errno in prop_oneof![4 => Just(0i32), 1 => any::<i32>()],
                rport in any::<u16>(),
                family in prop_oneof![Just(2u16), Just(10u16), any::<u16>()],
                laddr in any::<[u8; 16]>(),
                comm in any::<[u8; 16]>(),
            ) -> Event {
                Event {
                    ts_ns: 1,
                    netns,
                    port,
                    errno,
                    rport,
                    family,
                    laddr,
                    comm,
                    flags,
                    op: op_v,
                    bucket: BucketState {
                        tb: tb * 64,
                        owners,
                        l3mdev,
                        port,
                        fastreuse: fr,
                        fastreuseport: frp,
                        _pad: [0; 4],
                    },
                    ..Default::default()
                }
            }
        }

        proptest! {
            #[test]
            fn matches_trivial_model(evs in proptest::collection::vec(arb_event(), 0..60)) {
                let mut r = Reducer::new();
                let mut model: BTreeMap<BucketKey, BucketInfo> = BTreeMap::new();
                for e in &evs {
                    let ts = r.apply(e);
                    let valid = (1..=7).contains(&e.op);
                    if !valid || (e.port == 0 && e.errno == 0) {
                        prop_assert!(ts.is_empty());
                        continue;
                    }
                    let present = e.flags & flag::BUCKET_PRESENT != 0;
                    let failure_kind = matches!(e.op, op::BIND | op::LISTEN | op::CONNECT);
                    if e.errno != 0 && failure_kind {
                        let k = ts.first().map(|t| t.kind);
                        prop_assert!(matches!(k, Some(K::BindFailed | K::ConnectFailed)));
                        prop_assert_eq!(ts[0].errno, e.errno);
                    }
                    for t in &ts {
                        prop_assert_eq!(t.key.port, e.port);
                        prop_assert_eq!(t.key.netns, e.netns);
                        match t.kind {
                            K::BindFailed | K::ConnectFailed => prop_assert!(e.errno != 0),
                            K::BucketCreated => {
                                prop_assert!(e.errno == 0);
                                prop_assert_eq!(t.after.map(|a| a.owners), Some(1));
                            }
                            K::BucketDestroyed => prop_assert!(t.after.is_none()),
                            K::FastreuseChanged | K::FastreuseportChanged => {
                                prop_assert!(t.from.is_some() && t.from != t.to);
                            }
                            K::OwnerAdded | K::OwnerRemoved => prop_assert!(t.after.is_some()),
                        }
                        if !matches!(t.kind, K::BindFailed | K::ConnectFailed) {
                            prop_assert_eq!(t.errno, 0);
                        }
                    }
                    if e.port == 0 {
                        continue;
                    }
                    // Trivial model: last observed state per key; absent removes the
                    // key the event is attributed to (lowest known l3mdev of the port).
                    if present {
                        let k = BucketKey { netns: e.netns, l3mdev: e.bucket.l3mdev, port: e.port };
                        model.insert(k, info_of(e));
                    } else {
                        let k = model
                            .keys()
                            .filter(|k| k.netns == e.netns && k.port == e.port)
                            .min_by_key(|k| k.l3mdev)
                            .copied();
                        if let Some(k) = k {
                            model.remove(&k);
                        }
                    }
                    let got: BTreeMap<BucketKey, BucketInfo> =
                        r.known().map(|(k, v)| (*k, *v)).collect();
                    prop_assert_eq!(&got, &model);
                }
            }
        }
    }

    #[test]
    fn a_release_reported_twice_destroys_once() {
        let mut r = Reducer::new();
        let created = ev(op::CONNECT, 0, Some((-1, 1)));
        assert_eq!(kinds(&r.apply(&created)), vec![K::BucketCreated]);
        let release = ev(op::RELEASE, flag::HAD_PORT, None);
        assert_eq!(kinds(&r.apply(&release)), vec![K::BucketDestroyed]);
        let close = ev(op::CLOSE, flag::HAD_PORT, None);
        assert!(r.apply(&close).is_empty(), "the same destruction must not be reported twice");
        // A new bucket on that port is a new life: its end is reported again.
        assert_eq!(kinds(&r.apply(&created)), vec![K::BucketCreated]);
        assert_eq!(kinds(&r.apply(&close)), vec![K::BucketDestroyed]);
    }

    #[test]
    fn a_failed_socket_without_a_port_shows_no_local_address() {
        let mut r = Reducer::new();
        let mut fail = ev(op::CONNECT, flag::PORT_FROM_RANGE, Some((0, 1)));
        fail.errno = 99;
        let t = r.apply(&fail);
        assert_eq!(t[0].kind, K::ConnectFailed);
        assert_eq!(t[0].local, None);
        let mut bound_fail = ev(op::CONNECT, flag::HAD_PORT, Some((0, 1)));
        bound_fail.errno = 99;
        assert_eq!(r.apply(&bound_fail)[0].local.as_deref(), Some("127.0.0.1:60000"));
    }
}
