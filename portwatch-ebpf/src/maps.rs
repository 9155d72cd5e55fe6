//! Globals and maps shared by every program.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use portwatch_common::{
    lost, ArgPos, Config, ErrorKey, Layout, LostPort, SnapRequest, TpOffsets, WalkBudget,
    EVENT_RING_BYTES,
};

/// Zeroes the `T` at `p` with one 8-byte store per word. `write_bytes` of a large
/// struct compiles to a call of the byte-by-byte `memset` subprogram; volatile stores
/// are kept as they are.
///
/// # Safety
/// `p` points to a writable, 8-byte aligned `T` (a map value) whose size is a multiple
/// of 8.
#[inline(always)]
pub unsafe fn zero_words<T>(p: *mut T) {
    const { assert!(core::mem::size_of::<T>() % 8 == 0) };
    let w = p as *mut u64;
    let mut i = 0;
    while i < core::mem::size_of::<T>() / 8 {
        // SAFETY: word `i` lies inside the `T` (the caller's contract).
        unsafe { core::ptr::write_volatile(w.add(i), 0) };
        i += 1;
    }
}

/// Kernel layout, resolved from BTF by user space (`EbpfLoader::override_global`).
#[no_mangle]
pub static LAYOUT: Layout = Layout::UNSET;

/// Tracepoint field offsets, from tracefs format files.
#[no_mangle]
pub static TP: TpOffsets = TpOffsets::UNSET;

/// Argument positions of hooked kernel functions, from BTF.
#[no_mangle]
pub static ARGS: ArgPos = ArgPos::UNSET;

/// 1: every event program returns at once, attached but doing nothing (the hidden
/// `trace --idle-programs`, for `cargo xtask bench`: what the attach points cost alone).
#[no_mangle]
pub static IDLE: u32 = 0;

/// Step budgets of the bounded-loop walk driver (`drive.rs`), chosen by user space when
/// it loads the object.
#[no_mangle]
pub static WALK: WalkBudget = WalkBudget::UNSET;

/// Runtime filters (index 0), changeable while attached.
#[map]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Ports to report when `Config::filter_ports` is set.
#[map]
pub static PORTS: HashMap<u16, u8> = HashMap::with_max_entries(1024, 0);

/// Events to user space.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENT_RING_BYTES, 0);

/// Events lost (per CPU, indexes in `portwatch_common::lost`).
#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(lost::COUNTERS, 0);

/// The buckets of lost events, for user space to read again (and delete).
#[map]
pub static LOST: HashMap<LostPort, u8> = HashMap::with_max_entries(4096, 0);

/// Failed bind()/connect() calls per (netns, errno, syscall), counted by `errors.rs`
/// wherever a backend sees a failure; read by user space at scrape time.
#[map]
pub static ERRORS: HashMap<ErrorKey, u64> = HashMap::with_max_entries(16384, 0);

/// Calls in flight: what the enter hook saw, keyed by pid_tgid (tracepoints) or
/// pid_tgid with the hook's id in the top bits (kernel-function hooks, which can be
/// interrupted by a softirq running another hooked function on the same task).
#[map]
pub static PENDING: HashMap<u64, Pending> = HashMap::with_max_entries(16384, 0);

/// The thread in close() on each CPU (`pid_tgid`, 0: none), set at `sys_enter_close`
/// without reading anything (most closes are not of sockets) and read by
/// `tcp:tcp_destroy_sock`, which fires in that close() when it frees a TCP socket.
#[map]
pub static CLOSING: PerCpuArray<CloseMark> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
#[derive(Clone, Copy)]
pub struct CloseMark {
    pub pid_tgid: u64,
    /// 1 when a destroyed socket of this close() waits in `PENDING` for the syscall's exit.
    pub stashed: u32,
    pub _pad: u32,
}

/// Sockets we reported, so a later release (where the kernel already cleared the port)
/// can be attributed: socket address -> what we knew.
#[map]
pub static SOCKS: LruHashMap<u64, Attribution> = LruHashMap::with_max_entries(65536, 0);

/// Snapshot request (index 0), written by user space before it triggers a walk.
#[map]
pub static SNAP_REQ: Array<SnapRequest> = Array::with_max_entries(1, 0);

/// Snapshot records to user space.
#[map]
pub static SNAP_RB: RingBuf = RingBuf::with_byte_size(1 << 25, 0);

/// State of the walks within one program run (see `drive.rs`), one slot per CPU:
/// tracing programs do not nest on one CPU (`bpf_prog_active`).
#[map]
pub static OWNER_WALK: PerCpuArray<crate::walk::OwnerCursor> = PerCpuArray::with_max_entries(1, 0);
#[map]
pub static CHAIN_WALK: PerCpuArray<crate::walk::ChainCursor> = PerCpuArray::with_max_entries(1, 0);
/// State of the whole-table walk, kept between runs: a walk that spends its step budget
/// resumes in the next run, which may be on another CPU. Only the one thread named in
/// `SNAP_REQ` runs it.
#[map]
pub static SNAP_WALK: Array<crate::snapshot::TableWalk> = Array::with_max_entries(1, 0);
/// The snapshot record being built (one per CPU): a record on the stack of the walk's
/// step, added to the caller's frame, exceeds what older verifiers allow in all (512
/// bytes over the chain of calls).
#[map]
pub static SNAP_REC: PerCpuArray<portwatch_common::SnapRecord> =
    PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Pending {
    pub sk: u64,
    pub net: u64,
    /// A second pointer some hooks need (the listener of an accepted child).
    pub aux: u64,
    pub netns: u32,
    /// Port asked for by bind() (host order), or the socket's port at close().
    pub port: u16,
    pub op: u8,
    pub had_port: u8,
    /// bind(): the address asked for; connect(): the destination (IPv4 in the first four
    /// bytes), with its family (0 when not read) and port. Reported if the call fails:
    /// the kernel then resets the socket's address (bind) or remote port (connect).
    pub asked: [u8; 16],
    pub asked_family: u16,
    pub asked_port: u16,
    pub _pad: [u8; 4],
}

/// Who held a socket's port and where: saved when an event is reported, used for its
/// release, which the kernel may run without the owner's task or after clearing the port.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Attribution {
    pub net: u64,
    pub netns: u32,
    pub tgid: u32,
    pub port: u16,
    pub family: u16,
    pub _pad: [u8; 4],
    pub comm: [u8; 16],
}
