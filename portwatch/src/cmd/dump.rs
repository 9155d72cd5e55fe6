//! `portwatch dump`: the bind hash table once, like the article's dump_bhash.py.
use std::{io::Write as _, os::fd::AsRawFd as _, process::ExitCode};

use anyhow::{Context as _, Result};
use clap::Args;
use portwatch::{
    backend::SessionOptions,
    netns::NetnsFilter,
    procs::ProcessTable,
    render,
    snapshot::{NetAsk, SnapOptions},
};

/// Exit status of a walk that did not cover its whole scope (a hash chain cut short or
/// unreadable, a chain that changed between two runs of a resumed walk): the table is
/// printed, but buckets may be missing from it.
pub const EXIT_INCOMPLETE: u8 = 4;

/// The snapshot ring of `dump --port` in one namespace: one hash chain's buckets fit, and
/// a bucket with more owners than fit (verbose) takes further program runs.
const PORT_RING_BYTES: u32 = 1 << 18;

/// The walk takes no kernel locks (like the drgn script it replaces): a bucket changing
/// during the walk may show either state. A walk that could not cover every chain says so
/// on stderr and exits with status 4; owner lists cut short show as `≥N`.
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
    /// Size of the snapshot ring buffer in bytes (a power of two, at least the page size):
    /// a walk that fills it goes on in further program runs; for tests of that path.
    #[arg(long, hide = true, value_parser = super::trace::parse_ring_bytes)]
    snapshot_ring_bytes: Option<u32>,
}

pub fn run(a: DumpArgs) -> Result<ExitCode> {
    let netns = super::netns_arg(a.netns.as_deref(), "/proc/self/ns/net")?;
    // One port of one namespace: the walk reads the one hash chain where the port lives,
    // found from the namespace's `struct net` (asked for by its nsfs file).
    let ns_file = match (&netns, a.port) {
        (NetnsFilter::One { path, .. }, Some(_)) => {
            Some(std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?)
        }
        _ => None,
    };
    let mut session = super::open_session(&SessionOptions {
        snapshot_ring_bytes: a
            .snapshot_ring_bytes
            .or(ns_file.as_ref().map(|_| PORT_RING_BYTES)),
        brief_walks: !a.verbose,
        ..SessionOptions::default()
    })?;
    let started = std::time::Instant::now();
    let mut snap = session
        .snapshot(&SnapOptions {
            netns: netns.inode().unwrap_or(0),
            port: a.port.unwrap_or(0),
            verbose: a.verbose,
            net: ns_file
                .as_ref()
                .map_or(NetAsk::None, |f| NetAsk::Fd(f.as_raw_fd())),
            ..SnapOptions::default()
        })
        .context("walking the bind hash table")?;
    drop(ns_file);
    if a.timing {
        eprintln!("walk_ms={:.3}", started.elapsed().as_secs_f64() * 1e3);
    }
    if a.verbose {
        // Like `ss -p`: the processes holding each owner socket.
        ProcessTable::scan().fill(&mut snap);
    }
    if snap.owners_truncated {
        eprintln!("portwatch: an owner list was cut short (a bound was hit): counts marked ≥ are lower bounds");
    }
    if a.json {
        // Rows go straight to a buffered stdout: no JSON tree or string of the whole table.
        let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
        render::json::dump(&snap, a.verbose)
            .write_lines(&mut out)
            .and_then(|()| out.flush())
            .context("writing the JSON dump to stdout")?;
    } else {
        let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
        render::table::write_dump(&mut out, &snap, netns.inode().is_none(), a.verbose)
            .and_then(|()| out.flush())
            .context("writing the dump table to stdout")?;
    }
    if !snap.complete {
        eprintln!(
            "portwatch: INCOMPLETE: the walk did not cover every hash chain (a chain cut short or \
             unreadable, or changed between two runs of the walk): buckets may be missing from \
             this table; run dump again (exit status {EXIT_INCOMPLETE})"
        );
        return Ok(ExitCode::from(EXIT_INCOMPLETE));
    }
    Ok(ExitCode::SUCCESS)
}
