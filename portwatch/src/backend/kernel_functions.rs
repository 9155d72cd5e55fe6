//! The kernel functions the fentry and kprobe backends hook (their programs are in
//! `portwatch-ebpf/src/{fentry,kprobe,kernel_functions}.rs`), and where each hook finds
//! its arguments, from the functions' BTF signatures.
use portwatch_common::{ArgPos, NO_ARG};

use super::Refusal;
use crate::kernel::{compat::Id, symbols::Verdict, Resolved};

/// A hooked kernel function: its kprobe and fentry programs (entry, return).
#[derive(Debug)]
pub struct Hook {
    pub func: &'static str,
    pub kprobe: (&'static str, &'static str),
    pub fentry: (&'static str, &'static str),
    /// A kernel lacking a required function refuses the backend; a missing optional
    /// one is skipped with a warning.
    pub required: bool,
    /// Hooked only on kernels that have (true) or lack (false) this variant.
    pub only: Option<(Id, bool)>,
}

pub const HOOKS: [Hook; 7] = [
    Hook {
        func: "inet_csk_get_port",
        kprobe: ("kp_get_port", "krp_get_port"),
        fentry: ("fe_get_port", "fx_get_port"),
        required: true,
        only: None,
    },
    Hook {
        func: "__inet_hash_connect",
        kprobe: ("kp_hash_connect", "krp_hash_connect"),
        fentry: ("fe_hash_connect", "fx_hash_connect"),
        required: true,
        only: None,
    },
    Hook {
        func: "__inet_inherit_port",
        kprobe: ("kp_inherit", "krp_inherit"),
        fentry: ("fe_inherit", "fx_inherit"),
        required: true,
        only: None,
    },
    Hook {
        func: "inet_put_port",
        kprobe: ("kp_put_port", "krp_put_port"),
        fentry: ("fe_put_port", "fx_put_port"),
        required: true,
        only: None,
    },
    Hook {
        func: "inet_twsk_hashdance_schedule",
        kprobe: ("kp_hashdance", "krp_hashdance"),
        fentry: ("fe_hashdance_schedule", "fx_hashdance_schedule"),
        required: false,
        only: Some((Id::HashdanceSchedule, true)),
    },
    Hook {
        func: "inet_twsk_hashdance",
        kprobe: ("kp_hashdance", "krp_hashdance"),
        fentry: ("fe_hashdance", "fx_hashdance"),
        required: false,
        only: Some((Id::HashdanceSchedule, false)),
    },
    Hook {
        func: "inet_twsk_bind_unhash",
        kprobe: ("kp_tw_unhash", "krp_tw_unhash"),
        fentry: ("fe_tw_unhash", "fx_tw_unhash"),
        required: false,
        only: None,
    },
];

/// The function a TIME-WAIT take-over goes through on this kernel.
fn hashdance(resolved: &Resolved) -> &'static str {
    if resolved.has(Id::HashdanceSchedule) {
        "inet_twsk_hashdance_schedule"
    } else {
        "inet_twsk_hashdance"
    }
}

/// Position of parameter `name` of `func` in the BTF signature.
fn pos(resolved: &Resolved, func: &str, name: &str) -> u32 {
    resolved
        .function_params(func)
        .and_then(|ps| ps.iter().position(|p| p == name))
        .map(|i| i as u32)
        .unwrap_or(NO_ARG)
}

/// Number of parameters of `func` in BTF (`NO_ARG` when it is absent).
fn nargs(resolved: &Resolved, func: &str) -> u32 {
    resolved
        .function_params(func)
        .map(|ps| ps.len() as u32)
        .unwrap_or(NO_ARG)
}

/// Argument positions of every hooked function, from BTF.
pub fn arg_positions(resolved: &Resolved) -> ArgPos {
    ArgPos {
        get_port_sk: pos(resolved, "inet_csk_get_port", "sk"),
        get_port_snum: pos(resolved, "inet_csk_get_port", "snum"),
        hash_connect_sk: pos(resolved, "__inet_hash_connect", "sk"),
        inherit_sk: pos(resolved, "__inet_inherit_port", "sk"),
        inherit_child: pos(resolved, "__inet_inherit_port", "child"),
        put_port_sk: pos(resolved, "inet_put_port", "sk"),
        hashdance_sk: pos(resolved, hashdance(resolved), "sk"),
        bind_unhash_tw: pos(resolved, "inet_twsk_bind_unhash", "tw"),
        get_port_nargs: nargs(resolved, "inet_csk_get_port"),
        hash_connect_nargs: nargs(resolved, "__inet_hash_connect"),
        inherit_nargs: nargs(resolved, "__inet_inherit_port"),
        _pad: 0,
    }
}

