//! Repair after lost events: when the programs could not deliver some events (ring
//! buffer full, no room to keep an operation for its exit hook, a program run the kernel
//! skipped), the buckets those events were about are read again and the reducer is
//! reconciled with what was read, so its state (and what `trace` and `top` show from it)
//! is right again. The gap itself is reported as a [`Resync`], followed by the
//! corrections (transitions of op `rescan`).
//!
//! What is read again: exactly the buckets the programs recorded for the lost events (one
//! hash lookup each), or, when some loss could not be pinned to a bucket (its port was not
//! known yet, the record of lost buckets was full, or a program run was skipped), every
//! bucket the stream covers (a walk of its namespace, per filtered port).

use crate::{
    backend::{BackendError, Losses, ProbeSession},
    decode,
    model::{Reread, Resync, Scope, Snapshot, Transition},
    reducer::Reducer,
    snapshot::{Lookup, SnapOptions},
};

/// The buckets an event stream covers: its namespace filter and port filter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamScope {
    /// `None`: every namespace.
    pub netns: Option<u32>,
    /// Empty: every port.
    pub ports: Vec<u16>,
}

impl StreamScope {
    /// The walks that cover this scope, one per filtered port (one in all without a filter).
    fn walks(&self) -> Vec<(SnapOptions, Scope)> {
        let ports: Vec<Option<u16>> = if self.ports.is_empty() {
            vec![None]
        } else {
            self.ports.iter().copied().map(Some).collect()
        };
        ports
            .into_iter()
            .map(|port| {
                let opts = SnapOptions {
                    netns: self.netns.unwrap_or(0),
                    port: port.unwrap_or(0),
                    ..SnapOptions::default()
                };
                (
                    opts,
                    Scope {
                        netns: self.netns,
                        port,
                    },
                )
            })
            .collect()
    }
}

/// What one lookup of a lost event's bucket says, as a snapshot of scope (netns, port).
/// A bucket found proves nothing about other buckets of the same port (another VRF's),
/// and a lookup that gave up proves nothing at all: both are incomplete. Only an absent
/// bucket is a complete answer (no bucket of that port in that namespace).
pub fn lookup_snapshot(found: Lookup) -> Snapshot {
    match found {
        Lookup::Bucket(r) => Snapshot {
            complete: false,
            ..decode::snapshot(&[r])
        },
        Lookup::Absent => Snapshot::default(),
        Lookup::Unknown => Snapshot {
            complete: false,
            ..Snapshot::default()
        },
    }
}

/// Re-reads what `losses` may have hidden and reconciles `reducer` with it. `ts_ns` is
/// the kernel monotonic time of the re-read. Returns the record of the gap and the
/// corrections, in that order for the stream.
pub fn resync(
    session: &mut ProbeSession,
    reducer: &mut Reducer,
    scope: &StreamScope,
    losses: &Losses,
    ts_ns: u64,
) -> Result<(Resync, Vec<Transition>), BackendError> {
    let mut corrections = Vec::new();
    let mut complete = true;
    let reread = if losses.needs_scope() {
        for (opts, walk_scope) in scope.walks() {
            let snap = session.snapshot(&opts)?;
            complete &= snap.complete;
            corrections.extend(reducer.reconcile(&snap, walk_scope, ts_ns));
        }
        Reread::Scope {
            netns: scope.netns,
            ports: scope.ports.clone(),
        }
    } else {
        let mut ports = Vec::with_capacity(losses.ports.len());
        for lost in &losses.ports {
            let snap = lookup_snapshot(session.lookup(lost.net, lost.port)?);
            // A struct net reused by a newer namespace is not the lost event's.
            let snap = if snap.buckets.iter().any(|b| b.key.netns != lost.netns) {
                Snapshot {
                    complete: false,
                    ..Snapshot::default()
                }
            } else {
                snap
            };
            complete &= snap.complete || !snap.buckets.is_empty();
            let one = Scope {
                netns: Some(lost.netns),
                port: Some(lost.port),
            };
            corrections.extend(reducer.reconcile(&snap, one, ts_ns));
            ports.push((lost.netns, lost.port));
        }
        Reread::Ports(ports)
    };
    let record = Resync {
        ts_ns,
        dropped: losses.dropped,
        skipped: losses.skipped,
        reread,
        complete,
        corrections: corrections.len(),
    };
    Ok((record, corrections))
}

#[cfg(test)]
mod tests {
    use portwatch_common::{rec, SnapRecord};

    use super::*;

    #[test]
    fn only_an_absent_bucket_is_a_complete_answer() {
        assert!(lookup_snapshot(Lookup::Absent).complete);
        assert!(lookup_snapshot(Lookup::Absent).buckets.is_empty());
        assert!(!lookup_snapshot(Lookup::Unknown).complete);
        let r = SnapRecord {
            kind: rec::BUCKET,
            netns: 7,
            port: 80,
            owners: 2,
            ..SnapRecord::default()
        };
        let s = lookup_snapshot(Lookup::Bucket(r));
        assert!(!s.complete);
        assert_eq!(s.buckets.len(), 1);
        assert_eq!(
            (
                s.buckets[0].key.netns,
                s.buckets[0].key.port,
                s.buckets[0].info.owners.n
            ),
            (7, 80, 2)
        );
    }

    #[test]
    fn a_stream_scope_is_walked_once_per_filtered_port() {
        let all = StreamScope::default();
        let w = all.walks();
        assert_eq!(w.len(), 1);
        assert_eq!((w[0].0.netns, w[0].0.port), (0, 0));
        assert_eq!(w[0].1, Scope::ALL);
        let two = StreamScope {
            netns: Some(9),
            ports: vec![80, 443],
        };
        let w = two.walks();
        assert_eq!(
            w.iter()
                .map(|(o, s)| (o.netns, o.port, *s))
                .collect::<Vec<_>>(),
            [
                (
                    9,
                    80,
                    Scope {
                        netns: Some(9),
                        port: Some(80)
                    }
                ),
                (
                    9,
                    443,
                    Scope {
                        netns: Some(9),
                        port: Some(443)
                    }
                ),
            ]
        );
    }
}
