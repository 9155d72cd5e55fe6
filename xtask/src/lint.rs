//! `cargo xtask lint`: rustfmt and clippy, the first stages of `cargo xtask test` (CI).
//!
//! rustfmt runs from the nightly toolchain: the repository's rustfmt.toml groups and
//! merges imports (`group_imports`, `imports_granularity`), options only nightly rustfmt
//! honours (stable rustfmt warns and ignores them, so the check would pass on code the
//! configured style rejects). `cargo xtask setup` installs nightly's rustfmt. clippy
//! runs on the default members (portwatch, portwatch-common, xtask) with every target
//! and `-D warnings`; the eBPF crate builds for the BPF target only and is left out.

use anyhow::{bail, Result};

use crate::{cmd, setup};

/// `cargo +nightly fmt --all -- --check`.
pub fn fmt_check() -> Result<()> {
    // `cargo +toolchain` is understood by rustup's cargo proxy (found on PATH), not by
    // the toolchain's cargo binary that runs xtask ($CARGO).
    let mut c = cmd::command("cargo");
    c.arg(format!("+{}", setup::NIGHTLY))
        .args(["fmt", "--all", "--", "--check"])
        .current_dir(cmd::workspace_root());
    println!("xtask: {}", cmd::describe(&c));
    let st = cmd::status(&mut c)?;
    if !st.success() {
        bail!(
            "rustfmt found unformatted files ({}): run `cargo +nightly fmt --all`",
            cmd::describe_status(st)
        );
    }
    Ok(())
}

/// `cargo clippy --all-targets -- -D warnings` on the default members.
pub fn clippy() -> Result<()> {
    let mut c = cmd::cargo();
    c.args(["clippy", "--all-targets", "--", "-D", "warnings"]);
    println!("xtask: {}", cmd::describe(&c));
    let st = cmd::status(&mut c)?;
    if !st.success() {
        bail!("clippy reported warnings ({})", cmd::describe_status(st));
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct LintArgs {}

pub fn run(_: &LintArgs) -> Result<()> {
    let fmt = fmt_check();
    let clippy = clippy();
    match (fmt, clippy) {
        (Ok(()), Ok(())) => Ok(()),
        (f, c) => bail!(
            "lint failed:{}{}",
            f.err().map(|e| format!("\n  fmt: {e}")).unwrap_or_default(),
            c.err()
                .map(|e| format!("\n  clippy: {e}"))
                .unwrap_or_default()
        ),
    }
}
