//! `portwatch quiz`: wired to the quiz engine.
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

#[derive(Debug, Args)]
pub struct QuizArgs {}

pub fn run(_a: QuizArgs) -> Result<ExitCode> {
    anyhow::bail!("quiz: not wired yet")
}
