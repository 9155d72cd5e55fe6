//! The snapshot walk: every slot of `bhash`, every bucket of every chain, and (verbose)
//! every per-address bucket and owner, like the article's drgn script but in the kernel.
//! Triggered by the tool itself: `getpgid(SNAP_TRIGGER_PID)` from the thread named in
//! `SNAP_REQ`.
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
    rec, snapflag, SnapRecord, SnapRequest, NO_FIELD, SNAP_LOOKUP, SNAP_NETNS, SNAP_TRIGGER_PID,
};

use crate::{
    compat,
    kernel::{current_net, net_inum, sk_of_bind_node, tb_of_node, tb_state, AF_INET6},
    maps::{SNAP_RB, SNAP_REQ, SNAP_WALK, TP},
    read::{bits, field, layout, layout_ready, rd},
    walk::{lookup_bucket, owner_step, OwnerCursor, OwnerStep},
};

/// Upper bound of loop iterations (the kernel's BPF_MAX_LOOPS is 1 << 23).
const MAX_STEPS: u32 = 1 << 23;

/// The tool reads the snapshot ring right after the walk returns in its own thread: no
/// record needs to wake anyone.
const NO_WAKEUP: u64 = aya_ebpf::bindings::BPF_RB_NO_WAKEUP as u64;

/// State of a whole-table walk. Lives in per-CPU map memory (see `walk.rs`).
#[repr(C)]
pub struct TableWalk {
    bhash: u64,
    /// Current chain node (`inet_bind_bucket.node`), 0 between chains.
    node: u64,
    /// Current bucket, 0 between buckets.
    tb: u64,
    /// The current bucket's `struct net`.
    cur_net: u64,
    seq: u64,
    /// The current bucket's owners.
    owners: OwnerCursor,
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
    _pad: [u8; 2],
}

#[inline(always)]
fn out(r: &SnapRecord, w: &mut TableWalk) {
    if SNAP_RB.output::<SnapRecord>(r, NO_WAKEUP).is_err() {
        w.truncated = 1;
    }
}

#[inline(always)]
fn begin_bucket(w: &mut TableWalk) {
    let tb = tb_of_node(w.node);
    let st = tb_state(tb);
    let net: u64 = field(tb, layout!(tb_net)).unwrap_or(0);
    w.tb = tb;
    w.cur_net = net;
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
        let r = SnapRecord {
            addr: w.tb,
            netns: w.cur_netns,
            owners: w.owners.count,
            l3mdev: w.cur_l3mdev,
            port: w.cur_port,
            family: 0,
            laddr: [0; 16],
            fastreuse: w.cur_fr,
            fastreuseport: w.cur_frp,
            kind: rec::BUCKET,
            flags,
            state: 0,
            _pad: [0; 3],
            net: w.cur_net,
        };
        out(&r, w);
        w.buckets += 1;
    }
    w.tb = 0;
    w.chain_len += 1;
    w.node = rd::<u64>(w.node).unwrap_or(0);
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
    let r = SnapRecord {
        addr: w.tb,
        netns: w.cur_netns,
        owners: state.is_some() as u32,
        l3mdev: w.cur_l3mdev,
        port: w.cur_port,
        family,
        laddr,
        fastreuse,
        fastreuseport,
        kind: rec::ADDR,
        flags: 0,
        state: 0,
        _pad: [0; 3],
        net: w.cur_net,
    };
    out(&r, w);
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
    let r = SnapRecord {
        addr: w.tb,
        netns: w.cur_netns,
        owners: 0,
        l3mdev: w.cur_l3mdev,
        port: field(sk, layout!(sk_num)).unwrap_or(w.cur_port),
        family,
        laddr,
        fastreuse: 0,
        fastreuseport: 0,
        kind: rec::OWNER,
        flags,
        state: field(sk, layout!(sk_state)).unwrap_or(0),
        _pad: [0; 3],
        net: w.cur_net,
    };
    out(&r, w);
}

