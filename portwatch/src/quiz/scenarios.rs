//! The article's quizzes and state-machine checks, as data.
//!
//! Source: the article "The quantum state of a TCP port" (Cloudflare blog, 2023).
//! Every quiz runs with exactly one ephemeral port (60000) and a listener on *:1234.

use std::{
    fmt,
    net::{Ipv4Addr, SocketAddrV4},
};

use serde::{Deserialize, Serialize, Serializer};

use super::expect::{Call, Expected, Outcome};
use crate::model::{Errno, Fastreuse};

/// The single ephemeral port of the quizzes.
pub const QUIZ_PORT: u16 = 60000;
/// The port of the listener every connect() goes to.
pub const LISTEN_PORT: u16 = 1234;
/// States mode: the port under test of check number `i` is `STATES_BASE_PORT + i`.
pub const STATES_BASE_PORT: u16 = 60100;

/// One of the two client sockets of a quiz.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sock {
    S1,
    S2,
}

impl Sock {
    pub const ALL: [Sock; 2] = [Sock::S1, Sock::S2];

    pub fn name(self) -> &'static str {
        match self {
            Sock::S1 => "s1",
            Sock::S2 => "s2",
        }
    }

    pub fn index(self) -> usize {
        match self {
            Sock::S1 => 0,
            Sock::S2 => 1,
        }
    }
}

/// A port in a scenario address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    /// Port 0: let the kernel pick.
    Any,
    /// A fixed port.
    Num(u16),
    /// The (single-port) ephemeral range of the check: states mode runs each check on its
    /// own port.
    UnderTest,
}

/// An IPv4 address with a scenario port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addr {
    pub ip: Ipv4Addr,
    pub port: Port,
}

impl Addr {
    pub const fn new(ip: [u8; 4], port: Port) -> Addr {
        Addr {
            ip: Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]),
            port,
        }
    }

    /// The concrete address, `under_test` standing for [`Port::UnderTest`].
    pub fn resolve(&self, under_test: u16) -> SocketAddrV4 {
        let port = match self.port {
            Port::Any => 0,
            Port::Num(p) => p,
            Port::UnderTest => under_test,
        };
        SocketAddrV4::new(self.ip, port)
    }
}

impl Addr {
    /// The port as text: the number, or `PORT` for the port under test when unknown.
    fn port_text(&self, under_test: Option<u16>) -> String {
        match (self.port, under_test) {
            (Port::Any, _) => "0".to_owned(),
            (Port::Num(p), _) | (Port::UnderTest, Some(p)) => p.to_string(),
            (Port::UnderTest, None) => "PORT".to_owned(),
        }
    }

    /// `ip:port`, with `under_test` standing for [`Port::UnderTest`] when given.
    pub fn text(&self, under_test: Option<u16>) -> String {
        format!("{}:{}", self.ip, self.port_text(under_test))
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text(None))
    }
}

impl Serialize for Addr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What a step does to its socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "op", content = "addr", rename_all = "snake_case")]
pub enum Action {
    /// `socket(AF_INET, SOCK_STREAM)`
    Socket,
    /// `setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)`
    ReuseAddr,
    /// `setsockopt(SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)` (option 24)
    BindAddressNoPort,
    Bind(Addr),
    Connect(Addr),
    /// `close()`: the socket releases its port.
    Close,
}

impl Action {
    /// The syscall behind the action.
    pub fn call(self) -> Call {
        match self {
            Action::Socket => Call::Socket,
            Action::ReuseAddr | Action::BindAddressNoPort => Call::Setsockopt,
            Action::Bind(_) => Call::Bind,
            Action::Connect(_) => Call::Connect,
            Action::Close => Call::Close,
        }
    }
}

/// One step of a scenario: an action on one of the client sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SocketStep {
    pub sock: Sock,
    pub action: Action,
}

const fn step(sock: Sock, action: Action) -> SocketStep {
    SocketStep { sock, action }
}

impl SocketStep {
    /// The step as the article writes it (Python).
    pub fn code(&self) -> String {
        self.code_at(None)
    }

