//! The bucket-state reducer: the single owner of the known state of every bind bucket.
//! It turns [`SocketEvent`]s into [`Transition`]s by diffing each observed state against
//! the last known state of the same bucket, and reconciles that state with rescans of the
//! table ([`Reducer::reconcile`]).
//!
//! An event says: after operation `op` on a socket, the bucket of (netns, `port`) is
//! `bucket`, or there is none. Nothing here assumes what the kernel *should* do;
//! transitions come from observed states, plus a few inferences about a bucket seen for
//! the first time (documented on [`Reducer`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::model::{
    BucketInfo, BucketKey, Op, Scope, Snapshot, SockOpts, SocketEvent, Task, Transition,
    TransitionKind,
};

/// What the reducer keeps per bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TrackedBucket {
    info: BucketInfo,
    /// Kernel address of the bucket (identity only), 0 when not known.
    id: u64,
}

/// Last known state of every bucket seen, keyed by [`BucketKey`].
///
/// Rules, per event (`apply`):
/// - successful events on port 0 are ignored (counted in [`Reducer::ignored`]);
/// - a failure (`errno`) of bind/listen first yields `BindFailed`, of connect
///   `ConnectFailed`, carrying the errno and the bucket that made it fail; a failure on
///   port 0 yields only that transition;
/// - then the observed state is diffed against the known one:
///   - bucket address changed (both known): `BucketDestroyed` for the old one, and the
///     new one is treated as first seen;
///   - known and present: `OwnerAdded`/`OwnerRemoved` when the owner count moved, then
///     `FastreuseChanged`, `FastreuseportChanged` when those moved;
///   - known and absent: `BucketDestroyed`, forgotten;
///   - first seen and present, after a successful owner-adding op (bind, accept, and
///     connect/listen that allocated the port, i.e. the socket had no port before):
///     `BucketCreated` when it has exactly one owner, `OwnerAdded` when more; otherwise
///     just remembered;
///   - first seen and absent after close/release/timewait of a socket that had the
///     port: `BucketDestroyed` (that socket held it);
/// - an event whose bucket lookup gave up (`lookup_truncated`) yields only
///   `LookupTruncated` (with the errno of a failure) and changes nothing known.
///
/// Every transition carries the state known before it (`before`) and the state after.
#[derive(Debug, Default)]
pub struct Reducer {
    known: BTreeMap<BucketKey, TrackedBucket>,
    /// (netns, port) -> l3mdevs with a known bucket, to key events without a bucket.
    by_port: HashMap<(u32, u16), BTreeSet<i32>>,
    /// Buckets whose destruction was already reported: a second report of the same
    /// release (e.g. `sock:inet_sock_set_state` and then close()) stays silent.
    gone: HashSet<BucketKey>,
    ignored: u64,
}

/// Bound on remembered destroyed buckets (a soak across many ports must not grow memory).
const MAX_GONE: usize = 65536;

