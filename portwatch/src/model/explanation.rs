//! Why a bind() fails with `EADDRINUSE` or a connect() with `EADDRNOTAVAIL`: the one
//! explanation `explain bind`/`explain connect` print and every failed bind/connect of
//! `trace` and `top` carries. Built by [`crate::explain::query`] from a snapshot read from
//! the kernel and the rules engine; rendered by [`crate::render::explain`].

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::{BucketInfo, Family, Fastreuse, Holder, TcpState};
use crate::explain::{
    bind::{self, Fix, Overlap, Rule, Via},
    connect,
};

/// An explanation of a bind() or of a connect().
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum Explanation {
    Bind(BindExplanation),
    Connect(ConnectExplanation),
}

impl Explanation {
    /// `ok`, `EADDRINUSE`, `EADDRNOTAVAIL`...
    pub fn verdict_name(&self) -> &'static str {
        match self {
            Explanation::Bind(b) => b.verdict.name(),
            Explanation::Connect(c) => c.verdict.name(),
        }
    }
}

/// The rule a conflicting owner trips, in one word (the JSON `rule`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictRule {
    /// The same address, and the two sockets do not both allow sharing.
    SameAddress,
    /// One side is the wildcard (`0.0.0.0`, `::`) of the other's family.
    WildcardOverlap,
    /// Across IPv4 and IPv6: `[::]` without `IPV6_V6ONLY`, or a v4-mapped address.
    DualStackOverlap,
    /// Both set `SO_REUSEADDR`, but the owner is listening.
    ReuseaddrOwnerListening,
    /// Both set `SO_REUSEPORT`, but they belong to different users.
    ReuseportOtherUid,
}

impl ConflictRule {
    /// The rule of a conflict found by the engine: a refused sharing option when both
    /// sockets set it, otherwise how the addresses overlap.
    pub fn of(overlap: Overlap, rule: &Rule) -> ConflictRule {
        match rule {
            Rule::ReuseaddrOwnerListening => ConflictRule::ReuseaddrOwnerListening,
            Rule::ReuseportOtherUid { .. } => ConflictRule::ReuseportOtherUid,
            Rule::NotShared { .. } => match overlap {
                Overlap::SameAddress => ConflictRule::SameAddress,
                Overlap::WildcardOverlap => ConflictRule::WildcardOverlap,
                Overlap::DualStackOverlap => ConflictRule::DualStackOverlap,
            },
        }
    }

    /// The JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictRule::SameAddress => "same_address",
            ConflictRule::WildcardOverlap => "wildcard_overlap",
            ConflictRule::DualStackOverlap => "dual_stack_overlap",
            ConflictRule::ReuseaddrOwnerListening => "reuseaddr_owner_listening",
            ConflictRule::ReuseportOtherUid => "reuseport_other_uid",
        }
    }
}

/// An owner socket as an explanation names it: its address, state and options, and
/// the processes holding it (none for TIME-WAIT sockets: `pid`/`comm` are null).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedOwner {
    /// The owner's address and port (v4-mapped addresses shown as IPv4: see `family`).
    pub local: SocketAddr,
    pub family: Family,
    pub state: TcpState,
    pub reuseaddr: bool,
    pub reuseport: bool,
    pub v6only: bool,
    /// `None` for TIME-WAIT sockets (the kernel keeps no uid for them).
    pub uid: Option<u32>,
    pub inode: Option<u64>,
    pub remote: Option<SocketAddr>,
    /// The first process holding it (`None` for TIME-WAIT and for sockets no process
    /// holds); `holders` lists them all.
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub holders: Vec<Holder>,
}

impl NamedOwner {
    /// A TIME-WAIT socket: no process holds it, it goes away by itself.
    pub fn time_wait(&self) -> bool {
        self.state == TcpState::TimeWait
    }
}

/// One owner a bind() conflicts with, and the rule it trips.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    #[serde(flatten)]
    pub owner: NamedOwner,
    pub rule: ConflictRule,
    pub overlap: Overlap,
    /// Why sharing is refused, with the options and uids compared.
    pub sharing: Rule,
    /// Where the kernel found the owner (the owner walk, or a per-address bucket).
    pub via: Via,
}

/// The socket a bind() explanation is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub local: SocketAddr,
    pub family: Family,
    pub reuseaddr: bool,
    pub reuseport: bool,
    pub v6only: bool,
    /// The uid `SO_REUSEPORT` compares; `None` when not known.
    pub uid: Option<u32>,
}

