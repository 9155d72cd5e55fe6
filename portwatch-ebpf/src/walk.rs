//! The bounded walks over kernel lists: the owners of a bucket (one walk, used by the
//! per-event lookup here and by the snapshot walk in `snapshot.rs`) and a bhash chain.
//!
//! Each walk is a cursor plus a step function that advances it by one list node and
//! says what it visited; a driver of `drive.rs` repeats the step (`bpf_loop`, or a
//! bounded loop on kernels without it).
use portwatch_common::{BucketState, WalkBudget};

use crate::{
    compat,
    drive::{drive, out_of_line_step, Walk},
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
        OwnerCursor::of_lists(
            compat::owner_lists(|off| field::<u64>(tb, off).unwrap_or(0)),
            max,
        )
    }

    /// A walk over the owner lists `compat::owner_lists` gave, counting at most `max`.
    #[inline(always)]
    pub fn of_lists((tb2_node, owner): (u64, u64), max: u32) -> OwnerCursor {
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

/// The head of per-address bucket `tb2`'s owner list and its `bhash_node.next` (the
/// next per-address bucket of its bucket), read one by one; 0 when unreadable.
#[inline(always)]
pub fn tb2_links(tb2: u64) -> (u64, u64) {
    (
        field::<u64>(tb2, layout!(tb2_owners)).unwrap_or(0),
        field::<u64>(tb2, layout!(tb2_bhash_node)).unwrap_or(0),
    )
}

/// Advances an owner walk by one node. hlist_node.next is the first word of a node.
#[inline(always)]
pub fn owner_step(c: &mut OwnerCursor) -> OwnerStep {
    owner_step_with(c, tb2_links)
}

/// [`owner_step`] with the links of a per-address bucket read by `links` (as
/// [`tb2_links`] gives them): the snapshot walk reads both with one copy into its state.
#[inline(always)]
pub fn owner_step_with(c: &mut OwnerCursor, links: impl FnOnce(u64) -> (u64, u64)) -> OwnerStep {
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
        (c.owner, c.tb2_node) = links(tb2);
        return OwnerStep::Addr(tb2);
    }
    OwnerStep::Done
}

impl Walk for OwnerCursor {
    #[inline(always)]
    fn state() -> Option<*mut Self> {
        OWNER_WALK.get_ptr_mut(0)
    }

    #[inline(always)]
    fn budget(b: &WalkBudget) -> u32 {
        b.owner_steps
    }

    #[inline(always)]
    fn step(&mut self) -> bool {
        !matches!(owner_step(self), OwnerStep::Done)
    }

    #[cfg(feature = "bounded")]
    #[inline(always)]
    fn step_out_of_line() -> bool {
        walk_owner_step() != 0
    }
}

out_of_line_step!(walk_owner_step, OwnerCursor);

/// Number of sockets owning bucket `tb` (TIME-WAIT included), and whether the bound
/// `max` (or the driver's step budget) cut the count short.
#[inline(always)]
pub fn count_owners(tb: u64, max: u32) -> (u32, bool) {
    let max = if max > MAX_OWNERS { MAX_OWNERS } else { max };
    let Some(p) = OwnerCursor::state() else {
        return (0, true);
    };
    // SAFETY: this CPU's scratch slot; tracing programs do not nest on one CPU.
    unsafe { *p = OwnerCursor::start(tb, max) };
    // Owners plus per-address buckets plus one final step.
    drive::<OwnerCursor>(max.saturating_mul(2).saturating_add(2));
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

impl Walk for ChainCursor {
    #[inline(always)]
    fn state() -> Option<*mut Self> {
        CHAIN_WALK.get_ptr_mut(0)
    }

    #[inline(always)]
    fn budget(b: &WalkBudget) -> u32 {
        b.chain_steps
    }

    #[inline(always)]
    fn step(&mut self) -> bool {
        chain_step(self)
    }

    #[cfg(feature = "bounded")]
    #[inline(always)]
    fn step_out_of_line() -> bool {
        walk_chain_step() != 0
    }
}

out_of_line_step!(walk_chain_step, ChainCursor);

/// What a search for the bucket of (net, port) found.
pub enum Found<T> {
    Bucket(T),
    /// The chain ended without it: there is no such bucket.
    Absent,
    /// The search gave up before the end of the chain (its step budget ran out): the
    /// bucket may exist.
    Unknown,
}

/// The bucket of (net, port).
#[inline(always)]
pub fn find_bucket(net: u64, port: u16) -> Found<u64> {
    if port == 0 {
        return Found::Absent;
    }
    let Some(head) = bhash_chain_head(net, port) else {
        return Found::Absent;
    };
    let Some(p) = ChainCursor::state() else {
        return Found::Unknown;
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
    drive::<ChainCursor>(MAX_CHAIN);
    // SAFETY: as above.
    let c = unsafe { &*p };
    if c.found != 0 {
        Found::Bucket(c.found)
    } else if c.node == 0 {
        Found::Absent
    } else {
        Found::Unknown
    }
}

/// Finds the bucket of (net, port) and reads its state; the flag says the owner count is
/// a lower bound.
#[inline(always)]
pub fn lookup_bucket(net: u64, port: u16, max_owners: u32) -> Found<(BucketState, bool)> {
    match find_bucket(net, port) {
        Found::Bucket(tb) => Found::Bucket(bucket_state(tb, max_owners)),
        Found::Absent => Found::Absent,
        Found::Unknown => Found::Unknown,
    }
}

/// The state of bucket `tb` with its owners counted; the flag says the count is a lower
/// bound.
#[inline(always)]
pub fn bucket_state(tb: u64, max_owners: u32) -> (BucketState, bool) {
    let (owners, truncated) = count_owners(tb, max_owners);
    let mut st = tb_state(tb);
    st.owners = owners;
    (st, truncated)
}
