//! A probe session: the eBPF object loaded with the running kernel's layout, the backend
//! attached from the registry, and what the programs send.
use std::{os::fd::AsRawFd, path::Path};

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::TracePoint,
    Ebpf, EbpfLoader,
};
use portwatch_common::{
    lost, ArgPos, Config, ErrorKey, Event, Layout, LostPort, TpOffsets, WalkBudget,
    EVENT_RING_BYTES,
};

use super::{
    kernel_functions, object,
    refusal::Refusal,
    tracefs,
    walk::{self, Load, WalkDriverChoice, WalkPlan, WalkReport},
    Attempt, Backend, BackendError, FixUp, ProbeChoice,
};
use crate::{
    bpf::{self, error_chain},
    decode::decode_event,
    kernel::{compat::Id, Resolved},
    model::{FailureCounts, NetInfo, Snapshot},
    snapshot::{Lookup, NetAsk, SnapOptions, SnapshotError, Snapshotter},
};

/// A snapshot ring for sessions that only look up single buckets.
pub const LOOKUP_RING_BYTES: u32 = 1 << 16;
/// A snapshot ring for sessions that explain failures as they happen: one failed
/// connect() reads its namespace's buckets with their owners (88 bytes a record, about
/// 47,000 records; a walk that does not fit is reported as cut short).
pub const EXPLAIN_RING_BYTES: u32 = 1 << 22;

/// The snapshot ring of sessions that walk whole tables (`dump`, `top`): about 9,400
/// records (112 bytes each with their header). Larger walks go on in further runs
/// (`WALK_MORE`), each run's records decoded before the next: a run costs one syscall, a
/// larger ring costs every start (the kernel allocates and zeroes the whole ring when the
/// map is created, and its pages count in the process's memory once read).
pub const WALK_RING_BYTES: u32 = 1 << 20;

/// How often a consumer drains the event ring: the programs do not wake it per event (see
/// `Config::wakeup_bytes`), so it must drain on its own at least this often. Short enough
/// to look immediate to a person, long enough that each drain takes a batch.
pub const DRAIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);

/// The programs wake the consumer once this fraction of the event ring waits to be read
/// (an early warning: a consumer draining every `DRAIN_INTERVAL` rarely lets it get there).
const WAKEUP_FRACTION: u32 = 4;

/// Options for a session.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// Attach event programs with this backend choice (None: snapshot only).
    pub probe: Option<ProbeChoice>,
    /// Netns inode to report (0 = all).
    pub netns: u32,
    /// Ports to report (empty = all).
    pub ports: Vec<u16>,
    /// Bound of the per-event owner walk.
    pub max_owners: u32,
    /// Size of the event ring buffer in bytes (power of two, multiple of the page size).
    pub ring_bytes: Option<u32>,
    /// Size of the snapshot ring buffer; `None`: [`WALK_RING_BYTES`], for whole-table
    /// walks (`dump`, `top`). Sessions that only look up single buckets pass a small one: the
    /// ring is mapped into the process and counts in its memory.
    pub snapshot_ring_bytes: Option<u32>,
    /// Which walk driver to load (`--walk-driver`).
    pub walk_driver: WalkDriverChoice,
    /// Attach the event programs idle: each returns at its first instruction (for
    /// benchmarks: what the attach points alone cost; no events).
    pub idle_programs: bool,
    /// The session takes non-verbose walks only (`dump` without `-v`): load the smaller
    /// walk program that makes no ADDR/OWNER records (anything else loads the full one
    /// when first asked for).
    pub brief_walks: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            probe: None,
            netns: 0,
            ports: Vec::new(),
            max_owners: 65536,
            ring_bytes: None,
            snapshot_ring_bytes: None,
            walk_driver: WalkDriverChoice::Auto,
            idle_programs: false,
            brief_walks: false,
        }
    }
}

/// A loaded eBPF object with its attached programs. Dropping it detaches everything.
pub struct ProbeSession {
    ebpf: Ebpf,
    events: Option<RingBuf<MapData>>,
    pub backend: Option<Backend>,
    pub attempts: Vec<Attempt>,
    pub resolved: Resolved,
    /// Warnings worth showing (e.g. an optional hook missing).
    pub warnings: Vec<String>,
    snapshots: Snapshotter,
    max_owners: u32,
    /// How the in-kernel walks run here, and why.
    pub walk: WalkReport,
    /// Loss counters as of the last [`ProbeSession::losses`].
    losses_seen: LossTotals,
}

/// Loss counters since the session started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct LossTotals {
    dropped: u64,
    unattributed: u64,
    skipped: u64,
}

