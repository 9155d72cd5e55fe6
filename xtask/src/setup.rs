//! `cargo xtask setup`: installs what the build and the tests need, idempotently.
//!
//! Each prerequisite is checked first and installed only when missing; one line is
//! printed per prerequisite either way. Nothing here touches sysctls or network config.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cmd;

/// Debian packages: LLVM 22 for bpf-linker, bpftool to inspect programs, iproute2 and
/// tmux for the tests and demos, qemu + busybox for the VM kernel matrix, strace,
/// prometheus (server and promtool) for the export tests.
pub const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "bpftool",
    "iproute2",
    "tmux",
    "qemu-system-x86",
    "busybox-static",
    "strace",
    "prometheus",
];

/// The bpf-linker release known to work with aya 0.14 and nightly's LLVM 22.
pub const BPF_LINKER_VERSION: &str = "0.13.0";
/// Where llvm-22-dev puts libLLVM; bpf-linker's build looks in /usr without it.
pub const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// bpf-linker must link the same LLVM major as the nightly rustc that emits the bitcode.
pub const LLVM_MAJOR: u32 = 22;
pub const NIGHTLY: &str = "nightly";

/// What a setup run did.
#[derive(Debug, Default)]
pub struct Summary {
    pub installed: Vec<String>,
    pub present: Vec<String>,
}

/// Runs every step; returns what was installed and what was already there.
pub fn run() -> Result<Summary> {
    println!("setup: checking prerequisites (installing only what is missing)");
    let mut summary = Summary::default();
    apt_packages(&mut summary)?;
    nightly_rust_src(&mut summary)?;
    bpf_linker(&mut summary)?;
    if summary.installed.is_empty() {
        println!(
            "setup: nothing to install, all {} prerequisites already present",
            summary.present.len()
        );
    } else {
        println!(
            "setup: installed {} ({} already present)",
            summary.installed.join(", "),
            summary.present.len()
        );
    }
    Ok(summary)
}

fn present(summary: &mut Summary, what: String, detail: &str) {
    println!("  present  {what} ({detail})");
    summary.present.push(what);
}

fn missing(what: &str, detail: &str) {
    println!("  install  {what} ({detail})");
}

// ---------------------------------------------------------------- apt packages

/// True when a `dpkg-query -W -f='${Status}'` answer means "installed"
/// (`install ok installed`, `hold ok installed`); half-installed or removed-with-config
/// states count as missing so they get (re)installed.
pub fn dpkg_status_installed(status: &str) -> bool {
    let words: Vec<&str> = status.split_whitespace().collect();
    words.len() == 3 && words[1] == "ok" && words[2] == "installed"
}

fn dpkg_status(pkg: &str) -> Result<String> {
    let out = cmd::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg])).context(
        "dpkg-query is needed to check Debian packages: this setup supports Debian/Ubuntu only",
    )?;
    // Exit code 1 with "no packages found" on stderr means: not installed.
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn apt_packages(summary: &mut Summary) -> Result<()> {
    let mut to_install = Vec::new();
    for &pkg in APT_PACKAGES {
        let status = dpkg_status(pkg)?;
        if dpkg_status_installed(&status) {
            present(summary, format!("apt {pkg}"), &status);
        } else {
            let why = if status.is_empty() {
                "not installed".to_string()
            } else {
                status
            };
            missing(&format!("apt {pkg}"), &why);
            to_install.push(pkg);
        }
    }
    if to_install.is_empty() {
        return Ok(());
    }
    let how = cmd::elevation("installing Debian packages with apt-get")?;
    let via_sudo = sudo_hint(&how);
    println!("setup: apt-get update");
    cmd::checked(apt_get(&how).arg("update")).with_context(|| {
        format!("apt-get update failed: check the network and /etc/apt/sources.list{via_sudo}")
    })?;
    println!("setup: apt-get install {}", to_install.join(" "));
    cmd::checked(apt_get(&how).args(["install", "-y"]).args(&to_install)).with_context(|| {
        format!(
            "apt-get install {} failed (llvm-22-dev comes from the LLVM apt repository \
             if your Debian mirror lacks it){via_sudo}",
            to_install.join(" ")
        )
    })?;
    for pkg in to_install {
        let status = dpkg_status(pkg)?;
        if !dpkg_status_installed(&status) {
            bail!("apt-get reported success but {pkg} is still not installed (status: {status:?})");
        }
        summary.installed.push(format!("apt {pkg}"));
    }
    Ok(())
}

