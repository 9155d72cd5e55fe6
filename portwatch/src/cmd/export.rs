//! `portwatch export`: attach, drop the capabilities scraping does not need, serve
//! `/metrics` until SIGINT/SIGTERM (the logic lives in `portwatch::export`).
use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context as _, Result};
use clap::Args;
use portwatch::{
    backend::{ProbeChoice, SessionOptions, LOOKUP_RING_BYTES},
    export::{
        caps::{drop_all_but, effective_summary, kept_after_attach, Host},
        collector::{Collector, CollectorConfig},
        exposition::BuildInfo,
        netns_name::NetnsNamer,
        parse_listen, serve_until_signal, DEFAULT_LISTEN,
    },
};

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Address to serve on. The default is loopback only; use e.g. 0.0.0.0:10083 to let
    /// a Prometheus server on another host scrape it.
    #[arg(long, value_name = "ADDR:PORT", default_value = DEFAULT_LISTEN, value_parser = parse_listen)]
    listen: std::net::SocketAddr,
    /// Network namespace: a PID, a path such as /proc/PID/ns/net or /run/netns/NAME, or
    /// `all` (default).
    #[arg(long, value_name = "PID|PATH|all")]
    netns: Option<String>,
    /// Shortest time between two full bind-table rescans, in seconds: scrapes closer
    /// together reuse the last one.
    #[arg(long, default_value = "5", value_parser = parse_interval)]
    interval: f64,
    /// Probe backend; `auto` tries fentry, then kprobe, then tracepoint.
    #[arg(long, value_enum, default_value = "auto")]
    probe: ProbeChoice,
    /// Create this file once the programs are attached and the address is served.
    #[arg(long, value_name = "PATH")]
    ready_file: Option<PathBuf>,
}

fn parse_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.1..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!("invalid interval `{s}`: seconds from 0.1 to 3600")),
    }
}

pub fn run(a: ExportArgs) -> Result<ExitCode> {
    let netns = super::netns_arg(a.netns.as_deref(), "all")?;
    // Bound before anything else: a port in use fails at once, before any attach.
    let listener = std::net::TcpListener::bind(a.listen)
        .with_context(|| format!("listening on {}", a.listen))?;
    let session = super::open_session(&SessionOptions {
        probe: Some(a.probe),
        netns: netns.inode().unwrap_or(0),
        // Walks run in the walker's session; this one only reads ranges through its ring.
        snapshot_ring_bytes: Some(LOOKUP_RING_BYTES),
        ..SessionOptions::default()
    })?;
    let walk_session = super::open_session(&SessionOptions::default())?;
    eprintln!("portwatch: {}", session.backend_summary());
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let build = BuildInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        backend: session
            .backend
            .map(|b| b.as_str().to_string())
            .unwrap_or_default(),
        kernel,
    };
    // While the process still may look into every /proc/PID.
    let namer = NetnsNamer::new();

    // Before any other thread exists: later threads inherit the reduced sets.
    let keep = kept_after_attach(Host::current());
    drop_all_but(&keep.iter().map(|k| k.cap).collect::<Vec<_>>())
        .context("dropping capabilities after attach")?;
    let now = effective_summary();
    eprintln!("portwatch: capabilities after attach: {now}");
    for k in keep.iter().filter(|k| {
        now.split(',')
            .any(|c| c == k.cap.to_string().to_lowercase())
    }) {
        eprintln!(
            "portwatch:   kept {}: {}",
            k.cap.to_string().to_lowercase(),
            k.why
        );
    }

    let config = CollectorConfig {
        netns: netns.inode(),
        rescan_interval: Duration::from_secs_f64(a.interval),
        build,
    };
    let (handle, collector) = Collector::new(session, walk_session, config, namer)
        .spawn()
        .context("starting the collector thread")?;
    let local = listener
        .local_addr()
        .context("reading the listen address")?;
    eprintln!("portwatch: serving http://{local}/metrics");
    super::write_ready_file(a.ready_file.as_deref())?;
    serve_until_signal(listener, handle).context("serving HTTP")?;
    // Every handle is gone with the server: the collector ends and detaches everything.
    collector
        .join()
        .map_err(|_| anyhow::anyhow!("the collector thread panicked"))?;
    eprintln!("portwatch: stopped; every program detached");
    Ok(ExitCode::SUCCESS)
}
