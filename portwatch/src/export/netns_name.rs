//! Human names for network-namespace inodes, for the `portwatch_netns_name_info` metric.
//!
//! In order of preference: the host's namespace (`host`); a `/run/netns/NAME` bind mount
//! (`ip netns add NAME`); the container or pod of a process inside, read from its
//! `/proc/PID/cgroup` (docker, Kubernetes pod, containerd, CRI-O, podman) or its systemd
//! unit; the `comm` of that process. A namespace nothing names has no name series.
//!
//! Finding a process inside a namespace means stat-ing `/proc/PID/ns/net`, which the
//! kernel allows only with ptrace read access to that process: the scan of `/proc` is
//! rate-limited and its result cached, and a first scan runs while the exporter still has
//! its capabilities. The cgroup and comm of a process are readable by anyone.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::Path,
    time::{Duration, Instant},
};

use super::exposition::NetnsLabel;

/// Shortest time between two scans of `/proc` for a namespace not seen before.
const PROC_SCAN_EVERY: Duration = Duration::from_secs(5);

/// Characters of a container id shown (as `docker ps` does).
const SHORT_ID: usize = 12;

/// The container, pod or unit a cgroup path (one line of `/proc/PID/cgroup`, or the
/// whole file) belongs to.
pub fn cgroup_owner(cgroup: &str) -> Option<NetnsLabel> {
    // cgroup v2 has one line `0::PATH`; v1 has `ID:CONTROLLERS:PATH` per hierarchy. Every
    // path is looked at; the first that names something wins, v2 first.
    type Paths<'a> = Vec<(bool, &'a str)>;
    let (v2, v1): (Paths, Paths) = cgroup
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let id = it.next()?;
            let _controllers = it.next()?;
            Some((id == "0", it.next()?))
        })
        .partition(|(is_v2, _)| *is_v2);
    v2.into_iter()
        .chain(v1)
        .find_map(|(_, path)| owner_of_path(path))
}

fn owner_of_path(path: &str) -> Option<NetnsLabel> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    // A Kubernetes pod: all containers of a pod share its network namespace, so the pod
    // names it (systemd driver: kubepods-<qos>-pod<uid>.slice with `_` for `-`;
    // cgroupfs driver: /kubepods/<qos>/pod<uid>/).
    let in_kubepods = parts.iter().any(|p| p.starts_with("kubepods"));
    if in_kubepods {
        for part in parts.iter().rev() {
            if let Some(uid) = pod_uid(part) {
                return Some(NetnsLabel {
                    name: format!("pod/{uid}"),
                    source: "kubernetes",
                });
            }
        }
    }
    for (i, part) in parts.iter().enumerate().rev() {
        for (prefix, source) in [
            ("docker-", "docker"),
            ("cri-containerd-", "containerd"),
            ("crio-", "crio"),
            ("libpod-", "podman"),
        ] {
            if let Some(id) = part
                .strip_prefix(prefix)
                .and_then(|r| r.strip_suffix(".scope"))
            {
                if is_container_id(id) {
                    return Some(NetnsLabel {
                        name: format!("{source}/{}", &id[..SHORT_ID]),
                        source,
                    });
                }
            }
        }
        // cgroupfs layouts: /docker/<id>, /libpod_parent/libpod-<id>, /crio/<id>.
        if is_container_id(part) && i > 0 {
            let source = match parts[i - 1] {
                "docker" => Some("docker"),
                "crio" => Some("crio"),
                _ => None,
            };
            if let Some(source) = source {
                return Some(NetnsLabel {
                    name: format!("{source}/{}", &part[..SHORT_ID]),
                    source,
                });
            }
        }
    }
    // A systemd service with its own namespace (PrivateNetwork=yes, NetworkNamespacePath=).
    parts
        .iter()
        .rev()
        .find(|p| p.ends_with(".service"))
        .map(|unit| NetnsLabel {
            name: (*unit).to_owned(),
            source: "systemd",
        })
}

/// `kubepods-besteffort-pod<uid>.slice` (uid with `_`), `kubepods-pod<uid>.slice`, or
/// `pod<uid>` → the pod uid with dashes.
fn pod_uid(part: &str) -> Option<String> {
    let rest = match part.strip_suffix(".slice") {
        Some(slice) => slice.rsplit_once("-pod").map(|(_, uid)| uid)?,
        None => part.strip_prefix("pod")?,
    };
    let uid = rest.replace('_', "-");
    let ok = uid.len() == 36
        && uid.chars().enumerate().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        });
    ok.then_some(uid)
}

