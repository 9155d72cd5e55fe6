//! Part 1, overhead: churn cycles/s without portwatch vs with `portwatch trace --json
//! --netns all` for every usable backend, with no port filter and with `--port 9`.

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::{
    procs::{Churn, TraceSink, Tracer},
    stats::{median, ratio, rotation, slowdown_pct, Workload},
    Ctx,
};

#[derive(Debug, Serialize)]
pub struct OverheadRow {
    pub workload: &'static str,
    pub backend: String,
    /// "none" or "--port 9".
    pub filter: &'static str,
    pub baseline_ops_s: Option<f64>,
    pub traced_ops_s: Option<f64>,
    /// traced / baseline (medians).
    pub ratio: Option<f64>,
    pub slowdown_pct: Option<f64>,
    pub within_goal_5pct: Option<bool>,
    pub baseline_rounds: Vec<f64>,
    pub traced_rounds: Vec<f64>,
    /// Drops reported by the tracer in each traced round.
    pub dropped: Vec<u64>,
    pub errors: Vec<String>,
}

/// One churn round, optionally with a tracer (`--netns all`, stdout to /dev/null).
pub fn overhead_round(
    ctx: &Ctx,
    w: Workload,
    trace: Option<(&str, bool)>,
) -> Result<(f64, Option<u64>)> {
    let tracer = match trace {
        Some((backend, port9)) => {
            let mut a: Vec<String> = ["--json", "--netns", "all", "--probe", backend]
                .iter()
                .map(|s| s.to_string())
                .collect();
            if port9 {
                a.extend(["--port".to_string(), "9".to_string()]);
            }
            Some(Tracer::start(ctx.bins, &a, TraceSink::Null, ctx.scratch)?)
        }
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
    // Variant 0: baseline; then (backend, no filter), (backend, --port 9) per backend.
    let mut variants: Vec<Option<(String, bool)>> = vec![None];
    for b in backends {
        variants.push(Some((b.clone(), false)));
        variants.push(Some((b.clone(), true)));
    }
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut drops: Vec<Vec<u64>> = vec![Vec::new(); variants.len()];
    let mut errors: Vec<Vec<String>> = vec![Vec::new(); variants.len()];
    for r in 0..ctx.args.rounds {
        for vi in rotation(r, variants.len()) {
            let v = &variants[vi];
            eprintln!(
                "bench: overhead {} round {}/{}: {}",
                w.name(),
                r + 1,
                ctx.args.rounds,
                match v {
                    None => "baseline".to_string(),
                    Some((b, p)) => format!("trace {b}{}", if *p { " --port 9" } else { "" }),
                }
            );
            match overhead_round(ctx, w, v.as_ref().map(|(b, p)| (b.as_str(), *p))) {
                Ok((rate, d)) => {
                    rates[vi].push(rate);
                    if let Some(d) = d {
                        drops[vi].push(d);
                    }
                }
                Err(e) => errors[vi].push(format!("{e:#}")),
            }
        }
    }
    let base = median(&rates[0]);
    let mut rows = Vec::new();
    for (vi, v) in variants.iter().enumerate().skip(1) {
        let Some((b, port9)) = v else { continue };
        let traced = median(&rates[vi]);
        let (ratio_v, slow) = match (base, traced) {
            (Some(b0), Some(t)) => (ratio(t, b0), slowdown_pct(b0, t)),
            _ => (None, None),
        };
        let mut errs = errors[0].clone();
        errs.extend(errors[vi].iter().cloned());
        rows.push(OverheadRow {
            workload: w.name(),
            backend: b.clone(),
            filter: if *port9 { "--port 9" } else { "none" },
            baseline_ops_s: base,
            traced_ops_s: traced,
            ratio: ratio_v,
            slowdown_pct: slow,
            within_goal_5pct: slow.map(|s| s <= 5.0),
            baseline_rounds: rates[0].clone(),
            traced_rounds: rates[vi].clone(),
            dropped: drops[vi].clone(),
            errors: errs,
        });
    }
    rows
}
