//! `cargo xtask setup`: installs what a command needs, idempotently.
//!
//! Each prerequisite is checked first and installed only when missing; one line is
//! printed per prerequisite either way. What is installed depends on the command:
//! running portwatch needs only the build toolchain, the artefacts (`dist`) add the musl
//! target and cargo-deb, the tests add the tools they drive. Debian packages are
//! installed without their recommendations, and never at the price of removing an
//! installed package. Nothing here touches sysctls or network config.

mod apt;
mod rust;

use anyhow::Result;

/// Which command the prerequisites are for (each includes the one before).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Need {
    /// Build and run portwatch: LLVM 22, nightly rust-src, bpf-linker.
    Run,
    /// Also the release artefacts (`cargo xtask dist`): musl target, cargo-deb.
    Dist,
    /// Also everything the tests drive (`cargo xtask test`).
    Test,
}

/// Debian packages and the first `Need` that wants each: LLVM 22 for bpf-linker; for
/// the tests bpftool (program inspection), iproute2, tmux (top's TUI), strace, qemu and
/// busybox (VM kernel matrix), debootstrap (the package test's Debian root) and
/// prometheus (server and promtool, for the export tests).
pub const APT_PACKAGES: &[(&str, Need)] = &[
    ("llvm-22-dev", Need::Run),
    ("bpftool", Need::Test),
    ("iproute2", Need::Test),
    ("tmux", Need::Test),
    ("qemu-system-x86", Need::Test),
    ("busybox-static", Need::Test),
    ("strace", Need::Test),
    ("debootstrap", Need::Test),
    ("prometheus", Need::Test),
];

/// The Debian packages `need` wants.
pub fn apt_packages(need: Need) -> Vec<&'static str> {
    APT_PACKAGES
        .iter()
        .filter(|(_, n)| *n <= need)
        .map(|(p, _)| *p)
        .collect()
}

/// The bpf-linker release known to work with aya 0.14 and nightly's LLVM 22.
pub const BPF_LINKER_VERSION: &str = "0.13.0";
/// Where llvm-22-dev puts libLLVM; bpf-linker's build looks in /usr without it.
pub const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// bpf-linker must link the same LLVM major as the nightly rustc that emits the bitcode.
pub const LLVM_MAJOR: u32 = 22;
pub const NIGHTLY: &str = "nightly";
/// The target of the static release binary.
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";
/// The cargo-deb release used for the Debian package (builds with Rust 1.85 and later).
pub const CARGO_DEB_VERSION: &str = "3.8.0";

/// What a setup run did.
#[derive(Debug, Default)]
pub struct Summary {
    pub installed: Vec<String>,
    pub present: Vec<String>,
}

/// Arguments of `cargo xtask setup`.
#[derive(clap::Args, Debug)]
pub struct SetupArgs {
    /// Install only what this command needs.
    #[arg(long = "for", value_enum, default_value = "test")]
    pub need: Need,
}

/// Runs every step `need` wants; returns what was installed and what was already there.
pub fn run(need: Need) -> Result<Summary> {
    println!(
        "setup: checking prerequisites for `cargo xtask {}` (installing only what is missing)",
        match need {
            Need::Run => "run",
            Need::Dist => "dist",
            Need::Test => "test",
        }
    );
    let mut summary = Summary::default();
    apt::install(&mut summary, &apt_packages(need))?;
    rust::nightly_components(&mut summary, need)?;
    rust::bpf_linker(&mut summary)?;
    if need >= Need::Dist {
        rust::target(&mut summary, MUSL_TARGET)?;
        rust::cargo_deb(&mut summary)?;
    }
    if need >= Need::Test {
        rust::stable_component(&mut summary, "clippy")?;
    }
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

pub(super) fn present(summary: &mut Summary, what: String, detail: &str) {
    println!("  present  {what} ({detail})");
    summary.present.push(what);
}

pub(super) fn missing(what: &str, detail: &str) {
    println!("  install  {what} ({detail})");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_needs_only_the_toolchain_and_tests_need_their_tools() {
        assert_eq!(apt_packages(Need::Run), ["llvm-22-dev"]);
        assert_eq!(apt_packages(Need::Dist), ["llvm-22-dev"]);
        let test = apt_packages(Need::Test);
        for pkg in [
            "llvm-22-dev",
            "bpftool",
            "qemu-system-x86",
            "busybox-static",
            "strace",
            "tmux",
            "debootstrap",
        ] {
            assert!(test.contains(&pkg), "{pkg}");
        }
        assert!(apt::APT_INSTALL.contains(&"--no-install-recommends"));
    }
}
