//! The JSON documents portwatch prints in the guests (only the fields the matrix uses),
//! and pulling them out of a console log that mixes stderr lines with stdout.

use serde::{de::DeserializeOwned, Deserialize};
use serde_json::Value;

/// `portwatch probes --json` (only the fields used here).
#[derive(Debug, Clone, Deserialize)]
pub struct ProbesOut {
    pub kernel: String,
    #[serde(default)]
    pub chosen: Option<String>,
    #[serde(default)]
    pub attempts: Vec<Attempt>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Attempt {
    pub backend: String,
    #[serde(default)]
    pub refused: Option<String>,
}

/// `portwatch selftest --json`.
#[derive(Debug, Clone, Deserialize)]
pub struct SelftestOut {
    pub kernel: String,
    pub backend: String,
    pub scenarios: Vec<ScenarioOut>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ScenarioOut {
    pub name: String,
    /// Kept as JSON objects: every field but `op` takes part in the agreement check.
    #[serde(default)]
    pub steps: Vec<Value>,
    #[serde(default)]
    pub failures: Vec<String>,
    #[serde(default)]
    pub observations: Vec<(String, String)>,
}

impl SelftestOut {
    pub fn observation(&self, key: &str) -> Option<&str> {
        self.scenarios
            .iter()
            .flat_map(|s| &s.observations)
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// `portwatch quiz --all --json`.
#[derive(Debug, Clone, Deserialize)]
pub struct QuizOut {
    #[serde(default)]
    pub backend: Option<String>,
    #[serde(default)]
    pub quizzes: Option<QuizList>,
    #[serde(default)]
    pub states: Option<StateList>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct QuizList {
    pub quizzes: Vec<QuizItem>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct QuizItem {
    pub id: String,
    /// "quiz" or "fix".
    #[serde(default)]
    pub kind: String,
    /// "same", "differs" or "not run".
    pub verdict: String,
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StateList {
    pub checks: Vec<StateCheck>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StateCheck {
    pub id: String,
    #[serde(default)]
    pub steps: Vec<StateStepOut>,
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StateStepOut {
    pub label: String,
    /// The article's fastreuse after the step; `None`: the step is not checked.
    #[serde(default)]
    pub article: Option<i8>,
    #[serde(default)]
    pub observed: Option<ObservedOut>,
    /// "same", "finding", "not_observed".
    #[serde(default)]
    pub verdict: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ObservedOut {
    /// "present", "absent", "unavailable".
    #[serde(default)]
    pub bucket: Option<String>,
    #[serde(default)]
    pub info: Option<BucketInfoOut>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BucketInfoOut {
    pub fastreuse: i8,
}

/// The first JSON object of type `T` in a command's output. Guest output mixes stderr
/// lines (`portwatch: backend: ...`) with the JSON on stdout, so every line that starts
/// with `{` is tried as the start of a document.
pub fn extract_json<T: DeserializeOwned>(output: &str) -> Result<T, String> {
    let mut last_err = None;
    let mut offset = 0;
    for line in output.split_inclusive('\n') {
        if line.trim_start().starts_with('{') {
            let start = offset + (line.len() - line.trim_start().len());
            let mut it = serde_json::Deserializer::from_str(&output[start..]).into_iter::<T>();
            match it.next() {
                Some(Ok(v)) => return Ok(v),
                Some(Err(e)) => last_err = Some(e.to_string()),
                None => {}
            }
        }
        offset += line.len();
    }
    Err(match last_err {
        Some(e) => format!("its JSON does not parse: {e}"),
        None => "it printed no JSON".to_owned(),
    })
}

/// The last `n` non-empty lines of `output`, joined with " / " (for error messages).
pub fn tail(output: &str, n: usize) -> String {
    let lines: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let from = lines.len().saturating_sub(n);
    let t = lines[from..].join(" / ");
    if t.chars().count() > 300 {
        let cut: String = t.chars().take(300).collect();
        format!("{cut}...")
    } else if t.is_empty() {
        "no output".to_owned()
    } else {
        t
    }
}
