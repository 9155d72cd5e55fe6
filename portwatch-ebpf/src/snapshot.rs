//! The snapshot walk: every slot of `bhash`, every bucket of every chain, and (verbose)
//! every per-address bucket and owner, like the article's drgn script but in the kernel.
//! Run by the tool itself with `BPF_PROG_TEST_RUN` (a raw tracepoint program attached
//! nowhere: it runs synchronously in the calling thread, and there is nothing to detach);
//! [`serve`] answers a request from any program type.
//!
//! The walk is a state machine (`TableWalk`) advanced one list node per call of
//! `table_step`, so every walk is bounded; a chain that changes under us can cut a walk
//! short (reported as truncated: the walk did not cover its scope) but never hang it. The owners of each bucket are
//! walked by the same cursor the per-event lookup uses (`walk::OwnerCursor`). A driver
//! of `drive.rs` repeats the step; the state stays in the `SNAP_WALK` map between
//! program runs, so a walk whose run spent its step budget ends the run with
//! `WALK_MORE` and resumes where it stopped when the tool triggers the next run. A run
//! also ends (with `WALK_MORE`) when the snapshot ring has no room left for a few more
//! records: the tool drains it between runs, so a small ring suffices for any table.
//!
//! Between two runs the walk holds nothing: the bucket it stopped at may leave its chain
//! and be freed (and its memory reused) before the next run. Following that bucket's
//! `next` would then skip the rest of its chain, or wander into another one. So a run
//! that resumes inside a chain first looks for that bucket from the chain's head again;
//! when it is no longer there, the rest of the chain cannot be found and the walk is
//! reported as not covering its scope (`WALK_TRUNCATED`), never as a shorter table.
use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::raw_tracepoint, programs::RawTracePointContext};
use portwatch_common::{rec, snapflag, SnapRecord, SnapRequest, WalkBudget, SNAP_LOOKUP, SNAP_NETNS};

use crate::{
    compat,
    drive::{drive, out_of_line_step, Walk},
    kernel::{current_net, net_inum, sk_of_bind_node, tb_of_node, tb_state, AF_INET6},
    maps::{SNAP_RB, SNAP_REQ, SNAP_WALK},
    read::{field, layout, layout_ready, rd, zbits, zfield},
    walk::{lookup_bucket, owner_step, Found, OwnerCursor, OwnerStep},
};

/// Steps of one run of the `bpf_loop` driver (the kernel's BPF_MAX_LOOPS); the bounded
/// driver takes its own, smaller budget.
const RUN_STEPS: u32 = 1 << 23;

/// The tool reads the snapshot ring right after each run of the walk returns, in its own
/// thread: no record needs to wake anyone.
const NO_WAKEUP: u64 = aya_ebpf::bindings::BPF_RB_NO_WAKEUP as u64;

/// State of a whole-table walk, kept in `SNAP_WALK` between runs.
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
    /// While `verifying`: the chain node being compared with `node`.
    verify: u64,
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
    /// Nodes compared while `verifying`.
    verify_len: u32,
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
    /// The ring buffer was full: the walk stops (what follows could not be delivered).
    ring_full: u8,
    /// This run resumed inside a chain: `node` is being looked for from the chain's head.
    verifying: u8,
    /// The ring is nearly full: this run ends, the next resumes.
    paused: u8,
    _pad: [u8; 7],
}

/// Bytes one record takes in the ring (its 8-byte header included).
const RECORD_BYTES: u64 = core::mem::size_of::<SnapRecord>() as u64 + 8;

/// Room a run keeps free: a step writes at most one record, and END must still fit.
const RESERVE_BYTES: u64 = 4 * RECORD_BYTES;

/// Whether the snapshot ring has room for one more step and the run's END record.
#[inline(always)]
fn ring_has_room() -> bool {
    let size = SNAP_RB.query(aya_ebpf::bindings::BPF_RB_RING_SIZE as u64);
    let waiting = SNAP_RB.query(aya_ebpf::bindings::BPF_RB_AVAIL_DATA as u64);
    waiting + RESERVE_BYTES <= size
}

#[inline(always)]
fn out(r: &SnapRecord, w: &mut TableWalk) {
    if SNAP_RB.output::<SnapRecord>(r, NO_WAKEUP).is_err() {
        w.truncated = 1;
        w.ring_full = 1;
    }
}

