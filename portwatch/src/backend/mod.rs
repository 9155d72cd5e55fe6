//! Probe backends: loading the eBPF object with the kernel's layout, choosing and
//! attaching a backend (fentry > kprobe > tracepoint), and reading what the programs send.
//!
//! Every backend emits the same `portwatch_common::Event`; which hook produced an event
//! never leaks into the model.
pub mod features;
pub mod kfuncs;
pub mod object;
pub mod tracefs;

use std::{fmt, os::fd::AsRawFd};

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::TracePoint,
    Ebpf, EbpfLoader,
};
use portwatch_common::{flag, op, ArgPos, Config, Event, Layout, TpOffsets};
use thiserror::Error;

use crate::{
    kernel::{LayoutError, Resolved},
    decode::{decode_event, DecodeError},
};

/// What the user asked for with `--probe`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbeChoice {
    Auto,
    Fentry,
    Kprobe,
    Tracepoint,
}

/// A concrete backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Fentry,
    Kprobe,
    Tracepoint,
}

impl Backend {
    pub const PREFERENCE: [Backend; 3] = [Backend::Fentry, Backend::Kprobe, Backend::Tracepoint];

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Fentry => "fentry",
            Backend::Kprobe => "kprobe",
            Backend::Tracepoint => "tracepoint",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::gist;

    #[test]
    fn refusals_are_cut_to_their_gist() {
        assert_eq!(
            gist("inet_csk_get_port: BPF_PROG_LOAD EPERM (the kernel refuses this program type here)"),
            "BPF_PROG_LOAD EPERM"
        );
        assert_eq!(
            gist("kernel has no kprobes (no kprobe_events in tracefs; the programs passed the verifier)"),
            "kernel has no kprobes"
        );
        assert_eq!(gist("kp_get_port: BPF_PROG_LOAD EACCES; verifier: x"), "BPF_PROG_LOAD EACCES");
    }
}

#[derive(Debug, Error)]
pub enum BackendError {
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Tracefs(#[from] tracefs::TracefsError),
    #[error("loading the eBPF object failed: {0}")]
    Load(String),
    #[error("the eBPF object has no {what} `{name}` (build mismatch; rebuild portwatch)")]
    Missing { what: &'static str, name: String },
    #[error("program `{prog}`: {action} failed: {reason}")]
    Program { prog: String, action: &'static str, reason: String },
    #[error("map `{map}`: {reason}")]
    Map { map: String, reason: String },
    #[error("the {backend} backend cannot run on this kernel: {reason}")]
    Refused { backend: Backend, reason: String },
    #[error("no probe backend could attach: {0}")]
    NoneWorks(String),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("snapshot: {0}")]
    Snapshot(String),
}

/// One attempt of `--probe auto`, for the feature report.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Attempt {
    pub backend: Backend,
    /// None: it worked; Some(reason): refused.
    pub refused: Option<String>,
}

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
    /// Size of the snapshot ring buffer; `None`: big enough for whole-table walks
    /// (`dump`, `top`). Sessions that only look up single buckets pass a small one: the
    /// ring is mapped into the process and counts in its memory.
    pub snapshot_ring_bytes: Option<u32>,
}

/// A snapshot ring for sessions that only look up single buckets.
pub const LOOKUP_RING_BYTES: u32 = 1 << 16;

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            probe: None,
            netns: 0,
            ports: Vec::new(),
            max_owners: 65536,
            ring_bytes: None,
            snapshot_ring_bytes: None,
        }
    }
}

/// A loaded eBPF object with its attached programs. Dropping it detaches everything.
pub struct Session {
    ebpf: Ebpf,
    events: Option<RingBuf<MapData>>,
    pub backend: Option<Backend>,
    pub attempts: Vec<Attempt>,
    pub resolved: Resolved,
    /// Warnings worth showing (e.g. an optional hook missing).
    pub warnings: Vec<String>,
    snap: Option<crate::snapshot::Snapshotter>,
    max_owners: u32,
}

