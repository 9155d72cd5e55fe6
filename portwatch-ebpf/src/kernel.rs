//! Typed accessors over the kernel structs the programs read (task, file, socket, net,
//! bind buckets), through the BTF-derived `LAYOUT`. Where kernels differ, the accessor
//! calls the helper of `compat.rs` for that change.
use aya_ebpf::helpers::bpf_get_current_task;
use portwatch_common::{BucketState, SnapRecord};

use crate::{
    compat,
    read::{field, layout, rd, zbits, zfield, zread_into, Window},
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

/// The `struct file` behind file descriptor `fd` of the current task.
#[inline(always)]
fn file_of_fd(fd: i64) -> Option<u64> {
    if fd < 0 {
        return None;
    }
    // SAFETY: as above.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = field(task, layout!(task_files))?;
    let fdt: u64 = field(files, layout!(files_fdt))?;
    // `max_fds` and `fd` are neighbours: one copy reads both.
    let w = Window::<16>::around(fdt, layout!(fdt_max_fds), layout!(fdt_fd));
    let max_fds: u32 = w.get(layout!(fdt_max_fds));
    if fd as u64 >= max_fds as u64 {
        return None;
    }
    let fd_array: u64 = w.get(layout!(fdt_fd));
    rd(fd_array + (fd as u64) * 8)
}

/// The socket behind file descriptor `fd` of the current task, if it is a socket.
#[inline(always)]
pub fn sock_from_fd(fd: i64) -> Option<u64> {
    let file = file_of_fd(fd)?;
    let socket: u64 = field(file, layout!(file_private_data))?;
    // A socket's file points back at it and its sock points back at the socket: this
    // rejects files whose private_data is something else. `file` and `sk` are
    // neighbours in `struct socket`: one copy reads both.
    let w = Window::<16>::around(socket, layout!(socket_file), layout!(socket_sk));
    let back: u64 = w.get(layout!(socket_file));
    if back == 0 || back != file {
        return None;
    }
    let sk: u64 = w.get(layout!(socket_sk));
    if sk == 0 {
        return None;
    }
    let sk_socket: u64 = field(sk, layout!(sk_socket))?;
    if sk_socket != socket {
        return None;
    }
    Some(sk)
}

/// Bytes of `struct sock` copied at once: `struct sock_common` (family, port, state,
/// addresses, netns, reuse bits) is its start, and every event reads several of those.
const SK_HEAD: usize = 96;

/// The start of a socket (`struct sock_common`), read with one helper call.
pub struct SockHead(Window<SK_HEAD>);

impl SockHead {
    #[inline(always)]
    pub fn read(sk: u64) -> SockHead {
        SockHead(Window::read(sk))
    }

    #[inline(always)]
    pub fn family(&self) -> u16 {
        self.0.get(layout!(sk_family))
    }

    /// The local port (`inet_num`, host order), 0 when the socket holds none.
    #[inline(always)]
    pub fn num(&self) -> u16 {
        self.0.get(layout!(sk_num))
    }

    /// The socket's `struct net` (0 when unreadable).
    #[inline(always)]
    pub fn net(&self) -> u64 {
        self.0.get(layout!(sk_net))
    }
}

/// True for TCP sockets of family AF_INET/AF_INET6.
#[inline(always)]
pub fn is_tcp(sk: u64, head: &SockHead) -> bool {
    let family = head.family();
    if family != AF_INET && family != AF_INET6 {
        return false;
    }
    // `sk_protocol` and `sk_type` are neighbours: one copy reads both.
    let w = Window::<8>::around(sk, layout!(sk_protocol), layout!(sk_type));
    let ty: u16 = w.get(layout!(sk_type));
    compat::sk_protocol(&w) == IPPROTO_TCP && ty == SOCK_STREAM
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
    pub v6only: u64,
    /// `sk_uid` and bound device (`SO_BINDTODEVICE`); the socket is a full one.
    pub uid: u32,
    pub bound_dev: i32,
    pub connect_bound: bool,
    /// IP_LOCAL_PORT_RANGE (lo | hi << 16), 0 when unset.
    pub port_range: u32,
    /// The per-address bucket's own state: (known, fastreuse, fastreuseport).
    pub addr_state: (bool, i8, i8),
}

#[inline(always)]
pub fn sock_info(sk: u64, head: &SockHead) -> SockInfo {
    let h = &head.0;
    let family: u16 = h.get(layout!(sk_family));
    let state: u8 = h.get(layout!(sk_state));
    let rport_be: u16 = h.get(layout!(sk_dport));
    let mut laddr = [0u8; 16];
    let mut raddr = [0u8; 16];
    if family == AF_INET6 {
        laddr = h.get(layout!(sk_v6_rcv_saddr));
        raddr = h.get(layout!(sk_v6_daddr));
    } else {
        let l: [u8; 4] = h.get(layout!(sk_rcv_saddr));
        let r: [u8; 4] = h.get(layout!(sk_daddr));
        laddr[..4].copy_from_slice(&l);
        raddr[..4].copy_from_slice(&r);
    }
    // IP_BIND_ADDRESS_NO_PORT lives in inet_sock, beyond the head: read on its own.
    let no_port = zbits(sk, layout!(inet_bind_address_no_port));
    SockInfo {
        family,
        state,
        rport: u16::from_be(rport_be),
        laddr,
        raddr,
        reuse: h.bits(layout!(sk_reuse)),
        reuseport: h.bits(layout!(sk_reuseport)),
        no_port,
        v6only: h.bits(layout!(sk_ipv6only)),
        // sk_uid lives beyond the head: read on its own.
        uid: zfield(sk, layout!(sk_uid)),
        bound_dev: h.get(layout!(sk_bound_dev_if)),
        connect_bound: compat::connect_bound(sk, state),
        port_range: compat::socket_port_range(sk, state),
        addr_state: compat::sk_addr_fastreuse(sk),
    }
}

/// The bucket socket `sk` holds (`icsk_bind_hash`), 0 when none or unreadable.
#[inline(always)]
pub fn held_bucket(sk: u64) -> u64 {
    zfield(sk, layout!(sk_bind_hash))
}

/// The head of the bhash chain where (net, port) lives.
#[inline(always)]
pub fn bhash_chain_head(net: u64, port: u16) -> Option<u64> {
    let hashinfo: u64 = field(net, layout!(net_hashinfo))?;
    let bhash: u64 = field(hashinfo, layout!(hashinfo_bhash))?;
    let size: u32 = field(hashinfo, layout!(hashinfo_bhash_size))?;
    let slot = bhash_slot(net, port, size)?;
    let bucket = bhash + slot as u64 * layout!(bind_hashbucket_size) as u64;
    field(bucket, layout!(bind_hashbucket_chain))
}

/// The slot of a `bhash` of `size` slots where (net, port) lives (`inet_bhashfn()`);
/// `None` when `size` is not a power of two.
#[inline(always)]
pub fn bhash_slot(net: u64, port: u16, size: u32) -> Option<u32> {
    if size == 0 || size & (size - 1) != 0 {
        return None;
    }
    let mix: u32 = field(net, layout!(net_hash_mix)).unwrap_or(0);
    Some((port as u32).wrapping_add(mix) & (size - 1))
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

/// Bytes of `struct inet_bind_bucket` copied at once: its netns, l3mdev, port and
/// fastreuse pair lead the struct on every kernel portwatch supports.
const TB_HEAD: usize = 16;

/// Bytes of `struct inet_bind_bucket` the snapshot walk copies at once: on the kernels
/// portwatch supports, everything it reads of a bucket (the above, the fast-path fields
/// and the head of its owner list) lies within them. A field beyond is read on its own.
pub const TB_SPAN: usize = 72;

/// The start of a bind bucket, read with one helper call.
pub struct TbHead<const N: usize = TB_HEAD>(Window<N>);

impl TbHead {
    #[inline(always)]
    pub fn read(tb: u64) -> TbHead {
        TbHead(Window::read(tb))
    }
}

impl<const N: usize> TbHead<N> {
    /// Copies the start of bucket `tb` into this one where it is (map memory); false
    /// when it could not be read.
    #[inline(always)]
    pub fn fill(&mut self, tb: u64) -> bool {
        self.0.fill(tb)
    }

    /// The next bucket's `node` in the bhash chain (`node.next`, the first word of the
    /// bucket's `node`), 0 at the end of the chain.
    #[inline(always)]
    pub fn chain_next(&self) -> u64 {
        self.0.get(layout!(tb_node))
    }

    /// The bucket's netns (`struct net` address).
    #[inline(always)]
    pub fn net(&self) -> u64 {
        self.0.get(layout!(tb_net))
    }

    /// Where the bucket's owner walk starts (see `compat::owner_lists`).
    #[inline(always)]
    pub fn owner_lists(&self) -> (u64, u64) {
        compat::owner_lists(|off| self.0.get(off))
    }

    /// Fills in the fast-path fields that `sk_reuseport_match()` reads: `fastuid`
    /// (`uid`), the fast address (`laddr`, IPv4 in the first four bytes) with its family;
    /// returns `fast_ipv6_only`.
    #[inline(always)]
    pub fn fill_fast(&self, r: &mut SnapRecord) -> u8 {
        r.family = self.0.get(layout!(tb_fast_sk_family));
        if r.family == AF_INET6 {
            r.laddr = self.0.get(layout!(tb_fast_v6_rcv_saddr));
        } else {
            let a: [u8; 4] = self.0.get(layout!(tb_fast_rcv_saddr));
            r.laddr[..4].copy_from_slice(&a);
        }
        r.uid = self.0.get(layout!(tb_fastuid));
        self.0.get(layout!(tb_fast_ipv6_only))
    }

    /// The bucket's netns (`struct net` address) and port, for matching a chain entry.
    #[inline(always)]
    pub fn net_port(&self) -> (u64, u16) {
        (self.0.get(layout!(tb_net)), self.0.get(layout!(tb_port)))
    }

    /// Bucket `tb`'s state apart from its owner count (filled in by the caller).
    #[inline(always)]
    pub fn state(&self, tb: u64) -> BucketState {
        BucketState {
            tb,
            owners: 0,
            l3mdev: self.0.get(layout!(tb_l3mdev)),
            port: self.0.get(layout!(tb_port)),
            fastreuse: self.0.get(layout!(tb_fastreuse)),
            fastreuseport: self.0.get(layout!(tb_fastreuseport)),
            _pad: [0; 4],
        }
    }
}

/// The bucket's netns (`struct net` address) and port, for matching a chain entry.
#[inline(always)]
pub fn tb_net_port(tb: u64) -> (u64, u16) {
    TbHead::read(tb).net_port()
}

/// Bucket `tb`'s state apart from its owner count (filled in by the caller).
#[inline(always)]
pub fn tb_state(tb: u64) -> BucketState {
    TbHead::read(tb).state(tb)
}

/// The `struct net` of the namespace whose nsfs file (`/proc/PID/ns/net`) is open as
/// `fd` in the current task: the file's inode holds the namespace's `ns_common` in
/// `i_private` (`get_proc_ns()`), which is embedded in `struct net` at `net.ns`. The
/// namespace's inode number must equal the file's inode number, or the read is refused
/// (user space checks beforehand that the file is a network namespace's).
#[inline(always)]
pub fn net_of_nsfs_fd(fd: i64) -> Option<u64> {
    let file = file_of_fd(fd)?;
    let inode: u64 = field(file, layout!(file_inode))?;
    let ns: u64 = field(inode, layout!(inode_private))?;
    let net_ns = layout!(net_ns);
    if net_ns == portwatch_common::NO_FIELD || ns < net_ns as u64 {
        return None;
    }
    let net = ns - net_ns as u64;
    let ino: u64 = field(inode, layout!(inode_ino))?;
    if ino != net_inum(net) as u64 {
        return None;
    }
    Some(net)
}

/// TCP states the bind table holds that are not full sockets: their struct is an
/// `inet_timewait_sock` (or a request sock), which ends after `sock_common`.
const TCP_TIME_WAIT: u8 = 6;
const TCP_NEW_SYN_RECV: u8 = 12;

/// Fills in what `explain` needs of owner `sk` (whose `family` and `state` are in `r`)
/// besides its address and sharing options: its uid and inode (full sockets only),
/// bound device, remote end, the family of its per-address bucket (0 where buckets keep
/// none), and returns its `IPV6_V6ONLY` bit. Addresses are read straight into the record
/// (map memory): copies on the stack would add to the frame of the walk's step, which
/// older verifiers bound together with the trigger's. Branch-free (see `read::zfield`):
/// a TIME-WAIT or request socket's uid and inode read as 0 by arithmetic, and a socket
/// address of 0 makes the inode read fault to 0.
#[inline(always)]
pub fn fill_owner(r: &mut SnapRecord, sk: u64) -> u64 {
    let full = r.state != TCP_TIME_WAIT && r.state != TCP_NEW_SYN_RECV;
    if r.family == AF_INET6 {
        zread_into(r.raddr.as_mut_ptr(), 16, sk, layout!(sk_v6_daddr));
    } else {
        zread_into(r.raddr.as_mut_ptr(), 4, sk, layout!(sk_daddr));
    }
    let socket: u64 = zfield::<u64>(sk, layout!(sk_socket)) * (full as u64);
    let ino: u64 = zfield(socket, layout!(socket_ino));
    r.ino = ino * ((socket != 0) as u64);
    r.uid = zfield::<u32>(sk, layout!(sk_uid)) * (full as u32);
    r.bound_dev = zfield(sk, layout!(sk_bound_dev_if));
    r.rport = u16::from_be(zfield::<u16>(sk, layout!(sk_dport)));
    r.tb2_family = compat::tb2_family_of(sk, full);
    zbits(sk, layout!(sk_ipv6only))
}

/// `net->ipv4.sysctl_local_reserved_ports`: the bitmap of reserved ports (0 when absent).
#[inline(always)]
pub fn reserved_ports(net: u64) -> u64 {
    zfield(net, layout!(net_reserved_ports))
}
