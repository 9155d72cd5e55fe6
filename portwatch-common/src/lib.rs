//! Types shared by the eBPF programs and user space.
//!
//! Everything here crosses the kernel boundary: `#[repr(C)]`, fixed-width integers,
//! explicit padding, no `bool`/`enum`/`Option`. Sizes are asserted at compile time so
//! both sides agree byte for byte.
#![no_std]

/// Offset value meaning "this field does not exist on the running kernel".
pub const NO_FIELD: u32 = u32::MAX;

/// A bit field inside a kernel struct: `(word at byte_off >> shift) & ((1 << width) - 1)`,
/// the word being 8 bytes read little-endian (x86_64, arm64). Unused when `byte_off == NO_FIELD`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct BitField {
    pub byte_off: u32,
    pub shift: u8,
    pub width: u8,
    pub _pad: [u8; 2],
}

impl BitField {
    pub const NONE: BitField = BitField {
        byte_off: NO_FIELD,
        shift: 0,
        width: 0,
        _pad: [0; 2],
    };
}

/// How the owners of a port are counted on this kernel (`Layout::owners_mode`).
/// Kernels up to 6.7: `inet_bind_bucket.owners`. 6.8 and later: the sum of
/// `inet_bind2_bucket.owners` over `inet_bind_bucket.bhash2`.
pub const OWNERS_ON_TB: u32 = 0;
pub const OWNERS_ON_TB2: u32 = 1;

/// The value a `Layout` field has before user space fills it in.
pub trait Unset {
    const UNSET: Self;
}

impl Unset for u32 {
    const UNSET: u32 = NO_FIELD;
}

impl Unset for BitField {
    const UNSET: BitField = BitField::NONE;
}

