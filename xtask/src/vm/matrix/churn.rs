//! Tracing overhead per backend inside each guest: the single-worker churn of `cargo
//! xtask bench` (examples/churn.rs, built static and copied into the guest) untraced vs
//! under `portwatch trace --json --netns all --probe B > /dev/null` for every backend,
//! the variants interleaved in rotation over a few rounds, medians, traced / untraced.
//!
//! The guest has no xtask: the rounds run from a shell script written here
//! ([`ChurnPlan::script`]: the round order from [`rotation`], the trace arguments from
//! [`Traced::trace_args`]), which frames every workload run between `@@CHURN ...@@`
//! markers; the host parses those blocks back into [`Samples`] and lets the bench compute
//! the rows ([`Samples::rows`]).
//!
//! Starting a tracer (loading and verifying its programs) takes seconds to tens of
//! seconds under TCG, so one tracer covers both workloads of a round: the drops of the
//! first workload are the ones trace reported (every 500 ms) before the script cut its
//! stderr a second after that workload ended, the second workload's are the rest of the
//! tracer's total.
//!
//! Under qemu TCG the guest CPU is emulated (tens of times slower than the host), so only
//! the ratio of interleaved rounds means something, never the absolute rates.

use serde::Serialize;

use super::{tail, BackendCell, BackendStatus, BACKENDS};
use crate::bench::{
    overhead::{variants, OverheadRow, Samples, Traced},
    stats::{dropped_reported, dropped_total, rotation, Counters, Workload},
};

/// Name of the churn benchmark command.
pub const CHURN: &str = "churn";
/// The churn workloads timed in each guest.
pub const CHURN_WORKLOADS: [Workload; 2] = [Workload::Bind, Workload::Connect];
/// The churn program inside the guest (and on the host, found through PATH).
pub const CHURN_PROGRAM: &str = "churn";
/// How long a tracer may take to attach (tenths of a second): loading and verifying the
/// programs takes seconds under TCG.
const READY_TENTHS: u32 = 1200;

/// The caveat printed with every churn table.
pub const TCG_CAVEAT: &str = "qemu TCG emulates the guest CPU (tens of times slower than \
     the host): the rates are not the kernel's speed on hardware, only the ratio traced / \
     untraced of interleaved rounds means something";

/// How much churn each kernel runs. Every traced variant costs one tracer start per
/// round (seconds to tens of seconds under TCG): the `--port 9` variants double that, so
/// they are optional.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ChurnPlan {
    /// Rounds per variant (the medians are taken over them).
    pub rounds: usize,
    /// Seconds of churn per workload run.
    pub seconds: f64,
    /// Also time `--port 9`, a filter that matches nothing the workload does.
    pub port9: bool,
}

impl Default for ChurnPlan {
    fn default() -> Self {
        Self {
            rounds: 3,
            seconds: 1.0,
            port9: false,
        }
    }
}

/// One run of one workload in one round of one variant, in the order they run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Round {
    pub round: usize,
    pub workload: Workload,
    /// Index into [`ChurnPlan::variants`].
    pub variant: usize,
}

impl ChurnPlan {
    /// The variants of each workload: the baseline, then every backend (and `--port 9`).
    pub fn variants(&self) -> Vec<Option<Traced>> {
        let backends: Vec<String> = BACKENDS.iter().map(|b| (*b).to_owned()).collect();
        variants(&backends, self.port9)
    }

    /// Every run: per round, the variants in rotation, each running every workload.
    pub fn plan(&self) -> Vec<Round> {
        let n = self.variants().len();
        let mut plan = Vec::new();
        for r in 0..self.rounds {
            for v in rotation(r, n) {
                for w in CHURN_WORKLOADS {
                    plan.push(Round {
                        round: r,
                        workload: w,
                        variant: v,
                    });
                }
            }
        }
        plan
    }

    /// The first line the script prints: the plan, so the output describes itself.
    pub(super) fn header(&self) -> String {
        format!(
            "@@CHURN-PLAN rounds={} seconds={} port9={}@@",
            self.rounds,
            self.seconds,
            u8::from(self.port9)
        )
    }

    fn parse_header(line: &str) -> Option<Self> {
        let body = marker(line, "@@CHURN-PLAN")?;
        Some(Self {
            rounds: field(body, "rounds")?.parse().ok()?,
            seconds: field(body, "seconds")?.parse().ok()?,
            port9: field(body, "port9")? == "1",
        })
    }