    /// As [`SocketStep::code`], with the port under test filled in when given.
    pub fn code_at(&self, under_test: Option<u16>) -> String {
        let s = self.sock.name();
        let py = |a: &Addr| format!("(('{}', {}))", a.ip, a.port_text(under_test));
        match &self.action {
            Action::Socket => format!("{s} = socket(AF_INET, SOCK_STREAM)"),
            Action::ReuseAddr => format!("{s}.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)"),
            Action::BindAddressNoPort => {
                format!("{s}.setsockopt(SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)")
            }
            Action::Bind(a) => format!("{s}.bind{}", py(a)),
            Action::Connect(a) => format!("{s}.connect{}", py(a)),
            Action::Close => format!("{s}.close()"),
        }
    }

    /// A short label for the bucket timeline: "s1 bind", "s2 connect".
    pub fn label(&self) -> String {
        let what = match self.action {
            Action::Socket => "socket",
            Action::ReuseAddr => "SO_REUSEADDR",
            Action::BindAddressNoPort => "IP_BIND_ADDRESS_NO_PORT",
            Action::Bind(_) => "bind",
            Action::Connect(_) => "connect",
            Action::Close => "close",
        };
        format!("{} {what}", self.sock.name())
    }

    /// The article's shorthand for the step, `None` for `socket()`.
    fn notation(&self, under_test: Option<u16>) -> Option<String> {
        match &self.action {
            Action::Socket => None,
            Action::ReuseAddr => Some("SO_REUSEADDR".into()),
            Action::BindAddressNoPort => Some("IP_BIND_ADDRESS_NO_PORT".into()),
            Action::Bind(a) => Some(format!("bind {}", a.text(under_test))),
            Action::Connect(a) => Some(format!("connect {}", a.text(under_test))),
            Action::Close => Some("close".into()),
        }
    }
}

/// Shorthand of one socket's steps: `s1: bind 127.1.1.1:0, connect 127.9.9.9:1234`
/// (`PORT` for the port under test unless `under_test` is given).
pub fn notation(steps: &[SocketStep], sock: Sock, under_test: Option<u16>) -> String {
    let parts: Vec<String> = steps
        .iter()
        .filter(|s| s.sock == sock)
        .filter_map(|s| s.notation(under_test))
        .collect();
    format!("{}: {}", sock.name(), parts.join(", "))
}

/// A quiz of the article, or the article's fix of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuizKind {
    Quiz,
    Fix,
}

#[derive(Clone, Copy, Debug)]
pub struct Quiz {
    pub id: &'static str,
    pub kind: QuizKind,
    pub title: &'static str,
    pub steps: &'static [SocketStep],
    /// Article's outcome for s1 and s2.
    pub expected: [Expected; 2],
}

impl Quiz {
    pub fn notation(&self) -> Vec<String> {
        Sock::ALL
            .iter()
            .map(|s| notation(self.steps, *s, None))
            .collect()
    }

    pub fn code(&self) -> Vec<String> {
        self.steps.iter().map(SocketStep::code).collect()
    }
}

// Addresses of the article.
const fn ip(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}
const LOCALHOST: Ipv4Addr = ip(127, 0, 0, 1);
const L1: Ipv4Addr = ip(127, 1, 1, 1);
const L2: Ipv4Addr = ip(127, 2, 2, 2);
const R8: Addr = Addr::new([127, 8, 8, 8], Port::Num(LISTEN_PORT));
const R9: Addr = Addr::new([127, 9, 9, 9], Port::Num(LISTEN_PORT));
const R8_SA: SocketAddrV4 = SocketAddrV4::new(ip(127, 8, 8, 8), LISTEN_PORT);
const R9_SA: SocketAddrV4 = SocketAddrV4::new(ip(127, 9, 9, 9), LISTEN_PORT);

