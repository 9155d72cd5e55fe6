//! The bounded walks over kernel lists: the owners of a bucket (one walk, used by the
//! per-event lookup here and by the snapshot walk in `snapshot.rs`) and a bhash chain.
//!
//! Each walk is a cursor plus a step function that advances it by one list node and
//! says what it visited. A driver repeats the step: the drivers here use `bpf_loop`
//! (5.17+) with the cursor in per-CPU map memory, so the verifier treats the counters
//! as unknown values and checks the callback once instead of value by value. A driver
//! for kernels without `bpf_loop` (a bounded loop, or a walk split over several runs)
//! reuses the same cursors and step functions.
use core::ffi::c_void;

use aya_ebpf::helpers::generated::bpf_loop;
use portwatch_common::BucketState;

use crate::{
    compat,
    kernel::{bhash_chain_head, tb2_of_bhash_node, tb_net_port, tb_of_node, tb_state},
    maps::{CHAIN_WALK, OWNER_WALK},
    read::{field, layout, rd},
};

/// The largest owner count one per-event walk can establish (bpf_loop's limit is
/// 1 << 23 iterations; a walk takes at most two steps per owner).
const MAX_OWNERS: u32 = (1 << 22) - 2;
/// Bound on the buckets visited in one bhash chain by the per-event lookup.
const MAX_CHAIN: u32 = 4096;

/// Position of an owner walk: the owner lists of one bucket, one node per step.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct OwnerCursor {
    /// Next `inet_bind2_bucket.bhash_node` to visit (owners on per-address buckets),
    /// 0 when none is left.
    tb2_node: u64,
    /// Next owner `hlist_node` to count, 0 when the current list is done.
    owner: u64,
    /// Owners counted so far.
    pub count: u32,
    /// Bound on `count`.
    max: u32,
    /// 1 when `max` cut the count short.
    pub truncated: u32,
    _pad: u32,
}

/// What one step of an owner walk visited.
pub enum OwnerStep {
    /// An owner: the address of its `skc_bind_node`.
    Owner(u64),
    /// A per-address bucket (`inet_bind2_bucket`) whose owners come next.
    Addr(u64),
    /// Nothing is left (or the bound was reached: see `truncated`).
    Done,
}

impl OwnerCursor {
    pub const EMPTY: OwnerCursor = OwnerCursor {
        tb2_node: 0,
        owner: 0,
        count: 0,
        max: 0,
        truncated: 0,
        _pad: 0,
    };

    /// A walk over the owners of bucket `tb`, counting at most `max`.
    #[inline(always)]
    pub fn start(tb: u64, max: u32) -> OwnerCursor {
        let (tb2_node, owner) = compat::owner_lists(tb);
        OwnerCursor {
            tb2_node,
            owner,
            count: 0,
            max,
            truncated: 0,
            _pad: 0,
        }
    }

    /// True when nothing is left to visit.
    #[inline(always)]
    pub fn finished(&self) -> bool {
        self.owner == 0 && self.tb2_node == 0
    }
}

/// Advances an owner walk by one node. hlist_node.next is the first word of a node.
#[inline(always)]
pub fn owner_step(c: &mut OwnerCursor) -> OwnerStep {
    if c.owner != 0 {
        if c.count >= c.max {
            c.truncated = 1;
            c.owner = 0;
            c.tb2_node = 0;
            return OwnerStep::Done;
        }
        let node = c.owner;
        c.count += 1;
        c.owner = rd::<u64>(node).unwrap_or(0);
        return OwnerStep::Owner(node);
    }
    if c.tb2_node != 0 {
        let tb2 = tb2_of_bhash_node(c.tb2_node);
        c.owner = field::<u64>(tb2, layout!(tb2_owners)).unwrap_or(0);
        c.tb2_node = rd::<u64>(c.tb2_node).unwrap_or(0);
        return OwnerStep::Addr(tb2);
    }
    OwnerStep::Done
}