/// What the programs lost since the previous [`ProbeSession::losses`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Losses {
    /// Events not delivered (ring buffer full, no room to keep an operation for its exit).
    pub dropped: u64,
    /// Of those, the ones whose bucket is not known: the whole scope must be read again.
    pub unattributed: u64,
    /// Program runs the kernel skipped (another tracing program running on that CPU).
    pub skipped: u64,
    /// The buckets, (struct net address, netns inode, port), lost events were about.
    pub ports: Vec<LostPort>,
}

impl Losses {
    pub fn any(&self) -> bool {
        self.dropped > 0 || self.skipped > 0 || !self.ports.is_empty()
    }

    /// Whether some loss cannot be pinned to a bucket (then the whole scope is re-read).
    pub fn needs_scope(&self) -> bool {
        self.unattributed > 0 || self.skipped > 0
    }
}

/// What attaching gave, before the session is put together.
struct Attached {
    ebpf: Ebpf,
    backend: Option<Backend>,
    attempts: Vec<Attempt>,
    warnings: Vec<String>,
    snapshots: Snapshotter,
}

impl ProbeSession {
    /// Resolves the layout, loads the object and attaches what `opts` asks for.
    pub fn open(opts: &SessionOptions) -> Result<ProbeSession, BackendError> {
        let resolved = crate::layout_cache::host_layout_cached()?;
        // Only attached programs read tracepoint records: a snapshot-only session needs
        // no tracefs (nor mounts it).
        let (tp, mounted) = match opts.probe {
            Some(_) => {
                let (root, mounted) = tracefs::ensure_mounted()?;
                (Some(tp_offsets(&root)?), mounted.then_some(root))
            }
            None => (None, None),
        };
        let args = kernel_functions::arg_positions(&resolved);
        let mut plan = WalkPlan::new(opts.walk_driver, resolved.has(Id::BpfLoop));
        let a = loop {
            let ebpf = match plan.next() {
                Load::BpfLoop => {
                    let mut ebpf = load_object(
                        object::Object::BpfLoop,
                        &walk::BPF_LOOP_BUDGET,
                        &resolved.layout,
                        tp.as_ref(),
                        &args,
                        opts,
                    )?;
                    match probe_bpf_loop(&mut ebpf) {
                        Ok(()) => ebpf,
                        Err(why) => {
                            plan.bpf_loop_refused(why)?;
                            continue;
                        }
                    }
                }
                Load::Bounded(budget) => load_object(
                    object::Object::Bounded,
                    &budget,
                    &resolved.layout,
                    tp.as_ref(),
                    &args,
                    opts,
                )?,
            };
            let outcome = attach(ebpf, &resolved, opts);
            // A budget the verifier finds too complex is retried with a smaller one
            // before any backend is given up for it.
            let complex = match &outcome {
                Ok(a) => too_complex(a.attempts.iter().filter_map(|at| at.refused.as_ref())),
                Err(Failure::Backend(BackendError::NoneWorks(attempts))) => {
                    too_complex(attempts.iter().filter_map(|at| at.refused.as_ref()))
                }
                Err(Failure::Backend(BackendError::Refused { refusal, .. })) => {
                    too_complex(std::iter::once(refusal))
                }
                Err(Failure::Snapshot(SnapshotError::Refused(r))) => {
                    too_complex(std::iter::once(r))
                }
                Err(_) => None,
            };
            if complex.is_some_and(|r| plan.too_complex(r)) {
                continue;
            }
            match outcome {
                Ok(a) => break a,
                Err(Failure::Backend(e)) => return Err(e),
                Err(Failure::Snapshot(e)) => return Err(e.into()),
            }
        };
        let mut warnings = Vec::new();
        if let Some(root) = mounted {
            warnings.push(format!(
                "mounted tracefs at {} (it was not mounted)",
                root.display()
            ));
        }
        warnings.extend(a.warnings);
        let mut ebpf = a.ebpf;
        let events = match a.backend {
            Some(_) => Some(bpf::take_map(&mut ebpf, "EVENTS")?),
            None => None,
        };
        Ok(ProbeSession {
            ebpf,
            events,
            backend: a.backend,
            attempts: a.attempts,
            resolved,
            warnings,
            snapshots: a.snapshots,
            max_owners: opts.max_owners,
            walk: plan.report(),
            losses_seen: LossTotals::default(),
        })
    }

    /// One line: the backend chosen and why the better ones were refused.
    pub fn backend_summary(&self) -> String {
        self.summary_with(|r| r.to_string())
    }

