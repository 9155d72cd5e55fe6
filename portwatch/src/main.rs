//! `portwatch`: the Linux kernel's TCP bind hash table, live.
mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Shows the kernel's TCP bind buckets (local port, fastreuse, fastreuseport, owners)
/// and every change to them, with eBPF.
#[derive(Debug, Parser)]
#[command(name = "portwatch", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Stream bucket state transitions (bucket created, owner added/removed, fastreuse
    /// changed, bucket destroyed, failed bind/connect) as they happen.
    Trace(cmd::trace::TraceArgs),
    /// Print the bind hash table once (the replacement for the article's dump_bhash.py).
    Dump(cmd::dump::DumpArgs),
    /// Live table of bind buckets with recent transitions.
    Top(cmd::top::TopArgs),
    /// Replay the article's quizzes in private network namespaces with the tracer attached:
    /// the article's expectation vs. what this kernel does.
    Quiz(cmd::quiz::QuizArgs),
    /// Report which probe backends this kernel allows and why (no tracing).
    Probes(cmd::probes::ProbesArgs),
    /// Run scripted scenarios against a backend and check the transitions (used by the
    /// VM test matrix).
    #[command(hide = true)]
    Selftest(cmd::selftest::SelftestArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Trace(a) => cmd::trace::run(a),
        Command::Dump(a) => cmd::dump::run(a),
        Command::Top(a) => cmd::top::run(a),
        Command::Quiz(a) => cmd::quiz::run(a),
        Command::Probes(a) => cmd::probes::run(a),
        Command::Selftest(a) => cmd::selftest::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("portwatch: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