/// Declares `Layout` and its all-unset value from one list of fields, so that a field
/// is added in one place.
macro_rules! layout_struct {
    ($( $(#[$doc:meta])* $name:ident: $ty:ty, )*) => {
        /// Kernel struct layout, resolved from BTF by user space at start-up and handed to
        /// the eBPF programs as the global `LAYOUT`. Offsets are in bytes from the start of
        /// the named struct; `NO_FIELD` when the running kernel lacks the field. Flags are
        /// 1 when set; an unset flag reads `NO_FIELD`, which is not 1.
        #[repr(C)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
        pub struct Layout {
            $( $(#[$doc])* pub $name: $ty, )*
        }

        impl Layout {
            /// The value compiled into the eBPF object; user space overrides it before
            /// loading. Every offset is `NO_FIELD`, every bit field `BitField::NONE`.
            pub const UNSET: Layout = Layout { $( $name: <$ty as Unset>::UNSET, )* };
        }
    };
}

layout_struct! {
    // Reaching a socket from a file descriptor: task->files->fdt->fd[n]->private_data.
    task_files: u32,
    files_fdt: u32,
    fdt_max_fds: u32,
    fdt_fd: u32,
    file_private_data: u32,
    socket_sk: u32,
    socket_file: u32,
    // Reaching the caller's netns: task->nsproxy->net_ns.
    task_nsproxy: u32,
    nsproxy_net_ns: u32,
    // struct net
    /// `net->ns.inum`: the inode of /proc/PID/ns/net.
    net_ns_inum: u32,
    net_hash_mix: u32,
    /// `net->ipv4.tcp_death_row.hashinfo` (a pointer), from the start of `struct net`.
    net_hashinfo: u32,
    /// `net->ipv4.ip_local_ports.range`, from the start of `struct net`.
    net_port_range: u32,
    /// 1: `range` is one u32 (lo | hi << 16); otherwise `int range[2]`.
    port_range_packed: u32,
    // struct inet_hashinfo
    hashinfo_bhash: u32,
    hashinfo_bhash_size: u32,
    /// Size of `struct inet_bind_hashbucket` (a size, not an offset).
    bind_hashbucket_size: u32,
    bind_hashbucket_chain: u32,
    // struct sock / sock_common / inet_sock
    sk_family: u32,
    sk_state: u32,
    sk_num: u32,
    sk_dport: u32,
    sk_rcv_saddr: u32,
    sk_daddr: u32,
    sk_v6_rcv_saddr: u32,
    sk_v6_daddr: u32,
    sk_net: u32,
    sk_bind_node: u32,
    sk_protocol: u32,
    /// Size of `sk_protocol` in bytes (1 or 2; a size, not an offset).
    sk_protocol_size: u32,
    sk_type: u32,
    sk_socket: u32,
    sk_reuse: BitField,
    sk_reuseport: BitField,
    /// `inet_sock.bind_address_no_port` bit field, or the
    /// `INET_FLAGS_BIND_ADDRESS_NO_PORT` bit of `inet_sock.inet_flags`.
    inet_bind_address_no_port: BitField,
    // struct inet_bind_bucket
    tb_net: u32,
    tb_l3mdev: u32,
    tb_port: u32,
    tb_fastreuse: u32,
    tb_fastreuseport: u32,
    tb_node: u32,
    tb_owners: u32,
    tb_bhash2: u32,
    // struct inet_bind2_bucket
    tb2_bhash_node: u32,
    tb2_owners: u32,
    tb2_fastreuse: u32,
    tb2_fastreuseport: u32,
    /// `inet_bind2_bucket.family` (AF_INET / AF_INET6), on kernels that have it.
    tb2_family: u32,
    /// 1: the kernel stores IPv4 addresses v4-mapped in `v6_rcv_saddr` (and keeps an
    /// `addr_type` instead of `family`).
    tb2_addr_mapped: u32,
    tb2_v6_rcv_saddr: u32,
    /// The IPv4 member of the address union, on kernels that have one.
    tb2_rcv_saddr: u32,
    /// `sock.sk_userlocks` (a 4-bit bit field up to 6.11, a byte since).
    sk_userlocks: BitField,
    /// `SOCK_CONNECT_BIND`, the bit of `sk_userlocks` that marks a socket whose port
    /// connect() chose, on kernels that keep it (d57f4b874946, 6.18); 0 elsewhere.
    connect_bind_mask: u32,
    /// `inet_timewait_sock.tw_connect_bind`: the same mark on TIME-WAIT sockets.
    tw_connect_bind: BitField,
    /// `inet_sock.local_port_range`: the socket's IP_LOCAL_PORT_RANGE as one u32
    /// (lo | hi << 16, both as struct members before 6.8), 0 when unset.
    inet_local_port_range: u32,
    /// `inet_connection_sock.icsk_bind2_hash`: the socket's per-address bucket.
    icsk_bind2_hash: u32,
    // What `explain` reads about owners, buckets and namespaces (verbose snapshots).
    /// `sock.sk_uid` (`kuid_t`; full sockets only: `inet_timewait_sock` has none).
    sk_uid: u32,
    /// `sock_common.skc_ipv6only` (`IPV6_V6ONLY`).
    sk_ipv6only: BitField,
    /// `sock_common.skc_bound_dev_if` (`SO_BINDTODEVICE`).
    sk_bound_dev_if: u32,
    /// `SOCK_INODE(socket)->i_ino` from the start of `struct socket` (the inode follows
    /// the socket in `struct socket_alloc`): the number in `socket:[N]` of /proc/PID/fd.
    socket_ino: u32,
    /// A network namespace from a file descriptor of its nsfs file:
    /// `file->f_inode->i_private` is its `ns_common`, `i_ino` its inode number.
    file_inode: u32,
    inode_private: u32,
    inode_ino: u32,
    /// `net.ns` (the `ns_common` embedded in `struct net`).
    net_ns: u32,
    /// `net->ipv4.sysctl_local_reserved_ports` (a pointer to a 65536-bit bitmap).
    net_reserved_ports: u32,
    /// `net->ipv4.sysctl_tcp_tw_reuse` and its size in bytes (a size, not an offset).
    net_tw_reuse: u32,
    net_tw_reuse_size: u32,
    /// The bucket's fast-path fields (`sk_reuseport_match()`): `fastuid`, the address of
    /// the socket that set `fastreuseport` to strict, its family and `IPV6_V6ONLY`.
    tb_fastuid: u32,
    tb_fast_v6_rcv_saddr: u32,
    tb_fast_rcv_saddr: u32,
    tb_fast_sk_family: u32,
    tb_fast_ipv6_only: u32,
    /// `inet_timewait_sock.tw_tb2`: the per-address bucket a TIME-WAIT owner hangs on
    /// (`icsk_bind2_hash` for full sockets), for its family on kernels whose buckets
    /// keep one.
    tw_tb2: u32,
    /// `OWNERS_ON_TB` or `OWNERS_ON_TB2`.
    owners_mode: u32,
    /// `inet_connection_sock.icsk_bind_hash` (from the start of `struct sock`): the
    /// bucket a socket holds, so an event after a successful bind/connect/listen/accept
    /// reads it without searching the chain.
    sk_bind_hash: u32,
    /// `struct pt_regs` members holding a syscall's first and second arguments (`di`,
    /// `si` on x86_64), read at a syscall's exit through `bpf_task_pt_regs()`; `NO_FIELD`
    /// where that helper is missing (before 5.15) or the architecture is not known.
    regs_arg0: u32,
    regs_arg1: u32,
    /// 1 when this layout was filled in by user space (the eBPF side refuses to run on
    /// the compiled-in placeholder).
    valid: u32,
}

/// Operations after which an event is emitted. Values, not an enum: they cross the
/// kernel boundary as a `u8`.
pub mod op {
    pub const BIND: u8 = 1;
    pub const LISTEN: u8 = 2;
    pub const CONNECT: u8 = 3;
    pub const ACCEPT: u8 = 4;
    pub const CLOSE: u8 = 5;
    /// An owner left without a syscall of ours seeing it (TIME-WAIT expiry, RST, netns
    /// exit); only the kprobe/fentry backends see it.
    pub const RELEASE: u8 = 6;
    /// A TIME-WAIT socket took over the port from a closing socket.
    pub const TIMEWAIT: u8 = 7;
}

/// Which hook family produced an event (for diagnostics only; the model is the same).
pub mod hook {
    pub const TRACEPOINT: u8 = 1;
    pub const KPROBE: u8 = 2;
    pub const FENTRY: u8 = 3;
}

/// Flags in [`Event::flags`].
pub mod flag {
    /// A bucket for (netns, port) was found after the operation.
    pub const BUCKET_PRESENT: u16 = 1 << 0;
    /// The owner walk hit its bound: `owners` is a lower bound.
    pub const OWNERS_TRUNCATED: u16 = 1 << 1;
    /// The socket had a local port (inet_num != 0) before the operation.
    pub const HAD_PORT: u16 = 1 << 2;
    /// `SO_REUSEADDR` on the socket.
    pub const REUSEADDR: u16 = 1 << 3;
    /// `SO_REUSEPORT` on the socket.
    pub const REUSEPORT: u16 = 1 << 4;
    /// `IP_BIND_ADDRESS_NO_PORT` on the socket.
    pub const BIND_ADDRESS_NO_PORT: u16 = 1 << 5;
    /// The port in the event is the only port of the netns's ephemeral range (used for
    /// failures of an ephemeral search, where no single port was asked for).
    pub const PORT_FROM_RANGE: u16 = 1 << 6;
    /// The socket's own information (address, options) could be read.
    pub const SOCK_KNOWN: u16 = 1 << 7;
    /// The bucket lookup gave up before the end of the hash chain (the walk's step
    /// budget ran out): `BUCKET_PRESENT` unset means "not known", not "absent".
    pub const LOOKUP_TRUNCATED: u16 = 1 << 8;
    /// The kernel marks sockets whose port connect() chose (6.18+): `CONNECT_BOUND`
    /// says whether this one is.
    pub const CONNECT_BIND_KNOWN: u16 = 1 << 9;
    /// The socket got its port from connect(), not bind() (`SOCK_CONNECT_BIND`).
    pub const CONNECT_BOUND: u16 = 1 << 10;
    /// `addr_fastreuse`/`addr_fastreuseport` hold the state of the socket's
    /// per-address bucket (kernels where it has its own, 6.18+).
    pub const ADDR_STATE: u16 = 1 << 11;
    /// `IPV6_V6ONLY` on the socket.
    pub const V6ONLY: u16 = 1 << 12;
    /// A failed bind(): `laddr`/`family` are the address it asked for (the kernel resets
    /// the socket's own address when bind() fails).
    pub const BIND_ADDR: u16 = 1 << 13;
    /// A failed connect(): `raddr`/`rport` are the destination it asked for and `laddr`,
    /// when not zero, its source address (it got no port).
    pub const CONNECT_DST: u16 = 1 << 14;
    /// The event was sent before the kernel released the port (no later hook of the
    /// backend runs after the release in this context): its bucket is not filled in and
    /// must be read by user space after the event arrived.
    pub const OBSERVE_LATER: u16 = 1 << 15;
}

/// The state of the bind bucket of (netns, port) as read after an operation.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BucketState {
    /// Kernel address of the bucket (identity only; 0 when absent).
    pub tb: u64,
    pub owners: u32,
    pub l3mdev: i32,
    pub port: u16,
    pub fastreuse: i8,
    pub fastreuseport: i8,
    pub _pad: [u8; 4],
}

/// One event: after operation `op` on a TCP socket, the bucket of the port it holds,
/// held, or asked for. Backend-neutral: every probe backend fills the same fields.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    pub ts_ns: u64,
    /// Kernel address of the socket (identity only).
    pub sock: u64,
    /// Kernel address of its `struct net` (identity only).
    pub net: u64,
    pub bucket: BucketState,
    /// Thread group id (the process id users know) and thread id.
    pub pid: u32,
    pub tid: u32,
    /// Inode number of the network namespace (as in /proc/PID/ns/net).
    pub netns: u32,
    /// 0 on success, else the positive errno of the failed syscall.
    pub errno: i32,
    /// The netns's ephemeral port range at the time.
    pub range_lo: u16,
    pub range_hi: u16,
    /// AF_INET or AF_INET6 (0 when unknown).
    pub family: u16,
    /// The port the event is about (host order).
    pub port: u16,
    /// Local and remote address of the socket after the operation (IPv4 in the first
    /// four bytes, network order) and the remote port (host order).
    pub laddr: [u8; 16],
    pub raddr: [u8; 16],
    pub rport: u16,
    /// `flag::*` bits.
    pub flags: u16,
    pub op: u8,
    /// TCP state of the socket after the operation (kernel numbering, TCP_ESTABLISHED = 1).
    pub sk_state: u8,
    pub hook: u8,
    pub _pad: [u8; 1],
    pub comm: [u8; 16],
    /// The socket's IP_LOCAL_PORT_RANGE (lo | hi << 16), 0 when it set none.
    pub local_port_range: u32,
    /// State of the socket's per-address bucket (with `flag::ADDR_STATE`).
    pub addr_fastreuse: i8,
    pub addr_fastreuseport: i8,
    pub _pad2: [u8; 2],
    /// `sk_uid` of the socket (what `SO_REUSEPORT` sharing compares) and its bound device
    /// (`SO_BINDTODEVICE`, 0 for none); 0 when the socket could not be read.
    pub uid: u32,
    pub bound_dev: i32,
}

/// Records of a bind-table snapshot, tagged by `kind`.
pub mod rec {
    /// A bucket (`inet_bind_bucket`).
    pub const BUCKET: u8 = 1;
    /// A per-address bucket (`inet_bind2_bucket`), after its port's BUCKET (verbose only).
    pub const ADDR: u8 = 2;
    /// An owner socket, after its BUCKET or ADDR (verbose only).
    pub const OWNER: u8 = 3;
    /// The last record of a walk; `owners` holds the number of buckets seen.
    pub const END: u8 = 4;
    /// The namespace asked for (first, when asked): `addr` its `struct net`, `netns` its
    /// inode, `port`..=`rport` its `ip_local_port_range`, `state` its `tcp_tw_reuse`.
    pub const NET: u8 = 5;
    /// 128 bits of the namespace's `ip_local_reserved_ports` (after NET, only chunks with
    /// a bit set): bit `i` of `laddr` (byte `i / 8`, bit `i % 8`) is port `port + i`.
    pub const RESERVED: u8 = 6;
}

/// Snapshot flags in [`SnapRecord::flags`].
pub mod snapflag {
    pub const OWNERS_TRUNCATED: u8 = 1 << 0;
    /// END: the walk did not cover its whole scope (a chain longer than the bound, a
    /// chain read that failed, a resumed chain that changed between runs, the ring
    /// buffer full): a bucket in scope may be missing from it.
    pub const WALK_TRUNCATED: u8 = 1 << 1;
    pub const REUSEADDR: u8 = 1 << 2;
    pub const REUSEPORT: u8 = 1 << 3;
    /// END of one run of a walk that goes on in the next run: the run's step budget
    /// was spent, the walk state is kept in the `SNAP_WALK` map; trigger again.
    pub const WALK_MORE: u8 = 1 << 4;
    /// END of a lookup that gave up before the end of the hash chain: no BUCKET record
    /// means "not known", not "absent".
    pub const LOOKUP_TRUNCATED: u8 = 1 << 5;
    /// OWNER: the kernel marks sockets whose port connect() chose (6.18+), and
    /// `CONNECT_BOUND` says whether this one is.
    pub const CONNECT_BIND_KNOWN: u8 = 1 << 6;
    /// OWNER: the socket got its port from connect() (`SOCK_CONNECT_BIND`,
    /// `tw_connect_bind`).
    pub const CONNECT_BOUND: u8 = 1 << 7;
}

/// Indexes of the per-CPU loss counters (`DROPS`).
pub mod lost {
    /// Events not delivered: the ring buffer was full, or an operation's entry could
    /// not be kept for its exit hook.
    pub const EVENTS: u32 = 0;
    /// Of those, the ones whose bucket could not be recorded in `LOST` (port not known
    /// yet, or `LOST` full): the whole scope must be read again.
    pub const UNATTRIBUTED: u32 = 1;
    pub const COUNTERS: u32 = 2;
}

/// The bucket an undelivered event was about (key of the `LOST` map): user space reads
/// it again (and deletes the key) to repair what the event would have told.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LostPort {
    /// Kernel address of the `struct net` (what a single-bucket lookup takes).
    pub net: u64,
    /// Its inode number.
    pub netns: u32,
    pub port: u16,
    pub _pad: u16,
}

/// Flags of the details `explain` reads, in [`SnapRecord::detail`].
pub mod snapdetail {
    /// OWNER: `IPV6_V6ONLY`. BUCKET: `fast_ipv6_only`.
    pub const V6ONLY: u8 = 1 << 0;
    /// ADDR: `family` is the per-address bucket's own (`inet_bind2_bucket.family`, 6.1
    /// to 6.7), not the form its address is read in. OWNER: `tb2_family` is set.
    pub const TB2_FAMILY: u8 = 1 << 1;
}

/// One record of a snapshot walk. The fields after `_pad2` serve `explain`: for an
/// OWNER its inode, `sk_uid`, bound device and remote end; for a BUCKET its fast-path
/// state (`uid` = `fastuid`, `laddr`/`family` = the fast address, `snapdetail::V6ONLY`
/// = `fast_ipv6_only`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapRecord {
    /// Kernel address of the bucket / address bucket / socket.
    pub addr: u64,
    pub netns: u32,
    pub owners: u32,
    pub l3mdev: i32,
    pub port: u16,
    pub family: u16,
    /// Local address (ADDR, OWNER); IPv4 in the first four bytes.
    pub laddr: [u8; 16],
    pub fastreuse: i8,
    pub fastreuseport: i8,
    pub kind: u8,
    pub flags: u8,
    /// TCP state (OWNER).
    pub state: u8,
    pub _pad: [u8; 3],
    /// OWNER: the socket's IP_LOCAL_PORT_RANGE (lo | hi << 16), 0 when it set none.
    pub local_port_range: u32,
    pub _pad2: u32,
    /// OWNER: the socket's inode (`sock_i_ino()`), 0 without a `struct socket`
    /// (TIME-WAIT, orphaned, not yet accepted).
    pub ino: u64,
    /// OWNER: `sk_uid` (not for TIME-WAIT). BUCKET: `fastuid`.
    pub uid: u32,
    /// OWNER: `sk_bound_dev_if`.
    pub bound_dev: i32,
    /// OWNER: remote address (IPv4 in the first four bytes) and port (host order).
    pub raddr: [u8; 16],
    pub rport: u16,
    /// OWNER, with `snapdetail::TB2_FAMILY`: the family of the per-address bucket it hangs on.
    pub tb2_family: u16,
    /// [`snapdetail`] flags.
    pub detail: u8,
    pub _pad3: [u8; 3],
    /// BUCKET: kernel address of the bucket's `struct net` (identity only; what a
    /// request for the namespace's NET record takes, see `SnapRequest::net`).
    pub net: u64,
}

