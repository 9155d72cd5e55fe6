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

const EXPLAIN_OK: &str = r#"{"kernel":{"major":6,"minor":1,"patch":192},"options":{"seed":1,"bind_cases":60,"connect_cases":20},"observations":[],"table_matches":true,"variant":{},"tally":{"bind_cases":60,"bind_calls":150,"connect_cases":20,"disagreements":[]},"secs":9.5}"#;

/// A value of one of portwatch's enums from its JSON name ("release", "bucket_created").
fn named<T: serde::de::DeserializeOwned>(name: &str) -> T {
    serde_json::from_value(serde_json::Value::String(name.to_owned())).unwrap()
}

fn transition(
    op: &str,
    port: u16,
    kind: &str,
    fr: Option<i8>,
    owners: u32,
) -> portwatch::selftest::ScenarioTransition {
    portwatch::selftest::ScenarioTransition {
        op: named(op),
        port,
        kind: named(kind),
        fastreuse: fr.map(Fastreuse),
        fastreuseport: fr.map(Fastreuse),
        owners,
        errno: None,
    }
}

/// One step as it appears inside a selftest document (to cut it out of one).
fn step(op: &str, port: u16, kind: &str, fr: Option<i8>, owners: u32) -> String {
    serde_json::to_string(&transition(op, port, kind, fr, owners)).unwrap()
}

/// A selftest JSON document (portwatch's own report type, serialised as portwatch
/// prints it); `release_op` differs per backend like the real ones.
fn selftest(kernel: &str, backend: &str, release_op: &str, reuse_fr: i8, fail: bool) -> String {
    use portwatch::selftest::{ScenarioResult, SelftestReport};
    let report = SelftestReport {
        kernel: kernel.into(),
        backend: backend.into(),
        scenarios: vec![
            ScenarioResult {
                name: "connect_bind_close".into(),
                steps: vec![
                    transition("connect", 60000, "bucket_created", Some(-1), 1),
                    transition("bind", 60000, "owner_added", Some(0), 2),
                    transition(release_op, 60000, "owner_removed", Some(0), 1),
                    transition(release_op, 60000, "bucket_destroyed", None, 0),
                ],
                failures: if fail {
                    vec!["owner_removed missing".into()]
                } else {
                    vec![]
                },
                observations: vec![],
            },
            ScenarioResult {
                name: "reuseaddr_bind".into(),
                steps: vec![
                    transition("bind", 6000, "bucket_created", Some(reuse_fr), 1),
                    transition(release_op, 6000, "bucket_destroyed", None, 0),
                ],
                failures: vec![],
                observations: vec![(
                    REUSEADDR_OBSERVATION.into(),
                    Fastreuse(reuse_fr).to_string(),
                )],
            },
        ],
    };
    format!(
        "portwatch: backend: {backend}\n{}",
        serde_json::to_string(&report).unwrap()
    )
}

