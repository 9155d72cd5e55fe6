//! `portwatch quiz`: the article's quizzes and state checks, replayed on this kernel.
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Args;
use portwatch::{
    backend::{ProbeChoice, SessionOptions, LOOKUP_RING_BYTES},
    observer::SessionObserver,
    quiz::{quiz_ids, run_quizzes, run_states, QuizReport, QuizRunReport, StatesReport},
    render::quiz::{render_quizzes, render_states, summary_line},
};

/// Each replay runs in its own private network namespace (lo up,
/// ip_local_port_range 60000 60000 set inside it only, a listener on *:1234) with the
/// tracer attached and filtered to it. The host's sysctls are never touched.
#[derive(Debug, Args)]
pub struct QuizArgs {
    /// Quizzes to replay (1-8, 3fix, 5fix, 6fix); default: all.
    #[arg(value_name = "ID")]
    ids: Vec<String>,
    /// Replay the article's fastreuse transition checks (from -1, 0, +1) instead.
    #[arg(long)]
    states: bool,
    /// Both the quizzes and the state checks.
    #[arg(long, conflicts_with = "states")]
    all: bool,
    /// JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Also exit non-zero when this kernel differs from the article.
    #[arg(long)]
    strict: bool,
    /// Probe backend; `auto` tries fentry, then kprobe, then tracepoint.
    #[arg(long, value_enum, default_value = "auto")]
    probe: ProbeChoice,
}

pub fn run(a: QuizArgs) -> Result<ExitCode> {
    let valid = quiz_ids();
    for id in &a.ids {
        if !valid.contains(&id.as_str()) && id != "all" {
            anyhow::bail!("unknown quiz `{id}`; valid: {}", valid.join(", "));
        }
    }
    let mut session = super::open_session(&SessionOptions {
        probe: Some(a.probe),
        // Nothing until the first quiz names its namespace.
        netns: u32::MAX,
        snapshot_ring_bytes: Some(LOOKUP_RING_BYTES),
        ..SessionOptions::default()
    })?;
    eprintln!("portwatch: {}", session.backend_summary());
    let mut obs = SessionObserver::new(&mut session);
    let quizzes = if !a.states || a.all {
        Some(run_quizzes(&a.ids, &mut obs).context("replaying the quizzes")?)
    } else {
        None
    };
    let states = if a.states || a.all {
        Some(run_states(&mut obs).context("replaying the state checks")?)
    } else {
        None
    };
    let report = QuizRunReport {
        backend: session.backend.map(|b| b.as_str().to_owned()),
        quizzes,
        states,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        if let Some(q) = &report.quizzes {
            print!("{}", render_quizzes(q));
        }
        if let Some(s) = &report.states {
            print!("{}", render_states(s));
        }
        if report.quizzes.is_some() && report.states.is_some() {
            println!(
                "{}",
                summary_line(report.quizzes.as_ref(), report.states.as_ref())
            );
        }
    }
    Ok(exit_code(
        report.quizzes.as_ref(),
        report.states.as_ref(),
        a.strict,
    ))
}

/// 1 when a replay could not run, 3 with `--strict` when the kernel differs from the
/// article, else 0.
fn exit_code(
    quizzes: Option<&QuizReport>,
    states: Option<&StatesReport>,
    strict: bool,
) -> ExitCode {
    let all_ran = quizzes.is_none_or(|q| q.all_ran()) && states.is_none_or(|s| s.all_ran());
    let differs = quizzes.is_some_and(|q| !q.differences().is_empty())
        || states.is_some_and(|s| !s.differences().is_empty());
    if !all_ran {
        ExitCode::from(1)
    } else if strict && differs {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}