/// Extra advice for a failure of a command started through sudo.
fn sudo_hint(how: &cmd::Elevation) -> &'static str {
    match how {
        cmd::Elevation::Direct => "",
        cmd::Elevation::Sudo(args) if args.iter().any(|a| a == "-n") => {
            "; it ran through `sudo -n` (no terminal to ask for a password): run `sudo -v` \
             first or run as root"
        }
        cmd::Elevation::Sudo(_) => "; it ran through sudo",
    }
}

/// `apt-get` as root, never prompting (`env DEBIAN_FRONTEND=noninteractive` survives sudo's
/// environment reset).
fn apt_get(how: &cmd::Elevation) -> Command {
    let mut c = cmd::as_root(how, "env");
    c.args(["DEBIAN_FRONTEND=noninteractive", "apt-get"]);
    c
}

// ---------------------------------------------------------------- nightly + rust-src

/// True when `rustup component list --installed` output lists `component`
/// (target-independent components appear bare, others with a `-<triple>` suffix).
pub fn component_listed(list: &str, component: &str) -> bool {
    list.lines().map(str::trim).any(|line| {
        line == component
            || line
                .strip_prefix(component)
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(looks_like_triple)
    })
}

/// "x86_64-unknown-linux-gnu" yes, "std-x86_64-unknown-linux-gnu" no: at least three
/// segments, the first an architecture (they all carry a digit, bar plain "arm").
fn looks_like_triple(s: &str) -> bool {
    let first = s.split('-').next().unwrap_or("");
    s.split('-').count() >= 3 && (first == "arm" || first.chars().any(|c| c.is_ascii_digit()))
}

/// The LLVM major version from `rustc -vV` output ("LLVM version: 22.1.2").
pub fn llvm_major(rustc_vv: &str) -> Option<u32> {
    rustc_vv
        .lines()
        .find_map(|l| l.trim().strip_prefix("LLVM version:"))
        .and_then(|v| v.trim().split('.').next())
        .and_then(|major| major.parse().ok())
}

fn rustup() -> Command {
    cmd::command("rustup")
}

fn installed_components() -> Result<Option<String>> {
    let out =
        cmd::output(rustup().args(["component", "list", "--toolchain", NIGHTLY, "--installed"]))
            .context(
                "rustup is needed to manage the nightly toolchain: install it from rustup.rs",
            )?;
    if out.status.success() {
        Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()))
    } else {
        Ok(None) // the nightly toolchain itself is not installed
    }
}

fn nightly_rust_src(summary: &mut Summary) -> Result<()> {
    match installed_components()? {
        None => {
            missing("rust nightly toolchain + rust-src", "no nightly toolchain");
            cmd::checked(rustup().args([
                "toolchain",
                "install",
                NIGHTLY,
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ]))
            .context("installing the nightly toolchain with rustup failed")?;
            summary
                .installed
                .push("rust nightly toolchain + rust-src".into());
        }
        Some(list) if component_listed(&list, "rust-src") => {
            present(summary, "rust-src (nightly)".into(), "rustup component");
        }
        Some(_) => {
            missing(
                "rust-src (nightly)",
                "needed for -Z build-std=core on bpfel-unknown-none",
            );
            cmd::checked(rustup().args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))
                .context("rustup component add rust-src --toolchain nightly failed")?;
            summary.installed.push("rust-src (nightly)".into());
        }
    }
    match installed_components()? {
        Some(list) if component_listed(&list, "rust-src") => {}
        _ => bail!("rust-src is still missing from the nightly toolchain after installing it"),
    }
    // bpf-linker is built against LLVM 22; nightly must emit LLVM 22 bitcode.
    let vv = cmd::output(cmd::command("rustc").args([&format!("+{NIGHTLY}"), "-vV"]))?;
    match llvm_major(&String::from_utf8_lossy(&vv.stdout)) {
        Some(LLVM_MAJOR) => {}
        Some(other) => println!(
            "setup: warning: nightly rustc uses LLVM {other}, bpf-linker is built for LLVM \
             {LLVM_MAJOR}; if the eBPF build fails, pin a nightly with LLVM {LLVM_MAJOR}"
        ),
        None => println!("setup: warning: could not read nightly rustc's LLVM version"),
    }
    Ok(())
}

