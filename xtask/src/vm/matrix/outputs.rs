//! The JSON documents portwatch prints in the guests, and pulling them out of a console
//! log that mixes stderr lines with stdout. selftest and quiz documents are read into
//! portwatch's own report types ([`SelftestReport`], [`QuizRunReport`]), so the schema
//! has one definition.

use std::collections::BTreeMap;

pub use portwatch::{
    backend::WalkReport, kernel::symbols::HookSite, quiz::results::QuizRunReport,
    selftest::SelftestReport,
};
use serde::{de::DeserializeOwned, Deserialize};

/// `portwatch probes --json` (only the fields used here). portwatch builds that document
/// without a report type of its own (cmd/probes.rs), so its top-level fields are read
/// here; the walk report and the hook sites are portwatch's own types.
#[derive(Debug, Clone, Deserialize)]
pub struct ProbesOut {
    pub kernel: String,
    #[serde(default)]
    pub chosen: Option<String>,
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    /// How the in-kernel walks run there.
    #[serde(default)]
    pub walk: Option<WalkReport>,
    /// Every row of the compatibility table: whether the kernel has it.
    #[serde(default)]
    pub variants: Vec<VariantOut>,
    /// Where the tracked functions are in the kernel's text.
    #[serde(default)]
    pub sites: Option<BTreeMap<String, HookSite>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct VariantOut {
    pub id: String,
    pub present: bool,
}

impl ProbesOut {
    /// Whether the kernel has the compatibility-table row `id` (`None`: not reported).
    pub fn has(&self, id: &str) -> Option<bool> {
        self.variants.iter().find(|v| v.id == id).map(|v| v.present)
    }
}

/// `portwatch explain selftest --json` (only the fields used here; portwatch builds that
/// document without a report type of its own, cmd/explain.rs).
#[derive(Debug, Clone, Deserialize)]
pub struct ExplainOut {
    pub table_matches: bool,
    pub tally: ExplainTally,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ExplainTally {
    pub bind_cases: usize,
    pub connect_cases: usize,
    #[serde(default)]
    pub disagreements: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Attempt {
    pub backend: String,
    #[serde(default)]
    pub refused: Option<String>,
}

/// A selftest observation ("fastreuse after SO_REUSEADDR bind") of any scenario.
pub fn observation<'a>(st: &'a SelftestReport, key: &str) -> Option<&'a str> {
    st.scenarios
        .iter()
        .flat_map(|s| &s.observations)
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
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