/// Arguments of a snapshot request, written by user space into the `SNAP_REQ` array
/// before it makes the trigger syscall.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapRequest {
    /// Only the thread with this tid triggers a walk.
    pub tid: u32,
    /// 0 = every netns.
    pub netns: u32,
    /// 0 = every port.
    pub port: u16,
    /// 1 = also emit ADDR and OWNER records.
    pub verbose: u8,
    /// `SNAP_WALK` (the whole table), `SNAP_LOOKUP` (the one bucket of (`net`, `port`))
    /// or `SNAP_CHAIN` (the one hash chain where `port` of the namespace asked for lives).
    pub mode: u8,
    /// Bounds: at most this many buckets in one chain and owners per bucket.
    pub max_chain: u32,
    pub max_owners: u32,
    pub _pad2: u32,
    /// Sequence number echoed in the END record's `addr` field.
    pub seq: u64,
    /// `SNAP_LOOKUP`: kernel address of the `struct net` (from an event).
    pub net: u64,
    /// With `with_net` and no `net`: a descriptor, in the calling process, of the nsfs
    /// file of the namespace (`/proc/PID/ns/net`) whose NET record is wanted.
    pub netns_fd: i32,
    /// 1 = first emit the namespace's NET and RESERVED records (from `net`, else
    /// `netns_fd`).
    pub with_net: u8,
    pub _pad3: [u8; 3],
}