#[inline(always)]
fn begin_bucket(w: &mut TableWalk) {
    let tb = tb_of_node(w.node);
    let st = tb_state(tb);
    let net: u64 = zfield(tb, layout!(tb_net));
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
            local_port_range: 0,
            _pad2: 0,
            net: w.cur_net,
        };
        out(&r, w);
        w.buckets += 1;
    }
    w.tb = 0;
    w.chain_len += 1;
    w.node = next_node(w, w.node);
    if w.node != 0 && w.chain_len >= w.max_chain {
        w.truncated = 1;
        w.node = 0;
    }
}

/// The `next` pointer at `at`; 0 (and the walk marked as not covering its scope) when it
/// cannot be read: the rest of that chain is not known, which is not the same as empty.
#[inline(always)]
fn next_node(w: &mut TableWalk, at: u64) -> u64 {
    match rd::<u64>(at) {
        Some(n) => n,
        None => {
            w.truncated = 1;
            0
        }
    }
}

/// Address of the chain head of slot `slot`.
#[inline(always)]
fn chain_head(w: &TableWalk, slot: u32) -> u64 {
    w.bhash + slot as u64 * w.bucket_size as u64 + w.chain_off as u64
}

/// One step of looking for `node` again from its chain's head (see the module docs).
#[inline(always)]
fn verify_step(w: &mut TableWalk) {
    if w.verify == w.node {
        w.verifying = 0;
        return;
    }
    if w.verify == 0 || w.verify_len >= w.max_chain {
        // The node left its chain between runs: the rest of the chain is lost to this
        // walk. Go on with the next slot.
        w.verifying = 0;
        w.truncated = 1;
        w.node = 0;
        w.tb = 0;
        w.owners = OwnerCursor::EMPTY;
        return;
    }
    w.verify_len += 1;
    w.verify = next_node(w, w.verify);
}

/// An ADDR record for per-address bucket `tb2`. `owners` is 1 when the kernel keeps a
/// fastreuse state per address (then in `fastreuse`/`fastreuseport`), else 0.
#[inline(always)]
fn emit_addr(w: &mut TableWalk, tb2: u64) {
    let (family, laddr) = compat::tb2_address(tb2);
    let (known, fastreuse, fastreuseport) = compat::tb2_fastreuse(tb2);
    let r = SnapRecord {
        addr: w.tb,
        netns: w.cur_netns,
        owners: known as u32,
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
        local_port_range: 0,
        _pad2: 0,
        net: w.cur_net,
    };
    out(&r, w);
}

