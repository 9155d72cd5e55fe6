//! The user-space model: what a bucket is, what a transition is, what a snapshot holds.
//! Backend-neutral and free of kernel addresses except as opaque identities.

use serde::Serialize;

/// A bind bucket is identified by (network namespace, VRF/l3mdev, local port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct BucketKey {
    pub netns: u32,
    pub l3mdev: i32,
    pub port: u16,
}

/// The observable state of one bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct BucketInfo {
    pub fastreuse: i8,
    pub fastreuseport: i8,
    pub owners: u32,
    /// `owners` is a lower bound (the bounded walk stopped early).
    pub owners_truncated: bool,
}

/// The syscall or kernel action behind a transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Bind,
    Listen,
    Connect,
    Accept,
    Close,
    /// An owner went away without a syscall (TIME-WAIT expiry, RST, netns exit).
    Release,
    /// A TIME-WAIT socket took over from a closing socket.
    Timewait,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Bind => "bind",
            Op::Listen => "listen",
            Op::Connect => "connect",
            Op::Accept => "accept",
            Op::Close => "close",
            Op::Release => "release",
            Op::Timewait => "timewait",
        }
    }
}

/// What changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionKind {
    BucketCreated,
    OwnerAdded,
    OwnerRemoved,
    FastreuseChanged,
    FastreuseportChanged,
    BucketDestroyed,
    BindFailed,
    ConnectFailed,
}

impl TransitionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransitionKind::BucketCreated => "bucket_created",
            TransitionKind::OwnerAdded => "owner_added",
            TransitionKind::OwnerRemoved => "owner_removed",
            TransitionKind::FastreuseChanged => "fastreuse_changed",
            TransitionKind::FastreuseportChanged => "fastreuseport_changed",
            TransitionKind::BucketDestroyed => "bucket_destroyed",
            TransitionKind::BindFailed => "bind_failed",
            TransitionKind::ConnectFailed => "connect_failed",
        }
    }
}

/// Socket options relevant to port sharing, as set on the socket of the event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SockOpts {
    pub reuseaddr: bool,
    pub reuseport: bool,
    pub bind_address_no_port: bool,
}

/// One transition of one bucket, derived by the reducer from an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Transition {
    pub ts_ns: u64,
    pub kind: TransitionKind,
    pub op: Op,
    pub key: BucketKey,
    /// State after the operation; `None` when the bucket no longer exists (or never did,
    /// for a failure on a port without a bucket).
    pub after: Option<BucketInfo>,
    /// For `*_changed`: the previous value of the field that changed.
    pub from: Option<i8>,
    /// For `*_changed`: the new value.
    pub to: Option<i8>,
    /// 0 unless a failure.
    pub errno: i32,
    pub pid: u32,
    pub comm: String,
    /// The socket's local address and port after the operation, e.g. `127.0.0.1:60000`.
    pub local: Option<String>,
    /// The socket's remote address, e.g. `127.9.9.9:1234`, for connected sockets.
    pub remote: Option<String>,
    pub opts: SockOpts,
    /// The port was not asked for but is the only port of the ephemeral range.
    pub port_from_range: bool,
}

/// One owner socket in a verbose snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OwnerRow {
    pub local: String,
    pub state: String,
    pub reuseaddr: bool,
    pub reuseport: bool,
}

/// One per-address bucket (bhash2) in a verbose snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AddrRow {
    pub address: String,
    /// Per-address state (6.18+ keeps its own); `None` where the kernel has none.
    pub fastreuse: Option<i8>,
    pub fastreuseport: Option<i8>,
    pub owners: Vec<OwnerRow>,
}

/// One bucket in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BucketRow {
    pub key: BucketKey,
    pub info: BucketInfo,
    /// Verbose only.
    pub addresses: Vec<AddrRow>,
}

/// A racy (lock-free) copy of the bind hash table, like the article's drgn script makes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    pub buckets: Vec<BucketRow>,
    /// The walk hit a bound somewhere: some chain or owner list was cut short.
    pub truncated: bool,
    /// Slots of the bind hash table walked.
    pub slots: u32,
}