extern "C" fn count_owners_cb(_index: u64, _ctx: *mut c_void) -> i64 {
    let Some(p) = OWNER_WALK.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's scratch slot; tracing programs do not nest on one CPU.
    let c = unsafe { &mut *p };
    match owner_step(c) {
        OwnerStep::Done => 1,
        _ => 0,
    }
}

/// Number of sockets owning bucket `tb` (TIME-WAIT included), and whether the bound
/// `max` (or the step budget) cut the count short.
#[inline(always)]
pub fn count_owners(tb: u64, max: u32) -> (u32, bool) {
    let max = if max > MAX_OWNERS { MAX_OWNERS } else { max };
    let Some(p) = OWNER_WALK.get_ptr_mut(0) else {
        return (0, true);
    };
    // SAFETY: this CPU's scratch slot; tracing programs do not nest on one CPU.
    unsafe { *p = OwnerCursor::start(tb, max) };
    // Owners plus per-address buckets plus one final step.
    let steps = max.saturating_mul(2).saturating_add(2);
    // SAFETY: the callback is a plain extern "C" fn taking (index, ctx); it finds its
    // state in the scratch map, so ctx is unused.
    unsafe {
        bpf_loop(
            steps,
            count_owners_cb as *mut c_void,
            core::ptr::null_mut(),
            0,
        );
    }
    // SAFETY: as above.
    let c = unsafe { &*p };
    (c.count, c.truncated != 0 || !c.finished())
}

/// Position of a search through one bhash chain for the bucket of (net, port).
#[repr(C)]
pub struct ChainCursor {
    /// Next `inet_bind_bucket.node`, 0 at the end of the chain.
    node: u64,
    net: u64,
    /// The bucket found, 0 while searching.
    found: u64,
    port: u16,
    _pad: [u8; 6],
}

/// Advances a chain search by one bucket; false once it is over (found or at the end).
#[inline(always)]
pub fn chain_step(c: &mut ChainCursor) -> bool {
    if c.node == 0 {
        return false;
    }
    let tb = tb_of_node(c.node);
    if tb_net_port(tb) == (c.net, c.port) {
        c.found = tb;
        return false;
    }
    c.node = rd::<u64>(c.node).unwrap_or(0);
    true
}

extern "C" fn find_bucket_cb(_index: u64, _ctx: *mut c_void) -> i64 {
    let Some(p) = CHAIN_WALK.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's scratch slot; tracing programs do not nest on one CPU.
    let c = unsafe { &mut *p };
    if chain_step(c) {
        0
    } else {
        1
    }
}

/// The bucket of (net, port), 0 when there is none.
#[inline(always)]
pub fn find_bucket(net: u64, port: u16) -> u64 {
    if port == 0 {
        return 0;
    }
    let Some(head) = bhash_chain_head(net, port) else {
        return 0;
    };
    let Some(p) = CHAIN_WALK.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's scratch slot; tracing programs do not nest on one CPU.
    unsafe {
        *p = ChainCursor {
            node: head,
            net,
            found: 0,
            port,
            _pad: [0; 6],
        }
    };
    // SAFETY: as in count_owners.
    unsafe {
        bpf_loop(
            MAX_CHAIN,
            find_bucket_cb as *mut c_void,
            core::ptr::null_mut(),
            0,
        );
    }
    // SAFETY: as above.
    unsafe { (*p).found }
}

/// Finds the bucket of (net, port) and reads its state; `None` when there is none.
/// The flag says the owner count is a lower bound.
#[inline(always)]
pub fn lookup_bucket(net: u64, port: u16, max_owners: u32) -> Option<(BucketState, bool)> {
    let tb = find_bucket(net, port);
    if tb == 0 {
        return None;
    }
    Some(bucket_state(tb, max_owners))
}

/// The state of bucket `tb` with its owners counted; the flag says the count is a lower
/// bound.
#[inline(always)]
pub fn bucket_state(tb: u64, max_owners: u32) -> (BucketState, bool) {
    let mut st = tb_state(tb);
    let (owners, truncated) = count_owners(tb, max_owners);
    st.owners = owners;
    (st, truncated)
}
