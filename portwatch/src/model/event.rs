//! One kernel event, typed: the reducer's input.

use std::net::SocketAddr;

use super::{AddrState, BucketInfo, Errno, Explanation, Family, Op, SockOpts, Task};

/// The bucket an event found after its operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeenBucket {
    /// Kernel address of the bucket: an identity only (a bucket freed and allocated again
    /// has another), 0 when not known.
    pub id: u64,
    pub l3mdev: i32,
    pub info: BucketInfo,
}

/// After operation `op` on a TCP socket, the bucket of (`netns`, `port`) is `bucket`
/// (`None`: there is no bucket). Produced from the raw ring-buffer record by
/// [`crate::decode::socket_event`], whichever backend sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketEvent {
    /// Kernel monotonic time (`bpf_ktime_get_ns`), in ns.
    pub ts_ns: u64,
    pub op: Op,
    pub netns: u32,
    /// The port the socket holds, held or asked for; 0 when none could be attributed.
    pub port: u16,
    pub bucket: Option<SeenBucket>,
    /// The syscall failed.
    pub errno: Option<Errno>,
    /// The socket had a local port before the operation.
    pub had_port: bool,
    pub task: Task,
    /// The socket's local address; `None` when unknown or when the socket holds no port
    /// (a failed bind/connect of a socket that had none).
    pub local: Option<SocketAddr>,
    /// The socket's remote address, for connected sockets.
    pub remote: Option<SocketAddr>,
    pub opts: SockOpts,
    /// The port was not asked for but is the only port of the ephemeral range.
    pub port_from_range: bool,
    /// Kernel address of the socket's `struct net`: an identity only, to read the
    /// namespace's buckets again (0 when not known).
    pub net: u64,
    /// The socket's family, `IPV6_V6ONLY`, `sk_uid` and bound device, when it could be
    /// read (what the rules compare for a failed bind).
    pub family: Option<Family>,
    pub v6only: bool,
    pub uid: Option<u32>,
    pub bound_dev: i32,
    /// Why a failed bind/connect failed, when it was explained (see
    /// [`crate::explain::live`]); the reducer passes it on to the failure's transition.
    pub explanation: Option<Explanation>,
    /// The bucket lookup gave up before the end of its hash chain: `bucket` is `None`
    /// because its state is not known, not because there is none.
    pub lookup_truncated: bool,
    /// The state of the socket's per-address bucket, where it keeps its own (6.18+).
    pub addr: Option<AddrState>,
}
