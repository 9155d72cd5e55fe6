//! The snapshot walk: every slot of `bhash`, every bucket of every chain, and (verbose)
//! every per-address bucket and owner, like the article's drgn script but in the kernel.
//! Triggered by the tool itself: `getpgid(SNAP_TRIGGER_PID)` from the thread named in
//! `SNAP_REQ`.
//!
//! A request can also ask for the namespace's NET record (its port range and
//! `tcp_tw_reuse`, from an event's `struct net` or from an nsfs file descriptor of the
//! caller) followed by RESERVED records (the set bits of `ip_local_reserved_ports`
//! within that range), and, in lookup mode, for the owners of the one bucket found.
//!
//! The walk is a state machine (`TableWalk`) advanced one list node per call of
//! `table_step`, so every walk is bounded; a chain that changes under us can cut a walk
//! short (reported as truncated) but never hang it. The owners of each bucket are
//! walked by the same cursor the per-event lookup uses (`walk::OwnerCursor`). The
//! driver at the bottom repeats the step with `bpf_loop`; another driver (a bounded
//! loop, or a walk resumed over several runs) can repeat the same step.
use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_loop},
    macros::tracepoint,
    programs::TracePointContext,
};
use portwatch_common::{
    rec, snapflag, SnapRecord, SnapRequest, NO_FIELD, SNAP_LOOKUP, SNAP_TRIGGER_PID,
};

use crate::{
    compat,
    kernel::{
        current_net, net_inum, net_of_nsfs_fd, owner_details, reserved_ports, sk_of_bind_node,
        tb_fast_state, tb_of_node, tb_state, AF_INET6,
    },
    maps::{SNAP_RB, SNAP_REC, SNAP_REQ, SNAP_WALK, TP},
    read::{bits, field, layout, layout_ready, rd},
    walk::{find_bucket, lookup_bucket, owner_step, OwnerCursor, OwnerStep},
};

/// Ports per RESERVED record (the 16 bytes of its `laddr`).
const RESERVED_CHUNK: u32 = 128;

/// Upper bound of loop iterations (the kernel's BPF_MAX_LOOPS is 1 << 23).
const MAX_STEPS: u32 = 1 << 23;

/// The tool reads the snapshot ring right after the walk returns in its own thread: no
/// record needs to wake anyone.
const NO_WAKEUP: u64 = aya_ebpf::bindings::BPF_RB_NO_WAKEUP as u64;

/// State of a whole-table walk. Lives in per-CPU map memory (see `walk.rs`).
#[repr(C)]
pub struct TableWalk {
    bhash: u64,
    /// `ip_local_reserved_ports` of the namespace asked for (0: not asked).
    reserved: u64,
    /// Current chain node (`inet_bind_bucket.node`), 0 between chains.
    node: u64,
    /// Current bucket, 0 between buckets.
    tb: u64,
    seq: u64,
    /// The current bucket's owners.
    owners: OwnerCursor,
    /// Next and end chunk of `reserved` to emit (`RESERVED_CHUNK` ports each).
    res_next: u32,
    res_end: u32,
    slot: u32,
    size: u32,
    bucket_size: u32,
    chain_off: u32,
    netns_filter: u32,
    max_owners: u32,
    max_chain: u32,
    chain_len: u32,
    buckets: u32,
    cur_netns: u32,
    cur_l3mdev: i32,
    port_filter: u16,
    cur_port: u16,
    cur_fr: i8,
    cur_frp: i8,
    verbose: u8,
    /// The current bucket is filtered out.
    skip: u8,
    truncated: u8,
    done: u8,
    /// One bucket only (a lookup): the walk ends with it.
    single: u8,
    _pad: [u8; 1],
}

/// Builds a record in this CPU's scratch slot (`SNAP_REC`, zeroed first) and sends it;
/// false when it could not be sent (the ring is full).
#[inline(always)]
fn emit(fill: impl FnOnce(&mut SnapRecord)) -> bool {
    let Some(p) = SNAP_REC.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's scratch slot; tracing programs do not nest on one CPU.
    let r = unsafe { &mut *p };
    *r = SnapRecord::default();
    fill(r);
    SNAP_RB.output::<SnapRecord>(r, NO_WAKEUP).is_ok()
}

/// [`emit`] within a walk: a record that does not fit truncates it.
#[inline(always)]
fn out(w: &mut TableWalk, fill: impl FnOnce(&mut SnapRecord)) {
    if !emit(fill) {
        w.truncated = 1;
    }
}