fn is_owner_adding(op: Op, had_port: bool) -> bool {
    match op {
        Op::Bind | Op::Accept => true,
        Op::Connect | Op::Listen => !had_port,
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

    /// The buckets of one network namespace, ordered by key.
    pub fn in_netns(&self, netns: u32) -> impl Iterator<Item = (&BucketKey, &BucketInfo)> {
        let first = BucketKey {
            netns,
            l3mdev: i32::MIN,
            port: 0,
        };
        let last = BucketKey {
            netns,
            l3mdev: i32::MAX,
            port: u16::MAX,
        };
        self.known.range(first..=last).map(|(k, v)| (k, &v.info))
    }

    /// The network namespaces with at least one known bucket, ascending.
    pub fn namespaces(&self) -> impl Iterator<Item = u32> + '_ {
        let mut last = None;
        self.known.keys().filter_map(move |k| {
            let new = last != Some(k.netns);
            last = Some(k.netns);
            new.then_some(k.netns)
        })
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

    /// Events ignored so far (success on port 0).
    pub fn ignored(&self) -> u64 {
        self.ignored
    }

    /// Records a bucket as known without emitting anything. `id` is the kernel bucket
    /// address, 0 when not known.
    pub fn seed(&mut self, key: BucketKey, info: BucketInfo, id: u64) {
        self.insert(key, TrackedBucket { info, id });
    }

    /// Forgets every bucket of a network namespace (e.g. when it went away).
    pub fn forget_netns(&mut self, netns: u32) {
        self.known.retain(|k, _| k.netns != netns);
        self.gone.retain(|k| k.netns != netns);
        self.by_port.retain(|&(ns, _), _| ns != netns);
    }

    fn insert(&mut self, key: BucketKey, v: TrackedBucket) {
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
    fn key_of(&self, ev: &SocketEvent) -> BucketKey {
        let l3mdev = match &ev.bucket {
            Some(b) => b.l3mdev,
            None => self
                .by_port
                .get(&(ev.netns, ev.port))
                .and_then(|s| s.iter().next().copied())
                .unwrap_or(0),
        };
        BucketKey {
            netns: ev.netns,
            l3mdev,
            port: ev.port,
        }
    }

    /// Applies one event; returns the transitions it implies, in order.
    pub fn apply(&mut self, ev: &SocketEvent) -> Vec<Transition> {
        let failed = ev.errno.is_some();
        if ev.port == 0 && !failed {
            self.ignored += 1;
            return Vec::new();
        }
        let after = ev.bucket.map(|b| b.info);
        let key = self.key_of(ev);
        let mut prior = self.known.get(&key).copied();
        let make = |kind: TransitionKind, before: Option<BucketInfo>, after: Option<BucketInfo>| {
            Transition {
                ts_ns: ev.ts_ns,
                kind,
                op: ev.op,
                key,
                before,
                after,
                errno: None,
                task: ev.task.clone(),
                local: ev.local,
                remote: ev.remote,
                opts: ev.opts,
                port_from_range: ev.port_from_range,
                explanation: None,
                addr: ev.addr,
            }
        };
        let mut out = Vec::new();

        if ev.lookup_truncated {
            // The bucket after the operation is not known (its lookup gave up): nothing
            // is inferred from it and the known state stays as it was.
            out.push(Transition {
                errno: ev.errno,
                ..make(TransitionKind::LookupTruncated, prior.map(|p| p.info), None)
            });
            return out;
        }

        if failed {
            let kind = match ev.op {
                Op::Bind | Op::Listen => Some(TransitionKind::BindFailed),
                Op::Connect => Some(TransitionKind::ConnectFailed),
                _ => None,
            };
            if let Some(kind) = kind {
                out.push(Transition {
                    errno: ev.errno,
                    explanation: ev.explanation.clone(),
                    ..make(kind, prior.map(|p| p.info), after)
                });
            }
            if ev.port == 0 {
                return out;
            }
        }

        if let (Some(p), Some(b)) = (prior, ev.bucket) {
            if p.id != 0 && b.id != 0 && p.id != b.id {
                out.push(make(TransitionKind::BucketDestroyed, Some(p.info), None));
                self.remove(&key);
                prior = None;
            }
        }

        match (prior, ev.bucket) {
            (Some(p), Some(b)) => {
                let (old, now) = (p.info, b.info);
                out.extend(diff(old, now).map(|kind| make(kind, Some(old), Some(now))));
                let id = if b.id != 0 { b.id } else { p.id };
                self.insert(key, TrackedBucket { info: now, id });
            }
            (Some(p), None) => {
                out.push(make(TransitionKind::BucketDestroyed, Some(p.info), None));
                self.remove(&key);
            }
            (None, Some(b)) => {
                if !failed && is_owner_adding(ev.op, ev.had_port) {
                    if b.info.owners.n == 1 {
                        out.push(make(TransitionKind::BucketCreated, None, after));
                    } else if b.info.owners.n > 1 {
                        out.push(make(TransitionKind::OwnerAdded, None, after));
                    }
                }
                self.insert(
                    key,
                    TrackedBucket {
                        info: b.info,
                        id: b.id,
                    },
                );
            }
            (None, None) => {
                let releasing = matches!(ev.op, Op::Close | Op::Release | Op::Timewait);
                if !failed && releasing && ev.had_port && !self.gone.contains(&key) {
                    out.push(make(TransitionKind::BucketDestroyed, None, None));
                    self.mark_gone(key);
                }
            }
        }
        out
    }

    /// Makes the known state agree with a rescan of the table and returns the
    /// corrections, as transitions of op [`Op::Rescan`] at `ts_ns` (kernel monotonic
    /// time of the walk), in key order: `BucketCreated` for a bucket the reducer did not
    /// know, `OwnerAdded`/`OwnerRemoved`/`FastreuseChanged`/`FastreuseportChanged` for one
    /// whose state differs, `BucketDestroyed` for a known bucket inside `scope` that the
    /// walk did not find. Buckets outside `scope` are left as they are, and so are the
    /// known buckets an incomplete walk (`!snap.complete`: a chain cut short, the ring
    /// buffer full, a lookup that gave up) did not find: not seen is not gone.
    ///
    /// This is how whatever the event stream missed (dropped events, a release no hook
    /// saw) is repaired. The walk is racy: a bucket that changed during it may show an
    /// older state, which the next event or rescan corrects in turn.
    pub fn reconcile(&mut self, snap: &Snapshot, scope: Scope, ts_ns: u64) -> Vec<Transition> {
        let make = |kind: TransitionKind,
                    key: BucketKey,
                    before: Option<BucketInfo>,
                    after: Option<BucketInfo>| {
            Transition {
                ts_ns,
                kind,
                op: Op::Rescan,
                key,
                before,
                after,
                errno: None,
                task: Task::Kernel,
                local: None,
                remote: None,
                opts: SockOpts::default(),
                port_from_range: false,
                explanation: None,
                addr: None,
            }
        };
        // The walk's rows in scope, by key; of two rows of one key (a racy walk may meet a
        // bucket twice) the later wins, as in a map.
        let mut walked: Vec<(BucketKey, BucketInfo)> = snap
            .buckets
            .iter()
            .filter(|r| scope.contains(&r.key))
            .map(|r| (r.key, r.info))
            .collect();
        walked.sort_by_key(|(k, _)| *k);
        walked.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                kept.1 = later.1;
            }
            same
        });
        // Both sides in key order: one merge finds what is new, changed and missing (a
        // walk of 50,000 unchanged buckets costs no lookup).
        let mut out = Vec::new();
        let mut changed: Vec<(BucketKey, BucketInfo)> = Vec::new();
        let mut missing: Vec<(BucketKey, BucketInfo)> = Vec::new();
        let mut known = self
            .known
            .iter()
            .filter(|(k, _)| scope.contains(k))
            .map(|(k, t)| (*k, t.info))
            .peekable();
        for &(key, now) in &walked {
            while let Some(&(k, old)) = known.peek() {
                if k >= key {
                    break;
                }
                missing.push((k, old));
                known.next();
            }
            match known.peek() {
                Some(&(k, old)) if k == key => {
                    known.next();
                    if old != now {
                        out.extend(
                            diff(old, now).map(|kind| make(kind, key, Some(old), Some(now))),
                        );
                        changed.push((key, now));
                    }
                }
                _ => {
                    out.push(make(TransitionKind::BucketCreated, key, None, Some(now)));
                    changed.push((key, now));
                }
            }
        }
        missing.extend(known);
        if !snap.complete {
            // Not seen by an incomplete walk is not gone.
            missing.clear();
        }
        // The walk does not say whether a changed bucket is still the same one: no identity.
        for (key, now) in changed {
            self.insert(key, TrackedBucket { info: now, id: 0 });
        }
        for (key, old) in missing {
            out.push(make(TransitionKind::BucketDestroyed, key, Some(old), None));
            self.remove(&key);
        }
        out.sort_by_key(|t| t.key);
        out
    }
}

