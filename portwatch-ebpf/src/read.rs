//! Reading kernel memory through the BTF-derived `LAYOUT`. Every address here is a plain
//! integer read with `bpf_probe_read_kernel`: a stale or wrong pointer gives an error or
//! zeroes, never a crash, which is what a lock-free observer of a changing table needs.
use core::ffi::c_void;

use aya_ebpf::helpers::bpf_probe_read_kernel;
use portwatch_common::{BitField, NO_FIELD};

use crate::maps::LAYOUT;

/// Reads one field of the global layout. `read_volatile` keeps the compiler from
/// constant-folding the compiled-in placeholder: user space rewrites it before loading.
macro_rules! layout {
    ($f:ident) => {
        // SAFETY: LAYOUT is a plain static in .rodata; reading it is always valid.
        unsafe { core::ptr::read_volatile(&crate::maps::LAYOUT.$f) }
    };
}
pub(crate) use layout;

/// True once user space has filled in the layout.
#[inline(always)]
pub fn layout_ready() -> bool {
    // SAFETY: LAYOUT is a plain static.
    unsafe { core::ptr::read_volatile(&LAYOUT.valid) == 1 }
}

/// True when user space loaded the event programs idle (`IDLE`): a constant the
/// verifier knows, so an idle program is verified as an empty one.
#[inline(always)]
pub fn idle() -> bool {
    // SAFETY: IDLE is a plain static in .rodata.
    unsafe { core::ptr::read_volatile(&crate::maps::IDLE) == 1 }
}

/// Reads a `T` at a kernel address.
#[inline(always)]
pub fn rd<T>(addr: u64) -> Option<T> {
    if addr == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel copies with fault handling; any address is allowed.
    unsafe { bpf_probe_read_kernel(addr as *const T).ok() }
}

/// Reads a `T` at `base + off`, `None` when the field does not exist on this kernel.
#[inline(always)]
pub fn field<T>(base: u64, off: u32) -> Option<T> {
    if off == NO_FIELD || base == 0 {
        return None;
    }
    rd::<T>(base + off as u64)
}

/// Reads a `T` at `base + off` without branching on the outcome: the helper zero-fills
/// the destination when the read faults, and a missing field (a constant the verifier
/// knows from .rodata) reads as zero. Branch-free reads keep the verifier's path count
/// small on older kernels, whose pruning is weaker.
#[inline(always)]
pub fn zfield<T: Copy>(base: u64, off: u32) -> T {
    let mut v = core::mem::MaybeUninit::<T>::zeroed();
    if off != NO_FIELD {
        // SAFETY: the helper writes at most size_of::<T>() bytes into `v` and zero-fills
        // it on a fault; any source address is allowed.
        unsafe {
            aya_ebpf::helpers::generated::bpf_probe_read_kernel(
                v.as_mut_ptr() as *mut c_void,
                core::mem::size_of::<T>() as u32,
                (base + off as u64) as *const c_void,
            );
        }
    }
    // SAFETY: zero-initialised, then possibly overwritten by the helper: a valid T for
    // the plain integer/array types used here.
    unsafe { v.assume_init() }
}

/// Reads `len` bytes at `base + off` straight into `dst` (map memory, such as a record
/// being built), without branching on the outcome: the helper zero-fills `dst` when the
/// read faults, and a missing field leaves it as it is.
#[inline(always)]
pub fn zread_into(dst: *mut u8, len: u32, base: u64, off: u32) {
    if off != NO_FIELD {
        read_into(dst, len, base + off as u64);
    }
}

/// Copies `len` bytes at kernel address `src` into `dst` (map memory); false when the
/// read faulted (the helper then zero-fills `dst`).
#[inline(always)]
pub fn read_into(dst: *mut u8, len: u32, src: u64) -> bool {
    // SAFETY: the caller passes `len` writable bytes at `dst`; the helper writes at most
    // that many, and any source address is allowed.
    unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            dst as *mut c_void,
            len,
            src as *const c_void,
        ) == 0
    }
}