#[inline(always)]
fn begin_bucket(w: &mut TableWalk) {
    let tb = tb_of_node(w.node);
    let st = tb_state(tb);
    let net: u64 = field(tb, layout!(tb_net)).unwrap_or(0);
    w.tb = tb;
    w.cur_netns = net_inum(net);
    w.cur_port = st.port;
    w.cur_l3mdev = st.l3mdev;
    w.cur_fr = st.fastreuse;
    w.cur_frp = st.fastreuseport;
    w.skip = ((w.netns_filter != 0 && w.netns_filter != w.cur_netns)
        || (w.port_filter != 0 && w.port_filter != w.cur_port)) as u8;
    w.owners = if w.skip != 0 {
        OwnerCursor::EMPTY
    } else {
        OwnerCursor::start(tb, w.max_owners)
    };
}

#[inline(always)]
fn end_bucket(w: &mut TableWalk) {
    if w.skip == 0 {
        let mut flags = 0u8;
        if w.owners.truncated != 0 {
            flags |= snapflag::OWNERS_TRUNCATED;
        }
        let fast = tb_fast_state(w.tb);
        if fast.ipv6_only != 0 {
            flags |= snapflag::V6ONLY;
        }
        let (tb, netns, count, l3mdev, port, fr, frp) = (
            w.tb,
            w.cur_netns,
            w.owners.count,
            w.cur_l3mdev,
            w.cur_port,
            w.cur_fr,
            w.cur_frp,
        );
        out(w, |r| {
            r.addr = tb;
            r.netns = netns;
            r.owners = count;
            r.l3mdev = l3mdev;
            r.port = port;
            r.family = fast.family;
            r.laddr = fast.addr;
            r.fastreuse = fr;
            r.fastreuseport = frp;
            r.kind = rec::BUCKET;
            r.flags = flags;
            r.uid = fast.uid;
        });
        w.buckets += 1;
    }
    w.tb = 0;
    w.chain_len += 1;
    w.node = rd::<u64>(w.node).unwrap_or(0);
    if w.single != 0 {
        w.node = 0;
    }
    if w.node != 0 && w.chain_len >= w.max_chain {
        w.truncated = 1;
        w.node = 0;
    }
}

/// An ADDR record for per-address bucket `tb2`. `owners` is 1 when the kernel keeps a
/// fastreuse state per address (then in `fastreuse`/`fastreuseport`), else 0.
#[inline(always)]
fn emit_addr(w: &mut TableWalk, tb2: u64) {
    let (family, laddr) = compat::tb2_address(tb2);
    let state = compat::tb2_fastreuse(tb2);
    let (fastreuse, fastreuseport) = state.unwrap_or((0, 0));
    // Before 06a8c04f8994 (6.8) `family` is the bucket's own, kept from its creator.
    let flags = if layout!(tb2_addr_mapped) != 1 && layout!(tb2_family) != NO_FIELD {
        snapflag::TB2_FAMILY
    } else {
        0
    };
    let (tb, netns, l3mdev, port) = (w.tb, w.cur_netns, w.cur_l3mdev, w.cur_port);
    out(w, |r| {
        r.addr = tb;
        r.netns = netns;
        r.owners = state.is_some() as u32;
        r.l3mdev = l3mdev;
        r.port = port;
        r.family = family;
        r.laddr = laddr;
        r.fastreuse = fastreuse;
        r.fastreuseport = fastreuseport;
        r.kind = rec::ADDR;
        r.flags = flags;
    });
}

#[inline(always)]
fn emit_owner(w: &mut TableWalk, node: u64) {
    let sk = sk_of_bind_node(node);
    let family: u16 = field(sk, layout!(sk_family)).unwrap_or(0);
    let mut laddr = [0u8; 16];
    if family == AF_INET6 {
        laddr = field(sk, layout!(sk_v6_rcv_saddr)).unwrap_or([0; 16]);
    } else if let Some(a) = field::<[u8; 4]>(sk, layout!(sk_rcv_saddr)) {
        laddr[..4].copy_from_slice(&a);
    }
    let mut flags = 0u8;
    if bits(sk, layout!(sk_reuse)).unwrap_or(0) != 0 {
        flags |= snapflag::REUSEADDR;
    }
    if bits(sk, layout!(sk_reuseport)).unwrap_or(0) != 0 {
        flags |= snapflag::REUSEPORT;
    }
    let state: u8 = field(sk, layout!(sk_state)).unwrap_or(0);
    let d = owner_details(sk, family, state);
    if d.v6only != 0 {
        flags |= snapflag::V6ONLY;
    }
    if d.tb2_family != 0 {
        flags |= snapflag::TB2_FAMILY;
    }
    let (tb, netns, l3mdev) = (w.tb, w.cur_netns, w.cur_l3mdev);
    let port = field(sk, layout!(sk_num)).unwrap_or(w.cur_port);
    out(w, |r| {
        r.addr = tb;
        r.netns = netns;
        r.l3mdev = l3mdev;
        r.port = port;
        r.family = family;
        r.laddr = laddr;
        r.kind = rec::OWNER;
        r.flags = flags;
        r.state = state;
        r.ino = d.ino;
        r.uid = d.uid;
        r.bound_dev = d.bound_dev;
        r.raddr = d.raddr;
        r.rport = d.rport;
        r.tb2_family = d.tb2_family;
    });
}

