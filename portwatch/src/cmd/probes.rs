//! `portwatch probes`: which backends this kernel allows, without tracing.
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use portwatch::backend::{ProbeChoice, SessionOptions};

#[derive(Debug, Args)]
pub struct ProbesArgs {
    /// JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: ProbesArgs) -> Result<ExitCode> {
    let session = super::open_session(&SessionOptions { probe: Some(ProbeChoice::Auto), ..Default::default() })?;
    let r = &session.resolved;
    if a.json {
        let v = serde_json::json!({
            "kernel": r.kernel_release,
            "chosen": session.backend,
            "attempts": session.attempts,
            "owners_mode": r.owners_mode,
            "functions": r.functions,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("kernel {}", r.kernel_release);
        for at in &session.attempts {
            match &at.refused {
                None => println!("  {:<10} ok (chosen)", at.backend.as_str()),
                Some(why) => println!("  {:<10} refused: {why}", at.backend.as_str()),
            }
        }
        println!("owners counted {}", r.owners_mode);
        println!("kernel functions (BTF):");
        for (name, params) in &r.functions {
            match params {
                Some(p) => println!("  {name}({})", p.join(", ")),
                None => println!("  {name}: absent"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
