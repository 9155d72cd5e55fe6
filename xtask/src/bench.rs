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
//!
//! Needs root (namespaces, eBPF). Everything happens in private network namespaces; no
//! sysctl of the host is touched.

pub mod procs;
pub mod stats;

use std::{
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde::Serialize;

use self::{
    procs::{Bins, Churn, TraceSink, Tracer},
    stats::{median, ratio, rotation, slowdown_pct, Counters, Workload},
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
}

/// A figure, or why it could not be measured.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum Fig<T> {
    Ok(T),
    NotAvailable { not_available: String },
}

impl<T> Fig<T> {
    fn na(e: impl std::fmt::Display) -> Self {
        Fig::NotAvailable {
            not_available: e.to_string(),
        }
    }
    fn from(r: Result<T>) -> Self {
        match r {
            Ok(v) => Fig::Ok(v),
            Err(e) => Fig::na(format!("{e:#}")),
        }
    }
}

#[derive(Debug, Serialize)]
struct Report {
    machine: procs::Machine,
    backends: Fig<procs::Backends>,
    config: Config,
    overhead: Vec<OverheadRow>,
    capture: Vec<CaptureRow>,
    ring_loss: Vec<RingLossRow>,
    snapshot: Option<Fig<SnapshotFig>>,
    top: Vec<TopRow>,
}

#[derive(Debug, Serialize)]
struct Config {
    seconds: f64,
    rounds: usize,
    capture_rounds: usize,
    workers: usize,
    sockets: u32,
    top_buckets: u32,
    top_seconds: f64,
    connect_close: &'static str,
}

/// Scratch files (ready files) go here.
fn scratch_dir(root: &Path) -> PathBuf {
    root.join("target").join("bench").join("tmp")
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
    let root = procs::workspace_root();
    if !args.no_build {
        procs::build_release(&root)?;
    }
    let bins = Bins::new(&root);
    bins.check()?;
    let scratch = scratch_dir(&root);
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
    };
    if want(Part::Overhead) {
        for w in Workload::ALL {
            report.overhead.extend(overhead(&ctx, w, &usable));
        }
    }
    if want(Part::Capture) {
        for b in &usable {
            for w in Workload::ALL {
                report.capture.push(capture(&ctx, w, b));
            }
            for ring in [None, Some(65536u32), Some(4096u32)] {
                report.ring_loss.push(ring_loss(&ctx, b, ring));
            }
        }
    }
    if want(Part::Snapshot) {
        report.snapshot = Some(Fig::from(snapshot(&ctx)));
    }
    if want(Part::Top) {
        report.top = top(&ctx);
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
    print!("{}", render(&report));
    println!("JSON report: {}", out.display());
    Ok(())
}

struct Ctx<'a> {
    args: &'a BenchArgs,
    bins: &'a Bins,
    scratch: &'a Path,
    workers: usize,
}

impl Ctx<'_> {
    fn churn_args(&self, extra: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        v.extend(["--workers".to_string(), self.workers.to_string()]);
        v.extend(["--seconds".to_string(), self.args.seconds.to_string()]);
        v
    }
}

// ---------------------------------------------------------------- 1. overhead

#[derive(Debug, Serialize)]
struct OverheadRow {
    workload: &'static str,
    backend: String,
    /// "none" or "--port 9".
    filter: &'static str,
    baseline_ops_s: Option<f64>,
    traced_ops_s: Option<f64>,
    /// traced / baseline (medians).
    ratio: Option<f64>,
    slowdown_pct: Option<f64>,
    within_goal_5pct: Option<bool>,
    baseline_rounds: Vec<f64>,
    traced_rounds: Vec<f64>,
    /// Drops reported by the tracer in each traced round.
    dropped: Vec<u64>,
    errors: Vec<String>,
}

