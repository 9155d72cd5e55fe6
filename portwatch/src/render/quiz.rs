//! Terminal rendering of quiz and state-check results, readable without the article.
//! (Their JSON is the serde form of the report types in [`crate::quiz::results`].)

use std::{fmt, fmt::Write as _};

use comfy_table::{presets, ContentArrangement, Table};

use super::transition::timeline_line;
use crate::quiz::{
    expect::{Outcome, StateVerdict, Verdict},
    results::{Observed, QuizReport, QuizResult, StateCheckResult, StatesReport},
    scenarios::{QuizKind, LISTEN_PORT, QUIZ_PORT},
};

/// `ok 127.0.0.1:60000 -> 127.8.8.8:1234`, `ok bound 127.0.0.1:60000`,
/// `bind() fails EADDRINUSE (98)`.
impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Connected { local, peer } => write!(f, "ok {local} -> {peer}"),
            Outcome::Bound { local } => write!(f, "ok bound {local}"),
            Outcome::Failed { call, errno } => write!(f, "{}() fails {errno:#}", call.as_str()),
        }
    }
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::ASCII_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    t
}

fn indent(text: &str, by: &str) -> String {
    text.lines().map(|l| format!("{by}{l}\n")).collect()
}

fn render_quiz(out: &mut String, q: &QuizResult) {
    let name = match q.kind {
        QuizKind::Quiz => format!("Quiz {}", q.id),
        QuizKind::Fix => format!("Fix {}", q.id),
    };
    let _ = writeln!(out, "{name}: {}", q.title);
    for n in &q.notation {
        let _ = writeln!(out, "  {n}");
    }
    let _ = writeln!(out, "  code:");
    for c in &q.code {
        let _ = writeln!(out, "    {c}");
    }
    if let Some(e) = &q.error {
        let _ = writeln!(out, "  NOT RUN: {e}");
    }
    let mut t = table(&["socket", "article", "observed", "verdict"]);
    for s in &q.sockets {
        let observed = s
            .observed
            .map(|o| o.to_string())
            .unwrap_or_else(|| "-".to_owned());
        let verdict = match s.verdict {
            Verdict::Differs => "DIFFERS".to_owned(),
            v => v.as_str().to_owned(),
        };
        t.add_row(vec![
            s.socket.name().to_owned(),
            s.article.to_string(),
            observed,
            verdict,
        ]);
    }
    out.push_str(&indent(&t.to_string(), "  "));
    for s in &q.sockets {
        let _ = writeln!(out, "  why {}: {}", s.socket.name(), s.why);
    }
    let lines: Vec<String> = q
        .timeline
        .iter()
        .flat_map(|e| {
            e.transitions
                .iter()
                .map(move |t| format!("    after {}: {}", e.label, timeline_line(t)))
        })
        .collect();
    match q.netns {
        Some(ns) => {
            let _ = writeln!(
                out,
                "  bucket timeline (netns {ns}, ports {QUIZ_PORT} and {LISTEN_PORT}):"
            );
        }
        None => {
            let _ = writeln!(out, "  bucket timeline:");
        }
    }
    if lines.is_empty() {
        let _ = writeln!(
            out,
            "    (no transitions observed; without the eBPF tracer none are recorded)"
        );
    }
    for l in lines {
        let _ = writeln!(out, "{l}");
    }
    if let Some(e) = &q.observer_error {
        let _ = writeln!(out, "  observer error (timeline incomplete): {e}");
    }
}

/// All quizzes, one block each, then the summary line.
pub fn render_quizzes(r: &QuizReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Replaying the quizzes of \"The quantum state of a TCP port\" on kernel {}.\n\
         Each runs in a fresh network namespace with one ephemeral port ({QUIZ_PORT}) and a \
         listener on *:{LISTEN_PORT};\ns1 is created and connected first, then s2. \
         \"article\" is the article's answer, \"observed\" what this kernel did.\n",
        r.kernel
    );
    for q in &r.quizzes {
        render_quiz(&mut out, q);
        out.push('\n');
    }
    let _ = writeln!(out, "{}", summary_line(Some(r), None));
    out
}

fn observed_cell(o: &Option<Observed>) -> String {
    match o {
        None => "-".to_owned(),
        Some(Observed::Present { info }) => info.fastreuse.to_string(),
        Some(Observed::Absent) => "no bucket".to_owned(),
        Some(Observed::Unavailable { .. }) => "not observed".to_owned(),
    }
}