    /// The shell script run in the guest (busybox sh) and on the host (sh). The tracer is
    /// stopped with SIGTERM (trace drains its ring, prints its drop total and detaches, as
    /// on SIGINT): a background job of a non-interactive shell starts with SIGINT ignored.
    pub fn script(&self) -> String {
        use crate::vm::initramfs::sh_quote;
        let vs = self.variants();
        let mut s = format!(
            r#"echo '{header}'
d=$(mktemp -d) || exit 1
dead=' '
alive() {{ [ -r /proc/$1/stat ] && ! grep -q '^[0-9]* ([^)]*) Z' /proc/$1/stat; }}
run() {{
    echo go | {churn} --workers 1 --seconds {secs} "$@" 2>&1
}}
base() {{
    run "$@"
    echo "@@CHURN-END churn=$?@@"
}}
start() {{
    b=$1; shift
    tp=
    case "$dead" in *" $b "*) return;; esac
    rm -f "$d/ready"
    : > "$d/err"
    portwatch trace "$@" --ready-file "$d/ready" >/dev/null 2>>"$d/err" </dev/null &
    tp=$!
    i=0
    while [ ! -e "$d/ready" ]; do
        if ! alive $tp || [ $i -ge {ready} ]; then
            kill -TERM $tp 2>/dev/null; wait $tp; trc=$?
            cat "$d/err"; dead="$dead$b "; tp=
            echo "@@CHURN-NOTREADY trace=$trc@@"; return
        fi
        i=$((i+1)); sleep 0.1
    done
}}
traced() {{
    last=$1; shift
    if [ -z "$tp" ]; then echo '@@CHURN-END skipped@@'; return; fi
    run "$@"
    crc=$?
    if [ "$last" = 0 ]; then
        sleep 1
        if alive $tp; then trc=running; else wait $tp; trc=$?; fi
        cat "$d/err"; : > "$d/err"
        echo "@@CHURN-END churn=$crc trace=$trc@@"
        [ "$trc" = running ] || tp=
        return
    fi
    kill -TERM $tp; wait $tp; trc=$?
    cat "$d/err"
    echo "@@CHURN-END churn=$crc trace=$trc@@"
    tp=
}}
"#,
            header = self.header(),
            churn = CHURN_PROGRAM,
            secs = self.seconds,
            ready = READY_TENTHS,
        );
        let plan = self.plan();
        for (i, r) in plan.iter().enumerate() {
            let first = i == 0 || plan[i - 1].round != r.round || plan[i - 1].variant != r.variant;
            let last = plan
                .get(i + 1)
                .is_none_or(|n| n.round != r.round || n.variant != r.variant);
            let traced = vs[r.variant].as_ref();
            s.push_str(&format!(
                "echo '@@CHURN round={} mode={} variant={}@@'\n",
                r.round,
                mode(r.workload),
                r.variant
            ));
            // Inside the first workload's block: a tracer that does not start is that
            // block's error.
            if let (true, Some(t)) = (first, traced) {
                let targs: Vec<String> = t.trace_args().iter().map(|a| sh_quote(a)).collect();
                s.push_str(&format!(
                    "start {} {}\n",
                    sh_quote(&t.backend),
                    targs.join(" ")
                ));
            }
            // Plain words (`--mode bind`): no quoting needed.
            let args = r.workload.churn_args().join(" ");
            match traced {
                None => s.push_str(&format!("base {args}\n")),
                Some(_) => s.push_str(&format!("traced {} {args}\n", u8::from(last))),
            }
        }
        s.push_str("rm -rf \"$d\"\n");
        s
    }
}

fn mode(w: Workload) -> &'static str {
    // `--mode X` of the workload's churn arguments.
    let a = w.churn_args();
    a.iter()
        .position(|x| *x == "--mode")
        .and_then(|i| a.get(i + 1))
        .copied()
        .unwrap_or("?")
}

fn workload_of(mode_name: &str) -> Option<Workload> {
    CHURN_WORKLOADS.into_iter().find(|w| mode(*w) == mode_name)
}

/// One framed round as the guest printed it.
#[derive(Debug, Clone, PartialEq)]
struct Block {
    round: usize,
    workload: Workload,
    variant: usize,
    lines: Vec<String>,
    end: Option<String>,
}

/// `key=value` of a marker body.
fn field<'a>(body: &'a str, key: &str) -> Option<&'a str> {
    body.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

fn marker<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = line.trim().strip_prefix(prefix)?;
    rest.strip_suffix("@@")
}