/// An OWNER record. Read without branching on the outcome of each read (see
/// `read::zfield`): the verifier of older kernels refuses to read back a stack slot
/// some path never wrote, which is what an `Option` kept on one path becomes.
#[inline(always)]
fn emit_owner(w: &mut TableWalk, node: u64) {
    let sk = sk_of_bind_node(node);
    let family: u16 = zfield(sk, layout!(sk_family));
    let laddr: [u8; 16] = if family == AF_INET6 {
        zfield(sk, layout!(sk_v6_rcv_saddr))
    } else {
        let a: [u8; 4] = zfield(sk, layout!(sk_rcv_saddr));
        [a[0], a[1], a[2], a[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    };
    let state: u8 = zfield(sk, layout!(sk_state));
    let known = compat::connect_bind_known();
    let flags = ((zbits(sk, layout!(sk_reuse)) != 0) as u8) * snapflag::REUSEADDR
        | ((zbits(sk, layout!(sk_reuseport)) != 0) as u8) * snapflag::REUSEPORT
        | (known as u8) * snapflag::CONNECT_BIND_KNOWN
        | ((known && compat::connect_bound(sk, state)) as u8) * snapflag::CONNECT_BOUND;
    let port: u16 = zfield(sk, layout!(sk_num));
    let r = SnapRecord {
        addr: w.tb,
        netns: w.cur_netns,
        owners: 0,
        l3mdev: w.cur_l3mdev,
        port: if port == 0 { w.cur_port } else { port },
        family,
        laddr,
        fastreuse: 0,
        fastreuseport: 0,
        kind: rec::OWNER,
        flags,
        state,
        _pad: [0; 3],
        local_port_range: compat::socket_port_range(sk, state),
        _pad2: 0,
        net: w.cur_net,
    };
    out(&r, w);
}

/// Advances the walk by one node: the next slot, the next bucket of a chain, or the
/// next per-address bucket or owner of the current bucket. False once the walk is over.
#[inline(always)]
pub fn table_step(w: &mut TableWalk) -> bool {
    if w.verifying != 0 {
        verify_step(w);
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
        w.node = next_node(w, chain_head(w, w.slot));
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

impl Walk for TableWalk {
    #[inline(always)]
    fn state() -> Option<*mut Self> {
        SNAP_WALK.get_ptr_mut(0)
    }

    #[inline(always)]
    fn budget(b: &WalkBudget) -> u32 {
        b.snap_steps
    }

    #[inline(always)]
    fn step(&mut self) -> bool {
        if self.ring_full != 0 {
            return false;
        }
        if !ring_has_room() {
            self.paused = 1;
            return false;
        }
        table_step(self)
    }

    #[cfg(feature = "bounded")]
    #[inline(always)]
    fn step_out_of_line() -> bool {
        walk_table_step() != 0
    }
}

out_of_line_step!(walk_table_step, TableWalk);

/// A request from the tool's own thread (the one named in `SNAP_REQ`).
#[inline(always)]
fn triggered() -> Option<()> {
    let req: SnapRequest = *SNAP_REQ.get(0)?;
    let tid = bpf_get_current_pid_tgid() as u32;
    if req.tid == 0 || req.tid != tid {
        return None;
    }
    serve(&req)
}

/// Answers one request: a lookup, or one run of a whole-table walk. A walk whose `seq`
/// differs from the one in `SNAP_WALK` starts afresh; the same `seq` resumes it.
#[inline(always)]
pub fn serve(req: &SnapRequest) -> Option<()> {
    if !layout_ready() {
        return None;
    }
    if req.mode == SNAP_LOOKUP {
        lookup(req);
        return Some(());
    }
    if req.mode == SNAP_NETNS {
        crate::netns::read_ports(req);
        let end = SnapRecord {
            addr: req.seq,
            kind: rec::END,
            ..SnapRecord::default()
        };
        let _ = SNAP_RB.output::<SnapRecord>(&end, NO_WAKEUP);
        return Some(());
    }
    let p = TableWalk::state()?;
    // SAFETY: the walk state is used only by the one thread that triggers walks.
    if unsafe { (*p).seq } != req.seq {
        let net = current_net()?;
        let hashinfo: u64 = field(net, layout!(net_hashinfo))?;
        let bhash: u64 = field(hashinfo, layout!(hashinfo_bhash))?;
        let size: u32 = field(hashinfo, layout!(hashinfo_bhash_size))?;
        let w0 = TableWalk {
            bhash,
            node: 0,
            tb: 0,
            cur_net: 0,
            seq: req.seq,
            verify: 0,
            owners: OwnerCursor::EMPTY,
            slot: 0,
            size,
            bucket_size: layout!(bind_hashbucket_size),
            chain_off: layout!(bind_hashbucket_chain),
            netns_filter: req.netns,
            max_owners: req.max_owners,
            max_chain: req.max_chain,
            chain_len: 0,
            verify_len: 0,
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
            ring_full: 0,
            verifying: 0,
            paused: 0,
            _pad: [0; 7],
        };
        // SAFETY: as above.
        unsafe { *p = w0 };
    } else {
        // SAFETY: as above.
        let w = unsafe { &mut *p };
        w.paused = 0;
        // Resuming inside a chain: make sure the walk's place in it still exists.
        if w.node != 0 && w.slot > 0 {
            w.verify = next_node(w, chain_head(w, w.slot - 1));
            w.verify_len = 0;
            w.verifying = 1;
        }
    }
    drive::<TableWalk>(RUN_STEPS);
    // SAFETY: as above.
    let w = unsafe { &*p };
    let mut flags = 0u8;
    if w.truncated != 0 {
        flags |= snapflag::WALK_TRUNCATED;
    }
    if w.done == 0 && w.ring_full == 0 {
        flags |= snapflag::WALK_MORE;
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
        local_port_range: 0,
        _pad2: 0,
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
    let found = lookup_bucket(req.net, req.port, req.max_owners);
    if let Found::Unknown = found {
        end_flags |= snapflag::LOOKUP_TRUNCATED;
    }
    if let Found::Bucket((b, truncated)) = found {
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
            local_port_range: 0,
            _pad2: 0,
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

/// Attached nowhere: the tool runs it with `BPF_PROG_TEST_RUN` (raw tracepoints since 5.10).
#[raw_tracepoint]
pub fn snapshot_trigger(_ctx: RawTracePointContext) -> i32 {
    let _ = triggered();
    0
}
