//! `portwatch`: the Linux kernel's TCP bind hash table, live.
mod cmd;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// `--version`: the version, the commit it was built from and the aya it links.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("PORTWATCH_GIT_COMMIT"),
    ", aya ",
    env!("PORTWATCH_AYA_VERSION"),
    ")"
);

/// Shows the kernel's TCP bind buckets (local port, fastreuse, fastreuseport, owners)
/// and every change to them, with eBPF.
#[derive(Debug, Parser)]
#[command(name = "portwatch", version = VERSION, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How the in-kernel walks (bucket lookups, owner counts, snapshots) run: `auto` uses
    /// bpf_loop where the kernel has it (5.17+) and bounded loops otherwise (owner counts
    /// per event capped, snapshots over several program runs; `portwatch probes` shows
    /// the limits); `bounded` uses the older kernels' driver on any kernel.
    #[arg(long, global = true, value_enum, default_value = "auto")]
    walk_driver: portwatch::backend::WalkDriverChoice,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Stream bucket state transitions (bucket created, owner added/removed, fastreuse
    /// changed, bucket destroyed, failed bind/connect) as they happen.
    Trace(cmd::trace::TraceArgs),
    /// Print the bind hash table once (the replacement for the article's dump_bhash.py).
    #[command(after_help = SNAPSHOT_NOTE)]
    Dump(cmd::dump::DumpArgs),
    /// Live table of bind buckets with recent transitions.
    #[command(after_help = TOP_NOTE)]
    Top(cmd::top::TopArgs),
    /// Replay the article's quizzes in private network namespaces with the tracer attached:
    /// the article's expectation vs. what this kernel does.
    #[command(after_help = QUIZ_NOTE)]
    Quiz(cmd::quiz::QuizArgs),
    /// Serve port pressure and bind/connect failures as Prometheus metrics (/metrics).
    #[command(after_help = EXPORT_NOTE)]
    Export(cmd::export::ExportArgs),
    /// Report which probe backends this kernel allows and why (no tracing).
    Probes(cmd::probes::ProbesArgs),
    /// Why a bind() or connect() fails: the owners of the port and the kernel's rules.
    Explain(cmd::explain::ExplainArgs),
    /// Run scripted scenarios against a backend and check the transitions (used by the
    /// VM test matrix).
    #[command(hide = true)]
    Selftest(cmd::selftest::SelftestArgs),
    /// Write the man pages and shell completions (used by `cargo xtask dist`).
    #[command(hide = true)]
    Generate(cmd::generate::GenerateArgs),
}

const SNAPSHOT_NOTE: &str =
    "The table is a racy snapshot, like the article's drgn script: the walk takes no \
kernel locks, so a bucket that changes during the walk may show either state; every walk is \
bounded, and a chain or owner list cut short is reported (counts shown as lower bounds). \
Needs CAP_BPF and CAP_PERFMON (root).";

const TOP_NOTE: &str =
    "Keys: q/Esc quit, s next sort column, r reverse, / or f filter (a port, or part of a \
netns id), p pause, j/k or arrows move, PgUp/PgDn, g/G first/last. Rows come from a racy \
lock-free snapshot, kept current by the event stream and walked again every --rescan. The header \
shows, for the selected netns, how many ports of ip_local_port_range are free, shared by \
connect() (bucket -1/-1) or blocked for connect(). Needs CAP_BPF and CAP_PERFMON (root).";

const EXPORT_NOTE: &str = "Serves /metrics (Prometheus text format, or OpenMetrics by content negotiation) and a \
help page at /, on loopback unless --listen says otherwise, until SIGINT or SIGTERM. Needs CAP_BPF and \
CAP_PERFMON (root) to start; once the programs are attached it drops every capability scraping does \
not need (it prints which it keeps and why).";

const QUIZ_NOTE: &str =
    "Each replay runs in a fresh private network namespace created by portwatch (lo up, \
ip_local_port_range 60000 60000 set inside it only, a listener on *:1234); the host's sysctls \
are never touched. Exit status: 0 when every replay ran (differences from the article are \
findings about this kernel), 1 when one could not run, 3 with --strict when one differs.";

fn main() -> ExitCode {
    let cli = Cli::parse();
    cmd::set_walk_driver(cli.walk_driver);
    let result = match cli.command {
        Command::Trace(a) => cmd::trace::run(a),
        Command::Dump(a) => cmd::dump::run(a),
        Command::Top(a) => cmd::top::run(a),
        Command::Quiz(a) => cmd::quiz::run(a),
        Command::Export(a) => cmd::export::run(a),
        Command::Probes(a) => cmd::probes::run(a),
        Command::Explain(a) => cmd::explain::run(a),
        Command::Selftest(a) => cmd::selftest::run(a),
        Command::Generate(a) => cmd::generate::run(a, Cli::command()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("portwatch: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
