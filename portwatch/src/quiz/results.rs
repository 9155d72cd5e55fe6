//! Results of quiz and state-machine runs. Their serde form is the JSON of
//! `portwatch quiz --json`, which xtask reads back with these same types.

use serde::{Deserialize, Serialize};

use super::{
    expect::{Outcome, StateVerdict, Verdict},
    scenarios::{QuizKind, Sock},
};
use crate::model::{BucketInfo, Errno, Fastreuse, Transition};

/// Transitions the observer reported after one step.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// "setup listen", "s1 connect", "cleanup close s1", ...
    pub label: String,
    pub transitions: Vec<Transition>,
}

/// One client socket of a quiz.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SocketResult {
    pub socket: Sock,
    pub article: Outcome,
    /// `None` when the quiz could not run.
    pub observed: Option<Outcome>,
    pub verdict: Verdict,
    /// Why the article's outcome happens, in one line.
    pub why: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QuizResult {
    pub id: String,
    pub kind: QuizKind,
    pub title: String,
    /// The article's shorthand, one line per socket.
    pub notation: Vec<String>,
    /// The article's Python, one line per step.
    pub code: Vec<String>,
    /// Inode of the private netns the quiz ran in.
    pub netns: Option<u32>,
    pub sockets: Vec<SocketResult>,
    pub verdict: Verdict,
    /// Bucket transitions of the quiz's ports (the ephemeral port and the listener's).
    pub timeline: Vec<TimelineEntry>,
    /// The quiz could not run (setup failed).
    pub error: Option<String>,
    /// The observer failed: the timeline is incomplete (the outcomes are still valid).
    pub observer_error: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QuizReport {
    /// `uname -r`.
    pub kernel: String,
    pub quizzes: Vec<QuizResult>,
}

impl QuizReport {
    /// Every requested quiz ran to the end (none failed in setup).
    pub fn all_ran(&self) -> bool {
        self.quizzes
            .iter()
            .all(|q| q.error.is_none() && q.verdict != Verdict::NotRun)
    }

    /// Quizzes (and fixes) whose observed outcome differs from the article.
    pub fn differences(&self) -> Vec<&QuizResult> {
        self.quizzes
            .iter()
            .filter(|q| q.verdict == Verdict::Differs)
            .collect()
    }

    /// (matching the article, total) among quizzes of `kind`.
    pub fn matching(&self, kind: QuizKind) -> (usize, usize) {
        let of_kind = self.quizzes.iter().filter(|q| q.kind == kind);
        let total = of_kind.clone().count();
        let same = of_kind.filter(|q| q.verdict == Verdict::Same).count();
        (same, total)
    }
}

/// What the observer said about the bucket after a step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "bucket", rename_all = "snake_case")]
pub enum Observed {
    Present {
        info: BucketInfo,
    },
    /// The kernel has no bucket for the port.
    Absent,
    /// The observer cannot tell (e.g. no tracer).
    Unavailable {
        reason: String,
    },
}

impl Observed {
    pub fn fastreuse(&self) -> Option<Fastreuse> {
        match self {
            Observed::Present { info } => Some(info.fastreuse),
            _ => None,
        }
    }
}

/// One step of a state check.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StateStepResult {
    pub label: String,
    pub code: String,
    /// The syscall's error; every state step is expected to succeed.
    pub call_errno: Option<Errno>,
    /// Article's fastreuse after the step (`None`: not checked).
    pub article: Option<Fastreuse>,
    /// `None` when the step was not checked or not run.
    pub observed: Option<Observed>,
    pub verdict: Option<StateVerdict>,
    pub why: String,
    pub transitions: Vec<Transition>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StateCheckResult {
    pub id: String,
    pub title: String,
    /// The fastreuse the check starts from.
    pub from: Fastreuse,
    pub port: u16,
    pub netns: Option<u32>,
    pub notation: Vec<String>,
    pub steps: Vec<StateStepResult>,
    /// Setup failed or a syscall failed unexpectedly.
    pub error: Option<String>,
    pub observer_error: Option<String>,
}

impl StateCheckResult {
    /// Steps whose observed fastreuse differs from the article.
    pub fn findings(&self) -> impl Iterator<Item = &StateStepResult> {
        self.steps
            .iter()
            .filter(|s| s.verdict == Some(StateVerdict::Finding))
    }

    /// The start state of the check was not what the article says.
    pub fn start_not_reached(&self) -> Option<&StateStepResult> {
        self.steps
            .iter()
            .find(|s| s.verdict.is_some())
            .filter(|s| s.verdict == Some(StateVerdict::Finding))
    }

    pub fn observed_any(&self) -> bool {
        self.steps.iter().any(|s| {
            matches!(
                s.verdict,
                Some(StateVerdict::Same) | Some(StateVerdict::Finding)
            )
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatesReport {
    pub kernel: String,
    pub checks: Vec<StateCheckResult>,
}

impl StatesReport {
    /// Every check ran and every syscall in it succeeded.
    pub fn all_ran(&self) -> bool {
        self.checks.iter().all(|c| c.error.is_none())
    }

    /// Checks where the kernel's fastreuse differs from the article at some step: kernel
    /// findings, not failures.
    pub fn differences(&self) -> Vec<&StateCheckResult> {
        self.checks
            .iter()
            .filter(|c| c.findings().next().is_some())
            .collect()
    }

    /// At least one bucket state was read (false with no tracer).
    pub fn observed(&self) -> bool {
        self.checks.iter().any(StateCheckResult::observed_any)
    }
}

/// What `portwatch quiz --json` prints: the quizzes and/or the state checks that were
/// asked for, and the backend that observed them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QuizRunReport {
    /// `fentry`, `kprobe` or `tracepoint`; `None` when no tracer was attached.
    pub backend: Option<String>,
    pub quizzes: Option<QuizReport>,
    pub states: Option<StatesReport>,
}
