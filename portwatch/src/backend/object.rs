//! The eBPF object built by `build.rs` from the `portwatch-ebpf` crate and embedded in the
//! binary, and what it holds. Without the cargo feature `ebpf` (e.g. the library as
//! xtask uses it) nothing is embedded and loading fails with an error naming the feature.

use std::collections::BTreeMap;

use thiserror::Error;

/// The object file, 8-byte aligned as the ELF parser wants.
#[cfg(feature = "ebpf")]
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/portwatch"));
#[cfg(not(feature = "ebpf"))]
static OBJECT: &[u8] = &[];

#[derive(Debug, Error)]
#[error(
    "this portwatch was built without its eBPF programs (cargo feature `ebpf` disabled): \
     rebuild it with the default features, e.g. `cargo build --release -p portwatch`"
)]
pub struct NotEmbedded;

/// The embedded object, or why there is none.
pub fn bytes() -> Result<&'static [u8], NotEmbedded> {
    if OBJECT.is_empty() {
        Err(NotEmbedded)
    } else {
        Ok(OBJECT)
    }
}

/// What this binary was built with, for `portwatch probes` and `--version`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuiltWith {
    /// The cargo feature `ebpf` was on (the object is embedded).
    pub ebpf: bool,
    pub object_bytes: usize,
    /// Programs in the object by attach type ("fentry", "kprobe", "tracepoint", ...).
    pub programs: BTreeMap<String, usize>,
    /// Why the object could not be read (empty when it could).
    pub error: Option<String>,
}

/// Reads the embedded object's program list (no privileges needed: nothing is loaded).
pub fn built_with() -> BuiltWith {
    let mut b = BuiltWith {
        ebpf: !OBJECT.is_empty(),
        object_bytes: OBJECT.len(),
        programs: BTreeMap::new(),
        error: None,
    };
    if OBJECT.is_empty() {
        return b;
    }
    match aya_obj::Object::parse(OBJECT) {
        Ok(obj) => {
            for p in obj.programs.values() {
                *b.programs.entry(section_kind(&p.section)).or_default() += 1;
            }
        }
        Err(e) => b.error = Some(e.to_string()),
    }
    b
}

/// "fentry", "kprobe", "tracepoint", ... for a program section.
fn section_kind(s: &aya_obj::ProgramSection) -> String {
    use aya_obj::ProgramSection as S;
    match s {
        S::FEntry { .. } => "fentry".into(),
        S::FExit { .. } => "fexit".into(),
        S::KProbe => "kprobe".into(),
        S::KRetProbe => "kretprobe".into(),
        S::TracePoint => "tracepoint".into(),
        S::RawTracePoint => "raw_tracepoint".into(),
        S::BtfTracePoint => "tp_btf".into(),
        S::Iter { .. } => "iter".into(),
        other => {
            let d = format!("{other:?}");
            d.split([' ', '{', '('])
                .next()
                .unwrap_or("other")
                .to_ascii_lowercase()
        }
    }
}

impl std::fmt::Display for BuiltWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.ebpf {
            return write!(f, "no eBPF object (cargo feature `ebpf` disabled)");
        }
        write!(f, "eBPF object {} KiB", self.object_bytes.div_ceil(1024))?;
        if let Some(e) = &self.error {
            return write!(f, " (unreadable: {e})");
        }
        let progs: Vec<String> = self
            .programs
            .iter()
            .map(|(k, n)| format!("{k} x{n}"))
            .collect();
        write!(f, ", programs: {}", progs.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_matches_the_feature() {
        let b = built_with();
        assert_eq!(b.ebpf, cfg!(feature = "ebpf"));
        assert_eq!(bytes().is_ok(), cfg!(feature = "ebpf"));
        if cfg!(feature = "ebpf") {
            assert!(b.error.is_none(), "{b:?}");
            // Every backend has programs in the object.
            for kind in ["fentry", "kprobe", "tracepoint"] {
                assert!(
                    b.programs.get(kind).copied().unwrap_or(0) > 0,
                    "{kind}: {b}"
                );
            }
        } else {
            assert!(bytes()
                .unwrap_err()
                .to_string()
                .contains("cargo feature `ebpf`"));
        }
    }
}
