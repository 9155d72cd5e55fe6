//! Part 1, overhead: churn cycles/s without portwatch vs with `portwatch trace --json
//! --netns all` for every usable backend, with no port filter, with `--port 9` and, on
//! the host, with `--idle-programs` (every program attached but returning at once: what
//! the attach points alone cost, the floor of any work the programs could save).
//!
//! The rounds run here on the host; the VM matrix runs the same variants inside each
//! guest and hands what they measured to [`Samples::rows`], so both report one kind of
//! row computed one way.

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::{
    procs::{Churn, TraceSink, Tracer},
    stats::{median, ratio, rotation, slowdown_pct, Workload},
    Ctx,
};

#[derive(Clone, Debug, Serialize)]
pub struct OverheadRow {
    pub workload: &'static str,
    pub backend: String,
    /// "none", "--port 9" or "--idle-programs".
    pub filter: &'static str,
    pub baseline_ops_s: Option<f64>,
    pub traced_ops_s: Option<f64>,
    /// traced / baseline (medians).
    pub ratio: Option<f64>,
    pub slowdown_pct: Option<f64>,
    /// The goal for this variant: ratio >= 0.90 traced, >= 0.97 with a filter
    /// that matches nothing; none for `--idle-programs` (a measurement, not a mode).
    pub goal_ratio: Option<f64>,
    pub meets_goal: Option<bool>,
    pub baseline_rounds: Vec<f64>,
    pub traced_rounds: Vec<f64>,
    /// Drops reported by the tracer in each traced round.
    pub dropped: Vec<u64>,
    pub errors: Vec<String>,
}

/// A traced variant: `portwatch trace --json --netns all --probe BACKEND [--port 9]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Traced {
    pub backend: String,
    /// With `--port 9`, a filter that matches nothing the workload does.
    pub port9: bool,
    /// With `--idle-programs`: attached, doing nothing.
    pub idle: bool,
}

impl Traced {
    /// "none", "--port 9" or "--idle-programs".
    pub fn filter(&self) -> &'static str {
        if self.idle {
            "--idle-programs"
        } else if self.port9 {
            "--port 9"
        } else {
            "none"
        }
    }

    /// The least traced / untraced ratio the issue asks for, if any.
    pub fn goal_ratio(&self) -> Option<f64> {
        if self.idle {
            None
        } else if self.port9 {
            Some(0.97)
        } else {
            Some(0.90)
        }
    }

    /// The arguments of `portwatch trace` (stdout goes to /dev/null).
    pub fn trace_args(&self) -> Vec<String> {
        let mut a: Vec<String> = ["--json", "--netns", "all", "--probe", &self.backend]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if self.port9 {
            a.extend(["--port".to_string(), "9".to_string()]);
        }
        if self.idle {
            a.push("--idle-programs".to_string());
        }
        a
    }
}

/// The variants of one workload's rounds: `None` (the baseline, no tracer) first, then per
/// backend the unfiltered trace and, with `port9`, the `--port 9` one.
pub fn variants(backends: &[String], port9: bool) -> Vec<Option<Traced>> {
    let mut v = vec![None];
    for b in backends {
        for p in [false, true] {
            if p && !port9 {
                continue;
            }
            v.push(Some(Traced {
                backend: b.clone(),
                port9: p,
                idle: false,
            }));
        }
    }
    v
}

/// What the rounds of one workload measured, per variant (indices of [`variants`]).
#[derive(Clone, Debug)]
pub struct Samples {
    pub variants: Vec<Option<Traced>>,
    /// Cycles/s of each round.
    pub rates: Vec<Vec<f64>>,
    /// The tracer's drop total of each traced round.
    pub drops: Vec<Vec<u64>>,
    /// Rounds that measured nothing, and why.
    pub errors: Vec<Vec<String>>,
}

impl Samples {
    pub fn new(variants: Vec<Option<Traced>>) -> Self {
        let n = variants.len();
        Self {
            variants,
            rates: vec![Vec::new(); n],
            drops: vec![Vec::new(); n],
            errors: vec![Vec::new(); n],
        }
    }