pub const SNAP_WALK: u8 = 0;
pub const SNAP_LOOKUP: u8 = 1;
/// The walk of `SNAP_WALK` (same filters, records and bounds) over one slot of `bhash`:
/// the one where `port` of the namespace asked for with `with_net` hashes
/// (`inet_bhashfn()`), when that namespace is `netns`; the whole table when it is not or
/// cannot be read.
pub const SNAP_CHAIN: u8 = 2;

/// Key of the `ERRORS` hash map: failed bind()/connect() calls counted in the kernel per
/// network namespace, syscall and errno, whatever the event stream and the port filter do.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorKey {
    /// Inode of the network namespace; 0 only in [`ErrorKey::MAP_FULL`].
    pub netns: u32,
    /// The positive errno.
    pub errno: u16,
    /// `op::BIND` or `op::CONNECT`.
    pub op: u8,
    pub _pad: u8,
}

impl ErrorKey {
    /// The slot (inserted by user space at load) counting failures that found the map full
    /// and could not get a slot of their own.
    pub const MAP_FULL: ErrorKey = ErrorKey {
        netns: 0,
        errno: 0,
        op: 0,
        _pad: 0,
    };
}

/// Step budgets of one program run, per walk, in the `WALK` global (set by user space
/// when it loads the object). The object built with the bounded-loop walk driver loops
/// at most this many times: the verifier explores a bounded loop iteration by
/// iteration, so these bound the verification work on kernels without `bpf_loop`. The
/// `bpf_loop` object takes its bounds from the requests and ignores these.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct WalkBudget {
    /// Owner walk of one bucket (per event and per bucket of a snapshot): owners plus,
    /// on kernels with owners on per-address buckets, those buckets.
    pub owner_steps: u32,
    /// Buckets visited in one hash chain by a bucket lookup.
    pub chain_steps: u32,
    /// Steps of a whole-table walk per run (slots, buckets, owners); the walk resumes in
    /// the next run.
    pub snap_steps: u32,
    pub _pad: u32,
}