fn blocks(output: &str) -> (Option<ChurnPlan>, Vec<Block>, Vec<String>) {
    let mut plan = None;
    let mut out = Vec::new();
    let mut problems = Vec::new();
    let mut cur: Option<Block> = None;
    for line in output.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(p) = ChurnPlan::parse_header(line) {
            plan = Some(p);
        } else if let Some(body) = marker(line, "@@CHURN-END") {
            match cur.take() {
                Some(mut b) => {
                    b.end = Some(body.trim().to_owned());
                    out.push(b);
                }
                None => problems.push(format!("churn: end marker without a round: {line}")),
            }
        } else if let Some(body) = marker(line, "@@CHURN ") {
            if let Some(b) = cur.take() {
                out.push(b);
            }
            let r = field(body, "round").and_then(|v| v.parse().ok());
            let w = field(body, "mode").and_then(workload_of);
            let v = field(body, "variant").and_then(|v| v.parse().ok());
            match (r, w, v) {
                (Some(round), Some(workload), Some(variant)) => {
                    cur = Some(Block {
                        round,
                        workload,
                        variant,
                        lines: Vec::new(),
                        end: None,
                    })
                }
                _ => problems.push(format!("churn: unreadable round marker {line:?}")),
            }
        } else if let Some(b) = cur.as_mut() {
            b.lines.push(line.to_owned());
        }
    }
    if let Some(b) = cur {
        out.push(b);
    }
    (plan, out, problems)
}

/// The drops a traced block accounts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drops {
    /// A workload before the round's last: what trace reported while it ran.
    Reported(u64),
    /// The round's last workload: the tracer's total at exit (for the whole round).
    Total(u64),
}

/// What one framed workload run measured: a rate and the tracer's drops, or why not.
fn judge(b: &Block, traced: Option<&Traced>) -> Result<(f64, Option<Drops>), String> {
    let what = match traced {
        None => "untraced churn".to_owned(),
        Some(t) => format!("churn under trace --probe {} ({})", t.backend, t.filter()),
    };
    let text = b.lines.join("\n");
    let Some(end) = &b.end else {
        return Err(format!("{what} did not finish: {}", tail(&text, 3)));
    };
    let notready = b
        .lines
        .iter()
        .find_map(|l| marker(l, "@@CHURN-NOTREADY"))
        .map(|body| field(body, "trace").unwrap_or("?").to_owned());
    if let Some(rc) = notready {
        return Err(format!(
            "portwatch trace --probe {} did not start (rc {rc}): {}",
            traced.map_or("?", |t| t.backend.as_str()),
            tail(&text, 3)
        ));
    }
    if end == "skipped" {
        return Err(format!(
            "{what} not run: the tracer did not start or did not last the round"
        ));
    }
    if field(end, "churn") != Some("0") {
        return Err(format!(
            "{what}: churn exited with rc {}: {}",
            field(end, "churn").unwrap_or("?"),
            tail(&text, 3)
        ));
    }
    let counters = b
        .lines
        .iter()
        .find(|l| l.trim_start().starts_with("{\"done\""))
        .and_then(|l| serde_json::from_str::<Counters>(l.trim()).ok());
    let Some(rate) = counters.and_then(|c| c.rate()) else {
        return Err(format!(
            "{what}: churn printed no counters: {}",
            tail(&text, 3)
        ));
    };
    let drops = match traced {
        None => None,
        Some(_) => match field(end, "trace") {
            Some("running") => Some(Drops::Reported(dropped_reported(&text))),
            // trace prints its drop total at exit only when it is not zero.
            Some("0") => Some(Drops::Total(dropped_total(&text).unwrap_or(0))),
            rc => {
                return Err(format!(
                    "{what}: portwatch trace exited with rc {}: {}",
                    rc.unwrap_or("?"),
                    tail(&text, 3)
                ))
            }
        },
    };
    Ok((rate, drops))
}

/// A backend the kernel refuses, in the churn table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RefusedBackend {
    pub backend: String,
    pub reason: String,
}

/// The churn figures of one kernel.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChurnSummary {
    /// The churn command ran (its output was read).
    pub ran: bool,
    /// What the kernel ran, from the output's first line.
    pub plan: Option<ChurnPlan>,
    /// Churn worker threads (one: the single-worker figure).
    pub workers: usize,
    /// Per (workload, backend, filter) for every backend the kernel does not refuse.
    pub rows: Vec<OverheadRow>,
    pub refused: Vec<RefusedBackend>,
    /// What makes this kernel's row a failure: a backend that attaches without a
    /// measurement, a missing baseline, an unreadable output.
    pub problems: Vec<String>,
}

