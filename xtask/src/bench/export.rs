//! Part 5, export: `portwatch export` on a netns holding `--export-sockets` listening
//! sockets. Scrape latency: `GET /metrics` as a client sees it (connect to last byte),
//! `--export-scrapes` scrapes 100 ms apart, the exporter at its default rescan interval
//! (so rescans run between scrapes, as under a real Prometheus). Idle cost: the
//! exporter's CPU time (utime+stime) over `--export-idle-seconds` while it is scraped
//! every 15 s.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use portwatch::export::exposition::names;
use serde::Serialize;

use super::{
    procs::{self, Churn},
    stats::percentile,
    Ctx,
};

/// Time between two scrapes of the latency phase.
const LATENCY_EVERY: Duration = Duration::from_millis(100);
/// Time between two scrapes of the idle phase (a common Prometheus scrape interval).
const IDLE_EVERY: Duration = Duration::from_secs(15);

#[derive(Debug, Serialize)]
pub struct ExportFig {
    pub sockets: u32,
    /// Buckets of the bench netns in the first scrape (`portwatch_bind_buckets`, summed):
    /// every socket is there.
    pub buckets_in_scrape: Option<f64>,
    pub scrapes: usize,
    pub scrape_every_ms: u64,
    pub scrape_ms_p50: Option<f64>,
    pub scrape_ms_p99: Option<f64>,
    pub scrape_ms_max: Option<f64>,
    pub goal_p99_under_50ms: Option<bool>,
    pub idle_seconds: f64,
    pub idle_scrape_every_s: u64,
    pub idle_cpu_ticks: u64,
    pub clk_tck: u64,
    /// Percent of one core over the idle window.
    pub idle_cpu_pct_one_core: f64,
    pub goal_idle_under_1pct: bool,
}

/// A running `portwatch export`, ended by its pid (SIGINT, then SIGKILL) on drop.
struct Exporter {
    child: Child,
    addr: SocketAddr,
}

impl Exporter {
    fn start(ctx: &Ctx, netns_path: &str) -> Result<Exporter> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free loopback port")?
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let ready = ctx
            .scratch
            .join(format!("export-ready-{}", std::process::id()));
        std::fs::create_dir_all(ctx.scratch)
            .with_context(|| format!("creating {}", ctx.scratch.display()))?;
        let _ = std::fs::remove_file(&ready);
        let mut child = Command::new(&ctx.bins.portwatch)
            .args([
                "export",
                "--listen",
                &addr.to_string(),
                "--netns",
                netns_path,
                "--ready-file",
            ])
            .arg(&ready)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting portwatch export")?;
        let until = Instant::now() + Duration::from_secs(30);
        while !ready.exists() {
            if let Ok(Some(st)) = child.try_wait() {
                bail!("portwatch export exited at start ({st})");
            }
            if Instant::now() > until {
                let _ = procs::wait_or_kill(&mut child, Duration::from_secs(1), "portwatch export");
                bail!("portwatch export not ready after 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_file(&ready);
        Ok(Exporter { child, addr })
    }

    /// One `GET /metrics`: (milliseconds from connect to the last byte, body).
    fn scrape(&self) -> Result<(f64, String)> {
        let t0 = Instant::now();
        let mut s = TcpStream::connect(self.addr)
            .with_context(|| format!("connecting to {}", self.addr))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr).as_bytes())?;
        let mut raw = Vec::with_capacity(16 * 1024);
        s.read_to_end(&mut raw).context("reading the scrape")?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            bail!("no HTTP response head in {} bytes", raw.len());
        };
        if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
            bail!("scrape answered {}", head.lines().next().unwrap_or(""));
        }
        Ok((ms, body.to_string()))
    }

    fn alive(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(Some(st)) => bail!("portwatch export exited ({st})"),
            _ => Ok(()),
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let _ = procs::wait_or_kill(&mut self.child, Duration::from_secs(10), "portwatch export");
    }
}

