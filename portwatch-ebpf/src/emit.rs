//! Building and sending events; shared by every hook family so all backends emit the
//! same model.
use aya_ebpf::helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns};
use portwatch_common::{flag, Config, Event};

use crate::{
    compat::{self, port_range},
    kernel::{net_inum, sock_info},
    maps::{Attribution, CONFIG, DROPS, EVENTS, PORTS, SOCKS},
    walk::{lookup_bucket, Found},
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
pub struct Subject {
    pub op: u8,
    pub hook: u8,
    /// The socket (0 when it is gone or unknown).
    pub sk: u64,
    pub net: u64,
    pub netns: u32,
    /// The port whose bucket is reported (0: none could be attributed).
    pub port: u16,
    pub errno: i32,
    pub flags: u16,
    /// Not caused by the current task (timer/softirq context): no pid/comm.
    pub anon: bool,
}

/// Finds the bucket of the subject's port, fills in an event and sends it. Counts a drop
/// when the ring buffer is full.
#[inline(always)]
pub fn send(cfg: &Config, s: &Subject) {
    let mut flags = s.flags;
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count_drop();
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at a reserved, exclusively owned ring-buffer slot big enough
    // for an Event; every field is written before submit.
    unsafe {
        let e = &mut *ev;
        *e = Event::default();
        e.ts_ns = bpf_ktime_get_ns();
        e.sock = s.sk;
        e.net = s.net;
        if !s.anon {
            let pid_tgid = bpf_get_current_pid_tgid();
            e.pid = (pid_tgid >> 32) as u32;
            e.tid = pid_tgid as u32;
            e.comm = bpf_get_current_comm().unwrap_or([0; 16]);
        }
        e.netns = s.netns;
        e.errno = s.errno;
        e.port = s.port;
        e.op = s.op;
        e.hook = s.hook;
        if s.sk != 0 {
            let si = sock_info(s.sk);
            e.family = si.family;
            e.sk_state = si.state;
            e.laddr = si.laddr;
            e.raddr = si.raddr;
            e.rport = si.rport;
            // Flags by arithmetic, not branches (see read::zfield).
            flags |= flag::SOCK_KNOWN
                | (((si.reuse != 0) as u16) * flag::REUSEADDR)
                | (((si.reuseport != 0) as u16) * flag::REUSEPORT)
                | (((si.no_port != 0) as u16) * flag::BIND_ADDRESS_NO_PORT)
                | ((compat::connect_bind_known() as u16) * flag::CONNECT_BIND_KNOWN)
                | ((si.connect_bound as u16) * flag::CONNECT_BOUND);
            e.local_port_range = si.port_range;
            let (addr_known, fr, frp) = si.addr_state;
            flags |= (addr_known as u16) * flag::ADDR_STATE;
            e.addr_fastreuse = fr;
            e.addr_fastreuseport = frp;
        }
        flags |= with_bucket(e, s.net, s.port, cfg.max_owners);
        e.flags = flags;
    }
    entry.submit(0);
}

/// Fills in the netns's port range and the bucket of (net, port); returns the flags
/// that say what was found.
#[inline(always)]
fn with_bucket(e: &mut Event, net: u64, port: u16, max_owners: u32) -> u16 {
    let (lo, hi) = port_range(net);
    e.range_lo = lo;
    e.range_hi = hi;
    match lookup_bucket(net, port, max_owners) {
        Found::Bucket((b, truncated)) => {
            e.bucket = b;
            flag::BUCKET_PRESENT | ((truncated as u16) * flag::OWNERS_TRUNCATED)
        }
        Found::Absent => 0,
        Found::Unknown => flag::LOOKUP_TRUNCATED,
    }
}

/// Sends an event on behalf of a socket we knew, with the attribution saved then
/// (used where the kernel already cleared the socket's port, or in softirq context).
#[inline(always)]
pub fn send_known(cfg: &Config, op: u8, hook: u8, sk: u64, k: &Attribution) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count_drop();
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: as in `send`.
    unsafe {
        let e = &mut *ev;
        *e = Event::default();
        e.ts_ns = bpf_ktime_get_ns();
        e.sock = sk;
        e.net = k.net;
        e.pid = k.tgid;
        e.tid = 0;
        e.netns = k.netns;
        e.port = k.port;
        e.family = k.family;
        e.op = op;
        e.hook = hook;
        e.comm = k.comm;
        e.flags = flag::HAD_PORT | with_bucket(e, k.net, k.port, cfg.max_owners);
    }
    entry.submit(0);
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

#[inline(always)]
fn count_drop() {
    if let Some(p) = DROPS.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU in this context.
        unsafe { *p += 1 };
    }
}
