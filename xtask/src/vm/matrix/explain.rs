//! `portwatch explain selftest --json` on one kernel, summarised: the rules engine judged
//! by the running kernel (generated bind() and connect() cases in private netns).

use serde::Serialize;

use super::{extract_json, tail, ExplainOut, EXPLAIN};
use crate::vm::CmdResult;

#[derive(Debug, Clone, Default, Serialize)]
pub struct ExplainSummary {
    pub ran: bool,
    pub bind_cases: usize,
    pub connect_cases: usize,
    pub disagreements: usize,
    /// The rules the kernel showed are the ones the engine's table has for its version.
    pub table_matches: bool,
    pub secs: Option<f64>,
    /// Why the judge failed or could not run; non-empty = failure.
    pub problems: Vec<String>,
}

impl ExplainSummary {
    pub fn text(&self) -> String {
        if !self.ran {
            return "not run".to_owned();
        }
        let verdict = if self.problems.is_empty() {
            "pass"
        } else {
            "FAIL"
        };
        let t = self.secs.map(|s| format!(" {s:.1}s")).unwrap_or_default();
        format!(
            "{verdict}{t} ({} bind + {} connect cases, {} disagreements{})",
            self.bind_cases,
            self.connect_cases,
            self.disagreements,
            if self.table_matches {
                ""
            } else {
                ", rules differ from the table"
            }
        )
    }
}

/// Summarises `portwatch explain selftest --json` (`None`: the command never ran).
pub fn explain_summary(r: Option<&CmdResult>) -> ExplainSummary {
    let mut s = ExplainSummary::default();
    let Some(r) = r else {
        s.problems.push(format!("{EXPLAIN} never ran"));
        return s;
    };
    s.secs = r.secs;
    let Some(rc) = r.rc else {
        s.problems
            .push(format!("{EXPLAIN} did not finish: {}", tail(&r.output, 3)));
        return s;
    };
    let out = match extract_json::<ExplainOut>(&r.output) {
        Ok(o) => o,
        Err(e) => {
            s.problems.push(format!(
                "{EXPLAIN} exited with rc {rc} and {e}: {}",
                tail(&r.output, 3)
            ));
            return s;
        }
    };
    s.ran = true;
    s.bind_cases = out.tally.bind_cases;
    s.connect_cases = out.tally.connect_cases;
    s.disagreements = out.tally.disagreements.len();
    s.table_matches = out.table_matches;
    if s.disagreements > 0 {
        s.problems.push(format!(
            "{EXPLAIN}: the kernel disagreed with the rules engine in {} case(s): {}",
            s.disagreements,
            out.tally
                .disagreements
                .iter()
                .take(3)
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    if !out.table_matches {
        s.problems.push(format!(
            "{EXPLAIN}: the rules the kernel showed differ from the engine's table for its version"
        ));
    }
    if rc != 0 && s.problems.is_empty() {
        s.problems.push(format!(
            "{EXPLAIN} exited with rc {rc} without a disagreement"
        ));
    }
    s
}
