//! Building and sending events; shared by every hook family so all backends emit the
//! same model.
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    maps::ring_buf::RingBufEntry,
};
use portwatch_common::{flag, lost, op, BucketState, Config, Event, LostPort};

use crate::{
    compat::{self, port_range},
    kernel::{held_bucket, net_inum, sock_info, tb_net_port, SockHead},
    maps::{Attribution, Pending, CONFIG, DROPS, EVENTS, LOST, PORTS, SOCKS},
    walk::{bucket_state, find_bucket, Found},
};

/// The runtime configuration (defaults when user space has not written it).
#[inline(always)]
pub fn config() -> Config {
    match CONFIG.get(0) {
        Some(c) => *c,
        None => Config::DEFAULT,
    }
}

/// Whether events of this netns are wanted.
#[inline(always)]
pub fn netns_wanted(cfg: &Config, netns: u32) -> bool {
    cfg.netns == 0 || cfg.netns == netns
}

/// Whether events of this port are wanted.
#[inline(always)]
pub fn port_wanted(cfg: &Config, port: u16) -> bool {
    if cfg.filter_ports == 0 {
        return true;
    }
    // SAFETY: a plain lookup; the value is not kept.
    unsafe { PORTS.get(port).is_some() }
}

/// What an event is about.
pub struct Subject<'a> {
    pub op: u8,
    pub hook: u8,
    /// The socket (0 when it is gone or unknown).
    pub sk: u64,
    /// Its head, when the caller read it already (else read here).
    pub head: Option<&'a SockHead>,
    pub net: u64,
    pub netns: u32,
    /// The port whose bucket is reported (0: none could be attributed).
    pub port: u16,
    pub errno: i32,
    pub flags: u16,
    /// Not caused by the current task (timer/softirq context): no pid/comm.
    pub anon: bool,
}

impl Subject<'_> {
    /// A release of the port `p` recorded, by a socket that is not to be read any more
    /// (freed, or its port already cleared).
    #[inline(always)]
    pub fn released(op: u8, hook: u8, p: &Pending, anon: bool) -> Subject<'static> {
        Subject {
            op,
            hook,
            sk: 0,
            head: None,
            net: p.net,
            netns: p.netns,
            port: p.port,
            errno: 0,
            flags: flag::HAD_PORT,
            anon,
        }
    }
}

/// Writes one field of the event in the ring (`e`: `*mut Event` to reserved memory).
/// Fields are written straight into the ring buffer: the verifier tracks that memory as
/// one region, so paths that fill it differently still prune, where a copy built on the
/// stack first makes every branch a new state (the 6.1 verifier then gives up).
macro_rules! put {
    ($e:ident . $($f:ident).+ = $v:expr) => {
        // SAFETY: `$e` points at a reserved, exclusively owned ring-buffer slot of an
        // Event's size; writing a field through a raw pointer needs no initialised value.
        unsafe { core::ptr::addr_of_mut!((*$e).$($f).+).write($v) }
    };
}

/// Finds the bucket of the subject's port, fills in an event and sends it. Counts a drop
/// when the ring buffer is full.
#[inline(always)]
pub fn send(cfg: &Config, s: &Subject) {
    send_asked(cfg, s, None);
}

/// What a failed call asked for, read at syscall entry: the kernel resets it before the
/// syscall returns.
pub enum Asked {
    /// bind(): `(family, address)`.
    Local(u16, [u8; 16]),
    /// connect(): `(family, address, port)` of the destination.
    Remote(u16, [u8; 16], u16),
}