/// A RESERVED record for the next chunk of the namespace's reserved-ports bitmap, when
/// any of its bits is set.
#[inline(always)]
fn emit_reserved(w: &mut TableWalk) {
    let chunk = w.res_next;
    w.res_next += 1;
    let bits: [u8; 16] =
        rd(w.reserved + chunk as u64 * (RESERVED_CHUNK as u64 / 8)).unwrap_or([0; 16]);
    let (a, b): (u64, u64) = (
        u64::from_ne_bytes([
            bits[0], bits[1], bits[2], bits[3], bits[4], bits[5], bits[6], bits[7],
        ]),
        u64::from_ne_bytes([
            bits[8], bits[9], bits[10], bits[11], bits[12], bits[13], bits[14], bits[15],
        ]),
    );
    if a | b == 0 {
        return;
    }
    let netns = w.cur_netns;
    out(w, |r| {
        r.netns = netns;
        r.port = (chunk * RESERVED_CHUNK) as u16;
        r.laddr = bits;
        r.kind = rec::RESERVED;
    });
}

/// The NET record of `net` (its range and `tcp_tw_reuse`); returns its inode and range.
#[inline(always)]
fn emit_net(net: u64) -> (u32, u16, u16) {
    let (lo, hi) = compat::port_range(net);
    let netns = net_inum(net);
    let tw_reuse = compat::tcp_tw_reuse(net);
    emit(|r| {
        r.addr = net;
        r.netns = netns;
        r.port = lo;
        r.rport = hi;
        r.state = tw_reuse;
        r.kind = rec::NET;
    });
    (netns, lo, hi)
}

/// Advances the walk by one node: the next slot, the next bucket of a chain, or the
/// next per-address bucket or owner of the current bucket. False once the walk is over.
#[inline(always)]
pub fn table_step(w: &mut TableWalk) -> bool {
    if w.res_next < w.res_end {
        emit_reserved(w);
        return true;
    }
    if w.tb == 0 {
        if w.node != 0 {
            begin_bucket(w);
            return true;
        }
        if w.slot >= w.size {
            w.done = 1;
            return false;
        }
        let bucket = w.bhash + w.slot as u64 * w.bucket_size as u64;
        w.node = rd::<u64>(bucket + w.chain_off as u64).unwrap_or(0);
        w.chain_len = 0;
        w.slot += 1;
        return true;
    }
    match owner_step(&mut w.owners) {
        OwnerStep::Owner(node) => {
            if w.verbose != 0 {
                emit_owner(w, node);
            }
        }
        OwnerStep::Addr(tb2) => {
            if w.verbose != 0 {
                emit_addr(w, tb2);
            }
        }
        OwnerStep::Done => end_bucket(w),
    }
    true
}

extern "C" fn table_step_cb(_index: u64, _ctx: *mut c_void) -> i64 {
    let Some(p) = SNAP_WALK.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's scratch slot; tracing programs do not nest on one CPU.
    let w = unsafe { &mut *p };
    if table_step(w) {
        0
    } else {
        1
    }
}

