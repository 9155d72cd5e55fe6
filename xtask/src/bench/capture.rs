//! Part 2, capture: transitions traced vs what the workload's counters imply, and drop
//! accounting with small rings (delivered + dropped must equal the events produced).

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use super::{
    procs::{Churn, TraceSink, Tracer},
    stats::{median, Counters, Workload},
    Ctx, Fig,
};

#[derive(Debug, Serialize)]
pub struct CaptureRound {
    pub counters: Counters,
    pub ops_s: Option<f64>,
    pub expected_events: u64,
    pub expected_transitions: u64,
    pub observed_transitions: u64,
    pub dropped: Option<u64>,
    /// expected - observed transitions, by op/kind (negative: more observed).
    pub diff_by_op_kind: std::collections::BTreeMap<String, i64>,
    pub unparsed_lines: u64,
}

#[derive(Debug, Serialize)]
pub struct CaptureRow {
    pub workload: &'static str,
    pub backend: String,
    pub rounds: Vec<CaptureRound>,
    pub ops_s_median: Option<f64>,
    pub dropped_total: u64,
    pub expected_transitions_total: u64,
    pub observed_transitions_total: u64,
    pub zero_lost: Option<bool>,
    pub errors: Vec<String>,
}

pub fn capture_round(ctx: &Ctx, w: Workload, backend: &str) -> Result<CaptureRound> {
    let mut churn = Churn::start(ctx.bins, &ctx.churn_args(&w.churn_args()))?;
    let a: Vec<String> = [
        "--json",
        "--netns",
        &churn.ready.netns_path,
        "--probe",
        backend,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let tracer = Tracer::start(ctx.bins, &a, TraceSink::Count, ctx.scratch)?;
    churn.go()?;
    let c = churn.result()?;
    // Let the tracer drain what is still in the ring buffer (it also drains at SIGINT).
    std::thread::sleep(Duration::from_millis(500));
    let t = tracer.stop()?;
    churn.finish()?;
    let expected = w.expected_transitions(&c);
    let mut diff = std::collections::BTreeMap::new();
    for (k, &e) in &expected {
        let o = t.counts.by_op_kind.get(k).copied().unwrap_or(0);
        diff.insert(k.clone(), e as i64 - o as i64);
    }
    for (k, &o) in &t.counts.by_op_kind {
        if !expected.contains_key(k) {
            diff.insert(k.clone(), -(o as i64));
        }
    }
    Ok(CaptureRound {
        ops_s: c.rate(),
        expected_events: w.expected_events(&c),
        expected_transitions: expected.values().sum(),
        observed_transitions: t.counts.transitions(),
        dropped: t.dropped,
        diff_by_op_kind: diff,
        unparsed_lines: t.counts.unparsed,
        counters: c,
    })
}

pub fn capture(ctx: &Ctx, w: Workload, backend: &str) -> CaptureRow {
    let mut rounds = Vec::new();
    let mut errors = Vec::new();
    for r in 0..ctx.args.capture_rounds {
        eprintln!(
            "bench: capture {} ({backend}) round {}/{}",
            w.name(),
            r + 1,
            ctx.args.capture_rounds
        );
        match capture_round(ctx, w, backend) {
            Ok(x) => rounds.push(x),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    let rates: Vec<f64> = rounds.iter().filter_map(|x| x.ops_s).collect();
    let dropped_total = rounds.iter().filter_map(|x| x.dropped).sum();
    let exp: u64 = rounds.iter().map(|x| x.expected_transitions).sum();
    let obs: u64 = rounds.iter().map(|x| x.observed_transitions).sum();
    CaptureRow {
        workload: w.name(),
        backend: backend.to_string(),
        ops_s_median: median(&rates),
        dropped_total,
        expected_transitions_total: exp,
        observed_transitions_total: obs,
        zero_lost: (!rounds.is_empty()).then_some(dropped_total == 0 && exp == obs),
        rounds,
        errors,
    }
}

#[derive(Debug, Serialize)]
pub struct RingLossRow {
    pub backend: String,
    /// None: the default ring (the control).
    pub ring_bytes: Option<u32>,
    pub result: Fig<RingLoss>,
}

#[derive(Debug, Serialize)]
pub struct RingLoss {
    pub ports: u64,
    /// Events the programs produced: one per bind and one per close (each port once).
    pub produced: u64,
    /// Delivered events: the transitions printed (exactly one per event in this workload).
    pub delivered: u64,
    pub dropped: u64,
    /// delivered + dropped == produced.
    pub exact: bool,
    pub by_op_kind: std::collections::BTreeMap<String, u64>,
}

/// Ports 1024..65023 bound once each (then closed) by `--workers` threads at full speed.
pub const LOSS_BASE: u16 = 1024;
pub const LOSS_PORTS: u32 = 64_000;

pub fn ring_loss(ctx: &Ctx, backend: &str, ring: Option<u32>) -> RingLossRow {
    eprintln!(
        "bench: ring loss ({backend}), ring {}",
        ring.map_or("default".to_string(), |r| format!("{r} bytes"))
    );
    let res = (|| -> Result<RingLoss> {
        let churn_args = ctx.churn_args(&[
            "--mode",
            "ports",
            "--base",
            &LOSS_BASE.to_string(),
            "--count",
            &LOSS_PORTS.to_string(),
        ]);
        let mut churn = Churn::start(ctx.bins, &churn_args)?;
        let mut a: Vec<String> = [
            "--json",
            "--netns",
            &churn.ready.netns_path,
            "--probe",
            backend,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(r) = ring {
            a.extend(["--ring-bytes".to_string(), r.to_string()]);
        }
        let tracer = Tracer::start(ctx.bins, &a, TraceSink::Count, ctx.scratch)?;
        churn.go()?;
        let c = churn.result()?;
        std::thread::sleep(Duration::from_millis(500));
        let t = tracer.stop()?;
        churn.finish()?;
        let produced = Workload::Bind.expected_events(&c);
        let delivered = t.counts.event_transitions();
        let dropped = t.dropped.unwrap_or(0);
        Ok(RingLoss {
            ports: c.binds_ok,
            produced,
            delivered,
            dropped,
            exact: delivered + dropped == produced,
            by_op_kind: t.counts.by_op_kind,
        })
    })();
    RingLossRow {
        backend: backend.to_string(),
        ring_bytes: ring,
        result: Fig::from(res),
    }
}