// ---------------------------------------------------------------- bpf-linker

/// The version word of `bpf-linker --version` output ("bpf-linker 0.13.0").
pub fn bpf_linker_version(output: &str) -> Option<&str> {
    output
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
}

fn bpf_linker(summary: &mut Summary) -> Result<()> {
    let what = format!("bpf-linker {BPF_LINKER_VERSION}");
    let found = match cmd::which("bpf-linker") {
        None => None,
        Some(path) => {
            let out = cmd::output(Command::new(&path).arg("--version"))?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            Some((path, bpf_linker_version(&text).map(str::to_string)))
        }
    };
    let force = match &found {
        Some((path, Some(v))) if v == BPF_LINKER_VERSION => {
            present(summary, what, &path.display().to_string());
            return Ok(());
        }
        Some((path, v)) => {
            let v = v.as_deref().unwrap_or("unknown version");
            missing(&what, &format!("{} is {v}", path.display()));
            true
        }
        None => {
            missing(
                &what,
                "not on PATH; building it with cargo install, about a minute",
            );
            false
        }
    };
    let mut install = cmd::cargo();
    install
        .env("LLVM_PREFIX", LLVM_PREFIX)
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{LLVM_MAJOR}"),
        ]);
    if force {
        install.arg("--force");
    }
    cmd::checked(&mut install).with_context(|| {
        format!("building bpf-linker failed: it needs llvm-22-dev (libLLVM in {LLVM_PREFIX})")
    })?;
    let installed = cmd::which("bpf-linker")
        .context("bpf-linker was installed but is not on PATH: add ~/.cargo/bin to PATH")?;
    let out = cmd::output(Command::new(&installed).arg("--version"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if bpf_linker_version(&text) != Some(BPF_LINKER_VERSION) {
        bail!(
            "{} reports {:?} after installing {what}: remove it or put ~/.cargo/bin first on PATH",
            installed.display(),
            text.trim()
        );
    }
    summary.installed.push(what);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_states() {
        assert!(dpkg_status_installed("install ok installed"));
        assert!(dpkg_status_installed("hold ok installed"));
        assert!(!dpkg_status_installed("deinstall ok config-files"));
        assert!(!dpkg_status_installed("install ok unpacked"));
        assert!(!dpkg_status_installed("install ok half-configured"));
        assert!(!dpkg_status_installed("unknown ok not-installed"));
        assert!(!dpkg_status_installed(""));
    }

    #[test]
    fn components() {
        let list = "cargo-x86_64-unknown-linux-gnu\nrust-src\nrust-std-x86_64-unknown-linux-gnu\n";
        assert!(component_listed(list, "rust-src"));
        assert!(component_listed(list, "rust-std"));
        assert!(component_listed(list, "cargo"));
        assert!(!component_listed(list, "rust"));
        assert!(!component_listed(list, "clippy"));
        assert!(!component_listed(
            "rust-std-x86_64-unknown-linux-gnu\n",
            "rust-src"
        ));
    }

    #[test]
    fn llvm_version_parse() {
        let vv = "rustc 1.97.0-nightly (abc 2026-01-01)\nbinary: rustc\nhost: x86_64-unknown-linux-gnu\nLLVM version: 22.1.0\n";
        assert_eq!(llvm_major(vv), Some(22));
        assert_eq!(llvm_major("rustc 1.0\n"), None);
    }

    #[test]
    fn linker_version_parse() {
        assert_eq!(bpf_linker_version("bpf-linker 0.13.0\n"), Some("0.13.0"));
        assert_eq!(bpf_linker_version("bpf-linker 0.9.13"), Some("0.9.13"));
        assert_eq!(bpf_linker_version("garbage"), None);
        assert_ne!(
            bpf_linker_version("bpf-linker 0.13.01"),
            Some(BPF_LINKER_VERSION)
        );
    }

    #[test]
    fn package_list_matches_brief() {
        for pkg in [
            "llvm-22-dev",
            "bpftool",
            "qemu-system-x86",
            "busybox-static",
            "strace",
        ] {
            assert!(APT_PACKAGES.contains(&pkg), "{pkg}");
        }
    }
}
