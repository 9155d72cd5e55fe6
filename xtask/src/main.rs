//! Project automation (alias `cargo xtask` in .cargo/config.toml).
//!
//! - `setup [--for run|dist|test]`: install what that command needs and is missing.
//! - `run [-- ARGS]`: setup, release build, run portwatch as root (default args: `quiz --all`).
//! - `dist`: the static binary, the tarball and the Debian package in target/dist/.
//! - `test [-- CARGO_TEST_ARGS]`: setup, build, artefacts and their checks, `cargo test
//!   --workspace` as root, soak, VM matrix.
//! - `vm`, `bench`, `soak`, `lint`: the VM kernel matrix, benchmarks, the soak, rustfmt
//!   and clippy.

mod apt;
mod bench;
mod build;
mod cmd;
mod dist;
mod lint;
mod run;
mod setup;
mod soak;
mod table;
mod test;
mod vm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "cargo xtask",
    about = "Build, run and test portwatch; installs missing prerequisites first",
    bin_name = "cargo xtask"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Install what a command needs (only what is missing): apt packages without
    /// recommendations, nightly rust-src and rustfmt, bpf-linker 0.13.0 for LLVM 22, the
    /// musl target, cargo-deb, clippy. `--for run|dist|test` (default test: everything).
    Setup(setup::SetupArgs),
    /// Setup, `cargo build --release -p portwatch`, then run it as root
    /// (through `sudo -E` when not root). Default arguments: `quiz --all`.
    Run(run::RunArgs),
    /// Setup, build, rustfmt and clippy, the artefacts (dist) and their checks, `cargo test
    /// --workspace` (test binaries as root), the soak, then the VM matrix.
    Test(test::TestArgs),
    /// Boot stock Debian kernels under qemu and run portwatch in each (the VM matrix).
    Vm(vm::VmArgs),
    /// Setup for dist, then the release artefacts in target/dist/: a static musl binary,
    /// portwatch-VERSION-x86_64-linux-musl.tar.gz and a Debian package.
    Dist(dist::DistArgs),
    /// rustfmt (nightly, for rustfmt.toml's options) and clippy `-D warnings` (also stages
    /// of `cargo xtask test`).
    Lint(lint::LintArgs),
    /// Benchmarks (root): tracing overhead, capture and drop accounting, dump vs ss,
    /// top CPU; prints a table and writes JSON.
    Bench(bench::BenchArgs),
    /// Soak (root): trace attached to a long churn; RSS, drops, dump vs trace final states.
    Soak(soak::SoakArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Cmd::Setup(args) => setup::run(args.need).map(|_| ()),
        Cmd::Run(args) => run::run(args),
        Cmd::Test(args) => test::run(args),
        Cmd::Vm(args) => vm::run(args),
        Cmd::Dist(args) => dist::run(args),
        Cmd::Lint(args) => lint::run(args),
        Cmd::Bench(args) => bench::run(args),
        Cmd::Soak(args) => soak::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // The cause chain, without anyhow's backtrace (noise for a task runner).
            eprintln!("xtask: error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_args_after_double_dash() {
        let cli = Cli::try_parse_from(["xtask", "run", "--", "dump", "--json"]).unwrap();
        match cli.command {
            Cmd::Run(a) => assert_eq!(a.args, vec!["dump", "--json"]),
            other => panic!("parsed as {other:?}"),
        }
        let cli = Cli::try_parse_from(["xtask", "run"]).unwrap();
        match cli.command {
            Cmd::Run(a) => assert!(a.args.is_empty()),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn test_args() {
        let cli = Cli::try_parse_from(["xtask", "test", "--no-vm", "--", "model"]).unwrap();
        match cli.command {
            Cmd::Test(a) => {
                assert!(a.no_vm);
                assert_eq!(a.cargo_test_args, vec!["model"]);
            }
            other => panic!("parsed as {other:?}"),
        }
    }
}
