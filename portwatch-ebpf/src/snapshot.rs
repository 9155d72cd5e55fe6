//! The snapshot walk: every slot of `bhash`, every bucket of every chain, and (verbose)
//! every per-address bucket and owner, like the article's drgn script but in the kernel.
//! Triggered by the tool itself: `getpgid(SNAP_TRIGGER_PID)` from the thread named in
//! `SNAP_REQ`. One `bpf_loop` drives a small state machine, one step per iteration, so
//! every walk is bounded; a chain that changes under us can cut a walk short (reported
//! as truncated) but never hang it.
use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_loop},
    macros::tracepoint,
    programs::TracePointContext,
};
use portwatch_common::{rec, snapflag, SnapRecord, SnapRequest, NO_FIELD, OWNERS_ON_TB2, SNAP_LOOKUP, SNAP_TRIGGER_PID};

use crate::{
    kernel::{bits, current_net, field, layout, layout_ready, lookup_bucket, net_inum, rd, AF_INET6},
    maps::{SNAP_RB, SNAP_REQ, SNAP_WALK, TP},
};

/// Upper bound of loop iterations (the kernel's BPF_MAX_LOOPS is 1 << 23).
const MAX_STEPS: u32 = 1 << 23;

#[repr(C)]
pub struct Walk {
    bhash: u64,
    /// Current chain node (`inet_bind_bucket.node`), 0 between chains.
    node: u64,
    /// Current bucket.
    tb: u64,
    /// Next per-address bucket node (TB2 mode).
    tb2_node: u64,
    /// Next owner node.
    owner: u64,
    seq: u64,
    slot: u32,
    size: u32,
    bucket_size: u32,
    chain_off: u32,
    netns_filter: u32,
    owners: u32,
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
    owners_truncated: u8,
    tb2_mode: u8,
    done: u8,
}

#[inline(always)]
fn out(r: &SnapRecord, w: &mut Walk) {
    if SNAP_RB.output::<SnapRecord>(r, 0).is_err() {
        w.truncated = 1;
    }
}

#[inline(always)]
fn begin_bucket(w: &mut Walk) {
    let tb = w.node - layout!(tb_node) as u64;
    w.tb = tb;
    w.owners = 0;
    w.owners_truncated = 0;
    let net: u64 = field(tb, layout!(tb_net)).unwrap_or(0);
    w.cur_netns = net_inum(net);
    w.cur_port = field(tb, layout!(tb_port)).unwrap_or(0);
    w.cur_l3mdev = field(tb, layout!(tb_l3mdev)).unwrap_or(0);
    w.cur_fr = field(tb, layout!(tb_fastreuse)).unwrap_or(0);
    w.cur_frp = field(tb, layout!(tb_fastreuseport)).unwrap_or(0);
    w.skip = ((w.netns_filter != 0 && w.netns_filter != w.cur_netns)
        || (w.port_filter != 0 && w.port_filter != w.cur_port)) as u8;
    if w.tb2_mode != 0 {
        w.tb2_node = field(tb, layout!(tb_bhash2)).unwrap_or(0);
        w.owner = 0;
    } else {
        w.tb2_node = 0;
        w.owner = field(tb, layout!(tb_owners)).unwrap_or(0);
    }
}