/// Syscall tracepoints of the tracepoint backend: (program, tracepoint, required).
const TRACEPOINTS: [(&str, &str, &str, bool); 11] = [
    ("sys_enter_bind", "syscalls", "sys_enter_bind", true),
    ("sys_exit_bind", "syscalls", "sys_exit_bind", true),
    ("sys_enter_connect", "syscalls", "sys_enter_connect", true),
    ("sys_exit_connect", "syscalls", "sys_exit_connect", true),
    ("sys_enter_listen", "syscalls", "sys_enter_listen", true),
    ("sys_exit_listen", "syscalls", "sys_exit_listen", true),
    ("sys_enter_close", "syscalls", "sys_enter_close", true),
    ("sys_exit_close", "syscalls", "sys_exit_close", true),
    ("sys_exit_accept", "syscalls", "sys_exit_accept", false),
    ("sys_exit_accept4", "syscalls", "sys_exit_accept4", true),
    ("inet_sock_set_state", "sock", "inet_sock_set_state", true),
];

impl Session {
    /// Resolves the layout, loads the object and attaches what `opts` asks for.
    pub fn open(opts: &SessionOptions) -> Result<Session, BackendError> {
        let resolved = crate::layout_cache::host_layout_cached()?;
        let (tracefs_root, mounted) = tracefs::ensure_mounted()?;
        let tp = tp_offsets(&tracefs_root)?;
        let args = features::arg_positions(&resolved);
        let mut ebpf = load_object(&resolved.layout, &tp, &args, opts)?;
        write_config(&mut ebpf, opts)?;
        let mut warnings = Vec::new();
        if mounted {
            warnings.push(format!("mounted tracefs at {} (it was not mounted)", tracefs_root.display()));
        }
        let mut attempts = Vec::new();
        let mut backend = None;
        if let Some(choice) = opts.probe {
            let order: Vec<Backend> = match choice {
                ProbeChoice::Auto => Backend::PREFERENCE.to_vec(),
                ProbeChoice::Fentry => vec![Backend::Fentry],
                ProbeChoice::Kprobe => vec![Backend::Kprobe],
                ProbeChoice::Tracepoint => vec![Backend::Tracepoint],
            };
            for b in order {
                match attach(&mut ebpf, b, &resolved, &mut warnings) {
                    Ok(()) => {
                        attempts.push(Attempt { backend: b, refused: None });
                        backend = Some(b);
                        break;
                    }
                    Err(reason) => {
                        attempts.push(Attempt { backend: b, refused: Some(reason.clone()) });
                        if choice != ProbeChoice::Auto {
                            return Err(BackendError::Refused { backend: b, reason });
                        }
                    }
                }
            }
            if backend.is_none() {
                return Err(BackendError::NoneWorks(attempts_summary(&attempts)));
            }
        }
        let events = if backend.is_some() {
            let map = ebpf.take_map("EVENTS").ok_or(BackendError::Missing { what: "map", name: "EVENTS".into() })?;
            Some(RingBuf::try_from(map).map_err(|e| BackendError::Map { map: "EVENTS".into(), reason: e.to_string() })?)
        } else {
            None
        };
        let snap = crate::snapshot::Snapshotter::new(&mut ebpf)?;
        Ok(Session {
            ebpf,
            events,
            backend,
            attempts,
            resolved,
            warnings,
            snap: Some(snap),
            max_owners: opts.max_owners,
        })
    }

    /// One line: the backend chosen and why the better ones were refused.
    pub fn backend_summary(&self) -> String {
        self.summary_with(|r| r.to_string())
    }

    /// Like `backend_summary`, with each refusal cut to its gist (for headers):
    /// e.g. "backend: tracepoint (fentry: BPF_PROG_LOAD EPERM; kprobe: kernel has no kprobes)".
    pub fn backend_short(&self) -> String {
        self.summary_with(gist)
    }

    fn summary_with(&self, reason: impl Fn(&str) -> String) -> String {
        let Some(b) = self.backend else { return "backend: none (snapshot only)".into() };
        let refused: Vec<String> = self
            .attempts
            .iter()
            .filter_map(|a| a.refused.as_deref().map(|r| format!("{}: {}", a.backend, reason(r))))
            .collect();
        if refused.is_empty() {
            format!("backend: {b}")
        } else {
            format!("backend: {b} ({})", refused.join("; "))
        }
    }

