//! Reading kernel structs through the BTF-derived `LAYOUT`. Every address here is a
//! plain integer read with `bpf_probe_read_kernel`: a stale or wrong pointer gives an
//! error, never a crash, which is what a lock-free observer of a changing table needs.
use core::ffi::c_void;

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel, generated::bpf_loop};
use portwatch_common::{BitField, BucketState, NO_FIELD, OWNERS_ON_TB2};

use crate::maps::{CHAIN_WALK, LAYOUT, OWNER_WALK};

/// Reads one field of the global layout. `read_volatile` keeps the compiler from
/// constant-folding the compiled-in placeholder: user space rewrites it before loading.
macro_rules! layout {
    ($f:ident) => {
        // SAFETY: LAYOUT is a plain static in .rodata; reading it is always valid.
        unsafe { core::ptr::read_volatile(&crate::maps::LAYOUT.$f) }
    };
}
pub(crate) use layout;

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
const IPPROTO_TCP: u16 = 6;
const SOCK_STREAM: u16 = 1;

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

/// A bit field read without branching on the outcome (0 when absent or unreadable).
#[inline(always)]
pub fn zbits(base: u64, bf: BitField) -> u64 {
    if bf.byte_off == NO_FIELD || bf.width == 0 || bf.width > 63 || bf.shift > 63 {
        return 0;
    }
    let word: u64 = zfield(base, bf.byte_off);
    (word >> bf.shift) & ((1u64 << bf.width) - 1)
}

/// Reads a bit field (see `BitField`).
#[inline(always)]
pub fn bits(base: u64, bf: BitField) -> Option<u64> {
    if bf.byte_off == NO_FIELD || base == 0 || bf.width == 0 || bf.width > 63 || bf.shift > 63 {
        return None;
    }
    let word: u64 = rd(base + bf.byte_off as u64)?;
    Some((word >> bf.shift) & ((1u64 << bf.width) - 1))
}

/// The calling task's network namespace (`current->nsproxy->net_ns`).
#[inline(always)]
pub fn current_net() -> Option<u64> {
    // SAFETY: the helper only returns the current task's address.
    let task = unsafe { bpf_get_current_task() };
    let nsproxy: u64 = field(task, layout!(task_nsproxy))?;
    field(nsproxy, layout!(nsproxy_net_ns))
}

/// The socket behind file descriptor `fd` of the current task, if it is a socket.
#[inline(always)]
pub fn sock_from_fd(fd: i64) -> Option<u64> {
    if fd < 0 {
        return None;
    }
    // SAFETY: as above.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = field(task, layout!(task_files))?;
    let fdt: u64 = field(files, layout!(files_fdt))?;
    let max_fds: u32 = field(fdt, layout!(fdt_max_fds))?;
    if fd as u64 >= max_fds as u64 {
        return None;
    }
    let fd_array: u64 = field(fdt, layout!(fdt_fd))?;
    let file: u64 = rd(fd_array + (fd as u64) * 8)?;
    let socket: u64 = field(file, layout!(file_private_data))?;
    // A socket's file points back at it and its sock points back at the socket: this
    // rejects files whose private_data is something else.
    let back: u64 = field(socket, layout!(socket_file))?;
    if back != file {
        return None;
    }
    let sk: u64 = field(socket, layout!(socket_sk))?;
    let sk_socket: u64 = field(sk, layout!(sk_socket))?;
    if sk_socket != socket {
        return None;
    }
    Some(sk)
}

/// True for TCP sockets of family AF_INET/AF_INET6.
#[inline(always)]
pub fn is_tcp(sk: u64) -> bool {
    let family: u16 = match field(sk, layout!(sk_family)) {
        Some(f) => f,
        None => return false,
    };
    if family != AF_INET && family != AF_INET6 {
        return false;
    }
    let protocol: u16 = if layout!(sk_protocol_size) == 1 {
        match field::<u8>(sk, layout!(sk_protocol)) {
            Some(p) => p as u16,
            None => return false,
        }
    } else {
        match field::<u16>(sk, layout!(sk_protocol)) {
            Some(p) => p,
            None => return false,
        }
    };
    let ty: u16 = field(sk, layout!(sk_type)).unwrap_or(0);
    protocol == IPPROTO_TCP && ty == SOCK_STREAM
}

#[inline(always)]
pub fn sk_net(sk: u64) -> Option<u64> {
    field(sk, layout!(sk_net))
}

