//! `portwatch top`: wired to the TUI in views::top.
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

#[derive(Debug, Args)]
pub struct TopArgs {}

pub fn run(_a: TopArgs) -> Result<ExitCode> {
    anyhow::bail!("top: not wired yet")
}
