//! `portwatch top`: live table of bind buckets (views::top) fed by a session: rescans by
//! snapshot every interval, the decoded event stream in between.
use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context as _, Result};
use clap::Args;
use portwatch::{
    backend::{ProbeChoice, ProbeSession, SessionOptions},
    decode,
    explain::live::Explainer,
    model::{NetInfo, Scope, Snapshot, SocketEvent},
    netns::{current_netns_inode, netns_path_for_inode, NetnsFilter},
    snapshot::{NetAsk, SnapOptions},
    views::top::{run_top, Rescan, TopOptions, TopSource},
};

/// The table is a racy lock-free snapshot (like the article's drgn script) kept current
/// by the event stream between rescans.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// Network namespace: a PID, a path such as /proc/PID/ns/net or /run/netns/NAME, or
    /// `all` (default). The header's port-range pressure is for this netns (the caller's
    /// with `all`).
    #[arg(long, value_name = "PID|PATH|all")]
    netns: Option<String>,
    /// Only this port.
    #[arg(long, value_parser = super::parse_port)]
    port: Option<u16>,
    /// Seconds between refreshes: a new table every interval when stdout is not a
    /// terminal, and the shortest time between two walks of the whole bind table.
    #[arg(long, default_value = "1", value_parser = parse_interval)]
    interval: f64,
    /// Seconds between walks of the whole bind table, which catch what the event stream
    /// cannot see (TIME-WAIT expiry under the tracepoint backend, lost events). `auto`:
    /// every interval, spaced out so that walks take at most 0.5 % of one core (a walk of
    /// 10,000 buckets costs 10-30 ms: one every 2-6 s), and every interval again after
    /// events were lost. The status line shows the spacing and the cost of a walk.
    #[arg(long, default_value = "auto", value_name = "SECS|auto", value_parser = parse_rescan)]
    rescan: Rescan,
    /// Print the table once and exit.
    #[arg(long)]
    once: bool,
    /// When stdout is not a terminal: print every row every interval (like `top -b`).
    /// Without it the first table has every row and each later one only the rows that
    /// changed since the previous table (a bucket gone shows `-` for its values).
    #[arg(long)]
    all_rows: bool,
    /// Probe backend; `auto` tries fentry, then kprobe, then tracepoint.
    #[arg(long, value_enum, default_value = "auto")]
    probe: ProbeChoice,
    /// Create this file once every program is attached.
    #[arg(long, value_name = "PATH")]
    ready_file: Option<PathBuf>,
}

fn parse_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.05..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!("invalid interval `{s}`: seconds from 0.05 to 3600")),
    }
}

fn parse_rescan(s: &str) -> Result<Rescan, String> {
    if s == "auto" {
        return Ok(Rescan::Auto);
    }
    match s.parse::<f64>() {
        Ok(v) if (0.05..=3600.0).contains(&v) => Ok(Rescan::Every(Duration::from_secs_f64(v))),
        _ => Err(format!(
            "invalid rescan `{s}`: `auto` or seconds from 0.05 to 3600"
        )),
    }
}

struct SessionSource {
    session: ProbeSession,
    explainer: Option<Explainer>,
    snap: SnapOptions,
    header_netns: u32,
    header_path: Option<PathBuf>,
    summary: String,
}

impl TopSource for SessionSource {
    fn snapshot(&mut self) -> Result<Snapshot> {
        // The rescan re-reads every bucket in scope, those of lost events included: take
        // the record of lost buckets out of the kernel so it never fills up.
        self.session.losses().context("reading the loss counters")?;
        let snap = self
            .session
            .snapshot(&self.snap)
            .context("rescanning the bind table")?;
        Ok(snap)
    }

    fn scope(&self) -> Scope {
        Scope {
            netns: (self.snap.netns != 0).then_some(self.snap.netns),
            port: (self.snap.port != 0).then_some(self.snap.port),
        }
    }

    fn events(&mut self) -> Result<Vec<SocketEvent>> {
        let raw = self.session.drain()?;
        let mut events: Vec<SocketEvent> = raw
            .iter()
            .map(decode::socket_event)
            .collect::<Result<_, _>>()?;
        if let Some(x) = self.explainer.as_mut() {
            x.annotate(&mut self.session, &mut events);
        }
        Ok(events)
    }

    /// Read by the kernel side from the namespace's `struct net`, reached through its
    /// nsfs file (`/proc/self/ns/net` for this process's own): the namespace is never
    /// entered.
    fn port_range(&mut self, netns: u32) -> Result<NetInfo> {
        let path = match &self.header_path {
            Some(p) if netns == self.header_netns => p.clone(),
            _ => netns_path_for_inode(netns)?,
        };
        let ns =
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let read = self
            .session
            .net_info(
                NetAsk::Fd(std::os::fd::AsRawFd::as_raw_fd(&ns)),
                Some(netns),
            )
            .with_context(|| format!("reading the ephemeral port range of netns {netns}"))?;
        read.with_context(|| {
            format!(
                "netns {netns} is gone (its nsfs file {} names another)",
                path.display()
            )
        })
    }

    fn header_netns(&self) -> u32 {
        self.header_netns
    }

    fn backend_summary(&self) -> String {
        self.summary.clone()
    }

    fn dropped_events(&self) -> u64 {
        self.session.dropped().unwrap_or(0)
    }
}

pub fn run(a: TopArgs) -> Result<ExitCode> {
    let netns = super::netns_arg(a.netns.as_deref(), "all")?;
    let (filter, header_netns, header_path, label) = match &netns {
        NetnsFilter::All => {
            let me = current_netns_inode().context("reading this process's netns")?;
            (
                0,
                me,
                Some(PathBuf::from("/proc/self/ns/net")),
                "all".to_string(),
            )
        }
        NetnsFilter::One { inode, path } => (
            *inode,
            *inode,
            Some(path.clone()),
            format!("{inode} ({})", path.display()),
        ),
    };
    let session = super::open_session(&SessionOptions {
        probe: Some(a.probe),
        netns: filter,
        ports: a.port.into_iter().collect(),
        ..SessionOptions::default()
    })?;
    let summary = session.backend_short();
    if a.once || !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        eprintln!("portwatch: {}", session.backend_summary());
    }
    let mut src = SessionSource {
        session,
        explainer: super::explainer(),
        snap: SnapOptions {
            netns: filter,
            port: a.port.unwrap_or(0),
            ..SnapOptions::default()
        },
        header_netns,
        header_path,
        summary,
    };
    super::write_ready_file(a.ready_file.as_deref())?;
    let opts = TopOptions {
        interval: Duration::from_secs_f64(a.interval),
        rescan: a.rescan,
        all_rows: a.all_rows,
        once: a.once,
        netns_label: label,
        port: a.port,
        show_netns: matches!(netns, NetnsFilter::All),
    };
    run_top(&mut src, &opts)?;
    Ok(ExitCode::SUCCESS)
}