/// The transitions between two states of one bucket, in the order they are reported:
/// owners first, then fastreuse, then fastreuseport. Only the count of owners is compared
/// (a lower bound that became exact is no owner moving).
fn diff(old: BucketInfo, now: BucketInfo) -> impl Iterator<Item = TransitionKind> {
    let owners = match now.owners.n.cmp(&old.owners.n) {
        std::cmp::Ordering::Greater => Some(TransitionKind::OwnerAdded),
        std::cmp::Ordering::Less => Some(TransitionKind::OwnerRemoved),
        std::cmp::Ordering::Equal => None,
    };
    let fr = (now.fastreuse != old.fastreuse).then_some(TransitionKind::FastreuseChanged);
    let frp =
        (now.fastreuseport != old.fastreuseport).then_some(TransitionKind::FastreuseportChanged);
    owners.into_iter().chain(fr).chain(frp)
}

#[cfg(test)]
mod tests {
    use portwatch_common::{flag, op, BucketState, Event};
    use TransitionKind as K;

    use super::*;
    use crate::{
        decode::{socket_event, AF_INET},
        model::{BucketRow, Errno, Fastreuse, OwnerCount},
    };

    /// Raw events go through the decoder first, as in production; one it rejects (an
    /// unknown op) never reaches the reducer.
    trait ApplyRaw {
        fn apply_raw(&mut self, e: &Event) -> Vec<Transition>;
    }

    impl ApplyRaw for Reducer {
        fn apply_raw(&mut self, e: &Event) -> Vec<Transition> {
            match socket_event(e) {
                Ok(d) => self.apply(&d),
                Err(_) => Vec::new(),
            }
        }
    }

    fn addr(a: &Option<std::net::SocketAddr>) -> Option<String> {
        a.map(|a| a.to_string())
    }

