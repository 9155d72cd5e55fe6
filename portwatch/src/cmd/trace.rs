//! `portwatch trace`: a stream of bucket state transitions.
use std::{
    io::Write as _,
    os::fd::{AsRawFd, RawFd},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context as _, Result};
use clap::Args;
use portwatch::{
    backend::{ProbeChoice, ProbeSession, SessionOptions, DRAIN_INTERVAL, EXPLAIN_RING_BYTES},
    decode,
    reducer::Reducer,
    render::{
        json,
        time::{monotonic_now_ns, Clock},
        transition::{resync_line, trace_header, trace_line},
    },
    repair::{self, StreamScope},
};
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind};

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Only these local ports (comma-separated); filtered in the kernel.
    #[arg(long, value_delimiter = ',', value_parser = super::parse_port)]
    port: Vec<u16>,
    /// Network namespace: a PID, a path such as /proc/PID/ns/net or /run/netns/NAME, or `all`.
    #[arg(long, value_name = "PID|PATH|all")]
    netns: Option<String>,
    /// One JSON object per line instead of text.
    #[arg(long)]
    json: bool,
    /// Probe backend; `auto` tries fentry, then kprobe, then tracepoint.
    #[arg(long, value_enum, default_value = "auto")]
    probe: ProbeChoice,
    /// Create this file once every program is attached (for scripts and tests).
    #[arg(long, value_name = "PATH")]
    ready_file: Option<PathBuf>,
    /// Stop after this many transitions (at least 1).
    #[arg(long, value_name = "N", value_parser = parse_count)]
    count: Option<u64>,
    /// Size of the event ring buffer in bytes (a power of two, at least the page size);
    /// for tests and benchmarks that provoke loss.
    #[arg(long, hide = true, value_parser = parse_ring_bytes)]
    ring_bytes: Option<u32>,
    /// Attach every program of the backend idle (each returns at once, nothing is
    /// traced); for benchmarks: what the attach points alone cost.
    #[arg(long, hide = true)]
    idle_programs: bool,
    /// At exit, print the bucket state the stream ends with as one JSON line
    /// (`{"kind":"state","buckets":[..]}`, rows as in `dump --json`); for tests.
    #[arg(long, hide = true, requires = "json")]
    state_at_exit: bool,
}

fn parse_count(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "invalid count `{s}`: expected a number of transitions of at least 1 (without --count, trace runs until interrupted)"
        )),
    }
}

pub(super) fn parse_ring_bytes(s: &str) -> Result<u32, String> {
    let page = 4096u32;
    match s.parse::<u32>() {
        Ok(n) if n >= page && n.is_power_of_two() => Ok(n),
        _ => Err(format!(
            "invalid ring size `{s}`: a power of two of at least {page} bytes"
        )),
    }
}

