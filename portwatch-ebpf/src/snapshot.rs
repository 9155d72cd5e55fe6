//! The snapshot walk: every slot of `bhash`, every bucket of every chain, and (verbose)
//! every per-address bucket and owner, like the article's drgn script but in the kernel.
//! Run by the tool itself with `BPF_PROG_TEST_RUN` (a raw tracepoint program attached
//! nowhere: it runs synchronously in the calling thread, and there is nothing to detach);
//! [`serve`] answers a request from any program type.
//!
//! A request can also ask for the namespace's NET record (its port range and
//! `tcp_tw_reuse`, from an event's `struct net` or from an nsfs file descriptor of the
//! caller) followed by RESERVED records (the set bits of `ip_local_reserved_ports`
//! within that range), and, in lookup mode, for the owners of the one bucket found.
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
//! Records are built in this CPU's `SNAP_REC` slot, not on the stack of the step.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::raw_tracepoint, programs::RawTracePointContext,
};
use portwatch_common::{
    rec, snapdetail, snapflag, SnapRecord, SnapRequest, WalkBudget, NO_FIELD, SNAP_CHAIN,
    SNAP_LOOKUP,
};

use crate::{
    compat,
    drive::{drive, out_of_line_step, Walk},
    kernel::{
        bhash_slot, current_net, fill_owner, net_inum, net_of_nsfs_fd, reserved_ports,
        sk_of_bind_node, tb_of_node, TbHead, AF_INET6, TB_SPAN,
    },
    maps::{zero_words, SNAP_RB, SNAP_REC, SNAP_REQ, SNAP_WALK},
    read::{field, layout, layout_ready, rd, read_into, zbits, zfield, zread_into},
    walk::{find_bucket, lookup_bucket, owner_step_with, tb2_links, Found, OwnerCursor, OwnerStep},
};

/// Steps of one run of the `bpf_loop` driver (the kernel's BPF_MAX_LOOPS); the bounded
/// driver takes its own, smaller budget.
const RUN_STEPS: u32 = 1 << 23;

/// Ports per RESERVED record (the 16 bytes of its `laddr`).
const RESERVED_CHUNK: u32 = 128;

/// The tool reads the snapshot ring right after the walk returns in its own thread: no
/// record needs to wake anyone.
const NO_WAKEUP: u64 = aya_ebpf::bindings::BPF_RB_NO_WAKEUP as u64;

/// State of a whole-table walk, kept in `SNAP_WALK` between runs.
#[repr(C)]
pub struct TableWalk {
    bhash: u64,
    /// `ip_local_reserved_ports` of the namespace asked for (0: not asked).
    reserved: u64,
    /// Current chain node (`inet_bind_bucket.node`), 0 between chains.
    node: u64,
    /// Current bucket, 0 between buckets.
    tb: u64,
    /// The current bucket's `struct net`.
    cur_net: u64,
    seq: u64,
    /// While `verifying`: the chain node being compared with `node`.
    verify: u64,
    /// The snapshot ring's size, read once per run.
    ring_size: u64,
    /// The current bucket's owners.
    owners: OwnerCursor,
    /// The start of the current bucket, copied with one read at its first step.
    head: TbHead<TB_SPAN>,
    /// Chain heads of consecutive slots copied with one read (see [`next_chain`]): the
    /// head of slot `batch_first + i` is the `u64` at byte `i * bucket_size`.
    heads: [u8; HEADS_BYTES],
    /// A per-address bucket's `bhash_node` and `owners` copied with one read (see
    /// [`tb2_links_copied`]).
    links: [u64; 3],
    /// The `struct net` whose inode is `cur_netns` (0: none yet in this run): the
    /// buckets of a chain mostly share one.
    inum_net: u64,
    /// Next and end chunk of `reserved` to emit (`RESERVED_CHUNK` ports each).
    res_next: u32,
    res_end: u32,
    /// First slot in `heads` and how many slots it holds (0: none; refilled from `slot`).
    batch_first: u32,
    batch_slots: u32,
    /// Slots one full copy of `heads` holds for this kernel's `bucket_size`.
    batch_per: u32,
    /// Next slot, first slot and end slot of the walk.
    slot: u32,
    first: u32,
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
    /// One bucket only (a verbose lookup): the walk ends with it.
    single: u8,
    /// The verbose lookup's search gave up before the end of the hash chain.
    lookup_truncated: u8,
    _pad: [u8; 1],
}

