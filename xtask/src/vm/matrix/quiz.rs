//! `portwatch quiz --all --json` on one kernel, summarised: quizzes and fixes as in the
//! article, and every checked state step (article vs observed fastreuse).

use portwatch::{
    model::Fastreuse,
    quiz::{
        expect::{StateVerdict, Verdict},
        results::Observed,
        scenarios::QuizKind,
    },
};
use serde::Serialize;

use super::{extract_json, tail, QuizRunReport, QUIZ};
use crate::vm::CmdResult;

/// A checked step of a state check (`quiz --states`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateStep {
    pub check: String,
    pub label: String,
    pub article: Fastreuse,
    /// Observed fastreuse; `None` when the bucket could not be read.
    pub observed: Option<Fastreuse>,
    /// "present", "absent", "unavailable", or `None` when the step did not run.
    pub bucket: Option<&'static str>,
    pub verdict: Option<StateVerdict>,
}

impl StateStep {
    pub fn differs(&self) -> bool {
        self.observed != Some(self.article)
    }

    pub fn observed_text(&self) -> String {
        match (self.observed, self.bucket) {
            (Some(v), _) => v.to_string(),
            (None, Some(b)) => b.to_owned(),
            (None, None) => "not run".to_owned(),
        }
    }
}

/// The observer's answer, as quiz's JSON names it.
fn bucket_word(o: &Observed) -> &'static str {
    match o {
        Observed::Present { .. } => "present",
        Observed::Absent => "absent",
        Observed::Unavailable { .. } => "unavailable",
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

/// Summarises `portwatch quiz --all --json` (`None`: the command never ran).
pub fn quiz_summary(r: Option<&CmdResult>) -> QuizSummary {
    let mut s = QuizSummary::default();
    let Some(r) = r else {
        s.problems.push(format!("{QUIZ} never ran"));
        return s;
    };
    let q = match (r.rc, extract_json::<QuizRunReport>(&r.output)) {
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
                let same = z.verdict == Verdict::Same;
                let fix = z.kind == QuizKind::Fix;
                if fix {
                    s.fixes_total += 1;
                    s.fixes_same += usize::from(same);
                } else {
                    s.quizzes_total += 1;
                    s.quizzes_same += usize::from(same);
                }
                if let Some(e) = &z.error {
                    s.problems.push(format!("quiz {} could not run: {e}", z.id));
                } else if z.verdict == Verdict::NotRun {
                    s.problems.push(format!("quiz {} did not run", z.id));
                } else if !same && fix {
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
                        observed: st.observed.as_ref().and_then(Observed::fastreuse),
                        bucket: st.observed.as_ref().map(bucket_word),
                        verdict: st.verdict,
                    });
                }
            }
        }
    }
    s
}
