//! `portwatch probes`: which backends this kernel allows and why, and which kernel
//! variants it has, without tracing.
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use portwatch::backend::{object, ProbeChoice, SessionOptions};

#[derive(Debug, Args)]
pub struct ProbesArgs {
    /// JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: ProbesArgs) -> Result<ExitCode> {
    let session = super::open_session(&SessionOptions {
        probe: Some(ProbeChoice::Auto),
        ..Default::default()
    })?;
    let r = &session.resolved;
    if a.json {
        let mut v = r.report_json();
        v["chosen"] = serde_json::to_value(session.backend)?;
        v["attempts"] = serde_json::to_value(&session.attempts)?;
        v["built_with"] = serde_json::to_value(object::built_with())?;
        v["walk"] = serde_json::to_value(&session.walk)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("kernel {}", r.kernel_release);
        println!("built with {}", object::built_with());
        for at in &session.attempts {
            match &at.refused {
                None => println!("  {:<10} ok (chosen)", at.backend.as_str()),
                Some(why) => println!("  {:<10} refused: {why}", at.backend.as_str()),
            }
        }
        println!("owners counted {}", r.owners_mode());
        println!("walks driven by {}", session.walk);
        if let Some(limits) = session.walk.limits() {
            println!("  {limits}");
        }
        println!(
            "kernel variants (BTF; [x] present here, release and commit that introduced each):"
        );
        for line in r.variant_lines() {
            println!("  {line}");
        }
        println!("kernel functions (BTF):");
        for line in r.function_lines() {
            println!("  {line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
