//! Kernel release numbers: the one version type of both tables of per-kernel decisions,
//! the layout variants ([`super::compat`]) and the port-sharing rules
//! ([`crate::explain::variant`]). Stable backports need the patch level: a change can
//! reach a stable series at one of its releases (6.1.168), so a release is
//! `major.minor.patch`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A kernel release as `major.minor.patch` (the upstream numbers, not a distribution's
/// ABI number: Debian's `6.1.0-57-cloud-amd64` is upstream 6.1.192, which its
/// `/proc/version` names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KernelVersion {
    pub major: u16,
    pub minor: u16,
    pub patch: u16,
}

/// The mainline release `major.minor` (patch 0), or, in a list of backports, stable series
/// `major.minor.y` from its first release.
pub const fn release(major: u16, minor: u16) -> KernelVersion {
    KernelVersion::new(major, minor, 0)
}

impl KernelVersion {
    pub const fn new(major: u16, minor: u16, patch: u16) -> Self {
        KernelVersion {
            major,
            minor,
            patch,
        }
    }

    /// `6.8`: a mainline release by its series.
    pub fn mainline(self) -> String {
        format!("{}.{}", self.major, self.minor)
    }

    /// `6.1.31`, or `6.1.y` for a whole stable series (patch 0).
    pub fn stable(self) -> String {
        match self.patch {
            0 => format!("{}.{}.y", self.major, self.minor),
            p => format!("{}.{}.{p}", self.major, self.minor),
        }
    }

    /// The series `major.minor` this release belongs to.
    pub fn series(self) -> (u16, u16) {
        (self.major, self.minor)
    }

    /// True when `self`, a change's mainline release, or one of its `backports` (stable
    /// releases from which the series carries it), is in release `v`.
    pub fn reached(self, backports: &[KernelVersion], v: KernelVersion) -> bool {
        v >= self
            || backports
                .iter()
                .any(|b| b.series() == v.series() && v.patch >= b.patch)
    }

    /// Parses the leading `X.Y[.Z]` of a release string (`6.18.44-fc-v1045`, `7.3.4+deb13`).
    pub fn parse(release: &str) -> Option<Self> {
        let head: String = release
            .trim()
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let mut it = head.split('.').filter(|s| !s.is_empty());
        let major = it.next()?.parse().ok()?;
        let minor = it.next()?.parse().ok()?;
        let patch = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        Some(KernelVersion {
            major,
            minor,
            patch,
        })
    }

    /// The upstream release of the running kernel from the text of `/proc/version`:
    /// Debian builds name it after `Debian ` (`... Debian 6.1.192-3 (...)`), Ubuntu's
    /// `/proc/version_signature` ends with it; otherwise the release itself.
    pub fn from_proc_version(proc_version: &str, signature: Option<&str>) -> Option<Self> {
        if let Some(sig) = signature {
            if let Some(v) = sig.split_whitespace().last().and_then(Self::parse) {
                return Some(v);
            }
        }
        let words: Vec<&str> = proc_version.split_whitespace().collect();
        let i = words.iter().position(|w| *w == "version")?;
        let release = words.get(i + 1).and_then(|w| Self::parse(w))?;
        // The compiler's own "(Debian 12.2.0-14)" comes earlier: take the last "Debian X"
        // of the same major.minor as the release.
        let debian = words
            .windows(2)
            .rev()
            .filter(|w| w[0] == "Debian")
            .filter_map(|w| Self::parse(w[1]))
            .find(|v| v.series() == release.series());
        Some(debian.unwrap_or(release))
    }

    /// The running kernel's upstream release.
    pub fn running() -> std::io::Result<Self> {
        let text = std::fs::read_to_string("/proc/version")?;
        let sig = std::fs::read_to_string("/proc/version_signature").ok();
        Self::from_proc_version(&text, sig.as_deref()).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "no kernel release found in /proc/version ({:?})",
                    text.trim()
                ),
            )
        })
    }
}

impl From<(u16, u16)> for KernelVersion {
    fn from((major, minor): (u16, u16)) -> Self {
        release(major, minor)
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn kv(major: u16, minor: u16, patch: u16) -> KernelVersion {
        KernelVersion::new(major, minor, patch)
    }

    #[test]
    fn parses_releases_and_proc_version() {
        assert_eq!(
            KernelVersion::parse("6.18.44-fc-v1045"),
            Some(kv(6, 18, 44))
        );
        assert_eq!(
            KernelVersion::parse("7.3.4+deb13-cloud-amd64"),
            Some(kv(7, 3, 4))
        );
        assert_eq!(KernelVersion::parse("6.8"), Some(kv(6, 8, 0)));
        assert_eq!(KernelVersion::parse("x6.8"), None);
        let debian = "Linux version 6.1.0-57-cloud-amd64 (debian-kernel@lists.debian.org) \
                      (gcc-12 (Debian 12.2.0-14) 12.2.0) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (2026-11-20)";
        assert_eq!(
            KernelVersion::from_proc_version(debian, None),
            Some(kv(6, 1, 192))
        );
        let plain = "Linux version 6.18.44-fc-v1045 (builder@sandboxing) (gcc (GCC) 15.3.0) #1";
        assert_eq!(
            KernelVersion::from_proc_version(plain, None),
            Some(kv(6, 18, 44))
        );
        let ubuntu_sig = "Ubuntu 6.8.0-45.45-generic 6.8.12";
        assert_eq!(
            KernelVersion::from_proc_version("Linux version 6.8.0-45-generic", Some(ubuntu_sig)),
            Some(kv(6, 8, 12))
        );
    }

    #[test]
    fn a_change_reaches_later_releases_and_its_backports() {
        let since = release(6, 9);
        let backports = [kv(6, 1, 168)];
        assert!(since.reached(&backports, kv(6, 9, 0)));
        assert!(since.reached(&backports, kv(7, 0, 1)));
        assert!(!since.reached(&backports, kv(6, 8, 12)));
        assert!(since.reached(&backports, kv(6, 1, 168)));
        assert!(!since.reached(&backports, kv(6, 1, 167)));
        assert!(!since.reached(&backports, kv(6, 6, 200)));
        assert_eq!(KernelVersion::from((5, 10)), kv(5, 10, 0));
        assert_eq!(kv(6, 1, 192).to_string(), "6.1.192");
    }
}
