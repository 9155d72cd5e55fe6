//! `cargo xtask bench`: benchmarks of portwatch, measured side by side in one run.
//!
//! Every figure is a ratio or a count from the same run, the median of several rounds
//! whose variants are interleaved (round r runs the variants in rotation r: A B C, B C A,
//! ...). The report names the machine (nproc, kernel, CPU model) and the backend(s), is
//! printed as a table and written as JSON (`--out`, default target/bench/bench.json).
//! A figure whose command fails is reported as "not available" with the reason, never
//! as a number.
//!
//! 1. overhead: churn (examples/churn.rs: bind+close, connect+accept+close, each with and
//!    without SO_REUSEADDR, `--workers` threads at full speed in a private netns, fixed
//!    `--seconds` per round), cycles/s without portwatch vs with `portwatch trace --json
//!    --netns all` (stdout to /dev/null) for every backend the kernel allows, with no port
//!    filter and with `--port 9` (matches nothing). Goal: at most 5 % slower.
//! 2. capture: the same workloads with `trace --json --netns <bench netns>` (stdout drained
//!    by a counting thread): transitions per op/kind against what the workload's own
//!    counters imply, and the tracer's drop count. Goal: zero lost. Then loss on purpose:
//!    a workload whose every event yields exactly one transition (each port of a range
//!    bound once, then closed) with `--ring-bytes` 4096 and 65536 (and the default ring as
//!    the control): delivered + dropped must equal the events the programs produced.
//! 3. snapshot: `portwatch dump --netns PATH --json` on a netns with `--sockets` listening
//!    sockets vs `nsenter --net=PATH ss -tanH`, wall time; also `walk_ms` of
//!    `dump --timing`. Goal: under 50 ms and faster than ss.
//! 4. top: `portwatch top --netns PATH --interval 1` on `--top-buckets` buckets, CPU
//!    (utime+stime from /proc/PID/stat) over `--top-seconds`, in its non-TTY mode (a plain
//!    table every interval into a drained pipe) and in the TUI under `script` (a pty).
//!    Goal: under 2 % of one core.
//! 5. export: `portwatch export --netns PATH` on a netns with `--export-sockets` listening
//!    sockets: client-side wall time of `--export-scrapes` scrapes 100 ms apart (p50, p99,
//!    max), and the exporter's CPU over `--export-idle-seconds` while scraped every 15 s.
//!    Goals: p99 under 50 ms, under 1 % of one core.
//!
//! Needs root (namespaces, eBPF). Everything happens in private network namespaces; no
//! sysctl of the host is touched.

mod capture;
mod export;
pub mod overhead;
pub mod procs;
mod report;
mod snapshot;
pub mod stats;
mod top;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde::Serialize;

use self::{
    capture::{CaptureRow, RingLossRow},
    export::ExportFig,
    overhead::OverheadRow,
    procs::Bins,
    snapshot::SnapshotFig,
    stats::Workload,
    top::TopRow,
};

/// Arguments of `cargo xtask bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Seconds per workload round (overhead and capture).
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Rounds per variant (medians are taken over them).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Rounds of each capture measurement.
    #[arg(long, default_value_t = 3)]
    pub capture_rounds: usize,
    /// Worker threads of the churn workload (default: the number of CPUs).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Listening sockets in the netns of the snapshot benchmark.
    #[arg(long, default_value_t = 50_000)]
    pub sockets: u32,
    /// Buckets in the netns of the top benchmark.
    #[arg(long, default_value_t = 10_000)]
    pub top_buckets: u32,
    /// How long top's CPU time is measured (after a 2 s warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub top_seconds: f64,
    /// Listening sockets in the netns of the export benchmark.
    #[arg(long, default_value_t = 50_000)]
    pub export_sockets: u32,
    /// Scrapes (100 ms apart) whose wall time gives the export p99.
    #[arg(long, default_value_t = 200)]
    pub export_scrapes: usize,
    /// How long the exporter's CPU time is measured while it is scraped every 15 s.
    #[arg(long, default_value_t = 60.0)]
    pub export_idle_seconds: f64,
    /// Only these parts (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Part>,
    /// Where to write the JSON report.
    #[arg(long, default_value = "target/bench/bench.json")]
    pub out: PathBuf,
    /// Do not run `cargo build --release -p portwatch --bins --examples` first.
    #[arg(long)]
    pub no_build: bool,
}

/// Parts of the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    Overhead,
    Capture,
    Snapshot,
    Top,
    Export,
}

/// A figure, or why it could not be measured.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum Fig<T> {
    Ok(T),
    NotAvailable { not_available: String },
}

