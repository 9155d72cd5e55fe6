//! The backend matrix built from the JSON that portwatch prints in each guest (and on
//! the host): kernel x backend -> pass / FAIL / refused, the fastreuse observed after an
//! SO_REUSEADDR bind, agreement between the backends that passed, the quiz and
//! state-check summary, and the failures that make `cargo xtask vm` exit non-zero.
//!
//! Everything here is pure (command outputs in, report out), so it is unit-tested with
//! canned JSON; no root, no qemu.

use std::collections::BTreeMap;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;

use super::{CmdResult, GuestCmd};

/// The probe backends, in the order portwatch tries them.
pub const BACKENDS: [&str; 3] = ["fentry", "kprobe", "tracepoint"];
/// Name of the `portwatch probes --json` command.
pub const PROBES: &str = "probes";
/// Name of the `portwatch quiz --all --json` command.
pub const QUIZ: &str = "quiz";
/// The selftest observation reported per backend.
pub const REUSEADDR_OBSERVATION: &str = "fastreuse after SO_REUSEADDR bind";

/// Name of the selftest command of `backend`.
pub fn selftest_name(backend: &str) -> String {
    format!("selftest-{backend}")
}

/// The commands behind the matrix, run in every guest and on the host.
pub fn matrix_cmds() -> Vec<GuestCmd> {
    let mut c = vec![GuestCmd::new(PROBES, ["portwatch", "probes", "--json"])];
    for b in BACKENDS {
        c.push(GuestCmd::new(
            &selftest_name(b),
            ["portwatch", "selftest", "--probe", b, "--json"],
        ));
    }
    c.push(GuestCmd::new(
        QUIZ,
        ["portwatch", "quiz", "--all", "--json"],
    ));
    c
}

// ------------------------------------------------------------------ parsed outputs