impl WalkBudget {
    /// The budget compiled into the object; user space always sets its own.
    pub const UNSET: WalkBudget = WalkBudget {
        owner_steps: 1,
        chain_steps: 1,
        snap_steps: 1,
        _pad: 0,
    };
}

/// Filter configuration of the event programs, in the `CONFIG` global.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// 0 = every netns, else only this netns inode.
    pub netns: u32,
    /// 1 when `PORTS` (a hash map of u16 ports) filters events.
    pub filter_ports: u32,
    /// A tgid whose syscalls are not traced (0: none).
    pub self_tgid: u32,
    /// Bound on the owner walk per event.
    pub max_owners: u32,
    /// Events are submitted without waking the consumer (it drains on a timer) until this
    /// many bytes wait in the ring; above it every submit wakes the consumer. 0: wake on
    /// every submit.
    pub wakeup_bytes: u32,
    pub _pad: u32,
}

impl Config {
    pub const DEFAULT: Config = Config {
        netns: 0,
        filter_ports: 0,
        self_tgid: 0,
        max_owners: 4096,
        wakeup_bytes: 0,
        _pad: 0,
    };
}

/// Size of the event ring buffer unless user space asks for another (`EVENTS`).
pub const EVENT_RING_BYTES: u32 = 1 << 22;