fn render_check(out: &mut String, c: &StateCheckResult, kernel: &str) {
    let _ = writeln!(out, "Check {}: {} (port {})", c.id, c.title, c.port);
    for n in &c.notation {
        let _ = writeln!(out, "  {n}");
    }
    let mut t = table(&["step", "article fastreuse", "observed", "verdict"]);
    for s in &c.steps {
        let Some(article) = s.article else { continue };
        let verdict = match s.verdict {
            Some(StateVerdict::Same) => "same",
            Some(StateVerdict::Finding) => "FINDING",
            Some(StateVerdict::NotObserved) => "not observed",
            None => "not run",
        };
        t.add_row(vec![
            s.code.clone(),
            article.to_string(),
            observed_cell(&s.observed),
            verdict.to_owned(),
        ]);
    }
    out.push_str(&indent(&t.to_string(), "  "));
    for s in c.steps.iter().filter(|s| s.article.is_some()) {
        let _ = writeln!(out, "  why {}: {}", s.label, s.why);
    }
    for s in c.findings() {
        let seen = match &s.observed {
            Some(Observed::Present { info }) => {
                format!("fastreuse {}", info.fastreuse)
            }
            _ => "no bucket".to_owned(),
        };
        let article = s.article.map(|a| a.to_string()).unwrap_or_default();
        let _ = writeln!(
            out,
            "  finding (kernel {kernel}): after {} the bucket has {seen} where the article shows {article}",
            s.label
        );
    }
    if let Some(first) = c.start_not_reached() {
        let _ = writeln!(
            out,
            "  note: the start state {} was not reached ({}), so later steps start elsewhere",
            c.from,
            observed_cell(&first.observed)
        );
    }
    let unavailable = c.steps.iter().find_map(|s| match &s.observed {
        Some(Observed::Unavailable { reason }) => Some(reason.clone()),
        _ => None,
    });
    if let Some(reason) = unavailable {
        let _ = writeln!(out, "  not observed: {reason}");
    }
    let transitions: Vec<String> = c
        .steps
        .iter()
        .flat_map(|s| {
            s.transitions
                .iter()
                .map(move |t| format!("    after {}: {}", s.label, timeline_line(t)))
        })
        .collect();
    if !transitions.is_empty() {
        let _ = writeln!(out, "  bucket timeline:");
        for l in transitions {
            let _ = writeln!(out, "{l}");
        }
    }
    if let Some(e) = &c.error {
        let _ = writeln!(out, "  NOT RUN TO THE END: {e}");
    }
    if let Some(e) = &c.observer_error {
        let _ = writeln!(out, "  observer error: {e}");
    }
}

