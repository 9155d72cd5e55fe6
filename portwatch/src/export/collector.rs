//! The collection side of `portwatch export`: one thread owns the eBPF session, drains its
//! events in the background, and answers scrape requests with a [`Sample`].
//!
//! A scrape reads the kernel's counters and takes a bind-table rescan only when the last
//! one is older than the rescan interval, so scrapes in quick succession never each pay
//! for a full-table walk. HTTP requests reach this thread only through [`ScrapeHandle`]:
//! whatever the HTTP side receives, collection goes on.

use std::{
    collections::BTreeSet,
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use super::{
    exposition::{BuildInfo, NetnsSample, Sample},
    netns_name::NetnsNamer,
};
use crate::{backend::ProbeSession, snapshot::SnapOptions};

/// How often events are drained between scrapes (keeps the ring buffer from filling up).
const DRAIN_EVERY: Duration = Duration::from_millis(250);

enum Request {
    Scrape(tokio::sync::oneshot::Sender<Result<Sample, String>>),
}

/// Asks the collector thread for samples; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct ScrapeHandle {
    tx: mpsc::Sender<Request>,
}

impl ScrapeHandle {
    /// One sample, or the reason there is none.
    pub async fn scrape(&self) -> Result<Sample, String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Request::Scrape(tx))
            .map_err(|_| "the collector thread has stopped".to_string())?;
        rx.await.map_err(|_| "the collector thread has stopped".to_string())?
    }
}

/// What the collector is set up with.
pub struct CollectorConfig {
    /// The netns to report (`None`: every netns).
    pub netns: Option<u32>,
    /// Shortest time between two bind-table rescans.
    pub rescan_interval: Duration,
    pub build: BuildInfo,
}

/// The collector's state, owned by its thread.
pub struct Collector {
    session: ProbeSession,
    config: CollectorConfig,
    namer: NetnsNamer,
    /// When the last rescan ran and the namespaces it found.
    last_scan: Option<Instant>,
    namespaces: BTreeSet<u32>,
}

impl Collector {
    pub fn new(session: ProbeSession, config: CollectorConfig, namer: NetnsNamer) -> Collector {
        Collector { session, config, namer, last_scan: None, namespaces: BTreeSet::new() }
    }

    /// Starts the collector thread; it ends (dropping the session, which detaches every
    /// program) once every [`ScrapeHandle`] is gone.
    pub fn spawn(self) -> std::io::Result<(ScrapeHandle, std::thread::JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("portwatch-collect".into())
            .spawn(move || self.run(rx))?;
        Ok((ScrapeHandle { tx }, thread))
    }

    fn run(mut self, rx: mpsc::Receiver<Request>) {
        loop {
            match rx.recv_timeout(DRAIN_EVERY) {
                Ok(Request::Scrape(reply)) => {
                    let sample = self.sample().map_err(|e| format!("{e:#}"));
                    if let Err(e) = &sample {
                        eprintln!("portwatch: scrape failed: {e}");
                    }
                    // The client may have gone away meanwhile; nothing to do then.
                    let _ = reply.send(sample);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Err(e) = self.drain() {
                        eprintln!("portwatch: reading events failed: {e:#}");
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
    }

    /// Reads what the programs sent since the last call.
    fn drain(&mut self) -> Result<()> {
        for ev in self.session.drain().context("reading the event ring buffer")? {
            self.namer.saw_pid(ev.netns, ev.pid);
            if self.config.netns.is_none_or(|n| n == ev.netns) && ev.netns != 0 {
                self.namespaces.insert(ev.netns);
            }
        }
        Ok(())
    }

    fn rescan_if_due(&mut self, now: Instant) -> Result<()> {
        if self.last_scan.is_some_and(|t| now.saturating_duration_since(t) < self.config.rescan_interval) {
            return Ok(());
        }
        let opts = SnapOptions { netns: self.config.netns.unwrap_or(0), ..SnapOptions::default() };
        let snap = self.session.snapshot(&opts).context("rescanning the bind table")?;
        self.namespaces = snap.buckets.iter().map(|b| b.key.netns).collect();
        if let Some(n) = self.config.netns {
            self.namespaces.insert(n);
        }
        self.last_scan = Some(now);
        Ok(())
    }

    /// Gathers the values of one scrape.
    pub fn sample(&mut self) -> Result<Sample> {
        let start = Instant::now();
        self.drain()?;
        self.rescan_if_due(start)?;
        let namespaces = self
            .namespaces
            .iter()
            .map(|&netns| NetnsSample { netns, name: self.namer.name(netns, start), ..NetnsSample::default() })
            .collect();
        let events_lost = self.session.dropped().context("reading the count of lost events")?;
        Ok(Sample { build: self.config.build.clone(), events_lost, duration: start.elapsed(), namespaces })
    }
}