impl ChurnSummary {
    /// The churn figures from the command's output; `backends` tells which backends the
    /// kernel refuses (`portwatch probes`), whose rounds are expected to fail.
    pub fn new(output: Option<&str>, backends: &[BackendCell]) -> Self {
        let mut s = Self {
            workers: 1,
            ..Self::default()
        };
        let Some(output) = output else {
            s.problems.push(format!("{CHURN} never ran"));
            return s;
        };
        s.ran = true;
        for c in backends {
            if let BackendStatus::Refused(why) = &c.status {
                s.refused.push(RefusedBackend {
                    backend: c.backend.clone(),
                    reason: why.clone(),
                });
            }
        }
        let refused = |b: &str| s.refused.iter().any(|r| r.backend == b);
        let (plan, blocks, problems) = blocks(output);
        s.problems.extend(problems);
        let Some(plan) = plan else {
            s.problems
                .push(format!("{CHURN} printed no plan line: {}", tail(output, 3)));
            return s;
        };
        s.plan = Some(plan);
        let vs = plan.variants();
        for w in CHURN_WORKLOADS {
            let mut samples = Samples::new(vs.clone());
            let mut seen = vec![0usize; vs.len()];
            // Drops reported during the earlier workloads of each (round, variant).
            let mut reported: std::collections::BTreeMap<(usize, usize), u64> = Default::default();
            for b in &blocks {
                let Some(v) = vs.get(b.variant) else {
                    s.problems
                        .push(format!("churn: round of unknown variant {}", b.variant));
                    continue;
                };
                let judged = judge(b, v.as_ref());
                let before = reported.entry((b.round, b.variant)).or_insert(0);
                let drops = match judged {
                    Ok((_, Some(Drops::Reported(n)))) => {
                        *before += n;
                        Some(n)
                    }
                    Ok((_, Some(Drops::Total(n)))) => Some(n.saturating_sub(*before)),
                    _ => None,
                };
                if b.workload != w {
                    continue;
                }
                seen[b.variant] += 1;
                match judged {
                    Ok((rate, _)) => {
                        samples.rates[b.variant].push(rate);
                        samples.drops[b.variant].extend(drops);
                    }
                    Err(e) => samples.errors[b.variant].push(e),
                }
            }
            for (vi, v) in vs.iter().enumerate() {
                let skip = v.as_ref().is_some_and(|t| refused(&t.backend));
                if !skip && seen[vi] != plan.rounds {
                    s.problems.push(format!(
                        "{}: {} of {} rounds of {} ran",
                        w.name(),
                        seen[vi],
                        plan.rounds,
                        v.as_ref().map_or_else(
                            || "the untraced baseline".to_owned(),
                            |t| format!("trace --probe {} ({})", t.backend, t.filter())
                        )
                    ));
                }
            }
            // A round of the baseline or of a backend that attaches must not fail: its
            // errors are failures even when other rounds gave a median.
            if !samples.errors[0].is_empty() {
                s.problems.push(format!(
                    "{}: untraced rounds failed: {}",
                    w.name(),
                    samples.errors[0].join("; ")
                ));
            }
            // `rows()` yields one row per traced variant, in the order of `vs[1..]`.
            for (row, errors) in samples.rows(w).into_iter().zip(&samples.errors[1..]) {
                if refused(&row.backend) {
                    continue;
                }
                if row.ratio.is_none() {
                    let why = if errors.is_empty() {
                        "no round measured".to_owned()
                    } else {
                        errors.join("; ")
                    };
                    s.problems.push(format!(
                        "{}: backend {} attaches on this kernel but produced no churn \
                         measurement ({}): {why}",
                        w.name(),
                        row.backend,
                        row.filter
                    ));
                } else if !errors.is_empty() {
                    s.problems.push(format!(
                        "{}: backend {} ({}): {} of its rounds failed: {}",
                        w.name(),
                        row.backend,
                        row.filter,
                        errors.len(),
                        errors.join("; ")
                    ));
                }
                s.rows.push(row);
            }
        }
        s
    }

    /// The row of (workload, backend, filter).
    pub fn row(&self, w: Workload, backend: &str, filter: &str) -> Option<&OverheadRow> {
        self.rows
            .iter()
            .find(|r| r.workload == w.name() && r.backend == backend && r.filter == filter)
    }
}