const fn any_port(ip: Ipv4Addr) -> Addr {
    Addr {
        ip,
        port: Port::Any,
    }
}
const fn quiz_port(ip: Ipv4Addr) -> Addr {
    Addr {
        ip,
        port: Port::Num(QUIZ_PORT),
    }
}
const fn under_test(ip: Ipv4Addr) -> Addr {
    Addr {
        ip,
        port: Port::UnderTest,
    }
}
const fn connected(local_ip: Ipv4Addr, peer: SocketAddrV4) -> Outcome {
    Outcome::Connected {
        local: SocketAddrV4::new(local_ip, QUIZ_PORT),
        peer,
    }
}
const fn ok(local_ip: Ipv4Addr, peer: SocketAddrV4, why: &'static str) -> Expected {
    Expected {
        outcome: connected(local_ip, peer),
        why,
    }
}
const fn fails(call: Call, errno: Errno, why: &'static str) -> Expected {
    Expected {
        outcome: Outcome::Failed { call, errno },
        why,
    }
}

use Action::{Bind, BindAddressNoPort, Close, Connect, ReuseAddr, Socket};
use Sock::{S1, S2};

const EADDRINUSE: Errno = Errno::EADDRINUSE;
const EADDRNOTAVAIL: Errno = Errno::EADDRNOTAVAIL;

