//! What the running kernel allows, for backend selection and `portwatch probes`.
use std::path::Path;

use crate::btf::Resolved;

/// Why the kprobe backend cannot be used here, or Ok when it can.
pub fn kprobe_refusal(_resolved: &Resolved) -> Result<(), String> {
    if !kprobes_available() {
        return Err("kernel has no kprobes (CONFIG_KPROBES off: no kprobe_events in tracefs)".into());
    }
    Err("the kprobe backend is not part of this build yet".into())
}

/// Why the fentry backend cannot be used here, or Ok when it can.
pub fn fentry_refusal(_resolved: &Resolved) -> Result<(), String> {
    Err("the fentry backend is not part of this build yet".into())
}

/// Whether the kernel was built with kprobes (tracefs exposes kprobe_events then).
pub fn kprobes_available() -> bool {
    ["/sys/kernel/tracing/kprobe_events", "/sys/kernel/debug/tracing/kprobe_events"]
        .iter()
        .any(|p| Path::new(p).exists())
}