    fn fr(from: i8, to: i8) -> Option<(Fastreuse, Fastreuse)> {
        Some((Fastreuse(from), Fastreuse(to)))
    }

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
            fastreuse: Fastreuse(fr),
            fastreuseport: Fastreuse(-1),
            owners: OwnerCount::exact(owners),
        }
    }

    #[test]
    fn article_scenario() {
        let mut r = Reducer::new();
        // s1: connect() from an ephemeral port creates 60000 at -1 with one owner.
        let mut e = ev(op::CONNECT, 0, Some((-1, 1)));
        e.raddr = v4([127, 9, 9, 9]);
        e.rport = 1234;
        let t = r.apply_raw(&e);
        assert_eq!(kinds(&t), [K::BucketCreated]);
        assert_eq!(t[0].after, Some(info(-1, 1)));
        assert_eq!(addr(&t[0].local).as_deref(), Some("127.0.0.1:60000"));
        assert_eq!(addr(&t[0].remote).as_deref(), Some("127.9.9.9:1234"));
        assert_eq!(t[0].op, Op::Connect);
        assert_eq!(t[0].key, key());
        assert_eq!(
            t[0].task,
            Task::Process {
                pid: 4242,
                comm: "python3".into()
            }
        );

        // s2: plain bind of another IP on that port: owner added, then -1 -> 0.
        let mut e = ev(op::BIND, 0, Some((0, 2)));
        e.laddr = v4([127, 2, 2, 2]);
        let t = r.apply_raw(&e);
        assert_eq!(kinds(&t), [K::OwnerAdded, K::FastreuseChanged]);
        assert_eq!(t[0].after, Some(info(0, 2)));
        assert_eq!(t[1].change(), fr(-1, 0));
        assert_eq!(addr(&t[1].local).as_deref(), Some("127.2.2.2:60000"));
        assert_eq!(t[1].remote, None);

        // close x2: owner removed, then bucket destroyed.
        let t = r.apply_raw(&ev(op::CLOSE, flag::HAD_PORT, Some((0, 1))));
        assert_eq!(kinds(&t), [K::OwnerRemoved]);
        assert_eq!(t[0].after, Some(info(0, 1)));
        let t = r.apply_raw(&ev(op::CLOSE, flag::HAD_PORT, None));
        assert_eq!(kinds(&t), [K::BucketDestroyed]);
        assert_eq!(t[0].after, None);
        assert_eq!(t[0].key, key());
        assert!(r.is_empty());
    }

    #[test]
    fn a_truncated_lookup_changes_nothing_known() {
        let mut r = Reducer::new();
        assert_eq!(
            kinds(&r.apply_raw(&ev(op::BIND, 0, Some((0, 1))))),
            [K::BucketCreated]
        );
        // The close's lookup gave up: not "destroyed", and the state stays known.
        let t = r.apply_raw(&ev(
            op::CLOSE,
            flag::HAD_PORT | flag::LOOKUP_TRUNCATED,
            None,
        ));
        assert_eq!(kinds(&t), [K::LookupTruncated]);
        assert_eq!(
            (t[0].before, t[0].after, t[0].errno),
            (Some(info(0, 1)), None, None)
        );
        assert_eq!(r.get(&key()), Some(&info(0, 1)));
        // A failure whose lookup gave up keeps its errno.
        let mut e = ev(op::BIND, flag::LOOKUP_TRUNCATED, None);
        e.errno = 98;
        let t = r.apply_raw(&e);
        assert_eq!(kinds(&t), [K::LookupTruncated]);
        assert_eq!(t[0].errno, Errno::new(98));
        assert_eq!(r.get(&key()), Some(&info(0, 1)));
    }

    #[test]
    fn quiz3_connect_failure() {
        let mut r = Reducer::new();
        // s1: bind 127.1.1.1:0 takes 60000 at fastreuse 0.
        let mut e = ev(op::BIND, 0, Some((0, 1)));
        e.laddr = v4([127, 1, 1, 1]);
        assert_eq!(kinds(&r.apply_raw(&e)), [K::BucketCreated]);
        // s1 connect (had its port): no transition.
        assert!(r
            .apply_raw(&ev(op::CONNECT, flag::HAD_PORT, Some((0, 1))))
            .is_empty());
        // s2 connect fails: the only port's bucket is 0, not -1.
        let mut e = ev(op::CONNECT, flag::PORT_FROM_RANGE, Some((0, 1)));
        e.errno = 99;
        let t = r.apply_raw(&e);
        assert_eq!(kinds(&t), [K::ConnectFailed]);
        assert_eq!(t[0].errno, Errno::new(99));
        assert_eq!(t[0].after, Some(info(0, 1)));
        assert!(t[0].port_from_range);
        assert_eq!(r.get(&key()), Some(&info(0, 1)));
    }

    #[test]
    fn bind_failure_has_no_owner_inference() {
        let mut r = Reducer::new();
        let mut e = ev(op::BIND, 0, Some((0, 1)));
        e.errno = 98;
        let t = r.apply_raw(&e);
        assert_eq!(kinds(&t), [K::BindFailed]);
        assert_eq!(t[0].errno, Errno::new(98));
        // But the state is remembered.
        assert_eq!(r.get(&key()), Some(&info(0, 1)));
        // Listen failure is a bind failure too.
        let mut e = ev(op::LISTEN, flag::HAD_PORT, Some((0, 1)));
        e.errno = 98;
        assert_eq!(kinds(&r.apply_raw(&e)), [K::BindFailed]);
    }

    #[test]
    fn failure_then_diff() {
        let mut r = Reducer::new();
        r.seed(key(), info(0, 1), TB);
        let mut e = ev(op::BIND, 0, Some((-1, 2)));
        e.errno = 98;
        let t = r.apply_raw(&e);
        assert_eq!(
            kinds(&t),
            [K::BindFailed, K::OwnerAdded, K::FastreuseChanged]
        );
        assert_eq!(t[1].errno, None);
        // Failure with the bucket gone: failure, then destroyed.
        let mut e = ev(op::CONNECT, 0, None);
        e.errno = 99;
        let t = r.apply_raw(&e);
        assert_eq!(kinds(&t), [K::ConnectFailed, K::BucketDestroyed]);
        assert_eq!(t[0].after, None);
    }

    #[test]
    fn failure_on_port_zero_is_still_reported() {
        let mut r = Reducer::new();
        let mut e = ev(op::CONNECT, flag::HAD_PORT, None);
        e.port = 0;
        e.errno = 99;
        let t = r.apply_raw(&e);
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
        assert!(r.apply_raw(&e).is_empty());
        assert_eq!(r.ignored(), 1);
        // An unknown op is refused by the decoder (decode.rs tests) and never reaches the
        // reducer.
        let mut e = ev(op::BIND, 0, Some((0, 1)));
        e.op = 99;
        assert!(r.apply_raw(&e).is_empty());
        assert!(r.is_empty());
        assert_eq!(r.ignored(), 1);
    }

    #[test]
    fn failure_of_other_ops_has_no_failure_kind() {
        let mut r = Reducer::new();
        r.seed(key(), info(0, 1), TB);
        let mut e = ev(op::ACCEPT, flag::HAD_PORT, Some((0, 1)));
        e.errno = 11;
        assert!(r.apply_raw(&e).is_empty());
    }

    #[test]
    fn owner_adding_ops_on_unknown_buckets() {
        // connect/listen with HAD_PORT on an unknown bucket: remembered, silent.
        for o in [op::CONNECT, op::LISTEN] {
            let mut r = Reducer::new();
            assert!(r.apply_raw(&ev(o, flag::HAD_PORT, Some((0, 1)))).is_empty());
            assert_eq!(r.len(), 1);
        }
        // connect/listen autobind, bind, accept: created (1 owner) or owner added (>1).
        for o in [op::CONNECT, op::LISTEN, op::BIND, op::ACCEPT] {
            let mut r = Reducer::new();
            assert_eq!(
                kinds(&r.apply_raw(&ev(o, 0, Some((0, 1))))),
                [K::BucketCreated],
                "op {o}"
            );
            let mut r = Reducer::new();
            assert_eq!(
                kinds(&r.apply_raw(&ev(o, 0, Some((0, 3))))),
                [K::OwnerAdded],
                "op {o}"
            );
        }
        // accept adds an owner even though the listener had the port.
        let mut r = Reducer::new();
        assert_eq!(
            kinds(&r.apply_raw(&ev(op::ACCEPT, flag::HAD_PORT, Some((0, 2))))),
            [K::OwnerAdded]
        );
        // Zero owners (odd but possible mid-walk): remembered, silent.
        let mut r = Reducer::new();
        assert!(r.apply_raw(&ev(op::BIND, 0, Some((0, 0)))).is_empty());
        // Close on an unknown present bucket: remembered, silent.
        let mut r = Reducer::new();
        assert!(r
            .apply_raw(&ev(op::CLOSE, flag::HAD_PORT, Some((0, 1))))
            .is_empty());
        assert_eq!(r.get(&key()), Some(&info(0, 1)));
    }

    #[test]
    fn unknown_and_absent() {
        for o in [op::CLOSE, op::RELEASE, op::TIMEWAIT] {
            let mut r = Reducer::new();
            let t = r.apply_raw(&ev(o, flag::HAD_PORT, None));
            assert_eq!(kinds(&t), [K::BucketDestroyed], "op {o}");
            assert_eq!(t[0].after, None);
            // Without HAD_PORT we know nothing.
            assert!(r.apply_raw(&ev(o, 0, None)).is_empty());
        }
        let mut r = Reducer::new();
        assert!(r.apply_raw(&ev(op::BIND, flag::HAD_PORT, None)).is_empty());
        assert!(r.is_empty());
    }

    #[test]
    fn tb_change_means_destroyed_then_created() {
        let mut r = Reducer::new();
        r.seed(key(), info(-1, 1), TB);
        let mut e = ev(op::BIND, 0, Some((0, 1)));
        e.bucket.tb = TB + 64;
        let t = r.apply_raw(&e);
        assert_eq!(kinds(&t), [K::BucketDestroyed, K::BucketCreated]);
        assert_eq!(t[0].after, None);
        assert_eq!(t[1].after, Some(info(0, 1)));
        // Same owners/state under a new address after a non-owner op: destroyed, remembered.
        let mut e = ev(op::CLOSE, flag::HAD_PORT, Some((0, 1)));
        e.bucket.tb = TB + 128;
        assert_eq!(kinds(&r.apply_raw(&e)), [K::BucketDestroyed]);
        assert_eq!(r.get(&key()), Some(&info(0, 1)));
        // Unknown (0) address on one side: no identity check.
        r.seed(key(), info(0, 1), 0);
        let e = ev(op::CLOSE, flag::HAD_PORT, Some((0, 1)));
        assert!(r.apply_raw(&e).is_empty());
    }

    #[test]
    fn release_returns_to_minus_one_on_new_kernels() {
        // 6.18: removing the last bind()-ed owner when the rest are connect()-bound
        // returns 0 -> -1 without destroying the bucket.
        let mut r = Reducer::new();
        r.seed(key(), info(0, 2), TB);
        let t = r.apply_raw(&ev(op::CLOSE, flag::HAD_PORT, Some((-1, 1))));
        assert_eq!(kinds(&t), [K::OwnerRemoved, K::FastreuseChanged]);
        assert_eq!(t[1].change(), fr(0, -1));
    }

    #[test]
    fn fastreuseport_change_and_truncation() {
        let mut r = Reducer::new();
        r.seed(key(), info(0, 1), TB);
        let mut e = ev(op::BIND, flag::REUSEPORT | flag::REUSEADDR, Some((0, 2)));
        e.bucket.fastreuseport = 1;
        e.flags |= flag::OWNERS_TRUNCATED | flag::BIND_ADDRESS_NO_PORT;
        let t = r.apply_raw(&e);
        assert_eq!(kinds(&t), [K::OwnerAdded, K::FastreuseportChanged]);
        assert_eq!(t[1].change(), fr(-1, 1));
        assert!(t[0].after.is_some_and(|a| a.owners.truncated));
        assert_eq!(
            t[0].opts,
            SockOpts {
                reuseaddr: true,
                reuseport: true,
                bind_address_no_port: true,
                connect_bound: None,
                local_port_range: None,
            }
        );
        // No change at all: nothing.
        assert!(r.apply_raw(&e).is_empty());
    }

    #[test]
    fn socket_unknown_has_no_addresses() {
        let mut r = Reducer::new();
        let mut e = ev(op::CONNECT, 0, Some((-1, 1)));
        e.flags &= !flag::SOCK_KNOWN;
        e.rport = 1234;
        let t = r.apply_raw(&e);
        assert_eq!(t[0].local, None);
        assert_eq!(t[0].remote, None);
    }

    #[test]
    fn l3mdev_keys() {
        let mut r = Reducer::new();
        let mut e = ev(op::BIND, 0, Some((0, 1)));
        e.bucket.l3mdev = 7;
        let t = r.apply_raw(&e);
        assert_eq!(
            t[0].key,
            BucketKey {
                netns: NS,
                l3mdev: 7,
                port: 60000
            }
        );
        // The bucket-less close is attributed to the known l3mdev 7 bucket.
        let t = r.apply_raw(&ev(op::CLOSE, flag::HAD_PORT, None));
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
        // Learning a bucket from a snapshot.
        let snap = Snapshot {
            buckets: vec![BucketRow {
                key: key(),
                info: info(-1, 1),
                addresses: vec![],
                fast: None,
            }],
            complete: true,
            owners_truncated: false,
            slots: 65536,
            ..Default::default()
        };
        let mut r2 = Reducer::new();
        assert_eq!(
            kinds(&r2.reconcile(&snap, Scope::ALL, 0)),
            [K::BucketCreated]
        );
        assert_eq!(r2.get(&key()), Some(&info(-1, 1)));
        assert_eq!(
            kinds(&r2.apply_raw(&ev(op::BIND, 0, Some((0, 2))))),
            [K::OwnerAdded, K::FastreuseChanged]
        );
        // The forgotten bucket is now unknown: a close with HAD_PORT infers destruction.
        assert_eq!(
            kinds(&r.apply_raw(&ev(op::CLOSE, flag::HAD_PORT, None))),
            [K::BucketDestroyed]
        );
    }

    fn row(key: BucketKey, info: BucketInfo) -> BucketRow {
        BucketRow {
            key,
            info,
            addresses: vec![],
            fast: None,
        }
    }

    fn snap_of(rows: Vec<BucketRow>) -> Snapshot {
        Snapshot {
            buckets: rows,
            complete: true,
            owners_truncated: false,
            slots: 65536,
            ..Default::default()
        }
    }

    #[test]
    fn reconcile_reports_what_the_events_missed_within_its_scope() {
        let k = |netns, port| BucketKey {
            netns,
            l3mdev: 0,
            port,
        };
        let mut r = Reducer::new();
        r.seed(k(1, 80), info(0, 3), TB);
        r.seed(k(1, 60000), info(-1, 1), TB + 64);
        r.seed(k(2, 22), info(0, 1), TB + 128);
        // netns 1 rescanned: 80 lost an owner (TIME-WAIT expiry), 60000 is gone, 9000
        // appeared; netns 2 was not walked.
        let snap = snap_of(vec![row(k(1, 80), info(0, 2)), row(k(1, 9000), info(0, 1))]);
        let scope = Scope {
            netns: Some(1),
            port: None,
        };
        let t = r.reconcile(&snap, scope, 5_000);
        assert_eq!(
            t.iter().map(|t| (t.key, t.kind)).collect::<Vec<_>>(),
            [
                (k(1, 80), K::OwnerRemoved),
                (k(1, 9000), K::BucketCreated),
                (k(1, 60000), K::BucketDestroyed),
            ]
        );
        assert!(t
            .iter()
            .all(|t| t.op == Op::Rescan && t.task == Task::Kernel && t.ts_ns == 5_000));
        assert_eq!(
            (t[0].before, t[0].after),
            (Some(info(0, 3)), Some(info(0, 2)))
        );
        assert_eq!((t[1].before, t[1].after), (None, Some(info(0, 1))));
        assert_eq!((t[2].before, t[2].after), (Some(info(-1, 1)), None));
        let now: Vec<(BucketKey, BucketInfo)> = r.known().map(|(k, i)| (*k, *i)).collect();
        assert_eq!(
            now,
            [
                (k(1, 80), info(0, 2)),
                (k(1, 9000), info(0, 1)),
                (k(2, 22), info(0, 1))
            ]
        );
        // The same walk again: nothing to correct.
        assert!(r.reconcile(&snap, scope, 6_000).is_empty());
        // The destruction was reported: the late close of its owner stays silent.
        let mut close = ev(op::CLOSE, flag::HAD_PORT, None);
        close.netns = 1;
        assert!(r.apply_raw(&close).is_empty());
    }

    #[test]
    fn reconcile_of_one_port_leaves_the_other_ports_alone() {
        let mut r = Reducer::new();
        let other = BucketKey {
            port: 60001,
            ..key()
        };
        r.seed(key(), info(-1, 1), TB);
        r.seed(other, info(0, 1), TB + 64);
        let scope = Scope {
            netns: Some(NS),
            port: Some(60000),
        };
        let t = r.reconcile(&snap_of(vec![]), scope, 1);
        assert_eq!(kinds(&t), [K::BucketDestroyed]);
        assert_eq!(t[0].key, key());
        assert_eq!(r.get(&other), Some(&info(0, 1)));
        assert_eq!(r.get(&key()), None);
    }

    #[test]
    fn an_incomplete_walk_never_drops_a_known_bucket() {
        let k = |port| BucketKey {
            netns: NS,
            l3mdev: 0,
            port,
        };
        let mut r = Reducer::new();
        r.seed(k(80), info(0, 3), TB);
        r.seed(k(60000), info(-1, 1), TB + 64);
        // The walk stopped before port 60000's chain (ring full, chain cut, a resumed
        // chain that changed): it saw 80 with one owner fewer and a new bucket 9000.
        let mut snap = snap_of(vec![row(k(80), info(0, 2)), row(k(9000), info(0, 1))]);
        snap.complete = false;
        let t = r.reconcile(&snap, Scope::ALL, 7);
        assert_eq!(
            t.iter().map(|t| (t.key, t.kind)).collect::<Vec<_>>(),
            [(k(80), K::OwnerRemoved), (k(9000), K::BucketCreated)]
        );
        assert_eq!(r.get(&k(60000)), Some(&info(-1, 1)), "not seen is not gone");
        // The same scope walked completely: now its absence means it is gone.
        snap.complete = true;
        let t = r.reconcile(&snap, Scope::ALL, 8);
        assert_eq!(
            t.iter().map(|t| (t.key, t.kind)).collect::<Vec<_>>(),
            [(k(60000), K::BucketDestroyed)]
        );
        assert_eq!(r.get(&k(60000)), None);
    }

    #[test]
    fn an_incomplete_lookup_of_one_port_changes_nothing_when_it_saw_nothing() {
        let mut r = Reducer::new();
        r.seed(key(), info(-1, 1), TB);
        let scope = Scope {
            netns: Some(NS),
            port: Some(60000),
        };
        let mut gave_up = snap_of(vec![]);
        gave_up.complete = false;
        assert!(r.reconcile(&gave_up, scope, 1).is_empty());
        assert_eq!(r.get(&key()), Some(&info(-1, 1)));
    }

    #[test]
    fn reconcile_diffs_every_field_and_forgets_the_bucket_identity() {
        let mut r = Reducer::new();
        r.seed(key(), info(-1, 2), TB);
        let mut now = info(0, 1);
        now.fastreuseport = Fastreuse(0);
        let t = r.reconcile(&snap_of(vec![row(key(), now)]), Scope::ALL, 1);
        assert_eq!(
            kinds(&t),
            [
                K::OwnerRemoved,
                K::FastreuseChanged,
                K::FastreuseportChanged
            ]
        );
        assert_eq!(t[1].change(), fr(-1, 0));
        assert_eq!(t[2].change(), fr(-1, 0));
        // The walk does not know whether the bucket is the one the events saw: the next
        // event's bucket address is taken as is, not as a new bucket.
        let mut e = ev(op::BIND, 0, Some((0, 2)));
        e.bucket.fastreuseport = 0;
        e.bucket.tb = TB + 4096;
        assert_eq!(kinds(&r.apply_raw(&e)), [K::OwnerAdded]);
        // A lower bound becoming exact (or the reverse) is no owner moving.
        let mut bound = now;
        bound.owners = OwnerCount::at_least(2);
        assert!(r
            .reconcile(&snap_of(vec![row(key(), bound)]), Scope::ALL, 2)
            .is_empty());
        assert_eq!(r.get(&key()), Some(&bound));
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
                    let ts = r.apply_raw(e);
                    let valid = (1..=7).contains(&e.op);
                    if !valid || (e.port == 0 && e.errno == 0) {
                        prop_assert!(ts.is_empty());
                        continue;
                    }
                    let present = e.flags & flag::BUCKET_PRESENT != 0;
                    let unknown = !present && e.flags & flag::LOOKUP_TRUNCATED != 0;
                    if unknown {
                        // A lookup that gave up: one LookupTruncated, nothing learnt.
                        prop_assert_eq!(ts.len(), 1);
                        prop_assert_eq!(ts[0].kind, K::LookupTruncated);
                        prop_assert_eq!(ts[0].errno, Errno::new(e.errno));
                        prop_assert!(ts[0].after.is_none());
                        let got: BTreeMap<BucketKey, BucketInfo> =
                            r.known().map(|(k, v)| (*k, *v)).collect();
                        prop_assert_eq!(&got, &model);
                        continue;
                    }
                    let failure_kind = matches!(e.op, op::BIND | op::LISTEN | op::CONNECT);
                    if e.errno != 0 && failure_kind {
                        let k = ts.first().map(|t| t.kind);
                        prop_assert!(matches!(k, Some(K::BindFailed | K::ConnectFailed)));
                        prop_assert_eq!(ts[0].errno, Errno::new(e.errno));
                    }
                    for t in &ts {
                        prop_assert_eq!(t.key.port, e.port);
                        prop_assert_eq!(t.key.netns, e.netns);
                        match t.kind {
                            K::BindFailed | K::ConnectFailed => prop_assert!(e.errno != 0),
                            K::BucketCreated => {
                                prop_assert!(e.errno == 0);
                                prop_assert_eq!(t.after.map(|a| a.owners.n), Some(1));
                            }
                            K::BucketDestroyed => prop_assert!(t.after.is_none()),
                            K::FastreuseChanged | K::FastreuseportChanged => {
                                prop_assert!(t.change().is_some_and(|(from, to)| from != to));
                            }
                            K::OwnerAdded | K::OwnerRemoved => prop_assert!(t.after.is_some()),
                            K::LookupTruncated => prop_assert!(false, "only for unknown buckets"),
                        }
                        if !matches!(t.kind, K::BindFailed | K::ConnectFailed) {
                            prop_assert!(t.errno.is_none());
                        }
                    }
                    if e.port == 0 {
                        continue;
                    }
                    // Trivial model: last observed state per key; absent removes the
                    // key the event is attributed to (lowest known l3mdev of the port).
                    if present {
                        let k = BucketKey { netns: e.netns, l3mdev: e.bucket.l3mdev, port: e.port };
                        let seen = socket_event(e).ok().and_then(|d| d.bucket);
                        prop_assert!(seen.is_some());
                        if let Some(b) = seen {
                            model.insert(k, b.info);
                        }
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

    mod reconcile_prop {
        use std::collections::BTreeMap;

        use proptest::prelude::*;

        use super::*;

        fn arb_info() -> impl Strategy<Value = BucketInfo> {
            (-1i8..=1, -1i8..=1, 0u32..4, any::<bool>()).prop_map(|(fr, frp, n, truncated)| {
                BucketInfo {
                    fastreuse: Fastreuse(fr),
                    fastreuseport: Fastreuse(frp),
                    owners: OwnerCount { n, truncated },
                }
            })
        }

        fn arb_key() -> impl Strategy<Value = BucketKey> {
            (1u32..4, 0i32..2, 0u16..6).prop_map(|(netns, l3mdev, port)| BucketKey {
                netns,
                l3mdev,
                port,
            })
        }

        fn arb_scope() -> impl Strategy<Value = Scope> {
            (proptest::option::of(1u32..4), proptest::option::of(0u16..6))
                .prop_map(|(netns, port)| Scope { netns, port })
        }

        proptest! {
            /// After a reconcile the reducer holds exactly the walk inside its scope and
            /// what it held outside (and, after an incomplete walk, also what it held
            /// inside that the walk did not see); the corrections are exactly the
            /// differences, each with the state before and after.
            #[test]
            fn reconcile_is_the_diff_within_scope(
                known in proptest::collection::btree_map(arb_key(), arb_info(), 0..20),
                walked in proptest::collection::btree_map(arb_key(), arb_info(), 0..20),
                scope in arb_scope(),
                complete in any::<bool>(),
            ) {
                let mut r = Reducer::new();
                for (k, i) in &known {
                    r.seed(*k, *i, 64);
                }
                let mut snap = snap_of(walked.iter().map(|(k, i)| row(*k, *i)).collect());
                snap.complete = complete;
                let corrections = r.reconcile(&snap, scope, 1);
                let got: BTreeMap<BucketKey, BucketInfo> = r.known().map(|(k, i)| (*k, *i)).collect();
                let kept = |k: &BucketKey| !scope.contains(k) || (!complete && !walked.contains_key(k));
                let mut want: BTreeMap<BucketKey, BucketInfo> =
                    known.iter().filter(|(k, _)| kept(k)).map(|(k, i)| (*k, *i)).collect();
                want.extend(walked.iter().filter(|(k, _)| scope.contains(k)).map(|(k, i)| (*k, *i)));
                prop_assert_eq!(&got, &want);
                prop_assert!(corrections.windows(2).all(|w| w[0].key <= w[1].key));
                for t in &corrections {
                    prop_assert!(scope.contains(&t.key));
                    prop_assert_eq!(t.op, Op::Rescan);
                    prop_assert_eq!(t.before, known.get(&t.key).copied());
                    prop_assert_eq!(t.after, want.get(&t.key).copied());
                }
                for k in known.keys().chain(walked.keys()).filter(|k| scope.contains(k)) {
                    let before = known.get(k);
                    let after = want.get(k);
                    let moved = match (before, after) {
                        (Some(b), Some(a)) => {
                            b.owners.n != a.owners.n
                                || b.fastreuse != a.fastreuse
                                || b.fastreuseport != a.fastreuseport
                        }
                        (None, None) => false,
                        _ => true,
                    };
                    prop_assert_eq!(corrections.iter().any(|t| t.key == *k), moved, "key {:?}", k);
                }
            }
        }
    }

    #[test]
    fn a_release_reported_twice_destroys_once() {
        let mut r = Reducer::new();
        let created = ev(op::CONNECT, 0, Some((-1, 1)));
        assert_eq!(kinds(&r.apply_raw(&created)), vec![K::BucketCreated]);
        let release = ev(op::RELEASE, flag::HAD_PORT, None);
        assert_eq!(kinds(&r.apply_raw(&release)), vec![K::BucketDestroyed]);
        let close = ev(op::CLOSE, flag::HAD_PORT, None);
        assert!(
            r.apply_raw(&close).is_empty(),
            "the same destruction must not be reported twice"
        );
        // A new bucket on that port is a new life: its end is reported again.
        assert_eq!(kinds(&r.apply_raw(&created)), vec![K::BucketCreated]);
        assert_eq!(kinds(&r.apply_raw(&close)), vec![K::BucketDestroyed]);
    }

    #[test]
    fn a_failed_socket_without_a_port_shows_no_local_address() {
        let mut r = Reducer::new();
        let mut fail = ev(op::CONNECT, flag::PORT_FROM_RANGE, Some((0, 1)));
        fail.errno = 99;
        let t = r.apply_raw(&fail);
        assert_eq!(t[0].kind, K::ConnectFailed);
        assert_eq!(t[0].local, None);
        let mut bound_fail = ev(op::CONNECT, flag::HAD_PORT, Some((0, 1)));
        bound_fail.errno = 99;
        assert_eq!(
            addr(&r.apply_raw(&bound_fail)[0].local).as_deref(),
            Some("127.0.0.1:60000")
        );
    }
}