    /// Changes the netns filter while attached (0 = all).
    pub fn set_netns(&mut self, netns: u32) -> Result<(), BackendError> {
        let mut cfg = read_config(&self.ebpf)?;
        cfg.netns = netns;
        let mut arr: Array<_, Config> = Array::try_from(
            self.ebpf.map_mut("CONFIG").ok_or(BackendError::Missing { what: "map", name: "CONFIG".into() })?,
        )
        .map_err(|e| BackendError::Map { map: "CONFIG".into(), reason: e.to_string() })?;
        arr.set(0, cfg, 0).map_err(|e| BackendError::Map { map: "CONFIG".into(), reason: e.to_string() })
    }

    /// Everything the programs sent since the last call.
    ///
    /// The tracepoint backend reports close() at the syscall's exit; kernels before 6.15
    /// release the socket after that (the final fput runs on the way back to user space),
    /// so a close event whose bucket still shows the port is followed by a re-read of that
    /// bucket, sent as a second close event when it changed.
    pub fn drain(&mut self) -> Result<Vec<Event>, BackendError> {
        let mut out = Vec::new();
        if let Some(rb) = self.events.as_mut() {
            while let Some(item) = rb.next() {
                out.push(decode_event(&item)?);
            }
        }
        if self.backend == Some(Backend::Tracepoint) && out.iter().any(needs_reread) {
            let mut merged = Vec::with_capacity(out.len() + 1);
            for ev in out {
                let again = if needs_reread(&ev) { self.reread(&ev)? } else { None };
                merged.push(ev);
                merged.extend(again);
            }
            out = merged;
        }
        Ok(out)
    }

    /// The event `ev` with its bucket read again now, if that differs.
    fn reread(&mut self, ev: &Event) -> Result<Option<Event>, BackendError> {
        let snap = self.snap.as_mut().ok_or_else(|| BackendError::Snapshot("snapshot program not loaded".into()))?;
        let now = snap.lookup(&mut self.ebpf, ev.net, ev.port, self.max_owners)?;
        let mut again = *ev;
        match now {
            Some(r) => {
                if r.addr == ev.bucket.tb && r.owners == ev.bucket.owners && r.fastreuse == ev.bucket.fastreuse
                    && r.fastreuseport == ev.bucket.fastreuseport
                {
                    return Ok(None);
                }
                again.bucket.tb = r.addr;
                again.bucket.owners = r.owners;
                again.bucket.fastreuse = r.fastreuse;
                again.bucket.fastreuseport = r.fastreuseport;
                again.bucket.l3mdev = r.l3mdev;
                again.flags |= flag::BUCKET_PRESENT;
                if r.flags & portwatch_common::snapflag::OWNERS_TRUNCATED != 0 {
                    again.flags |= flag::OWNERS_TRUNCATED;
                } else {
                    again.flags &= !flag::OWNERS_TRUNCATED;
                }
            }
            None => {
                again.bucket = Default::default();
                again.flags &= !flag::BUCKET_PRESENT;
            }
        }
        Ok(Some(again))
    }

    /// File descriptor of the event ring buffer, for polling.
    pub fn events_fd(&self) -> Option<i32> {
        self.events.as_ref().map(|rb| rb.as_raw_fd())
    }

    /// Events lost because the ring buffer was full (sum over CPUs).
    pub fn dropped(&self) -> Result<u64, BackendError> {
        let map = self.ebpf.map("DROPS").ok_or(BackendError::Missing { what: "map", name: "DROPS".into() })?;
        let arr: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map).map_err(|e| BackendError::Map { map: "DROPS".into(), reason: e.to_string() })?;
        let vals = arr.get(&0, 0).map_err(|e| BackendError::Map { map: "DROPS".into(), reason: e.to_string() })?;
        Ok(vals.iter().sum())
    }

    /// A racy snapshot of the bind table (see `snapshot`).
    pub fn snapshot(&mut self, req: &crate::snapshot::SnapOptions) -> Result<crate::model::Snapshot, BackendError> {
        let snap = self.snap.as_mut().ok_or_else(|| BackendError::Snapshot("snapshot program not loaded".into()))?;
        snap.take(&mut self.ebpf, req)
    }
}