#[inline(always)]
pub fn net_inum(net: u64) -> u32 {
    zfield(net, layout!(net_ns_inum))
}

#[inline(always)]
pub fn sk_family(sk: u64) -> u16 {
    zfield(sk, layout!(sk_family))
}

#[inline(always)]
pub fn sk_num(sk: u64) -> u16 {
    zfield(sk, layout!(sk_num))
}

/// The netns's ephemeral port range `(lo, hi)`.
#[inline(always)]
pub fn port_range(net: u64) -> (u16, u16) {
    if layout!(port_range_packed) == 1 {
        let r: u32 = zfield(net, layout!(net_port_range));
        ((r & 0xffff) as u16, (r >> 16) as u16)
    } else {
        let r: [i32; 2] = zfield(net, layout!(net_port_range));
        (r[0] as u16, r[1] as u16)
    }
}

/// What we read of a socket for an event. The socket options are raw bit-field values
/// (non-zero: set), combined into flags without branches by the caller.
pub struct SockInfo {
    pub family: u16,
    pub state: u8,
    pub rport: u16,
    pub laddr: [u8; 16],
    pub raddr: [u8; 16],
    pub reuse: u64,
    pub reuseport: u64,
    pub no_port: u64,
}

#[inline(always)]
pub fn sock_info(sk: u64) -> SockInfo {
    let family: u16 = zfield(sk, layout!(sk_family));
    let rport_be: u16 = zfield(sk, layout!(sk_dport));
    let mut laddr = [0u8; 16];
    let mut raddr = [0u8; 16];
    if family == AF_INET6 {
        laddr = zfield(sk, layout!(sk_v6_rcv_saddr));
        raddr = zfield(sk, layout!(sk_v6_daddr));
    } else {
        let l: [u8; 4] = zfield(sk, layout!(sk_rcv_saddr));
        let r: [u8; 4] = zfield(sk, layout!(sk_daddr));
        laddr[..4].copy_from_slice(&l);
        raddr[..4].copy_from_slice(&r);
    }
    SockInfo {
        family,
        state: zfield(sk, layout!(sk_state)),
        rport: u16::from_be(rport_be),
        laddr,
        raddr,
        reuse: zbits(sk, layout!(sk_reuse)),
        reuseport: zbits(sk, layout!(sk_reuseport)),
        no_port: zbits(sk, layout!(inet_bind_address_no_port)),
    }
}

/// The largest owner count one walk can establish (bpf_loop's 1 << 23 iterations).
const MAX_OWNERS: u32 = (1 << 22) - 2;

/// State of the bounded walk over a bucket's owners (for `bpf_loop`).
#[repr(C)]
pub struct OwnerWalk {
    /// Next `inet_bind2_bucket.bhash_node` to visit (TB2 mode).
    tb2_node: u64,
    /// Next owner `hlist_node` to count.
    owner: u64,
    count: u32,
    max: u32,
    done: u32,
    truncated: u32,
}

extern "C" fn owner_step(_index: u64, _ctx: *mut c_void) -> i64 {
    let Some(p) = OWNER_WALK.get_ptr_mut(0) else { return 1 };
    // SAFETY: this CPU's scratch slot; no other program runs on this CPU meanwhile.
    let w = unsafe { &mut *p };
    if w.owner != 0 {
        if w.count >= w.max {
            w.truncated = 1;
            return 1;
        }
        w.count += 1;
        // hlist_node.next is the first word of the node.
        w.owner = rd::<u64>(w.owner).unwrap_or(0);
        return 0;
    }
    if w.tb2_node != 0 {
        let tb2 = w.tb2_node - layout!(tb2_bhash_node) as u64;
        w.owner = field::<u64>(tb2, layout!(tb2_owners)).unwrap_or(0);
        w.tb2_node = rd::<u64>(w.tb2_node).unwrap_or(0);
        return 0;
    }
    w.done = 1;
    1
}