    /// Like `backend_summary`, each refusal in its short form (for headers): e.g.
    /// "backend: tracepoint (fentry: BPF_PROG_LOAD EPERM; kprobe: kernel has no kprobes)".
    pub fn backend_short(&self) -> String {
        self.summary_with(|r| r.short())
    }

    fn summary_with(&self, reason: impl Fn(&super::Refusal) -> String) -> String {
        let Some(b) = self.backend else {
            return "backend: none (snapshot only)".into();
        };
        let refused: Vec<String> = self
            .attempts
            .iter()
            .filter_map(|a| {
                a.refused
                    .as_ref()
                    .map(|r| format!("{}: {}", a.backend, reason(r)))
            })
            .collect();
        if refused.is_empty() {
            format!("backend: {b}")
        } else {
            format!("backend: {b} ({})", refused.join("; "))
        }
    }

    /// Changes the netns filter while attached (0 = all).
    pub fn set_netns(&mut self, netns: u32) -> Result<(), BackendError> {
        let mut arr: Array<_, Config> = bpf::map_mut(&mut self.ebpf, "CONFIG")?;
        let mut cfg = arr.get(&0, 0).map_err(bpf::access("CONFIG"))?;
        cfg.netns = netns;
        arr.set(0, cfg, 0).map_err(bpf::access("CONFIG"))?;
        Ok(())
    }

    /// Everything the programs sent since the last call, with the backend's fix-ups.
    pub fn drain(&mut self) -> Result<Vec<Event>, BackendError> {
        let mut out = Vec::new();
        if let Some(rb) = self.events.as_mut() {
            while let Some(item) = rb.next() {
                out.push(decode_event(&item)?);
            }
        }
        if let Some(fix_up) = self.backend.and_then(|b| b.descriptor().fix_up) {
            let mut cx = FixUp {
                ebpf: &mut self.ebpf,
                snapshots: &mut self.snapshots,
                max_owners: self.max_owners,
            };
            out = fix_up(&mut cx, out)?;
        }
        Ok(out)
    }

    /// File descriptor of the event ring buffer, for polling.
    pub fn events_fd(&self) -> Option<i32> {
        self.events.as_ref().map(|rb| rb.as_raw_fd())
    }

    /// Events lost since the session started: not delivered because the ring buffer was
    /// full or an operation could not be kept for its exit hook (sum over CPUs).
    pub fn dropped(&self) -> Result<u64, BackendError> {
        self.drop_counter(lost::EVENTS)
    }

    fn drop_counter(&self, index: u32) -> Result<u64, BackendError> {
        let arr: PerCpuArray<_, u64> = bpf::map(&self.ebpf, "DROPS")?;
        let vals = arr.get(&index, 0).map_err(bpf::access("DROPS"))?;
        Ok(vals.iter().sum())
    }

    /// Runs of the event programs the kernel skipped since they were loaded (another
    /// tracing program was running on that CPU): each may have been an event.
    pub fn skipped(&self) -> u64 {
        bpf::recursion_misses(&self.ebpf)
    }

    /// What was lost since the previous call: the counters' increments and the buckets of
    /// the lost events, whose keys are taken out of the `LOST` map (a loss recorded after
    /// this call is reported by the next one).
    pub fn losses(&mut self) -> Result<Losses, BackendError> {
        let now = LossTotals {
            dropped: self.drop_counter(lost::EVENTS)?,
            unattributed: self.drop_counter(lost::UNATTRIBUTED)?,
            skipped: self.skipped(),
        };
        let mut ports = Vec::new();
        let mut map: HashMap<_, LostPort, u8> = bpf::map_mut(&mut self.ebpf, "LOST")?;
        for key in map.keys() {
            ports.push(key.map_err(bpf::access("LOST"))?);
        }
        for key in &ports {
            // A key gone meanwhile is fine: nothing else removes keys, so it cannot be.
            let _ = map.remove(key);
        }
        ports.sort();
        ports.dedup();
        let seen = std::mem::replace(&mut self.losses_seen, now);
        Ok(Losses {
            dropped: now.dropped.saturating_sub(seen.dropped),
            unattributed: now.unattributed.saturating_sub(seen.unattributed),
            skipped: now.skipped.saturating_sub(seen.skipped),
            ports,
        })
    }

    /// Re-reads the one bucket of (`net`, `port`), `net` being the kernel address of a
    /// `struct net` the programs recorded.
    pub fn lookup(&mut self, net: u64, port: u16) -> Result<Lookup, BackendError> {
        Ok(self
            .snapshots
            .lookup(&mut self.ebpf, net, port, self.max_owners)?)
    }

