//! The user-space model: what a bucket is, what an event and a transition are, what a
//! snapshot holds. Every value is typed (no pre-formatted text); [`crate::decode`]
//! produces these values from the kernel's raw records, and [`crate::render`] is the one
//! place they become text or JSON. Backend-neutral and free of kernel addresses except
//! as opaque identities.

mod bucket;
mod errno;
mod event;
mod explanation;
mod failures;
mod resync;
mod snapshot;
mod tcp_state;
mod transition;

pub use bucket::{AddrState, BucketInfo, BucketKey, Fastreuse, OwnerCount, PortRange};
pub use errno::{errno_or_zero, Errno};
pub use event::{SeenBucket, SocketEvent};
pub use explanation::{
    BindExplanation, Candidate, Conflict, ConflictRule, ConnectExplanation, Drift, Explanation,
    NamedOwner, PortHolder, ProcessPorts, HOLDERS_SHOWN,
};
pub use failures::{FailureCount, FailureCounts};
pub use resync::{Reread, Resync};
pub use snapshot::{
    AddrRow, BucketRow, Family, FastPath, Holder, NetInfo, OwnerRow, Scope, Snapshot,
};
pub use tcp_state::TcpState;
pub use transition::{Op, SockOpts, Task, Transition, TransitionKind};
