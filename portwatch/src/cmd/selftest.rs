//! `portwatch selftest` (hidden): scripted scenarios with expected transitions, run
//! in-process; used by the VM matrix on stock kernels and by the host tests.
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use portwatch::{
    backend::{ProbeChoice, SessionOptions, LOOKUP_RING_BYTES},
    selftest,
};

#[derive(Debug, Args)]
pub struct SelftestArgs {
    /// Probe backend to test.
    #[arg(long, value_enum, default_value = "auto")]
    probe: ProbeChoice,
    /// JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: SelftestArgs) -> Result<ExitCode> {
    let mut session = super::open_session(&SessionOptions {
        probe: Some(a.probe),
        netns: u32::MAX,
        snapshot_ring_bytes: Some(LOOKUP_RING_BYTES),
        ..SessionOptions::default()
    })?;
    eprintln!("portwatch: {}", session.backend_summary());
    let report = selftest::run(&mut session);
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", portwatch::render::selftest::report(&report));
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