/// As [`send`], reporting what a failed call asked for instead of the socket's own.
#[inline(always)]
pub fn send_asked(cfg: &Config, s: &Subject, asked: Option<Asked>) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count_lost(s.net, s.netns, s.port);
        return;
    };
    let e = entry.as_mut_ptr();
    // A socket that just took its port points at the bucket: no chain to search.
    let taken = s.errno == 0 && s.op != op::CLOSE && s.op != op::RELEASE && s.op != op::TIMEWAIT;
    let held_by = if taken { s.sk } else { 0 };
    // The bucket first: its walks are the costly part to verify, before other branches.
    let flags = fill_bucket(e, s.flags, s.net, s.port, cfg.max_owners, held_by);
    // SAFETY: the helper only reads the clock.
    let now = unsafe { bpf_ktime_get_ns() };
    put!(e.ts_ns = now);
    put!(e.sock = s.sk);
    put!(e.net = s.net);
    put!(e.netns = s.netns);
    put!(e.errno = s.errno);
    put!(e.port = s.port);
    put!(e.op = s.op);
    put!(e.hook = s.hook);
    put!(e._pad = [0; 1]);
    if s.anon {
        put!(e.pid = 0);
        put!(e.tid = 0);
        put!(e.comm = [0; 16]);
    } else {
        let pid_tgid = bpf_get_current_pid_tgid();
        put!(e.pid = (pid_tgid >> 32) as u32);
        put!(e.tid = pid_tgid as u32);
        put!(e.comm = bpf_get_current_comm().unwrap_or([0; 16]));
    }
    let mut sock_flags = 0u16;
    let mut sock_family = 0u16;
    if s.sk != 0 {
        let read;
        let head = match s.head {
            Some(h) => h,
            None => {
                read = SockHead::read(s.sk);
                &read
            }
        };
        let si = sock_info(s.sk, head);
        sock_family = si.family;
        put!(e.family = si.family);
        put!(e.sk_state = si.state);
        put!(e.laddr = si.laddr);
        put!(e.raddr = si.raddr);
        put!(e.rport = si.rport);
        put!(e.uid = si.uid);
        put!(e.bound_dev = si.bound_dev);
        put!(e.local_port_range = si.port_range);
        let (addr_known, fr, frp) = si.addr_state;
        put!(e.addr_fastreuse = fr);
        put!(e.addr_fastreuseport = frp);
        // Flags by arithmetic, not branches (see read::zfield).
        sock_flags = flag::SOCK_KNOWN
            | (((si.reuse != 0) as u16) * flag::REUSEADDR)
            | (((si.reuseport != 0) as u16) * flag::REUSEPORT)
            | (((si.no_port != 0) as u16) * flag::BIND_ADDRESS_NO_PORT)
            | ((compat::connect_bind_known() as u16) * flag::CONNECT_BIND_KNOWN)
            | ((si.connect_bound as u16) * flag::CONNECT_BOUND)
            | ((addr_known as u16) * flag::ADDR_STATE)
            | (((si.v6only != 0) as u16) * flag::V6ONLY);
    } else {
        no_socket(e);
    }
    put!(e._pad2 = [0; 2]);
    match asked {
        Some(Asked::Local(family, addr)) => {
            put!(e.family = family);
            put!(e.laddr = addr);
            sock_flags |= flag::BIND_ADDR;
        }
        Some(Asked::Remote(family, addr, port)) => {
            if sock_family == family {
                put!(e.raddr = addr);
                put!(e.rport = port);
                sock_flags |= flag::CONNECT_DST;
            }
        }
        None => {}
    }
    put!(e.flags = flags | sock_flags);
    submit(cfg, entry);
}

/// Writes the fields read from the socket itself as unknown (no socket to read).
#[inline(always)]
fn no_socket(e: *mut Event) {
    put!(e.family = 0);
    put!(e.sk_state = 0);
    put!(e.laddr = [0; 16]);
    put!(e.raddr = [0; 16]);
    put!(e.rport = 0);
    put!(e.uid = 0);
    put!(e.bound_dev = 0);
    put!(e.local_port_range = 0);
    put!(e.addr_fastreuse = 0);
    put!(e.addr_fastreuseport = 0);
}

