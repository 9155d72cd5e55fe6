//! Error numbers of failed syscalls, with their Linux names.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A (positive, non-zero) Linux errno value.
///
/// Displayed as its name (`EADDRINUSE`), or `errno N` when it has no name here; the
/// alternate form (`{:#}`) adds the number: `EADDRINUSE (98)`. In JSON, the number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Errno(i32);

impl Errno {
    /// The error of a bind() on a port already taken.
    pub const EADDRINUSE: Errno = Errno(libc::EADDRINUSE);
    /// The error of a connect() (or bind()) that finds no usable local port.
    pub const EADDRNOTAVAIL: Errno = Errno(libc::EADDRNOTAVAIL);
    pub const EAFNOSUPPORT: Errno = Errno(libc::EAFNOSUPPORT);
    pub const EBADF: Errno = Errno(libc::EBADF);
    pub const EIO: Errno = Errno(libc::EIO);

    /// The errno of a failed I/O call; `EIO` for an error that carries none.
    pub fn of_io(e: &std::io::Error) -> Errno {
        e.raw_os_error().and_then(Errno::new).unwrap_or(Errno::EIO)
    }

    /// The errno of a raw value as the kernel or libc reports it (either sign); `None`
    /// for 0 (success).
    pub const fn new(raw: i32) -> Option<Errno> {
        if raw == 0 {
            None
        } else {
            Some(Errno(raw.saturating_abs()))
        }
    }

    /// The positive number.
    pub fn number(self) -> i32 {
        self.0
    }

    /// The symbolic name as Linux numbers errno values, `None` when not in this table.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            libc::EPERM => "EPERM",
            libc::ENOENT => "ENOENT",
            libc::ESRCH => "ESRCH",
            libc::E2BIG => "E2BIG",
            libc::EINTR => "EINTR",
            libc::EBADF => "EBADF",
            libc::EAGAIN => "EAGAIN",
            libc::ENOMEM => "ENOMEM",
            libc::EACCES => "EACCES",
            libc::EFAULT => "EFAULT",
            libc::EINVAL => "EINVAL",
            libc::EMFILE => "EMFILE",
            libc::ENFILE => "ENFILE",
            libc::ENOBUFS => "ENOBUFS",
            libc::ENOTSOCK => "ENOTSOCK",
            libc::EDESTADDRREQ => "EDESTADDRREQ",
            libc::EPROTOTYPE => "EPROTOTYPE",
            libc::EOPNOTSUPP => "EOPNOTSUPP",
            libc::EAFNOSUPPORT => "EAFNOSUPPORT",
            libc::EADDRINUSE => "EADDRINUSE",
            libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
            libc::ENETDOWN => "ENETDOWN",
            libc::ENETUNREACH => "ENETUNREACH",
            libc::ECONNABORTED => "ECONNABORTED",
            libc::ECONNRESET => "ECONNRESET",
            libc::EISCONN => "EISCONN",
            libc::ENOTCONN => "ENOTCONN",
            libc::ETIMEDOUT => "ETIMEDOUT",
            libc::ECONNREFUSED => "ECONNREFUSED",
            libc::EHOSTUNREACH => "EHOSTUNREACH",
            libc::EALREADY => "EALREADY",
            libc::EINPROGRESS => "EINPROGRESS",
            _ => return None,
        })
    }
}

impl Serialize for Errno {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i32(self.0)
    }
}

impl<'de> Deserialize<'de> for Errno {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Errno, D::Error> {
        let raw = i32::deserialize(d)?;
        Errno::new(raw).ok_or_else(|| serde::de::Error::custom("errno 0 is not an error"))
    }
}

/// Serde helpers for an `Option<Errno>` kept in JSON as a plain number, 0 meaning no
/// error (the `errno` key of `trace --json`, quiz timelines and selftest reports).
pub mod errno_or_zero {
    use super::*;

    pub fn serialize<S: Serializer>(e: &Option<Errno>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i32(e.map_or(0, Errno::number))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Errno>, D::Error> {
        Ok(Errno::new(i32::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(raw: i32) -> Option<&'static str> {
        Errno::new(raw).and_then(Errno::name)
    }

    #[test]
    fn errno_names() {
        assert_eq!(name(98), Some("EADDRINUSE"));
        assert_eq!(name(99), Some("EADDRNOTAVAIL"));
        assert_eq!(name(111), Some("ECONNREFUSED"));
        assert_eq!(name(22), Some("EINVAL"));
        assert_eq!(name(13), Some("EACCES"));
        assert_eq!(name(1), Some("EPERM"));
        assert_eq!(name(110), Some("ETIMEDOUT"));
        assert_eq!(name(106), Some("EISCONN"));
        assert_eq!(name(114), Some("EALREADY"));
        assert_eq!(name(9), Some("EBADF"));
        assert_eq!(name(88), Some("ENOTSOCK"));
        assert_eq!(name(97), Some("EAFNOSUPPORT"));
        assert_eq!(name(115), Some("EINPROGRESS"));
        assert_eq!(name(-98), Some("EADDRINUSE"));
        assert_eq!(Errno::new(0), None);
        assert_eq!(name(4095), None);
        assert_eq!(name(i32::MIN), None);
    }

    #[test]
    fn sign_is_normalised_and_json_is_the_number() {
        let e = Errno::new(-98).expect("non-zero");
        assert_eq!(e.number(), 98);
        assert_eq!(serde_json::to_value(e).expect("json"), 98);
        assert_eq!(serde_json::from_str::<Errno>("99").ok(), Errno::new(99));
        assert!(serde_json::from_str::<Errno>("0").is_err());
    }
}