/// The sum of the values of every series of `family` whose labels contain `label`
/// (e.g. `netns="4026532300"`), in a Prometheus text exposition.
pub fn sum_of(exposition: &str, family: &str, label: &str) -> Option<f64> {
    let mut found = None;
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix(family) else {
            continue;
        };
        let Some(labels_end) = rest.strip_prefix('{').and_then(|r| r.find('}')) else {
            continue;
        };
        if !rest[1..=labels_end].contains(label) {
            continue;
        }
        let value: f64 = rest[labels_end + 2..]
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        *found.get_or_insert(0.0) += value;
    }
    found
}

pub fn export(ctx: &Ctx) -> Result<ExportFig> {
    let n = ctx.args.export_sockets;
    eprintln!("bench: export: holding {n} listening sockets");
    let churn = Churn::hold(ctx.bins, 10000, n)?;
    let mut exporter = Exporter::start(ctx, &churn.ready.netns_path)?;
    let (_, first) = exporter.scrape()?;
    let label = format!("netns=\"{}\"", churn.ready.netns_inode);
    let buckets_in_scrape = sum_of(&first, names::BIND_BUCKETS, &label);

    let scrapes = ctx.args.export_scrapes;
    eprintln!(
        "bench: export: {scrapes} scrapes, {} ms apart",
        LATENCY_EVERY.as_millis()
    );
    let mut ms = Vec::with_capacity(scrapes);
    for _ in 0..scrapes {
        let t0 = Instant::now();
        ms.push(exporter.scrape()?.0);
        std::thread::sleep(LATENCY_EVERY.saturating_sub(t0.elapsed()));
    }
    let p99 = percentile(&ms, 99.0);

    let idle = ctx.args.export_idle_seconds;
    eprintln!(
        "bench: export: CPU over {idle} s, scraped every {} s",
        IDLE_EVERY.as_secs()
    );
    exporter.alive()?;
    let hz = procs::clk_tck()?;
    let pid = exporter.child.id();
    let t0 = Instant::now();
    let c0 = procs::cpu_ticks(pid)?;
    let window = Duration::from_secs_f64(idle);
    let mut next = t0;
    while t0.elapsed() < window {
        if Instant::now() >= next {
            exporter.scrape()?;
            next += IDLE_EVERY;
        }
        let left = window.saturating_sub(t0.elapsed());
        std::thread::sleep(
            next.saturating_duration_since(Instant::now())
                .min(left)
                .max(Duration::from_millis(1)),
        );
    }
    let c1 = procs::cpu_ticks(pid)?;
    let el = t0.elapsed().as_secs_f64();
    exporter.alive()?;
    drop(exporter);
    let _ = churn.finish();
    let ticks = c1.saturating_sub(c0);
    let pct = ticks as f64 / hz as f64 / el * 100.0;
    Ok(ExportFig {
        sockets: n,
        buckets_in_scrape,
        scrapes,
        scrape_every_ms: LATENCY_EVERY.as_millis() as u64,
        scrape_ms_p50: percentile(&ms, 50.0),
        scrape_ms_p99: p99,
        scrape_ms_max: percentile(&ms, 100.0),
        goal_p99_under_50ms: p99.map(|p| p < 50.0),
        idle_seconds: el,
        idle_scrape_every_s: IDLE_EVERY.as_secs(),
        idle_cpu_ticks: ticks,
        clk_tck: hz,
        idle_cpu_pct_one_core: pct,
        goal_idle_under_1pct: pct < 1.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_the_series_of_one_namespace() {
        let text = "# TYPE portwatch_bind_buckets gauge\n\
                    portwatch_bind_buckets{netns=\"7\",fastreuse=\"-1\"} 2\n\
                    portwatch_bind_buckets{netns=\"7\",fastreuse=\"0\"} 50000\n\
                    portwatch_bind_buckets{netns=\"8\",fastreuse=\"0\"} 3\n\
                    portwatch_bind_buckets_other{netns=\"7\"} 9\n";
        assert_eq!(
            sum_of(text, "portwatch_bind_buckets", "netns=\"7\""),
            Some(50002.0)
        );
        assert_eq!(sum_of(text, "portwatch_bind_buckets", "netns=\"9\""), None);
    }
}