/// Commits an event. Waking the consumer costs an irq_work (a self-IPI, which traps on
/// virtual machines) per submit: the consumer drains on a short timer instead, and is
/// woken only once `Config::wakeup_bytes` wait in the ring, before it can fill up.
#[inline(always)]
fn submit(cfg: &Config, entry: RingBufEntry<Event>) {
    let waiting = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let flags = if waiting >= cfg.wakeup_bytes as u64 {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(flags as u64);
}

/// Writes the netns's port range and the bucket of (net, port) into `e` and returns
/// `flags` with the flags that say what was found; the bucket socket `held_by` holds,
/// when not 0 and the right one, saves the search. An `OBSERVE_LATER` event gets no
/// bucket: read now, it would still hold the leaving socket, so user space reads it
/// after the release.
#[inline(always)]
fn fill_bucket(
    e: *mut Event,
    flags: u16,
    net: u64,
    port: u16,
    max_owners: u32,
    held_by: u64,
) -> u16 {
    let (lo, hi) = port_range(net);
    put!(e.range_lo = lo);
    put!(e.range_hi = hi);
    put!(e.bucket = BucketState::default());
    if flags & flag::OBSERVE_LATER != 0 {
        return flags;
    }
    let mut tb = 0;
    if held_by != 0 {
        let held = held_bucket(held_by);
        if held != 0 && tb_net_port(held) == (net, port) {
            tb = held;
        }
    }
    if tb == 0 {
        match find_bucket(net, port) {
            Found::Bucket(found) => tb = found,
            Found::Absent => return flags,
            Found::Unknown => return flags | flag::LOOKUP_TRUNCATED,
        }
    }
    // One owner count for both ways of finding the bucket: each call site of a walk
    // costs the verifier a full pass over it.
    let (b, truncated) = bucket_state(tb, max_owners);
    put!(e.bucket = b);
    present(flags, truncated)
}

#[inline(always)]
fn present(flags: u16, truncated: bool) -> u16 {
    flags | flag::BUCKET_PRESENT | ((truncated as u16) * flag::OWNERS_TRUNCATED)
}

/// Sends an event on behalf of a socket we knew, with the attribution saved then
/// (used where the kernel already cleared the socket's port, or in softirq context).
/// `flags` adds to `HAD_PORT` (e.g. `OBSERVE_LATER`).
#[inline(always)]
pub fn send_known(cfg: &Config, op: u8, hook: u8, sk: u64, k: &Attribution, flags: u16) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count_lost(k.net, k.netns, k.port);
        return;
    };
    let e = entry.as_mut_ptr();
    let flags = fill_bucket(e, flag::HAD_PORT | flags, k.net, k.port, cfg.max_owners, 0);
    // SAFETY: the helper only reads the clock.
    let now = unsafe { bpf_ktime_get_ns() };
    put!(e.ts_ns = now);
    put!(e.sock = sk);
    put!(e.net = k.net);
    put!(e.pid = k.tgid);
    put!(e.tid = 0);
    put!(e.netns = k.netns);
    put!(e.errno = 0);
    put!(e.port = k.port);
    no_socket(e);
    put!(e.family = k.family);
    put!(e.flags = flags);
    put!(e.op = op);
    put!(e.hook = hook);
    put!(e._pad = [0; 1]);
    put!(e.comm = k.comm);
    put!(e._pad2 = [0; 2]);
    submit(cfg, entry);
}

/// Remembers a socket that holds `port`, for attributing its later release.
#[inline(always)]
pub fn remember(sk: u64, net: u64, port: u16, family: u16) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let k = Attribution {
        net,
        netns: net_inum(net),
        tgid: (pid_tgid >> 32) as u32,
        port,
        family,
        _pad: [0; 4],
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    let _ = SOCKS.insert(sk, k, 0);
}

/// Counts an event that will not be delivered and records its bucket (`port` 0: not
/// known yet) for user space to read again.
#[inline(always)]
pub fn count_lost(net: u64, netns: u32, port: u16) {
    bump(lost::EVENTS);
    let key = LostPort {
        net,
        netns,
        port,
        _pad: 0,
    };
    if port == 0 || LOST.insert(&key, &1, 0).is_err() {
        bump(lost::UNATTRIBUTED);
    }
}

#[inline(always)]
fn bump(counter: u32) {
    if let Some(p) = DROPS.get_ptr_mut(counter) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU in this context.
        unsafe { *p += 1 };
    }
}
