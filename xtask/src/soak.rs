//! `cargo xtask soak --minutes N`: portwatch trace attached to a long churn across
//! `--ports` ports (examples/churn.rs `--mode soak`: random bind with/without
//! SO_REUSEADDR on 127.0.0.1-4, listen, connect from the ports' ephemeral range, close
//! with SO_LINGER 0, paced at `--rate` ops/s) in a private netns.
//!
//! Reports the tracer's RSS (VmRSS of /proc/PID/status, sampled every second: start, peak,
//! end), its drop count, and at the end compares a fresh `portwatch dump --json` of the
//! soak netns with the final state the trace stream implies for each port (the last
//! transition's owners/fastreuse/fastreuseport, or no bucket after `bucket_destroyed`).
//! The churn stops before the comparison and keeps its sockets open; no socket of the
//! soak ends in TIME-WAIT (every close is a reset), so the table is stable when dumped.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde::Serialize;

use crate::bench::{
    procs::{self, Bins, Churn, TraceSink, Tracer},
    stats::{compare_final, Counters, Mismatch},
};

/// Arguments of `cargo xtask soak`.
#[derive(clap::Args, Debug, Clone)]
pub struct SoakArgs {
    /// Fail unless the final states agree, the tracer's memory stayed bounded and its
    /// drop count was read (used by `cargo xtask test`).
    #[arg(long)]
    pub check: bool,
    /// How long the churn runs.
    #[arg(long, default_value_t = 1.0)]
    pub minutes: f64,
    /// Number of ports churned (from port 20000; also the netns' ephemeral range).
    #[arg(long, default_value_t = 1000)]
    pub ports: u32,
    /// Socket operations per second in total (0: as fast as possible).
    #[arg(long, default_value_t = 5000)]
    pub rate: u32,
    /// Worker threads of the churn (default: the number of CPUs).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Where to write the JSON report.
    #[arg(long, default_value = "target/bench/soak.json")]
    pub out: PathBuf,
    /// Do not run `cargo build --release -p portwatch --bins --examples` first.
    #[arg(long)]
    pub no_build: bool,
}

const SOAK_BASE: u16 = 20000;

#[derive(Debug, Serialize)]
struct SoakReport {
    machine: procs::Machine,
    backend: Option<String>,
    minutes: f64,
    ports: u32,
    rate: u32,
    workers: usize,
    counters: Counters,
    /// VmRSS of the tracer in KiB: first sample, peak, last sample.
    rss_start_kib: Option<u64>,
    rss_peak_kib: Option<u64>,
    rss_end_kib: Option<u64>,
    rss_samples: usize,
    dropped: Option<u64>,
    transitions: u64,
    /// Ports seen by the dump or the trace stream.
    ports_compared: usize,
    mismatch_count: usize,
    /// The first 50 mismatches.
    mismatches: Vec<Mismatch>,
    /// The tracer's stderr (backend line, drop warnings), last 20 lines.
    tracer_stderr: Vec<String>,
}