/// The gist of a refusal: without the function it was about and without explanations
/// in parentheses or after a semicolon.
fn gist(reason: &str) -> String {
    let r = match reason.find("BPF_PROG_LOAD") {
        Some(i) => &reason[i..],
        None => reason,
    };
    let r = r.split(" (").next().unwrap_or(r);
    r.split(';').next().unwrap_or(r).trim().to_string()
}

fn needs_reread(ev: &Event) -> bool {
    ev.op == op::CLOSE && ev.errno == 0 && ev.flags & flag::BUCKET_PRESENT != 0 && ev.net != 0
}

fn attempts_summary(attempts: &[Attempt]) -> String {
    attempts
        .iter()
        .map(|a| format!("{}: {}", a.backend, a.refused.as_deref().unwrap_or("ok")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Tracepoint record offsets from tracefs.
fn tp_offsets(root: &std::path::Path) -> Result<TpOffsets, BackendError> {
    Ok(TpOffsets {
        sys_enter_args: tracefs::field_offset(root, "syscalls", "sys_enter_bind", "fd")?,
        sys_exit_ret: tracefs::field_offset(root, "syscalls", "sys_exit_bind", "ret")?,
        set_state_skaddr: tracefs::field_offset(root, "sock", "inet_sock_set_state", "skaddr")?,
        set_state_newstate: tracefs::field_offset(root, "sock", "inet_sock_set_state", "newstate")?,
        set_state_protocol: tracefs::field_offset(root, "sock", "inet_sock_set_state", "protocol")?,
        _pad: 0,
    })
}

fn load_object(layout: &Layout, tp: &TpOffsets, args: &ArgPos, opts: &SessionOptions) -> Result<Ebpf, BackendError> {
    let mut loader = EbpfLoader::new();
    // No CO-RE relocations to apply (offsets come from our own BTF reading), so aya need
    // not parse the kernel's BTF again (~70 ms); fentry attachment loads it when needed.
    loader
        .btf(None)
        .override_global("LAYOUT", layout, true)
        .override_global("TP", tp, true)
        .override_global("ARGS", args, true);
    if let Some(bytes) = opts.ring_bytes {
        loader.map_max_entries("EVENTS", bytes);
    }
    if let Some(bytes) = opts.snapshot_ring_bytes {
        loader.map_max_entries("SNAP_RB", bytes);
    }
    if opts.probe.is_none() {
        // Snapshot only: the event maps are never used; keep their creation cheap.
        let page = 4096;
        loader
            .map_max_entries("EVENTS", page)
            .map_max_entries("PENDING", 1)
            .map_max_entries("SOCKS", 1)
            .map_max_entries("PORTS", 1);
    }
    loader.load(object::OBJECT).map_err(|e| BackendError::Load(error_chain(&e)))
}

fn write_config(ebpf: &mut Ebpf, opts: &SessionOptions) -> Result<(), BackendError> {
    let cfg = Config {
        netns: opts.netns,
        filter_ports: (!opts.ports.is_empty()) as u32,
        self_tgid: 0,
        max_owners: opts.max_owners,
    };
    {
        let mut arr: Array<_, Config> = Array::try_from(
            ebpf.map_mut("CONFIG").ok_or(BackendError::Missing { what: "map", name: "CONFIG".into() })?,
        )
        .map_err(|e| BackendError::Map { map: "CONFIG".into(), reason: e.to_string() })?;
        arr.set(0, cfg, 0).map_err(|e| BackendError::Map { map: "CONFIG".into(), reason: e.to_string() })?;
    }
    if !opts.ports.is_empty() {
        let mut ports: HashMap<_, u16, u8> = HashMap::try_from(
            ebpf.map_mut("PORTS").ok_or(BackendError::Missing { what: "map", name: "PORTS".into() })?,
        )
        .map_err(|e| BackendError::Map { map: "PORTS".into(), reason: e.to_string() })?;
        for p in &opts.ports {
            ports.insert(*p, 1, 0).map_err(|e| BackendError::Map { map: "PORTS".into(), reason: e.to_string() })?;
        }
    }
    Ok(())
}

fn read_config(ebpf: &Ebpf) -> Result<Config, BackendError> {
    let arr: Array<_, Config> =
        Array::try_from(ebpf.map("CONFIG").ok_or(BackendError::Missing { what: "map", name: "CONFIG".into() })?)
            .map_err(|e| BackendError::Map { map: "CONFIG".into(), reason: e.to_string() })?;
    arr.get(&0, 0).map_err(|e| BackendError::Map { map: "CONFIG".into(), reason: e.to_string() })
}

/// Attaches one backend; on failure returns the reason (programs attached so far are
/// detached when the session is dropped).
fn attach(ebpf: &mut Ebpf, b: Backend, resolved: &Resolved, warnings: &mut Vec<String>) -> Result<(), String> {
    match b {
        Backend::Tracepoint => attach_tracepoints(ebpf, warnings),
        Backend::Kprobe => {
            let r = kfuncs::attach_kprobes(ebpf, resolved, warnings);
            if r.is_err() {
                kfuncs::unload_all(ebpf, true);
            }
            r
        }
        Backend::Fentry => {
            let r = kfuncs::attach_fentry(ebpf, resolved, warnings);
            if r.is_err() {
                kfuncs::unload_all(ebpf, false);
            }
            r
        }
    }
}

fn attach_tracepoints(ebpf: &mut Ebpf, warnings: &mut Vec<String>) -> Result<(), String> {
    for (prog, category, name, required) in TRACEPOINTS {
        let result = (|| -> Result<(), String> {
            let p: &mut TracePoint = ebpf
                .program_mut(prog)
                .ok_or_else(|| format!("program {prog} missing from the object"))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| e.to_string())?;
            p.load().map_err(|e| format!("{prog}: {}", load_reason(&e)))?;
            p.attach(category, name).map_err(|e| format!("{category}:{name}: attach: {}", error_chain(&e)))?;
            Ok(())
        })();
        match result {
            Ok(()) => {}
            Err(e) if !required => warnings.push(format!("optional tracepoint skipped: {e}")),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A short reason for a program that would not load: the errno's name, and the last
/// lines of the verifier's log when it has one.
pub fn load_reason(e: &aya::programs::ProgramError) -> String {
    match e {
        aya::programs::ProgramError::LoadError { io_error, verifier_log } => {
            let errno = io_error.raw_os_error().unwrap_or(0);
            let name = crate::model::Errno::new(errno).map_or_else(|| "errno 0".to_owned(), |e| e.to_string());
            let log = verifier_log.to_string();
            // The log ends with statistics; the reason is the last lines before them.
            let stats = ["verification time", "stack depth", "processed ", "max_states_per_insn"];
            let tail: Vec<&str> = log
                .lines()
                .filter(|l| !l.trim().is_empty() && !stats.iter().any(|s| l.starts_with(s)))
                .rev()
                .take(3)
                .collect();
            let hint = match errno {
                libc::EPERM => " (the kernel refuses this program type here)",
                libc::EACCES => " (rejected by the verifier)",
                _ => "",
            };
            if tail.is_empty() {
                format!("BPF_PROG_LOAD {name}{hint}")
            } else {
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("BPF_PROG_LOAD {name}{hint}; verifier: {}", tail.join(" | "))
            }
        }
        other => error_chain(other),
    }
}

/// "a: b: c" from an error and its sources.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let t = src.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = src.source();
    }
    // aya appends the verifier log even when the kernel gave none.
    let trimmed = s.trim_end();
    let trimmed = trimmed.strip_suffix("Verifier output:").unwrap_or(trimmed).trim_end();
    let trimmed = trimmed.strip_suffix('.').unwrap_or(trimmed);
    trimmed.to_string()
}
