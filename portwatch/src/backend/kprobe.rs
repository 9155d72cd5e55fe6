//! The kprobe backend: kprobe/kretprobe pairs on the kernel functions of
//! `kernel_functions.rs` (programs in `portwatch-ebpf/src/kprobe.rs`).
use std::path::Path;

use aya::{programs::KProbe, Ebpf};

use super::{
    kernel_functions::{present_hooks, HOOKS},
    tracefs, Backend, Descriptor, Refusal,
};
use crate::{
    bpf::{self, error_chain},
    kernel::Resolved,
};

pub const DESCRIPTOR: Descriptor = Descriptor {
    backend: Backend::Kprobe,
    programs,
    attach,
    fix_up: None,
};

fn programs() -> Vec<&'static str> {
    HOOKS
        .iter()
        .flat_map(|h| [h.kprobe.0, h.kprobe.1])
        .collect()
}

/// Whether the kernel was built with kprobes (tracefs exposes kprobe_events then).
fn kprobes_available() -> bool {
    tracefs::CANDIDATES
        .iter()
        .any(|root| Path::new(root).join("kprobe_events").exists())
}

/// Loads (verifier) and attaches every kprobe/kretprobe pair.
fn attach(ebpf: &mut Ebpf, resolved: &Resolved, warnings: &mut Vec<String>) -> Result<(), Refusal> {
    let hooks = present_hooks(resolved, "kprobe", warnings)?;
    // Load everything first: the verifier's verdict is known even where attaching is
    // impossible (kernels without kprobes).
    for h in &hooks {
        for name in [h.kprobe.0, h.kprobe.1] {
            let p: &mut KProbe = bpf::program(ebpf, name)?;
            if p.fd().is_err() {
                p.load().map_err(|e| Refusal::from_load(name, &e))?;
            }
        }
    }
    if !kprobes_available() {
        return Err(Refusal::NoKprobes);
    }
    for h in &hooks {
        for name in [h.kprobe.0, h.kprobe.1] {
            let p: &mut KProbe = bpf::program(ebpf, name)?;
            if let Err(e) = p.attach(h.func, 0) {
                let refusal = Refusal::Attach {
                    program: name.to_string(),
                    target: h.func.to_string(),
                    reason: error_chain(&e),
                };
                if h.required {
                    return Err(refusal);
                }
                warnings.push(format!("kprobe: {refusal}"));
            }
        }
    }
    Ok(())
}
