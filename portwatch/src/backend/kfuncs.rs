//! Attaching the kprobe and fentry backends (programs in portwatch-ebpf/src/kprobe.rs and
//! fentry.rs). A hook the running kernel lacks is skipped with a warning when optional;
//! a required one refuses the backend with the reason.
use aya::{
    programs::{FEntry, FExit, KProbe, Program, ProgramError},
    Btf, Ebpf,
};

use super::{
    error_chain, load_reason,
    features::{arg_positions, kprobes_available, missing_args, Hook, HOOKS},
};
use crate::kernel::Resolved;

/// The hooks this kernel can take, in order. Every required function and argument
/// must exist (else the backend is refused with the reason); a missing optional one is
/// skipped with a warning. Of the two hashdance variants only the one present is kept.
fn present_hooks(resolved: &Resolved, backend: &str, warnings: &mut Vec<String>) -> Result<Vec<&'static Hook>, String> {
    let missing = missing_args(&arg_positions(resolved));
    if !missing.is_empty() {
        return Err(format!("BTF lacks the parameters {}", missing.join(", ")));
    }
    let mut hooks = Vec::new();
    for h in HOOKS.iter() {
        if h.func == "inet_twsk_hashdance" && resolved.has_function("inet_twsk_hashdance_schedule") {
            continue;
        }
        if !resolved.has_function(h.func) {
            if h.required {
                return Err(format!("kernel has no function {}", h.func));
            }
            warnings.push(format!("{backend}: kernel has no {}: changes it makes are not seen", h.func));
            continue;
        }
        hooks.push(h);
    }
    Ok(hooks)
}

/// The program `name` of the object, as program type `T`.
fn prog<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| format!("program {name} missing from the object"))?
        .try_into()
        .map_err(|e: ProgramError| e.to_string())
}

/// Loads (verifier) and attaches every kprobe/kretprobe pair.
pub fn attach_kprobes(ebpf: &mut Ebpf, resolved: &Resolved, warnings: &mut Vec<String>) -> Result<(), String> {
    let hooks = present_hooks(resolved, "kprobe", warnings)?;
    // Load everything first: the verifier's verdict is known even where attaching is
    // impossible (kernels without kprobes).
    for h in &hooks {
        for name in [h.kprobe.0, h.kprobe.1] {
            let p: &mut KProbe = prog(ebpf, name)?;
            if p.fd().is_err() {
                p.load().map_err(|e| format!("{name}: {}", load_reason(&e)))?;
            }
        }
    }
    if !kprobes_available() {
        return Err("kernel has no kprobes (no kprobe_events in tracefs; the programs passed the verifier)".into());
    }
    for h in &hooks {
        for name in [h.kprobe.0, h.kprobe.1] {
            let p: &mut KProbe = prog(ebpf, name)?;
            if let Err(e) = p.attach(h.func, 0) {
                let msg = format!("{name} on {}: attach: {}", h.func, error_chain(&e));
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
    let hooks = present_hooks(resolved, "fentry", warnings)?;
    let btf = Btf::from_sys_fs().map_err(|e| format!("reading kernel BTF: {}", error_chain(&e)))?;
    for h in hooks {
        let result = (|| -> Result<(), String> {
            let entry: &mut FEntry = prog(ebpf, h.fentry.0)?;
            entry.load(h.func, &btf).map_err(|e| load_reason(&e))?;
            entry.attach().map_err(|e| format!("{} attach: {}", h.fentry.0, error_chain(&e)))?;
            let exit: &mut FExit = prog(ebpf, h.fentry.1)?;
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