pub fn run(args: &SoakArgs) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "cargo xtask soak needs root (it creates a network namespace and loads eBPF programs): \
             run it as root, e.g. `sudo -E cargo xtask soak`"
        );
    }
    if args.minutes <= 0.0 || args.ports == 0 {
        bail!("--minutes and --ports must be positive");
    }
    let root = crate::cmd::workspace_root();
    if !args.no_build {
        crate::build::release(&["--bins", "--examples"])?;
    }
    let target = crate::build::target_dir()?;
    let bins = Bins::new(&target);
    bins.check()?;
    let machine = procs::machine();
    let workers = args.workers.unwrap_or(machine.nproc.max(1));
    let backend = procs::backends(&bins).ok().and_then(|b| b.chosen);
    let scratch = crate::bench::scratch_dir(&target);

    let churn_args: Vec<String> = [
        "--mode".to_string(),
        "soak".to_string(),
        "--base".to_string(),
        SOAK_BASE.to_string(),
        "--count".to_string(),
        args.ports.to_string(),
        "--rate".to_string(),
        args.rate.to_string(),
        "--workers".to_string(),
        workers.to_string(),
        "--seconds".to_string(),
        "0".to_string(),
    ]
    .to_vec();
    let mut churn = Churn::start(&bins, &churn_args)?;
    let path = churn.ready.netns_path.clone();
    let inode = churn.ready.netns_inode;
    let trace_args: Vec<String> = ["--json", "--netns", &path]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let tracer = Tracer::start(&bins, &trace_args, TraceSink::Final, &scratch)?;
    let tpid = tracer.pid();
    eprintln!(
        "soak: {} min, {} ports from {SOAK_BASE}, {} ops/s, {workers} workers, netns {inode}, tracer pid {tpid}",
        args.minutes, args.ports, args.rate
    );
    churn.go()?;
    let started = Instant::now();
    let total = Duration::from_secs_f64(args.minutes * 60.0);
    let mut rss: Vec<u64> = Vec::new();
    while started.elapsed() < total {
        std::thread::sleep(Duration::from_secs(1));
        match procs::rss_kib(tpid) {
            Ok(k) => rss.push(k),
            Err(e) => bail!("the tracer went away during the soak: {e:#}"),
        }
        let n = rss.len();
        if n.is_multiple_of(30) {
            eprintln!(
                "soak: {n} s, tracer VmRSS {} KiB",
                rss.last().copied().unwrap_or(0)
            );
        }
    }
    churn.stop()?;
    let counters = churn.result()?;
    // Let the tracer drain the last events of the churn before the table is read.
    std::thread::sleep(Duration::from_secs(1));
    let out = Command::new(&bins.portwatch)
        .args(["dump", "--netns", &path, "--json"])
        .stdin(Stdio::null())
        .output()
        .context("running portwatch dump")?;
    if !out.status.success() {
        bail!(
            "portwatch dump --netns {path} --json failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let dump: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("portwatch dump printed no JSON")?;
    let t = tracer.stop()?;
    churn.finish()?;
    let (compared, mismatches) = compare_final(&dump, &t.finals, inode);
    let report = SoakReport {
        machine,
        backend,
        minutes: args.minutes,
        ports: args.ports,
        rate: args.rate,
        workers,
        counters,
        rss_start_kib: rss.first().copied(),
        rss_peak_kib: rss.iter().max().copied(),
        rss_end_kib: rss.last().copied(),
        rss_samples: rss.len(),
        dropped: t.dropped,
        transitions: t.counts.transitions(),
        ports_compared: compared,
        mismatch_count: mismatches.len(),
        mismatches: mismatches.into_iter().take(50).collect(),
        tracer_stderr: {
            let lines: Vec<String> = t.stderr.lines().map(str::to_string).collect();
            lines[lines.len().saturating_sub(20)..].to_vec()
        },
    };
    let path_out = if args.out.is_absolute() {
        args.out.clone()
    } else {
        root.join(&args.out)
    };
    if let Some(dir) = path_out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&path_out, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", path_out.display()))?;
    let kib = |v: Option<u64>| v.map_or("n/a".to_string(), |k| format!("{k} KiB"));
    println!(
        "soak: {} min on {} CPUs (kernel {}), backend {}",
        report.minutes,
        report.machine.nproc,
        report.machine.kernel,
        report.backend.as_deref().unwrap_or("unknown")
    );
    println!(
        "  workload: {} ops ({} binds ok, {} failed, {} listens, {} connects, {} closes)",
        report.counters.cycles,
        report.counters.binds_ok,
        report.counters.binds_failed,
        report.counters.listens_ok,
        report.counters.connects_ok,
        report.counters.closes_bound
    );
    println!(
        "  tracer RSS: start {}, peak {}, end {} ({} samples)",
        kib(report.rss_start_kib),
        kib(report.rss_peak_kib),
        kib(report.rss_end_kib),
        report.rss_samples
    );
    println!(
        "  transitions {}, dropped {}",
        report.transitions,
        report.dropped.map_or("n/a".to_string(), |d| d.to_string())
    );
    println!(
        "  final state: {} ports compared, {} mismatches between dump and the trace stream",
        report.ports_compared, report.mismatch_count
    );
    for m in report.mismatches.iter().take(10) {
        println!(
            "    port {}: dump {:?}, trace {:?}",
            m.port, m.dump, m.trace
        );
    }
    println!("JSON report: {}", path_out.display());
    if args.check {
        let mut problems = Vec::new();
        if report.mismatch_count > 0 {
            problems.push(format!(
                "{} ports where dump and the trace stream disagree",
                report.mismatch_count
            ));
        }
        if let (Some(start), Some(end)) = (report.rss_start_kib, report.rss_end_kib) {
            // Bounded: the tracer may settle a little above its start, not keep growing.
            if end > start + start / 5 + 8192 {
                problems.push(format!("tracer RSS grew from {start} KiB to {end} KiB"));
            }
        } else {
            problems.push("tracer RSS could not be sampled".to_string());
        }
        if report.dropped.is_none() {
            problems.push("the tracer's drop count could not be read".to_string());
        }
        if !problems.is_empty() {
            bail!("soak check failed: {}", problems.join("; "));
        }
        println!("soak check: passed (no mismatches, RSS bounded, drops accounted)");
    }
    Ok(())
}
