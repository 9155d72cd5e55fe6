//! Text of `portwatch selftest` (its JSON is the serde form of
//! [`crate::selftest::SelftestReport`]).

use std::fmt::Write as _;

use crate::selftest::SelftestReport;

/// One line per scenario with PASS/FAIL, then its transitions, failures, observations.
pub fn report(r: &SelftestReport) -> String {
    let mut s = format!(
        "selftest on kernel {} with the {} backend\n",
        r.kernel, r.backend
    );
    for sc in &r.scenarios {
        let verdict = if sc.failures.is_empty() {
            "PASS"
        } else {
            "FAIL"
        };
        let _ = writeln!(s, "  {verdict} {}", sc.name);
        for st in &sc.steps {
            let fastreuse = st
                .fastreuse
                .map_or_else(|| "-".to_owned(), |v| v.to_string());
            let _ = write!(
                s,
                "      port {} {} ({}) fastreuse {fastreuse} owners {}",
                st.port, st.kind, st.op, st.owners
            );
            if let Some(e) = st.errno {
                let _ = write!(s, " {e:#}");
            }
            s.push('\n');
        }
        for f in &sc.failures {
            let _ = writeln!(s, "      failed: {f}");
        }
        for (k, v) in &sc.observations {
            let _ = writeln!(s, "      observed: {k} = {v}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::{Errno, Fastreuse, Op, TransitionKind},
        selftest::{ScenarioResult, ScenarioTransition},
    };

    #[test]
    fn report_lists_scenarios_transitions_and_findings() {
        let step = |kind, fr: Option<i8>, errno| ScenarioTransition {
            op: Op::Bind,
            port: 5000,
            kind,
            fastreuse: fr.map(Fastreuse),
            fastreuseport: fr.map(Fastreuse),
            owners: 1,
            errno,
        };
        let r = SelftestReport {
            kernel: "6.18.44".into(),
            backend: "tracepoint".into(),
            scenarios: vec![
                ScenarioResult {
                    name: "bind_conflict".into(),
                    steps: vec![
                        step(TransitionKind::BucketCreated, Some(1), None),
                        step(TransitionKind::BindFailed, Some(0), Some(Errno::EADDRINUSE)),
                    ],
                    failures: vec![],
                    observations: vec![("fastreuse after SO_REUSEADDR bind".into(), "+1".into())],
                },
                ScenarioResult {
                    name: "quiz3".into(),
                    steps: vec![step(TransitionKind::BucketDestroyed, None, None)],
                    failures: vec!["could not run: no netns".into()],
                    observations: vec![],
                },
            ],
        };
        let text = report(&r);
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            [
                "selftest on kernel 6.18.44 with the tracepoint backend",
                "  PASS bind_conflict",
                "      port 5000 bucket_created (bind) fastreuse +1 owners 1",
                "      port 5000 bind_failed (bind) fastreuse 0 owners 1 EADDRINUSE (98)",
                "      observed: fastreuse after SO_REUSEADDR bind = +1",
                "  FAIL quiz3",
                "      port 5000 bucket_destroyed (bind) fastreuse - owners 1",
                "      failed: could not run: no netns",
            ]
        );
        // The JSON xtask reads back.
        let json = serde_json::to_string(&r).expect("json");
        let back: SelftestReport = serde_json::from_str(&json).expect("round-trips");
        assert_eq!(back.scenarios[0].steps, r.scenarios[0].steps);
        let v: serde_json::Value = serde_json::from_str(&json).expect("json");
        let s = &v["scenarios"][0]["steps"][1];
        assert_eq!(
            *s,
            serde_json::json!({"op": "bind", "port": 5000, "kind": "bind_failed", "fastreuse": 0,
                               "fastreuseport": 0, "owners": 1, "errno": 98})
        );
        assert_eq!(v["scenarios"][0]["steps"][0]["errno"], 0);
        let other_op = ScenarioTransition {
            op: Op::Close,
            ..r.scenarios[0].steps[0].clone()
        };
        assert!(other_op.agrees_with(&r.scenarios[0].steps[0]));
        assert!(!r.scenarios[0].steps[1].agrees_with(&r.scenarios[0].steps[0]));
    }
}
