//! portwatch's eBPF programs. One file per hook family:
//! - `tracepoint.rs`: syscall enter/exit tracepoints and `sock:inet_sock_set_state`;
//! - `kprobe.rs`, `fentry.rs`: kprobe/kretprobe and fentry/fexit pairs on the bind-table
//!   functions, sharing their logic in `kfunc.rs`;
//! - `snapshot.rs`: the in-kernel walk of the bind hash table, triggered by the tool;
//! - `kernel.rs`: reading kernel structs through the BTF-derived `LAYOUT`;
//! - `emit.rs`: building and sending events (shared by every backend).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod emit;
#[cfg(target_arch = "bpf")]
mod fentry;
#[cfg(target_arch = "bpf")]
mod kernel;
#[cfg(target_arch = "bpf")]
mod kfunc;
#[cfg(target_arch = "bpf")]
mod kprobe;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod snapshot;
#[cfg(target_arch = "bpf")]
mod tracepoint;

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
