//! `cargo xtask run [-- PORTWATCH_ARGS...]`: setup, release build, then portwatch as root.

use std::os::unix::process::CommandExt;

use anyhow::{Context, Result};

use crate::{build, cmd, setup};

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

/// Never returns on success: the process becomes portwatch (or sudo running it), so
/// portwatch's exit code, signals and terminal handling are its own.
pub fn run(args: &RunArgs) -> Result<()> {
    setup::run(setup::Need::Run)?;
    build::release(&[])?;
    let bin = build::release_binary()?;
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
        assert_eq!(
            effective_args(&[]),
            vec!["quiz".to_string(), "--all".to_string()]
        );
        let user = vec!["dump".to_string(), "--json".to_string()];
        assert_eq!(effective_args(&user), user);
    }
}