    /// One row per traced variant: medians of the rounds, traced / baseline.
    pub fn rows(&self, w: Workload) -> Vec<OverheadRow> {
        let Some(base_rates) = self.rates.first() else {
            return Vec::new();
        };
        let base = median(base_rates);
        let mut rows = Vec::new();
        for (vi, v) in self.variants.iter().enumerate().skip(1) {
            let Some(t) = v else { continue };
            let traced = median(&self.rates[vi]);
            let (ratio_v, slow) = match (base, traced) {
                (Some(b0), Some(t)) => (ratio(t, b0), slowdown_pct(b0, t)),
                _ => (None, None),
            };
            let mut errs = self.errors[0].clone();
            errs.extend(self.errors[vi].iter().cloned());
            rows.push(OverheadRow {
                workload: w.name(),
                backend: t.backend.clone(),
                filter: t.filter(),
                baseline_ops_s: base,
                traced_ops_s: traced,
                ratio: ratio_v,
                slowdown_pct: slow,
                goal_ratio: t.goal_ratio(),
                meets_goal: t.goal_ratio().and_then(|g| ratio_v.map(|r| r >= g)),
                baseline_rounds: base_rates.clone(),
                traced_rounds: self.rates[vi].clone(),
                dropped: self.drops[vi].clone(),
                errors: errs,
            });
        }
        rows
    }
}

/// One churn round, optionally with a tracer (`--netns all`, stdout to /dev/null).
pub fn overhead_round(
    ctx: &Ctx,
    w: Workload,
    trace: Option<&Traced>,
) -> Result<(f64, Option<u64>)> {
    let tracer = match trace {
        Some(t) => Some(Tracer::start(
            ctx.bins,
            &t.trace_args(),
            TraceSink::Null,
            ctx.scratch,
        )?),
        None => None,
    };
    let mut churn = Churn::start(ctx.bins, &ctx.churn_args(&w.churn_args()))?;
    churn.go()?;
    let c = churn.result()?;
    churn.finish()?;
    let dropped = match tracer {
        Some(t) => t.stop()?.dropped,
        None => None,
    };
    let rate = c.rate().context("churn reported no elapsed time")?;
    Ok((rate, dropped))
}

pub fn overhead(ctx: &Ctx, w: Workload, backends: &[String]) -> Vec<OverheadRow> {
    let mut vs = variants(backends, true);
    vs.extend(backends.iter().map(|b| {
        Some(Traced {
            backend: b.clone(),
            port9: false,
            idle: true,
        })
    }));
    let mut s = Samples::new(vs);
    let n = s.variants.len();
    for r in 0..ctx.args.rounds {
        for vi in rotation(r, n) {
            let v = s.variants[vi].clone();
            eprintln!(
                "bench: overhead {} round {}/{}: {}",
                w.name(),
                r + 1,
                ctx.args.rounds,
                match &v {
                    None => "baseline".to_string(),
                    Some(t) => format!("trace {} ({})", t.backend, t.filter()),
                }
            );
            match overhead_round(ctx, w, v.as_ref()) {
                Ok((rate, d)) => {
                    s.rates[vi].push(rate);
                    if let Some(d) = d {
                        s.drops[vi].push(d);
                    }
                }
                Err(e) => s.errors[vi].push(format!("{e:#}")),
            }
        }
    }
    s.rows(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_and_rows() {
        let v = variants(&["kprobe".to_string(), "tracepoint".to_string()], true);
        assert_eq!(v.len(), 5);
        assert_eq!(v[0], None);
        assert_eq!(v[2].as_ref().map(Traced::filter), Some("--port 9"));
        assert_eq!(variants(&["kprobe".to_string()], false).len(), 2);
        assert_eq!(v[1].as_ref().and_then(Traced::goal_ratio), Some(0.90));
        assert_eq!(v[2].as_ref().and_then(Traced::goal_ratio), Some(0.97));
        let idle = Traced {
            backend: "tracepoint".to_string(),
            port9: false,
            idle: true,
        };
        assert_eq!(idle.filter(), "--idle-programs");
        assert_eq!(idle.goal_ratio(), None);
        assert_eq!(
            idle.trace_args().last().map(String::as_str),
            Some("--idle-programs")
        );
        assert_eq!(
            v[1].as_ref().unwrap().trace_args(),
            ["--json", "--netns", "all", "--probe", "kprobe"]
        );
        let mut s = Samples::new(v);
        s.rates[0] = vec![100.0, 120.0, 110.0];
        s.rates[1] = vec![50.0, 60.0, 55.0];
        s.drops[1] = vec![0, 3, 0];
        s.errors[3].push("tracer not ready".to_string());
        let rows = s.rows(Workload::Bind);
        assert_eq!(rows.len(), 4);
        assert_eq!(
            (rows[0].backend.as_str(), rows[0].filter),
            ("kprobe", "none")
        );
        assert_eq!(rows[0].baseline_ops_s, Some(110.0));
        assert_eq!(rows[0].traced_ops_s, Some(55.0));
        assert_eq!(rows[0].ratio, Some(0.5));
        assert_eq!(rows[0].dropped, vec![0, 3, 0]);
        assert_eq!(rows[1].traced_ops_s, None);
        assert_eq!(rows[1].ratio, None);
        assert_eq!(rows[2].errors, vec!["tracer not ready".to_string()]);
    }
}
