//! Outcomes of a socket in a quiz, the article's expectations, and their comparison.

use std::net::SocketAddrV4;

use serde::{Deserialize, Serialize};

use crate::model::{Errno, Fastreuse};

/// The syscall an outcome is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Call {
    Socket,
    Setsockopt,
    Bind,
    Connect,
    Getsockname,
    Close,
}

impl Call {
    pub fn as_str(self) -> &'static str {
        match self {
            Call::Socket => "socket",
            Call::Setsockopt => "setsockopt",
            Call::Bind => "bind",
            Call::Connect => "connect",
            Call::Getsockname => "getsockname",
            Call::Close => "close",
        }
    }
}

/// What became of one socket of a quiz.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    /// Every call succeeded and the socket is connected.
    Connected {
        local: SocketAddrV4,
        peer: SocketAddrV4,
    },
    /// Every call succeeded; the socket is bound but was never connected.
    Bound { local: SocketAddrV4 },
    /// `call` failed with `errno` (the socket's later steps were not run, as in the
    /// article's Python, where the exception stops the snippet).
    Failed { call: Call, errno: Errno },
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        !matches!(self, Outcome::Failed { .. })
    }
}

/// The article's outcome for one socket and the one-line reason a learner should take away.
#[derive(Clone, Copy, Debug)]
pub struct Expected {
    pub outcome: Outcome,
    pub why: &'static str,
}

/// Article vs observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Same,
    Differs,
    /// Nothing was observed (the quiz could not run).
    NotRun,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Same => "same",
            Verdict::Differs => "differs",
            Verdict::NotRun => "not run",
        }
    }

    /// The verdict of a whole made of parts: any difference wins, then any part not run.
    pub fn combine(parts: impl IntoIterator<Item = Verdict>) -> Verdict {
        let mut out = Verdict::Same;
        for v in parts {
            match v {
                Verdict::Differs => return Verdict::Differs,
                Verdict::NotRun => out = Verdict::NotRun,
                Verdict::Same => {}
            }
        }
        out
    }
}

/// Compare the article's outcome with the observed one: success must match in local and
/// peer address, failure in the failing call and errno.
pub fn compare(article: &Outcome, observed: Option<&Outcome>) -> Verdict {
    match observed {
        None => Verdict::NotRun,
        Some(o) if o == article => Verdict::Same,
        Some(_) => Verdict::Differs,
    }
}

/// Verdict of one state-machine step: the article's fastreuse after the step vs the value
/// read from the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateVerdict {
    Same,
    /// The kernel's value differs from the article's: a finding about this kernel.
    Finding,
    /// The bucket could not be read (no tracer, or no bucket where one should be).
    NotObserved,
}

pub fn compare_fastreuse(article: Fastreuse, observed: Option<Fastreuse>) -> StateVerdict {
    match observed {
        None => StateVerdict::NotObserved,
        Some(v) if v == article => StateVerdict::Same,
        Some(_) => StateVerdict::Finding,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn a(ip: [u8; 4], port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from(ip), port)
    }

    #[test]
    fn compare_needs_exact_addresses_and_errno() {
        let art = Outcome::Connected {
            local: a([127, 1, 1, 1], 60000),
            peer: a([127, 9, 9, 9], 1234),
        };
        assert_eq!(compare(&art, Some(&art)), Verdict::Same);
        let other_port = Outcome::Connected {
            local: a([127, 1, 1, 1], 60001),
            peer: a([127, 9, 9, 9], 1234),
        };
        assert_eq!(compare(&art, Some(&other_port)), Verdict::Differs);
        let fail = Outcome::Failed {
            call: Call::Connect,
            errno: Errno::EADDRNOTAVAIL,
        };
        assert_eq!(compare(&art, Some(&fail)), Verdict::Differs);
        assert_eq!(compare(&fail, Some(&fail)), Verdict::Same);
        let bind_fail = Outcome::Failed {
            call: Call::Bind,
            errno: Errno::EADDRNOTAVAIL,
        };
        assert_eq!(compare(&fail, Some(&bind_fail)), Verdict::Differs);
        let other_errno = Outcome::Failed {
            call: Call::Connect,
            errno: Errno::EADDRINUSE,
        };
        assert_eq!(compare(&fail, Some(&other_errno)), Verdict::Differs);
        assert_eq!(compare(&fail, None), Verdict::NotRun);
    }

    #[test]
    fn combine_verdicts() {
        assert_eq!(
            Verdict::combine([Verdict::Same, Verdict::Same]),
            Verdict::Same
        );
        assert_eq!(
            Verdict::combine([Verdict::Same, Verdict::NotRun]),
            Verdict::NotRun
        );
        assert_eq!(
            Verdict::combine([Verdict::NotRun, Verdict::Differs]),
            Verdict::Differs
        );
        assert_eq!(Verdict::combine([]), Verdict::Same);
    }

    #[test]
    fn outcome_success() {
        let fail = Outcome::Failed {
            call: Call::Bind,
            errno: Errno::EADDRINUSE,
        };
        let ok = Outcome::Connected {
            local: a([127, 0, 0, 1], 60000),
            peer: a([127, 8, 8, 8], 1234),
        };
        assert!(ok.is_ok() && !fail.is_ok());
    }

    #[test]
    fn fastreuse_compare() {
        let f = Fastreuse;
        assert_eq!(compare_fastreuse(f(1), Some(f(0))), StateVerdict::Finding);
        assert_eq!(compare_fastreuse(f(-1), Some(f(-1))), StateVerdict::Same);
        assert_eq!(compare_fastreuse(f(0), None), StateVerdict::NotObserved);
    }

    #[test]
    fn outcome_serializes_with_string_addresses() {
        let ok = Outcome::Connected {
            local: a([127, 0, 0, 1], 60000),
            peer: a([127, 8, 8, 8], 1234),
        };
        let j = serde_json::to_value(ok).unwrap();
        assert_eq!(j["result"], "connected");
        assert_eq!(j["local"], "127.0.0.1:60000");
        let f = serde_json::to_value(Outcome::Failed {
            call: Call::Connect,
            errno: Errno::EADDRNOTAVAIL,
        })
        .unwrap();
        assert_eq!(f["call"], "connect");
        assert_eq!(f["errno"], 99);
        // Reports are read back (xtask): the JSON round-trips.
        assert_eq!(
            serde_json::from_value::<Outcome>(f).ok(),
            Some(Outcome::Failed {
                call: Call::Connect,
                errno: Errno::EADDRNOTAVAIL,
            })
        );
        assert_eq!(serde_json::from_value::<Outcome>(j).ok(), Some(ok));
    }
}
