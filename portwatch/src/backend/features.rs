//! What the running kernel allows, and the argument positions of hooked functions.
use std::path::Path;

use portwatch_common::{ArgPos, NO_ARG};

use crate::kernel::Resolved;

/// Whether the kernel was built with kprobes (tracefs exposes kprobe_events then).
pub fn kprobes_available() -> bool {
    super::tracefs::CANDIDATES.iter().any(|root| Path::new(root).join("kprobe_events").exists())
}

/// Position of parameter `name` of `func` in the BTF signature.
fn pos(resolved: &Resolved, func: &str, name: &str) -> u32 {
    resolved
        .function_params(func)
        .and_then(|ps| ps.iter().position(|p| p == name))
        .map(|i| i as u32)
        .unwrap_or(NO_ARG)
}

/// Argument positions of every hooked function, from BTF.
pub fn arg_positions(resolved: &Resolved) -> ArgPos {
    let hashdance = if resolved.has_function("inet_twsk_hashdance_schedule") {
        "inet_twsk_hashdance_schedule"
    } else {
        "inet_twsk_hashdance"
    };
    ArgPos {
        get_port_sk: pos(resolved, "inet_csk_get_port", "sk"),
        get_port_snum: pos(resolved, "inet_csk_get_port", "snum"),
        hash_connect_sk: pos(resolved, "__inet_hash_connect", "sk"),
        inherit_sk: pos(resolved, "__inet_inherit_port", "sk"),
        inherit_child: pos(resolved, "__inet_inherit_port", "child"),
        put_port_sk: pos(resolved, "inet_put_port", "sk"),
        hashdance_sk: pos(resolved, hashdance, "sk"),
        bind_unhash_tw: pos(resolved, "inet_twsk_bind_unhash", "tw"),
    }
}

/// A hooked kernel function: (function, entry program, return program, kprobe programs
/// (entry, return), required). Fentry program names carry the function in their ELF
/// section; the two hashdance variants have one pair each.
pub struct Hook {
    pub func: &'static str,
    pub kprobe: (&'static str, &'static str),
    pub fentry: (&'static str, &'static str),
    pub required: bool,
}

pub const HOOKS: [Hook; 7] = [
    Hook { func: "inet_csk_get_port", kprobe: ("kp_get_port", "krp_get_port"), fentry: ("fe_get_port", "fx_get_port"), required: true },
    Hook { func: "__inet_hash_connect", kprobe: ("kp_hash_connect", "krp_hash_connect"), fentry: ("fe_hash_connect", "fx_hash_connect"), required: true },
    Hook { func: "__inet_inherit_port", kprobe: ("kp_inherit", "krp_inherit"), fentry: ("fe_inherit", "fx_inherit"), required: true },
    Hook { func: "inet_put_port", kprobe: ("kp_put_port", "krp_put_port"), fentry: ("fe_put_port", "fx_put_port"), required: true },
    Hook { func: "inet_twsk_hashdance_schedule", kprobe: ("kp_hashdance", "krp_hashdance"), fentry: ("fe_hashdance_schedule", "fx_hashdance_schedule"), required: false },
    Hook { func: "inet_twsk_hashdance", kprobe: ("kp_hashdance", "krp_hashdance"), fentry: ("fe_hashdance", "fx_hashdance"), required: false },
    Hook { func: "inet_twsk_bind_unhash", kprobe: ("kp_tw_unhash", "krp_tw_unhash"), fentry: ("fe_tw_unhash", "fx_tw_unhash"), required: false },
];

/// Checks that BTF gave every argument the required hooks need.
pub fn missing_args(a: &ArgPos) -> Vec<&'static str> {
    let mut v = Vec::new();
    for (name, p) in [
        ("inet_csk_get_port(sk)", a.get_port_sk),
        ("inet_csk_get_port(snum)", a.get_port_snum),
        ("__inet_hash_connect(sk)", a.hash_connect_sk),
        ("__inet_inherit_port(sk)", a.inherit_sk),
        ("__inet_inherit_port(child)", a.inherit_child),
        ("inet_put_port(sk)", a.put_port_sk),
    ] {
        if p == NO_ARG {
            v.push(name);
        }
    }
    v
}
