//! The matrix as text tables (printed by `cargo xtask vm`) and as markdown
//! (target/vm-results/matrix.md and the README section).

use std::collections::BTreeMap;

use portwatch::{
    backend::WalkDriver,
    selftest::observation::{RECONNECT as RECONNECT_OBSERVATION, RELEASE as RELEASE_OBSERVATION},
};

use super::{
    BackendCell, BackendStatus, ChurnPlan, KernelRow, Matrix, BACKENDS, CHURN_WORKLOADS,
    REUSEADDR_OBSERVATION, TCG_CAVEAT,
};

pub fn backend_text(c: &BackendCell) -> String {
    match &c.status {
        BackendStatus::Pass => match c.secs {
            Some(t) => format!("pass {t:.1}s"),
            None => "pass".to_owned(),
        },
        BackendStatus::Fail(_) => "FAIL".to_owned(),
        BackendStatus::Refused(why) => format!("refused: {why}"),
        BackendStatus::NotRun(_) => "not run".to_owned(),
    }
}

pub fn reuseaddr_text(r: &KernelRow) -> String {
    let mut by_value: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for c in &r.backends {
        if let Some(v) = &c.reuseaddr_fastreuse {
            by_value.entry(v.clone()).or_default().push(&c.backend);
        }
    }
    if by_value.is_empty() {
        return "-".to_owned();
    }
    by_value
        .iter()
        .map(|(v, bs)| format!("{v} ({})", bs.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

pub fn agree_text(r: &KernelRow) -> String {
    let n = r.passed_backends().len();
    if !r.disagreements.is_empty() {
        let s: Vec<String> = r
            .disagreements
            .iter()
            .map(|d| format!("{} ({} vs {})", d.scenario, d.reference, d.other))
            .collect();
        format!("NO: {}", s.join(", "))
    } else if n >= 2 {
        format!("yes ({n} backends)")
    } else {
        format!("n/a ({n} passing)")
    }
}

pub fn boot_text(r: &KernelRow) -> String {
    let t = r.secs.map(|s| format!(" {s:.1}s")).unwrap_or_default();
    match (r.host, r.boot_problems.is_empty()) {
        (true, _) => format!("host{t}"),
        (false, true) => format!("ok{t}"),
        (false, false) => format!("FAIL{t}"),
    }
}

/// The backend table: one row per kernel.
pub fn backend_table(m: &Matrix) -> Vec<Vec<String>> {
    let mut header = vec![
        "kernel".to_owned(),
        "uname -r".to_owned(),
        "run (boot + commands)".to_owned(),
    ];
    header.extend(BACKENDS.iter().map(|b| (*b).to_owned()));
    header.push("backends agree".to_owned());
    header.push("fastreuse after SO_REUSEADDR bind".to_owned());
    let mut rows = vec![header];
    for r in &m.rows {
        let mut row = vec![
            r.label.clone(),
            r.release.clone().unwrap_or_else(|| "?".into()),
            boot_text(r),
        ];
        for b in BACKENDS {
            row.push(
                r.backends
                    .iter()
                    .find(|c| c.backend == b)
                    .map_or_else(|| "?".to_owned(), backend_text),
            );
        }
        row.push(agree_text(r));
        row.push(reuseaddr_text(r));
        rows.push(row);
    }
    rows
}

fn yes_no(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "yes",
        Some(false) => "no",
        None => "?",
    }
}

pub fn walk_text(r: &KernelRow) -> String {
    let Some(w) = &r.walk else {
        return "?".to_owned();
    };
    let mut t = match w.driver {
        WalkDriver::BpfLoop => "bpf_loop".to_owned(),
        WalkDriver::Bounded {
            owner_steps,
            chain_steps,
            snap_steps,
        } => format!("bounded loops {owner_steps}/{chain_steps}/{snap_steps}"),
    };
    if !w.refused_budgets.is_empty() {
        t.push_str(&format!(" (after {} refused)", w.refused_budgets.len()));
    }
    t
}

/// The kernel table: how portwatch runs on each kernel and what the kernel records.
pub fn kernel_table(m: &Matrix) -> Vec<Vec<String>> {
    let mut rows = vec![vec![
        "kernel".to_owned(),
        "walk driver".to_owned(),
        "hooked functions".to_owned(),
        "connect()-bound recorded".to_owned(),
        "own port range (IP_LOCAL_PORT_RANGE)".to_owned(),
        "per-address fastreuse".to_owned(),
        "explain judge".to_owned(),
    ]];
    for r in &m.rows {
        let hooks = if r.walk.is_none() {
            "?".to_owned()
        } else if r.hook_notes.is_empty() {
            "all plain text symbols".to_owned()
        } else {
            r.hook_notes.join("; ")
        };
        rows.push(vec![
            r.label.clone(),
            walk_text(r),
            hooks,
            yes_no(r.records.connect_bound).to_owned(),
            yes_no(r.records.socket_port_range).to_owned(),
            yes_no(r.records.addr_fastreuse).to_owned(),
            r.explain.text(),
        ]);
    }
    rows
}

/// What this kernel did that the article does not say, from the quizzes, the state
/// checks and the selftests' observations.
pub fn article_differences(r: &KernelRow) -> Vec<String> {
    let mut out = Vec::new();
    let q = &r.quiz;
    for id in &q.quiz_differs {
        out.push(format!("quiz {id} ends differently from the article"));
    }
    for id in &q.fix_differs {
        out.push(format!("fix {id} ends differently from the article"));
    }
    for s in q.state_findings() {
        out.push(format!(
            "state check {} after `{}`: fastreuse {} (article: {})",
            s.check,
            s.label,
            s.observed_text(),
            s.article
        ));
    }
    let obs = |k: &str| {
        r.observations
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    if let Some(v) = obs(REUSEADDR_OBSERVATION).filter(|v| *v != "+1") {
        out.push(format!(
            "a bind() with SO_REUSEADDR creates its bucket at fastreuse {v} (article: +1)"
        ));
    }
    if let Some(v) = obs(RELEASE_OBSERVATION).filter(|v| *v != "0/0") {
        let then = obs(RECONNECT_OBSERVATION).unwrap_or("?");
        out.push(format!(
            "releasing a port that leaves only connect()-bound owners resets the bucket to {v}              (article: the bucket keeps its state until it is destroyed); then {then}"
        ));
    }
    out
}

/// The quiz table: one row per kernel.
pub fn quiz_table(m: &Matrix) -> Vec<Vec<String>> {
    let mut rows = vec![vec![
        "kernel".to_owned(),
        "quiz backend".to_owned(),
        "quizzes as in the article".to_owned(),
        "fixes as in the article".to_owned(),
        "state steps differing from the article (article -> observed)".to_owned(),
    ]];
    for r in &m.rows {
        let q = &r.quiz;
        let ran = q.quizzes_total + q.fixes_total > 0;
        let frac = |same: usize, total: usize| {
            if ran {
                format!("{same}/{total}")
            } else {
                "not run".to_owned()
            }
        };
        let with_diffs = |mut t: String, ids: &[String]| {
            if !ids.is_empty() {
                t.push_str(&format!(" (differs: {})", ids.join(", ")));
            }
            t
        };
        let quizzes = with_diffs(frac(q.quizzes_same, q.quizzes_total), &q.quiz_differs);
        let fixes = with_diffs(frac(q.fixes_same, q.fixes_total), &q.fix_differs);
        let findings: Vec<String> = q
            .state_findings()
            .map(|s| {
                format!(
                    "{} {}: {} -> {}",
                    s.check,
                    s.label,
                    s.article,
                    s.observed_text()
                )
            })
            .collect();
        let states = if q.states.is_empty() {
            "not run".to_owned()
        } else if findings.is_empty() {
            "none".to_owned()
        } else {
            findings.join("; ")
        };
        rows.push(vec![
            r.label.clone(),
            q.backend.clone().unwrap_or_else(|| "-".into()),
            quizzes,
            fixes,
            states,
        ]);
    }
    rows
}

/// "article vs 6.1 vs 6.12 vs host" for every checked state step (observed fastreuse;
/// values that differ from the article are marked).
pub fn state_table_rows(m: &Matrix) -> Vec<Vec<String>> {
    let mut header = vec![
        "state check".to_owned(),
        "step".to_owned(),
        "article".to_owned(),
    ];
    header.extend(m.rows.iter().map(|r| r.label.clone()));
    let mut rows = vec![header];
    for (check, label, article, per) in m.state_table() {
        let mut row = vec![check, label, article.to_string()];
        row.extend(per.iter().map(|s| match s {
            None => "-".to_owned(),
            Some(s) if s.differs() => format!("{} (differs)", s.observed_text()),
            Some(s) => s.observed_text(),
        }));
        rows.push(row);
    }
    rows
}

/// The churn plan of the matrix: the first kernel's that ran (one run uses one plan).
fn churn_plan(m: &Matrix) -> Option<ChurnPlan> {
    m.rows.iter().find_map(|r| r.churn.plan)
}

/// The churn table: per kernel, backend and workload, the medians of the untraced and
/// traced rounds, their ratio and the tracer's drops (summed over the traced rounds), and
/// with `--port 9` timed, that filter's rate and ratio; a refused backend shows its reason.
pub fn churn_table(m: &Matrix) -> Vec<Vec<String>> {
    let port9 = churn_plan(m).is_some_and(|p| p.port9);
    let mut header: Vec<String> = [
        "kernel",
        "backend",
        "workload",
        "untraced/s",
        "traced/s",
        "ratio",
        "rounds: untraced; traced",
        "dropped",
    ]
    .map(str::to_owned)
    .to_vec();
    if port9 {
        header.extend(["traced/s --port 9".to_owned(), "ratio --port 9".to_owned()]);
    }
    let width = header.len();
    let mut rows = vec![header];
    let rate = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"));
    let ratio = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
    let pad = |mut row: Vec<String>| {
        row.resize(width, "-".to_owned());
        row
    };
    for r in &m.rows {
        let c = &r.churn;
        if !c.ran {
            rows.push(pad(vec![
                r.label.clone(),
                "-".to_owned(),
                "not run".to_owned(),
            ]));
            continue;
        }
        for b in BACKENDS {
            if let Some(why) = c.refused.iter().find(|x| x.backend == b) {
                rows.push(pad(vec![
                    r.label.clone(),
                    b.to_owned(),
                    "-".to_owned(),
                    "-".to_owned(),
                    "-".to_owned(),
                    format!("refused: {}", why.reason),
                ]));
                continue;
            }
            for w in CHURN_WORKLOADS {
                let plain = c.row(w, b, "none");
                let dropped = plain.filter(|p| !p.dropped.is_empty()).map_or_else(
                    || "-".to_owned(),
                    |p| p.dropped.iter().sum::<u64>().to_string(),
                );
                let mut row = vec![
                    r.label.clone(),
                    b.to_owned(),
                    w.name().to_owned(),
                    rate(plain.and_then(|p| p.baseline_ops_s)),
                    rate(plain.and_then(|p| p.traced_ops_s)),
                    ratio(plain.and_then(|p| p.ratio)),
                    plain.map_or_else(
                        || "-".to_owned(),
                        |p| format!("{}; {}", span(&p.baseline_rounds), span(&p.traced_rounds)),
                    ),
                    dropped,
                ];
                if port9 {
                    let p9 = c.row(w, b, "--port 9");
                    row.push(rate(p9.and_then(|p| p.traced_ops_s)));
                    row.push(ratio(p9.and_then(|p| p.ratio)));
                }
                rows.push(row);
            }
        }
    }
    rows
}

/// "MIN-MAX" of some rates (how far the rounds behind a median spread), "-" for none.
fn span(v: &[f64]) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if min.is_finite() && max.is_finite() {
        format!("{min:.0}-{max:.0}")
    } else {
        "-".to_owned()
    }
}

/// How the churn table was measured, with its caveat.
pub fn churn_note(m: &Matrix) -> String {
    let Some(p) = churn_plan(m) else {
        return "no kernel ran the churn rounds".to_owned();
    };
    format!(
        "one churn worker (examples/churn.rs) in a private netns, {} s per round, untraced vs \
         `portwatch trace --json --netns all --probe B > /dev/null`{}, the variants \
         interleaved in rotation, medians of {} rounds (the rounds' lowest and highest rates \
         alongside: how far apart they are is the noise of the run); ratio = traced / \
         untraced, dropped = the tracer's drop totals summed over its rounds. {TCG_CAVEAT}.",
        p.seconds,
        if p.port9 {
            " (and with `--port 9`, a filter matching nothing)"
        } else {
            ""
        },
        p.rounds
    )
}

/// GitHub-flavoured markdown table.
pub fn md_table(rows: &[Vec<String>]) -> String {
    let esc = |s: &str| s.replace('|', "\\|");
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row.iter().map(|c| esc(c)).collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
        if i == 0 {
            out.push_str(&format!("|{}\n", "---|".repeat(row.len())));
        }
    }
    out
}

pub fn failure_lines(m: &Matrix) -> Vec<String> {
    let mut lines = Vec::new();
    for r in &m.rows {
        for d in &r.disagreements {
            lines.push(format!(
                "{}: backends disagree on {} ({} vs {}, op ignored):",
                r.label, d.scenario, d.reference, d.other
            ));
            lines.extend(d.diff.iter().map(|l| format!("    {l}")));
        }
    }
    lines
}

/// The plain-text rendering printed by `cargo xtask vm`.
pub fn render_text(m: &Matrix) -> String {
    let mut out = String::new();
    out.push_str("Backends (selftest per backend; refused = `portwatch probes` reason):\n");
    out.push_str(&crate::table::text(&backend_table(m)));
    out.push_str("\nQuizzes (`portwatch quiz --all`, automatic backend):\n");
    out.push_str(&crate::table::text(&quiz_table(m)));
    out.push_str("\nState checks: fastreuse after each checked step, article vs kernels:\n");
    out.push_str(&crate::table::text(&state_table_rows(m)));
    out.push_str("\nKernels (`portwatch probes`, `portwatch explain selftest`):\n");
    out.push_str(&crate::table::text(&kernel_table(m)));
    out.push_str(&format!("\nTracing overhead ({}):\n", churn_note(m)));
    out.push_str(&crate::table::text(&churn_table(m)));
    out.push_str("\nWhat differs from the article:\n");
    for r in &m.rows {
        let d = article_differences(r);
        if d.is_empty() {
            out.push_str(&format!("  {}: nothing\n", r.label));
        }
        for x in d {
            out.push_str(&format!("  {}: {x}\n", r.label));
        }
    }
    let diffs = failure_lines(m);
    if !diffs.is_empty() {
        out.push('\n');
        out.push_str(&diffs.join("\n"));
        out.push('\n');
    }
    let f = m.failures();
    if !f.is_empty() {
        out.push_str("\nFailures:\n");
        for x in f {
            out.push_str(&format!("  {x}\n"));
        }
    }
    out
}

/// The markdown rendering (target/vm-results/matrix.md and the README section).
pub fn render_markdown(m: &Matrix, produced_by: &str) -> String {
    let mut out = String::new();
    out.push_str(&format!("{produced_by}\n\n"));
    out.push_str(
        "Backends: `portwatch selftest --probe B --json` on each kernel; \"refused\" is the \
         reason `portwatch probes --json` gives. Backends agree when every passing backend saw \
         the same bucket transitions (the `op` field aside) in every scenario. The last column \
         is the fastreuse of a new bucket created by a bind() with SO_REUSEADDR (the article: +1).\n\n",
    );
    out.push_str(&md_table(&backend_table(m)));
    out.push_str(
        "\nQuizzes: `portwatch quiz --all --json` (automatic backend): the eight quizzes and three \
         fixes compared with the article's outcomes, and the state-machine steps whose observed \
         fastreuse differs from the article's.\n\n",
    );
    out.push_str(&md_table(&quiz_table(m)));
    out.push_str(
        "\nState checks: fastreuse observed after each checked step, article vs kernels.\n\n",
    );
    out.push_str(&md_table(&state_table_rows(m)));
    out.push_str(
        "\nKernels: how the in-kernel walks run (`portwatch probes`: bpf_loop from 5.17, bounded \
         loops with owner/chain/snapshot steps per program run before), whether the hooked \
         functions are plain text symbols (not inlined or cloned), what the kernel records per \
         owner socket (shown by `dump -v` and `trace`), and the explain rules engine judged by \
         the kernel (`portwatch explain selftest`).\n\n",
    );
    out.push_str(&md_table(&kernel_table(m)));
    out.push_str(&format!(
        "\nTracing overhead per backend: {} The host row is this machine, not emulated.\n\n",
        churn_note(m)
    ));
    out.push_str(&md_table(&churn_table(m)));
    out.push_str("\nWhat each kernel does differently from the article:\n\n");
    for r in &m.rows {
        let d = article_differences(r);
        let rel = r.release.as_deref().unwrap_or("?");
        if d.is_empty() {
            out.push_str(&format!("- **{}** ({rel}): nothing found\n", r.label));
        } else {
            out.push_str(&format!("- **{}** ({rel}):\n", r.label));
            for x in d {
                out.push_str(&format!("  - {x}\n"));
            }
        }
    }
    let diffs = failure_lines(m);
    let f = m.failures();
    if !diffs.is_empty() || !f.is_empty() {
        out.push_str("\nFailures:\n\n```\n");
        for l in diffs.iter().chain(&f) {
            out.push_str(l);
            out.push('\n');
        }
        out.push_str("```\n");
    }
    out
}
