//! `cargo xtask test`: setup, build, rustfmt and clippy, the release artefacts and their
//! checks, `cargo test --workspace` as root, the soak, then the VM matrix (which runs the
//! static binary).
//!
//! The integration tests in portwatch/tests/ load eBPF programs and create network
//! namespaces, so every test binary runs as root: directly when we are root, otherwise
//! through sudo (cargo's per-target `runner`). In CI (`CI=true`) not being root is an error.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::{build, cmd, dist, lint, setup};

#[derive(clap::Args, Debug)]
pub struct TestArgs {
    /// Skip the VM kernel matrix (runs only `cargo test --workspace`).
    #[arg(long)]
    pub no_vm: bool,
    /// Extra arguments for `cargo test --workspace`, after `--` (e.g. a test name filter).
    #[arg(last = true, value_name = "CARGO_TEST_ARGS")]
    pub cargo_test_args: Vec<String>,
}

/// How the test binaries get root.
#[derive(Debug, PartialEq, Eq)]
pub enum TestPrivilege {
    /// Already root: run test binaries directly.
    Root,
    /// Not root: cargo runs each test binary through this runner (`sudo -E ...`).
    Runner(String),
}

/// Decides how the tests get root. Not being root is an error in CI, and without sudo.
pub fn plan_test_privilege(
    root: bool,
    ci: bool,
    sudo: Option<&Path>,
    interactive: bool,
) -> Result<TestPrivilege> {
    if root {
        return Ok(TestPrivilege::Root);
    }
    if ci {
        bail!(
            "CI=true but not running as root: the integration tests load eBPF programs and \
             create network namespaces, so CI must run `cargo xtask test` as root"
        );
    }
    match cmd::plan_elevation("running the test binaries", false, sudo, interactive)? {
        cmd::Elevation::Direct => Ok(TestPrivilege::Root),
        cmd::Elevation::Sudo(words) => {
            if words.iter().any(|w| w.contains(char::is_whitespace)) {
                bail!(
                    "the sudo path {:?} contains whitespace; cargo cannot use it as a runner",
                    words[0]
                );
            }
            Ok(TestPrivilege::Runner(words.join(" ")))
        }
    }
}

/// The environment variable that sets cargo's runner for `triple`
/// (`CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER`).
pub fn runner_env_var(triple: &str) -> String {
    let t: String = triple
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("CARGO_TARGET_{t}_RUNNER")
}

/// The `host:` line of `rustc -vV`.
pub fn host_triple(rustc_vv: &str) -> Option<&str> {
    rustc_vv
        .lines()
        .find_map(|l| l.strip_prefix("host:"))
        .map(str::trim)
}

fn current_host_triple() -> Result<String> {
    let out = cmd::output(cmd::command("rustc").arg("-vV"))?;
    host_triple(&String::from_utf8_lossy(&out.stdout))
        .map(str::to_string)
        .context("`rustc -vV` printed no host triple")
}

/// Result of one stage, for the final summary.
#[derive(Debug)]
enum Stage {
    /// Passed; what it measured, if anything.
    Passed(String),
    Failed(String),
    Skipped(&'static str),
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stage::Passed(note) if note.is_empty() => write!(f, "passed"),
            Stage::Passed(note) => write!(f, "passed ({note})"),
            Stage::Failed(why) => write!(f, "FAILED ({why})"),
            Stage::Skipped(why) => write!(f, "skipped ({why})"),
        }
    }
}

pub fn run(args: &TestArgs) -> Result<()> {
    // Decide about root first: in CI a non-root run fails before any long build.
    let privilege = plan_test_privilege(
        cmd::is_root(),
        cmd::is_ci(),
        cmd::which("sudo").as_deref(),
        cmd::interactive(),
    )?;
    setup::run(setup::Need::Test)?;
    build::release(&[])?;
    let mut stages: Vec<(&str, Stage)> = Vec::new();
    stages.push(("rustfmt (nightly, --check)", lint_stage(lint::fmt_check())));
    stages.push(("clippy -D warnings", lint_stage(lint::clippy())));
    let (artefacts, dist) = artefact_stage();
    stages.push(("artefacts (dist + checks)", artefacts));

    let mut test = cmd::cargo();
    test.args(["test", "--workspace", "--no-fail-fast"])
        .args(&args.cargo_test_args);
    if let TestPrivilege::Runner(runner) = &privilege {
        let var = runner_env_var(&current_host_triple()?);
        println!("xtask: not root, test binaries run through `{runner}` ({var})");
        test.env(var, runner);
    }
    println!("xtask: {}", cmd::describe(&test));
    let st = cmd::status(&mut test)?;
    stages.push((
        "cargo test --workspace",
        if st.success() {
            Stage::Passed(String::new())
        } else {
            Stage::Failed(cmd::describe_status(st))
        },
    ));
    stages.push(("soak (60 s)", soak_stage()));
    let vm = if args.no_vm {
        Stage::Skipped("--no-vm")
    } else if dist.is_none() {
        Stage::Failed("no static binary: the artefacts stage failed".to_owned())
    } else {
        vm_matrix()
    };
    stages.push(("VM kernel matrix", vm));

    println!("xtask test summary:");
    let width = stages.iter().map(|(n, _)| n.len()).max().unwrap_or(0) + 1;
    for (name, stage) in &stages {
        println!("  {:<width$} {stage}", format!("{name}:"));
    }
    if stages.iter().any(|(_, s)| matches!(s, Stage::Failed(_))) {
        bail!("tests failed (see the summary above)");
    }
    Ok(())
}

