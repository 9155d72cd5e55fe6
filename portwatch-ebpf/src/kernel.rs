//! Typed accessors over the kernel structs the programs read (task, file, socket, net,
//! bind buckets), through the BTF-derived `LAYOUT`. Where kernels differ, the accessor
//! calls the helper of `compat.rs` for that change.
use aya_ebpf::helpers::bpf_get_current_task;
use portwatch_common::BucketState;

use crate::{
    compat,
    read::{field, layout, rd, zbits, zfield},
};

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
const IPPROTO_TCP: u16 = 6;
const SOCK_STREAM: u16 = 1;

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
    let Some(protocol) = compat::sk_protocol(sk) else {
        return false;
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
    pub connect_bound: bool,
    /// IP_LOCAL_PORT_RANGE (lo | hi << 16), 0 when unset.
    pub port_range: u32,
    /// The per-address bucket's own state: (known, fastreuse, fastreuseport).
    pub addr_state: (bool, i8, i8),
}

#[inline(always)]
pub fn sock_info(sk: u64) -> SockInfo {
    let family: u16 = zfield(sk, layout!(sk_family));
    let state: u8 = zfield(sk, layout!(sk_state));
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
        state,
        rport: u16::from_be(rport_be),
        laddr,
        raddr,
        reuse: zbits(sk, layout!(sk_reuse)),
        reuseport: zbits(sk, layout!(sk_reuseport)),
        no_port: zbits(sk, layout!(inet_bind_address_no_port)),
        connect_bound: compat::connect_bound(sk, state),
        port_range: compat::socket_port_range(sk, state),
        addr_state: compat::sk_addr_fastreuse(sk),
    }
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

/// The bucket whose `node` member is at `node` (`container_of`).
#[inline(always)]
pub fn tb_of_node(node: u64) -> u64 {
    node - layout!(tb_node) as u64
}

/// The per-address bucket whose `bhash_node` member is at `node`.
#[inline(always)]
pub fn tb2_of_bhash_node(node: u64) -> u64 {
    node - layout!(tb2_bhash_node) as u64
}

/// The socket whose `skc_bind_node` member is at `node`.
#[inline(always)]
pub fn sk_of_bind_node(node: u64) -> u64 {
    node - layout!(sk_bind_node) as u64
}

/// The bucket's netns (`struct net` address) and port, for matching a chain entry.
#[inline(always)]
pub fn tb_net_port(tb: u64) -> (u64, u16) {
    (
        field(tb, layout!(tb_net)).unwrap_or(0),
        field(tb, layout!(tb_port)).unwrap_or(0),
    )
}

/// Bucket `tb`'s state apart from its owner count (filled in by the caller).
#[inline(always)]
pub fn tb_state(tb: u64) -> BucketState {
    BucketState {
        tb,
        owners: 0,
        l3mdev: zfield(tb, layout!(tb_l3mdev)),
        port: zfield(tb, layout!(tb_port)),
        fastreuse: zfield(tb, layout!(tb_fastreuse)),
        fastreuseport: zfield(tb, layout!(tb_fastreuseport)),
        _pad: [0; 4],
    }
}