/// One churn round, optionally with a tracer (`--netns all`, stdout to /dev/null).
fn overhead_round(
    ctx: &Ctx,
    w: Workload,
    trace: Option<(&str, bool)>,
) -> Result<(f64, Option<u64>)> {
    let tracer = match trace {
        Some((backend, port9)) => {
            let mut a: Vec<String> = ["--json", "--netns", "all", "--probe", backend]
                .iter()
                .map(|s| s.to_string())
                .collect();
            if port9 {
                a.extend(["--port".to_string(), "9".to_string()]);
            }
            Some(Tracer::start(ctx.bins, &a, TraceSink::Null, ctx.scratch)?)
        }
        None => None,
    };
    let mut churn = Churn::start(ctx.bins, &ctx.churn_args(&w.churn_args()))?;
    churn.go()?;
    let c = churn.result()?;
    churn.finish()?;
    let dropped = match tracer {
        Some(t) => t.stop()?.dropped,
        None => None,
    };
    let rate = c.rate().context("churn reported no elapsed time")?;
    Ok((rate, dropped))
}

fn overhead(ctx: &Ctx, w: Workload, backends: &[String]) -> Vec<OverheadRow> {
    // Variant 0: baseline; then (backend, no filter), (backend, --port 9) per backend.
    let mut variants: Vec<Option<(String, bool)>> = vec![None];
    for b in backends {
        variants.push(Some((b.clone(), false)));
        variants.push(Some((b.clone(), true)));
    }
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut drops: Vec<Vec<u64>> = vec![Vec::new(); variants.len()];
    let mut errors: Vec<Vec<String>> = vec![Vec::new(); variants.len()];
    for r in 0..ctx.args.rounds {
        for vi in rotation(r, variants.len()) {
            let v = &variants[vi];
            eprintln!(
                "bench: overhead {} round {}/{}: {}",
                w.name(),
                r + 1,
                ctx.args.rounds,
                match v {
                    None => "baseline".to_string(),
                    Some((b, p)) => format!("trace {b}{}", if *p { " --port 9" } else { "" }),
                }
            );
            match overhead_round(ctx, w, v.as_ref().map(|(b, p)| (b.as_str(), *p))) {
                Ok((rate, d)) => {
                    rates[vi].push(rate);
                    if let Some(d) = d {
                        drops[vi].push(d);
                    }
                }
                Err(e) => errors[vi].push(format!("{e:#}")),
            }
        }
    }
    let base = median(&rates[0]);
    let mut rows = Vec::new();
    for (vi, v) in variants.iter().enumerate().skip(1) {
        let Some((b, port9)) = v else { continue };
        let traced = median(&rates[vi]);
        let (ratio_v, slow) = match (base, traced) {
            (Some(b0), Some(t)) => (ratio(t, b0), slowdown_pct(b0, t)),
            _ => (None, None),
        };
        let mut errs = errors[0].clone();
        errs.extend(errors[vi].iter().cloned());
        rows.push(OverheadRow {
            workload: w.name(),
            backend: b.clone(),
            filter: if *port9 { "--port 9" } else { "none" },
            baseline_ops_s: base,
            traced_ops_s: traced,
            ratio: ratio_v,
            slowdown_pct: slow,
            within_goal_5pct: slow.map(|s| s <= 5.0),
            baseline_rounds: rates[0].clone(),
            traced_rounds: rates[vi].clone(),
            dropped: drops[vi].clone(),
            errors: errs,
        });
    }
    rows
}

// ---------------------------------------------------------------- 2. capture

#[derive(Debug, Serialize)]
struct CaptureRound {
    counters: Counters,
    ops_s: Option<f64>,
    expected_events: u64,
    expected_transitions: u64,
    observed_transitions: u64,
    dropped: Option<u64>,
    /// expected - observed transitions, by op/kind (negative: more observed).
    diff_by_op_kind: std::collections::BTreeMap<String, i64>,
    unparsed_lines: u64,
}

#[derive(Debug, Serialize)]
struct CaptureRow {
    workload: &'static str,
    backend: String,
    rounds: Vec<CaptureRound>,
    ops_s_median: Option<f64>,
    dropped_total: u64,
    expected_transitions_total: u64,
    observed_transitions_total: u64,
    zero_lost: Option<bool>,
    errors: Vec<String>,
}