/// What a bind() of `candidate` does against the port's owners.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindExplanation {
    pub verdict: bind::Verdict,
    pub port: u16,
    /// The network namespace (inode).
    pub netns: u32,
    pub candidate: Candidate,
    /// Which part of `inet_csk_get_port()` decided.
    pub path: bind::Path,
    /// Every owner the bind conflicts with (empty for `ok`).
    pub conflicts: Vec<Conflict>,
    /// Conflicts the bucket's fast path lets the bind skip (`ok` by the fast path).
    pub bypassed: Vec<Conflict>,
    /// Changes that make the bind succeed, checked by the rules; smallest first.
    pub fixes: Vec<Fix>,
    /// For `EINVAL`: why the address cannot be bound at all.
    pub invalid: Option<String>,
    /// Owners of the port (all of them, conflicting or not).
    pub owners: usize,
    /// The owner walk was cut short: owners past the bound were not compared.
    pub truncated: bool,
    /// For a failure explained after the fact (`trace`, `top`): the bucket as the failed
    /// call left it and as it was read for the explanation, when they differ (the owners
    /// in the way may have left before they could be read).
    pub drift: Option<Drift>,
}

/// A bucket that changed between a failure and its explanation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    /// `None`: no bucket.
    pub at_failure: Option<BucketInfo>,
    pub when_read: Option<BucketInfo>,
}

/// A port of the range and who keeps connect() from using it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortHolder {
    pub port: u16,
    pub fastreuse: Fastreuse,
    pub fastreuseport: Fastreuse,
    #[serde(flatten)]
    pub owner: NamedOwner,
    /// Closing every such holder of the port makes it usable for this connect().
    pub freed_by_closing: bool,
}

/// A process and how many of the range's ports it blocks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessPorts {
    pub pid: u32,
    pub comm: String,
    pub ports: usize,
}

/// What a connect() that leaves the local port to the kernel finds in the range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectExplanation {
    pub verdict: connect::Verdict,
    /// The network namespace (inode).
    pub netns: u32,
    /// The source address (`--from`, or routing's choice) and the destination.
    pub source: IpAddr,
    pub destination: SocketAddr,
    /// `ip_local_port_range`.
    pub range: (u16, u16),
    /// Ports of the range in `ip_local_reserved_ports`.
    pub reserved: usize,
    /// Ports without a bucket.
    pub free: usize,
    /// Ports shared by connect() (-1/-1) whose owners use other 4-tuples.
    pub shared_usable: usize,
    /// Ports shared by connect() already used from `source` to `destination`.
    pub used_to_destination: usize,
    /// Of those, ports whose only such owner is a TIME-WAIT socket `tcp_tw_reuse` lets
    /// connect() take over.
    pub time_wait_reusable: usize,
    /// Ports whose bucket bind() put out of connect()'s reach (fastreuse or fastreuseport
    /// not -1).
    pub blocked: usize,
    /// Usable ports that only some attempts reach (an odd-sized range).
    pub usable_sometimes_skipped: usize,
    /// `net.ipv4.tcp_tw_reuse` of the namespace.
    pub tw_reuse: u8,
    /// The first holders of blocked ports, in port order (at most [`HOLDERS_SHOWN`]).
    pub blocked_by: Vec<PortHolder>,
    /// The processes holding the most blocked ports, most first (at most
    /// [`HOLDERS_SHOWN`]).
    pub blocked_by_process: Vec<ProcessPorts>,
    /// The first owners already connected from `source` to `destination`.
    pub used_by: Vec<PortHolder>,
    /// The walk was cut short: counts may be off.
    pub truncated: bool,
}

/// How many holders an explanation lists.
pub const HOLDERS_SHOWN: usize = 10;

impl bind::Verdict {
    /// `ok`, `EADDRINUSE`, `EINVAL`.
    pub fn name(self) -> &'static str {
        match self {
            bind::Verdict::Ok => "ok",
            bind::Verdict::Eaddrinuse => "EADDRINUSE",
            bind::Verdict::Einval => "EINVAL",
        }
    }
}

impl connect::Verdict {
    /// `ok`, `EADDRNOTAVAIL`, `ok_or_EADDRNOTAVAIL`.
    pub fn name(self) -> &'static str {
        match self {
            connect::Verdict::Ok => "ok",
            connect::Verdict::Eaddrnotavail => "EADDRNOTAVAIL",
            connect::Verdict::Depends => "ok_or_EADDRNOTAVAIL",
        }
    }
}
