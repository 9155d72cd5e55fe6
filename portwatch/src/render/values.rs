//! The spelling of each model value. Everything that prints a value goes through these
//! `Display` impls; JSON uses the serde forms of the model (plain numbers).

use std::fmt;

use crate::model::{Errno, Fastreuse, Op, OwnerCount, PortRange, TcpState, TransitionKind};

/// `-1`, `0`, `+1` as the article writes them (`+2` for `FASTREUSEPORT_STRICT`).
impl fmt::Display for Fastreuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 > 0 {
            write!(f, "+{}", self.0)
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// `lo-hi`; a bound the socket left unset (0) is shown as `*`.
impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bound = |v: u16| {
            if v == 0 {
                "*".to_owned()
            } else {
                v.to_string()
            }
        };
        write!(f, "{}-{}", bound(self.lo), bound(self.hi))
    }
}

/// `N`, or `≥N` when the count is a lower bound.
impl fmt::Display for OwnerCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.truncated {
            write!(f, "≥{}", self.n)
        } else {
            write!(f, "{}", self.n)
        }
    }
}

/// `EADDRINUSE`, or `errno N` without a name; `{:#}`: `EADDRINUSE (98)`.
impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.name(), f.alternate()) {
            (Some(name), false) => f.write_str(name),
            (Some(name), true) => write!(f, "{name} ({})", self.number()),
            (None, _) => write!(f, "errno {}", self.number()),
        }
    }
}

/// The kernel's name without `TCP_` (`ESTABLISHED`), `?` for a state not in the table.
impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name().unwrap_or("?"))
    }
}

/// The machine name: `bind`, `release`, `rescan`, ...
impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The machine name: `bucket_created`, `fastreuse_changed`, ...
impl fmt::Display for TransitionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuse_values_are_signed_like_the_article() {
        assert_eq!(Fastreuse(-1).to_string(), "-1");
        assert_eq!(Fastreuse(0).to_string(), "0");
        assert_eq!(Fastreuse(1).to_string(), "+1");
        assert_eq!(Fastreuse(2).to_string(), "+2");
    }

    #[test]
    fn truncated_owner_counts_are_lower_bounds() {
        assert_eq!(OwnerCount::exact(3).to_string(), "3");
        assert_eq!(OwnerCount::at_least(3).to_string(), "≥3");
    }

    #[test]
    fn errno_spellings() {
        let e = |n| Errno::new(n).expect("non-zero");
        assert_eq!(e(99).to_string(), "EADDRNOTAVAIL");
        assert_eq!(e(-98).to_string(), "EADDRINUSE");
        assert_eq!(e(100000).to_string(), "errno 100000");
        assert_eq!(format!("{:#}", e(99)), "EADDRNOTAVAIL (99)");
        assert_eq!(format!("{:#}", e(4242)), "errno 4242");
    }

    #[test]
    fn tcp_states_and_names() {
        assert_eq!(TcpState::from_kernel(1).to_string(), "ESTABLISHED");
        assert_eq!(TcpState::from_kernel(13).to_string(), "BOUND_INACTIVE");
        assert_eq!(TcpState::from_kernel(0).to_string(), "?");
        assert_eq!(TcpState::from_kernel(255).to_string(), "?");
        assert_eq!(Op::Rescan.to_string(), "rescan");
        assert_eq!(TransitionKind::BindFailed.to_string(), "bind_failed");
    }
}