impl<T> Fig<T> {
    pub fn na(e: impl std::fmt::Display) -> Self {
        Fig::NotAvailable {
            not_available: e.to_string(),
        }
    }
    pub fn from(r: Result<T>) -> Self {
        match r {
            Ok(v) => Fig::Ok(v),
            Err(e) => Fig::na(format!("{e:#}")),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub machine: procs::Machine,
    pub backends: Fig<procs::Backends>,
    pub config: Config,
    pub overhead: Vec<OverheadRow>,
    pub capture: Vec<CaptureRow>,
    pub ring_loss: Vec<RingLossRow>,
    pub snapshot: Option<Fig<SnapshotFig>>,
    pub top: Vec<TopRow>,
    pub export: Option<Fig<ExportFig>>,
}

#[derive(Debug, Serialize)]
pub struct Config {
    pub seconds: f64,
    pub rounds: usize,
    pub capture_rounds: usize,
    pub workers: usize,
    pub sockets: u32,
    pub top_buckets: u32,
    pub top_seconds: f64,
    pub connect_close: &'static str,
}

/// Scratch files (churn's ready files) of the benchmarks and the soak: under `target`.
pub fn scratch_dir(target: &Path) -> PathBuf {
    target.join("bench").join("tmp")
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "cargo xtask bench needs root (it creates network namespaces and loads eBPF programs): \
             run it as root, e.g. `sudo -E cargo xtask bench`"
        );
    }
    if args.rounds == 0 || args.capture_rounds == 0 || args.seconds <= 0.0 {
        bail!("--rounds, --capture-rounds and --seconds must be positive");
    }
    let root = crate::cmd::workspace_root();
    if !args.no_build {
        crate::build::release(&["--bins", "--examples"])?;
    }
    let target = crate::build::target_dir()?;
    let bins = Bins::new(&target);
    bins.check()?;
    let scratch = scratch_dir(&target);
    let machine = procs::machine();
    let workers = args.workers.unwrap_or(machine.nproc.max(1));
    eprintln!(
        "bench: {} CPUs, kernel {}, {}",
        machine.nproc, machine.kernel, machine.cpu_model
    );
    let backends = Fig::from(procs::backends(&bins));
    let usable: Vec<String> = match &backends {
        Fig::Ok(b) => b.usable.clone(),
        Fig::NotAvailable { .. } => Vec::new(),
    };
    eprintln!(
        "bench: backends to measure: {}",
        if usable.is_empty() {
            "none".into()
        } else {
            usable.join(", ")
        }
    );
    let want = |p: Part| args.only.is_empty() || args.only.contains(&p);
    let ctx = Ctx {
        args,
        bins: &bins,
        scratch: &scratch,
        workers,
    };

    let mut report = Report {
        machine,
        backends,
        config: Config {
            seconds: args.seconds,
            rounds: args.rounds,
            capture_rounds: args.capture_rounds,
            workers,
            sockets: args.sockets,
            top_buckets: args.top_buckets,
            top_seconds: args.top_seconds,
            connect_close: "client closes first with SO_LINGER 0 (RST): no TIME-WAIT accumulates; \
                            the server socket is released by the RST before its close()",
        },
        overhead: Vec::new(),
        capture: Vec::new(),
        ring_loss: Vec::new(),
        snapshot: None,
        top: Vec::new(),
        export: None,
    };
    if want(Part::Overhead) {
        for w in Workload::ALL {
            report.overhead.extend(overhead::overhead(&ctx, w, &usable));
        }
    }
    if want(Part::Capture) {
        for b in &usable {
            for w in Workload::ALL {
                report.capture.push(capture::capture(&ctx, w, b));
            }
            for ring in [None, Some(65536u32), Some(4096u32)] {
                report.ring_loss.push(capture::ring_loss(&ctx, b, ring));
            }
        }
    }
    if want(Part::Snapshot) {
        report.snapshot = Some(Fig::from(snapshot::snapshot(&ctx)));
    }
    if want(Part::Top) {
        report.top = top::top(&ctx);
    }
    if want(Part::Export) {
        report.export = Some(Fig::from(export::export(&ctx)));
    }
    let out = if args.out.is_absolute() {
        args.out.clone()
    } else {
        root.join(&args.out)
    };
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", out.display()))?;
    print!("{}", report::render(&report));
    println!("JSON report: {}", out.display());
    Ok(())
}

pub struct Ctx<'a> {
    pub args: &'a BenchArgs,
    pub bins: &'a Bins,
    pub scratch: &'a Path,
    pub workers: usize,
}

impl Ctx<'_> {
    pub fn churn_args(&self, extra: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        v.extend(["--workers".to_string(), self.workers.to_string()]);
        v.extend(["--seconds".to_string(), self.args.seconds.to_string()]);
        v
    }
}