fn capture_round(ctx: &Ctx, w: Workload, backend: &str) -> Result<CaptureRound> {
    let mut churn = Churn::start(ctx.bins, &ctx.churn_args(&w.churn_args()))?;
    let a: Vec<String> = [
        "--json",
        "--netns",
        &churn.ready.netns_path,
        "--probe",
        backend,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let tracer = Tracer::start(ctx.bins, &a, TraceSink::Count, ctx.scratch)?;
    churn.go()?;
    let c = churn.result()?;
    // Let the tracer drain what is still in the ring buffer (it also drains at SIGINT).
    std::thread::sleep(Duration::from_millis(500));
    let t = tracer.stop()?;
    churn.finish()?;
    let expected = w.expected_transitions(&c);
    let mut diff = std::collections::BTreeMap::new();
    for (k, &e) in &expected {
        let o = t.counts.by_op_kind.get(k).copied().unwrap_or(0);
        diff.insert(k.clone(), e as i64 - o as i64);
    }
    for (k, &o) in &t.counts.by_op_kind {
        if !expected.contains_key(k) {
            diff.insert(k.clone(), -(o as i64));
        }
    }
    Ok(CaptureRound {
        ops_s: c.rate(),
        expected_events: w.expected_events(&c),
        expected_transitions: expected.values().sum(),
        observed_transitions: t.counts.transitions(),
        dropped: t.dropped,
        diff_by_op_kind: diff,
        unparsed_lines: t.counts.unparsed,
        counters: c,
    })
}

fn capture(ctx: &Ctx, w: Workload, backend: &str) -> CaptureRow {
    let mut rounds = Vec::new();
    let mut errors = Vec::new();
    for r in 0..ctx.args.capture_rounds {
        eprintln!(
            "bench: capture {} ({backend}) round {}/{}",
            w.name(),
            r + 1,
            ctx.args.capture_rounds
        );
        match capture_round(ctx, w, backend) {
            Ok(x) => rounds.push(x),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    let rates: Vec<f64> = rounds.iter().filter_map(|x| x.ops_s).collect();
    let dropped_total = rounds.iter().filter_map(|x| x.dropped).sum();
    let exp: u64 = rounds.iter().map(|x| x.expected_transitions).sum();
    let obs: u64 = rounds.iter().map(|x| x.observed_transitions).sum();
    CaptureRow {
        workload: w.name(),
        backend: backend.to_string(),
        ops_s_median: median(&rates),
        dropped_total,
        expected_transitions_total: exp,
        observed_transitions_total: obs,
        zero_lost: (!rounds.is_empty()).then_some(dropped_total == 0 && exp == obs),
        rounds,
        errors,
    }
}

#[derive(Debug, Serialize)]
struct RingLossRow {
    backend: String,
    /// None: the default ring (the control).
    ring_bytes: Option<u32>,
    result: Fig<RingLoss>,
}

#[derive(Debug, Serialize)]
struct RingLoss {
    ports: u64,
    /// Events the programs produced: one per bind and one per close (each port once).
    produced: u64,
    /// Delivered events: the transitions printed (exactly one per event in this workload).
    delivered: u64,
    dropped: u64,
    /// delivered + dropped == produced.
    exact: bool,
    by_op_kind: std::collections::BTreeMap<String, u64>,
}

/// Ports 1024..65023 bound once each (then closed) by `--workers` threads at full speed.
const LOSS_BASE: u16 = 1024;
const LOSS_PORTS: u32 = 64_000;

fn ring_loss(ctx: &Ctx, backend: &str, ring: Option<u32>) -> RingLossRow {
    eprintln!(
        "bench: ring loss ({backend}), ring {}",
        ring.map_or("default".to_string(), |r| format!("{r} bytes"))
    );
    let res = (|| -> Result<RingLoss> {
        let churn_args = ctx.churn_args(&[
            "--mode",
            "ports",
            "--base",
            &LOSS_BASE.to_string(),
            "--count",
            &LOSS_PORTS.to_string(),
        ]);
        let mut churn = Churn::start(ctx.bins, &churn_args)?;
        let mut a: Vec<String> = [
            "--json",
            "--netns",
            &churn.ready.netns_path,
            "--probe",
            backend,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(r) = ring {
            a.extend(["--ring-bytes".to_string(), r.to_string()]);
        }
        let tracer = Tracer::start(ctx.bins, &a, TraceSink::Count, ctx.scratch)?;
        churn.go()?;
        let c = churn.result()?;
        std::thread::sleep(Duration::from_millis(500));
        let t = tracer.stop()?;
        churn.finish()?;
        let produced = Workload::Bind.expected_events(&c);
        let delivered = t.counts.transitions();
        let dropped = t.dropped.unwrap_or(0);
        Ok(RingLoss {
            ports: c.binds_ok,
            produced,
            delivered,
            dropped,
            exact: delivered + dropped == produced,
            by_op_kind: t.counts.by_op_kind,
        })
    })();
    RingLossRow {
        backend: backend.to_string(),
        ring_bytes: ring,
        result: Fig::from(res),
    }
}

// ---------------------------------------------------------------- 3. snapshot

#[derive(Debug, Serialize)]
struct SnapshotFig {
    sockets: u32,
    dump_ms: Vec<f64>,
    ss_ms: Vec<f64>,
    walk_ms: Vec<f64>,
    dump_ms_median: Option<f64>,
    ss_ms_median: Option<f64>,
    walk_ms_median: Option<f64>,
    /// dump / ss wall time (medians); below 1 means dump is faster.
    dump_over_ss: Option<f64>,
    dump_buckets_seen: Vec<usize>,
    ss_lines_seen: Vec<usize>,
    goal_under_50ms: Option<bool>,
    goal_faster_than_ss: Option<bool>,
    errors: Vec<String>,
}

fn timed_output(cmd: &mut Command) -> Result<(f64, std::process::Output)> {
    let t0 = Instant::now();
    let out = cmd.stdin(Stdio::null()).output().context("spawning")?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    if !out.status.success() {
        bail!(
            "exit {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((ms, out))
}

fn snapshot(ctx: &Ctx) -> Result<SnapshotFig> {
    let n = ctx.args.sockets;
    eprintln!("bench: snapshot: holding {n} listening sockets");
    let mut churn = Churn::start(
        ctx.bins,
        &[
            "--mode",
            "hold",
            "--base",
            "10000",
            "--count",
            &n.to_string(),
        ]
        .map(String::from),
    )?;
    churn.go()?;
    let held = churn.result()?;
    if held.held != u64::from(n) {
        bail!("churn holds {} sockets, not {n}", held.held);
    }
    let path = churn.ready.netns_path.clone();
    let mut fig = SnapshotFig {
        sockets: n,
        dump_ms: Vec::new(),
        ss_ms: Vec::new(),
        walk_ms: Vec::new(),
        dump_ms_median: None,
        ss_ms_median: None,
        walk_ms_median: None,
        dump_over_ss: None,
        dump_buckets_seen: Vec::new(),
        ss_lines_seen: Vec::new(),
        goal_under_50ms: None,
        goal_faster_than_ss: None,
        errors: Vec::new(),
    };
    for r in 0..ctx.args.rounds {
        for v in rotation(r, 2) {
            if v == 0 {
                let res = timed_output(
                    Command::new("nsenter")
                        .arg(format!("--net={path}"))
                        .args(["ss", "-tanH"]),
                );
                match res {
                    Ok((ms, out)) => {
                        fig.ss_ms.push(ms);
                        fig.ss_lines_seen.push(
                            out.stdout
                                .split(|&b| b == b'\n')
                                .filter(|l| !l.is_empty())
                                .count(),
                        );
                    }
                    Err(e) => fig.errors.push(format!("ss: {e:#}")),
                }
            } else {
                let res = timed_output(
                    Command::new(&ctx.bins.portwatch)
                        .args(["dump", "--netns", &path, "--json", "--timing"]),
                );
                match res {
                    Ok((ms, out)) => {
                        fig.dump_ms.push(ms);
                        if let Some(w) = stats::walk_ms(&String::from_utf8_lossy(&out.stderr)) {
                            fig.walk_ms.push(w);
                        }
                        let buckets = serde_json::from_slice::<serde_json::Value>(&out.stdout)
                            .ok()
                            .and_then(|v| v.as_array().map(Vec::len))
                            .unwrap_or(0);
                        fig.dump_buckets_seen.push(buckets);
                    }
                    Err(e) => fig.errors.push(format!("dump: {e:#}")),
                }
            }
        }
    }
    churn.finish()?;
    fig.dump_ms_median = median(&fig.dump_ms);
    fig.ss_ms_median = median(&fig.ss_ms);
    fig.walk_ms_median = median(&fig.walk_ms);
    if let (Some(d), Some(s)) = (fig.dump_ms_median, fig.ss_ms_median) {
        fig.dump_over_ss = ratio(d, s);
        fig.goal_faster_than_ss = Some(d < s);
    }
    fig.goal_under_50ms = fig.dump_ms_median.map(|d| d < 50.0);
    Ok(fig)
}

// ---------------------------------------------------------------- 4. top

#[derive(Debug, Serialize)]
struct TopRow {
    /// "non-tty (plain table every interval)" or "tty (TUI under script)".
    mode: &'static str,
    result: Fig<TopFig>,
}

#[derive(Debug, Serialize)]
struct TopFig {
    buckets: u32,
    seconds: f64,
    cpu_ticks: u64,
    clk_tck: u64,
    /// Percent of one core over the measured window.
    cpu_pct_one_core: f64,
    goal_under_2pct: bool,
    /// Lines top printed during the whole run (non-tty: the tables; tty: screen bytes
    /// are not counted).
    output_lines: u64,
}

fn top(ctx: &Ctx) -> Vec<TopRow> {
    let n = ctx.args.top_buckets;
    eprintln!("bench: top: holding {n} listening sockets");
    let churn = (|| -> Result<Churn> {
        let mut c = Churn::start(
            ctx.bins,
            &[
                "--mode",
                "hold",
                "--base",
                "20000",
                "--count",
                &n.to_string(),
            ]
            .map(String::from),
        )?;
        c.go()?;
        c.result()?;
        Ok(c)
    })();
    let churn = match churn {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("{e:#}");
            return vec![
                TopRow {
                    mode: "non-tty",
                    result: Fig::na(&msg),
                },
                TopRow {
                    mode: "tty",
                    result: Fig::na(&msg),
                },
            ];
        }
    };
    let path = churn.ready.netns_path.clone();
    let rows = vec![
        TopRow {
            mode: "non-tty (plain table every interval, stdout a drained pipe)",
            result: Fig::from(top_plain(ctx, &path)),
        },
        TopRow {
            mode: "tty (TUI in a pty under `script`)",
            result: Fig::from(top_tty(ctx, &path)),
        },
    ];
    let _ = churn.finish();
    rows
}

const TOP_WARMUP: Duration = Duration::from_secs(2);

fn measure_cpu(
    pid: u32,
    alive: &mut dyn FnMut() -> Result<()>,
    secs: f64,
) -> Result<(u64, u64, f64)> {
    std::thread::sleep(TOP_WARMUP);
    alive()?;
    let hz = procs::clk_tck()?;
    let t0 = Instant::now();
    let c0 = procs::cpu_ticks(pid)?;
    std::thread::sleep(Duration::from_secs_f64(secs));
    let c1 = procs::cpu_ticks(pid)?;
    let el = t0.elapsed().as_secs_f64();
    alive()?;
    Ok((c1.saturating_sub(c0), hz, el))
}

fn top_plain(ctx: &Ctx, path: &str) -> Result<TopFig> {
    let mut child = Command::new(&ctx.bins.portwatch)
        .args(["top", "--netns", path, "--interval", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting portwatch top")?;
    let out = child.stdout.take().context("no stdout pipe")?;
    let lines = std::thread::spawn(move || {
        BufReader::new(out).lines().map_while(Result::ok).count() as u64
    });
    let mut err = child.stderr.take().context("no stderr pipe")?;
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let pid = child.id();
    let res = measure_cpu(
        pid,
        &mut || match child.try_wait() {
            Ok(Some(st)) => bail!("portwatch top exited ({st})"),
            _ => Ok(()),
        },
        ctx.args.top_seconds,
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let _ = procs::wait_or_kill(&mut child, Duration::from_secs(10), "portwatch top");
    let output_lines = lines.join().unwrap_or(0);
    let stderr = errs.join().unwrap_or_default();
    let (ticks, hz, el) = res.map_err(|e| anyhow::anyhow!("{e:#}: {}", stderr.trim()))?;
    if output_lines == 0 {
        bail!("portwatch top printed nothing: {}", stderr.trim());
    }
    let pct = ticks as f64 / hz as f64 / el * 100.0;
    Ok(TopFig {
        buckets: ctx.args.top_buckets,
        seconds: el,
        cpu_ticks: ticks,
        clk_tck: hz,
        cpu_pct_one_core: pct,
        goal_under_2pct: pct < 2.0,
        output_lines,
    })
}

/// The pid of a descendant of `root` whose executable is `exe`, if any.
fn find_descendant(root: u32, exe: &Path) -> Option<u32> {
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        if std::fs::read_link(format!("/proc/{p}/exe")).ok().as_deref() == Some(exe) && p != root {
            return Some(p);
        }
        let tasks = std::fs::read_dir(format!("/proc/{p}/task")).ok()?;
        for t in tasks.flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            frontier.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    None
}

fn top_tty(ctx: &Ctx, path: &str) -> Result<TopFig> {
    let exe =
        std::fs::canonicalize(&ctx.bins.portwatch).context("resolving the portwatch binary")?;
    let cmdline = format!("exec {} top --netns {} --interval 1", exe.display(), path);
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &cmdline, "/dev/null"])
        .env("TERM", "xterm-256color")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting `script` (util-linux) for a pty")?;
    let script_pid = child.id();
    let until = Instant::now() + Duration::from_secs(10);
    let pid = loop {
        if let Some(p) = find_descendant(script_pid, &exe) {
            break p;
        }
        if let Ok(Some(st)) = child.try_wait() {
            bail!("portwatch top under script exited at once ({st})");
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            bail!("no portwatch process appeared under script within 10 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let res = measure_cpu(
        pid,
        &mut || {
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                Ok(())
            } else {
                bail!("portwatch top (TUI) exited during the measurement")
            }
        },
        ctx.args.top_seconds,
    );
    // Our grandchild, by pid: SIGINT ends the TUI (it restores the terminal).
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    if procs::wait_or_kill(&mut child, Duration::from_secs(5), "script").is_err() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let (ticks, hz, el) = res?;
    let pct = ticks as f64 / hz as f64 / el * 100.0;
    Ok(TopFig {
        buckets: ctx.args.top_buckets,
        seconds: el,
        cpu_ticks: ticks,
        clk_tck: hz,
        cpu_pct_one_core: pct,
        goal_under_2pct: pct < 2.0,
        output_lines: 0,
    })
}

// ---------------------------------------------------------------- report

fn f(v: Option<f64>, prec: usize) -> String {
    v.map_or("n/a".to_string(), |x| format!("{x:.prec$}"))
}

fn render(r: &Report) -> String {
    let mut s = String::new();
    let line = |s: &mut String, t: String| {
        s.push_str(&t);
        s.push('\n');
    };
    line(
        &mut s,
        format!(
            "machine: {} CPUs, kernel {}, {}",
            r.machine.nproc, r.machine.kernel, r.machine.cpu_model
        ),
    );
    match &r.backends {
        Fig::Ok(b) => {
            line(
                &mut s,
                format!("backends measured: {}", b.usable.join(", ")),
            );
            for (name, why) in &b.refused {
                line(&mut s, format!("  refused {name}: {why}"));
            }
        }
        Fig::NotAvailable { not_available } => {
            line(&mut s, format!("backends: not available ({not_available})"))
        }
    }
    line(
        &mut s,
        format!(
            "rounds {} x {} s, {} worker threads; medians; variants interleaved in rotation",
            r.config.rounds, r.config.seconds, r.config.workers
        ),
    );
    if !r.overhead.is_empty() {
        line(&mut s, String::new());
        line(
            &mut s,
            "1. overhead (cycles/s, trace --json --netns all > /dev/null; goal: slowdown <= 5 %)"
                .into(),
        );
        line(
            &mut s,
            format!(
                "{:<36} {:<10} {:<9} {:>12} {:>12} {:>7} {:>9} {:>8}",
                "workload",
                "backend",
                "filter",
                "baseline/s",
                "traced/s",
                "ratio",
                "slowdown",
                "dropped"
            ),
        );
        for o in &r.overhead {
            line(
                &mut s,
                format!(
                    "{:<36} {:<10} {:<9} {:>12} {:>12} {:>7} {:>8}% {:>8}{}",
                    o.workload,
                    o.backend,
                    o.filter,
                    f(o.baseline_ops_s, 0),
                    f(o.traced_ops_s, 0),
                    f(o.ratio, 3),
                    f(o.slowdown_pct, 1),
                    o.dropped.iter().sum::<u64>(),
                    if o.errors.is_empty() {
                        String::new()
                    } else {
                        format!("  ({} failed rounds)", o.errors.len())
                    }
                ),
            );
        }
    }
    if !r.capture.is_empty() {
        line(&mut s, String::new());
        line(
            &mut s,
            "2. capture (trace --json --netns <bench netns>; goal: zero lost)".into(),
        );
        line(
            &mut s,
            format!(
                "{:<36} {:<10} {:>10} {:>12} {:>12} {:>10} {:>9}",
                "workload", "backend", "ops/s", "expected", "observed", "dropped", "zero lost"
            ),
        );
        for c in &r.capture {
            line(
                &mut s,
                format!(
                    "{:<36} {:<10} {:>10} {:>12} {:>12} {:>10} {:>9}{}",
                    c.workload,
                    c.backend,
                    f(c.ops_s_median, 0),
                    c.expected_transitions_total,
                    c.observed_transitions_total,
                    c.dropped_total,
                    c.zero_lost
                        .map_or("n/a".to_string(), |z| if z { "yes" } else { "NO" }
                            .to_string()),
                    if c.errors.is_empty() {
                        String::new()
                    } else {
                        format!("  ({} failed rounds)", c.errors.len())
                    }
                ),
            );
        }
        line(
            &mut s,
            "   (expected/observed: transitions summed over the rounds; per-op detail in the JSON)"
                .into(),
        );
    }
    if !r.ring_loss.is_empty() {
        line(&mut s, String::new());
        line(&mut s, format!("2b. drop accounting ({LOSS_PORTS} ports bound once and closed: 1 event = 1 transition)"));
        line(
            &mut s,
            format!(
                "{:<10} {:>10} {:>10} {:>10} {:>10} {:>6}",
                "backend", "ring", "produced", "delivered", "dropped", "exact"
            ),
        );
        for l in &r.ring_loss {
            let ring = l
                .ring_bytes
                .map_or("default".to_string(), |b| b.to_string());
            match &l.result {
                Fig::Ok(x) => line(
                    &mut s,
                    format!(
                        "{:<10} {:>10} {:>10} {:>10} {:>10} {:>6}",
                        l.backend,
                        ring,
                        x.produced,
                        x.delivered,
                        x.dropped,
                        if x.exact { "yes" } else { "NO" }
                    ),
                ),
                Fig::NotAvailable { not_available } => line(
                    &mut s,
                    format!(
                        "{:<10} {:>10} not available: {not_available}",
                        l.backend, ring
                    ),
                ),
            }
        }
    }
    if let Some(sn) = &r.snapshot {
        line(&mut s, String::new());
        match sn {
            Fig::Ok(x) => {
                line(&mut s, format!("3. snapshot of {} listening sockets (wall ms, median; goal: dump < 50 ms and faster than ss)", x.sockets));
                line(
                    &mut s,
                    format!(
                        "   dump --json {} ms (in-kernel walk {} ms), ss -tanH {} ms, dump/ss {}; dump buckets {:?}, ss lines {:?}",
                        f(x.dump_ms_median, 1),
                        f(x.walk_ms_median, 1),
                        f(x.ss_ms_median, 1),
                        f(x.dump_over_ss, 2),
                        x.dump_buckets_seen.first(),
                        x.ss_lines_seen.first()
                    ),
                );
                for e in &x.errors {
                    line(&mut s, format!("   error: {e}"));
                }
            }
            Fig::NotAvailable { not_available } => line(
                &mut s,
                format!("3. snapshot: not available: {not_available}"),
            ),
        }
    }
    if !r.top.is_empty() {
        line(&mut s, String::new());
        line(
            &mut s,
            format!(
                "4. top CPU with {} buckets, --interval 1 (goal: < 2 % of one core)",
                r.config.top_buckets
            ),
        );
        for t in &r.top {
            match &t.result {
                Fig::Ok(x) => line(
                    &mut s,
                    format!(
                        "   {}: {:.2} % of one core over {:.1} s ({} ticks)",
                        t.mode, x.cpu_pct_one_core, x.seconds, x.cpu_ticks
                    ),
                ),
                Fig::NotAvailable { not_available } => line(
                    &mut s,
                    format!("   {}: not available: {not_available}", t.mode),
                ),
            }
        }
    }
    s
}
