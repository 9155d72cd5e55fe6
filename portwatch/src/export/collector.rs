//! The collection side of `portwatch export`: one thread owns the eBPF session, keeps the
//! bucket states in the [`Reducer`] (fed with the events, drained in the background, and
//! reconciled with rescans), and answers scrape requests with a [`Sample`].
//!
//! A scrape is answered from the reducer's current state, the kernel's failure counters
//! and each namespace's ephemeral range as last read. Bind-table walks run on the
//! [`Walker`]'s thread: after answering a scrape, the collector asks for one if the last
//! is older than the rescan interval, and reconciles the reducer with it (and reads every
//! namespace's range again) once it is done. So scrapes in quick succession never each
//! pay for a walk, and none waits for one but the very first. HTTP requests reach this
//! thread only through [`ScrapeHandle`]: whatever the HTTP side receives, collection goes
//! on.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use super::{
    exposition::{BuildInfo, NetnsSample, PortStates, Sample},
    netns_name::NetnsNamer,
    walker::Walker,
};
use crate::{
    backend::ProbeSession,
    decode,
    model::{FailureCounts, Fastreuse, NetInfo, Op, Scope, Snapshot},
    pressure::pressure,
    reducer::Reducer,
    snapshot::{NetAsk, SnapOptions},
};

/// This process's network namespace, whose range is reported even when it holds no bucket.
const OWN_NETNS: &str = "/proc/self/ns/net";

/// How often events are drained between scrapes (keeps the ring buffer from filling up).
const DRAIN_EVERY: Duration = Duration::from_millis(250);

/// The fastreuse values every namespace reports, zero or not (series do not come and go).
const FASTREUSE_VALUES: [Fastreuse; 3] = [Fastreuse(-1), Fastreuse(0), Fastreuse(1)];

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
        rx.await
            .map_err(|_| "the collector thread has stopped".to_string())?
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

/// What is known of a namespace besides its buckets.
#[derive(Debug, Default)]
struct Namespace {
    /// Kernel address of its `struct net` (from a walk or an event): how its range is read.
    net: Option<u64>,
    /// Its NET record (ephemeral range, reserved ports) as last read.
    range: Option<NetInfo>,
}

/// The collector's state, owned by its thread.
pub struct Collector {
    session: ProbeSession,
    /// A snapshot-only session for the walker thread.
    walk_session: Option<ProbeSession>,
    config: CollectorConfig,
    namer: NetnsNamer,
    /// The bucket states: the one owner of them.
    buckets: Reducer,
    namespaces: BTreeMap<u32, Namespace>,
    /// When the last walk was asked for; `None` until one was reconciled.
    last_scan: Option<Instant>,
    scratch: Vec<u8>,
}

impl Collector {
    /// A collector reading events and counters through `session` (which has the backend
    /// attached) and walking the table through `walk_session` (snapshot only).
    pub fn new(
        session: ProbeSession,
        walk_session: ProbeSession,
        config: CollectorConfig,
        namer: NetnsNamer,
    ) -> Collector {
        Collector {
            session,
            walk_session: Some(walk_session),
            config,
            namer,
            buckets: Reducer::new(),
            namespaces: BTreeMap::new(),
            last_scan: None,
            scratch: Vec::with_capacity(usize::from(u16::MAX) + 1),
        }
    }

    /// Starts the collector thread (and the walker's); it ends (dropping the sessions,
    /// which detaches every program) once every [`ScrapeHandle`] is gone.
    pub fn spawn(mut self) -> std::io::Result<(ScrapeHandle, std::thread::JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel();
        let opts = SnapOptions {
            netns: self.config.netns.unwrap_or(0),
            ..SnapOptions::default()
        };
        let walker = match self.walk_session.take() {
            Some(s) => Walker::spawn(s, opts)?,
            None => return Err(std::io::Error::other("the collector was started twice")),
        };
        let thread = std::thread::Builder::new()
            .name("portwatch-collect".into())
            .spawn(move || self.run(rx, walker))?;
        Ok((ScrapeHandle { tx }, thread))
    }

