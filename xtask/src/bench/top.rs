//! Part 4, top: CPU time of `portwatch top --interval 1` on many buckets, without a
//! terminal (plain tables into a pipe) and in the TUI under `script` (a pty), both with
//! the default `--rescan auto`; and without a terminal with `--rescan 1` (a walk of the
//! whole table every second), the price of a walk per interval.

use std::{
    io::{BufRead, BufReader, Read},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde::Serialize;

use super::{
    procs::{self, Churn},
    Ctx, Fig,
};

#[derive(Debug, Serialize)]
pub struct TopRow {
    /// "non-tty (plain table every interval)" or "tty (TUI under script)".
    pub mode: &'static str,
    pub result: Fig<TopFig>,
}

#[derive(Debug, Serialize)]
pub struct TopFig {
    pub buckets: u32,
    pub seconds: f64,
    pub cpu_ticks: u64,
    pub clk_tck: u64,
    /// Percent of one core over the measured window.
    pub cpu_pct_one_core: f64,
    /// The goal: under 1 % of one core.
    pub goal_under_1pct: bool,
    /// Lines top printed during the whole run (non-tty: the tables; tty: screen bytes
    /// are not counted).
    pub output_lines: u64,
}

impl TopFig {
    /// The figure of `ticks` CPU ticks (`hz` per second) over `seconds`.
    fn new(ctx: &Ctx, ticks: u64, hz: u64, seconds: f64, output_lines: u64) -> TopFig {
        let pct = ticks as f64 / hz as f64 / seconds * 100.0;
        TopFig {
            buckets: ctx.args.top_buckets,
            seconds,
            cpu_ticks: ticks,
            clk_tck: hz,
            cpu_pct_one_core: pct,
            goal_under_1pct: pct < 1.0,
            output_lines,
        }
    }
}

pub fn top(ctx: &Ctx) -> Vec<TopRow> {
    let n = ctx.args.top_buckets;
    eprintln!("bench: top: holding {n} listening sockets");
    let churn = Churn::hold(ctx.bins, 20000, n);
    let churn = match churn {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("{e:#}");
            return vec![
                TopRow {
                    mode: "non-tty",
                    result: Fig::na(&msg),
                },
                TopRow {
                    mode: "tty",
                    result: Fig::na(&msg),
                },
            ];
        }
    };
    let path = churn.ready.netns_path.clone();
    let rows = vec![
        TopRow {
            mode: "non-tty (a frame every interval, stdout a drained pipe)",
            result: Fig::from(top_plain(ctx, &path, &[])),
        },
        TopRow {
            mode: "tty (TUI in a pty under `script`)",
            result: Fig::from(top_tty(ctx, &path)),
        },
        TopRow {
            mode: "non-tty --rescan 1 (a walk every second)",
            result: Fig::from(top_plain(ctx, &path, &["--rescan", "1"])),
        },
    ];
    let _ = churn.finish();
    rows
}

pub const TOP_WARMUP: Duration = Duration::from_secs(2);

pub fn measure_cpu(
    pid: u32,
    alive: &mut dyn FnMut() -> Result<()>,
    secs: f64,
) -> Result<(u64, u64, f64)> {
    std::thread::sleep(TOP_WARMUP);
    alive()?;
    let hz = procs::clk_tck()?;
    let t0 = Instant::now();
    let c0 = procs::cpu_ticks(pid)?;
    std::thread::sleep(Duration::from_secs_f64(secs));
    let c1 = procs::cpu_ticks(pid)?;
    let el = t0.elapsed().as_secs_f64();
    alive()?;
    Ok((c1.saturating_sub(c0), hz, el))
}

pub fn top_plain(ctx: &Ctx, path: &str, extra: &[&str]) -> Result<TopFig> {
    let mut child = Command::new(&ctx.bins.portwatch)
        .args(["top", "--netns", path, "--interval", "1"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting portwatch top")?;
    let out = child.stdout.take().context("no stdout pipe")?;
    let lines = std::thread::spawn(move || {
        BufReader::new(out).lines().map_while(Result::ok).count() as u64
    });
    let mut err = child.stderr.take().context("no stderr pipe")?;
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let pid = child.id();
    let res = measure_cpu(
        pid,
        &mut || match child.try_wait() {
            Ok(Some(st)) => bail!("portwatch top exited ({st})"),
            _ => Ok(()),
        },
        ctx.args.top_seconds,
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let _ = procs::wait_or_kill(&mut child, Duration::from_secs(10), "portwatch top");
    let output_lines = lines.join().unwrap_or(0);
    let stderr = errs.join().unwrap_or_default();
    let (ticks, hz, el) = res.map_err(|e| anyhow::anyhow!("{e:#}: {}", stderr.trim()))?;
    if output_lines == 0 {
        bail!("portwatch top printed nothing: {}", stderr.trim());
    }
    Ok(TopFig::new(ctx, ticks, hz, el, output_lines))
}

/// The pid of a descendant of `root` whose executable is `exe`, if any.
pub fn find_descendant(root: u32, exe: &Path) -> Option<u32> {
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        if std::fs::read_link(format!("/proc/{p}/exe")).ok().as_deref() == Some(exe) && p != root {
            return Some(p);
        }
        let tasks = std::fs::read_dir(format!("/proc/{p}/task")).ok()?;
        for t in tasks.flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            frontier.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    None
}

pub fn top_tty(ctx: &Ctx, path: &str) -> Result<TopFig> {
    let exe =
        std::fs::canonicalize(&ctx.bins.portwatch).context("resolving the portwatch binary")?;
    let cmdline = format!("exec {} top --netns {} --interval 1", exe.display(), path);
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &cmdline, "/dev/null"])
        .env("TERM", "xterm-256color")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting `script` (util-linux) for a pty")?;
    let script_pid = child.id();
    let until = Instant::now() + Duration::from_secs(10);
    let pid = loop {
        if let Some(p) = find_descendant(script_pid, &exe) {
            break p;
        }
        if let Ok(Some(st)) = child.try_wait() {
            bail!("portwatch top under script exited at once ({st})");
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            bail!("no portwatch process appeared under script within 10 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let res = measure_cpu(
        pid,
        &mut || {
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                Ok(())
            } else {
                bail!("portwatch top (TUI) exited during the measurement")
            }
        },
        ctx.args.top_seconds,
    );
    // Our grandchild, by pid: SIGINT ends the TUI (it restores the terminal).
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    if procs::wait_or_kill(&mut child, Duration::from_secs(5), "script").is_err() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let (ticks, hz, el) = res?;
    Ok(TopFig::new(ctx, ticks, hz, el, 0))
}