/// Offsets of the tracepoint fields the programs read, from the tracepoints' `format`
/// files in tracefs (global `TP`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TpOffsets {
    /// `syscalls:sys_enter_*`: offset of the first argument; arguments are 8 bytes apart.
    pub sys_enter_args: u32,
    /// `syscalls:sys_exit_*`: offset of `ret`.
    pub sys_exit_ret: u32,
    /// `sock:inet_sock_set_state`: offsets of `skaddr`, `newstate`, `protocol` and `sport`
    /// (host order).
    pub set_state_skaddr: u32,
    pub set_state_newstate: u32,
    pub set_state_protocol: u32,
    pub set_state_sport: u32,
    /// `tcp:tcp_destroy_sock`: offsets of `skaddr` and `sport` (host order).
    pub destroy_skaddr: u32,
    pub destroy_sport: u32,
}

impl TpOffsets {
    pub const UNSET: TpOffsets = TpOffsets {
        sys_enter_args: NO_FIELD,
        sys_exit_ret: NO_FIELD,
        set_state_skaddr: NO_FIELD,
        set_state_newstate: NO_FIELD,
        set_state_protocol: NO_FIELD,
        set_state_sport: NO_FIELD,
        destroy_skaddr: NO_FIELD,
        destroy_sport: NO_FIELD,
    };
}