/// The ring buffer's fd, for readiness polling.
struct Fd(RawFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

pub fn run(a: TraceArgs) -> Result<ExitCode> {
    let netns = super::netns_arg(a.netns.as_deref(), "all")?;
    let opts = SessionOptions {
        probe: Some(a.probe),
        netns: netns.inode().unwrap_or(0),
        ports: a.port.clone(),
        ring_bytes: a.ring_bytes,
        snapshot_ring_bytes: Some(EXPLAIN_RING_BYTES),
        idle_programs: a.idle_programs,
        ..SessionOptions::default()
    };
    let mut session = super::open_session(&opts)?;
    eprintln!("portwatch: {}", session.backend_summary());
    eprintln!(
        "portwatch: kernel {}, owners counted {}",
        session.resolved.kernel_release,
        session.resolved.owners_mode()
    );
    let clock = Clock::new().context("reading the clocks")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let scope = StreamScope {
        netns: netns.inode(),
        ports: a.port.clone(),
    };
    match rt.block_on(stream(&mut session, &a, &clock, &scope)) {
        Ok(()) => {}
        // `portwatch trace | head`: the reader left; that ends the stream, not an error.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) => {}
        Err(e) => return Err(e),
    }
    // Dropping the session detaches every program.
    drop(session);
    Ok(ExitCode::SUCCESS)
}

/// Writes one transition line.
fn write_transition(
    out: &mut impl std::io::Write,
    t: &portwatch::model::Transition,
    json_out: bool,
    clock: &Clock,
) -> Result<()> {
    if json_out {
        writeln!(out, "{}", json::transition_line(t, clock)?)?;
    } else {
        writeln!(out, "{}", trace_line(t, clock))?;
    }
    Ok(())
}

/// Repairs what lost events hid: a resync record, then the corrections. Returns whether
/// anything was lost.
fn resync(
    session: &mut ProbeSession,
    reducer: &mut Reducer,
    scope: &StreamScope,
    out: &mut impl std::io::Write,
    json_out: bool,
    clock: &Clock,
) -> Result<bool> {
    let losses = session.losses().context("reading the loss counters")?;
    if !losses.any() {
        return Ok(false);
    }
    let ts_ns = monotonic_now_ns().context("reading the time of the re-read")?;
    let (record, corrections) = repair::resync(session, reducer, scope, &losses, ts_ns)
        .context("re-reading the buckets of lost events")?;
    if json_out {
        writeln!(out, "{}", json::resync_line(&record, clock)?)?;
    } else {
        writeln!(out, "{}", resync_line(&record, clock))?;
    }
    for t in &corrections {
        write_transition(out, t, json_out, clock)?;
    }
    out.flush()?;
    Ok(true)
}

async fn stream(
    session: &mut ProbeSession,
    a: &TraceArgs,
    clock: &Clock,
    scope: &StreamScope,
) -> Result<()> {
    let fd = session
        .events_fd()
        .context("no event ring buffer (no backend attached)")?;
    // SAFETY: the fd belongs to the session's ring buffer, which stays open (and the same
    // file description) for as long as `afd` lives: `afd` is dropped at the end of this
    // function, while `session` outlives it.
    let afd = unsafe { AsyncFd::register(Fd(fd)) }
        .map_err(|e| anyhow::anyhow!("polling the event ring buffer: {e}"))?;
    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())
        .context("installing SIGINT handler")?;
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())
        .context("installing SIGTERM handler")?;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    // The programs wake us only when the ring is filling up: drain on a timer.
    let mut drain = tokio::time::interval(DRAIN_INTERVAL);
    drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    super::write_ready_file(a.ready_file.as_deref())?;
    // Test hook (tests/reliability.rs): panic once attached, to check that a crash leaves
    // no program behind. Not a user option.
    if std::env::var_os("PORTWATCH_TEST_PANIC_AFTER_ATTACH").is_some_and(|v| v == "1") {
        panic!("PORTWATCH_TEST_PANIC_AFTER_ATTACH=1: induced panic after attaching");
    }
    let mut reducer = Reducer::new();
    let mut explainer = super::explainer();
    // Stdout is line-buffered: one write(2) per line would cost more than the tracing
    // itself at high event rates. Buffer, and flush once per batch of events.
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    if !a.json {
        writeln!(out, "{}", trace_header())?;
        out.flush()?;
    }
    let mut printed = 0u64;
    let mut dropped_seen = 0u64;
    let mut stop = false;
    while !stop {
        let mut check_losses = false;
        tokio::select! {
            // Events of syscalls that returned before the signal are already in the ring
            // buffer: drain them once more below, then stop.
            _ = sigint.recv() => stop = true,
            _ = sigterm.recv() => stop = true,
            _ = tick.tick() => check_losses = true,
            _ = drain.tick() => {}
            guard = afd.readable() => {
                let mut guard = guard.context("waiting for events")?;
                guard.clear_ready();
            }
        }
        let mut events = session
            .drain()?
            .iter()
            .map(decode::socket_event)
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(x) = explainer.as_mut() {
            x.annotate(session, &mut events);
        }
        for ev in &events {
            for t in reducer.apply(ev) {
                write_transition(&mut out, &t, a.json, clock)?;
                printed += 1;
                if a.count.is_some_and(|c| printed >= c) {
                    out.flush()?;
                    return Ok(());
                }
            }
        }
        out.flush()?;
        // After the drain, so the re-read has the last word over what the ring held.
        if check_losses || stop {
            resync(session, &mut reducer, scope, &mut out, a.json, clock)?;
            let d = session.dropped()?;
            if d > dropped_seen {
                eprintln!(
                    "portwatch: {} events dropped (ring buffer full); their buckets were re-read (see the resync record)",
                    d - dropped_seen
                );
                dropped_seen = d;
            }
        }
    }
    let d = session.dropped()?;
    if d > 0 {
        eprintln!("portwatch: {d} events dropped in total");
    }
    let skipped = session.skipped();
    if skipped > 0 {
        eprintln!("portwatch: {skipped} program runs skipped by the kernel in total (another tracing program was running on that CPU)");
    }
    if a.state_at_exit {
        writeln!(out, "{}", json::state_line(reducer.known())?)?;
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        trace: TraceArgs,
    }

    #[test]
    fn count_must_be_at_least_one() {
        let err = Cli::try_parse_from(["trace", "--count", "0"]).expect_err("0 is refused");
        let msg = err.to_string();
        assert!(
            msg.contains("invalid count `0`") && msg.contains("at least 1"),
            "{msg}"
        );
        assert!(Cli::try_parse_from(["trace", "--count", "-1"]).is_err());
        assert!(Cli::try_parse_from(["trace", "--count", "x"]).is_err());
        let ok = Cli::try_parse_from(["trace", "--count", "1"]).expect("1 is fine");
        assert_eq!(ok.trace.count, Some(1));
        assert_eq!(
            Cli::try_parse_from(["trace"])
                .expect("no count")
                .trace
                .count,
            None
        );
    }
}