/// A bit field read without branching on the outcome (0 when absent or unreadable).
#[inline(always)]
pub fn zbits(base: u64, bf: BitField) -> u64 {
    if bf.byte_off == NO_FIELD || bf.width == 0 || bf.width > 63 || bf.shift > 63 {
        return 0;
    }
    let word: u64 = zfield(base, bf.byte_off);
    (word >> bf.shift) & ((1u64 << bf.width) - 1)
}

/// `N` bytes of a kernel struct copied with one helper call: fields inside the copy are
/// taken from it, fields beyond it (or missing) are read one by one as `zfield` would.
/// One call for several bytes costs about as much as one call per field, so this
/// divides the cost of reading several fields of one struct that lie close together.
pub struct Window<const N: usize> {
    base: u64,
    /// Offset in the struct of the first byte copied.
    start: u32,
    bytes: [u8; N],
}

impl<const N: usize> Window<N> {
    /// Copies the first `N` bytes of the struct at `base` (zeroes when the read faults).
    #[inline(always)]
    pub fn read(base: u64) -> Self {
        Self::read_from(base, 0)
    }

    /// Copies `N` bytes from offset `start` of the struct at `base` (zeroes when the read
    /// faults; nothing is read for `NO_FIELD`, every field then read one by one).
    #[inline(always)]
    pub fn read_from(base: u64, start: u32) -> Self {
        let mut bytes = core::mem::MaybeUninit::<[u8; N]>::uninit();
        if start != NO_FIELD {
            // SAFETY: the helper writes exactly N bytes into `bytes`: the copy, or zeroes
            // when the read faults; any source address is allowed.
            unsafe {
                aya_ebpf::helpers::generated::bpf_probe_read_kernel(
                    bytes.as_mut_ptr() as *mut c_void,
                    N as u32,
                    (base + start as u64) as *const c_void,
                );
            }
        } else {
            bytes = core::mem::MaybeUninit::zeroed();
        }
        Window {
            base,
            start,
            // SAFETY: fully written by the helper or zeroed above.
            bytes: unsafe { bytes.assume_init() },
        }
    }

    /// Copies the `N` bytes from the lower of two field offsets, to read both fields
    /// with one call when they lie within `N` bytes of each other.
    #[inline(always)]
    pub fn around(base: u64, a: u32, b: u32) -> Self {
        Self::read_from(base, if a < b { a } else { b })
    }

    /// Copies `N` bytes at `base` into this window where it is (map memory, such as a
    /// walk's state): no copy on the stack. False when the read faulted (zeroes).
    #[inline(always)]
    pub fn fill(&mut self, base: u64) -> bool {
        self.base = base;
        self.start = 0;
        read_into(self.bytes.as_mut_ptr(), N as u32, base)
    }

    /// The `T` at byte `off` of the struct (`NO_FIELD`: zero).
    #[inline(always)]
    pub fn get<T: Copy>(&self, off: u32) -> T {
        let size = core::mem::size_of::<T>();
        if off != NO_FIELD
            && self.start != NO_FIELD
            && off >= self.start
            && size <= N
            && ((off - self.start) as usize) <= N - size
        {
            let at = (off - self.start) as usize;
            // SAFETY: `at + size <= N` (checked above): inside the copy; `T` is a plain
            // integer or integer array, valid for any bytes.
            unsafe { core::ptr::read_unaligned(self.bytes.as_ptr().add(at) as *const T) }
        } else {
            zfield(self.base, off)
        }
    }

    /// A bit field (see `BitField`), 0 when absent.
    #[inline(always)]
    pub fn bits(&self, bf: BitField) -> u64 {
        if bf.byte_off == NO_FIELD || bf.width == 0 || bf.width > 63 || bf.shift > 63 {
            return 0;
        }
        let word: u64 = self.get(bf.byte_off);
        (word >> bf.shift) & ((1u64 << bf.width) - 1)
    }
}
