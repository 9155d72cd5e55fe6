//! `portwatch explain`: why a bind() or connect() fails. The hidden `selftest` runs the
//! seeded, generated cases against the running kernel (the VM matrix calls it in every
//! guest).
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use portwatch::explain::{
    judge::{self, Options},
    observe::observe,
    variant::{KernelVersion, Variant},
};

#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[command(subcommand)]
    command: ExplainCommand,
}

#[derive(Debug, Subcommand)]
enum ExplainCommand {
    /// Judge the rules engine by the running kernel: observe each dated rule, then run
    /// seeded, generated bind() and connect() cases in private network namespaces and
    /// compare every answer of the kernel with the engine's (root; exit 1 on any
    /// disagreement).
    #[command(hide = true)]
    Selftest(SelftestArgs),
}

#[derive(Debug, Args)]
struct SelftestArgs {
    /// Seed of the case generator.
    #[arg(long, default_value_t = 20261201)]
    seed: u64,
    /// Number of generated bind() cases.
    #[arg(long, default_value_t = 300)]
    bind: usize,
    /// Number of generated connect() cases.
    #[arg(long, default_value_t = 100)]
    connect: usize,
    /// JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: ExplainArgs) -> Result<ExitCode> {
    match a.command {
        ExplainCommand::Selftest(s) => selftest(s),
    }
}

fn selftest(a: SelftestArgs) -> Result<ExitCode> {
    let version = KernelVersion::running().context("reading the kernel release")?;
    let (variant, observations) = observe(version).context("observing the kernel's rules in a private netns")?;
    let table = Variant::for_version(version);
    let opts = Options { seed: a.seed, bind_cases: a.bind, connect_cases: a.connect };
    let started = std::time::Instant::now();
    let tally = judge::run(&opts, &variant, |_| {}).context("running the generated cases")?;
    let secs = started.elapsed().as_secs_f64();
    let table_matches = variant == table;
    if a.json {
        let v = serde_json::json!({
            "kernel": version,
            "options": opts,
            "observations": observations,
            "table_matches": table_matches,
            "variant": variant,
            "tally": tally,
            "secs": (secs * 10.0).round() / 10.0,
        });
        println!("{}", serde_json::to_string(&v)?);
    } else {
        println!("kernel {version}");
        for o in &observations {
            println!("  rule {:<28} observed {:<5} table {}", o.row, o.observed, o.expected);
        }
        println!(
            "seed {}: {} bind cases ({} calls judged, {} refusals, {} conflicts re-made alone, {} \
             completeness checks, {} fixes), {} connect cases ({} range connects, {} port probes, \
             {} holder checks) in {secs:.1} s: {} disagreements",
            opts.seed,
            tally.bind_cases,
            tally.bind_calls,
            tally.bind_refusals,
            tally.conflicts_verified,
            tally.completeness_checks,
            tally.fixes_verified,
            tally.connect_cases,
            tally.connect_calls,
            tally.port_probes,
            tally.blockers_verified,
            tally.disagreements.len()
        );
        for d in &tally.disagreements {
            println!("DISAGREEMENT {}: {}", d.case, d.what);
        }
    }
    Ok(if tally.disagreements.is_empty() && table_matches { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