/// The eight quizzes and three fixes, in the article's order.
pub static QUIZZES: &[Quiz] = &[
    Quiz {
        id: "1",
        kind: QuizKind::Quiz,
        title: "Two sockets bound to different local IPs, same remote",
        steps: &[
            step(S1, Socket),
            step(S1, Bind(any_port(L1))),
            step(S1, Connect(R9)),
            step(S2, Socket),
            step(S2, Bind(any_port(L2))),
            step(S2, Connect(R9)),
        ],
        expected: [
            ok(L1, R9_SA, "bind() takes the only ephemeral port, 60000, and creates its bucket in state 0"),
            ok(L2, R9_SA, "bind() may share port 60000: local IP 127.2.2.2 differs from s1's, so there is no conflict"),
        ],
    },
    Quiz {
        id: "2",
        kind: QuizKind::Quiz,
        title: "First socket lets the OS pick, second binds a different local IP",
        steps: &[
            step(S1, Socket),
            step(S1, Connect(R9)),
            step(S2, Socket),
            step(S2, Bind(any_port(L2))),
            step(S2, Connect(R9)),
        ],
        expected: [
            ok(LOCALHOST, R9_SA, "connect() picks 127.0.0.1 and port 60000, creating the bucket in state -1"),
            ok(L2, R9_SA, "bind() with a unique local IP does not conflict with s1, whatever the bucket state"),
        ],
    },
    Quiz {
        id: "3",
        kind: QuizKind::Quiz,
        title: "Quiz 2 in reverse order: bind first, then let the OS pick",
        steps: &[
            step(S1, Socket),
            step(S1, Bind(any_port(L1))),
            step(S1, Connect(R9)),
            step(S2, Socket),
            step(S2, Connect(R9)),
        ],
        expected: [
            ok(L1, R9_SA, "bind() takes port 60000 early and creates its bucket in state 0"),
            fails(Call::Connect, EADDRNOTAVAIL, "connect() skips buckets not in state -1: bucket 60000 is 0 and the range has no other port"),
        ],
    },
    Quiz {
        id: "3fix",
        kind: QuizKind::Fix,
        title: "Fix for quiz 3: IP_BIND_ADDRESS_NO_PORT on the bound socket",
        steps: &[
            step(S1, Socket),
            step(S1, BindAddressNoPort),
            step(S1, Bind(any_port(L1))),
            step(S1, Connect(R9)),
            step(S2, Socket),
            step(S2, Connect(R9)),
        ],
        expected: [
            ok(L1, R9_SA, "IP_BIND_ADDRESS_NO_PORT defers the port to connect(), which creates bucket 60000 in state -1"),
            ok(LOCALHOST, R9_SA, "connect() reuses a bucket in state -1 when the local IP (hence the 4-tuple) is unique"),
        ],
    },
    Quiz {
        id: "4",
        kind: QuizKind::Quiz,
        title: "Same local address, two different remotes, plain connect()",
        steps: &[
            step(S1, Socket),
            step(S1, Connect(R8)),
            step(S2, Socket),
            step(S2, Connect(R9)),
        ],
        expected: [
            ok(LOCALHOST, R8_SA, "connect() picks 127.0.0.1:60000 and creates the bucket in state -1"),
            ok(LOCALHOST, R9_SA, "connect() reuses a bucket in state -1: the remote differs, so the 4-tuple is unique"),
        ],
    },
    Quiz {
        id: "5",
        kind: QuizKind::Quiz,
        title: "Bind the same local IP with port 0, then connect to different remotes",
        steps: &[
            step(S1, Socket),
            step(S1, Bind(any_port(LOCALHOST))),
            step(S1, Connect(R8)),
            step(S2, Socket),
            step(S2, Bind(any_port(LOCALHOST))),
            step(S2, Connect(R9)),
        ],
        expected: [
            ok(LOCALHOST, R8_SA, "bind() takes port 60000 for 127.0.0.1; the bucket is in state 0"),
            fails(Call::Bind, EADDRINUSE, "bind() conflicts: same local IP and port as s1, no SO_REUSEADDR (bind cannot know the remote will differ)"),
        ],
    },
    Quiz {
        id: "5fix",
        kind: QuizKind::Fix,
        title: "Fix for quiz 5: IP_BIND_ADDRESS_NO_PORT on both sockets",
        steps: &[
            step(S1, Socket),
            step(S1, BindAddressNoPort),
            step(S1, Bind(any_port(LOCALHOST))),
            step(S1, Connect(R8)),
            step(S2, Socket),
            step(S2, BindAddressNoPort),
            step(S2, Bind(any_port(LOCALHOST))),
            step(S2, Connect(R9)),
        ],
        expected: [
            ok(LOCALHOST, R8_SA, "bind() only records the IP; connect() picks port 60000 and creates the bucket in state -1"),
            ok(LOCALHOST, R9_SA, "connect() reuses the -1 bucket: the remote differs, so the 4-tuple is unique"),
        ],
    },
    Quiz {
        id: "6",
        kind: QuizKind::Quiz,
        title: "Bind the same explicit local address 127.0.0.1:60000 twice",
        steps: &[
            step(S1, Socket),
            step(S1, Bind(quiz_port(LOCALHOST))),
            step(S1, Connect(R8)),
            step(S2, Socket),
            step(S2, Bind(quiz_port(LOCALHOST))),
            step(S2, Connect(R9)),
        ],
        expected: [
            ok(LOCALHOST, R8_SA, "bind() to 127.0.0.1:60000 creates the bucket in state 0"),
            fails(Call::Bind, EADDRINUSE, "bind() conflicts: same local IP and port as s1, no SO_REUSEADDR"),
        ],
    },
    Quiz {
        id: "6fix",
        kind: QuizKind::Fix,
        title: "Fix for quiz 6: SO_REUSEADDR on both sockets",
        steps: &[
            step(S1, Socket),
            step(S1, ReuseAddr),
            step(S1, Bind(quiz_port(LOCALHOST))),
            step(S1, Connect(R8)),
            step(S2, Socket),
            step(S2, ReuseAddr),
            step(S2, Bind(quiz_port(LOCALHOST))),
            step(S2, Connect(R9)),
        ],
        expected: [
            ok(LOCALHOST, R8_SA, "bind() with SO_REUSEADDR; the article's bucket is in state +1"),
            ok(LOCALHOST, R9_SA, "SO_REUSEADDR shares a local address when every conflicting socket has it and none listens"),
        ],
    },
    Quiz {
        id: "7",
        kind: QuizKind::Quiz,
        title: "SO_REUSEADDR: connect() first, then bind() the same local address",
        steps: &[
            step(S1, Socket),
            step(S1, ReuseAddr),
            step(S1, Connect(R8)),
            step(S2, Socket),
            step(S2, ReuseAddr),
            step(S2, Bind(quiz_port(LOCALHOST))),
            step(S2, Connect(R9)),
        ],
        expected: [
            ok(LOCALHOST, R8_SA, "connect() picks 127.0.0.1:60000 and creates the bucket in state -1"),
            ok(LOCALHOST, R9_SA, "bind() with SO_REUSEADDR succeeds because s1 has it too and is not listening; the bucket stays -1"),
        ],
    },
    Quiz {
        id: "8",
        kind: QuizKind::Quiz,
        title: "Quiz 7 in reverse order: bind() first, then connect()",
        steps: &[
            step(S1, Socket),
            step(S1, ReuseAddr),
            step(S1, Bind(quiz_port(LOCALHOST))),
            step(S1, Connect(R9)),
            step(S2, Socket),
            step(S2, ReuseAddr),
            step(S2, Connect(R8)),
        ],
        expected: [
            ok(LOCALHOST, R9_SA, "bind() with SO_REUSEADDR creates the bucket in a bound state (+1 in the article), not -1"),
            fails(Call::Connect, EADDRNOTAVAIL, "connect() skips buckets not in state -1, and SO_REUSEADDR does not help connect(): no fix exists"),
        ],
    },
];

