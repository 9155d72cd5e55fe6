//! The walk drivers: how the step function of a walk (`walk.rs`, `snapshot.rs`) is
//! repeated. The crate is built twice and user space loads the object the running
//! kernel accepts:
//! - default build: `bpf_loop` (5.17, e6f2dd0f8067), up to 1 << 23 steps per helper call;
//!   the verifier checks the callback once;
//! - feature `bounded`: a bounded loop (verifiable since 5.3, 2589726d12a1), at most the
//!   step budget of the `WALK` global per program run. The verifier explores a bounded
//!   loop iteration by iteration, so the budget is small; walks that need more steps
//!   either report a bound (an owner count `≥N`, a lookup that gave up) or, for the
//!   snapshot, resume in the next run from their state in map memory.
//!
//! Both drivers run the same step function over the same state. The state lives in map
//! memory, not on the stack: the verifier then treats the counters as unknown values
//! and the `bpf_loop` callback converges instead of being explored value by value.
use portwatch_common::WalkBudget;

/// A walk: its state in one map slot, advanced one list node per step.
pub trait Walk: Sized {
    /// Where the walk's state lives (a map slot, see `maps.rs`).
    fn state() -> Option<*mut Self>;
    /// The number of steps one run of the bounded driver may take for this walk.
    #[cfg_attr(not(feature = "bounded"), allow(dead_code))]
    fn budget(b: &WalkBudget) -> u32;
    /// Advances the walk by one step; false once it is over.
    fn step(&mut self) -> bool;
    /// [`Walk::step`] on the walk's state, through the walk's global function (see
    /// [`out_of_line_step`]).
    #[cfg(feature = "bounded")]
    fn step_out_of_line() -> bool;
}

/// Defines `$name`: one step of walk `$ty` on its map slot, as a global BPF function
/// (bounded build). Since 5.6 the verifier checks a global function once, on its own,
/// and treats a call of it as returning some integer; a step inlined into a bounded loop
/// is instead checked again for every iteration and every path of every program that
/// drives the walk, which on older kernels takes most of the load time.
macro_rules! out_of_line_step {
    ($name:ident, $ty:ty) => {
        #[cfg(feature = "bounded")]
        #[no_mangle]
        #[inline(never)]
        pub extern "C" fn $name() -> i64 {
            match <$ty as $crate::drive::Walk>::state() {
                // SAFETY: the walk's own map slot (see `drive`).
                Some(p) => i64::from(unsafe { (*p).step() }),
                None => 0,
            }
        }
    };
}
pub(crate) use out_of_line_step;

/// The step budgets user space chose when it loaded the object.
#[cfg(feature = "bounded")]
#[inline(always)]
fn budgets() -> WalkBudget {
    // SAFETY: WALK is a plain static in .rodata; reading it is always valid. The read is
    // volatile so the compiler keeps the load: the verifier then sees the value user
    // space wrote into the frozen map, a constant loop bound.
    unsafe { core::ptr::read_volatile(&crate::maps::WALK) }
}

/// Runs at most the driver's budget of steps of walk `W`, stopping when the step function
/// says the walk is over. Callers read the outcome from the walk's state. `limit` (the
/// `bpf_loop` driver's bound) is not used: every step function enforces its own bounds,
/// and a second, runtime bound in the loop condition multiplies the paths the verifier
/// of older kernels explores.
#[cfg(feature = "bounded")]
#[inline(always)]
pub fn drive<W: Walk>(_limit: u32) {
    let n = W::budget(&budgets());
    let mut i: u32 = 0;
    while i < n {
        if !W::step_out_of_line() {
            break;
        }
        i += 1;
    }
}

#[cfg(not(feature = "bounded"))]
extern "C" fn callback<W: Walk>(_index: u64, _ctx: *mut core::ffi::c_void) -> i64 {
    let Some(p) = W::state() else {
        return 1;
    };
    // SAFETY: as in the bounded driver.
    if unsafe { (*p).step() } {
        0
    } else {
        1
    }
}

/// The kernel's limit on `bpf_loop` iterations (BPF_MAX_LOOPS).
#[cfg(not(feature = "bounded"))]
pub const MAX_LOOPS: u32 = 1 << 23;

/// Runs at most `limit` steps of walk `W` (see the bounded driver).
#[cfg(not(feature = "bounded"))]
#[inline(always)]
pub fn drive<W: Walk>(limit: u32) {
    let n = if limit > MAX_LOOPS { MAX_LOOPS } else { limit };
    // SAFETY: the callback is a plain extern "C" fn taking (index, ctx); it finds its
    // state in the walk's map slot, so ctx is unused.
    unsafe {
        aya_ebpf::helpers::generated::bpf_loop(
            n,
            callback::<W> as *mut core::ffi::c_void,
            core::ptr::null_mut(),
            0,
        );
    }
}

#[cfg(not(feature = "bounded"))]
extern "C" fn stop(_index: u64, _ctx: *mut core::ffi::c_void) -> i64 {
    1
}

/// Loaded (never attached) by user space to choose the object: it loads only where the
/// kernel has `bpf_loop` and accepts its callback as a subprogram (5.17+). Older
/// verifiers refuse it (5.10: "number of funcs in func_info doesn't match number of
/// subprogs"; 5.13 to 5.16: unknown helper 181).
#[cfg(not(feature = "bounded"))]
#[aya_ebpf::macros::tracepoint]
pub fn probe_bpf_loop(_ctx: aya_ebpf::programs::TracePointContext) -> u32 {
    // SAFETY: the callback is a plain extern "C" fn taking (index, ctx) and ignoring both.
    unsafe {
        aya_ebpf::helpers::generated::bpf_loop(
            1,
            stop as *mut core::ffi::c_void,
            core::ptr::null_mut(),
            0,
        );
    }
    0
}
