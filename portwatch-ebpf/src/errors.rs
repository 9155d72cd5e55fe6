//! The in-kernel failure counters: every failed bind()/connect() a backend sees is counted
//! in `ERRORS` per (netns, errno, syscall), before any port filter and whether or not its
//! event reaches user space. One helper, called from every backend's failure path.
use core::intrinsics::{atomic_xadd, AtomicOrdering};

use portwatch_common::{op, ErrorKey};

use crate::maps::ERRORS;

/// The largest errno the kernel returns (`MAX_ERRNO`).
const MAX_ERRNO: i32 = 4095;

/// Counts one failure of `which` (`op::BIND` or `op::CONNECT`; others are not counted)
/// with positive `errno` in netns `netns`. A failure that finds the map full is counted in
/// the `ErrorKey::MAP_FULL` slot instead.
///
/// The count runs in a global BPF function: since 5.6 the verifier checks one once, on
/// its own, and treats a call of it as returning some integer. Inlined after a failed
/// call's report, the count was checked again for every path through the report, which
/// on 5.10 took the bounded build's exit programs past the verifier's limit.
#[inline(always)]
pub fn count_failure(netns: u32, which: u8, errno: i32) {
    let _ = portwatch_count_failure(netns, u32::from(which), errno);
}

/// [`count_failure`] as a global function (scalar arguments only, as the verifier of
/// global functions requires).
#[no_mangle]
#[inline(never)]
pub extern "C" fn portwatch_count_failure(netns: u32, which: u32, errno: i32) -> i64 {
    count(netns, which as u8, errno);
    0
}

#[inline(always)]
fn count(netns: u32, which: u8, errno: i32) {
    if (which != op::BIND && which != op::CONNECT) || errno <= 0 || errno > MAX_ERRNO {
        return;
    }
    let key = ErrorKey {
        netns,
        errno: errno as u16,
        op: which,
        _pad: 0,
    };
    if add_one(&key) {
        return;
    }
    // A first failure of this kind: create the slot (when a racing CPU created it first the
    // insert fails and both add to that one), or count it as unslotted when the map is full.
    const BPF_NOEXIST: u64 = 1;
    let _ = ERRORS.insert(key, 0u64, BPF_NOEXIST);
    if !add_one(&key) {
        let _ = add_one(&ErrorKey::MAP_FULL);
    }
}

/// Adds one to the slot of `key`; false when it has none.
#[inline(always)]
fn add_one(key: &ErrorKey) -> bool {
    match ERRORS.get_ptr_mut(key) {
        Some(p) => {
            // SAFETY: `p` points at this key's u64 value in map memory, which stays valid
            // while the program runs; other CPUs update it only through atomic adds. The
            // result is unused, so this is the BPF atomic add every kernel has (core's
            // `AtomicU64::fetch_add` does not exist for BPF, which has no compare-and-swap
            // before v3).
            unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, 1) };
            true
        }
        None => false,
    }
}
