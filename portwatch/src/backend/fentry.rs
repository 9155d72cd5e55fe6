//! The fentry backend: fentry/fexit pairs (BPF trampolines, cheaper than kprobes) on the
//! kernel functions of `kernel_functions.rs` (programs in `portwatch-ebpf/src/fentry.rs`).
use aya::{
    programs::{FEntry, FExit},
    Btf, Ebpf,
};

use super::{
    kernel_functions::{present_hooks, Hook, HOOKS},
    Backend, Descriptor, Refusal,
};
use crate::{
    bpf::{self, error_chain},
    kernel::Resolved,
};

pub const DESCRIPTOR: Descriptor = Descriptor {
    backend: Backend::Fentry,
    programs,
    attach,
    fix_up: None,
};

fn programs() -> Vec<&'static str> {
    HOOKS
        .iter()
        .flat_map(|h| [h.fentry.0, h.fentry.1])
        .collect()
}

/// Loads and attaches every fentry/fexit pair (needs the kernel's BTF for trampolines).
fn attach(ebpf: &mut Ebpf, resolved: &Resolved, warnings: &mut Vec<String>) -> Result<(), Refusal> {
    let hooks = present_hooks(resolved, "fentry", warnings)?;
    let btf = Btf::from_sys_fs().map_err(|e| Refusal::KernelBtf(error_chain(&e)))?;
    for h in hooks {
        match attach_pair(ebpf, &btf, h) {
            Ok(()) => {}
            Err(e) if h.required => return Err(e),
            Err(e) => warnings.push(format!("fentry: {e}")),
        }
    }
    Ok(())
}

fn attach_pair(ebpf: &mut Ebpf, btf: &Btf, h: &Hook) -> Result<(), Refusal> {
    let attach_failed = |program: &str, e: &dyn std::error::Error| Refusal::Attach {
        program: program.to_string(),
        target: h.func.to_string(),
        reason: error_chain(e),
    };
    let entry: &mut FEntry = bpf::program(ebpf, h.fentry.0)?;
    entry
        .load(h.func, btf)
        .map_err(|e| Refusal::from_load(h.func, &e))?;
    entry.attach().map_err(|e| attach_failed(h.fentry.0, &e))?;
    let exit: &mut FExit = bpf::program(ebpf, h.fentry.1)?;
    exit.load(h.func, btf)
        .map_err(|e| Refusal::from_load(h.func, &e))?;
    exit.attach().map_err(|e| attach_failed(h.fentry.1, &e))?;
    Ok(())
}