/// Bytes of `bhash` one read copies: the chain heads of up to `MAX_BATCH` slots. Most
/// slots of a large table are empty, and one copy costs about as much as one 8-byte read,
/// so the walk reads 16 slots (16-byte buckets) per helper call instead of one.
const HEADS_BYTES: usize = 256;
/// Bound on the slots one copy of `heads` holds (16-byte buckets, the smallest).
const MAX_BATCH: u32 = 16;

/// Bytes one record takes in the ring (its 8-byte header included).
const RECORD_BYTES: u64 = core::mem::size_of::<SnapRecord>() as u64 + 8;

/// Room a run keeps free: a step writes at most two records (the last OWNER of a bucket
/// and its BUCKET), and END must still fit.
const RESERVE_BYTES: u64 = 4 * RECORD_BYTES;

/// The snapshot ring's size in bytes.
#[inline(always)]
fn ring_size() -> u64 {
    SNAP_RB.query(aya_ebpf::bindings::BPF_RB_RING_SIZE as u64)
}

/// Whether the snapshot ring (of `size` bytes) has room for one more step and the run's
/// END record.
#[inline(always)]
fn ring_has_room(size: u64) -> bool {
    let waiting = SNAP_RB.query(aya_ebpf::bindings::BPF_RB_AVAIL_DATA as u64);
    waiting + RESERVE_BYTES <= size
}

/// This CPU's scratch record (`SNAP_REC`), zeroed. Records are filled in there, field
/// by field and kernel reads straight into it: a record, or copies of its parts, on the
/// stack of the walk's step would add to a frame older verifiers bound together with the
/// trigger's (512 bytes in all).
#[inline(always)]
fn slot() -> Option<&'static mut SnapRecord> {
    let p = SNAP_REC.get_ptr_mut(0)?;
    // SAFETY: this CPU's scratch slot, a map value (8-byte aligned, 104 bytes); tracing
    // programs do not nest on one CPU. Zeroed in place (no zero record built on the stack
    // first).
    unsafe {
        zero_words(p);
        Some(&mut *p)
    }
}

/// Sends a record built in [`slot`]; false when the ring is full.
#[inline(always)]
fn send(r: &SnapRecord) -> bool {
    SNAP_RB.output::<SnapRecord>(r, NO_WAKEUP).is_ok()
}

/// Builds a record in [`slot`] and sends it; false when it could not be sent.
#[inline(always)]
fn emit(fill: impl FnOnce(&mut SnapRecord)) -> bool {
    let Some(r) = slot() else {
        return false;
    };
    fill(r);
    send(r)
}

/// Within a walk: a record that does not fit truncates and stops it.
#[inline(always)]
fn sent(w: &mut TableWalk, ok: bool) {
    if !ok {
        w.truncated = 1;
        w.ring_full = 1;
    }
}

#[inline(always)]
fn begin_bucket(w: &mut TableWalk) {
    let tb = tb_of_node(w.node);
    if !w.head.fill(tb) {
        // An unreadable bucket: neither it nor the rest of its chain is known.
        w.truncated = 1;
        w.node = 0;
        return;
    }
    let st = w.head.state(tb);
    let net = w.head.net();
    w.tb = tb;
    w.cur_net = net;
    if net == 0 || net != w.inum_net {
        w.cur_netns = net_inum(net);
        w.inum_net = net;
    }
    w.cur_port = st.port;
    w.cur_l3mdev = st.l3mdev;
    w.cur_fr = st.fastreuse;
    w.cur_frp = st.fastreuseport;
    w.skip = ((w.netns_filter != 0 && w.netns_filter != w.cur_netns)
        || (w.port_filter != 0 && w.port_filter != w.cur_port)) as u8;
    w.owners = if w.skip != 0 {
        OwnerCursor::EMPTY
    } else {
        OwnerCursor::of_lists(w.head.owner_lists(), w.max_owners)
    };
}

