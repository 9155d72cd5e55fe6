//! Rust prerequisites: nightly components, targets and components of the active
//! toolchain (rustup), and tools built with `cargo install` at pinned versions.

use std::process::Command;

use anyhow::{bail, Context, Result};

use super::{
    missing, present, Need, Summary, BPF_LINKER_VERSION, CARGO_DEB_VERSION, LLVM_MAJOR,
    LLVM_PREFIX, NIGHTLY,
};
use crate::cmd;

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

/// Nightly components: rust-src (the eBPF build's `-Z build-std=core`) and, for the
/// tests, rustfmt (the repository's rustfmt.toml uses options only nightly rustfmt knows).
pub fn nightly_components(summary: &mut Summary, need: Need) -> Result<()> {
    let mut wanted = vec![(
        "rust-src",
        "needed for -Z build-std=core on bpfel-unknown-none",
    )];
    if need >= Need::Test {
        wanted.push((
            "rustfmt",
            "the fmt stage: rustfmt.toml uses nightly-only options",
        ));
    }
    if installed_components()?.is_none() {
        missing("rust nightly toolchain", "no nightly toolchain");
        cmd::checked(rustup().args(["toolchain", "install", NIGHTLY, "--profile", "minimal"]))
            .context("installing the nightly toolchain with rustup failed")?;
        summary.installed.push("rust nightly toolchain".into());
    }
    for (component, why) in wanted {
        let what = format!("{component} (nightly)");
        match installed_components()? {
            Some(list) if component_listed(&list, component) => {
                present(summary, what, "rustup component");
                continue;
            }
            _ => missing(&what, why),
        }
        cmd::checked(rustup().args(["component", "add", component, "--toolchain", NIGHTLY]))
            .with_context(|| {
                format!("rustup component add {component} --toolchain nightly failed")
            })?;
        match installed_components()? {
            Some(list) if component_listed(&list, component) => summary.installed.push(what),
            _ => {
                bail!("{component} is still missing from the nightly toolchain after installing it")
            }
        }
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

/// The version word of `TOOL --version` output ("bpf-linker 0.13.0", "cargo-deb 3.8.0").
pub fn tool_version_word(output: &str) -> Option<&str> {
    output
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
}

/// A tool installed with `cargo install`, checked with `BIN --version`.
struct CargoTool {
    /// Executable name (and crate name).
    bin: &'static str,
    version: &'static str,
    /// Extra `cargo install` arguments.
    args: Vec<String>,
    /// Extra environment for the build.
    env: Vec<(&'static str, &'static str)>,
    /// Why a failed build failed, most likely.
    hint: String,
}

pub fn bpf_linker(summary: &mut Summary) -> Result<()> {
    cargo_tool(
        summary,
        &CargoTool {
            bin: "bpf-linker",
            version: BPF_LINKER_VERSION,
            args: vec![
                "--no-default-features".into(),
                "--features".into(),
                format!("llvm-{LLVM_MAJOR}"),
            ],
            env: vec![("LLVM_PREFIX", LLVM_PREFIX)],
            hint: format!("it needs llvm-22-dev (libLLVM in {LLVM_PREFIX})"),
        },
    )
}

pub fn cargo_deb(summary: &mut Summary) -> Result<()> {
    cargo_tool(
        summary,
        &CargoTool {
            bin: "cargo-deb",
            version: CARGO_DEB_VERSION,
            // The versions of its dependencies it was released with (they build with Rust 1.95).
            args: vec!["--locked".into()],
            env: vec![],
            hint: "see the cargo output above".into(),
        },
    )
}

fn tool_version(path: &std::path::Path) -> Result<Option<String>> {
    let out = cmd::output(Command::new(path).arg("--version"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    Ok(tool_version_word(&text).map(str::to_string))
}

fn cargo_tool(summary: &mut Summary, tool: &CargoTool) -> Result<()> {
    let what = format!("{} {}", tool.bin, tool.version);
    let found = match cmd::which(tool.bin) {
        None => None,
        Some(path) => {
            let v = tool_version(&path)?;
            Some((path, v))
        }
    };
    let force = match &found {
        Some((path, Some(v))) if v == tool.version => {
            present(summary, what, &path.display().to_string());
            return Ok(());
        }
        Some((path, v)) => {
            let v = v.as_deref().unwrap_or("unknown version");
            missing(&what, &format!("{} is {v}", path.display()));
            true
        }
        None => {
            missing(&what, "not on PATH; building it with cargo install");
            false
        }
    };
    let mut install = cmd::cargo();
    install
        .envs(tool.env.iter().copied())
        .args(["install", tool.bin, "--version", tool.version])
        .args(&tool.args);
    if force {
        install.arg("--force");
    }
    cmd::checked(&mut install)
        .with_context(|| format!("building {} failed: {}", tool.bin, tool.hint))?;
    let installed = cmd::which(tool.bin).with_context(|| {
        format!(
            "{} was installed but is not on PATH: add ~/.cargo/bin to PATH",
            tool.bin
        )
    })?;
    let v = tool_version(&installed)?;
    if v.as_deref() != Some(tool.version) {
        bail!(
            "{} reports version {v:?} after installing {what}: remove it or put ~/.cargo/bin \
             first on PATH",
            installed.display()
        );
    }
    summary.installed.push(what);
    Ok(())
}

/// A target of the active (stable) toolchain, e.g. the musl target of the static binary.
pub fn target(summary: &mut Summary, target: &str) -> Result<()> {
    let what = format!("rust target {target}");
    let out = cmd::output(rustup().args(["target", "list", "--installed"]))
        .context("rustup is needed to add the musl target: install it from rustup.rs")?;
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == target)
    {
        present(summary, what, "rustup target");
        return Ok(());
    }
    missing(&what, "the static release binary is built for it");
    cmd::checked(rustup().args(["target", "add", target]))
        .with_context(|| format!("rustup target add {target} failed"))?;
    summary.installed.push(what);
    Ok(())
}

/// A component of the active (stable) toolchain, e.g. clippy for the lint stage.
pub fn stable_component(summary: &mut Summary, component: &str) -> Result<()> {
    let what = format!("{component} (stable)");
    let out = cmd::output(rustup().args(["component", "list", "--installed"]))
        .context("rustup is needed to add components: install it from rustup.rs")?;
    if component_listed(&String::from_utf8_lossy(&out.stdout), component) {
        present(summary, what, "rustup component");
        return Ok(());
    }
    missing(&what, "a stage of cargo xtask test");
    cmd::checked(rustup().args(["component", "add", component]))
        .with_context(|| format!("rustup component add {component} failed"))?;
    summary.installed.push(what);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(tool_version_word("bpf-linker 0.13.0\n"), Some("0.13.0"));
        assert_eq!(tool_version_word("bpf-linker 0.9.13"), Some("0.9.13"));
        assert_eq!(tool_version_word("garbage"), None);
        assert_ne!(
            tool_version_word("bpf-linker 0.13.01"),
            Some(BPF_LINKER_VERSION)
        );
    }
}