/// Advances the walk by one node: the next slot, the next bucket of a chain, or the
/// next per-address bucket or owner of the current bucket. False once the walk is over.
#[inline(always)]
pub fn table_step(w: &mut TableWalk) -> bool {
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
    let req: SnapRequest = *SNAP_REQ.get(0)?;
    let tid = bpf_get_current_pid_tgid() as u32;
    if req.tid == 0 || req.tid != tid {
        return None;
    }
    if req.mode == SNAP_LOOKUP {
        lookup(&req);
        return Some(());
    }
    if req.mode == SNAP_NETNS {
        crate::netns::read_ports(&req);
        let end = SnapRecord {
            addr: req.seq,
            kind: rec::END,
            ..SnapRecord::default()
        };
        let _ = SNAP_RB.output::<SnapRecord>(&end, NO_WAKEUP);
        return Some(());
    }
    let net = current_net()?;
    let hashinfo: u64 = field(net, layout!(net_hashinfo))?;
    let bhash: u64 = field(hashinfo, layout!(hashinfo_bhash))?;
    let size: u32 = field(hashinfo, layout!(hashinfo_bhash_size))?;
    let p = SNAP_WALK.get_ptr_mut(0)?;
    let w0 = TableWalk {
        bhash,
        node: 0,
        tb: 0,
        cur_net: 0,
        seq: req.seq,
        owners: OwnerCursor::EMPTY,
        slot: 0,
        size,
        bucket_size: layout!(bind_hashbucket_size),
        chain_off: layout!(bind_hashbucket_chain),
        netns_filter: req.netns,
        max_owners: req.max_owners,
        max_chain: req.max_chain,
        chain_len: 0,
        buckets: 0,
        cur_netns: 0,
        cur_l3mdev: 0,
        port_filter: req.port,
        cur_port: 0,
        cur_fr: 0,
        cur_frp: 0,
        verbose: req.verbose,
        skip: 0,
        truncated: 0,
        done: 0,
        _pad: [0; 2],
    };
    // SAFETY: this CPU's scratch slot; tracing programs do not nest on one CPU.
    unsafe { *p = w0 };
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
    let end = SnapRecord {
        addr: w.seq,
        netns: w.slot,
        owners: w.buckets,
        l3mdev: 0,
        port: 0,
        family: 0,
        laddr: [0; 16],
        fastreuse: 0,
        fastreuseport: 0,
        kind: rec::END,
        flags,
        state: 0,
        _pad: [0; 3],
        net: 0,
    };
    // If even END does not fit, user space sees no END and reports the walk as lost.
    let _ = SNAP_RB.output::<SnapRecord>(&end, NO_WAKEUP);
    Some(())
}

/// One bucket, found by hash: a cheap re-read where a backend cannot see the moment
/// of a change (e.g. close() whose release runs after the syscall's exit on kernels
/// that defer the final fput).
#[inline(always)]
fn lookup(req: &SnapRequest) {
    let mut end_flags = 0u8;
    if let Some((b, truncated)) = lookup_bucket(req.net, req.port, req.max_owners) {
        let r = SnapRecord {
            addr: b.tb,
            netns: net_inum(req.net),
            owners: b.owners,
            l3mdev: b.l3mdev,
            port: b.port,
            family: 0,
            laddr: [0; 16],
            fastreuse: b.fastreuse,
            fastreuseport: b.fastreuseport,
            kind: rec::BUCKET,
            flags: if truncated {
                snapflag::OWNERS_TRUNCATED
            } else {
                0
            },
            state: 0,
            _pad: [0; 3],
            net: req.net,
        };
        if SNAP_RB.output::<SnapRecord>(&r, NO_WAKEUP).is_err() {
            end_flags |= snapflag::WALK_TRUNCATED;
        }
    }
    let end = SnapRecord {
        addr: req.seq,
        kind: rec::END,
        flags: end_flags,
        ..SnapRecord::default()
    };
    let _ = SNAP_RB.output::<SnapRecord>(&end, NO_WAKEUP);
}

#[tracepoint]
pub fn snapshot_trigger(ctx: TracePointContext) -> u32 {
    let _ = walk(&ctx);
    0
}