/// Valid quiz ids, in order.
pub fn quiz_ids() -> Vec<&'static str> {
    QUIZZES.iter().map(|q| q.id).collect()
}

/// One step of a state-machine check with the article's fastreuse after it.
#[derive(Clone, Copy, Debug)]
pub struct StateStep {
    pub step: SocketStep,
    /// Article's fastreuse of the port under test after this step; `None`: not checked
    /// (socket(), setsockopt()).
    pub expect: Option<Fastreuse>,
    pub why: &'static str,
}

const fn st(sock: Sock, action: Action) -> StateStep {
    StateStep {
        step: step(sock, action),
        expect: None,
        why: "",
    }
}
const fn chk(sock: Sock, action: Action, expect: i8, why: &'static str) -> StateStep {
    StateStep {
        step: step(sock, action),
        expect: Some(Fastreuse(expect)),
        why,
    }
}

/// A transition check of the article's state machine. Runs in a fresh netns whose port
/// range is the single port under test.
#[derive(Clone, Copy, Debug)]
pub struct StateCheck {
    pub id: &'static str,
    /// The state s1 puts the bucket in.
    pub from: Fastreuse,
    pub title: &'static str,
    pub steps: &'static [StateStep],
}

const WHY_CONNECT_CREATES: &str = "connect() creates the bucket in state -1";
const WHY_BIND_CREATES: &str = "bind() without SO_REUSEADDR creates the bucket in state 0";
const WHY_REUSE_CREATES: &str = "bind() with SO_REUSEADDR creates the bucket in state +1";

