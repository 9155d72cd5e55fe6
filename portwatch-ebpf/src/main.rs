//! portwatch's eBPF programs. One file per hook family:
//! - `tracepoint.rs`: syscall enter/exit tracepoints and `sock:inet_sock_set_state`;
//! - `kprobe.rs`, `fentry.rs`: kprobe/kretprobe and fentry/fexit pairs on the kernel
//!   functions that change bind buckets, sharing their logic in `kernel_functions.rs`;
//! - `snapshot.rs`: the in-kernel walk of the bind hash table, triggered by the tool
//!   (with feature `walk_only`, the object holds it alone, with the `bpf_loop` probe).
//!
//! Shared by them:
//! - `read.rs`: reading kernel memory through the BTF-derived `LAYOUT`;
//! - `kernel.rs`: typed accessors over the kernel structs;
//! - `compat.rs`: one helper per kernel change, each naming its commit;
//! - `walk.rs`: the bounded owner and chain walks (cursors and step functions);
//! - `drive.rs`: the walk drivers (`bpf_loop`, or bounded loops: feature `bounded`);
//! - `emit.rs`: building and sending events (every backend emits the same model);
//! - `errors.rs`: the in-kernel counters of failed bind()/connect() calls;
//! - `maps.rs`: globals and maps.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// The atomic add of `errors.rs` (core has no atomic read-modify-write types for BPF).
#![cfg_attr(
    all(target_arch = "bpf", not(feature = "walk_only")),
    feature(core_intrinsics)
)]
#![cfg_attr(
    all(target_arch = "bpf", not(feature = "walk_only")),
    allow(internal_features)
)]
// The walk-only object (feature `walk_only`) leaves out the event programs, and with them
// the users of some shared accessors.
#![cfg_attr(feature = "walk_only", allow(dead_code))]

#[cfg(target_arch = "bpf")]
mod compat;
#[cfg(target_arch = "bpf")]
mod drive;
#[cfg(all(target_arch = "bpf", not(feature = "walk_only")))]
mod emit;
#[cfg(all(target_arch = "bpf", not(feature = "walk_only")))]
mod errors;
#[cfg(all(target_arch = "bpf", not(feature = "walk_only")))]
mod fentry;
#[cfg(target_arch = "bpf")]
mod kernel;
#[cfg(all(target_arch = "bpf", not(feature = "walk_only")))]
mod kernel_functions;
#[cfg(all(target_arch = "bpf", not(feature = "walk_only")))]
mod kprobe;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod read;
#[cfg(target_arch = "bpf")]
mod snapshot;
#[cfg(all(target_arch = "bpf", not(feature = "walk_only")))]
mod tracepoint;
#[cfg(target_arch = "bpf")]
mod walk;

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