/// A full container id: 64 lowercase hex digits.
fn is_container_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Names namespaces, caching what it found.
#[derive(Debug, Default)]
pub struct NetnsNamer {
    host: Option<u32>,
    names: HashMap<u32, NetnsLabel>,
    /// A process seen inside each namespace (the lowest pid of the last scan).
    pids: HashMap<u32, u32>,
    last_proc_scan: Option<Instant>,
}

impl NetnsNamer {
    /// Reads the host's namespace (that of pid 1) and scans `/proc` once: best done while
    /// the process still has its capabilities.
    pub fn new() -> NetnsNamer {
        // The kernel's own threads (kthreadd, pid 2 when this process sees the host's
        // pids) live in the initial namespace; otherwise pid 1's is the best guess.
        let host_pid = match std::fs::read_to_string("/proc/2/comm") {
            Ok(c) if c.trim_end() == "kthreadd" => 2,
            _ => 1,
        };
        let host = netns_of_pid(host_pid);
        let mut namer = NetnsNamer {
            host,
            ..NetnsNamer::default()
        };
        namer.scan_proc(Instant::now());
        namer
    }

    /// Tells the namer that `pid` was seen inside `netns` (e.g. by an event).
    pub fn saw_pid(&mut self, netns: u32, pid: u32) {
        if pid != 0 {
            self.pids.entry(netns).or_insert(pid);
        }
    }

    /// The name of `netns`, looking it up if it has none yet.
    pub fn name(&mut self, netns: u32, now: Instant) -> Option<NetnsLabel> {
        if let Some(n) = self.names.get(&netns) {
            return Some(n.clone());
        }
        let found = self.look_up(netns, now);
        if let Some(n) = &found {
            // Names from a process can change (the process exits, the pid is reused):
            // only the stable ones are kept for good.
            if matches!(n.source, "host" | "netns") {
                self.names.insert(netns, n.clone());
            }
        }
        found
    }

    fn look_up(&mut self, netns: u32, now: Instant) -> Option<NetnsLabel> {
        if Some(netns) == self.host {
            return Some(NetnsLabel {
                name: "host".into(),
                source: "host",
            });
        }
        if let Some(name) = run_netns_name(netns) {
            return Some(NetnsLabel {
                name,
                source: "netns",
            });
        }
        let pid = match self
            .pids
            .get(&netns)
            .copied()
            .filter(|p| still_in_netns(*p, netns))
        {
            Some(p) => Some(p),
            None => {
                self.pids.remove(&netns);
                if self
                    .last_proc_scan
                    .is_none_or(|t| now.saturating_duration_since(t) >= PROC_SCAN_EVERY)
                {
                    self.scan_proc(now);
                }
                self.pids.get(&netns).copied()
            }
        }?;
        if let Some(owner) = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ok()
            .and_then(|c| cgroup_owner(&c))
        {
            return Some(owner);
        }
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        let comm = comm.trim_end();
        (!comm.is_empty()).then(|| NetnsLabel {
            name: comm.to_owned(),
            source: "comm",
        })
    }

    /// Maps every namespace it may stat in `/proc/*/ns/net` to its lowest pid.
    fn scan_proc(&mut self, now: Instant) {
        self.last_proc_scan = Some(now);
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return;
        };
        let mut found: HashMap<u32, u32> = HashMap::new();
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Some(ino) = netns_of_pid(pid) else {
                continue;
            };
            found
                .entry(ino)
                .and_modify(|p| *p = (*p).min(pid))
                .or_insert(pid);
        }
        for (ino, pid) in found {
            self.pids.insert(ino, pid);
        }
    }
}

fn netns_of_pid(pid: u32) -> Option<u32> {
    let m = std::fs::metadata(format!("/proc/{pid}/ns/net")).ok()?;
    u32::try_from(m.ino()).ok()
}

/// Whether `pid` is (still) inside `netns`. A process this one may no longer look into
/// (capabilities dropped) counts as inside while it exists: it was found there by a scan.
fn still_in_netns(pid: u32, netns: u32) -> bool {
    match std::fs::metadata(format!("/proc/{pid}/ns/net")) {
        Ok(m) => m.ino() == u64::from(netns),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Path::new(&format!("/proc/{pid}")).exists()
        }
        Err(_) => false,
    }
}

