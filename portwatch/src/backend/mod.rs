//! Probe backends. Each backend is one [`Descriptor`] in its own module: the programs
//! it loads, how it attaches them (or the typed [`Refusal`] why it cannot), and what it
//! fixes up in what they report. [`REGISTRY`] lists them in order of preference; a
//! [`ProbeSession`] loads the eBPF object with the kernel's layout, attaches the first
//! backend the kernel accepts, and reads what the programs send.
//!
//! Every backend emits the same `portwatch_common::Event`; which hook produced an event
//! never leaks into the model.
pub mod fentry;
mod kernel_functions;
pub mod kprobe;
pub mod object;
mod refusal;
mod session;
pub mod tracefs;
pub mod tracepoint;
pub mod walk;

use std::fmt;

use aya::Ebpf;
use portwatch_common::Event;
use thiserror::Error;

pub use self::{
    refusal::Refusal,
    session::{
        Losses, ProbeSession, SessionOptions, DRAIN_INTERVAL, EXPLAIN_RING_BYTES, LOOKUP_RING_BYTES,
    },
    walk::{WalkDriver, WalkDriverChoice, WalkReport},
};
use crate::{
    bpf::MapError,
    decode::DecodeError,
    kernel::{LayoutError, Resolved},
    snapshot::{SnapshotError, Snapshotter},
};

/// A backend: its programs, how it attaches them, and its fix-ups.
pub struct Descriptor {
    pub backend: Backend,
    /// Every program of the object this backend may load (unloaded again when it is
    /// refused half-way).
    pub programs: fn() -> Vec<&'static str>,
    /// Loads and attaches the programs; warnings name optional hooks left out.
    pub attach: fn(&mut Ebpf, &Resolved, &mut Vec<String>) -> Result<(), Refusal>,
    /// Corrections to each batch of drained events, for what the backend cannot see.
    pub fix_up: Option<FixUpFn>,
}

/// A backend's correction of a batch of drained events.
pub type FixUpFn = fn(&mut FixUp<'_>, Vec<Event>) -> Result<Vec<Event>, BackendError>;

/// What a fix-up may use: the object and its snapshot engine.
pub struct FixUp<'a> {
    pub ebpf: &'a mut Ebpf,
    pub snapshots: &'a mut Snapshotter,
    pub max_owners: u32,
}

/// Every backend, best first: `--probe auto` tries them in this order.
pub const REGISTRY: [&Descriptor; 3] = [
    &fentry::DESCRIPTOR,
    &kprobe::DESCRIPTOR,
    &tracepoint::DESCRIPTOR,
];

/// A concrete backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Fentry,
    Kprobe,
    Tracepoint,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Fentry => "fentry",
            Backend::Kprobe => "kprobe",
            Backend::Tracepoint => "tracepoint",
        }
    }

    /// This backend's entry in [`REGISTRY`].
    pub fn descriptor(self) -> &'static Descriptor {
        REGISTRY
            .iter()
            .copied()
            .find(|d| d.backend == self)
            .unwrap_or_else(|| unreachable!("every backend is registered (tested)"))
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the user asked for with `--probe`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbeChoice {
    Auto,
    Fentry,
    Kprobe,
    Tracepoint,
}

impl ProbeChoice {
    /// The backends to try, in order.
    pub fn candidates(self) -> Vec<Backend> {
        match self {
            ProbeChoice::Auto => REGISTRY.iter().map(|d| d.backend).collect(),
            ProbeChoice::Fentry => vec![Backend::Fentry],
            ProbeChoice::Kprobe => vec![Backend::Kprobe],
            ProbeChoice::Tracepoint => vec![Backend::Tracepoint],
        }
    }
}

/// One attempt of `--probe auto`, for the feature report.
#[derive(Debug, serde::Serialize)]
pub struct Attempt {
    pub backend: Backend,
    /// None: it worked; Some: why it was refused.
    #[serde(serialize_with = "as_text")]
    pub refused: Option<Refusal>,
}

fn as_text<S: serde::Serializer>(r: &Option<Refusal>, s: S) -> Result<S::Ok, S::Error> {
    match r {
        Some(r) => s.serialize_some(&r.to_string()),
        None => s.serialize_none(),
    }
}

#[derive(Debug, Error)]
pub enum BackendError {
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Tracefs(#[from] tracefs::TracefsError),
    #[error("loading the eBPF object failed: {0}")]
    Load(String),
    #[error(transparent)]
    Map(#[from] MapError),
    #[error("the {backend} backend cannot run on this kernel: {refusal}")]
    Refused { backend: Backend, refusal: Refusal },
    #[error("no probe backend could attach: {}", summary(.0))]
    NoneWorks(Vec<Attempt>),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Walk(#[from] walk::WalkError),
}

fn summary(attempts: &[Attempt]) -> String {
    attempts
        .iter()
        .map(|a| match &a.refused {
            Some(r) => format!("{}: {r}", a.backend),
            None => format!("{}: ok", a.backend),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_has_each_backend_once_best_first() {
        let order: Vec<Backend> = REGISTRY.iter().map(|d| d.backend).collect();
        assert_eq!(
            order,
            [Backend::Fentry, Backend::Kprobe, Backend::Tracepoint]
        );
        for &b in &order {
            assert_eq!(b.descriptor().backend, b);
        }
        assert_eq!(ProbeChoice::Auto.candidates(), order);
        assert_eq!(ProbeChoice::Kprobe.candidates(), [Backend::Kprobe]);
    }

    #[test]
    fn backends_do_not_share_programs_and_only_tracepoint_fixes_up() {
        let mut all: Vec<&str> = REGISTRY.iter().flat_map(|d| (d.programs)()).collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        // The two hashdance hooks share their kprobe programs.
        assert_eq!(all.len(), n - 2);
        for d in REGISTRY {
            assert_eq!(
                d.fix_up.is_some(),
                d.backend == Backend::Tracepoint,
                "{}",
                d.backend
            );
        }
    }
}
