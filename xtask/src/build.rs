//! Cargo builds of portwatch, and where cargo puts their outputs.

use std::{path::PathBuf, sync::OnceLock};

use anyhow::{bail, Context, Result};

use crate::cmd;

/// `cargo build --release -p portwatch` plus `extra` (e.g. `--examples`); build.rs also
/// builds the eBPF object.
pub fn release(extra: &[&str]) -> Result<()> {
    let mut build = cmd::cargo();
    build
        .args(["build", "--release", "-p", "portwatch"])
        .args(extra);
    println!("xtask: {}", cmd::describe(&build));
    cmd::checked(&mut build).context(
        "building portwatch failed (run `cargo xtask setup` if bpf-linker or rust-src is missing)",
    )
}

/// The target directory from `cargo metadata` (honours CARGO_TARGET_DIR and config),
/// asked once per run.
pub fn target_dir() -> Result<PathBuf> {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    if let Some(d) = DIR.get() {
        return Ok(d.clone());
    }
    let out = cmd::output(cmd::cargo().args(["metadata", "--format-version", "1", "--no-deps"]))?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed ({}): {}",
            cmd::describe_status(out.status),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let dir = target_dir_from_metadata(&out.stdout)?;
    Ok(DIR.get_or_init(|| dir).clone())
}

pub fn target_dir_from_metadata(json: &[u8]) -> Result<PathBuf> {
    let meta: serde_json::Value =
        serde_json::from_slice(json).context("cargo metadata printed invalid JSON")?;
    meta.get("target_directory")
        .and_then(|v| v.as_str())
        .map(PathBuf::from)
        .context("cargo metadata output has no target_directory")
}

/// target/release/portwatch, checked to exist.
pub fn release_binary() -> Result<PathBuf> {
    let bin = target_dir()?.join("release").join("portwatch");
    if !bin.is_file() {
        bail!(
            "{} is missing; build it with `cargo build --release -p portwatch`",
            bin.display()
        );
    }
    Ok(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_target_dir() {
        let json = br#"{"packages":[],"target_directory":"/w/target","version":1}"#;
        assert_eq!(
            target_dir_from_metadata(json).unwrap(),
            PathBuf::from("/w/target")
        );
        assert!(target_dir_from_metadata(br#"{"version":1}"#).is_err());
        assert!(target_dir_from_metadata(b"not json").is_err());
    }
}
