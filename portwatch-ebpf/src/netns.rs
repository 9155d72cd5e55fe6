//! A network namespace's ephemeral port range and reserved ports, read from its
//! `struct net` (`ip_local_ports.range` and the `ip_local_reserved_ports` bitmap) for a
//! `SNAP_NETNS` request: user space learns them without entering the namespace.
//!
//! Every kernel read here is branch-free (`zfield`, zero on a fault or a missing field):
//! the verifier of older kernels then sees one path through it.
use core::ffi::c_void;

use aya_ebpf::helpers::generated::bpf_probe_read_kernel;
use portwatch_common::{SnapRequest, RESERVED_WORDS};

use crate::{
    compat::port_range,
    kernel::{current_net, net_inum, sock_from_fd},
    maps::NETNS_PORTS,
    read::{layout, zfield},
};

/// Fills the `NETNS_PORTS` slot for the namespace of the request: `req.net`, else that of
/// socket `req.sock_fd` of the triggering process, else the triggering thread's own. A
/// namespace whose bitmap cannot be read is reported with `reserved_read` 0.
#[inline(always)]
pub fn read_ports(req: &SnapRequest) {
    let net = if req.net != 0 {
        req.net
    } else if req.sock_fd >= 0 {
        let sk = sock_from_fd(req.sock_fd as i64).unwrap_or(0);
        zfield::<u64>(sk, layout!(sk_net))
    } else {
        current_net().unwrap_or(0)
    };
    let Some(p) = NETNS_PORTS.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: the one slot of an array map, written only by this program, which runs for
    // the one thread that triggered it.
    let out = unsafe { &mut *p };
    let (lo, hi) = port_range(net);
    out.net = net;
    out.seq = req.seq;
    out.netns = net_inum(net);
    out.range_lo = lo;
    out.range_hi = hi;
    let bitmap: u64 = zfield(net, layout!(net_reserved_ports));
    let dst = out.reserved.as_mut_ptr() as *mut c_void;
    const BYTES: u32 = (RESERVED_WORDS * 8) as u32;
    // SAFETY: `dst` is the slot's bitmap of exactly BYTES bytes in map memory; the helper
    // copies with fault handling from any source address and zero-fills on a fault.
    let rc = unsafe { bpf_probe_read_kernel(dst, BYTES, bitmap as *const c_void) };
    out.reserved_read = (bitmap != 0 && rc == 0) as u32;
}
