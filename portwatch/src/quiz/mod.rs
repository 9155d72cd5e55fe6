//! Replays of the article's quizzes ("The quantum state of a TCP port") against the
//! running kernel, each in its own private network namespace, plus the article's
//! state-machine checks (`--states`).
//!
//! - [`scenarios`]: the quizzes and checks as data;
//! - [`expect`]: outcomes, verdicts;
//! - [`runner`]: runs them with real sockets;
//! - [`results`]: the results, whose serde form is the `--json` output.
//!
//! Their text rendering is [`crate::render::quiz`].
//!
//! Bucket states come from an [`Observer`] (the eBPF tracer in the binary); without one,
//! [`NullObserver`] lets the quizzes run and compare syscall outcomes only.

pub mod expect;
pub mod results;
pub mod runner;
pub mod scenarios;

pub use expect::{Call, Outcome, StateVerdict, Verdict};
pub use results::{QuizReport, QuizResult, QuizRunReport, StateCheckResult, StatesReport};
pub use runner::{run_quizzes, run_states};
pub use scenarios::quiz_ids;

use crate::model::{BucketInfo, Transition};

/// Where the quiz runner gets bucket transitions and states from.
pub trait Observer {
    /// Start watching this netns (the tracer filters to it). Called once per quiz, before
    /// any socket op.
    fn watch(&mut self, netns: u32) -> anyhow::Result<()>;
    /// Transitions observed since the previous call (events are emitted synchronously at
    /// syscall exit, so after a syscall returns its transitions are available).
    fn collect(&mut self) -> anyhow::Result<Vec<Transition>>;
    /// The current state of the bucket (netns, port), None when there is no bucket (or the
    /// observer cannot tell: then return Err).
    fn bucket(&mut self, netns: u32, port: u16) -> anyhow::Result<Option<BucketInfo>>;
}

/// An observer that sees nothing: quizzes still run and compare syscall outcomes; timelines
/// stay empty and state checks report "not observed".
#[derive(Clone, Copy, Debug, Default)]
pub struct NullObserver;

impl Observer for NullObserver {
    fn watch(&mut self, _netns: u32) -> anyhow::Result<()> {
        Ok(())
    }

    fn collect(&mut self) -> anyhow::Result<Vec<Transition>> {
        Ok(Vec::new())
    }

    fn bucket(&mut self, _netns: u32, _port: u16) -> anyhow::Result<Option<BucketInfo>> {
        anyhow::bail!("no tracer attached (NullObserver): bucket states cannot be read; run with the eBPF tracer to observe them")
    }
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}
