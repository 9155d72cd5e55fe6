//! The fentry backend: fentry/fexit pairs (BPF trampolines, lower overhead than kprobes)
//! on the kernel functions of `kernel_functions.rs`. Argument positions come from BTF (`ARGS`).
use aya_ebpf::{
    macros::{fentry, fexit},
    programs::{FEntryContext, FExitContext},
};
use portwatch_common::{hook::FENTRY, NO_ARG};

use crate::{kernel_functions as hooks, maps::ARGS, read::idle};

macro_rules! argpos {
    ($f:ident) => {
        // SAFETY: ARGS is a plain static in .rodata; reading it is always valid.
        unsafe { core::ptr::read_volatile(&ARGS.$f) }
    };
}

/// Argument `n` of a function with at least `N` parameters. Only arguments below `N`
/// are loaded: the verifier rejects reading a parameter the function does not have.
/// Each is loaded at a constant context offset and passed through `black_box` before
/// choosing, as the verifier refuses a context load at a computed offset.
#[inline(always)]
fn arg<const N: u32>(ctx: &FEntryContext, n: u32) -> Option<u64> {
    if n >= N {
        return None;
    }
    let a0 = core::hint::black_box(ctx.arg::<u64>(0));
    if n == 0 {
        return Some(a0);
    }
    if N < 2 {
        return None;
    }
    let a1 = core::hint::black_box(ctx.arg::<u64>(1));
    if n == 1 {
        return Some(a1);
    }
    if N < 3 {
        return None;
    }
    let a2 = core::hint::black_box(ctx.arg::<u64>(2));
    if n == 2 {
        return Some(a2);
    }
    if N < 4 {
        return None;
    }
    Some(core::hint::black_box(ctx.arg::<u64>(3)))
}

/// The return value of the traced function: the context slot after its `nargs`
/// parameters, where the trampoline stores it on every kernel with fexit (5.5+). aya's
/// `FExitContext::ret` calls `bpf_get_func_ret`, which only exists from 5.17. `nargs`
/// comes from BTF through .rodata: the verifier sees one constant context offset, and
/// each candidate slot is loaded at a constant offset (see `arg`). Return values here are
/// `int`: the low 32 bits, sign-extended; -1 when the count is unknown.
#[inline(always)]
fn ret(ctx: &FExitContext, nargs: u32) -> i64 {
    let v: u64 = match nargs {
        1 => core::hint::black_box(ctx.arg::<u64>(1)),
        2 => core::hint::black_box(ctx.arg::<u64>(2)),
        3 => core::hint::black_box(ctx.arg::<u64>(3)),
        4 => core::hint::black_box(ctx.arg::<u64>(4)),
        5 => core::hint::black_box(ctx.arg::<u64>(5)),
        6 => core::hint::black_box(ctx.arg::<u64>(6)),
        _ => return -1,
    };
    v as i32 as i64
}

#[fentry(function = "inet_csk_get_port")]
pub fn fe_get_port(ctx: FEntryContext) -> u32 {
    if idle() {
        return 0;
    }
    let (s, n) = (argpos!(get_port_sk), argpos!(get_port_snum));
    if s != NO_ARG && n != NO_ARG {
        if let (Some(sk), Some(snum)) = (arg::<2>(&ctx, s), arg::<2>(&ctx, n)) {
            hooks::get_port_entry(sk, snum as u16);
        }
    }
    0
}

#[fexit(function = "inet_csk_get_port")]
pub fn fx_get_port(ctx: FExitContext) -> u32 {
    if idle() {
        return 0;
    }
    hooks::get_port_return(FENTRY, ret(&ctx, argpos!(get_port_nargs)));
    0
}

#[fentry(function = "__inet_hash_connect")]
pub fn fe_hash_connect(ctx: FEntryContext) -> u32 {
    if idle() {
        return 0;
    }
    if let Some(sk) = arg::<4>(&ctx, argpos!(hash_connect_sk)) {
        hooks::hash_connect_entry(sk);
    }
    0
}

#[fexit(function = "__inet_hash_connect")]
pub fn fx_hash_connect(ctx: FExitContext) -> u32 {
    if idle() {
        return 0;
    }
    hooks::hash_connect_return(FENTRY, ret(&ctx, argpos!(hash_connect_nargs)));
    0
}

#[fentry(function = "__inet_inherit_port")]
pub fn fe_inherit(ctx: FEntryContext) -> u32 {
    if idle() {
        return 0;
    }
    if let (Some(l), Some(c)) = (
        arg::<2>(&ctx, argpos!(inherit_sk)),
        arg::<2>(&ctx, argpos!(inherit_child)),
    ) {
        hooks::inherit_entry(l, c);
    }
    0
}

#[fexit(function = "__inet_inherit_port")]
pub fn fx_inherit(ctx: FExitContext) -> u32 {
    if idle() {
        return 0;
    }
    hooks::inherit_return(FENTRY, ret(&ctx, argpos!(inherit_nargs)));
    0
}

#[fentry(function = "inet_put_port")]
pub fn fe_put_port(ctx: FEntryContext) -> u32 {
    if idle() {
        return 0;
    }
    if let Some(sk) = arg::<1>(&ctx, argpos!(put_port_sk)) {
        hooks::put_port_entry(sk);
    }
    0
}

#[fexit(function = "inet_put_port")]
pub fn fx_put_port(_ctx: FExitContext) -> u32 {
    if idle() {
        return 0;
    }
    hooks::put_port_return(FENTRY);
    0
}

// A TIME-WAIT socket joins the bucket: `inet_twsk_hashdance_schedule` since "net:
// tcp/dccp: prepare for tw_timer un-pinning" (b334b924c9b7, 6.11), `inet_twsk_hashdance`
// before. An fentry program names its function when it is built, so each has its pair;
// user space attaches the one the running kernel has.
#[fentry(function = "inet_twsk_hashdance_schedule")]
pub fn fe_hashdance_schedule(ctx: FEntryContext) -> u32 {
    if idle() {
        return 0;
    }
    if let Some(sk) = arg::<3>(&ctx, argpos!(hashdance_sk)) {
        hooks::hashdance_entry(sk);
    }
    0
}

#[fexit(function = "inet_twsk_hashdance_schedule")]
pub fn fx_hashdance_schedule(_ctx: FExitContext) -> u32 {
    if idle() {
        return 0;
    }
    hooks::hashdance_return(FENTRY);
    0
}

#[fentry(function = "inet_twsk_hashdance")]
pub fn fe_hashdance(ctx: FEntryContext) -> u32 {
    if idle() {
        return 0;
    }
    if let Some(sk) = arg::<3>(&ctx, argpos!(hashdance_sk)) {
        hooks::hashdance_entry(sk);
    }
    0
}

#[fexit(function = "inet_twsk_hashdance")]
pub fn fx_hashdance(_ctx: FExitContext) -> u32 {
    if idle() {
        return 0;
    }
    hooks::hashdance_return(FENTRY);
    0
}

#[fentry(function = "inet_twsk_bind_unhash")]
pub fn fe_tw_unhash(ctx: FEntryContext) -> u32 {
    if idle() {
        return 0;
    }
    if let Some(tw) = arg::<2>(&ctx, argpos!(bind_unhash_tw)) {
        hooks::tw_unhash_entry(tw);
    }
    0
}

#[fexit(function = "inet_twsk_bind_unhash")]
pub fn fx_tw_unhash(_ctx: FExitContext) -> u32 {
    if idle() {
        return 0;
    }
    hooks::tw_unhash_return(FENTRY);
    0
}