/// The article's transition checks ("The state machine").
pub static STATE_CHECKS: &[StateCheck] = &[
    StateCheck {
        id: "-1/connect",
        from: Fastreuse(-1),
        title: "from -1: connect() to another remote",
        steps: &[
            st(S1, Socket),
            chk(S1, Connect(R8), -1, WHY_CONNECT_CREATES),
            st(S2, Socket),
            chk(
                S2,
                Connect(R9),
                -1,
                "a connect() that shares a -1 bucket keeps it at -1",
            ),
        ],
    },
    StateCheck {
        id: "-1/no-port-bind",
        from: Fastreuse(-1),
        title: "from -1: IP_BIND_ADDRESS_NO_PORT bind of another IP, then connect()",
        steps: &[
            st(S1, Socket),
            chk(S1, Connect(R8), -1, WHY_CONNECT_CREATES),
            st(S2, Socket),
            st(S2, BindAddressNoPort),
            chk(
                S2,
                Bind(any_port(L2)),
                -1,
                "with IP_BIND_ADDRESS_NO_PORT, bind() takes no port: the bucket is untouched",
            ),
            chk(
                S2,
                Connect(R9),
                -1,
                "the port is taken at connect(), which keeps the bucket at -1",
            ),
        ],
    },
    StateCheck {
        id: "-1/bind",
        from: Fastreuse(-1),
        title: "from -1: plain bind() of another IP on the port",
        steps: &[
            st(S1, Socket),
            chk(S1, Connect(R8), -1, WHY_CONNECT_CREATES),
            st(S2, Socket),
            chk(
                S2,
                Bind(under_test(L2)),
                0,
                "a non-conflicting bind() without SO_REUSEADDR moves the bucket to 0",
            ),
        ],
    },
    StateCheck {
        id: "-1/bind-release",
        from: Fastreuse(-1),
        title: "from -1: plain bind() of another IP on the port, then that socket closes",
        steps: &[
            st(S1, Socket),
            chk(S1, Connect(R8), -1, WHY_CONNECT_CREATES),
            st(S2, Socket),
            chk(
                S2,
                Bind(under_test(L2)),
                0,
                "a non-conflicting bind() without SO_REUSEADDR moves the bucket to 0",
            ),
            chk(
                S2,
                Close,
                0,
                "a bucket keeps its state until it is destroyed; s1 still holds the port",
            ),
        ],
    },
    StateCheck {
        id: "-1/reuseaddr-bind",
        from: Fastreuse(-1),
        title: "from -1: SO_REUSEADDR bind() of another IP on the port",
        steps: &[
            st(S1, Socket),
            chk(S1, Connect(R8), -1, WHY_CONNECT_CREATES),
            st(S2, Socket),
            st(S2, ReuseAddr),
            chk(
                S2,
                Bind(under_test(L2)),
                -1,
                "a bind() with SO_REUSEADDR to an existing bucket keeps its state",
            ),
        ],
    },
    StateCheck {
        id: "0/bind",
        from: Fastreuse(0),
        title: "from 0: plain bind() of another IP on the port",
        steps: &[
            st(S1, Socket),
            chk(S1, Bind(under_test(L1)), 0, WHY_BIND_CREATES),
            st(S2, Socket),
            chk(
                S2,
                Bind(under_test(L2)),
                0,
                "state 0 only ever stays 0 when sockets are added",
            ),
        ],
    },
    StateCheck {
        id: "0/reuseaddr-bind",
        from: Fastreuse(0),
        title: "from 0: SO_REUSEADDR bind() of another IP on the port",
        steps: &[
            st(S1, Socket),
            chk(S1, Bind(under_test(L1)), 0, WHY_BIND_CREATES),
            st(S2, Socket),
            st(S2, ReuseAddr),
            chk(
                S2,
                Bind(under_test(L2)),
                0,
                "state 0 only ever stays 0 when sockets are added",
            ),
        ],
    },
    StateCheck {
        id: "+1/reuseaddr-bind",
        from: Fastreuse(1),
        title: "from +1: SO_REUSEADDR bind() of another IP on the port",
        steps: &[
            st(S1, Socket),
            st(S1, ReuseAddr),
            chk(S1, Bind(under_test(L1)), 1, WHY_REUSE_CREATES),
            st(S2, Socket),
            st(S2, ReuseAddr),
            chk(
                S2,
                Bind(under_test(L2)),
                1,
                "another SO_REUSEADDR bind() keeps +1",
            ),
        ],
    },
    StateCheck {
        id: "+1/bind",
        from: Fastreuse(1),
        title: "from +1: plain bind() of another IP on the port",
        steps: &[
            st(S1, Socket),
            st(S1, ReuseAddr),
            chk(S1, Bind(under_test(L1)), 1, WHY_REUSE_CREATES),
            st(S2, Socket),
            chk(
                S2,
                Bind(under_test(L2)),
                0,
                "a non-conflicting bind() without SO_REUSEADDR moves the bucket to 0",
            ),
        ],
    },
];

impl StateCheck {
    /// The check's Python with the port under test filled in.
    pub fn code_at(&self, port: u16) -> Vec<String> {
        self.steps
            .iter()
            .map(|s| s.step.code_at(Some(port)))
            .collect()
    }

