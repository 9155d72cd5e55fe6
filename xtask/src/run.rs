//! `cargo xtask run [-- PORTWATCH_ARGS...]`: setup, release build, then portwatch as root.

use std::{os::unix::process::CommandExt, path::PathBuf};

use anyhow::{Context, Result};

use crate::{cmd, setup};

/// Arguments used when none are given.
pub const DEFAULT_ARGS: &[&str] = &["quiz", "--all"];

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Arguments for portwatch (default: `quiz --all`, the quizzes and the state checks). Put them after `--`.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "PORTWATCH_ARGS"
    )]
    pub args: Vec<String>,
}

/// The arguments portwatch gets: the user's, or `DEFAULT_ARGS` when there are none.
pub fn effective_args(user: &[String]) -> Vec<String> {
    if user.is_empty() {
        DEFAULT_ARGS.iter().map(|s| s.to_string()).collect()
    } else {
        user.to_vec()
    }
}

/// `cargo build --release -p portwatch` (also builds the eBPF object via build.rs).
pub fn build_release() -> Result<()> {
    println!("xtask: cargo build --release -p portwatch");
    cmd::checked(cmd::cargo().args(["build", "--release", "-p", "portwatch"])).context(
        "building portwatch failed (run `cargo xtask setup` if bpf-linker or rust-src is missing)",
    )
}

/// The target directory from `cargo metadata` (honours CARGO_TARGET_DIR and config).
pub fn target_dir() -> Result<PathBuf> {
    let out = cmd::output(cmd::cargo().args(["metadata", "--format-version", "1", "--no-deps"]))?;
    if !out.status.success() {
        anyhow::bail!(
            "cargo metadata failed ({}): {}",
            cmd::describe_status(out.status),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    target_dir_from_metadata(&out.stdout)
}

pub fn target_dir_from_metadata(json: &[u8]) -> Result<PathBuf> {
    let meta: serde_json::Value =
        serde_json::from_slice(json).context("cargo metadata printed invalid JSON")?;
    meta.get("target_directory")
        .and_then(|v| v.as_str())
        .map(PathBuf::from)
        .context("cargo metadata output has no target_directory")
}

/// Never returns on success: the process becomes portwatch (or sudo running it), so
/// portwatch's exit code, signals and terminal handling are its own.
pub fn run(args: &RunArgs) -> Result<()> {
    setup::run()?;
    build_release()?;
    let bin = target_dir()?.join("release").join("portwatch");
    if !bin.is_file() {
        anyhow::bail!("the build succeeded but {} does not exist", bin.display());
    }
    let how = cmd::elevation("portwatch (it loads eBPF programs)")?;
    let mut command = cmd::as_root(&how, &bin);
    command.args(effective_args(&args.args));
    if let cmd::Elevation::Sudo(_) = how {
        println!("xtask: not root, running portwatch through sudo");
    }
    println!("xtask: {}", cmd::describe(&command));
    let err = command.exec();
    Err(err).with_context(|| format!("could not execute `{}`", cmd::describe(&command)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_args_when_none() {
        assert_eq!(effective_args(&[]), vec!["quiz".to_string(), "--all".to_string()]);
        let user = vec!["dump".to_string(), "--json".to_string()];
        assert_eq!(effective_args(&user), user);
    }

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
