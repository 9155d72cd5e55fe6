//! One module per subcommand: argument parsing and wiring; the logic lives in the library.
pub mod dump;
pub mod explain;
pub mod export;
pub mod generate;
pub mod probes;
pub mod quiz;
pub mod selftest;
pub mod top;
pub mod trace;

use std::sync::OnceLock;

use anyhow::{Context as _, Result};
use portwatch::{
    backend::{ProbeSession, SessionOptions, WalkDriverChoice},
    netns::{resolve_netns, NetnsFilter},
    privileges::require_bpf,
};

/// Parses `--port P[,P...]`: each a number 1..=65535.
pub fn parse_port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        _ => Err(format!(
            "invalid port `{s}`: expected a number from 1 to 65535"
        )),
    }
}

/// Resolves `--netns`, defaulting to `default`.
pub fn netns_arg(spec: Option<&str>, default: &str) -> Result<NetnsFilter> {
    let spec = spec.unwrap_or(default);
    resolve_netns(spec).with_context(|| format!("--netns {spec}"))
}

/// The global `--walk-driver`, for every session the command opens.
static WALK_DRIVER: OnceLock<WalkDriverChoice> = OnceLock::new();

/// Records the global `--walk-driver` (once, before any session is opened).
pub fn set_walk_driver(choice: WalkDriverChoice) {
    let _ = WALK_DRIVER.set(choice);
}

/// Checks privileges, then opens a session, printing warnings on stderr.
pub fn open_session(opts: &SessionOptions) -> Result<ProbeSession> {
    require_bpf()?;
    let opts = SessionOptions {
        walk_driver: WALK_DRIVER.get().copied().unwrap_or_default(),
        ..opts.clone()
    };
    let session = ProbeSession::open(&opts).context("starting the eBPF programs")?;
    for w in &session.warnings {
        eprintln!("portwatch: {w}");
    }
    Ok(session)
}

/// The explainer of failed bind/connect events (`trace`, `top`), with the running kernel's
/// rules; `None` (with a warning) when the kernel release cannot be read.
pub fn explainer() -> Option<portwatch::explain::live::Explainer> {
    use portwatch::explain::variant::{KernelVersion, Variant};
    match KernelVersion::running() {
        Ok(v) => Some(portwatch::explain::live::Explainer::new(
            Variant::for_version(v),
        )),
        Err(e) => {
            eprintln!("portwatch: failures will not be explained: reading the kernel release: {e}");
            None
        }
    }
}

/// Writes the ready file once everything is attached.
pub fn write_ready_file(path: Option<&std::path::Path>) -> Result<()> {
    if let Some(p) = path {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .with_context(|| format!("creating --ready-file {}", p.display()))?;
    }
    Ok(())
}