    /// A racy snapshot of the bind table (see `snapshot`).
    pub fn snapshot(&mut self, req: &SnapOptions) -> Result<Snapshot, BackendError> {
        Ok(self.snapshots.take(&mut self.ebpf, req)?)
    }

    /// A namespace's NET record (port range, reserved ports, `tcp_tw_reuse`) read from
    /// its `struct net` (see [`Snapshotter::net_info`]); `None` when it is gone or not the
    /// namespace `expect`ed.
    pub fn net_info(
        &mut self,
        ask: NetAsk,
        expect: Option<u32>,
    ) -> Result<Option<NetInfo>, BackendError> {
        Ok(self.snapshots.net_info(&mut self.ebpf, ask, expect)?)
    }

    /// The failed bind()/connect() calls the kernel counted since the programs were loaded
    /// (every backend counts where it sees a failure; see the eBPF crate's `errors.rs`).
    pub fn failure_counts(&self) -> Result<FailureCounts, BackendError> {
        let map: HashMap<_, ErrorKey, u64> = bpf::map(&self.ebpf, "ERRORS")?;
        let entries = map
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(bpf::access("ERRORS"))?;
        Ok(crate::decode::failure_counts(entries))
    }

    /// The owners of the one bucket of (`net`, `port`), `net` being an event's
    /// `struct net` (see `Snapshotter::lookup_owners`).
    pub fn lookup_owners(&mut self, net: u64, port: u16) -> Result<Snapshot, BackendError> {
        Ok(self
            .snapshots
            .lookup_owners(&mut self.ebpf, net, port, self.max_owners, false)?)
    }
}

/// Tracepoint record offsets from tracefs.
fn tp_offsets(root: &Path) -> Result<TpOffsets, BackendError> {
    Ok(TpOffsets {
        sys_enter_args: tracefs::field_offset(root, "syscalls", "sys_enter_bind", "fd")?,
        sys_exit_ret: tracefs::field_offset(root, "syscalls", "sys_exit_bind", "ret")?,
        set_state_skaddr: tracefs::field_offset(root, "sock", "inet_sock_set_state", "skaddr")?,
        set_state_newstate: tracefs::field_offset(root, "sock", "inet_sock_set_state", "newstate")?,
        set_state_protocol: tracefs::field_offset(root, "sock", "inet_sock_set_state", "protocol")?,
        set_state_sport: tracefs::field_offset(root, "sock", "inet_sock_set_state", "sport")?,
        destroy_skaddr: tracefs::field_offset(root, "tcp", "tcp_destroy_sock", "skaddr")?,
        destroy_sport: tracefs::field_offset(root, "tcp", "tcp_destroy_sock", "sport")?,
    })
}

/// The first refusal that says a program is too complex for the verifier.
fn too_complex<'a>(mut refusals: impl Iterator<Item = &'a Refusal>) -> Option<&'a Refusal> {
    refusals.find(|r| walk::is_too_complex(r))
}

/// Why attaching failed: a backend could not run, or the snapshot program could not.
enum Failure {
    Backend(BackendError),
    Snapshot(SnapshotError),
}

/// Attaches the backends `opts` asks for (the first the kernel accepts) and the snapshot
/// trigger to a freshly loaded object.
fn attach(mut ebpf: Ebpf, resolved: &Resolved, opts: &SessionOptions) -> Result<Attached, Failure> {
    write_config(&mut ebpf, opts).map_err(Failure::Backend)?;
    let mut warnings = Vec::new();
    let mut attempts = Vec::new();
    let mut backend = None;
    if let Some(choice) = opts.probe {
        for b in choice.candidates() {
            let d = b.descriptor();
            match (d.attach)(&mut ebpf, resolved, &mut warnings) {
                Ok(()) => {
                    attempts.push(Attempt {
                        backend: b,
                        refused: None,
                    });
                    backend = Some(b);
                    break;
                }
                Err(refusal) => {
                    // Nothing of a refused backend may run beside the next one.
                    for p in (d.programs)() {
                        bpf::unload(&mut ebpf, p);
                    }
                    if choice != ProbeChoice::Auto {
                        return Err(Failure::Backend(BackendError::Refused {
                            backend: b,
                            refusal,
                        }));
                    }
                    attempts.push(Attempt {
                        backend: b,
                        refused: Some(refusal),
                    });
                }
            }
        }
        if backend.is_none() {
            return Err(Failure::Backend(BackendError::NoneWorks(attempts)));
        }
    }
    let snapshots = Snapshotter::new(&mut ebpf, opts.brief_walks).map_err(Failure::Snapshot)?;
    Ok(Attached {
        ebpf,
        backend,
        attempts,
        warnings,
        snapshots,
    })
}