/// All state checks, then the summary line.
pub fn render_states(r: &StatesReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "The article's state machine of a bind bucket's fastreuse (-1 connect()-ed, 0 bound, \
         +1 bound with SO_REUSEADDR),\nchecked on kernel {}. Each check runs in a fresh network \
         namespace whose only ephemeral port is the port under test.\n\
         A difference is a finding about this kernel, not a failure.\n",
        r.kernel
    );
    for c in &r.checks {
        render_check(&mut out, c, &r.kernel);
        out.push('\n');
    }
    let _ = writeln!(out, "{}", summary_line(None, Some(r)));
    out
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The final line, e.g. "8/8 quizzes match the article; 3/3 fixes work; states: 2
/// differences on kernel 6.18.44 (findings, not failures)".
pub fn summary_line(quizzes: Option<&QuizReport>, states: Option<&StatesReport>) -> String {
    let mut parts = Vec::new();
    if let Some(q) = quizzes {
        let (same, total) = q.matching(QuizKind::Quiz);
        if total > 0 {
            parts.push(format!("{same}/{total} quizzes match the article"));
        }
        let (same, total) = q.matching(QuizKind::Fix);
        if total > 0 {
            parts.push(format!(
                "{same}/{total} {} work",
                if total == 1 { "fix" } else { "fixes" }
            ));
        }
        let differs: Vec<&str> = q.differences().iter().map(|r| r.id.as_str()).collect();
        if !differs.is_empty() {
            parts.push(format!("differs from the article: {}", differs.join(", ")));
        }
        let not_run = q
            .quizzes
            .iter()
            .filter(|r| r.verdict == Verdict::NotRun)
            .count();
        if not_run > 0 {
            parts.push(format!(
                "{} could not run",
                plural(not_run, "quiz", "quizzes")
            ));
        }
    }
    if let Some(s) = states {
        let n = s.checks.len();
        let failed = s.checks.iter().filter(|c| c.error.is_some()).count();
        let text = if !s.observed() {
            format!(
                "states: {} ran, bucket states not observed (no tracer)",
                plural(n - failed, "check", "checks")
            )
        } else {
            match s.differences().len() {
                0 => format!(
                    "states: all {n} checks match the article on kernel {}",
                    s.kernel
                ),
                d => format!(
                    "states: {} on kernel {} (findings, not failures)",
                    plural(d, "difference", "differences"),
                    s.kernel
                ),
            }
        };
        parts.push(text);
        if failed > 0 {
            parts.push(format!(
                "{} could not run to the end",
                plural(failed, "state check", "state checks")
            ));
        }
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use super::*;
    use crate::{
        model::{
            BucketInfo, BucketKey, Errno, Fastreuse, Op, OwnerCount, SockOpts, Task, Transition,
            TransitionKind,
        },
        quiz::{
            expect::Call,
            results::{SocketResult, StateStepResult, TimelineEntry},
            scenarios::{Sock, QUIZZES},
        },
    };

    fn tr(kind: TransitionKind, after: Option<(i8, u32)>) -> Transition {
        Transition {
            ts_ns: 1,
            kind,
            op: Op::Connect,
            key: BucketKey {
                netns: 4026532000,
                l3mdev: 0,
                port: 60000,
            },
            before: None,
            after: after.map(|(f, o)| BucketInfo {
                fastreuse: Fastreuse(f),
                fastreuseport: Fastreuse(f),
                owners: OwnerCount::exact(o),
            }),
            errno: None,
            task: Task::Process {
                pid: 7,
                comm: "portwatch".into(),
            },
            local: None,
            remote: None,
            opts: SockOpts::default(),
            port_from_range: false,
            explanation: None,
            addr: None,
        }
    }

    fn errno(n: i32) -> Errno {
        Errno::new(n).expect("non-zero")
    }

    #[test]
    fn outcome_display() {
        let fail = Outcome::Failed {
            call: Call::Bind,
            errno: errno(98),
        };
        assert_eq!(fail.to_string(), "bind() fails EADDRINUSE (98)");
        let ok = Outcome::Connected {
            local: a([127, 0, 0, 1], 60000),
            peer: a([127, 8, 8, 8], 1234),
        };
        assert_eq!(ok.to_string(), "ok 127.0.0.1:60000 -> 127.8.8.8:1234");
        let bound = Outcome::Bound {
            local: a([127, 0, 0, 1], 60000),
        };
        assert_eq!(bound.to_string(), "ok bound 127.0.0.1:60000");
    }

    fn a(ip: [u8; 4], port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from(ip), port)
    }

    fn quiz_result(id: &str, s2_observed: Outcome) -> QuizResult {
        let q = QUIZZES.iter().find(|q| q.id == id).unwrap();
        let sockets: Vec<SocketResult> = Sock::ALL
            .iter()
            .map(|s| {
                let art = q.expected[s.index()].outcome;
                let obs = if *s == Sock::S2 { s2_observed } else { art };
                SocketResult {
                    socket: *s,
                    article: art,
                    observed: Some(obs),
                    verdict: crate::quiz::expect::compare(&art, Some(&obs)),
                    why: q.expected[s.index()].why.into(),
                }
            })
            .collect();
        QuizResult {
            id: q.id.into(),
            kind: q.kind,
            title: q.title.into(),
            notation: q.notation(),
            code: q.code(),
            netns: Some(4026532000),
            verdict: Verdict::combine(sockets.iter().map(|s| s.verdict)),
            sockets,
            timeline: vec![TimelineEntry {
                label: "s1 connect".into(),
                transitions: vec![tr(TransitionKind::BucketCreated, Some((-1, 1)))],
            }],
            error: None,
            observer_error: None,
        }
    }

    #[test]
    fn quiz_rendering_explains_itself() {
        let ok = quiz_result(
            "3",
            Outcome::Failed {
                call: Call::Connect,
                errno: errno(99),
            },
        );
        let bad = quiz_result(
            "8",
            Outcome::Connected {
                local: a([127, 0, 0, 1], 60000),
                peer: a([127, 8, 8, 8], 1234),
            },
        );
        let report = QuizReport {
            kernel: "6.18.44".into(),
            quizzes: vec![ok, bad],
        };
        let text = render_quizzes(&report);
        assert!(text.contains("Quiz 3: Quiz 2 in reverse order"), "{text}");
        assert!(
            text.contains("  s1: bind 127.1.1.1:0, connect 127.9.9.9:1234"),
            "{text}"
        );
        assert!(
            text.contains("    s2.connect(('127.9.9.9', 1234))"),
            "{text}"
        );
        assert!(text.contains("| socket | article"), "{text}");
        assert!(
            text.contains("connect() fails EADDRNOTAVAIL (99)"),
            "{text}"
        );
        assert!(text.contains("DIFFERS"), "{text}");
        assert!(
            text.contains("why s2: connect() skips buckets not in state -1"),
            "{text}"
        );
        assert!(
            text.contains("    after s1 connect: port 60000 bucket_created fastreuse -1 owners 1"),
            "{text}"
        );
        assert!(
            text.trim_end()
                .ends_with("1/2 quizzes match the article; differs from the article: 8"),
            "{text}"
        );
        assert!(!report.differences().is_empty());
        assert!(report.all_ran());
    }

    #[test]
    fn summary_counts_quizzes_and_fixes() {
        let qs: Vec<QuizResult> = QUIZZES
            .iter()
            .map(|q| quiz_result(q.id, q.expected[1].outcome))
            .collect();
        let report = QuizReport {
            kernel: "6.18.44".into(),
            quizzes: qs,
        };
        assert_eq!(
            summary_line(Some(&report), None),
            "8/8 quizzes match the article; 3/3 fixes work"
        );
    }

    fn check(id: &str, article: i8, observed: Observed, verdict: StateVerdict) -> StateCheckResult {
        StateCheckResult {
            id: id.into(),
            title: "t".into(),
            from: Fastreuse(article),
            port: 60106,
            netns: Some(1),
            notation: vec!["s1: SO_REUSEADDR, bind 127.1.1.1:60106".into()],
            steps: vec![StateStepResult {
                label: "s1 bind".into(),
                code: "s1.bind(('127.1.1.1', 60106))".into(),
                call_errno: None,
                article: Some(Fastreuse(article)),
                observed: Some(observed),
                verdict: Some(verdict),
                why: "w".into(),
                transitions: vec![],
            }],
            error: None,
            observer_error: None,
        }
    }

    #[test]
    fn states_rendering_flags_findings_with_kernel() {
        let info = |f: i8| BucketInfo {
            fastreuse: Fastreuse(f),
            fastreuseport: Fastreuse(-1),
            owners: OwnerCount::exact(1),
        };
        let r = StatesReport {
            kernel: "6.18.44".into(),
            checks: vec![
                check(
                    "+1/bind",
                    1,
                    Observed::Present { info: info(0) },
                    StateVerdict::Finding,
                ),
                check(
                    "+1/x",
                    1,
                    Observed::Present { info: info(0) },
                    StateVerdict::Finding,
                ),
                check(
                    "0/bind",
                    0,
                    Observed::Present { info: info(0) },
                    StateVerdict::Same,
                ),
            ],
        };
        let text = render_states(&r);
        assert!(
            text.contains("s1: SO_REUSEADDR, bind 127.1.1.1:60106"),
            "{text}"
        );
        assert!(text.contains("FINDING"), "{text}");
        assert!(text.contains("finding (kernel 6.18.44): after s1 bind the bucket has fastreuse 0 where the article shows +1"), "{text}");
        assert!(
            text.contains("note: the start state +1 was not reached"),
            "{text}"
        );
        assert!(
            text.trim_end()
                .ends_with("states: 2 differences on kernel 6.18.44 (findings, not failures)"),
            "{text}"
        );

        let none = StatesReport {
            kernel: "6.18.44".into(),
            checks: vec![check(
                "0/bind",
                0,
                Observed::Unavailable {
                    reason: "no tracer".into(),
                },
                StateVerdict::NotObserved,
            )],
        };
        assert_eq!(
            summary_line(None, Some(&none)),
            "states: 1 check ran, bucket states not observed (no tracer)"
        );
        assert!(render_states(&none).contains("not observed: no tracer"));
    }

    #[test]
    fn json_has_the_fields_the_cli_documents() {
        let report = QuizReport {
            kernel: "k".into(),
            quizzes: vec![quiz_result(
                "5",
                Outcome::Failed {
                    call: Call::Bind,
                    errno: errno(98),
                },
            )],
        };
        let v: serde_json::Value =
            serde_json::from_str(&serde_json::to_string_pretty(&report).unwrap()).unwrap();
        let q = &v["quizzes"][0];
        assert_eq!(q["id"], "5");
        assert_eq!(q["verdict"], "same");
        assert_eq!(q["sockets"][1]["article"]["result"], "failed");
        assert_eq!(q["sockets"][1]["observed"]["errno"], 98);
        assert_eq!(q["timeline"][0]["label"], "s1 connect");
        assert!(q["code"].as_array().unwrap().len() >= 4);
    }
}