/// Argument positions of the kernel functions the kprobe/fentry backends hook, derived
/// from BTF by user space (global `ARGS`). `NO_ARG` when the function or parameter is
/// absent on the running kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgPos {
    /// `inet_csk_get_port(sk, snum)`.
    pub get_port_sk: u32,
    pub get_port_snum: u32,
    /// `__inet_hash_connect(death_row, sk, port_offset, check_established)`.
    pub hash_connect_sk: u32,
    /// `__inet_inherit_port(sk, child)`.
    pub inherit_sk: u32,
    pub inherit_child: u32,
    /// `inet_put_port(sk)`.
    pub put_port_sk: u32,
    /// `inet_twsk_hashdance_schedule(tw, sk, hashinfo, timeo)` / `inet_twsk_hashdance(tw, sk, hashinfo)`.
    pub hashdance_sk: u32,
    /// `inet_twsk_bind_unhash(tw, hashinfo)`.
    pub bind_unhash_tw: u32,
    /// Parameter counts of the functions whose return value an fexit program reads: the
    /// trampoline stores it in the context slot after the parameters on every kernel
    /// with fexit (`bpf_get_func_ret`, which finds it without the count, needs 5.17).
    pub get_port_nargs: u32,
    pub hash_connect_nargs: u32,
    pub inherit_nargs: u32,
    pub _pad: u32,
}

pub const NO_ARG: u32 = u32::MAX;

impl ArgPos {
    pub const UNSET: ArgPos = ArgPos {
        get_port_sk: NO_ARG,
        get_port_snum: NO_ARG,
        hash_connect_sk: NO_ARG,
        inherit_sk: NO_ARG,
        inherit_child: NO_ARG,
        put_port_sk: NO_ARG,
        hashdance_sk: NO_ARG,
        bind_unhash_tw: NO_ARG,
        get_port_nargs: NO_ARG,
        hash_connect_nargs: NO_ARG,
        inherit_nargs: NO_ARG,
        _pad: 0,
    };
}

const _: () = assert!(core::mem::size_of::<BitField>() == 8);
const _: () = assert!(core::mem::size_of::<BucketState>() == 24);
const _: () = assert!(core::mem::size_of::<Event>() == 144);
const _: () = assert!(core::mem::size_of::<SnapRecord>() == 104);
const _: () = assert!(core::mem::size_of::<SnapRequest>() == 48);
const _: () = assert!(core::mem::size_of::<Config>() == 24);
const _: () = assert!(core::mem::size_of::<LostPort>() == 16);
const _: () = assert!(core::mem::size_of::<TpOffsets>() == 32);
const _: () = assert!(core::mem::size_of::<ArgPos>() == 48);
const _: () = assert!(core::mem::size_of::<WalkBudget>() == 16);
const _: () = assert!(core::mem::size_of::<ErrorKey>() == 8);

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: all these types are `#[repr(C)]`, `Copy`, made only of integers and arrays
    // of integers with explicit padding fields, so every bit pattern is valid.
    unsafe impl aya::Pod for Layout {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Event {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SnapRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SnapRequest {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for LostPort {}
    // SAFETY: as above.
    unsafe impl aya::Pod for TpOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ArgPos {}
    // SAFETY: as above.
    unsafe impl aya::Pod for WalkBudget {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ErrorKey {}
}