/// A `quiz --all --json` document (portwatch's QuizRunReport): eight quizzes and three
/// fixes, and two state checks.
fn quiz_json(reuse_article_step_observed: i8, quiz8: &str, error5: bool) -> String {
    use portwatch::{
        model::{BucketInfo, OwnerCount},
        quiz::{
            expect::StateVerdict,
            results::{
                Observed, QuizReport, QuizResult, StateCheckResult, StateStepResult, StatesReport,
            },
        },
    };
    let q = |id: &str, kind: &str, verdict: &str, err: bool| QuizResult {
        id: id.into(),
        kind: named(kind),
        title: format!("quiz {id}"),
        notation: vec![],
        code: vec![],
        netns: None,
        sockets: vec![],
        verdict: named(verdict),
        timeline: vec![],
        error: err.then(|| "netns setup failed".to_owned()),
        observer_error: None,
    };
    let mut quizzes = Vec::new();
    for i in 1..=8 {
        let id = i.to_string();
        let v = if i == 8 { quiz8 } else { "same" };
        quizzes.push(q(&id, "quiz", v, error5 && i == 5));
    }
    for id in ["3fix", "5fix", "6fix"] {
        quizzes.push(q(id, "fix", "same", false));
    }
    let present = |fr: i8, frp: i8| Observed::Present {
        info: BucketInfo {
            fastreuse: Fastreuse(fr),
            fastreuseport: Fastreuse(frp),
            owners: OwnerCount::exact(1),
        },
    };
    let st = |label: &str,
              article: Option<i8>,
              observed: Option<Observed>,
              verdict: Option<StateVerdict>| {
        StateStepResult {
            label: label.into(),
            code: String::new(),
            call_errno: None,
            article: article.map(Fastreuse),
            observed,
            verdict,
            why: String::new(),
            transitions: vec![],
        }
    };
    let check = |id: &str, from: i8, steps| StateCheckResult {
        id: id.into(),
        title: id.into(),
        from: Fastreuse(from),
        port: 60000,
        netns: None,
        notation: vec![],
        steps,
        error: None,
        observer_error: None,
    };
    let obs = reuse_article_step_observed;
    let verdict = if obs == 1 {
        StateVerdict::Same
    } else {
        StateVerdict::Finding
    };
    let report = QuizRunReport {
        backend: Some("tracepoint".into()),
        quizzes: Some(QuizReport {
            kernel: "k".into(),
            quizzes,
        }),
        states: Some(StatesReport {
            kernel: "k".into(),
            checks: vec![
                check(
                    "-1/connect",
                    -1,
                    vec![
                        st("s1 socket", None, None, None),
                        st(
                            "s1 connect",
                            Some(-1),
                            Some(present(-1, -1)),
                            Some(StateVerdict::Same),
                        ),
                    ],
                ),
                check(
                    "+1/reuseaddr-bind",
                    1,
                    vec![
                        st("s1 bind", Some(1), Some(present(obs, 0)), Some(verdict)),
                        st(
                            "s2 bind",
                            Some(1),
                            Some(Observed::Absent),
                            Some(StateVerdict::NotObserved),
                        ),
                    ],
                ),
            ],
        }),
    };
    format!(
        "portwatch: backend: tracepoint\n{}",
        serde_json::to_string_pretty(&report).unwrap()
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
            res(EXPLAIN, Some(0), EXPLAIN_OK),
            res(CHURN, Some(0), &churn_output(&[])),
        ],
    )
}

/// The churn plan of the tests: the default one, with `--port 9`.
fn churn_plan() -> ChurnPlan {
    ChurnPlan {
        port9: true,
        ..ChurnPlan::default()
    }
}

/// The churn counters line for `cycles` in one second.
fn churn_done(cycles: u64) -> String {
    format!(
        r#"{{"done":true,"elapsed_s":1.0,"cycles":{cycles},"binds_ok":{cycles},"binds_failed":0,"listens_ok":0,"connects_ok":0,"connects_failed":0,"accepts_ok":0,"closes_bound":{cycles},"closes_released":0,"held":0}}"#
    )
}

/// What the churn script prints, run by run: untraced 1000 cycles/s (+ the round),
/// fentry 900, kprobe 800, tracepoint 500 with 3 drops reported during the bind run and
/// 7 in total (so 4 in the connect run), `--port 9` 990. The tracer of a backend in
/// `fails` does not start, and is skipped afterwards.
fn churn_output(fails: &[&str]) -> String {
    let plan = churn_plan();
    let vs = plan.variants();
    let mut out = format!("portwatch: something on stderr first\n{}\n", plan.header());
    let mut dead: Vec<&str> = Vec::new();
    for r in plan.plan() {
        let mode = r.workload.churn_args()[1];
        let first = r.workload == CHURN_WORKLOADS[0];
        out.push_str(&format!(
            "@@CHURN round={} mode={mode} variant={}@@\r\n",
            r.round, r.variant
        ));
        let ready = "{\"ready\":true,\"netns_path\":\"/proc/1/ns/net\",\"netns_inode\":1}\n";
        match &vs[r.variant] {
            None => out.push_str(&format!(
                "{ready}{}\n@@CHURN-END churn=0@@\n",
                churn_done(1000 + r.round as u64)
            )),
            Some(t) if dead.contains(&t.backend.as_str()) => {
                out.push_str("@@CHURN-END skipped@@\n")
            }
            Some(t) if fails.contains(&t.backend.as_str()) => {
                dead.push(fails.iter().find(|b| **b == t.backend).copied().unwrap());
                out.push_str(&format!(
                    "portwatch: error: the {} backend cannot run here\n@@CHURN-NOTREADY trace=2@@\n@@CHURN-END skipped@@\n",
                    t.backend
                ));
            }
            Some(t) => {
                let (rate, drops) = match (t.backend.as_str(), t.port9, first) {
                    (_, true, _) => (990, ""),
                    ("fentry", ..) => (900, ""),
                    ("kprobe", ..) => (800, ""),
                    (_, _, true) => (500, "portwatch: 3 events dropped (ring buffer full); their buckets were re-read (see the resync record)\n"),
                    _ => (500, "portwatch: 7 events dropped in total\n"),
                };
                let end = if first { "running" } else { "0" };
                out.push_str(&format!(
                    "{ready}{}\nportwatch: backend: {}\n{drops}@@CHURN-END churn=0 trace={end}@@\n",
                    churn_done(rate),
                    t.backend
                ));
            }
        }
    }
    out
}

