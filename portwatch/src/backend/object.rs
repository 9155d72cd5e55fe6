//! The eBPF objects built by `build.rs` from the `portwatch-ebpf` crate and embedded in the
//! binary, and what they hold: the same programs with two walk drivers (see
//! [`super::walk`]), each also as the snapshot walk alone. Without the cargo feature `ebpf` (e.g. the library as xtask uses it)
//! nothing is embedded and loading fails with an error naming the feature.

use std::collections::BTreeMap;

use thiserror::Error;

/// Walks driven by `bpf_loop` (kernels 5.17+); 8-byte aligned as the ELF parser wants.
#[cfg(feature = "ebpf")]
static BPF_LOOP: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/portwatch-bpf-loop"));
/// Walks driven by bounded loops (kernels without `bpf_loop`).
#[cfg(feature = "ebpf")]
static BOUNDED: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/portwatch-bounded"));
/// The snapshot walk alone, driven by `bpf_loop`.
#[cfg(feature = "ebpf")]
static WALK_BPF_LOOP: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/portwatch-walk-bpf-loop"));
/// The snapshot walk alone, driven by bounded loops.
#[cfg(feature = "ebpf")]
static WALK_BOUNDED: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/portwatch-walk-bounded"));
#[cfg(not(feature = "ebpf"))]
static BPF_LOOP: &[u8] = &[];
#[cfg(not(feature = "ebpf"))]
static BOUNDED: &[u8] = &[];
#[cfg(not(feature = "ebpf"))]
static WALK_BPF_LOOP: &[u8] = &[];
#[cfg(not(feature = "ebpf"))]
static WALK_BOUNDED: &[u8] = &[];

/// Which walk driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Object {
    BpfLoop,
    Bounded,
}

/// Which programs: every one, or the snapshot walk alone (with the `bpf_loop` probe and
/// every map), for a session that attaches nothing: aya parses and relocates every
/// program of an object at load, and the walk is a fraction of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Programs {
    All,
    WalkOnly,
}

impl Object {
    fn embedded(self, programs: Programs) -> &'static [u8] {
        match (self, programs) {
            (Object::BpfLoop, Programs::All) => BPF_LOOP,
            (Object::Bounded, Programs::All) => BOUNDED,
            (Object::BpfLoop, Programs::WalkOnly) => WALK_BPF_LOOP,
            (Object::Bounded, Programs::WalkOnly) => WALK_BOUNDED,
        }
    }
}

#[derive(Debug, Error)]
#[error(
    "this portwatch was built without its eBPF programs (cargo feature `ebpf` disabled): \
     rebuild it with the default features, e.g. `cargo build --release -p portwatch`"
)]
pub struct NotEmbedded;

/// The embedded object, or why there is none.
pub fn bytes(object: Object, programs: Programs) -> Result<&'static [u8], NotEmbedded> {
    let b = object.embedded(programs);
    if b.is_empty() {
        Err(NotEmbedded)
    } else {
        Ok(b)
    }
}

/// What this binary was built with, for `portwatch probes` and `--version`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuiltWith {
    /// The cargo feature `ebpf` was on (the objects are embedded).
    pub ebpf: bool,
    /// Size of the `bpf_loop` object (the bounded-loop one is about as large).
    pub object_bytes: usize,
    /// Programs in the `bpf_loop` object by attach type ("fentry", "kprobe",
    /// "tracepoint", ...); the bounded-loop object has the same but `probe_bpf_loop`.
    pub programs: BTreeMap<String, usize>,
    /// Why the object could not be read (empty when it could).
    pub error: Option<String>,
}

/// Reads the embedded object's program list (no privileges needed: nothing is loaded).
pub fn built_with() -> BuiltWith {
    let mut b = BuiltWith {
        ebpf: !BPF_LOOP.is_empty(),
        object_bytes: BPF_LOOP.len(),
        programs: BTreeMap::new(),
        error: None,
    };
    if BPF_LOOP.is_empty() {
        return b;
    }
    match aya_obj::Object::parse(BPF_LOOP) {
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
        for o in [Object::BpfLoop, Object::Bounded] {
            for p in [Programs::All, Programs::WalkOnly] {
                assert_eq!(bytes(o, p).is_ok(), cfg!(feature = "ebpf"));
            }
        }
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
            assert!(bytes(Object::Bounded, Programs::All)
                .unwrap_err()
                .to_string()
                .contains("cargo feature `ebpf`"));
        }
    }

    /// The programs of an embedded object by name, with their section kind.
    #[cfg(feature = "ebpf")]
    fn programs(object: Object, programs: Programs) -> BTreeMap<String, String> {
        let obj =
            aya_obj::Object::parse(bytes(object, programs).expect("embedded")).expect("parses");
        obj.programs
            .iter()
            .map(|(name, p)| (name.clone(), section_kind(&p.section)))
            .collect()
    }

    #[test]
    #[cfg(feature = "ebpf")]
    fn walk_only_objects_hold_the_walk_and_no_event_program() {
        for o in [Object::BpfLoop, Object::Bounded] {
            let all = programs(o, Programs::All);
            let walk = programs(o, Programs::WalkOnly);
            for name in ["snapshot_trigger", "snapshot_brief"] {
                assert_eq!(walk.get(name).map(String::as_str), Some("raw_tracepoint"));
            }
            // The bpf_loop probe is the walk-only object's one tracepoint program.
            for (name, kind) in &walk {
                assert_eq!(all.get(name), Some(kind), "{o:?}: {name}");
                assert!(
                    kind == "raw_tracepoint" || name == "probe_bpf_loop",
                    "{o:?}: {name} ({kind})"
                );
            }
            assert!(all.len() > walk.len() + 10, "{o:?}: {all:?}");
        }
    }
}