/// `portwatch probes --json` (only the fields used here).
#[derive(Debug, Clone, Deserialize)]
pub struct ProbesOut {
    pub kernel: String,
    #[serde(default)]
    pub chosen: Option<String>,
    #[serde(default)]
    pub attempts: Vec<Attempt>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Attempt {
    pub backend: String,
    #[serde(default)]
    pub refused: Option<String>,
}

/// `portwatch selftest --json`.
#[derive(Debug, Clone, Deserialize)]
pub struct SelftestOut {
    pub kernel: String,
    pub backend: String,
    pub scenarios: Vec<ScenarioOut>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ScenarioOut {
    pub name: String,
    /// Kept as JSON objects: every field but `op` takes part in the agreement check.
    #[serde(default)]
    pub steps: Vec<Value>,
    #[serde(default)]
    pub failures: Vec<String>,
    #[serde(default)]
    pub observations: Vec<(String, String)>,
}

impl SelftestOut {
    pub fn observation(&self, key: &str) -> Option<&str> {
        self.scenarios
            .iter()
            .flat_map(|s| &s.observations)
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// `portwatch quiz --all --json`.
#[derive(Debug, Clone, Deserialize)]
pub struct QuizOut {
    #[serde(default)]
    pub backend: Option<String>,
    #[serde(default)]
    pub quizzes: Option<QuizList>,
    #[serde(default)]
    pub states: Option<StateList>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct QuizList {
    pub quizzes: Vec<QuizItem>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct QuizItem {
    pub id: String,
    /// "quiz" or "fix".
    #[serde(default)]
    pub kind: String,
    /// "same", "differs" or "not run".
    pub verdict: String,
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StateList {
    pub checks: Vec<StateCheck>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StateCheck {
    pub id: String,
    #[serde(default)]
    pub steps: Vec<StateStepOut>,
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StateStepOut {
    pub label: String,
    /// The article's fastreuse after the step; `None`: the step is not checked.
    #[serde(default)]
    pub article: Option<i8>,
    #[serde(default)]
    pub observed: Option<ObservedOut>,
    /// "same", "finding", "not_observed".
    #[serde(default)]
    pub verdict: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ObservedOut {
    /// "present", "absent", "unavailable".
    #[serde(default)]
    pub bucket: Option<String>,
    #[serde(default)]
    pub info: Option<BucketInfoOut>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BucketInfoOut {
    pub fastreuse: i8,
}

/// The first JSON object of type `T` in a command's output. Guest output mixes stderr
/// lines (`portwatch: backend: ...`) with the JSON on stdout, so every line that starts
/// with `{` is tried as the start of a document.
pub fn extract_json<T: DeserializeOwned>(output: &str) -> Result<T, String> {
    let mut last_err = None;
    let mut offset = 0;
    for line in output.split_inclusive('\n') {
        if line.trim_start().starts_with('{') {
            let start = offset + (line.len() - line.trim_start().len());
            let mut it = serde_json::Deserializer::from_str(&output[start..]).into_iter::<T>();
            match it.next() {
                Some(Ok(v)) => return Ok(v),
                Some(Err(e)) => last_err = Some(e.to_string()),
                None => {}
            }
        }
        offset += line.len();
    }
    Err(match last_err {
        Some(e) => format!("its JSON does not parse: {e}"),
        None => "it printed no JSON".to_owned(),
    })
}

/// The last `n` non-empty lines of `output`, joined with " / " (for error messages).
pub fn tail(output: &str, n: usize) -> String {
    let lines: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let from = lines.len().saturating_sub(n);
    let t = lines[from..].join(" / ");
    if t.chars().count() > 300 {
        let cut: String = t.chars().take(300).collect();
        format!("{cut}...")
    } else if t.is_empty() {
        "no output".to_owned()
    } else {
        t
    }
}

// ------------------------------------------------------------------ the report

/// What one kernel (a guest, or the host) produced.
#[derive(Debug, Clone)]
pub struct KernelInput {
    /// "6.1", "6.12", "host (6.18)".
    pub label: String,
    pub host: bool,
    /// The release the kernel reported (`uname -r`), if known.
    pub release: Option<String>,
    /// Boot time (guests) or time for all commands (host).
    pub secs: Option<f64>,
    /// Empty when the guest booted and ran every command (always empty for the host).
    pub boot_problems: Vec<String>,
    pub results: Vec<CmdResult>,
}

/// One backend on one kernel.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", content = "detail", rename_all = "snake_case")]
pub enum BackendStatus {
    Pass,
    /// Attached (or at least not refused) and failed: why.
    Fail(Vec<String>),
    /// `portwatch probes` says this kernel refuses the backend: its reason.
    Refused(String),
    /// The selftest never ran (the guest did not get that far).
    NotRun(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct BackendCell {
    pub backend: String,
    #[serde(flatten)]
    pub status: BackendStatus,
    /// The selftest observation "fastreuse after SO_REUSEADDR bind".
    pub reuseaddr_fastreuse: Option<String>,
    pub secs: Option<f64>,
}

/// Two passing backends saw different steps in one scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Disagreement {
    pub scenario: String,
    pub reference: String,
    pub other: String,
    /// Line diff of the steps (without `op`): "  " same, "- " reference only,
    /// "+ " other only.
    pub diff: Vec<String>,
}

/// A checked step of a state check (`quiz --states`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateStep {
    pub check: String,
    pub label: String,
    pub article: i8,
    /// Observed fastreuse; `None` when the bucket could not be read.
    pub observed: Option<i8>,
    /// "present", "absent", "unavailable", or `None` when the step did not run.
    pub bucket: Option<String>,
    pub verdict: Option<String>,
}

impl StateStep {
    pub fn differs(&self) -> bool {
        self.observed != Some(self.article)
    }

    pub fn observed_text(&self) -> String {
        match (self.observed, &self.bucket) {
            (Some(v), _) => fmt_fastreuse(v),
            (None, Some(b)) => b.clone(),
            (None, None) => "not run".to_owned(),
        }
    }
}

/// `portwatch quiz --all --json` on one kernel, summarised.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QuizSummary {
    /// Backend the quiz run used (auto choice).
    pub backend: Option<String>,
    pub quizzes_same: usize,
    pub quizzes_total: usize,
    pub fixes_same: usize,
    pub fixes_total: usize,
    /// Quiz ids whose outcome differs from the article (findings).
    pub quiz_differs: Vec<String>,
    /// Fix ids whose outcome differs from the article (findings).
    pub fix_differs: Vec<String>,
    /// Every checked state step, article vs observed.
    pub states: Vec<StateStep>,
    /// Why the quizzes could not (all) run; non-empty = failure.
    pub problems: Vec<String>,
}

impl QuizSummary {
    pub fn state_findings(&self) -> impl Iterator<Item = &StateStep> {
        self.states.iter().filter(|s| s.differs())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct KernelRow {
    pub label: String,
    pub host: bool,
    pub release: Option<String>,
    pub secs: Option<f64>,
    pub boot_problems: Vec<String>,
    /// Backend `portwatch probes` chose (auto).
    pub chosen: Option<String>,
    pub backends: Vec<BackendCell>,
    pub disagreements: Vec<Disagreement>,
    pub quiz: QuizSummary,
    /// Everything that makes this kernel's row a failure.
    pub failures: Vec<String>,
}

impl KernelRow {
    pub fn passed_backends(&self) -> Vec<&str> {
        self.backends
            .iter()
            .filter(|c| c.status == BackendStatus::Pass)
            .map(|c| c.backend.as_str())
            .collect()
    }
}

/// `-1`, `0`, `+1` as the article writes them.
pub fn fmt_fastreuse(v: i8) -> String {
    if v > 0 {
        format!("+{v}")
    } else {
        v.to_string()
    }
}

/// Observation values are printed by portwatch as plain numbers ("1"); show them as
/// the article does ("+1").
fn fmt_observation(v: &str) -> String {
    v.trim()
        .parse::<i8>()
        .map(fmt_fastreuse)
        .unwrap_or_else(|_| v.trim().to_owned())
}

fn backend_cell(
    backend: &str,
    input: &KernelInput,
    probes: Option<&ProbesOut>,
) -> (BackendCell, Option<SelftestOut>) {
    let name = selftest_name(backend);
    let refused = probes
        .and_then(|p| p.attempts.iter().find(|a| a.backend == backend))
        .and_then(|a| a.refused.clone());
    let mut cell = BackendCell {
        backend: backend.to_owned(),
        status: BackendStatus::Pass,
        reuseaddr_fastreuse: None,
        secs: None,
    };
    let Some(r) = input.results.iter().find(|r| r.name == name) else {
        cell.status = BackendStatus::NotRun(format!("{name} never ran"));
        return (cell, None);
    };
    cell.secs = r.secs;
    let parsed = extract_json::<SelftestOut>(&r.output);
    let Some(rc) = r.rc else {
        cell.status = BackendStatus::Fail(vec![format!(
            "{name} did not finish: {}",
            tail(&r.output, 3)
        )]);
        return (cell, None);
    };
    let st = match parsed {
        Ok(st) => st,
        Err(e) => {
            cell.status = match refused {
                Some(why) if rc != 0 => BackendStatus::Refused(why),
                _ => BackendStatus::Fail(vec![format!(
                    "{name} exited with rc {rc} and {e}: {}",
                    tail(&r.output, 3)
                )]),
            };
            return (cell, None);
        }
    };
    cell.reuseaddr_fastreuse = st.observation(REUSEADDR_OBSERVATION).map(fmt_observation);
    let mut why = Vec::new();
    if st.backend != backend {
        why.push(format!(
            "{name} ran the {} backend instead of {backend}",
            st.backend
        ));
    }
    for sc in &st.scenarios {
        for f in &sc.failures {
            why.push(format!("{}: {f}", sc.name));
        }
    }
    if rc != 0 && why.is_empty() {
        why.push(format!(
            "{name} exited with rc {rc} although every scenario passed"
        ));
    }
    if st.scenarios.is_empty() {
        why.push(format!("{name} ran no scenario"));
    }
    if why.is_empty() {
        (cell, Some(st))
    } else {
        cell.status = BackendStatus::Fail(why);
        (cell, None)
    }
}

/// A step with `op` removed: what must agree between backends.
fn comparable(step: &Value) -> Value {
    match step {
        Value::Object(m) => {
            let mut m = m.clone();
            m.remove("op");
            Value::Object(m)
        }
        other => other.clone(),
    }
}

/// One line per step: the well-known fields first, then any others (sorted).
pub fn render_step(step: &Value) -> String {
    let Value::Object(m) = step else {
        return step.to_string();
    };
    let known = [
        "port",
        "kind",
        "fastreuse",
        "fastreuseport",
        "owners",
        "errno",
    ];
    let val = |v: &Value| match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut parts = Vec::new();
    for k in known {
        if let Some(v) = m.get(k) {
            parts.push(if k == "kind" {
                val(v)
            } else {
                format!("{k} {}", val(v))
            });
        }
    }
    for (k, v) in m {
        if k != "op" && !known.contains(&k.as_str()) {
            parts.push(format!("{k} {}", val(v)));
        }
    }
    parts.join(" ")
}

/// Line diff (longest common subsequence) of two step lists.
pub fn diff_lines(a: &[String], b: &[String]) -> Vec<String> {
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out.push(format!("  {}", a[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push(format!("- {}", a[i]));
            i += 1;
        } else {
            out.push(format!("+ {}", b[j]));
            j += 1;
        }
    }
    out
}

/// Compares the selftest steps (without `op`) of every passing backend with the first
/// one, scenario by scenario (a scenario missing on one side is a disagreement too).
pub fn agreement(passed: &[SelftestOut]) -> Vec<Disagreement> {
    let Some((reference, others)) = passed.split_first() else {
        return Vec::new();
    };
    let steps_of = |st: &SelftestOut, name: &str| -> Option<Vec<Value>> {
        st.scenarios
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.steps.iter().map(comparable).collect())
    };
    let lines = |steps: &Option<Vec<Value>>| -> Vec<String> {
        steps
            .as_ref()
            .map(|v| v.iter().map(render_step).collect())
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for other in others {
        let mut names: Vec<&str> = reference
            .scenarios
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        for s in &other.scenarios {
            if !names.contains(&s.name.as_str()) {
                names.push(&s.name);
            }
        }
        for name in names {
            let (a, b) = (steps_of(reference, name), steps_of(other, name));
            if a == b {
                continue;
            }
            let mut diff = Vec::new();
            if a.is_none() {
                diff.push(format!("(scenario missing on {})", reference.backend));
            }
            if b.is_none() {
                diff.push(format!("(scenario missing on {})", other.backend));
            }
            diff.extend(diff_lines(&lines(&a), &lines(&b)));
            out.push(Disagreement {
                scenario: name.to_owned(),
                reference: reference.backend.clone(),
                other: other.backend.clone(),
                diff,
            });
        }
    }
    out
}

/// Summarises `portwatch quiz --all --json` (`None`: the command never ran).
pub fn quiz_summary(r: Option<&CmdResult>) -> QuizSummary {
    let mut s = QuizSummary::default();
    let Some(r) = r else {
        s.problems.push(format!("{QUIZ} never ran"));
        return s;
    };
    let q = match (r.rc, extract_json::<QuizOut>(&r.output)) {
        (None, _) => {
            s.problems
                .push(format!("{QUIZ} did not finish: {}", tail(&r.output, 3)));
            return s;
        }
        (Some(rc), Err(e)) => {
            s.problems.push(format!(
                "{QUIZ} exited with rc {rc} and {e}: {}",
                tail(&r.output, 3)
            ));
            return s;
        }
        (Some(rc), Ok(q)) => {
            if rc != 0 {
                s.problems.push(format!(
                    "{QUIZ} exited with rc {rc} (some quiz or state check could not run)"
                ));
            }
            q
        }
    };
    s.backend = q.backend.clone();
    match &q.quizzes {
        None => s.problems.push("quiz JSON has no quizzes".to_owned()),
        Some(list) => {
            for z in &list.quizzes {
                let same = z.verdict == "same";
                if z.kind == "fix" {
                    s.fixes_total += 1;
                    s.fixes_same += usize::from(same);
                } else {
                    s.quizzes_total += 1;
                    s.quizzes_same += usize::from(same);
                }
                if let Some(e) = &z.error {
                    s.problems.push(format!("quiz {} could not run: {e}", z.id));
                } else if z.verdict == "not run" {
                    s.problems.push(format!("quiz {} did not run", z.id));
                } else if !same && z.kind == "fix" {
                    s.fix_differs.push(z.id.clone());
                } else if !same {
                    s.quiz_differs.push(z.id.clone());
                }
            }
        }
    }
    match &q.states {
        None => s.problems.push("quiz JSON has no state checks".to_owned()),
        Some(states) => {
            for c in &states.checks {
                if let Some(e) = &c.error {
                    s.problems
                        .push(format!("state check {} could not run: {e}", c.id));
                }
                for st in &c.steps {
                    let Some(article) = st.article else { continue };
                    s.states.push(StateStep {
                        check: c.id.clone(),
                        label: st.label.clone(),
                        article,
                        observed: st
                            .observed
                            .as_ref()
                            .and_then(|o| o.info.as_ref())
                            .map(|i| i.fastreuse),
                        bucket: st.observed.as_ref().and_then(|o| o.bucket.clone()),
                        verdict: st.verdict.clone(),
                    });
                }
            }
        }
    }
    s
}

/// Builds one kernel's row: backends, agreement, quizzes and failures.
pub fn kernel_row(input: &KernelInput) -> KernelRow {
    let mut failures: Vec<String> = input.boot_problems.clone();
    // A command that never ran or never finished in a guest with boot problems is
    // already named by them ("quiz: never ran"): no second failure for it.
    let covered = |name: &str| {
        !input.boot_problems.is_empty()
            && input
                .results
                .iter()
                .find(|r| r.name == name)
                .is_none_or(|r| r.rc.is_none())
    };
    let probes = match input.results.iter().find(|r| r.name == PROBES) {
        None => {
            if !covered(PROBES) {
                failures.push(format!("{PROBES} never ran"));
            }
            None
        }
        Some(r) => match extract_json::<ProbesOut>(&r.output) {
            Ok(p) => {
                if let Some(rel) = &input.release {
                    if p.kernel != *rel {
                        failures.push(format!(
                            "{PROBES} reports kernel {}, expected {rel}",
                            p.kernel
                        ));
                    }
                }
                Some(p)
            }
            Err(_) if covered(PROBES) => None,
            Err(e) => {
                failures.push(format!(
                    "{PROBES} exited with rc {} and {e}: {}",
                    r.rc.map_or_else(|| "?".to_owned(), |c| c.to_string()),
                    tail(&r.output, 3)
                ));
                None
            }
        },
    };
    let mut backends = Vec::new();
    let mut passed = Vec::new();
    for b in BACKENDS {
        let (cell, st) = backend_cell(b, input, probes.as_ref());
        match &cell.status {
            BackendStatus::Fail(why) if !covered(&selftest_name(b)) => {
                failures.extend(why.iter().map(|w| format!("{b}: {w}")));
            }
            // A guest that never got there is already a boot problem.
            BackendStatus::NotRun(why) if input.boot_problems.is_empty() => {
                failures.push(format!("{b}: {why}"));
            }
            _ => {}
        }
        if let Some(st) = st {
            if let Some(rel) = &input.release {
                if st.kernel != *rel {
                    failures.push(format!(
                        "{b}: selftest reports kernel {}, expected {rel}",
                        st.kernel
                    ));
                }
            }
            passed.push(st);
        }
        backends.push(cell);
    }
    let disagreements = agreement(&passed);
    for d in &disagreements {
        failures.push(format!(
            "backends disagree on scenario {}: {} vs {}",
            d.scenario, d.reference, d.other
        ));
    }
    let quiz = quiz_summary(input.results.iter().find(|r| r.name == QUIZ));
    if !covered(QUIZ) {
        failures.extend(quiz.problems.iter().cloned());
    }
    KernelRow {
        label: input.label.clone(),
        host: input.host,
        release: input.release.clone(),
        secs: input.secs,
        boot_problems: input.boot_problems.clone(),
        chosen: probes.and_then(|p| p.chosen),
        backends,
        disagreements,
        quiz,
        failures,
    }
}

/// The whole matrix: one row per kernel, plus the state-check comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Matrix {
    pub rows: Vec<KernelRow>,
    /// Kernels that could not even be booted (download or qemu errors).
    pub errors: Vec<String>,
}

impl Matrix {
    pub fn new(inputs: &[KernelInput], errors: Vec<String>) -> Self {
        Self {
            rows: inputs.iter().map(kernel_row).collect(),
            errors,
        }
    }

    /// Every reason to exit non-zero, prefixed with the kernel.
    pub fn failures(&self) -> Vec<String> {
        let mut f = self.errors.clone();
        for r in &self.rows {
            f.extend(r.failures.iter().map(|x| format!("{}: {x}", r.label)));
        }
        f
    }

    /// Rows of the "article vs kernels" state table: (check, step, article, observed per
    /// kernel row), in the order of first appearance.
    pub fn state_table(&self) -> Vec<(String, String, i8, Vec<Option<StateStep>>)> {
        let mut keys: Vec<(String, String, i8)> = Vec::new();
        for r in &self.rows {
            for s in &r.quiz.states {
                if !keys.iter().any(|(c, l, _)| *c == s.check && *l == s.label) {
                    keys.push((s.check.clone(), s.label.clone(), s.article));
                }
            }
        }
        keys.into_iter()
            .map(|(c, l, a)| {
                let per: Vec<Option<StateStep>> = self
                    .rows
                    .iter()
                    .map(|r| {
                        r.quiz
                            .states
                            .iter()
                            .find(|s| s.check == c && s.label == l)
                            .cloned()
                    })
                    .collect();
                (c, l, a, per)
            })
            .collect()
    }
}

// ------------------------------------------------------------------ rendering

fn backend_text(c: &BackendCell) -> String {
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

fn reuseaddr_text(r: &KernelRow) -> String {
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

fn agree_text(r: &KernelRow) -> String {
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

fn boot_text(r: &KernelRow) -> String {
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
                    fmt_fastreuse(s.article),
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
        let mut row = vec![check, label, fmt_fastreuse(article)];
        row.extend(per.iter().map(|s| match s {
            None => "-".to_owned(),
            Some(s) if s.differs() => format!("{} (differs)", s.observed_text()),
            Some(s) => s.observed_text(),
        }));
        rows.push(row);
    }
    rows
}

/// Aligned plain-text table with a dashed line under the header.
pub fn text_table(rows: &[Vec<String>]) -> String {
    let ncol = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..ncol)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        let line: Vec<String> = (0..ncol)
            .map(|c| {
                let cell = row.get(c).map_or("", String::as_str);
                let pad = widths[c].saturating_sub(cell.chars().count());
                format!("{cell}{}", " ".repeat(pad))
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
        if i == 0 {
            let sep: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            out.push_str(&sep.join("  "));
            out.push('\n');
        }
    }
    out
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

fn failure_lines(m: &Matrix) -> Vec<String> {
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
    out.push_str(&text_table(&backend_table(m)));
    out.push_str("\nQuizzes (`portwatch quiz --all`, automatic backend):\n");
    out.push_str(&text_table(&quiz_table(m)));
    out.push_str("\nState checks: fastreuse after each checked step, article vs kernels:\n");
    out.push_str(&text_table(&state_table_rows(m)));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn res(name: &str, rc: Option<i32>, output: &str) -> CmdResult {
        CmdResult {
            name: name.into(),
            rc,
            output: output.into(),
            secs: Some(1.5),
        }
    }

    const PROBES_61: &str = r#"portwatch: fentry: kernel has no inet_twsk_hashdance_schedule
{
  "attempts": [ { "backend": "fentry", "refused": null } ],
  "chosen": "fentry",
  "kernel": "6.1.0-56-cloud-amd64",
  "owners_mode": "tb->owners"
}"#;

    const PROBES_HOST: &str = r#"{
  "attempts": [
    { "backend": "fentry", "refused": "inet_csk_get_port: BPF_PROG_LOAD EPERM" },
    { "backend": "kprobe", "refused": "kernel has no kprobes" },
    { "backend": "tracepoint", "refused": null }
  ],
  "chosen": "tracepoint",
  "kernel": "6.18.44"
}"#;

    fn step(op: &str, port: u16, kind: &str, fr: Option<i8>, owners: u32, errno: i32) -> String {
        let fr = fr.map_or_else(|| "null".to_owned(), |v| v.to_string());
        format!(
            r#"{{"op":"{op}","port":{port},"kind":"{kind}","fastreuse":{fr},"fastreuseport":{fr},"owners":{owners},"errno":{errno}}}"#
        )
    }

    /// A selftest JSON document; `release_op` differs per backend like the real ones.
    fn selftest(kernel: &str, backend: &str, release_op: &str, reuse_fr: i8, fail: bool) -> String {
        let s1 = [
            step("connect", 60000, "bucket_created", Some(-1), 1, 0),
            step("bind", 60000, "owner_added", Some(0), 2, 0),
            step(release_op, 60000, "owner_removed", Some(0), 1, 0),
            step(release_op, 60000, "bucket_destroyed", None, 0, 0),
        ]
        .join(",");
        let s2 = [
            step("bind", 6000, "bucket_created", Some(reuse_fr), 1, 0),
            step(release_op, 6000, "bucket_destroyed", None, 0, 0),
        ]
        .join(",");
        let failures = if fail {
            r#"["owner_removed missing"]"#
        } else {
            "[]"
        };
        format!(
            r#"portwatch: backend: {backend}
{{"kernel":"{kernel}","backend":"{backend}","scenarios":[{{"name":"connect_bind_close","steps":[{s1}],"failures":{failures},"observations":[]}},{{"name":"reuseaddr_bind","steps":[{s2}],"failures":[],"observations":[["fastreuse after SO_REUSEADDR bind","{reuse_fr}"]]}}]}}"#
        )
    }

    fn quiz_json(reuse_article_step_observed: i8, quiz8: &str, error5: bool) -> String {
        let q = |id: &str, kind: &str, verdict: &str, err: bool| {
            let e = if err {
                r#""netns setup failed""#
            } else {
                "null"
            };
            format!(
                r#"{{"id":"{id}","kind":"{kind}","verdict":"{verdict}","error":{e},"sockets":[],"timeline":[]}}"#
            )
        };
        let mut qs = Vec::new();
        for i in 1..=8 {
            let id = i.to_string();
            let v = if i == 8 { quiz8 } else { "same" };
            qs.push(q(&id, "quiz", v, error5 && i == 5));
        }
        for id in ["3fix", "5fix", "6fix"] {
            qs.push(q(id, "fix", "same", false));
        }
        let obs = reuse_article_step_observed;
        let verdict = if obs == 1 { "same" } else { "finding" };
        format!(
            r#"portwatch: backend: tracepoint
{{
  "backend": "tracepoint",
  "quizzes": {{ "kernel": "k", "quizzes": [{}] }},
  "states": {{ "kernel": "k", "checks": [
    {{ "id": "-1/connect", "error": null, "steps": [
      {{ "label": "s1 socket", "article": null, "observed": null, "verdict": null }},
      {{ "label": "s1 connect", "article": -1, "observed": {{"bucket":"present","info":{{"fastreuse":-1,"fastreuseport":-1,"owners":1}}}}, "verdict": "same" }}
    ]}},
    {{ "id": "+1/reuseaddr-bind", "error": null, "steps": [
      {{ "label": "s1 bind", "article": 1, "observed": {{"bucket":"present","info":{{"fastreuse":{obs},"fastreuseport":0,"owners":1}}}}, "verdict": "{verdict}" }},
      {{ "label": "s2 bind", "article": 1, "observed": {{"bucket":"absent"}}, "verdict": "not_observed" }}
    ]}}
  ]}}
}}"#,
            qs.join(",")
        )
    }

    fn guest(label: &str, release: &str, results: Vec<CmdResult>) -> KernelInput {
        KernelInput {
            label: label.into(),
            host: false,
            release: Some(release.into()),
            secs: Some(12.0),
            boot_problems: vec![],
            results,
        }
    }

    fn all_pass_61() -> KernelInput {
        let k = "6.1.0-56-cloud-amd64";
        guest(
            "6.1",
            k,
            vec![
                res(PROBES, Some(0), PROBES_61),
                res(
                    "selftest-fentry",
                    Some(0),
                    &selftest(k, "fentry", "release", 1, false),
                ),
                res(
                    "selftest-kprobe",
                    Some(0),
                    &selftest(k, "kprobe", "release", 1, false),
                ),
                res(
                    "selftest-tracepoint",
                    Some(0),
                    &selftest(k, "tracepoint", "close", 1, false),
                ),
                res(QUIZ, Some(0), &quiz_json(1, "same", false)),
            ],
        )
    }

    #[test]
    fn matrix_cmds_are_valid_unique_and_json() {
        let c = matrix_cmds();
        assert!(c.iter().all(|c| c.validate().is_ok()));
        let names: std::collections::HashSet<_> = c.iter().map(|c| &c.name).collect();
        assert_eq!(names.len(), c.len());
        assert_eq!(c.len(), 5);
        assert!(c.iter().all(|c| c.argv.iter().any(|a| a == "--json")));
        assert!(c
            .iter()
            .any(|c| c.argv == ["portwatch", "selftest", "--probe", "kprobe", "--json"]));
    }

    #[test]
    fn extract_json_skips_stderr_lines_and_reports_missing_json() {
        let p: ProbesOut = extract_json(PROBES_61).unwrap();
        assert_eq!(p.chosen.as_deref(), Some("fentry"));
        assert_eq!(p.kernel, "6.1.0-56-cloud-amd64");
        // A brace line that is not the document, then the document.
        let mixed = "warning {weird}\n{ not json\n{\"kernel\":\"k\",\"attempts\":[]}\ntrailing\n";
        let p: ProbesOut = extract_json(mixed).unwrap();
        assert_eq!(p.kernel, "k");
        let e = extract_json::<ProbesOut>("portwatch: error: needs CAP_BPF\n").unwrap_err();
        assert!(e.contains("no JSON"), "{e}");
        let e = extract_json::<ProbesOut>("{\"kernel\": 3}\n").unwrap_err();
        assert!(e.contains("does not parse"), "{e}");
    }

    #[test]
    fn all_backends_pass_and_agree_ignoring_op() {
        let row = kernel_row(&all_pass_61());
        assert!(row.failures.is_empty(), "{:?}", row.failures);
        assert_eq!(row.passed_backends(), ["fentry", "kprobe", "tracepoint"]);
        assert!(row.disagreements.is_empty());
        assert!(row
            .backends
            .iter()
            .all(|c| c.reuseaddr_fastreuse.as_deref() == Some("+1")));
        assert_eq!(row.chosen.as_deref(), Some("fentry"));
        assert_eq!((row.quiz.quizzes_same, row.quiz.quizzes_total), (8, 8));
        assert_eq!((row.quiz.fixes_same, row.quiz.fixes_total), (3, 3));
        // The absent bucket is a finding (observed differs), not a failure.
        let f: Vec<_> = row.quiz.state_findings().collect();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].observed_text(), "absent");
    }

    #[test]
    fn host_refused_backends_are_not_failures() {
        let k = "6.18.44";
        let input = KernelInput {
            label: "host (6.18)".into(),
            host: true,
            release: Some(k.into()),
            secs: Some(4.0),
            boot_problems: vec![],
            results: vec![
                res(PROBES, Some(0), PROBES_HOST),
                res(
                    "selftest-fentry",
                    Some(2),
                    "portwatch: error: the fentry backend cannot run on this kernel: EPERM",
                ),
                res("selftest-kprobe", Some(2), "portwatch: error: no kprobes"),
                res(
                    "selftest-tracepoint",
                    Some(0),
                    &selftest(k, "tracepoint", "close", 0, false),
                ),
                res(QUIZ, Some(0), &quiz_json(0, "same", false)),
            ],
        };
        let row = kernel_row(&input);
        assert!(row.failures.is_empty(), "{:?}", row.failures);
        assert_eq!(
            row.backends[0].status,
            BackendStatus::Refused("inet_csk_get_port: BPF_PROG_LOAD EPERM".into())
        );
        assert_eq!(
            row.backends[1].status,
            BackendStatus::Refused("kernel has no kprobes".into())
        );
        assert_eq!(row.passed_backends(), ["tracepoint"]);
        let m = Matrix::new(&[input], vec![]);
        let t = text_table(&backend_table(&m));
        assert!(t.contains("refused: kernel has no kprobes"), "{t}");
        assert!(t.contains("n/a (1 passing)"), "{t}");
        assert!(t.contains("0 (tracepoint)"), "{t}");
        let q = text_table(&quiz_table(&m));
        assert!(
            q.contains(
                "+1/reuseaddr-bind s1 bind: +1 -> 0; +1/reuseaddr-bind s2 bind: +1 -> absent"
            ),
            "{q}"
        );
    }

    #[test]
    fn a_backend_that_is_not_refused_and_fails_is_a_failure() {
        let k = "6.12.117+deb12-cloud-amd64";
        let mut input = all_pass_61();
        input.label = "6.12".into();
        input.release = Some(k.into());
        input.results = vec![
            res(
                PROBES,
                Some(0),
                &PROBES_61.replace("6.1.0-56-cloud-amd64", k),
            ),
            res(
                "selftest-fentry",
                Some(1),
                &selftest(k, "fentry", "release", 1, true),
            ),
            res(
                "selftest-kprobe",
                Some(2),
                "portwatch: error: attaching kprobe failed",
            ),
            res(
                "selftest-tracepoint",
                None,
                "portwatch: backend: tracepoint",
            ),
            res(QUIZ, Some(0), &quiz_json(1, "same", false)),
        ];
        let row = kernel_row(&input);
        assert!(
            matches!(&row.backends[0].status, BackendStatus::Fail(w) if w[0].contains("connect_bind_close: owner_removed missing"))
        );
        assert!(
            matches!(&row.backends[1].status, BackendStatus::Fail(w) if w[0].contains("rc 2") && w[0].contains("attaching kprobe failed"))
        );
        assert!(
            matches!(&row.backends[2].status, BackendStatus::Fail(w) if w[0].contains("did not finish"))
        );
        assert_eq!(row.failures.len(), 3, "{:?}", row.failures);
        assert!(row.passed_backends().is_empty());
    }

    #[test]
    fn disagreement_is_a_failure_with_a_diff() {
        let k = "6.1.0-56-cloud-amd64";
        let mut input = all_pass_61();
        // kprobe misses the owner_removed step.
        let bad = selftest(k, "kprobe", "release", 1, false).replace(
            &format!(
                "{},",
                step("release", 60000, "owner_removed", Some(0), 1, 0)
            ),
            "",
        );
        assert_ne!(bad, selftest(k, "kprobe", "release", 1, false));
        input.results[2] = res("selftest-kprobe", Some(0), &bad);
        let row = kernel_row(&input);
        assert_eq!(row.disagreements.len(), 1, "{:?}", row.disagreements);
        let d = &row.disagreements[0];
        assert_eq!(
            (d.scenario.as_str(), d.reference.as_str(), d.other.as_str()),
            ("connect_bind_close", "fentry", "kprobe")
        );
        assert_eq!(
            d.diff,
            [
                "  port 60000 bucket_created fastreuse -1 fastreuseport -1 owners 1 errno 0",
                "  port 60000 owner_added fastreuse 0 fastreuseport 0 owners 2 errno 0",
                "- port 60000 owner_removed fastreuse 0 fastreuseport 0 owners 1 errno 0",
                "  port 60000 bucket_destroyed fastreuse - fastreuseport - owners 0 errno 0",
            ]
        );
        assert!(row
            .failures
            .iter()
            .any(|f| f.contains("backends disagree on scenario connect_bind_close")));
        let m = Matrix::new(&[input], vec![]);
        let text = render_text(&m);
        assert!(
            text.contains("NO: connect_bind_close (fentry vs kprobe)"),
            "{text}"
        );
        assert!(text.contains("    - port 60000 owner_removed"), "{text}");
    }

    #[test]
    fn differing_fastreuse_observation_between_backends_is_a_disagreement() {
        let k = "6.1.0-56-cloud-amd64";
        let mut input = all_pass_61();
        input.results[3] = res(
            "selftest-tracepoint",
            Some(0),
            &selftest(k, "tracepoint", "close", 0, false),
        );
        let row = kernel_row(&input);
        // Compared with the reference (fentry): kprobe agrees, tracepoint does not.
        assert_eq!(row.disagreements.len(), 1, "{:?}", row.disagreements);
        let d = &row.disagreements[0];
        assert_eq!(
            (d.scenario.as_str(), d.other.as_str()),
            ("reuseaddr_bind", "tracepoint")
        );
        assert_eq!(
            d.diff[0],
            "- port 6000 bucket_created fastreuse 1 fastreuseport 1 owners 1 errno 0"
        );
        assert_eq!(
            d.diff[1],
            "+ port 6000 bucket_created fastreuse 0 fastreuseport 0 owners 1 errno 0"
        );
        assert_eq!(reuseaddr_text(&row), "+1 (fentry, kprobe); 0 (tracepoint)");
    }

    #[test]
    fn quiz_that_could_not_run_is_a_failure_but_a_differing_one_is_not() {
        let mut input = all_pass_61();
        input.results[4] = res(QUIZ, Some(0), &quiz_json(1, "differs", false));
        let row = kernel_row(&input);
        assert!(row.failures.is_empty(), "{:?}", row.failures);
        assert_eq!(row.quiz.quiz_differs, ["8"]);
        assert!(row.quiz.fix_differs.is_empty());
        let q = text_table(&quiz_table(&Matrix::new(&[input.clone()], vec![])));
        assert!(q.contains("7/8 (differs: 8)"), "{q}");
        assert_eq!(row.quiz.quizzes_same, 7);

        input.results[4] = res(QUIZ, Some(1), &quiz_json(1, "same", true));
        let row = kernel_row(&input);
        assert!(
            row.failures
                .iter()
                .any(|f| f.contains("quiz 5 could not run: netns setup failed")),
            "{:?}",
            row.failures
        );
        assert!(row.failures.iter().any(|f| f.contains("rc 1")));

        input.results[4] = res(QUIZ, Some(101), "thread 'main' panicked");
        let row = kernel_row(&input);
        assert!(
            row.failures
                .iter()
                .any(|f| f.contains("printed no JSON") && f.contains("panicked")),
            "{:?}",
            row.failures
        );
        assert_eq!(
            text_table(&quiz_table(&Matrix::new(&[input], vec![])))
                .matches("not run")
                .count(),
            3
        );
    }

    #[test]
    fn boot_failure_fails_but_does_not_repeat_per_backend() {
        let mut input = all_pass_61();
        input.boot_problems = vec!["timed out after 180 s".into()];
        input.results.truncate(1);
        let row = kernel_row(&input);
        assert!(row
            .backends
            .iter()
            .all(|c| matches!(c.status, BackendStatus::NotRun(_))));
        // The boot problems name every command that did not run: nothing is repeated.
        assert_eq!(row.failures, ["timed out after 180 s"]);
        assert_eq!(boot_text(&row), "FAIL 12.0s");
        // Without boot problems, a command that never ran is a failure of its own.
        input.boot_problems.clear();
        let row = kernel_row(&input);
        assert!(
            row.failures.iter().any(|f| f == "quiz never ran"),
            "{:?}",
            row.failures
        );
        assert!(row
            .failures
            .iter()
            .any(|f| f == "fentry: selftest-fentry never ran"));
        assert_eq!(boot_text(&row), "ok 12.0s");
    }

    #[test]
    fn wrong_kernel_in_json_is_a_failure() {
        let mut input = all_pass_61();
        input.release = Some("6.1.0-99-cloud-amd64".into());
        let row = kernel_row(&input);
        assert!(row
            .failures
            .iter()
            .any(|f| f.starts_with("probes reports kernel 6.1.0-56")));
        assert!(row
            .failures
            .iter()
            .any(|f| f.starts_with("fentry: selftest reports kernel")));
    }

    #[test]
    fn state_table_lines_up_kernels_and_marks_differences() {
        let mut host = all_pass_61();
        host.label = "host (6.18)".into();
        host.results[4] = res(QUIZ, Some(0), &quiz_json(0, "same", false));
        let m = Matrix::new(
            &[all_pass_61(), host],
            vec!["6.12: apt-get download failed".into()],
        );
        let rows = state_table_rows(&m);
        assert_eq!(
            rows[0],
            ["state check", "step", "article", "6.1", "host (6.18)"]
        );
        assert_eq!(rows[1], ["-1/connect", "s1 connect", "-1", "-1", "-1"]);
        assert_eq!(
            rows[2],
            ["+1/reuseaddr-bind", "s1 bind", "+1", "+1", "0 (differs)"]
        );
        assert_eq!(
            rows[3],
            [
                "+1/reuseaddr-bind",
                "s2 bind",
                "+1",
                "absent (differs)",
                "absent (differs)"
            ]
        );
        assert_eq!(m.failures(), ["6.12: apt-get download failed"]);
        let md = render_markdown(&m, "Produced by `cargo xtask vm` on 2025-11-26.");
        assert!(md.starts_with("Produced by `cargo xtask vm` on 2025-11-26.\n"));
        assert!(
            md.contains("| +1/reuseaddr-bind | s1 bind | +1 | +1 | 0 (differs) |"),
            "{md}"
        );
        assert!(md.contains("|---|---|---|---|---|\n"));
        assert!(md.contains("```\n6.12: apt-get download failed\n```"));
    }

    #[test]
    fn diff_lines_marks_insertions_and_deletions() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            diff_lines(&v(&["a", "b", "c"]), &v(&["a", "x", "c", "d"])),
            ["  a", "- b", "+ x", "  c", "+ d"]
        );
        assert_eq!(diff_lines(&v(&[]), &v(&["a"])), ["+ a"]);
    }

    #[test]
    fn md_table_escapes_pipes() {
        let t = md_table(&[vec!["a".into(), "b".into()], vec!["x|y".into(), "z".into()]]);
        assert_eq!(t, "| a | b |\n|---|---|\n| x\\|y | z |\n");
    }
}