/// The NAME of a `/run/netns/NAME` whose inode is `netns`.
fn run_netns_name(netns: u32) -> Option<String> {
    let dir = std::fs::read_dir(Path::new("/run/netns")).ok()?;
    dir.flatten().find_map(|e| {
        let m = std::fs::metadata(e.path()).ok()?;
        (m.ino() == u64::from(netns)).then(|| e.file_name().to_string_lossy().into_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e8a1b2c9d0e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f";

    fn owner(text: &str) -> Option<(String, &'static str)> {
        cgroup_owner(text).map(|l| (l.name, l.source))
    }

    #[test]
    fn docker_systemd_and_cgroupfs_drivers() {
        assert_eq!(
            owner(&format!("0::/system.slice/docker-{ID}.scope\n")),
            Some(("docker/3f4e8a1b2c9d".into(), "docker"))
        );
        let v1 = format!(
            "12:pids:/docker/{ID}\n11:memory:/docker/{ID}\n1:name=systemd:/docker/{ID}\n0::/\n"
        );
        assert_eq!(owner(&v1), Some(("docker/3f4e8a1b2c9d".into(), "docker")));
    }

    #[test]
    fn kubernetes_pods_by_uid() {
        // systemd cgroup driver, containerd runtime (the pod sandbox's pause container).
        let systemd = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0d9a1c7e_5b2f_4c1a_9e3d_7f8a6b5c4d3e.slice/cri-containerd-{ID}.scope\n"
        );
        assert_eq!(
            owner(&systemd),
            Some((
                "pod/0d9a1c7e-5b2f-4c1a-9e3d-7f8a6b5c4d3e".into(),
                "kubernetes"
            ))
        );
        // Guaranteed QoS has no QoS slice.
        let guaranteed = format!(
            "0::/kubepods.slice/kubepods-pod0d9a1c7e_5b2f_4c1a_9e3d_7f8a6b5c4d3e.slice/crio-{ID}.scope\n"
        );
        assert_eq!(
            owner(&guaranteed),
            Some((
                "pod/0d9a1c7e-5b2f-4c1a-9e3d-7f8a6b5c4d3e".into(),
                "kubernetes"
            ))
        );
        // cgroupfs driver, cgroup v1.
        let cgroupfs = format!(
            "10:cpuset:/kubepods/burstable/pod0d9a1c7e-5b2f-4c1a-9e3d-7f8a6b5c4d3e/{ID}\n0::/\n"
        );
        assert_eq!(
            owner(&cgroupfs),
            Some((
                "pod/0d9a1c7e-5b2f-4c1a-9e3d-7f8a6b5c4d3e".into(),
                "kubernetes"
            ))
        );
    }

    #[test]
    fn other_runtimes_and_units() {
        assert_eq!(
            owner(&format!(
                "0::/system.slice/containerd.service/cri-containerd-{ID}.scope\n"
            )),
            Some(("containerd/3f4e8a1b2c9d".into(), "containerd"))
        );
        assert_eq!(
            owner(&format!("0::/machine.slice/libpod-{ID}.scope/container\n")),
            Some(("podman/3f4e8a1b2c9d".into(), "podman"))
        );
        assert_eq!(
            owner(&format!(
                "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope\n"
            )),
            Some(("podman/3f4e8a1b2c9d".into(), "podman"))
        );
        assert_eq!(
            owner("0::/system.slice/systemd-resolved.service\n"),
            Some(("systemd-resolved.service".into(), "systemd"))
        );
    }

    #[test]
    fn nothing_to_name() {
        assert_eq!(owner("0::/\n"), None);
        assert_eq!(
            owner("0::/user.slice/user-1000.slice/session-3.scope\n"),
            None
        );
        assert_eq!(owner(""), None);
        // Not a full container id, nor a pod uid.
        assert_eq!(owner("0::/system.slice/docker-abc.scope\n"), None);
        assert_eq!(
            owner("0::/kubepods.slice/kubepods-podnotauid.slice\n"),
            None
        );
        assert_eq!(owner(&format!("0::/elsewhere/{ID}\n")), None);
    }

    #[test]
    fn own_namespace_is_named() {
        let mut namer = NetnsNamer::new();
        let me = crate::netns::current_netns_inode().unwrap();
        let label = namer
            .name(me, Instant::now())
            .expect("the test's own netns has a name");
        if namer.host == Some(me) {
            assert_eq!(
                label,
                NetnsLabel {
                    name: "host".into(),
                    source: "host"
                }
            );
        } else {
            assert!(!label.name.is_empty());
        }
        // An inode no namespace has: no name.
        assert_eq!(namer.name(1, Instant::now()), None);
    }
}