/// The BUCKET record, with the bucket's fast-path state (`sk_reuseport_match()`).
#[inline(always)]
fn end_bucket(w: &mut TableWalk) {
    if w.skip == 0 {
        let ok = match slot() {
            Some(r) => {
                r.addr = w.tb;
                r.netns = w.cur_netns;
                r.owners = w.owners.count;
                r.l3mdev = w.cur_l3mdev;
                r.port = w.cur_port;
                r.fastreuse = w.cur_fr;
                r.fastreuseport = w.cur_frp;
                r.kind = rec::BUCKET;
                r.flags = ((w.owners.truncated != 0) as u8) * snapflag::OWNERS_TRUNCATED;
                r.net = w.cur_net;
                let v6only = w.head.fill_fast(r);
                r.detail = ((v6only != 0) as u8) * snapdetail::V6ONLY;
                send(r)
            }
            None => false,
        };
        sent(w, ok);
        w.buckets += 1;
    }
    w.tb = 0;
    w.chain_len += 1;
    // The next bucket of the chain, from the copy of this one's start (its `node`
    // lies within it). A verbose lookup ends with its one bucket.
    w.node = w.head.chain_next() * ((w.single == 0) as u64);
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

/// [`walk::tb2_links`] with one read into `links` (map memory: the event programs that
/// share the owner walk have no stack to spare for it) where `owners` follows
/// `bhash_node` (an `hlist_node`), as on the kernels whose owners hang off per-address
/// buckets (6.8+). A read that faults gives 0, as the reads one by one do.
#[inline(always)]
fn tb2_links_copied(links: &mut [u64; 3], tb2: u64) -> (u64, u64) {
    let (node, owners) = (layout!(tb2_bhash_node), layout!(tb2_owners));
    if node != NO_FIELD && owners == node.wrapping_add(16) {
        read_into(links.as_mut_ptr() as *mut u8, 24, tb2 + node as u64);
        return (links[2], links[0]);
    }
    tb2_links(tb2)
}

/// The chain head of slot `slot`, from `heads` (refilled first when it does not hold
/// that slot), advancing `slot`. One slot per step: a loop over several slots in one step
/// would be verified once per iteration, for a walk no faster.
#[inline(always)]
fn next_chain(w: &mut TableWalk) -> u64 {
    if w.slot < w.batch_first || w.slot - w.batch_first >= w.batch_slots {
        refill_heads(w);
    }
    let off = (w.slot - w.batch_first) * w.bucket_size;
    w.slot += 1;
    if off as usize > HEADS_BYTES - 8 {
        // Not reached (`batch_per` keeps every head inside `heads`): the slot is not known.
        w.truncated = 1;
        return 0;
    }
    // SAFETY: `off + 8 <= HEADS_BYTES` (checked above): inside `heads`.
    unsafe { core::ptr::read_unaligned(w.heads.as_ptr().add(off as usize) as *const u64) }
}

/// Copies the chain heads from slot `slot` on into `heads`: `batch_per` slots with one
/// read where the copy ends inside `bhash`, else the one slot. A copy that faults leaves
/// zeroes (empty slots) and marks the walk as not covering its scope.
#[inline(always)]
fn refill_heads(w: &mut TableWalk) {
    let left = (w.size - w.slot) as u64;
    let full = left * w.bucket_size as u64 >= w.chain_off as u64 + HEADS_BYTES as u64;
    let (len, slots) = if full {
        (HEADS_BYTES as u32, w.batch_per)
    } else {
        (8, 1)
    };
    if !read_into(w.heads.as_mut_ptr(), len, chain_head(w, w.slot)) {
        w.truncated = 1;
    }
    w.batch_first = w.slot;
    w.batch_slots = slots;
}

/// Slots one full copy of `heads` holds when buckets take `bucket_size` bytes: the
/// head of the last one must end inside the copy.
#[inline(always)]
fn batch_per(bucket_size: u32) -> u32 {
    if bucket_size == 0 {
        return 1;
    }
    let n = 1 + (HEADS_BYTES as u32 - 8) / bucket_size;
    if n > MAX_BATCH {
        MAX_BATCH
    } else {
        n
    }
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
    let ok = match slot() {
        Some(r) => {
            let (family, laddr) = compat::tb2_address(tb2);
            let (known, fastreuse, fastreuseport) = compat::tb2_fastreuse(tb2);
            // Before 06a8c04f8994 (6.8) `family` is the bucket's own, kept from its creator.
            let own_family = layout!(tb2_addr_mapped) != 1 && layout!(tb2_family) != NO_FIELD;
            r.addr = w.tb;
            r.netns = w.cur_netns;
            r.owners = known as u32;
            r.l3mdev = w.cur_l3mdev;
            r.port = w.cur_port;
            r.family = family;
            r.laddr = laddr;
            r.fastreuse = fastreuse;
            r.fastreuseport = fastreuseport;
            r.kind = rec::ADDR;
            r.detail = (own_family as u8) * snapdetail::TB2_FAMILY;
            send(r)
        }
        None => false,
    };
    sent(w, ok);
}

/// An OWNER record with what `explain` needs of the socket. Read without branching on
/// the outcome of each read (see `read::zfield`): the verifier of older kernels refuses
/// to read back a stack slot some path never wrote, which is what an `Option` kept on
/// one path becomes.
#[inline(always)]
fn emit_owner(w: &mut TableWalk, node: u64) {
    let ok = match slot() {
        Some(r) => {
            let sk = sk_of_bind_node(node);
            r.addr = w.tb;
            r.netns = w.cur_netns;
            r.l3mdev = w.cur_l3mdev;
            r.kind = rec::OWNER;
            r.family = zfield(sk, layout!(sk_family));
            if r.family == AF_INET6 {
                zread_into(r.laddr.as_mut_ptr(), 16, sk, layout!(sk_v6_rcv_saddr));
            } else {
                zread_into(r.laddr.as_mut_ptr(), 4, sk, layout!(sk_rcv_saddr));
            }
            r.state = zfield(sk, layout!(sk_state));
            let known = compat::connect_bind_known();
            r.flags = ((zbits(sk, layout!(sk_reuse)) != 0) as u8) * snapflag::REUSEADDR
                | ((zbits(sk, layout!(sk_reuseport)) != 0) as u8) * snapflag::REUSEPORT
                | (known as u8) * snapflag::CONNECT_BIND_KNOWN
                | ((known && compat::connect_bound(sk, r.state)) as u8) * snapflag::CONNECT_BOUND;
            let num: u16 = zfield(sk, layout!(sk_num));
            r.port = if num == 0 { w.cur_port } else { num };
            r.local_port_range = compat::socket_port_range(sk, r.state);
            let v6only = fill_owner(r, sk);
            r.detail = ((v6only != 0) as u8) * snapdetail::V6ONLY
                | ((r.tb2_family != 0) as u8) * snapdetail::TB2_FAMILY;
            send(r)
        }
        None => false,
    };
    sent(w, ok);
}

/// A RESERVED record for the next chunk of the namespace's reserved-ports bitmap, when
/// any of its bits is set.
#[inline(always)]
fn emit_reserved(w: &mut TableWalk) {
    let chunk = w.res_next;
    w.res_next += 1;
    let at = chunk * (RESERVED_CHUNK / 8);
    let a: u64 = zfield(w.reserved, at);
    let b: u64 = zfield(w.reserved, at + 8);
    if a | b == 0 {
        return;
    }
    let ok = match slot() {
        Some(r) => {
            r.netns = w.cur_netns;
            r.port = (chunk * RESERVED_CHUNK) as u16;
            r.laddr[..8].copy_from_slice(&a.to_ne_bytes());
            r.laddr[8..].copy_from_slice(&b.to_ne_bytes());
            r.kind = rec::RESERVED;
            send(r)
        }
        None => false,
    };
    sent(w, ok);
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

/// Advances the walk by one node: the next chunk of reserved ports, the next slot, the
/// next bucket of a chain, or the next per-address bucket or owner of the current
/// bucket. False once the walk is over.
/// `FULL`: with the ADDR and OWNER records of verbose walks (see [`BriefWalk`]).
#[inline(always)]
pub fn table_step<const FULL: bool>(w: &mut TableWalk) -> bool {
    if w.res_next < w.res_end {
        emit_reserved(w);
        return true;
    }
    if w.verifying != 0 {
        verify_step(w);
        return true;
    }
    if w.tb == 0 {
        if w.node == 0 {
            if w.slot >= w.size {
                w.done = 1;
                return false;
            }
            w.node = next_chain(w);
            w.chain_len = 0;
            if w.node == 0 {
                return true;
            }
        }
        begin_bucket(w);
        return true;
    }
    let links = &mut w.links;
    match owner_step_with(&mut w.owners, |tb2| tb2_links_copied(links, tb2)) {
        OwnerStep::Owner(node) => {
            if FULL && w.verbose != 0 {
                emit_owner(w, node);
            }
            // The bucket's last owner: its BUCKET record in the same step.
            if w.owners.finished() {
                end_bucket(w);
            }
        }
        OwnerStep::Addr(tb2) => {
            if FULL && w.verbose != 0 {
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
        self.step_with::<true>()
    }

    #[cfg(feature = "bounded")]
    #[inline(always)]
    fn step_out_of_line() -> bool {
        walk_table_step() != 0
    }
}

impl TableWalk {
    /// One step, unless the ring is full or nearly full (then the run ends). Only
    /// steps between buckets look at the ring (a helper call): the one record a
    /// bucket sends without ADDR and OWNER records, at its end, then has room
    /// (`RESERVE_BYTES`), since nothing else writes to the snapshot ring meanwhile.
    #[inline(always)]
    fn step_with<const FULL: bool>(&mut self) -> bool {
        if self.ring_full != 0 {
            return false;
        }
        if (self.tb == 0 || (FULL && self.verbose != 0)) && !ring_has_room(self.ring_size) {
            self.paused = 1;
            return false;
        }
        table_step::<FULL>(self)
    }
}

out_of_line_step!(walk_table_step, TableWalk);

/// The walk of `snapshot_brief`: a [`TableWalk`] (same state, same map slot) that counts
/// owners without describing them, i.e. without the ADDR and OWNER records of verbose
/// walks. Its program is a third smaller for the verifier to check, which every start of
/// `dump` pays.
#[repr(transparent)]
pub struct BriefWalk(TableWalk);

impl Walk for BriefWalk {
    #[inline(always)]
    fn state() -> Option<*mut Self> {
        TableWalk::state().map(|p| p.cast())
    }

    #[inline(always)]
    fn budget(b: &WalkBudget) -> u32 {
        b.snap_steps
    }

    #[inline(always)]
    fn step(&mut self) -> bool {
        self.0.step_with::<false>()
    }

    #[cfg(feature = "bounded")]
    #[inline(always)]
    fn step_out_of_line() -> bool {
        walk_brief_step() != 0
    }
}

out_of_line_step!(walk_brief_step, BriefWalk);

/// A request from the tool's own thread (the one named in `SNAP_REQ`).
#[inline(always)]
fn request() -> Option<&'static SnapRequest> {
    let req: &SnapRequest = SNAP_REQ.get(0)?;
    let tid = bpf_get_current_pid_tgid() as u32;
    if req.tid == 0 || req.tid != tid {
        return None;
    }
    Some(req)
}

/// The namespace asked for (`with_net`) and what the walk emits of it.
struct Asked {
    /// Its `struct net`, 0 when not asked or not found.
    net: u64,
    netns: u32,
    /// Its reserved-ports bitmap (0: none), and the first and end chunk to emit.
    reserved: u64,
    res_next: u32,
    res_end: u32,
}

/// The namespace asked for (`with_net`): its NET record, and the walk's reserved-ports
/// chunks within its range; zeroes when not asked or not found.
#[inline(always)]
fn asked_net(req: &SnapRequest) -> Asked {
    let mut a = Asked {
        net: 0,
        netns: 0,
        reserved: 0,
        res_next: 0,
        res_end: 0,
    };
    if req.with_net == 0 {
        return a;
    }
    let target = if req.net != 0 {
        Some(req.net)
    } else {
        net_of_nsfs_fd(req.netns_fd as i64)
    };
    let Some(target) = target else {
        return a;
    };
    let (netns, lo, hi) = emit_net(target);
    a.net = target;
    a.netns = netns;
    let reserved = reserved_ports(target);
    if reserved != 0 && lo <= hi {
        a.reserved = reserved;
        a.res_next = lo as u32 / RESERVED_CHUNK;
        a.res_end = hi as u32 / RESERVED_CHUNK + 1;
    }
    a
}

/// Answers one request: a lookup, or one run of a whole-table walk (or of a verbose
/// lookup, the walk of one bucket). A walk whose `seq` differs from the one in
/// `SNAP_WALK` starts afresh; the same `seq` resumes it.
#[inline(always)]
pub fn serve(req: &SnapRequest) -> Option<()> {
    if !layout_ready() {
        return None;
    }
    if req.mode == SNAP_LOOKUP && req.verbose == 0 {
        let _ = asked_net(req);
        lookup(req);
        return Some(());
    }
    walk_run::<true>(req)
}

/// Answers a whole-table or one-chain walk as [`serve`] does, without ADDR and OWNER
/// records (see [`BriefWalk`]). Lookups are not served: their END says so
/// (`LOOKUP_TRUNCATED`, `WALK_TRUNCATED`), never an empty answer.
#[inline(always)]
fn serve_brief(req: &SnapRequest) -> Option<()> {
    if !layout_ready() {
        return None;
    }
    if req.mode == SNAP_LOOKUP {
        let seq = req.seq;
        emit(|r| {
            r.addr = seq;
            r.kind = rec::END;
            r.flags = snapflag::LOOKUP_TRUNCATED | snapflag::WALK_TRUNCATED;
        });
        return Some(());
    }
    walk_run::<false>(req)
}

/// One run of a walk, driven as a [`TableWalk`] (`FULL`) or a [`BriefWalk`].
#[inline(always)]
fn walk_run<const FULL: bool>(req: &SnapRequest) -> Option<()> {
    let p = TableWalk::state()?;
    // SAFETY: the walk state is used only by the one thread that triggers walks.
    if unsafe { (*p).seq } != req.seq {
        let asked = asked_net(req);
        let net = current_net()?;
        let hashinfo: u64 = field(net, layout!(net_hashinfo))?;
        let bhash: u64 = field(hashinfo, layout!(hashinfo_bhash))?;
        let mut size: u32 = field(hashinfo, layout!(hashinfo_bhash_size))?;
        // One port of one namespace lives in one slot: walk that slot alone.
        let mut first = 0u32;
        if req.mode == SNAP_CHAIN && asked.net != 0 && asked.netns == req.netns && req.port != 0 {
            if let Some(slot) = bhash_slot(asked.net, req.port, size) {
                first = slot;
                size = slot + 1;
            }
        }
        // A verbose lookup walks the one bucket of (net, port) with its owners.
        let mut node = 0u64;
        let single = (req.mode == SNAP_LOOKUP) as u8;
        let mut lookup_truncated = 0u8;
        if FULL && single != 0 {
            size = 0;
            match find_bucket(req.net, req.port) {
                Found::Bucket(tb) => node = tb + layout!(tb_node) as u64,
                Found::Absent => {}
                Found::Unknown => lookup_truncated = 1,
            }
        }
        // SAFETY: as above. Set field by field: a whole TableWalk built on the stack
        // first adds to the frame the verifier bounds.
        let w0 = unsafe { &mut *p };
        w0.bhash = bhash;
        w0.reserved = asked.reserved;
        w0.node = node;
        w0.tb = 0;
        w0.cur_net = 0;
        w0.seq = req.seq;
        w0.owners = OwnerCursor::EMPTY;
        w0.inum_net = 0;
        w0.ring_size = ring_size();
        w0.res_next = asked.res_next;
        w0.res_end = asked.res_end;
        w0.slot = first;
        w0.first = first;
        w0.size = size;
        w0.bucket_size = layout!(bind_hashbucket_size);
        w0.batch_per = batch_per(w0.bucket_size);
        w0.batch_first = 0;
        w0.batch_slots = 0;
        w0.chain_off = layout!(bind_hashbucket_chain);
        w0.netns_filter = req.netns;
        w0.max_owners = req.max_owners;
        w0.max_chain = req.max_chain;
        w0.chain_len = 0;
        w0.buckets = 0;
        w0.cur_netns = asked.netns;
        w0.cur_l3mdev = 0;
        w0.port_filter = req.port;
        w0.cur_port = 0;
        w0.cur_fr = 0;
        w0.cur_frp = 0;
        w0.verbose = req.verbose;
        w0.skip = 0;
        w0.truncated = 0;
        w0.done = 0;
        w0.ring_full = 0;
        w0.verify = 0;
        w0.verify_len = 0;
        w0.verifying = 0;
        w0.paused = 0;
        w0.single = single;
        w0.lookup_truncated = lookup_truncated;
    } else {
        // SAFETY: as above.
        let w = unsafe { &mut *p };
        w.paused = 0;
        w.inum_net = 0;
        w.ring_size = ring_size();
        // Chain heads copied in an earlier run may be stale: read them again.
        w.batch_slots = 0;
        // Resuming inside a chain: make sure the walk's place in it still exists.
        if w.node != 0 && w.slot > 0 {
            w.verify = next_node(w, chain_head(w, w.slot - 1));
            w.verify_len = 0;
            w.verifying = 1;
        }
    }
    if FULL {
        drive::<TableWalk>(RUN_STEPS);
    } else {
        drive::<BriefWalk>(RUN_STEPS);
    }
    // SAFETY: as above.
    let w = unsafe { &*p };
    let flags = (w.truncated != 0) as u8 * snapflag::WALK_TRUNCATED
        | (w.done == 0 && w.ring_full == 0) as u8 * snapflag::WALK_MORE
        | (w.lookup_truncated != 0) as u8 * snapflag::LOOKUP_TRUNCATED;
    let (seq, slots, buckets) = (w.seq, w.slot - w.first, w.buckets);
    // If even END does not fit, user space sees no END and reports the walk as lost.
    emit(|r| {
        r.addr = seq;
        r.netns = slots;
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
    let found = lookup_bucket(req.net, req.port, req.max_owners);
    if let Found::Unknown = found {
        end_flags |= snapflag::LOOKUP_TRUNCATED;
    }
    if let Found::Bucket((b, truncated)) = found {
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
            r.flags = (truncated as u8) * snapflag::OWNERS_TRUNCATED;
            r.net = req.net;
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

/// Attached nowhere: the tool runs it with `BPF_PROG_TEST_RUN` (raw tracepoints since 5.10).
#[raw_tracepoint]
pub fn snapshot_trigger(_ctx: RawTracePointContext) -> i32 {
    let _ = request().and_then(serve);
    0
}

/// `snapshot_trigger` for walks without ADDR and OWNER records only (see [`BriefWalk`]),
/// run the same way: what `dump` without `-v` loads.
#[raw_tracepoint]
pub fn snapshot_brief(_ctx: RawTracePointContext) -> i32 {
    let _ = request().and_then(serve_brief);
    0
}
