//! Transitions of bind buckets: what changed, by which operation, caused by whom.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{
    bucket::BucketInfo, errno::Errno, AddrState, BucketKey, Explanation, Fastreuse, PortRange,
};

/// The syscall or kernel action behind a transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    /// No event was seen: a rescan of the table found the bucket in another state than
    /// the one known (see [`crate::reducer::Reducer::reconcile`]).
    Rescan,
}

impl Op {
    /// The stable machine name (the JSON value).
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Bind => "bind",
            Op::Listen => "listen",
            Op::Connect => "connect",
            Op::Accept => "accept",
            Op::Close => "close",
            Op::Release => "release",
            Op::Timewait => "timewait",
            Op::Rescan => "rescan",
        }
    }
}

/// What changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    /// The bucket could not be looked up after the operation (the walk gave up before
    /// the end of its hash chain; bounded-loop walk driver): its state is not known.
    LookupTruncated,
}

impl TransitionKind {
    /// The stable machine name (the JSON value).
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
            TransitionKind::LookupTruncated => "lookup_truncated",
        }
    }

    /// A failed bind()/listen() or connect().
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            TransitionKind::BindFailed | TransitionKind::ConnectFailed
        )
    }
}

/// Who caused an event.
///
/// In JSON, the keys `pid` and `comm` of the enclosing object: `0` and `""` for
/// [`Task::Kernel`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "TaskFields", into = "TaskFields")]
pub enum Task {
    /// No task: the kernel acted on its own (timer or softirq, e.g. TIME-WAIT expiry or
    /// namespace teardown), or a rescan found the change.
    Kernel,
    /// A process: its id (the thread group id) and its name.
    Process { pid: u32, comm: String },
}

impl Task {
    /// The process id, `None` for [`Task::Kernel`].
    pub fn pid(&self) -> Option<u32> {
        match self {
            Task::Kernel => None,
            Task::Process { pid, .. } => Some(*pid),
        }
    }

    /// The process name, `None` for [`Task::Kernel`].
    pub fn comm(&self) -> Option<&str> {
        match self {
            Task::Kernel => None,
            Task::Process { comm, .. } => Some(comm),
        }
    }
}

/// The JSON shape of [`Task`].
#[derive(Serialize, Deserialize)]
struct TaskFields {
    pid: u32,
    comm: String,
}

impl From<TaskFields> for Task {
    fn from(f: TaskFields) -> Task {
        if f.pid == 0 && f.comm.is_empty() {
            Task::Kernel
        } else {
            Task::Process {
                pid: f.pid,
                comm: f.comm,
            }
        }
    }
}

impl From<Task> for TaskFields {
    fn from(t: Task) -> TaskFields {
        match t {
            Task::Kernel => TaskFields {
                pid: 0,
                comm: String::new(),
            },
            Task::Process { pid, comm } => TaskFields { pid, comm },
        }
    }
}

/// Socket options relevant to port sharing, as set on the socket of the event, and how
/// the socket got its port where the kernel records it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SockOpts {
    pub reuseaddr: bool,
    pub reuseport: bool,
    pub bind_address_no_port: bool,
    /// connect() chose the port (`SOCK_CONNECT_BIND`), not bind(); `None` on kernels
    /// that do not record it (before 6.18).
    #[serde(default)]
    pub connect_bound: Option<bool>,
    /// The socket's own ephemeral range (IP_LOCAL_PORT_RANGE, 6.3+ and 6.1.31+); `None`
    /// when it set none.
    #[serde(default)]
    pub local_port_range: Option<PortRange>,
}

/// One transition of one bucket, derived by the reducer from an event (or from a rescan).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// Kernel monotonic time (`bpf_ktime_get_ns`) of the event, in ns.
    pub ts_ns: u64,
    pub kind: TransitionKind,
    pub op: Op,
    pub key: BucketKey,
    /// The state the reducer knew before; `None` when it knew no bucket.
    pub before: Option<BucketInfo>,
    /// State after the operation; `None` when the bucket no longer exists (or never did,
    /// for a failure on a port without a bucket).
    pub after: Option<BucketInfo>,
    /// Set for the failures (`BindFailed`, `ConnectFailed`), and for `LookupTruncated`
    /// after a failed operation.
    #[serde(with = "super::errno::errno_or_zero")]
    pub errno: Option<Errno>,
    #[serde(flatten)]
    pub task: Task,
    /// The socket's local address and port after the operation.
    pub local: Option<SocketAddr>,
    /// The socket's remote address, for connected sockets.
    pub remote: Option<SocketAddr>,
    pub opts: SockOpts,
    /// The port was not asked for but is the only port of the ephemeral range.
    pub port_from_range: bool,
    /// For `BindFailed`/`ConnectFailed`: why, when it was explained.
    #[serde(default)]
    pub explanation: Option<Explanation>,
    /// The state of the socket's per-address bucket after the operation, on kernels
    /// where it keeps its own (6.18+).
    #[serde(default)]
    pub addr: Option<AddrState>,
}

impl Transition {
    /// For `FastreuseChanged`/`FastreuseportChanged`: the field's value before and after.
    pub fn change(&self) -> Option<(Fastreuse, Fastreuse)> {
        let field: fn(&BucketInfo) -> Fastreuse = match self.kind {
            TransitionKind::FastreuseChanged => |i: &BucketInfo| i.fastreuse,
            TransitionKind::FastreuseportChanged => |i: &BucketInfo| i.fastreuseport,
            _ => return None,
        };
        Some((field(self.before.as_ref()?), field(self.after.as_ref()?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::OwnerCount;

    fn info(fr: i8) -> BucketInfo {
        BucketInfo {
            fastreuse: Fastreuse(fr),
            fastreuseport: Fastreuse(-1),
            owners: OwnerCount::exact(1),
        }
    }

    fn sample(task: Task) -> Transition {
        Transition {
            ts_ns: 7,
            kind: TransitionKind::FastreuseChanged,
            op: Op::Bind,
            key: BucketKey {
                netns: 1,
                l3mdev: 0,
                port: 80,
            },
            before: Some(info(-1)),
            after: Some(info(0)),
            errno: None,
            task,
            local: Some("[::1]:80".parse().expect("literal")),
            remote: None,
            opts: SockOpts::default(),
            port_from_range: false,
            explanation: None,
            addr: None,
        }
    }

    #[test]
    fn change_comes_from_before_and_after() {
        let t = sample(Task::Kernel);
        assert_eq!(t.change(), Some((Fastreuse(-1), Fastreuse(0))));
        let t = Transition {
            kind: TransitionKind::OwnerAdded,
            ..t
        };
        assert_eq!(t.change(), None);
    }

    #[test]
    fn json_keeps_pid_comm_errno_and_addresses_flat_and_round_trips() {
        let t = sample(Task::Process {
            pid: 42,
            comm: "nc".into(),
        });
        let v = serde_json::to_value(&t).expect("json");
        assert_eq!(v["pid"], 42);
        assert_eq!(v["comm"], "nc");
        assert_eq!(v["errno"], 0);
        assert_eq!(v["local"], "[::1]:80");
        assert_eq!(v["after"]["fastreuse"], 0);
        assert_eq!(v["kind"], "fastreuse_changed");
        assert_eq!(serde_json::from_value::<Transition>(v).expect("back"), t);
        let k = sample(Task::Kernel);
        let v = serde_json::to_value(&k).expect("json");
        assert_eq!((v["pid"].as_u64(), v["comm"].as_str()), (Some(0), Some("")));
        assert_eq!(serde_json::from_value::<Transition>(v).expect("back"), k);
    }
}
