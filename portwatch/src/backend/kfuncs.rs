//! Attaching the kprobe and fentry backends (programs in portwatch-ebpf/src/kprobe.rs and
//! fentry.rs). A hook the running kernel lacks is skipped with a warning when optional;
//! a required one refuses the backend with the reason.
use aya::{
    programs::{FEntry, FExit, KProbe},
    Btf, Ebpf,
};

use super::{
    error_chain, load_reason,
    features::{kprobes_available, missing_args, Hook, HOOKS},
};
use crate::btf::Resolved;

fn hashdance_variant_wanted(h: &Hook, resolved: &Resolved) -> bool {
    // Only one of the two hashdance functions exists on a kernel; try the one present.
    h.func != "inet_twsk_hashdance" || !resolved.has_function("inet_twsk_hashdance_schedule")
}

/// Loads (verifier) and attaches every kprobe/kretprobe pair.
pub fn attach_kprobes(ebpf: &mut Ebpf, resolved: &Resolved, warnings: &mut Vec<String>) -> Result<(), String> {
    let args = super::features::arg_positions(resolved);
    let missing = missing_args(&args);
    if !missing.is_empty() {
        return Err(format!("BTF lacks the parameters {}", missing.join(", ")));
    }
    // Load everything first: the verifier's verdict is known even where attaching is
    // impossible (kernels without kprobes).
    let mut loaded = Vec::new();
    for h in HOOKS.iter().filter(|h| hashdance_variant_wanted(h, resolved)) {
        if !resolved.has_function(h.func) {
            if h.required {
                return Err(format!("kernel has no function {}", h.func));
            }
            warnings.push(format!("kprobe: kernel has no {}: changes it makes are not seen", h.func));
            continue;
        }
        for prog in [h.kprobe.0, h.kprobe.1] {
            let p: &mut KProbe = ebpf
                .program_mut(prog)
                .ok_or_else(|| format!("program {prog} missing from the object"))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| e.to_string())?;
            if p.fd().is_err() {
                p.load().map_err(|e| format!("{prog}: {}", load_reason(&e)))?;
            }
        }
        loaded.push(h);
    }
    if !kprobes_available() {
        return Err("kernel has no kprobes (no kprobe_events in tracefs; the programs passed the verifier)".into());
    }
    for h in loaded {
        for prog in [h.kprobe.0, h.kprobe.1] {
            let p: &mut KProbe = ebpf
                .program_mut(prog)
                .ok_or_else(|| format!("program {prog} missing from the object"))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| e.to_string())?;
            if let Err(e) = p.attach(h.func, 0) {
                let msg = format!("{prog} on {}: attach: {}", h.func, error_chain(&e));
                if h.required {
                    return Err(msg);
                }
                warnings.push(format!("kprobe: {msg}"));
            }
        }
    }
    Ok(())
}

/// Loads and attaches every fentry/fexit pair (needs BTF trampolines).
pub fn attach_fentry(ebpf: &mut Ebpf, resolved: &Resolved, warnings: &mut Vec<String>) -> Result<(), String> {
    let args = super::features::arg_positions(resolved);
    let missing = missing_args(&args);
    if !missing.is_empty() {
        return Err(format!("BTF lacks the parameters {}", missing.join(", ")));
    }
    let btf = Btf::from_sys_fs().map_err(|e| format!("reading kernel BTF: {}", error_chain(&e)))?;
    for h in HOOKS.iter().filter(|h| hashdance_variant_wanted(h, resolved)) {
        if !resolved.has_function(h.func) {
            if h.required {
                return Err(format!("kernel has no function {}", h.func));
            }
            warnings.push(format!("fentry: kernel has no {}: changes it makes are not seen", h.func));
            continue;
        }
        let result = (|| -> Result<(), String> {
            let entry: &mut FEntry = ebpf
                .program_mut(h.fentry.0)
                .ok_or_else(|| format!("program {} missing from the object", h.fentry.0))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| e.to_string())?;
            entry.load(h.func, &btf).map_err(|e| load_reason(&e))?;
            entry.attach().map_err(|e| format!("{} attach: {}", h.fentry.0, error_chain(&e)))?;
            let exit: &mut FExit = ebpf
                .program_mut(h.fentry.1)
                .ok_or_else(|| format!("program {} missing from the object", h.fentry.1))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| e.to_string())?;
            exit.load(h.func, &btf).map_err(|e| load_reason(&e))?;
            exit.attach().map_err(|e| format!("{} attach: {}", h.fentry.1, error_chain(&e)))?;
            Ok(())
        })();
        match result {
            Ok(()) => {}
            Err(e) if h.required => return Err(format!("{}: {e}", h.func)),
            Err(e) => warnings.push(format!("fentry: {}: {e}", h.func)),
        }
    }
    Ok(())
}

/// Detaches and unloads every program of a backend that failed half-way, so the next
/// backend does not run beside it.
pub fn unload_all(ebpf: &mut Ebpf, kprobe: bool) {
    for h in HOOKS.iter() {
        if kprobe {
            for prog in [h.kprobe.0, h.kprobe.1] {
                if let Some(Ok(p)) = ebpf.program_mut(prog).map(<&mut KProbe>::try_from) {
                    let _ = p.unload();
                }
            }
        } else {
            if let Some(Ok(p)) = ebpf.program_mut(h.fentry.0).map(<&mut FEntry>::try_from) {
                let _ = p.unload();
            }
            if let Some(Ok(p)) = ebpf.program_mut(h.fentry.1).map(<&mut FExit>::try_from) {
                let _ = p.unload();
            }
        }
    }
}