/// Loads `probe_bpf_loop` of the `bpf_loop` object (and unloads it again): whether this
/// kernel's verifier accepts `bpf_loop` and its callback.
fn probe_bpf_loop(ebpf: &mut Ebpf) -> Result<(), Refusal> {
    const PROBE: &str = "probe_bpf_loop";
    let p: &mut TracePoint = bpf::program(ebpf, PROBE)?;
    let loaded = p.load().map_err(|e| Refusal::from_load(PROBE, &e));
    bpf::unload(ebpf, PROBE);
    loaded
}

fn load_object(
    object: object::Object,
    budget: &WalkBudget,
    layout: &Layout,
    tp: Option<&TpOffsets>,
    args: &ArgPos,
    opts: &SessionOptions,
) -> Result<Ebpf, BackendError> {
    let idle = u32::from(opts.idle_programs);
    let mut loader = EbpfLoader::new();
    // No CO-RE relocations to apply (offsets come from our own BTF reading), so aya need
    // not parse the kernel's BTF again (~70 ms); fentry attachment loads it when needed.
    loader
        .btf(None)
        .override_global("LAYOUT", layout, true)
        .override_global("ARGS", args, true)
        .override_global("WALK", budget, true)
        .override_global("IDLE", &idle, true);
    if let Some(tp) = tp {
        // Unset (the object's placeholder) in snapshot-only sessions, which attach no
        // program that reads it.
        loader.override_global("TP", tp, true);
    }
    if let Some(bytes) = opts.ring_bytes {
        loader.map_max_entries("EVENTS", bytes);
    }
    loader.map_max_entries(
        "SNAP_RB",
        opts.snapshot_ring_bytes.unwrap_or(WALK_RING_BYTES),
    );
    if opts.probe.is_none() {
        // Snapshot only: the event maps are never used; keep their creation cheap.
        let page = 4096;
        loader
            .map_max_entries("EVENTS", page)
            .map_max_entries("ERRORS", 1)
            .map_max_entries("PENDING", 1)
            .map_max_entries("SOCKS", 1)
            .map_max_entries("PORTS", 1)
            .map_max_entries("LOST", 1);
    }
    // A session that attaches nothing loads the object of the snapshot walk alone.
    let programs = match opts.probe {
        Some(_) => object::Programs::All,
        None => object::Programs::WalkOnly,
    };
    let object = object::bytes(object, programs).map_err(|e| BackendError::Load(e.to_string()))?;
    loader
        .load(object)
        .map_err(|e| BackendError::Load(error_chain(&e)))
}

fn write_config(ebpf: &mut Ebpf, opts: &SessionOptions) -> Result<(), BackendError> {
    let ring = opts.ring_bytes.unwrap_or(EVENT_RING_BYTES);
    let cfg = Config {
        netns: opts.netns,
        filter_ports: (!opts.ports.is_empty()) as u32,
        self_tgid: 0,
        max_owners: opts.max_owners,
        wakeup_bytes: ring / WAKEUP_FRACTION,
        _pad: 0,
    };
    let mut arr: Array<_, Config> = bpf::map_mut(ebpf, "CONFIG")?;
    arr.set(0, cfg, 0).map_err(bpf::access("CONFIG"))?;
    // The slot for failures that find the counter map full, made while there is room.
    let mut errors: HashMap<_, ErrorKey, u64> = bpf::map_mut(ebpf, "ERRORS")?;
    errors
        .insert(ErrorKey::MAP_FULL, 0, 0)
        .map_err(bpf::access("ERRORS"))?;
    if !opts.ports.is_empty() {
        let mut ports: HashMap<_, u16, u8> = bpf::map_mut(ebpf, "PORTS")?;
        for p in &opts.ports {
            ports.insert(*p, 1, 0).map_err(bpf::access("PORTS"))?;
        }
    }
    Ok(())
}

/// Explanations of failures read their buckets through the session.
impl crate::explain::live::BucketSource for ProbeSession {
    fn port_owners(&mut self, net: u64, port: u16) -> anyhow::Result<Snapshot> {
        Ok(self.lookup_owners(net, port)?)
    }

    fn namespace(&mut self, net: u64, netns: u32) -> anyhow::Result<Snapshot> {
        Ok(self.snapshot(&SnapOptions {
            netns,
            verbose: true,
            net: crate::snapshot::NetAsk::Kernel(net),
            ..SnapOptions::default()
        })?)
    }
}