    /// The shorthand per socket with the port under test filled in.
    pub fn notation_at(&self, port: u16) -> Vec<String> {
        let steps: Vec<SocketStep> = self.steps.iter().map(|s| s.step).collect();
        Sock::ALL
            .iter()
            .map(|s| notation(&steps, *s, Some(port)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn quiz(id: &str) -> &'static Quiz {
        QUIZZES.iter().find(|q| q.id == id).unwrap()
    }

    #[test]
    fn ids_are_the_articles() {
        assert_eq!(
            quiz_ids(),
            ["1", "2", "3", "3fix", "4", "5", "5fix", "6", "6fix", "7", "8"]
        );
        assert_eq!(
            QUIZZES.iter().filter(|q| q.kind == QuizKind::Quiz).count(),
            8
        );
        assert_eq!(
            QUIZZES.iter().filter(|q| q.kind == QuizKind::Fix).count(),
            3
        );
        let ids: HashSet<_> = STATE_CHECKS.iter().map(|c| c.id).collect();
        assert_eq!(ids.len(), STATE_CHECKS.len());
    }

    #[test]
    fn notation_matches_the_brief_table() {
        assert_eq!(
            quiz("1").notation(),
            [
                "s1: bind 127.1.1.1:0, connect 127.9.9.9:1234",
                "s2: bind 127.2.2.2:0, connect 127.9.9.9:1234"
            ]
        );
        assert_eq!(quiz("3").notation()[1], "s2: connect 127.9.9.9:1234");
        assert_eq!(
            quiz("6").notation()[0],
            "s1: bind 127.0.0.1:60000, connect 127.8.8.8:1234"
        );
        assert_eq!(
            quiz("7").notation()[0],
            "s1: SO_REUSEADDR, connect 127.8.8.8:1234"
        );
        assert_eq!(
            quiz("8").notation()[0],
            "s1: SO_REUSEADDR, bind 127.0.0.1:60000, connect 127.9.9.9:1234"
        );
        assert_eq!(
            quiz("3fix").notation()[0],
            "s1: IP_BIND_ADDRESS_NO_PORT, bind 127.1.1.1:0, connect 127.9.9.9:1234"
        );
    }

    #[test]
    fn code_lines_read_like_the_article() {
        assert_eq!(
            quiz("6fix").code()[..4],
            [
                "s1 = socket(AF_INET, SOCK_STREAM)",
                "s1.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)",
                "s1.bind(('127.0.0.1', 60000))",
                "s1.connect(('127.8.8.8', 1234))",
            ]
        );
        assert_eq!(
            quiz("5fix").code()[1],
            "s1.setsockopt(SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)"
        );
    }

    /// The article's answers: which quizzes fail, how, and the address of every success.
    #[test]
    fn expectation_table_is_the_articles() {
        let fail = |id: &str| -> Vec<Option<(Call, i32)>> {
            quiz(id)
                .expected
                .iter()
                .map(|e| match e.outcome {
                    Outcome::Failed { call, errno } => Some((call, errno.number())),
                    _ => None,
                })
                .collect()
        };
        for id in ["1", "2", "4", "7", "3fix", "5fix", "6fix"] {
            assert_eq!(fail(id), [None, None], "quiz {id} succeeds in the article");
        }
        assert_eq!(fail("3"), [None, Some((Call::Connect, 99))]);
        assert_eq!(fail("5"), [None, Some((Call::Bind, 98))]);
        assert_eq!(fail("6"), [None, Some((Call::Bind, 98))]);
        assert_eq!(fail("8"), [None, Some((Call::Connect, 99))]);
        // Every success is on the one ephemeral port, towards the remote it connected to.
        for q in QUIZZES {
            for (i, e) in q.expected.iter().enumerate() {
                let sock = Sock::ALL[i];
                if let Outcome::Connected { local, peer } = e.outcome {
                    assert_eq!(local.port(), QUIZ_PORT, "quiz {}", q.id);
                    let last_connect = q
                        .steps
                        .iter()
                        .filter(|s| s.sock == sock)
                        .filter_map(|s| match s.action {
                            Action::Connect(a) => Some(a.resolve(0)),
                            _ => None,
                        })
                        .next_back();
                    assert_eq!(last_connect, Some(peer), "quiz {} {}", q.id, sock.name());
                }
                assert!(!e.why.is_empty());
            }
        }
        // Quiz 2 and 3fix: the OS picks 127.0.0.1 for the unbound socket.
        assert_eq!(
            quiz("3fix").expected[1].outcome,
            connected(LOCALHOST, R9_SA)
        );
        assert_eq!(quiz("2").expected[0].outcome, connected(LOCALHOST, R9_SA));
    }

    #[test]
    fn each_socket_is_created_first() {
        for q in QUIZZES {
            for sock in Sock::ALL {
                let first = q.steps.iter().find(|s| s.sock == sock).unwrap();
                assert_eq!(first.action, Action::Socket, "quiz {}", q.id);
            }
            // s1 is done before s2 starts, as in the article.
            let first_s2 = q.steps.iter().position(|s| s.sock == S2).unwrap();
            assert!(
                q.steps[first_s2..].iter().all(|s| s.sock == S2),
                "quiz {}",
                q.id
            );
        }
    }

    #[test]
    fn state_checks_match_the_articles_state_machine() {
        for c in STATE_CHECKS {
            let checked: Vec<Fastreuse> = c.steps.iter().filter_map(|s| s.expect).collect();
            assert_eq!(
                checked.first(),
                Some(&c.from),
                "{}: s1 puts the bucket in the start state",
                c.id
            );
            for s in c.steps {
                assert_eq!(
                    s.expect.is_some(),
                    matches!(
                        s.step.action,
                        Action::Bind(_) | Action::Connect(_) | Action::Close
                    ),
                    "{}",
                    c.id
                );
                assert_eq!(s.why.is_empty(), s.expect.is_none(), "{}", c.id);
            }
        }
        let last = |id: &str| {
            STATE_CHECKS
                .iter()
                .find(|c| c.id == id)
                .unwrap()
                .steps
                .iter()
                .filter_map(|s| s.expect)
                .next_back()
                .unwrap()
                .get()
        };
        assert_eq!(last("-1/connect"), -1);
        assert_eq!(last("-1/no-port-bind"), -1);
        assert_eq!(last("-1/bind"), 0);
        assert_eq!(last("-1/bind-release"), 0);
        assert_eq!(last("-1/reuseaddr-bind"), -1);
        assert_eq!(last("0/bind"), 0);
        assert_eq!(last("0/reuseaddr-bind"), 0);
        assert_eq!(last("+1/reuseaddr-bind"), 1);
        assert_eq!(last("+1/bind"), 0);
    }

    #[test]
    fn addr_resolution_and_display() {
        let a = under_test(L2);
        assert_eq!(a.resolve(60105), SocketAddrV4::new(L2, 60105));
        assert_eq!(a.to_string(), "127.2.2.2:PORT");
        assert_eq!(any_port(L1).resolve(60105).port(), 0);
        assert_eq!(R9.resolve(60105).port(), 1234);
        let c = STATE_CHECKS
            .iter()
            .find(|c| c.id == "-1/no-port-bind")
            .unwrap();
        assert_eq!(
            c.notation_at(60101)[1],
            "s2: IP_BIND_ADDRESS_NO_PORT, bind 127.2.2.2:0, connect 127.9.9.9:1234"
        );
        assert!(c
            .code_at(60101)
            .contains(&"s2.setsockopt(SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)".to_owned()));
        let c = STATE_CHECKS.iter().find(|c| c.id == "+1/bind").unwrap();
        assert_eq!(c.notation_at(60107)[1], "s2: bind 127.2.2.2:60107");
        assert_eq!(
            c.code_at(60107).last().unwrap(),
            "s2.bind(('127.2.2.2', 60107))"
        );
    }
}