#[inline(always)]
fn end_bucket(w: &mut Walk) {
    if w.skip == 0 {
        let mut flags = 0u8;
        if w.owners_truncated != 0 {
            flags |= snapflag::OWNERS_TRUNCATED;
        }
        let r = SnapRecord {
            addr: w.tb,
            netns: w.cur_netns,
            owners: w.owners,
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

#[inline(always)]
fn emit_addr(w: &mut Walk, tb2: u64) {
    let family: u16 = field(tb2, layout!(tb2_family)).unwrap_or(0);
    let mut laddr = [0u8; 16];
    // `addr_type`-style kernels store IPv4 as v4-mapped v6; user space unmaps.
    if layout!(tb2_v6_rcv_saddr) != NO_FIELD {
        laddr = field(tb2, layout!(tb2_v6_rcv_saddr)).unwrap_or([0; 16]);
    } else if let Some(a) = field::<[u8; 4]>(tb2, layout!(tb2_rcv_saddr)) {
        laddr[..4].copy_from_slice(&a);
    }
    let has_state = layout!(tb2_fastreuse) != NO_FIELD;
    let r = SnapRecord {
        addr: w.tb,
        netns: w.cur_netns,
        owners: has_state as u32,
        l3mdev: w.cur_l3mdev,
        port: w.cur_port,
        family,
        laddr,
        fastreuse: field(tb2, layout!(tb2_fastreuse)).unwrap_or(0),
        fastreuseport: field(tb2, layout!(tb2_fastreuseport)).unwrap_or(0),
        kind: rec::ADDR,
        flags: 0,
        state: 0,
        _pad: [0; 3],
    };
    out(&r, w);
}

#[inline(always)]
fn emit_owner(w: &mut Walk, node: u64) {
    let sk = node - layout!(sk_bind_node) as u64;
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
    };
    out(&r, w);
}

extern "C" fn step(_index: u64, _ctx: *mut c_void) -> i64 {
    let Some(p) = SNAP_WALK.get_ptr_mut(0) else { return 1 };
    // SAFETY: this CPU's scratch slot; no other program runs on this CPU meanwhile.
    let w = unsafe { &mut *p };
    if w.tb == 0 {
        if w.node != 0 {
            begin_bucket(w);
            return 0;
        }
        if w.slot >= w.size {
            w.done = 1;
            return 1;
        }
        let bucket = w.bhash + w.slot as u64 * w.bucket_size as u64;
        w.node = rd::<u64>(bucket + w.chain_off as u64).unwrap_or(0);
        w.chain_len = 0;
        w.slot += 1;
        return 0;
    }
    if w.skip != 0 {
        end_bucket(w);
        return 0;
    }
    if w.owner != 0 {
        if w.owners >= w.max_owners {
            w.owners_truncated = 1;
            w.owner = 0;
            w.tb2_node = 0;
            return 0;
        }
        w.owners += 1;
        if w.verbose != 0 {
            let node = w.owner;
            emit_owner(w, node);
        }
        w.owner = rd::<u64>(w.owner).unwrap_or(0);
        return 0;
    }
    if w.tb2_node != 0 {
        let tb2 = w.tb2_node - layout!(tb2_bhash_node) as u64;
        if w.verbose != 0 {
            emit_addr(w, tb2);
        }
        w.owner = field(tb2, layout!(tb2_owners)).unwrap_or(0);
        w.tb2_node = rd::<u64>(w.tb2_node).unwrap_or(0);
        return 0;
    }
    end_bucket(w);
    0
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
    let net = current_net()?;
    let hashinfo: u64 = field(net, layout!(net_hashinfo))?;
    let bhash: u64 = field(hashinfo, layout!(hashinfo_bhash))?;
    let size: u32 = field(hashinfo, layout!(hashinfo_bhash_size))?;
    let p = SNAP_WALK.get_ptr_mut(0)?;
    let w0 = Walk {
        bhash,
        node: 0,
        tb: 0,
        tb2_node: 0,
        owner: 0,
        seq: req.seq,
        slot: 0,
        size,
        bucket_size: layout!(bind_hashbucket_size),
        chain_off: layout!(bind_hashbucket_chain),
        netns_filter: req.netns,
        owners: 0,
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
        owners_truncated: 0,
        tb2_mode: (layout!(owners_mode) == OWNERS_ON_TB2) as u8,
        done: 0,
    };
    // SAFETY: this CPU's scratch slot; no other program runs on this CPU meanwhile.
    unsafe { *p = w0 };
    // SAFETY: the callback is a plain extern "C" fn; it finds its state in the scratch
    // map, so ctx is unused.
    unsafe {
        bpf_loop(MAX_STEPS, step as *mut c_void, core::ptr::null_mut(), 0);
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
    };
    // If even END does not fit, user space sees no END and reports the walk as lost.
    let _ = SNAP_RB.output::<SnapRecord>(&end, 0);
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
            flags: if truncated { snapflag::OWNERS_TRUNCATED } else { 0 },
            state: 0,
            _pad: [0; 3],
        };
        if SNAP_RB.output::<SnapRecord>(&r, 0).is_err() {
            end_flags |= snapflag::WALK_TRUNCATED;
        }
    }
    let end = SnapRecord { addr: req.seq, kind: rec::END, flags: end_flags, ..SnapRecord::default() };
    let _ = SNAP_RB.output::<SnapRecord>(&end, 0);
}

#[tracepoint]
pub fn snapshot_trigger(ctx: TracePointContext) -> u32 {
    let _ = walk(&ctx);
    0
}
