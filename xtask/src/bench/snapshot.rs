//! Part 3, snapshot: `portwatch dump --json` vs `ss -tanH` on a netns full of listening
//! sockets (wall time), and the in-kernel walk time `dump --timing` reports.

use std::{
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context as _, Result};
use serde::Serialize;

use super::{
    procs::Churn,
    stats::{self, median, ratio, rotation},
    Ctx,
};

#[derive(Debug, Serialize)]
pub struct SnapshotFig {
    pub sockets: u32,
    pub dump_ms: Vec<f64>,
    pub ss_ms: Vec<f64>,
    pub walk_ms: Vec<f64>,
    pub dump_ms_median: Option<f64>,
    pub ss_ms_median: Option<f64>,
    pub walk_ms_median: Option<f64>,
    /// dump / ss wall time (medians); below 1 means dump is faster.
    pub dump_over_ss: Option<f64>,
    pub dump_buckets_seen: Vec<usize>,
    pub ss_lines_seen: Vec<usize>,
    pub goal_under_50ms: Option<bool>,
    pub goal_faster_than_ss: Option<bool>,
    pub errors: Vec<String>,
}

pub fn timed_output(cmd: &mut Command) -> Result<(f64, std::process::Output)> {
    let t0 = Instant::now();
    let out = cmd.stdin(Stdio::null()).output().context("spawning")?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    if !out.status.success() {
        bail!(
            "exit {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((ms, out))
}

pub fn snapshot(ctx: &Ctx) -> Result<SnapshotFig> {
    let n = ctx.args.sockets;
    eprintln!("bench: snapshot: holding {n} listening sockets");
    let churn = Churn::hold(ctx.bins, 10000, n)?;
    let path = churn.ready.netns_path.clone();
    let mut fig = SnapshotFig {
        sockets: n,
        dump_ms: Vec::new(),
        ss_ms: Vec::new(),
        walk_ms: Vec::new(),
        dump_ms_median: None,
        ss_ms_median: None,
        walk_ms_median: None,
        dump_over_ss: None,
        dump_buckets_seen: Vec::new(),
        ss_lines_seen: Vec::new(),
        goal_under_50ms: None,
        goal_faster_than_ss: None,
        errors: Vec::new(),
    };
    for r in 0..ctx.args.rounds {
        for v in rotation(r, 2) {
            if v == 0 {
                let res = timed_output(
                    Command::new("nsenter")
                        .arg(format!("--net={path}"))
                        .args(["ss", "-tanH"]),
                );
                match res {
                    Ok((ms, out)) => {
                        fig.ss_ms.push(ms);
                        fig.ss_lines_seen.push(
                            out.stdout
                                .split(|&b| b == b'\n')
                                .filter(|l| !l.is_empty())
                                .count(),
                        );
                    }
                    Err(e) => fig.errors.push(format!("ss: {e:#}")),
                }
            } else {
                let res = timed_output(
                    Command::new(&ctx.bins.portwatch)
                        .args(["dump", "--netns", &path, "--json", "--timing"]),
                );
                match res {
                    Ok((ms, out)) => {
                        fig.dump_ms.push(ms);
                        if let Some(w) = stats::walk_ms(&String::from_utf8_lossy(&out.stderr)) {
                            fig.walk_ms.push(w);
                        }
                        let buckets = serde_json::from_slice::<serde_json::Value>(&out.stdout)
                            .ok()
                            .and_then(|v| v.as_array().map(Vec::len))
                            .unwrap_or(0);
                        fig.dump_buckets_seen.push(buckets);
                    }
                    Err(e) => fig.errors.push(format!("dump: {e:#}")),
                }
            }
        }
    }
    churn.finish()?;
    fig.dump_ms_median = median(&fig.dump_ms);
    fig.ss_ms_median = median(&fig.ss_ms);
    fig.walk_ms_median = median(&fig.walk_ms);
    if let (Some(d), Some(s)) = (fig.dump_ms_median, fig.ss_ms_median) {
        fig.dump_over_ss = ratio(d, s);
        fig.goal_faster_than_ss = Some(d < s);
    }
    fig.goal_under_50ms = fig.dump_ms_median.map(|d| d < 50.0);
    Ok(fig)
}
