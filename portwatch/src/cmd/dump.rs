//! `portwatch dump`: the bind hash table once, like the article's dump_bhash.py.
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Args;
use portwatch::{backend::SessionOptions, procs::ProcessTable, render, snapshot::SnapOptions};

/// The walk takes no kernel locks (like the drgn script it replaces): a bucket changing
/// during the walk may show either state; a chain cut short is reported as truncated.
#[derive(Debug, Args)]
pub struct DumpArgs {
    /// Network namespace: a PID, a path such as /proc/PID/ns/net or /run/netns/NAME, or
    /// `all`. Default: the caller's.
    #[arg(long, value_name = "PID|PATH|all")]
    netns: Option<String>,
    /// Only this port.
    #[arg(long, value_parser = super::parse_port)]
    port: Option<u16>,
    /// One JSON array instead of a table.
    #[arg(long)]
    json: bool,
    /// Also list each port's per-address buckets and their owner sockets, with the
    /// processes holding them (pid, name, fd, as `ss -p` shows them; a TIME-WAIT socket
    /// has none).
    #[arg(short, long)]
    verbose: bool,
    /// Print the in-kernel walk time on stderr (`walk_ms=...`).
    #[arg(long, hide = true)]
    timing: bool,
}

pub fn run(a: DumpArgs) -> Result<ExitCode> {
    let netns = super::netns_arg(a.netns.as_deref(), "/proc/self/ns/net")?;
    let mut session = super::open_session(&SessionOptions::default())?;
    let started = std::time::Instant::now();
    let mut snap = session
        .snapshot(&SnapOptions {
            netns: netns.inode().unwrap_or(0),
            port: a.port.unwrap_or(0),
            verbose: a.verbose,
            ..SnapOptions::default()
        })
        .context("walking the bind hash table")?;
    if a.timing {
        eprintln!("walk_ms={:.3}", started.elapsed().as_secs_f64() * 1e3);
    }
    if a.verbose {
        // Like `ss -p`: the processes holding each owner socket.
        ProcessTable::scan().fill(&mut snap);
    }
    if snap.truncated {
        eprintln!("portwatch: the walk was cut short (a bound was hit): counts are lower bounds");
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&render::json::dump(&snap, a.verbose))?);
    } else {
        print!("{}", render::table::dump(&snap, netns.inode().is_none(), a.verbose));
    }
    Ok(ExitCode::SUCCESS)
}
