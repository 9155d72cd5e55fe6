//! `portwatch quiz`: the article's quizzes and state checks, replayed on this kernel.
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Args;
use portwatch::{
    backend::{ProbeChoice, SessionOptions, LOOKUP_RING_BYTES},
    observer::SessionObserver,
    quiz::{quiz_ids, render_quizzes, render_states, run_quizzes, run_states, summary_line, to_json},
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
    let states = if a.states || a.all { Some(run_states(&mut obs).context("replaying the state checks")?) } else { None };
    if a.json {
        let v = serde_json::json!({
            "quizzes": quizzes.as_ref().map(to_json).transpose()?.map(|s| serde_json::from_str::<serde_json::Value>(&s)).transpose()?,
            "states": states.as_ref().map(to_json).transpose()?.map(|s| serde_json::from_str::<serde_json::Value>(&s)).transpose()?,
            "backend": session.backend,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        if let Some(q) = &quizzes {
            print!("{}", render_quizzes(q));
        }
        if let Some(s) = &states {
            print!("{}", render_states(s));
        }
        if quizzes.is_some() && states.is_some() {
            println!("{}", summary_line(quizzes.as_ref(), states.as_ref()));
        }
    }
    let all_ran = quizzes.as_ref().is_none_or(|q| q.all_ran()) && states.as_ref().is_none_or(|s| s.all_ran());
    let differs = quizzes.as_ref().is_some_and(|q| !q.differences().is_empty())
        || states.as_ref().is_some_and(|s| !s.differences().is_empty());
    Ok(if !all_ran {
        ExitCode::from(1)
    } else if a.strict && differs {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}
