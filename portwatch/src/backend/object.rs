//! The eBPF object built by `build.rs` from the `portwatch-ebpf` crate.

/// The object file, 8-byte aligned as the ELF parser wants.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/portwatch"));
