//! The kprobe backend: kprobe/kretprobe pairs on the kernel functions of `kernel_functions.rs`.
//! Argument positions come from BTF (global `ARGS`).
use aya_ebpf::{
    macros::{kprobe, kretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use portwatch_common::{hook::KPROBE, NO_ARG};

use crate::{kernel_functions as hooks, maps::ARGS, read::idle};

/// Reads one field of the global `ARGS` (see `layout!`).
macro_rules! argpos {
    ($f:ident) => {
        // SAFETY: ARGS is a plain static in .rodata; reading it is always valid.
        unsafe { core::ptr::read_volatile(&ARGS.$f) }
    };
}

/// Argument `n` of the probed function (registers of the x86_64/arm64 calling convention).
/// Each register is loaded at a constant context offset and passed through `black_box`
/// before choosing: the verifier refuses a context load at a computed offset, which is
/// what the compiler would otherwise make of the `match`.
#[inline(always)]
fn arg(ctx: &ProbeContext, n: u32) -> Option<u64> {
    let a0 = core::hint::black_box(ctx.arg::<u64>(0).unwrap_or(0));
    let a1 = core::hint::black_box(ctx.arg::<u64>(1).unwrap_or(0));
    let a2 = core::hint::black_box(ctx.arg::<u64>(2).unwrap_or(0));
    let a3 = core::hint::black_box(ctx.arg::<u64>(3).unwrap_or(0));
    match n {
        0 => Some(a0),
        1 => Some(a1),
        2 => Some(a2),
        3 => Some(a3),
        _ => None,
    }
}

#[inline(always)]
fn ret(ctx: &RetProbeContext) -> i64 {
    // Return values here are `int`: sign-extend the low 32 bits.
    ctx.ret::<u64>() as i32 as i64
}

#[kprobe]
pub fn kp_get_port(ctx: ProbeContext) -> u32 {
    if idle() {
        return 0;
    }
    let (s, n) = (argpos!(get_port_sk), argpos!(get_port_snum));
    if s != NO_ARG && n != NO_ARG {
        if let (Some(sk), Some(snum)) = (arg(&ctx, s), arg(&ctx, n)) {
            hooks::get_port_entry(sk, snum as u16);
        }
    }
    0
}

#[kretprobe]
pub fn krp_get_port(ctx: RetProbeContext) -> u32 {
    if idle() {
        return 0;
    }
    hooks::get_port_return(KPROBE, ret(&ctx));
    0
}

#[kprobe]
pub fn kp_hash_connect(ctx: ProbeContext) -> u32 {
    if idle() {
        return 0;
    }
    if let Some(sk) = arg(&ctx, argpos!(hash_connect_sk)) {
        hooks::hash_connect_entry(sk);
    }
    0
}

#[kretprobe]
pub fn krp_hash_connect(ctx: RetProbeContext) -> u32 {
    if idle() {
        return 0;
    }
    hooks::hash_connect_return(KPROBE, ret(&ctx));
    0
}

#[kprobe]
pub fn kp_inherit(ctx: ProbeContext) -> u32 {
    if idle() {
        return 0;
    }
    if let (Some(l), Some(c)) = (
        arg(&ctx, argpos!(inherit_sk)),
        arg(&ctx, argpos!(inherit_child)),
    ) {
        hooks::inherit_entry(l, c);
    }
    0
}

#[kretprobe]
pub fn krp_inherit(ctx: RetProbeContext) -> u32 {
    if idle() {
        return 0;
    }
    hooks::inherit_return(KPROBE, ret(&ctx));
    0
}

#[kprobe]
pub fn kp_put_port(ctx: ProbeContext) -> u32 {
    if idle() {
        return 0;
    }
    if let Some(sk) = arg(&ctx, argpos!(put_port_sk)) {
        hooks::put_port_entry(sk);
    }
    0
}

#[kretprobe]
pub fn krp_put_port(_ctx: RetProbeContext) -> u32 {
    if idle() {
        return 0;
    }
    hooks::put_port_return(KPROBE);
    0
}

#[kprobe]
pub fn kp_hashdance(ctx: ProbeContext) -> u32 {
    if idle() {
        return 0;
    }
    if let Some(sk) = arg(&ctx, argpos!(hashdance_sk)) {
        hooks::hashdance_entry(sk);
    }
    0
}

#[kretprobe]
pub fn krp_hashdance(_ctx: RetProbeContext) -> u32 {
    if idle() {
        return 0;
    }
    hooks::hashdance_return(KPROBE);
    0
}

#[kprobe]
pub fn kp_tw_unhash(ctx: ProbeContext) -> u32 {
    if idle() {
        return 0;
    }
    if let Some(tw) = arg(&ctx, argpos!(bind_unhash_tw)) {
        hooks::tw_unhash_entry(tw);
    }
    0
}

#[kretprobe]
pub fn krp_tw_unhash(_ctx: RetProbeContext) -> u32 {
    if idle() {
        return 0;
    }
    hooks::tw_unhash_return(KPROBE);
    0
}
