//! The quiz [`Observer`] over a live eBPF session: the tracer filtered to the quiz's
//! network namespace, events reduced to transitions, bucket states read by a snapshot.
use anyhow::Context as _;

use crate::{
    backend::ProbeSession,
    decode,
    model::{BucketInfo, Snapshot, Transition},
    quiz::Observer,
    reducer::Reducer,
    snapshot::SnapOptions,
};

pub struct SessionObserver<'a> {
    session: &'a mut ProbeSession,
    reducer: Reducer,
    netns: u32,
}

impl<'a> SessionObserver<'a> {
    pub fn new(session: &'a mut ProbeSession) -> SessionObserver<'a> {
        SessionObserver {
            session,
            reducer: Reducer::new(),
            netns: 0,
        }
    }

    /// The session observed, for what it reads besides events (failure counters, ranges).
    pub fn session(&mut self) -> &mut ProbeSession {
        self.session
    }
}

impl SessionObserver<'_> {
    /// A snapshot of one namespace (verbose: with per-address buckets and owners).
    pub fn snapshot(&mut self, netns: u32, verbose: bool) -> anyhow::Result<Snapshot> {
        self.session
            .snapshot(&SnapOptions {
                netns,
                verbose,
                ..SnapOptions::default()
            })
            .context("taking a snapshot")
    }
}

impl Observer for SessionObserver<'_> {
    fn watch(&mut self, netns: u32) -> anyhow::Result<()> {
        self.session
            .set_netns(netns)
            .context("filtering the tracer to the quiz's netns")?;
        // Whatever was in flight belongs to the previous namespace.
        self.session.drain().context("draining events")?;
        if self.netns != 0 {
            self.reducer.forget_netns(self.netns);
        }
        self.netns = netns;
        Ok(())
    }

    fn collect(&mut self) -> anyhow::Result<Vec<Transition>> {
        let mut out = Vec::new();
        for raw in self.session.drain().context("reading events")? {
            if raw.netns == self.netns {
                out.extend(self.reducer.apply(&decode::socket_event(&raw)?));
            }
        }
        Ok(out)
    }

    fn bucket(&mut self, netns: u32, port: u16) -> anyhow::Result<Option<BucketInfo>> {
        let snap = self
            .session
            .snapshot(&SnapOptions {
                netns,
                port,
                ..SnapOptions::default()
            })
            .context("reading the bucket with a snapshot")?;
        Ok(snap
            .buckets
            .iter()
            .find(|b| b.key.port == port && b.key.netns == netns)
            .map(|b| b.info))
    }
}