#[test]
fn matrix_cmds_are_valid_unique_and_json() {
    let c = matrix_cmds(&ChurnPlan::default());
    assert!(c.iter().all(|c| c.validate().is_ok()));
    let names: std::collections::HashSet<_> = c.iter().map(|c| &c.name).collect();
    assert_eq!(names.len(), c.len());
    assert_eq!(c.len(), 7);
    assert!(c
        .iter()
        .filter(|c| c.name != CHURN)
        .all(|c| c.argv.iter().any(|a| a == "--json")));
    let churn = c.iter().find(|c| c.name == CHURN).unwrap();
    assert_eq!(churn.argv[..2], ["sh", "-c"]);
    assert!(churn.argv[2].contains("portwatch trace \"$@\""));
    assert!(c
        .iter()
        .any(|c| c.name == EXPLAIN && c.argv[..3] == ["portwatch", "explain", "selftest"]));
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
            res(EXPLAIN, Some(0), EXPLAIN_OK),
            res(CHURN, Some(0), &churn_output(&["fentry", "kprobe"])),
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
    let t = crate::table::text(&backend_table(&m));
    assert!(t.contains("refused: kernel has no kprobes"), "{t}");
    assert!(t.contains("n/a (1 passing)"), "{t}");
    assert!(t.contains("0 (tracepoint)"), "{t}");
    let q = crate::table::text(&quiz_table(&m));
    assert!(
        q.contains("+1/reuseaddr-bind s1 bind: +1 -> 0; +1/reuseaddr-bind s2 bind: +1 -> absent"),
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
        res(EXPLAIN, Some(0), EXPLAIN_OK),
        res(CHURN, Some(0), &churn_output(&[])),
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
        &format!("{},", step("release", 60000, "owner_removed", Some(0), 1)),
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
            "  port 60000 bucket_created fastreuse -1 fastreuseport -1 owners 1",
            "  port 60000 owner_added fastreuse 0 fastreuseport 0 owners 2",
            "- port 60000 owner_removed fastreuse 0 fastreuseport 0 owners 1",
            "  port 60000 bucket_destroyed fastreuse - fastreuseport - owners 0",
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
        "- port 6000 bucket_created fastreuse +1 fastreuseport +1 owners 1"
    );
    assert_eq!(
        d.diff[1],
        "+ port 6000 bucket_created fastreuse 0 fastreuseport 0 owners 1"
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
    let q = crate::table::text(&quiz_table(&Matrix::new(&[input.clone()], vec![])));
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
        crate::table::text(&quiz_table(&Matrix::new(&[input], vec![])))
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

#[test]
fn explain_disagreements_and_a_table_mismatch_are_failures() {
    let mut input = all_pass_61();
    let row = kernel_row(&input);
    assert!(
        row.explain.ran && row.explain.problems.is_empty(),
        "{:?}",
        row.explain
    );
    assert_eq!(
        row.explain.text(),
        "pass 1.5s (60 bind + 20 connect cases, 0 disagreements)"
    );
    let bad = EXPLAIN_OK
        .replace(
            r#""disagreements":[]"#,
            r#""disagreements":[{"case":"bind 7","what":"kernel EADDRINUSE, engine ok"}]"#,
        )
        .replace(r#""table_matches":true"#, r#""table_matches":false"#);
    input.results[5] = res(EXPLAIN, Some(1), &bad);
    let row = kernel_row(&input);
    assert_eq!(row.failures.len(), 2, "{:?}", row.failures);
    assert!(
        row.failures[0].contains("disagreed with the rules engine in 1 case(s)")
            && row.failures[0].contains("bind 7")
    );
    assert!(row.failures[1].contains("differ from the engine's table"));
    input.results.retain(|r| r.name != EXPLAIN);
    assert_eq!(kernel_row(&input).failures, ["explain never ran"]);
}

#[test]
fn kernel_table_and_what_differs_from_the_article() {
    let probes = r#"{"kernel":"5.10.0-46-cloud-amd64","chosen":"fentry","attempts":[{"backend":"fentry","refused":null}],
        "walk":{"driver":"bounded","owner_steps":16,"chain_steps":8,"snap_steps":16,"reason":"the kernel has no bpf_loop (5.17+)","refused_budgets":[]},
        "variants":[{"id":"connect-bind","present":false},{"id":"socket-port-range","present":false},{"id":"tb2-fastreuse","present":false}],
        "sites":{"inet_put_port":{"symbol":true,"clones":[],"cold":[],"ftrace":true},
                 "inet_csk_update_fastreuse":{"symbol":true,"clones":[],"cold":["inet_csk_update_fastreuse.cold"],"ftrace":true}}}"#;
    let mut input = all_pass_61();
    input.label = "5.10".into();
    input.release = Some("5.10.0-46-cloud-amd64".into());
    input.results[0] = res(PROBES, Some(0), probes);
    for (i, b) in BACKENDS.iter().enumerate() {
        let mut st = selftest("5.10.0-46-cloud-amd64", b, "release", 1, false);
        st = st.replace(
            r#""observations":[]"#,
            r#""observations":[["bucket after its only bind()-bound owner left","-1/-1"],["connect() to another remote after that","connect() reused the port"]]"#,
        );
        input.results[i + 1] = res(&selftest_name(b), Some(0), &st);
    }
    let row = kernel_row(&input);
    assert!(row.failures.is_empty(), "{:?}", row.failures);
    let m = Matrix::new(&[input], vec![]);
    let t = kernel_table(&m);
    assert_eq!(t[1][..6], ["5.10", "bounded loops 16/8/16", "inet_csk_update_fastreuse: text symbol, cold part inet_csk_update_fastreuse.cold, ftrace-able", "no", "no", "no"]);
    let d = article_differences(&m.rows[0]);
    assert!(
        d.iter()
            .any(|x| x.starts_with("state check +1/reuseaddr-bind")),
        "{d:?}"
    );
    assert!(
        d.iter().any(|x| x.contains("resets the bucket to -1/-1")
            && x.ends_with("then connect() reused the port")),
        "{d:?}"
    );
    // fastreuse +1 after an SO_REUSEADDR bind is what the article says: not listed.
    assert!(
        !d.iter().any(|x| x.contains("SO_REUSEADDR creates")),
        "{d:?}"
    );
    let md = render_markdown(&m, "x");
    assert!(
        md.contains("- **5.10** (5.10.0-46-cloud-amd64):\n  - state check"),
        "{md}"
    );
}

#[test]
fn churn_rows_are_the_medians_of_what_the_guest_measured() {
    let row = kernel_row(&all_pass_61());
    assert!(row.failures.is_empty(), "{:?}", row.failures);
    let c = &row.churn;
    assert!(c.ran && c.refused.is_empty());
    // 2 workloads x 3 backends x (no filter, --port 9).
    assert_eq!(c.rows.len(), 12);
    for w in CHURN_WORKLOADS {
        let tp = c.row(w, "tracepoint", "none").unwrap();
        // Untraced rounds 1000, 1001, 1002: median 1001.
        assert_eq!(tp.baseline_ops_s, Some(1001.0));
        assert_eq!(tp.traced_ops_s, Some(500.0));
        assert_eq!(tp.ratio, Some(500.0 / 1001.0));
        let drops = if w == CHURN_WORKLOADS[0] { 3 } else { 4 };
        assert_eq!(tp.dropped, vec![drops; churn_plan().rounds]);
        assert_eq!(tp.traced_rounds.len(), churn_plan().rounds);
        let k = c.row(w, "kprobe", "--port 9").unwrap();
        assert_eq!(k.ratio, Some(990.0 / 1001.0));
        assert_eq!(k.dropped, vec![0; churn_plan().rounds]);
        assert_eq!(
            c.row(w, "fentry", "none").unwrap().traced_ops_s,
            Some(900.0)
        );
    }
    let m = Matrix::new(&[all_pass_61()], vec![]);
    let t = crate::table::text(&churn_table(&m));
    assert!(t.contains("connect+accept+close"), "{t}");
    assert!(t.contains("0.50"), "{t}");
    // The spread of the rounds behind the medians: untraced 1000..1002, traced 500.
    assert!(t.contains("1000-1002; 500-500"), "{t}");
    assert!(
        t.contains(" 9 ") && t.contains(" 12 "),
        "3 and 4 drops in each of 3 rounds: {t}"
    );
    let md = render_markdown(&m, "Produced by `cargo xtask vm`.");
    assert!(
        md.contains("Tracing overhead per backend") && md.contains("TCG"),
        "{md}"
    );
}

#[test]
fn churn_of_a_refused_backend_shows_the_reason() {
    let k = "6.18.44";
    let mut input = all_pass_61();
    input.label = "host (6.18)".into();
    input.host = true;
    input.release = Some(k.into());
    input.results = vec![
        res(PROBES, Some(0), PROBES_HOST),
        res("selftest-fentry", Some(2), "portwatch: error: EPERM"),
        res("selftest-kprobe", Some(2), "portwatch: error: no kprobes"),
        res(
            "selftest-tracepoint",
            Some(0),
            &selftest(k, "tracepoint", "close", 1, false),
        ),
        res(QUIZ, Some(0), &quiz_json(1, "same", false)),
        res(EXPLAIN, Some(0), EXPLAIN_OK),
        res(CHURN, Some(0), &churn_output(&["fentry", "kprobe"])),
    ];
    let row = kernel_row(&input);
    assert!(row.failures.is_empty(), "{:?}", row.failures);
    let c = &row.churn;
    assert_eq!(
        c.refused
            .iter()
            .map(|r| r.backend.as_str())
            .collect::<Vec<_>>(),
        ["fentry", "kprobe"]
    );
    assert!(c.rows.iter().all(|r| r.backend == "tracepoint"));
    assert_eq!(c.rows.len(), 4);
    let m = Matrix::new(&[input], vec![]);
    let t = crate::table::text(&churn_table(&m));
    assert!(t.contains("refused: kernel has no kprobes"), "{t}");
}

#[test]
fn a_backend_that_attaches_without_a_churn_measurement_fails() {
    // kprobe passes its selftest but its tracer never started in the churn rounds.
    let mut input = all_pass_61();
    input.results.pop();
    input
        .results
        .push(res(CHURN, Some(0), &churn_output(&["kprobe"])));
    let row = kernel_row(&input);
    assert_eq!(row.failures.len(), 4, "{:?}", row.failures);
    for f in &row.failures {
        assert!(
            f.contains("backend kprobe attaches on this kernel but produced no churn measurement"),
            "{f}"
        );
    }
    assert!(
        row.failures[0].contains("did not start (rc 2)"),
        "{:?}",
        row.failures
    );
    // The measurements of the other backends stay.
    assert_eq!(
        row.churn
            .row(crate::bench::stats::Workload::Bind, "tracepoint", "none")
            .unwrap()
            .traced_ops_s,
        Some(500.0)
    );
    // Rounds cut short (a guest killed mid-run): the missing rounds are failures too.
    let full = churn_output(&[]);
    let cut = &full[..full.len() / 2];
    input.results.pop();
    input.results.push(res(CHURN, None, cut));
    let row = kernel_row(&input);
    assert!(
        row.failures
            .iter()
            .any(|f| f.contains("of 3 rounds of the untraced baseline ran")),
        "{:?}",
        row.failures
    );
    // One failed round of a backend that attaches, although the others gave a median.
    let one_bad = full.replacen(
        "@@CHURN-END churn=0 trace=0@@",
        "@@CHURN-END churn=0 trace=1@@",
        1,
    );
    input.results.pop();
    input.results.push(res(CHURN, Some(0), &one_bad));
    let row = kernel_row(&input);
    assert_eq!(row.failures.len(), 1, "{:?}", row.failures);
    assert!(
        row.failures[0].contains("1 of its rounds failed: churn under trace --probe")
            && row.failures[0].contains("portwatch trace exited with rc 1"),
        "{:?}",
        row.failures
    );
    // An output without its plan line cannot be read.
    let no_plan = full.replace(&churn_plan().header(), "");
    input.results.pop();
    input.results.push(res(CHURN, Some(0), &no_plan));
    let row = kernel_row(&input);
    assert_eq!(row.failures.len(), 1, "{:?}", row.failures);
    assert!(
        row.failures[0].contains("printed no plan line"),
        "{:?}",
        row.failures
    );
    // No churn command at all.
    input.results.pop();
    assert_eq!(kernel_row(&input).failures, ["churn: churn never ran"]);
}

/// The churn script itself, run by busybox sh (the guest's shell) with stand-ins for
/// portwatch (fentry refused; SIGTERM prints a drop total) and churn.
#[test]
fn churn_script_runs_every_round_and_frames_it() {
    use std::os::unix::fs::PermissionsExt;
    let busybox = crate::vm::initramfs::find_busybox()
        .expect("a static busybox (cargo xtask setup installs busybox-static)");
    let dir = std::env::temp_dir().join(format!("pw-churn-script-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fake = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    fake(
        "portwatch",
        r#"#!/bin/sh
probe=; ready=
while [ $# -gt 0 ]; do
    case "$1" in --probe) probe=$2; shift;; --ready-file) ready=$2; shift;; esac
    shift
done
if [ "$probe" = fentry ]; then echo "portwatch: error: fentry refused" >&2; exit 2; fi
trap 'echo "portwatch: 4 events dropped in total" >&2; exit 0' TERM
: > "$ready"
while :; do sleep 0.05; done
"#,
    );
    fake(
        "churn",
        &format!(
            "#!/bin/sh\nread -r go\necho '{{\"ready\":true}}'\n[ \"$go\" = go ] && echo '{}'\n",
            churn_done(2000)
        ),
    );
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap());
    let out = std::process::Command::new(&busybox)
        .args(["sh", "-c", &churn_plan().script()])
        .env("PATH", path)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(
        text.matches("@@CHURN round=").count(),
        churn_plan().plan().len()
    );
    assert_eq!(
        text.matches("@@CHURN-END").count(),
        churn_plan().plan().len()
    );
    // fentry fails to start once, then is skipped: 3 rounds x 2 variants x 2 workloads.
    assert_eq!(
        text.matches("@@CHURN-NOTREADY trace=2@@").count(),
        1,
        "{text}"
    );
    assert_eq!(text.matches("@@CHURN-END skipped@@").count(), 12, "{text}");
    let cells = [
        BackendCell {
            backend: "fentry".into(),
            status: BackendStatus::Refused("EPERM".into()),
            reuseaddr_fastreuse: None,
            secs: None,
        },
        BackendCell {
            backend: "kprobe".into(),
            status: BackendStatus::Pass,
            reuseaddr_fastreuse: None,
            secs: None,
        },
    ];
    let c = ChurnSummary::new(Some(&text), &cells);
    assert!(c.problems.is_empty(), "{:?}\n{text}", c.problems);
    assert_eq!(c.rows.len(), 8);
    for r in &c.rows {
        assert_eq!(r.ratio, Some(1.0), "{r:?}");
        // The stand-in reports no loss while running and 4 in total at exit: all of them
        // belong to the round's last workload.
        let drops = if r.workload == CHURN_WORKLOADS[0].name() {
            0
        } else {
            4
        };
        assert_eq!(r.dropped, vec![drops; churn_plan().rounds], "{r:?}");
    }
}
