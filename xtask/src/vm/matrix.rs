//! The backend matrix built from the JSON that portwatch prints in each guest (and on
//! the host): kernel x backend -> pass / FAIL / refused, the fastreuse observed after an
//! SO_REUSEADDR bind, agreement between the backends that passed, the quiz and
//! state-check summary, and the failures that make `cargo xtask vm` exit non-zero.
//!
//! Everything here is pure (command outputs in, report out), so it is unit-tested with
//! canned JSON; no root, no qemu.

mod agree;
mod churn;
mod explain;
mod outputs;
mod quiz;
mod render;
#[cfg(test)]
mod tests;

use portwatch::model::Fastreuse;
use serde::Serialize;

pub use self::{agree::*, churn::*, explain::*, outputs::*, quiz::*, render::*};
use super::{CmdResult, GuestCmd};

/// The probe backends, in the order portwatch tries them.
pub const BACKENDS: [&str; 3] = ["fentry", "kprobe", "tracepoint"];
/// Name of the `portwatch probes --json` command.
pub const PROBES: &str = "probes";
/// Name of the `portwatch quiz --all --json` command.
pub const QUIZ: &str = "quiz";
/// Name of the `portwatch explain selftest --json` command.
pub const EXPLAIN: &str = "explain";
/// Generated cases of the explain judge per kernel: enough to exercise every rule, few
/// enough for a TCG guest (about 20 s on 5.10 and 6.1 under load).
pub const EXPLAIN_BIND_CASES: usize = 60;
pub const EXPLAIN_CONNECT_CASES: usize = 20;
/// The selftest observation reported per backend.
pub const REUSEADDR_OBSERVATION: &str = portwatch::selftest::observation::REUSEADDR;

/// Name of the selftest command of `backend`.
pub fn selftest_name(backend: &str) -> String {
    format!("selftest-{backend}")
}

/// The commands behind the matrix, run in every guest and on the host.
pub fn matrix_cmds(churn: &ChurnPlan) -> Vec<GuestCmd> {
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
    let (bind, connect) = (
        EXPLAIN_BIND_CASES.to_string(),
        EXPLAIN_CONNECT_CASES.to_string(),
    );
    c.push(GuestCmd::new(
        EXPLAIN,
        [
            "portwatch",
            "explain",
            "selftest",
            "--bind",
            &bind,
            "--connect",
            &connect,
            "--json",
        ],
    ));
    c.push(GuestCmd::new(CHURN, ["sh", "-c", &churn.script()]));
    c
}

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

#[derive(Debug, Clone, Serialize)]
pub struct KernelRow {
    pub label: String,
    pub host: bool,
    pub release: Option<String>,
    pub secs: Option<f64>,
    pub boot_problems: Vec<String>,
    /// Backend `portwatch probes` chose (auto).
    pub chosen: Option<String>,
    /// How the in-kernel walks run (`portwatch probes`).
    pub walk: Option<WalkReport>,
    /// What the kernel records per owner, from its compatibility-table rows.
    pub records: Records,
    /// Hooked functions a hook would miss calls of (inlined, cloned), from `probes`.
    pub hook_notes: Vec<String>,
    /// Kernel-dependent values the selftests observed (from the first passing backend).
    pub observations: Vec<(String, String)>,
    pub explain: ExplainSummary,
    pub backends: Vec<BackendCell>,
    pub disagreements: Vec<Disagreement>,
    pub quiz: QuizSummary,
    /// Single-worker churn untraced vs traced per backend (ratios; see [`TCG_CAVEAT`]).
    pub churn: ChurnSummary,
    /// Everything that makes this kernel's row a failure.
    pub failures: Vec<String>,
}

/// What a kernel records per owner socket, from its compatibility-table rows (`None`
/// when `probes` did not say).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Records {
    /// connect()-bound vs bound (row `connect-bind`, 6.18+).
    pub connect_bound: Option<bool>,
    /// IP_LOCAL_PORT_RANGE per socket (row `socket-port-range`, 6.3+ and 6.1.31+).
    pub socket_port_range: Option<bool>,
    /// A fastreuse pair per per-address bucket (row `tb2-fastreuse`, 6.18+).
    pub addr_fastreuse: Option<bool>,
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

pub fn backend_cell(
    backend: &str,
    input: &KernelInput,
    probes: Option<&ProbesOut>,
) -> (BackendCell, Option<SelftestReport>) {
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
    let parsed = extract_json::<SelftestReport>(&r.output);
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
    cell.reuseaddr_fastreuse = observation(&st, REUSEADDR_OBSERVATION).map(str::to_owned);
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
    let explain = explain_summary(input.results.iter().find(|r| r.name == EXPLAIN));
    if !covered(EXPLAIN) {
        failures.extend(explain.problems.iter().cloned());
    }
    let churn = ChurnSummary::new(
        input
            .results
            .iter()
            .find(|r| r.name == CHURN)
            .map(|r| r.output.as_str()),
        &backends,
    );
    if !covered(CHURN) {
        failures.extend(churn.problems.iter().map(|p| format!("churn: {p}")));
    }
    let observations = passed
        .first()
        .map(|st| {
            st.scenarios
                .iter()
                .flat_map(|s| s.observations.iter().cloned())
                .collect()
        })
        .unwrap_or_default();
    let records = probes.as_ref().map_or_else(Records::default, |p| Records {
        connect_bound: p.has("connect-bind"),
        socket_port_range: p.has("socket-port-range"),
        addr_fastreuse: p.has("tb2-fastreuse"),
    });
    let hook_notes = probes
        .as_ref()
        .and_then(|p| p.sites.as_ref())
        .map(|sites| {
            sites
                .iter()
                .filter(|(_, s)| !s.clones.is_empty() || !s.symbol || !s.cold.is_empty())
                .map(|(f, s)| format!("{f}: {}", s.describe()))
                .collect()
        })
        .unwrap_or_default();
    let walk = probes.as_ref().and_then(|p| p.walk.clone());
    KernelRow {
        label: input.label.clone(),
        host: input.host,
        release: input.release.clone(),
        secs: input.secs,
        boot_problems: input.boot_problems.clone(),
        chosen: probes.and_then(|p| p.chosen),
        walk,
        records,
        hook_notes,
        observations,
        explain,
        backends,
        disagreements,
        quiz,
        churn,
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
    pub fn state_table(&self) -> Vec<(String, String, Fastreuse, Vec<Option<StateStep>>)> {
        let mut keys: Vec<(String, String, Fastreuse)> = Vec::new();
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