/// The arguments the required hooks need that BTF did not give.
fn missing_args(a: &ArgPos) -> Vec<&'static str> {
    [
        ("inet_csk_get_port(sk)", a.get_port_sk),
        ("inet_csk_get_port(snum)", a.get_port_snum),
        ("__inet_hash_connect(sk)", a.hash_connect_sk),
        ("__inet_inherit_port(sk)", a.inherit_sk),
        ("__inet_inherit_port(child)", a.inherit_child),
        ("inet_put_port(sk)", a.put_port_sk),
    ]
    .into_iter()
    .filter(|&(_, p)| p == NO_ARG)
    .map(|(name, _)| name)
    .collect()
}

/// The hooks this kernel can take, in order. Every required function and argument
/// must exist (else the backend is refused with the reason); a missing optional one is
/// skipped with a warning. Hooks for another kernel variant are left out.
pub fn present_hooks(
    resolved: &Resolved,
    backend: &str,
    warnings: &mut Vec<String>,
) -> Result<Vec<&'static Hook>, Refusal> {
    let missing = missing_args(&arg_positions(resolved));
    if !missing.is_empty() {
        return Err(Refusal::MissingParameters(missing));
    }
    let mut hooks = Vec::new();
    for h in HOOKS.iter() {
        if h.only
            .is_some_and(|(id, wanted)| resolved.has(id) != wanted)
        {
            continue;
        }
        if !resolved.has_function(h.func) {
            if h.required {
                return Err(Refusal::MissingFunction(h.func));
            }
            warnings.push(format!(
                "{backend}: kernel has no {}: changes it makes are not seen",
                h.func
            ));
            continue;
        }
        // BTF names the function; the kernel's text says whether a hook on it sees every
        // call (fentry also needs ftrace to be able to attach).
        let verdict = resolved
            .site(h.func)
            .map_or(Verdict::Usable, |s| s.verdict(h.func, backend == "fentry"));
        if let Verdict::Unusable(reason) = verdict {
            if h.required {
                return Err(Refusal::HookSite {
                    func: h.func,
                    reason,
                });
            }
            warnings.push(format!(
                "{backend}: {}: changes it makes are not seen",
                reason
            ));
            continue;
        }
        hooks.push(h);
    }
    Ok(hooks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{fake_kernel::FakeKernel, layout_from_btf_bytes, TRACKED_FUNCTIONS};

    #[test]
    fn every_hooked_function_is_tracked_in_btf() {
        for h in HOOKS.iter() {
            assert!(TRACKED_FUNCTIONS.contains(&h.func), "{}", h.func);
        }
    }

    #[test]
    fn the_hashdance_hook_follows_the_kernel() {
        for (kernel, want) in [
            (FakeKernel::linux_6_18(), "inet_twsk_hashdance_schedule"),
            (FakeKernel::linux_6_1(), "inet_twsk_hashdance"),
        ] {
            let r = layout_from_btf_bytes(&kernel.encode(), "fake").expect("layout");
            let mut warnings = Vec::new();
            let hooks = present_hooks(&r, "fentry", &mut warnings).expect("hooks");
            let funcs: Vec<&str> = hooks.iter().map(|h| h.func).collect();
            assert!(
                funcs.contains(&want)
                    && funcs.iter().filter(|f| f.contains("hashdance")).count() == 1,
                "{funcs:?}"
            );
            assert!(warnings.is_empty(), "{warnings:?}");
            assert_eq!(arg_positions(&r).hashdance_sk, 1);
        }
        // fexit reads the return value after the parameters: their counts come from BTF.
        for (kernel, hash_connect) in [(FakeKernel::linux_6_18(), 5), (FakeKernel::linux_6_1(), 4)]
        {
            let r = layout_from_btf_bytes(&kernel.encode(), "fake").expect("layout");
            let a = arg_positions(&r);
            assert_eq!(
                (a.get_port_nargs, a.hash_connect_nargs, a.inherit_nargs),
                (2, hash_connect, 2)
            );
        }
    }

    #[test]
    fn a_missing_required_function_refuses_and_an_optional_one_warns() {
        let mut k = FakeKernel::linux_6_18();
        k.funcs.retain(|f| f.name != "inet_twsk_bind_unhash");
        let r = layout_from_btf_bytes(&k.encode(), "fake").expect("layout");
        let mut warnings = Vec::new();
        assert!(present_hooks(&r, "kprobe", &mut warnings).is_ok());
        assert_eq!(
            warnings,
            ["kprobe: kernel has no inet_twsk_bind_unhash: changes it makes are not seen"]
        );

        let mut k = FakeKernel::linux_6_18();
        k.funcs.retain(|f| f.name != "inet_put_port");
        let r = layout_from_btf_bytes(&k.encode(), "fake").expect("layout");
        let err = present_hooks(&r, "kprobe", &mut Vec::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "BTF lacks the parameters inet_put_port(sk)"
        );
    }

    #[test]
    fn hooks_not_where_btf_says_refuse_or_warn() {
        let mut r =
            layout_from_btf_bytes(&FakeKernel::linux_6_18().encode(), "fake").expect("layout");
        let whole = |f: &str| format!("ffffffff81000000 T {f}\n");
        let mut text: String = TRACKED_FUNCTIONS.iter().map(|f| whole(f)).collect();
        // Nothing read (BTF from a file): BTF decides alone.
        assert!(present_hooks(&r, "fentry", &mut Vec::new()).is_ok());
        r.sites = Some(crate::kernel::symbols::sites(
            &TRACKED_FUNCTIONS,
            &text,
            None,
        ));
        let mut warnings = Vec::new();
        assert_eq!(
            present_hooks(&r, "fentry", &mut warnings)
                .expect("all whole")
                .len(),
            6
        );
        assert!(warnings.is_empty(), "{warnings:?}");

        // A required function split by partial inlining refuses the backend.
        text = text.replace(
            " T __inet_hash_connect\n",
            " t __inet_hash_connect.part.0\n",
        );
        r.sites = Some(crate::kernel::symbols::sites(
            &TRACKED_FUNCTIONS,
            &text,
            None,
        ));
        let err = present_hooks(&r, "kprobe", &mut Vec::new()).unwrap_err();
        assert!(
            matches!(&err, Refusal::HookSite { func: "__inet_hash_connect", reason } if reason.contains(".part.0")),
            "{err}"
        );
        assert_eq!(err.short(), "__inet_hash_connect not hookable");

        // An optional one inlined is left out with a warning.
        let text = TRACKED_FUNCTIONS
            .iter()
            .filter(|f| **f != "inet_twsk_bind_unhash")
            .map(|f| whole(f))
            .collect::<String>();
        r.sites = Some(crate::kernel::symbols::sites(
            &TRACKED_FUNCTIONS,
            &text,
            None,
        ));
        let mut warnings = Vec::new();
        let hooks = present_hooks(&r, "kprobe", &mut warnings).expect("optional");
        assert!(!hooks.iter().any(|h| h.func == "inet_twsk_bind_unhash"));
        assert!(warnings[0].contains("inlined"), "{warnings:?}");

        // Not ftrace-able: fentry refuses, kprobe does not care.
        let text: String = TRACKED_FUNCTIONS.iter().map(|f| whole(f)).collect();
        let ff: String = TRACKED_FUNCTIONS
            .iter()
            .filter(|f| **f != "inet_put_port")
            .map(|f| format!("{f}\n"))
            .collect();
        r.sites = Some(crate::kernel::symbols::sites(
            &TRACKED_FUNCTIONS,
            &text,
            Some(&ff),
        ));
        assert!(matches!(
            present_hooks(&r, "fentry", &mut Vec::new()),
            Err(Refusal::HookSite {
                func: "inet_put_port",
                ..
            })
        ));
        assert!(present_hooks(&r, "kprobe", &mut Vec::new()).is_ok());
    }

    #[test]
    fn probes_report_sites_only_of_functions_btf_has() {
        // 6.18 has inet_twsk_hashdance_schedule, not its pre-6.11 name.
        let mut r =
            layout_from_btf_bytes(&FakeKernel::linux_6_18().encode(), "fake").expect("layout");
        assert!(!r.has_function("inet_twsk_hashdance"));
        r.sites = Some(crate::kernel::symbols::sites(
            &TRACKED_FUNCTIONS,
            "ffffffff81000000 T inet_put_port\n",
            None,
        ));
        let sites = r.report_json()["sites"].clone();
        assert!(sites.get("inet_twsk_hashdance").is_none(), "{sites}");
        assert_eq!(sites["inet_put_port"]["symbol"], true, "{sites}");
        assert_eq!(
            sites["inet_twsk_hashdance_schedule"]["symbol"], false,
            "{sites}"
        );
    }
}
