//! The benchmark report as text (the JSON file is the `Report` serialised).

use std::fmt::Write as _;

use super::{capture::LOSS_PORTS, Fig, Report};
use crate::table;

/// `v` with `prec` decimals, or "n/a".
fn f(v: Option<f64>, prec: usize) -> String {
    v.map_or("n/a".to_string(), |x| format!("{x:.prec$}"))
}

/// "N failed" when some rounds failed (the "rounds" column), else blank.
fn failed_rounds(errors: &[String]) -> String {
    if errors.is_empty() {
        String::new()
    } else {
        format!("{} failed", errors.len())
    }
}

pub fn render(r: &Report) -> String {
    let mut s = String::new();
    // Writing into a String cannot fail.
    let _ = writeln!(
        s,
        "machine: {} CPUs, kernel {}, {}",
        r.machine.nproc, r.machine.kernel, r.machine.cpu_model
    );
    match &r.backends {
        Fig::Ok(b) => {
            let _ = writeln!(s, "backends measured: {}", b.usable.join(", "));
            for (name, why) in &b.refused {
                let _ = writeln!(s, "  refused {name}: {why}");
            }
        }
        Fig::NotAvailable { not_available } => {
            let _ = writeln!(s, "backends: not available ({not_available})");
        }
    }
    let _ = writeln!(
        s,
        "rounds {} x {} s, {} worker threads; medians; variants interleaved in rotation",
        r.config.rounds, r.config.seconds, r.config.workers
    );
    if !r.overhead.is_empty() {
        let _ = writeln!(
            s,
            "\n1. overhead (cycles/s, trace --json --netns all > /dev/null; goals: ratio >= 0.90 traced, >= 0.97 with --port 9; --idle-programs: the attach points alone)"
        );
        let mut t = table::new(
            &[
                "workload",
                "backend",
                "filter",
                "baseline/s",
                "traced/s",
                "ratio",
                "slowdown %",
                "goal",
                "dropped",
                "rounds",
            ],
            &[3, 4, 5, 6, 8],
        );
        for o in &r.overhead {
            t.add_row(vec![
                o.workload.to_string(),
                o.backend.clone(),
                o.filter.to_string(),
                f(o.baseline_ops_s, 0),
                f(o.traced_ops_s, 0),
                f(o.ratio, 3),
                f(o.slowdown_pct, 1),
                match (o.goal_ratio, o.meets_goal) {
                    (Some(g), Some(m)) => {
                        format!(">= {g:.2}: {}", if m { "met" } else { "not met" })
                    }
                    _ => "-".to_string(),
                },
                o.dropped.iter().sum::<u64>().to_string(),
                failed_rounds(&o.errors),
            ]);
        }
        s.push_str(&table::render(&t));
    }
    if !r.capture.is_empty() {
        let _ = writeln!(
            s,
            "\n2. capture (trace --json --netns <bench netns>; goal: zero lost)"
        );
        let mut t = table::new(
            &[
                "workload",
                "backend",
                "ops/s",
                "expected",
                "observed",
                "dropped",
                "zero lost",
                "rounds",
            ],
            &[2, 3, 4, 5],
        );
        for c in &r.capture {
            t.add_row(vec![
                c.workload.to_string(),
                c.backend.clone(),
                f(c.ops_s_median, 0),
                c.expected_transitions_total.to_string(),
                c.observed_transitions_total.to_string(),
                c.dropped_total.to_string(),
                c.zero_lost
                    .map_or("n/a", |z| if z { "yes" } else { "NO" })
                    .to_string(),
                failed_rounds(&c.errors),
            ]);
        }
        s.push_str(&table::render(&t));
        let _ = writeln!(
            s,
            "   (expected/observed: transitions summed over the rounds; per-op detail in the JSON)"
        );
    }
    if !r.ring_loss.is_empty() {
        let _ = writeln!(
            s,
            "\n2b. drop accounting ({LOSS_PORTS} ports bound once and closed: 1 event = 1 transition)"
        );
        let mut t = table::new(
            &[
                "backend",
                "ring",
                "produced",
                "delivered",
                "dropped",
                "exact",
            ],
            &[1, 2, 3, 4],
        );
        for l in &r.ring_loss {
            let ring = l
                .ring_bytes
                .map_or("default".to_string(), |b| b.to_string());
            match &l.result {
                Fig::Ok(x) => t.add_row(vec![
                    l.backend.clone(),
                    ring,
                    x.produced.to_string(),
                    x.delivered.to_string(),
                    x.dropped.to_string(),
                    if x.exact { "yes" } else { "NO" }.to_string(),
                ]),
                Fig::NotAvailable { not_available } => t.add_row(vec![
                    l.backend.clone(),
                    ring,
                    format!("not available: {not_available}"),
                ]),
            };
        }
        s.push_str(&table::render(&t));
    }
    if let Some(sn) = &r.snapshot {
        s.push('\n');
        match sn {
            Fig::Ok(x) => {
                let _ = writeln!(s, "3. snapshot of {} listening sockets (wall ms, median; goal: dump < 50 ms and faster than ss)", x.sockets);
                let _ = writeln!(
                    s,
                    "   dump --json {} ms (in-kernel walk {} ms), ss -tanH {} ms, dump/ss {}; dump buckets {:?}, ss lines {:?}",
                    f(x.dump_ms_median, 1),
                    f(x.walk_ms_median, 1),
                    f(x.ss_ms_median, 1),
                    f(x.dump_over_ss, 2),
                    x.dump_buckets_seen.first(),
                    x.ss_lines_seen.first()
                );
                for e in &x.errors {
                    let _ = writeln!(s, "   error: {e}");
                }
            }
            Fig::NotAvailable { not_available } => {
                let _ = writeln!(s, "3. snapshot: not available: {not_available}");
            }
        }
    }
    if !r.top.is_empty() {
        let _ = writeln!(
            s,
            "\n4. top CPU with {} buckets, --interval 1 (goal: < 1 % of one core)",
            r.config.top_buckets
        );
        for t in &r.top {
            match &t.result {
                Fig::Ok(x) => {
                    let _ = writeln!(
                        s,
                        "   {}: {:.2} % of one core over {:.1} s ({} ticks)",
                        t.mode, x.cpu_pct_one_core, x.seconds, x.cpu_ticks
                    );
                }
                Fig::NotAvailable { not_available } => {
                    let _ = writeln!(s, "   {}: not available: {not_available}", t.mode);
                }
            }
        }
    }
    if let Some(ex) = &r.export {
        s.push('\n');
        match ex {
            Fig::Ok(x) => {
                let _ = writeln!(
                    s,
                    "5. export with {} listening sockets ({} buckets in the scrape; goals: scrape p99 < 50 ms, idle < 1 % of one core)",
                    x.sockets,
                    f(x.buckets_in_scrape, 0)
                );
                let _ = writeln!(
                    s,
                    "   {} scrapes {} ms apart: p50 {} ms, p99 {} ms, max {} ms",
                    x.scrapes,
                    x.scrape_every_ms,
                    f(x.scrape_ms_p50, 1),
                    f(x.scrape_ms_p99, 1),
                    f(x.scrape_ms_max, 1)
                );
                let _ = writeln!(
                    s,
                    "   scraped every {} s: {:.2} % of one core over {:.1} s ({} ticks)",
                    x.idle_scrape_every_s,
                    x.idle_cpu_pct_one_core,
                    x.idle_seconds,
                    x.idle_cpu_ticks
                );
            }
            Fig::NotAvailable { not_available } => {
                let _ = writeln!(s, "5. export: not available: {not_available}");
            }
        }
    }
    s
}