/// Number of sockets owning bucket `tb` (TIME-WAIT included), and whether the bound
/// `max` cut the count short.
#[inline(always)]
pub fn count_owners(tb: u64, max: u32) -> (u32, bool) {
    // bpf_loop refuses more than 1 << 23 iterations; two steps per owner at most.
    let max = if max > MAX_OWNERS { MAX_OWNERS } else { max };
    let Some(p) = OWNER_WALK.get_ptr_mut(0) else { return (0, true) };
    {
        // SAFETY: this CPU's scratch slot; no other program runs on this CPU meanwhile.
        let w = unsafe { &mut *p };
        *w = OwnerWalk { tb2_node: 0, owner: 0, count: 0, max, done: 0, truncated: 0 };
        if layout!(owners_mode) == OWNERS_ON_TB2 {
            w.tb2_node = field::<u64>(tb, layout!(tb_bhash2)).unwrap_or(0);
        } else {
            w.owner = field::<u64>(tb, layout!(tb_owners)).unwrap_or(0);
        }
    }
    // Owners plus per-address buckets plus one final step.
    let steps = max.saturating_mul(2).saturating_add(2);
    // SAFETY: the callback is a plain extern "C" fn taking (index, ctx); it finds its
    // state in the scratch map, so ctx is unused.
    unsafe {
        bpf_loop(steps, owner_step as *mut c_void, core::ptr::null_mut(), 0);
    }
    // SAFETY: as above.
    let w = unsafe { &*p };
    (w.count, w.truncated != 0 || w.done == 0)
}

/// The head of the bhash chain where (net, port) lives.
#[inline(always)]
pub fn bhash_chain_head(net: u64, port: u16) -> Option<u64> {
    let hashinfo: u64 = field(net, layout!(net_hashinfo))?;
    let bhash: u64 = field(hashinfo, layout!(hashinfo_bhash))?;
    let size: u32 = field(hashinfo, layout!(hashinfo_bhash_size))?;
    if size == 0 || size & (size - 1) != 0 {
        return None;
    }
    let mix: u32 = field(net, layout!(net_hash_mix)).unwrap_or(0);
    let slot = (port as u32).wrapping_add(mix) & (size - 1);
    let bucket = bhash + slot as u64 * layout!(bind_hashbucket_size) as u64;
    field(bucket, layout!(bind_hashbucket_chain))
}

#[repr(C)]
pub struct ChainWalk {
    node: u64,
    net: u64,
    found: u64,
    port: u16,
    _pad: [u8; 6],
}

extern "C" fn chain_step(_index: u64, _ctx: *mut c_void) -> i64 {
    let Some(p) = CHAIN_WALK.get_ptr_mut(0) else { return 1 };
    // SAFETY: this CPU's scratch slot; no other program runs on this CPU meanwhile.
    let w = unsafe { &mut *p };
    if w.node == 0 {
        return 1;
    }
    let tb = w.node - layout!(tb_node) as u64;
    let tb_net: u64 = field(tb, layout!(tb_net)).unwrap_or(0);
    let tb_port: u16 = field(tb, layout!(tb_port)).unwrap_or(0);
    if tb_net == w.net && tb_port == w.port {
        w.found = tb;
        return 1;
    }
    w.node = rd::<u64>(w.node).unwrap_or(0);
    0
}

/// Finds the bucket of (net, port) and reads its state. `None` when there is none.
#[inline(always)]
pub fn lookup_bucket(net: u64, port: u16, max_owners: u32) -> Option<(BucketState, bool)> {
    if port == 0 {
        return None;
    }
    let head = bhash_chain_head(net, port)?;
    let p = CHAIN_WALK.get_ptr_mut(0)?;
    // SAFETY: this CPU's scratch slot; no other program runs on this CPU meanwhile.
    unsafe { *p = ChainWalk { node: head, net, found: 0, port, _pad: [0; 6] } };
    // SAFETY: as in count_owners.
    unsafe {
        bpf_loop(4096, chain_step as *mut c_void, core::ptr::null_mut(), 0);
    }
    // SAFETY: as above.
    let found = unsafe { (*p).found };
    if found == 0 {
        return None;
    }
    Some(bucket_state(found, max_owners))
}

/// The state of bucket `tb`.
#[inline(always)]
pub fn bucket_state(tb: u64, max_owners: u32) -> (BucketState, bool) {
    let (owners, truncated) = count_owners(tb, max_owners);
    let st = BucketState {
        tb,
        owners,
        l3mdev: zfield(tb, layout!(tb_l3mdev)),
        port: zfield(tb, layout!(tb_port)),
        fastreuse: zfield(tb, layout!(tb_fastreuse)),
        fastreuseport: zfield(tb, layout!(tb_fastreuseport)),
        _pad: [0; 4],
    };
    (st, truncated)
}

/// True once user space has filled in the layout.
#[inline(always)]
pub fn layout_ready() -> bool {
    // SAFETY: LAYOUT is a plain static.
    unsafe { core::ptr::read_volatile(&LAYOUT.valid) == 1 }
}
