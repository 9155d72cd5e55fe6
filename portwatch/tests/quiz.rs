//! Root integration tests of `portwatch quiz`: the replays run in private namespaces the
//! tool creates; the host's port range must be untouched.
mod common;

use std::process::Command;

use common::{bin, require_root};
use serde_json::Value;

fn host_range() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").expect("host port range")
}

fn quiz_json(args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(bin())
        .arg("quiz")
        .args(args)
        .arg("--json")
        .output()
        .expect("running portwatch quiz");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let v: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("quiz --json is not JSON ({e}): {stdout}\n{stderr}"));
    (out.status.code().unwrap_or(-1), v, stderr)
}

fn kernel_at_least(major: u32, minor: u32) -> bool {
    let rel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut it = rel
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    let ma: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let mi: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (ma, mi) >= (major, minor)
}

#[test]
fn every_quiz_and_fix_matches_the_article_with_timelines() {
    if !require_root("every_quiz_and_fix_matches_the_article_with_timelines") {
        return;
    }
    let before = host_range();
    let (code, v, err) = quiz_json(&["--strict"]);
    assert_eq!(
        host_range(),
        before,
        "the host's ip_local_port_range must not change"
    );
    assert_eq!(
        code, 0,
        "all replays ran and match (--strict); stderr: {err}"
    );
    let quizzes = v["quizzes"]["quizzes"].as_array().expect("quizzes array");
    assert_eq!(quizzes.len(), 11, "8 quizzes and 3 fixes");
    let mut inodes = std::collections::HashSet::new();
    for q in quizzes {
        let id = q["id"].as_str().unwrap_or("?");
        assert_eq!(q["verdict"], "same", "quiz {id}: {q}");
        assert!(
            q["observer_error"].is_null(),
            "quiz {id}: the tracer worked: {}",
            q["observer_error"]
        );
        assert!(
            inodes.insert(q["netns"].as_u64().expect("netns")),
            "quiz {id} has its own netns"
        );
        // Every quiz's timeline shows port 60000 being used (created or failing).
        let kinds: Vec<(u64, String)> = q["timeline"]
            .as_array()
            .expect("timeline")
            .iter()
            .flat_map(|e| e["transitions"].as_array().cloned().unwrap_or_default())
            .map(|t| {
                (
                    t["key"]["port"].as_u64().unwrap_or(0),
                    t["kind"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        assert!(
            kinds
                .iter()
                .any(|(p, k)| *p == 60000 && k == "bucket_created"),
            "quiz {id}: {kinds:?}"
        );
        assert!(
            kinds
                .iter()
                .any(|(p, k)| *p == 1234 && k == "bucket_created"),
            "quiz {id}: {kinds:?}"
        );
    }
    let by_id = |id: &str| {
        quizzes
            .iter()
            .find(|q| q["id"] == id)
            .unwrap_or_else(|| panic!("quiz {id} missing"))
    };
    // Quiz 3: s2's connect fails with EADDRNOTAVAIL, and the tracer saw it on 60000.
    let q3 = by_id("3");
    let s2 = &q3["sockets"][1];
    assert_eq!(s2["observed"]["errno"], 99, "{s2}");
    let failed: Vec<&Value> = q3["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .flat_map(|e| e["transitions"].as_array().into_iter().flatten())
        .filter(|t| t["kind"] == "connect_failed")
        .collect();
    assert_eq!(failed.len(), 1, "{q3}");
    assert_eq!(failed[0]["errno"], 99);
    assert_eq!(failed[0]["key"]["port"], 60000);
    assert_eq!(
        failed[0]["after"]["fastreuse"], 0,
        "s1's bind() made the bucket 0"
    );
    // Quiz 5 and 6 fail s2's bind with EADDRINUSE; quiz 8 fails s2's connect.
    assert_eq!(by_id("5")["sockets"][1]["observed"]["errno"], 98);
    assert_eq!(by_id("6")["sockets"][1]["observed"]["errno"], 98);
    assert_eq!(by_id("8")["sockets"][1]["observed"]["errno"], 99);
}

#[test]
fn states_report_observed_values_and_flag_differences() {
    if !require_root("states_report_observed_values_and_flag_differences") {
        return;
    }
    let before = host_range();
    let (code, v, err) = quiz_json(&["--states"]);
    assert_eq!(host_range(), before);
    assert_eq!(
        code, 0,
        "differences are findings, not failures; stderr: {err}"
    );
    let checks = v["states"]["checks"].as_array().expect("checks");
    assert_eq!(
        checks.len(),
        9,
        "the article's eight (from -1, 0, +1) and a port release from 0 back towards -1: {}",
        checks.len()
    );
    let mut findings = 0;
    for c in checks {
        for s in c["steps"].as_array().expect("steps") {
            if s["article"].is_null() {
                continue;
            }
            let observed = &s["observed"]["info"]["fastreuse"];
            assert!(
                observed.is_i64(),
                "every step is observed by the tracer: {s}"
            );
            let same = observed.as_i64() == s["article"].as_i64();
            assert_eq!(
                s["verdict"] == "same",
                same,
                "verdict follows the observation: {s}"
            );
            if !same {
                findings += 1;
            }
        }
    }
    let step = |id: &str, i: usize| {
        let c = checks
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("check {id}"));
        let steps: Vec<&Value> = c["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .filter(|s| !s["article"].is_null())
            .collect();
        steps[i]["observed"]["info"]["fastreuse"]
            .as_i64()
            .expect("observed")
    };
    // Values every kernel since the article agrees on.
    assert_eq!(step("-1/connect", 0), -1);
    assert_eq!(
        step("-1/connect", 1),
        -1,
        "connect to another remote keeps -1"
    );
    if kernel_at_least(6, 18) {
        // 6.18 links the new per-address bucket into tb->bhash2 before
        // inet_csk_update_fastreuse tests hlist_empty(&tb->bhash2): a bucket created by
        // an SO_REUSEADDR bind starts at 0, not +1. Exactly those two steps differ.
        assert_eq!(step("+1/reuseaddr-bind", 0), 0);
        assert_eq!(step("+1/reuseaddr-bind", 1), 0);
        assert_eq!(step("+1/bind", 0), 0);
        // "tcp: Update bind bucket state on port release" (d57f4b874946, 6.18): s2's
        // release leaves only connect()-bound s1, and the bucket returns to -1.
        assert_eq!(step("-1/bind-release", 1), 0);
        assert_eq!(step("-1/bind-release", 2), -1);
        assert_eq!(
            findings, 4,
            "the three SO_REUSEADDR-created steps and the release are findings on 6.18"
        );
    } else {
        // Before 6.18 a bucket keeps its state until it is destroyed, as the article has it.
        assert_eq!(step("-1/bind-release", 2), 0);
    }
}

#[test]
fn quiz_subset_unknown_id_and_text_output() {
    if !require_root("quiz_subset_unknown_id_and_text_output") {
        return;
    }
    let out = Command::new(bin())
        .args(["quiz", "3", "6fix"])
        .output()
        .expect("quiz");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("Quiz 3") && text.contains("EADDRNOTAVAIL"),
        "{text}"
    );
    assert!(!text.contains("Quiz 5"), "only the asked quizzes: {text}");
    assert!(
        text.contains("2/2") || text.contains("match the article"),
        "{text}"
    );
    let bad = Command::new(bin())
        .args(["quiz", "42"])
        .output()
        .expect("quiz");
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("unknown quiz `42`") && err.contains("3fix"),
        "{err}"
    );
}