    fn run(mut self, rx: mpsc::Receiver<Request>, mut walker: Walker) {
        // The first walk, before any scrape is answered.
        self.rescan_now(&mut walker, Instant::now());
        loop {
            match rx.recv_timeout(DRAIN_EVERY) {
                Ok(Request::Scrape(reply)) => {
                    if self.last_scan.is_none() && !walker.pending() {
                        self.rescan_now(&mut walker, Instant::now());
                    }
                    let sample = self.sample().map_err(|e| format!("{e:#}"));
                    if let Err(e) = &sample {
                        eprintln!("portwatch: scrape failed: {e}");
                    }
                    // The client may have gone away meanwhile; nothing to do then.
                    let _ = reply.send(sample);
                    let now = Instant::now();
                    let due = self.last_scan.is_none_or(|t| {
                        now.saturating_duration_since(t) >= self.config.rescan_interval
                    });
                    if due && walker.request() {
                        self.last_scan = Some(now);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Err(e) = self.drain() {
                        eprintln!("portwatch: reading events failed: {e:#}");
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if let Some(walk) = walker.try_take() {
                self.reconcile(walk);
            }
        }
    }

    /// Asks for a walk and waits for it.
    fn rescan_now(&mut self, walker: &mut Walker, now: Instant) {
        if walker.request() {
            if let Some(walk) = walker.wait() {
                self.reconcile(walk);
                self.last_scan = Some(now);
            }
        } else {
            eprintln!("portwatch: the walker thread has stopped");
        }
    }

    /// Reconciles the reducer with a finished walk and reads the ranges again.
    fn reconcile(&mut self, walk: Result<Snapshot, String>) {
        let result = walk
            .map_err(anyhow::Error::msg)
            .and_then(|snap| self.apply_walk(&snap));
        if let Err(e) = result {
            eprintln!("portwatch: {e:#}");
        }
    }

    fn wanted(&self, netns: u32) -> bool {
        netns != 0 && self.config.netns.is_none_or(|n| n == netns)
    }

    /// Applies what the programs sent since the last call to the bucket states; a
    /// namespace seen for the first time gets its range read at once.
    fn drain(&mut self) -> Result<()> {
        let events = self
            .session
            .drain()
            .context("reading the event ring buffer")?;
        let mut new = Vec::new();
        for ev in &events {
            self.namer.saw_pid(ev.netns, ev.pid);
            if !self.wanted(ev.netns) {
                continue;
            }
            let ns = self.namespaces.entry(ev.netns).or_default();
            if ev.net != 0 && ns.net != Some(ev.net) {
                ns.net = Some(ev.net);
                if ns.range.is_none() {
                    new.push(ev.netns);
                }
            }
            let typed = decode::socket_event(ev).context("decoding an event")?;
            self.buckets.apply(&typed);
        }
        for netns in new {
            self.read_range(netns)?;
        }
        Ok(())
    }

    /// Reads the range of `netns` through its `struct net`; forgets a namespace that is
    /// gone and holds no bucket.
    fn read_range(&mut self, netns: u32) -> Result<()> {
        let Some(net) = self.namespaces.get(&netns).and_then(|n| n.net) else {
            return Ok(());
        };
        let read = self
            .session
            .net_info(NetAsk::Kernel(net), Some(netns))
            .with_context(|| format!("reading the ephemeral port range of netns {netns}"))?;
        match read {
            Some(range) => {
                if let Some(ns) = self.namespaces.get_mut(&netns) {
                    ns.range = Some(range);
                }
            }
            None if self.buckets.in_netns(netns).next().is_none() => {
                self.namespaces.remove(&netns);
            }
            None => {
                if let Some(ns) = self.namespaces.get_mut(&netns) {
                    ns.net = None;
                }
            }
        }
        Ok(())
    }

    /// Makes the reducer agree with a walk (events drained first, so the walk has the
    /// last word) and reads every known namespace's range again (this process's own
    /// through its nsfs file, which it may always open).
    fn apply_walk(&mut self, snap: &Snapshot) -> Result<()> {
        self.drain()?;
        let ts_ns = crate::render::time::monotonic_now_ns().unwrap_or(0);
        let scope = Scope {
            netns: self.config.netns,
            port: None,
        };
        self.buckets.reconcile(snap, scope, ts_ns);
        for (&netns, &net) in &snap.nets {
            if self.wanted(netns) {
                self.namespaces.entry(netns).or_default().net = Some(net);
            }
        }
        let own_ns =
            std::fs::File::open(OWN_NETNS).with_context(|| format!("opening {OWN_NETNS}"))?;
        let own = self
            .session
            .net_info(NetAsk::Fd(std::os::fd::AsRawFd::as_raw_fd(&own_ns)), None)
            .context("reading this process's ephemeral port range")?;
        if let Some(range) = own {
            let netns = range.netns;
            if self.wanted(netns) {
                self.namespaces.entry(netns).or_default().range = Some(range);
            }
        }
        let known: Vec<u32> = self.namespaces.keys().copied().collect();
        for netns in known {
            self.read_range(netns)?;
        }
        Ok(())
    }

    /// Gathers the values of one scrape.
    pub fn sample(&mut self) -> Result<Sample> {
        let start = Instant::now();
        self.drain()?;
        let failures = self
            .session
            .failure_counts()
            .context("reading the kernel's failure counters")?;
        let mut netns_set: BTreeSet<u32> = self.namespaces.keys().copied().collect();
        netns_set.extend(self.buckets.namespaces());
        netns_set.extend(failures.namespaces());
        netns_set.extend(self.config.netns);
        netns_set.retain(|&n| self.wanted(n));
        let mut namespaces = Vec::with_capacity(netns_set.len());
        for netns in netns_set {
            let name = self.namer.name(netns, start);
            namespaces.push(self.netns_sample(netns, name, &failures));
        }
        let events_lost = self
            .session
            .dropped()
            .context("reading the count of lost events")?;
        Ok(Sample {
            build: self.config.build.clone(),
            events_lost,
            errors_unslotted: failures.unslotted,
            duration: start.elapsed(),
            namespaces,
        })
    }

    fn netns_sample(
        &mut self,
        netns: u32,
        name: Option<super::exposition::NetnsLabel>,
        failures: &FailureCounts,
    ) -> NetnsSample {
        let range = self.namespaces.get(&netns).and_then(|n| n.range.as_ref());
        let ports = range.map(|r| {
            let p = pressure(self.buckets.in_netns(netns), netns, r, &mut self.scratch);
            PortStates {
                free: p.free,
                shared: p.shared,
                blocked: p.blocked,
            }
        });
        let mut by_fastreuse: BTreeMap<Fastreuse, u64> =
            FASTREUSE_VALUES.iter().map(|&f| (f, 0)).collect();
        for (_, info) in self.buckets.in_netns(netns) {
            *by_fastreuse.entry(info.fastreuse).or_default() += 1;
        }
        let errors = |op: Op| {
            failures
                .of(netns, op)
                .map(|c| (c.errno.to_string(), c.count))
                .collect()
        };
        NetnsSample {
            netns,
            name,
            range_ports: range.map(NetInfo::usable),
            ports,
            buckets: by_fastreuse
                .into_iter()
                .map(|(f, n)| (f.to_string(), n))
                .collect(),
            bind_errors: errors(Op::Bind),
            connect_errors: errors(Op::Connect),
        }
    }
}
