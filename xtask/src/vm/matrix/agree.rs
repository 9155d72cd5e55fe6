//! Agreement between backends: the selftest steps of every passing backend (without
//! `op`, which names the hook that saw the change) compared scenario by scenario, with a
//! line diff when they differ.

use portwatch::{
    model::Fastreuse,
    selftest::{ScenarioTransition, SelftestReport},
};
use serde::Serialize;

/// Two passing backends saw different steps in one scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Disagreement {
    pub scenario: String,
    pub reference: String,
    pub other: String,
    /// Line diff of the steps (without `op`): "  " same, "- " reference only,
    /// "+ " other only.
    pub diff: Vec<String>,
}

/// One line per step, everything but `op` (what backends must agree on), values spelled
/// by portwatch's renderer: `port 6000 bucket_created fastreuse +1 fastreuseport +1
/// owners 1`, then the errno when there is one.
pub fn render_step(st: &ScenarioTransition) -> String {
    let opt = |v: Option<Fastreuse>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let mut line = format!(
        "port {} {} fastreuse {} fastreuseport {} owners {}",
        st.port,
        st.kind,
        opt(st.fastreuse),
        opt(st.fastreuseport),
        st.owners
    );
    if let Some(e) = st.errno {
        line.push_str(&format!(" {e:#}"));
    }
    line
}

/// Line diff (longest common subsequence) of two step lists.
pub fn diff_lines(a: &[String], b: &[String]) -> Vec<String> {
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out.push(format!("  {}", a[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push(format!("- {}", a[i]));
            i += 1;
        } else {
            out.push(format!("+ {}", b[j]));
            j += 1;
        }
    }
    out
}

/// Compares the selftest steps (without `op`) of every passing backend with the first
/// one, scenario by scenario (a scenario missing on one side is a disagreement too).
pub fn agreement(passed: &[SelftestReport]) -> Vec<Disagreement> {
    let Some((reference, others)) = passed.split_first() else {
        return Vec::new();
    };
    let steps_of = |st: &'_ SelftestReport, name: &str| -> Option<Vec<ScenarioTransition>> {
        st.scenarios
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.steps.clone())
    };
    // Equal but for `op` (ScenarioTransition::agrees_with), step by step.
    let agree =
        |a: &Option<Vec<ScenarioTransition>>, b: &Option<Vec<ScenarioTransition>>| match (a, b) {
            (Some(a), Some(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.agrees_with(y))
            }
            (None, None) => true,
            _ => false,
        };
    let lines = |steps: &Option<Vec<ScenarioTransition>>| -> Vec<String> {
        steps
            .as_ref()
            .map(|v| v.iter().map(render_step).collect())
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for other in others {
        let mut names: Vec<&str> = reference
            .scenarios
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        for s in &other.scenarios {
            if !names.contains(&s.name.as_str()) {
                names.push(&s.name);
            }
        }
        for name in names {
            let (a, b) = (steps_of(reference, name), steps_of(other, name));
            if agree(&a, &b) {
                continue;
            }
            let mut diff = Vec::new();
            if a.is_none() {
                diff.push(format!("(scenario missing on {})", reference.backend));
            }
            if b.is_none() {
                diff.push(format!("(scenario missing on {})", other.backend));
            }
            diff.extend(diff_lines(&lines(&a), &lines(&b)));
            out.push(Disagreement {
                scenario: name.to_owned(),
                reference: reference.backend.clone(),
                other: other.backend.clone(),
                diff,
            });
        }
    }
    out
}