/// A lint's result as a stage (its output is above the summary).
fn lint_stage(r: Result<()>) -> Stage {
    match r {
        Ok(()) => Stage::Passed(String::new()),
        Err(e) => Stage::Failed(format!("{e}")),
    }
}

/// `cargo xtask dist` (static binary, tarball, Debian package) and the checks of what it
/// wrote, including the package test in a fresh Debian root.
fn artefact_stage() -> (Stage, Option<dist::Dist>) {
    let d = match dist::build_all() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("xtask: dist failed: {e:#}");
            return (
                Stage::Failed("cargo xtask dist failed, see above".to_owned()),
                None,
            );
        }
    };
    match dist::check::all(&d) {
        Ok(m) => (
            Stage::Passed(format!(
                "binary {:.1} MiB, static, --help {:.1} ms; Debian root test {:.0} s",
                m.binary_bytes as f64 / 1048576.0,
                m.help_median.as_secs_f64() * 1e3,
                m.debroot_secs
            )),
            Some(d),
        ),
        Err(e) => {
            eprintln!("xtask: artefact checks failed: {e:#}");
            (Stage::Failed(format!("{e}")), Some(d))
        }
    }
}

/// One minute of churn across 1,000 ports with `trace` attached (`cargo xtask soak
/// --minutes 1 --check`): final states agree with a fresh dump, RSS stays bounded.
fn soak_stage() -> Stage {
    if !cmd::is_root() {
        return Stage::Skipped("needs root; run `sudo -E cargo xtask soak --check`");
    }
    let args =
        match <SoakDefaults as clap::Parser>::try_parse_from(["soak", "--minutes", "1", "--check"])
        {
            Ok(a) => a.soak,
            Err(e) => return Stage::Failed(format!("soak arguments: {e}")),
        };
    println!("xtask: soak (cargo xtask soak --minutes 1 --check)");
    match crate::soak::run(&args) {
        Ok(()) => Stage::Passed(String::new()),
        Err(e) => {
            eprintln!("xtask: soak failed: {e:#}");
            Stage::Failed("see the soak output above".to_string())
        }
    }
}

#[derive(clap::Parser, Debug)]
struct SoakDefaults {
    #[command(flatten)]
    soak: crate::soak::SoakArgs,
}

// ================================================================ VM MATRIX
/// Arguments the VM matrix gets from `cargo xtask test`: its defaults, plus `--no-build`
/// because the artefacts stage already produced the static target/dist/portwatch.
pub const VM_ARGS_FROM_TEST: &[&str] = &["vm", "--no-build"];

#[derive(clap::Parser, Debug)]
struct VmDefaults {
    #[command(flatten)]
    vm: crate::vm::VmArgs,
}

fn vm_args_from_test() -> Result<crate::vm::VmArgs> {
    let parsed = <VmDefaults as clap::Parser>::try_parse_from(VM_ARGS_FROM_TEST)
        .context("the VM matrix's default arguments do not parse")?;
    Ok(parsed.vm)
}

/// Runs `xtask/src/vm.rs`'s matrix (stock Debian kernels under qemu).
fn vm_matrix() -> Stage {
    let args = match vm_args_from_test() {
        Ok(a) => a,
        Err(e) => return Stage::Failed(format!("{e:#}")),
    };
    println!("xtask: VM kernel matrix (cargo xtask vm --no-build)");
    match crate::vm::run(&args) {
        Ok(()) => Stage::Passed(String::new()),
        Err(e) => {
            eprintln!("xtask: VM matrix failed: {e:#}");
            Stage::Failed("see the VM matrix output above".to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_var_name() {
        assert_eq!(
            runner_env_var("x86_64-unknown-linux-gnu"),
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER"
        );
        assert_eq!(
            runner_env_var("aarch64-unknown-linux-gnu"),
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER"
        );
    }

    #[test]
    fn host_triple_parse() {
        let vv = "rustc 1.95.0 (x 2026-01-01)\nbinary: rustc\nhost: x86_64-unknown-linux-gnu\nrelease: 1.95.0\n";
        assert_eq!(host_triple(vv), Some("x86_64-unknown-linux-gnu"));
        assert_eq!(host_triple("rustc 1.95.0\n"), None);
    }

    #[test]
    fn vm_defaults_parse() {
        let args = vm_args_from_test().unwrap();
        assert!(args.no_build);
    }

    #[test]
    fn privilege_plans() {
        let sudo = Path::new("/usr/bin/sudo");
        assert_eq!(
            plan_test_privilege(true, true, None, false).unwrap(),
            TestPrivilege::Root
        );
        assert_eq!(
            plan_test_privilege(false, false, Some(sudo), true).unwrap(),
            TestPrivilege::Runner("/usr/bin/sudo -E".into())
        );
        assert_eq!(
            plan_test_privilege(false, false, Some(sudo), false).unwrap(),
            TestPrivilege::Runner("/usr/bin/sudo -n -E".into())
        );
        let ci = plan_test_privilege(false, true, Some(sudo), false)
            .unwrap_err()
            .to_string();
        assert!(ci.contains("CI=true"), "{ci}");
        let nosudo = plan_test_privilege(false, false, None, true)
            .unwrap_err()
            .to_string();
        assert!(nosudo.contains("sudo is not installed"), "{nosudo}");
        assert!(plan_test_privilege(false, false, Some(Path::new("/my dir/sudo")), true).is_err());
    }
}
