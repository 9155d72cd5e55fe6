//! Least privilege for `portwatch export`: once its programs are attached, the process
//! keeps only the capabilities scraping still needs and drops the others from every set
//! (effective, permitted, inheritable, ambient, bounding), then sets no_new_privs.
//!
//! Capabilities are per thread: [`drop_all_but`] must run before any other thread is
//! started, so that every later thread inherits the reduced sets.

use caps::{CapSet, Capability, CapsHashSet};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CapsError {
    #[error("dropping capabilities ({step}) failed: {source}")]
    Drop {
        step: &'static str,
        source: caps::errors::CapsError,
    },
    #[error("prctl(PR_SET_NO_NEW_PRIVS) failed: {0}")]
    NoNewPrivs(std::io::Error),
}

/// A capability kept after attach and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kept {
    pub cap: Capability,
    pub why: &'static str,
}

/// Kernels before 5.19 refuse every bpf() command, map reads through an fd included, to
/// a process without CAP_BPF while `kernel.unprivileged_bpf_disabled` is set; commit
/// c8644cd0efe7 ("bpf: refine kernel.unprivileged_bpf_disabled behaviour", v5.19) limits
/// that to creating maps and loading programs.
const MAP_ACCESS_UNPRIVILEGED_SINCE: (u32, u32) = (5, 19);

/// What the running system is like, for [`kept_after_attach`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Host {
    /// (major, minor) of the running kernel.
    pub kernel: (u32, u32),
    /// `kernel.unprivileged_bpf_disabled` is non-zero.
    pub unprivileged_bpf_disabled: bool,
}

impl Host {
    /// Reads `uname -r` and `/proc/sys/kernel/unprivileged_bpf_disabled` (a kernel
    /// without that file allows unprivileged bpf()).
    pub fn current() -> Host {
        let release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        let disabled = std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled")
            .map(|s| s.trim() != "0")
            .unwrap_or(false);
        Host {
            kernel: kernel_version(&release).unwrap_or((0, 0)),
            unprivileged_bpf_disabled: disabled,
        }
    }
}

/// (major, minor) of a kernel release string such as `6.18.44-fc-v669` or `5.10.0-30-amd64`.
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// The capabilities scraping needs once the programs are attached. Scraping reads the
/// kernel maps (counters, drops, the snapshot ring) and runs the snapshot program
/// (BPF_PROG_TEST_RUN) through descriptors opened at start: nothing is needed for that,
/// except CAP_BPF on kernels before 5.19 with unprivileged bpf() disabled. Naming
/// namespaces reads `/proc`, with less to see once the capabilities are gone (see
/// `netns_name`).
pub fn kept_after_attach(host: Host) -> Vec<Kept> {
    let mut keep = Vec::new();
    if host.unprivileged_bpf_disabled && host.kernel < MAP_ACCESS_UNPRIVILEGED_SINCE {
        keep.push(Kept {
            cap: Capability::CAP_BPF,
            why: "reading BPF maps: this kernel (before 5.19) refuses every bpf() command without it while kernel.unprivileged_bpf_disabled is set",
        });
    }
    keep
}

/// Drops every capability but `keep` from all sets of the calling thread, then sets
/// no_new_privs. Capabilities `keep` names that the thread does not have stay absent.
pub fn drop_all_but(keep: &[Capability]) -> Result<(), CapsError> {
    let keep: CapsHashSet = keep.iter().copied().collect();
    let permitted = caps::read(None, CapSet::Permitted).map_err(|source| CapsError::Drop {
        step: "reading the permitted set",
        source,
    })?;
    let keep: CapsHashSet = keep.intersection(&permitted).copied().collect();
    // The bounding set needs CAP_SETPCAP to shrink: first, while it is still there.
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false) {
        for cap in caps::all() {
            if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
                caps::drop(None, CapSet::Bounding, cap).map_err(|source| CapsError::Drop {
                    step: "bounding set",
                    source,
                })?;
            }
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(|source| CapsError::Drop {
        step: "ambient set",
        source,
    })?;
    caps::clear(None, CapSet::Inheritable).map_err(|source| CapsError::Drop {
        step: "inheritable set",
        source,
    })?;
    caps::set(None, CapSet::Effective, &keep).map_err(|source| CapsError::Drop {
        step: "effective set",
        source,
    })?;
    caps::set(None, CapSet::Permitted, &keep).map_err(|source| CapsError::Drop {
        step: "permitted set",
        source,
    })?;
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only and changes no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(CapsError::NoNewPrivs(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The effective set of the calling thread, spelled like `capsh` (`cap_bpf,cap_sys_admin`),
/// `none` when empty.
pub fn effective_summary() -> String {
    let mut names: Vec<String> = caps::read(None, CapSet::Effective)
        .map(|set| {
            set.into_iter()
                .map(|c| c.to_string().to_lowercase())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions() {
        assert_eq!(kernel_version("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(kernel_version("5.10.0-30-amd64"), Some((5, 10)));
        assert_eq!(kernel_version("7.0"), Some((7, 0)));
        assert_eq!(kernel_version("garbage"), None);
    }

    #[test]
    fn what_is_kept() {
        let caps_of = |v: Vec<Kept>| v.into_iter().map(|k| k.cap).collect::<Vec<_>>();
        assert!(kept_after_attach(Host {
            kernel: (6, 1),
            unprivileged_bpf_disabled: true
        })
        .is_empty());
        assert!(kept_after_attach(Host {
            kernel: (5, 19),
            unprivileged_bpf_disabled: true
        })
        .is_empty());
        let old = kept_after_attach(Host {
            kernel: (5, 10),
            unprivileged_bpf_disabled: true,
        });
        assert_eq!(caps_of(old.clone()), vec![Capability::CAP_BPF]);
        assert!(old[0].why.contains("5.19"));
        assert!(kept_after_attach(Host {
            kernel: (5, 18),
            unprivileged_bpf_disabled: false
        })
        .is_empty());
    }

    #[test]
    fn dropping_in_a_thread_leaves_only_what_is_kept() {
        if !crate::netns::tests::root_or_skip("dropping_in_a_thread_leaves_only_what_is_kept") {
            return;
        }
        // A thread of its own: capabilities are per thread, the test harness keeps its own.
        std::thread::spawn(|| {
            drop_all_but(&[Capability::CAP_SYS_PTRACE, Capability::CAP_NET_BIND_SERVICE]).unwrap();
            let eff = caps::read(None, CapSet::Effective).unwrap();
            let want: CapsHashSet = [Capability::CAP_SYS_PTRACE, Capability::CAP_NET_BIND_SERVICE]
                .into_iter()
                .collect();
            assert_eq!(eff, want);
            assert_eq!(caps::read(None, CapSet::Permitted).unwrap(), want);
            assert!(caps::read(None, CapSet::Ambient).unwrap().is_empty());
            assert!(!caps::has_cap(None, CapSet::Bounding, Capability::CAP_SYS_ADMIN).unwrap());
            assert_eq!(effective_summary(), "cap_net_bind_service,cap_sys_ptrace");
            // Gone for good: it cannot be raised again.
            assert!(caps::raise(None, CapSet::Effective, Capability::CAP_SYS_ADMIN).is_err());
        })
        .join()
        .unwrap();
    }
}