#[inline(always)]
fn walk(ctx: &TracePointContext) -> Option<()> {
    if !layout_ready() {
        return None;
    }
    // SAFETY: TP is a plain static in .rodata.
    let args = unsafe { core::ptr::read_volatile(&TP.sys_enter_args) };
    if args == NO_FIELD {
        return None;
    }
    // SAFETY: reads the first syscall argument at an offset from the tracepoint format.
    let pid: i64 = unsafe { ctx.read_at(args as usize).ok()? };
    if pid != SNAP_TRIGGER_PID as i64 {
        return None;
    }
    let req: &SnapRequest = SNAP_REQ.get(0)?;
    let tid = bpf_get_current_pid_tgid() as u32;
    if req.tid == 0 || req.tid != tid {
        return None;
    }
    // The namespace asked for, and its reserved ports within its range.
    let mut reserved = 0u64;
    let (mut res_next, mut res_end) = (0u32, 0u32);
    let mut asked_netns = 0u32;
    if req.with_net != 0 {
        let target = if req.net != 0 {
            Some(req.net)
        } else {
            net_of_nsfs_fd(req.netns_fd as i64)
        };
        if let Some(target) = target {
            let (netns, lo, hi) = emit_net(target);
            asked_netns = netns;
            reserved = reserved_ports(target);
            if reserved != 0 && lo <= hi {
                res_next = lo as u32 / RESERVED_CHUNK;
                res_end = hi as u32 / RESERVED_CHUNK + 1;
            }
        }
    }
    if req.mode == SNAP_LOOKUP && req.verbose == 0 {
        lookup(req);
        return Some(());
    }
    let net = current_net()?;
    let hashinfo: u64 = field(net, layout!(net_hashinfo))?;
    let bhash: u64 = field(hashinfo, layout!(hashinfo_bhash))?;
    let mut size: u32 = field(hashinfo, layout!(hashinfo_bhash_size))?;
    // A verbose lookup walks the one bucket of (net, port) with its owners.
    let mut node = 0u64;
    let single = (req.mode == SNAP_LOOKUP) as u8;
    if single != 0 {
        let tb = find_bucket(req.net, req.port);
        size = 0;
        if tb != 0 {
            node = tb + layout!(tb_node) as u64;
        }
    }
    let p = SNAP_WALK.get_ptr_mut(0)?;
    // SAFETY: this CPU's scratch slot; tracing programs do not nest on one CPU. Set field
    // by field: a whole TableWalk built on the stack first adds to the frame the
    // verifier bounds.
    let w0 = unsafe { &mut *p };
    w0.bhash = bhash;
    w0.reserved = reserved;
    w0.node = node;
    w0.tb = 0;
    w0.seq = req.seq;
    w0.owners = OwnerCursor::EMPTY;
    w0.res_next = res_next;
    w0.res_end = res_end;
    w0.slot = 0;
    w0.size = size;
    w0.bucket_size = layout!(bind_hashbucket_size);
    w0.chain_off = layout!(bind_hashbucket_chain);
    w0.netns_filter = req.netns;
    w0.max_owners = req.max_owners;
    w0.max_chain = req.max_chain;
    w0.chain_len = 0;
    w0.buckets = 0;
    w0.cur_netns = asked_netns;
    w0.cur_l3mdev = 0;
    w0.port_filter = req.port;
    w0.cur_port = 0;
    w0.cur_fr = 0;
    w0.cur_frp = 0;
    w0.verbose = req.verbose;
    w0.skip = 0;
    w0.truncated = 0;
    w0.done = 0;
    w0.single = single;
    // SAFETY: the callback is a plain extern "C" fn; it finds its state in the scratch
    // map, so ctx is unused.
    unsafe {
        bpf_loop(
            MAX_STEPS,
            table_step_cb as *mut c_void,
            core::ptr::null_mut(),
            0,
        );
    }
    // SAFETY: as above.
    let w = unsafe { &*p };
    let mut flags = 0u8;
    if w.truncated != 0 || w.done == 0 {
        flags |= snapflag::WALK_TRUNCATED;
    }
    let (seq, slot, buckets) = (w.seq, w.slot, w.buckets);
    // If even END does not fit, user space sees no END and reports the walk as lost.
    emit(|r| {
        r.addr = seq;
        r.netns = slot;
        r.owners = buckets;
        r.kind = rec::END;
        r.flags = flags;
    });
    Some(())
}

/// One bucket, found by hash: a cheap re-read where a backend cannot see the moment
/// of a change (e.g. close() whose release runs after the syscall's exit on kernels
/// that defer the final fput).
#[inline(always)]
fn lookup(req: &SnapRequest) {
    let mut end_flags = 0u8;
    if let Some((b, truncated)) = lookup_bucket(req.net, req.port, req.max_owners) {
        let netns = net_inum(req.net);
        let sent = emit(|r| {
            r.addr = b.tb;
            r.netns = netns;
            r.owners = b.owners;
            r.l3mdev = b.l3mdev;
            r.port = b.port;
            r.fastreuse = b.fastreuse;
            r.fastreuseport = b.fastreuseport;
            r.kind = rec::BUCKET;
            r.flags = if truncated {
                snapflag::OWNERS_TRUNCATED
            } else {
                0
            };
        });
        if !sent {
            end_flags |= snapflag::WALK_TRUNCATED;
        }
    }
    let seq = req.seq;
    emit(|r| {
        r.addr = seq;
        r.kind = rec::END;
        r.flags = end_flags;
    });
}

#[tracepoint]
pub fn snapshot_trigger(ctx: TracePointContext) -> u32 {
    let _ = walk(&ctx);
    0
}
