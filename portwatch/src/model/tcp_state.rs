//! TCP socket states in the kernel's numbering (`include/net/tcp_states.h`).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The state of an owner socket. `Other` keeps a value this table does not know (a newer
/// kernel's state, or a read that failed as 0).
///
/// Displayed as the kernel's name without `TCP_` (`ESTABLISHED`), `?` for `Other`. In
/// JSON, the name; `Other` as its number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TcpState {
    Established,
    SynSent,
    SynRecv,
    FinWait1,
    FinWait2,
    TimeWait,
    Close,
    CloseWait,
    LastAck,
    Listen,
    Closing,
    NewSynRecv,
    BoundInactive,
    Other(u8),
}

/// (kernel value, state, name), in kernel order.
const TABLE: [(u8, TcpState, &str); 13] = [
    (1, TcpState::Established, "ESTABLISHED"),
    (2, TcpState::SynSent, "SYN_SENT"),
    (3, TcpState::SynRecv, "SYN_RECV"),
    (4, TcpState::FinWait1, "FIN_WAIT1"),
    (5, TcpState::FinWait2, "FIN_WAIT2"),
    (6, TcpState::TimeWait, "TIME_WAIT"),
    (7, TcpState::Close, "CLOSE"),
    (8, TcpState::CloseWait, "CLOSE_WAIT"),
    (9, TcpState::LastAck, "LAST_ACK"),
    (10, TcpState::Listen, "LISTEN"),
    (11, TcpState::Closing, "CLOSING"),
    (12, TcpState::NewSynRecv, "NEW_SYN_RECV"),
    (13, TcpState::BoundInactive, "BOUND_INACTIVE"),
];

impl TcpState {
    /// The state of a kernel value (`TCP_ESTABLISHED` = 1, ...).
    pub fn from_kernel(v: u8) -> TcpState {
        TABLE
            .iter()
            .find(|(n, _, _)| *n == v)
            .map_or(TcpState::Other(v), |(_, s, _)| *s)
    }

    /// The kernel value.
    pub fn kernel_value(self) -> u8 {
        match self {
            TcpState::Other(v) => v,
            s => TABLE
                .iter()
                .find(|(_, t, _)| *t == s)
                .map_or(0, |(n, _, _)| *n),
        }
    }

    /// The kernel's name without `TCP_`; `None` for `Other`.
    pub fn name(self) -> Option<&'static str> {
        TABLE
            .iter()
            .find(|(_, t, _)| *t == self)
            .map(|(_, _, name)| *name)
    }
}

impl Serialize for TcpState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.name() {
            Some(name) => s.serialize_str(name),
            None => s.serialize_u8(self.kernel_value()),
        }
    }
}

impl<'de> Deserialize<'de> for TcpState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TcpState, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Name(String),
            Number(u8),
        }
        match Repr::deserialize(d)? {
            Repr::Number(v) => Ok(TcpState::from_kernel(v)),
            Repr::Name(name) => TABLE
                .iter()
                .find(|(_, _, n)| *n == name)
                .map(|(_, s, _)| *s)
                .ok_or_else(|| serde::de::Error::custom(format!("unknown TCP state {name:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_states() {
        let want = [
            None,
            Some("ESTABLISHED"),
            Some("SYN_SENT"),
            Some("SYN_RECV"),
            Some("FIN_WAIT1"),
            Some("FIN_WAIT2"),
            Some("TIME_WAIT"),
            Some("CLOSE"),
            Some("CLOSE_WAIT"),
            Some("LAST_ACK"),
            Some("LISTEN"),
            Some("CLOSING"),
            Some("NEW_SYN_RECV"),
            Some("BOUND_INACTIVE"),
            None,
        ];
        for (i, w) in want.iter().enumerate() {
            let s = TcpState::from_kernel(i as u8);
            assert_eq!(s.name(), *w, "state {i}");
            assert_eq!(s.kernel_value(), i as u8, "state {i} round-trips");
        }
        assert_eq!(TcpState::from_kernel(255), TcpState::Other(255));
    }

    #[test]
    fn json_uses_names_and_numbers_for_unknown_states() {
        for v in 0..=20u8 {
            let s = TcpState::from_kernel(v);
            let j = serde_json::to_value(s).expect("json");
            assert_eq!(serde_json::from_value::<TcpState>(j).ok(), Some(s));
        }
        assert_eq!(
            serde_json::to_value(TcpState::TimeWait).expect("json"),
            "TIME_WAIT"
        );
        assert_eq!(serde_json::to_value(TcpState::Other(77)).expect("json"), 77);
    }
}
