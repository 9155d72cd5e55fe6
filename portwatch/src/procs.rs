//! Which processes hold which sockets: every `/proc/PID/fd/N` that links to
//! `socket:[INODE]`, as `ss -p` finds them. Socket inodes are unique system-wide, so one
//! scan serves every network namespace; several processes (after fork, or fd passing)
//! can hold one socket. Threads share their process's descriptor table, so only
//! processes are scanned.
//!
//! A scan is a snapshot like the bind-table walk: a process may open or close sockets
//! while it runs. Unreadable entries (a process that exits during the scan, or one the
//! caller may not inspect without root) are skipped.

use std::{
    collections::HashMap,
    fs,
    path::Path,
    time::{Duration, Instant},
};

use crate::model::{Holder, Snapshot};

/// Socket inode -> the processes holding it (by pid, then fd).
#[derive(Clone, Debug, Default)]
pub struct ProcessTable {
    by_inode: HashMap<u64, Vec<Holder>>,
    scanned: Option<Instant>,
}

/// The inode of a `/proc/PID/fd/N` link text `socket:[INODE]`.
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

impl ProcessTable {
    /// Scans `/proc`.
    pub fn scan() -> ProcessTable {
        Self::scan_root(Path::new("/proc"))
    }

    /// Scans a procfs mounted at `root`.
    pub fn scan_root(root: &Path) -> ProcessTable {
        let mut by_inode: HashMap<u64, Vec<Holder>> = HashMap::new();
        let Ok(dir) = fs::read_dir(root) else {
            return ProcessTable::default();
        };
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let proc_dir = entry.path();
            let Ok(fds) = fs::read_dir(proc_dir.join("fd")) else {
                continue;
            };
            let mut comm: Option<String> = None;
            for fd in fds.flatten() {
                let Some(n) = fd.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                    continue;
                };
                let Ok(link) = fs::read_link(fd.path()) else {
                    continue;
                };
                let Some(inode) = link.to_str().and_then(socket_inode) else {
                    continue;
                };
                let comm = comm
                    .get_or_insert_with(|| {
                        fs::read_to_string(proc_dir.join("comm"))
                            .map(|c| c.trim_end_matches('\n').to_owned())
                            .unwrap_or_default()
                    })
                    .clone();
                by_inode
                    .entry(inode)
                    .or_default()
                    .push(Holder { pid, comm, fd: n });
            }
        }
        for holders in by_inode.values_mut() {
            holders.sort();
        }
        ProcessTable {
            by_inode,
            scanned: Some(Instant::now()),
        }
    }

    /// The processes holding the socket with this inode (empty when none does).
    pub fn holders(&self, inode: u64) -> &[Holder] {
        self.by_inode.get(&inode).map_or(&[], Vec::as_slice)
    }

    /// Whether a socket with this inode was seen.
    pub fn knows(&self, inode: u64) -> bool {
        self.by_inode.contains_key(&inode)
    }

    /// How long ago the scan ran (`None`: never).
    pub fn age(&self) -> Option<Duration> {
        self.scanned.map(|t| t.elapsed())
    }

    /// Fills in the holders of every owner of `snap`.
    pub fn fill(&self, snap: &mut Snapshot) {
        for b in &mut snap.buckets {
            for a in &mut b.addresses {
                for o in &mut a.owners {
                    o.holders = o
                        .inode
                        .map(|i| self.holders(i).to_vec())
                        .unwrap_or_default();
                }
            }
        }
    }
}

/// How old a scan must be before a socket it lacks makes [`CachedProcessTable::covering`]
/// scan again.
pub const RESCAN_AFTER: Duration = Duration::from_millis(100);

/// A process table rescanned on demand, at most once per `min_interval`: for streams
/// that explain failures as they happen, where each failure may name sockets made since
/// the last scan.
#[derive(Debug)]
pub struct CachedProcessTable {
    table: ProcessTable,
    min_interval: Duration,
}

impl CachedProcessTable {
    pub fn new(min_interval: Duration) -> CachedProcessTable {
        CachedProcessTable {
            table: ProcessTable::default(),
            min_interval,
        }
    }

    /// Rescans when the last scan is older than the interval.
    pub fn refresh(&mut self) {
        if self.table.age().is_none_or(|a| a >= self.min_interval) {
            self.table = ProcessTable::scan();
        }
    }

    /// The table, rescanned first when one of `inodes` is unknown to it (a socket made
    /// since the last scan) and that scan is older than [`RESCAN_AFTER`].
    pub fn covering(&mut self, inodes: impl IntoIterator<Item = u64>) -> &ProcessTable {
        let missing = inodes.into_iter().any(|i| !self.table.knows(i));
        if missing && self.table.age().is_none_or(|a| a >= RESCAN_AFTER) {
            self.table = ProcessTable::scan();
        }
        &self.table
    }
}

#[cfg(test)]
mod tests {
    use std::os::{fd::AsRawFd, unix::fs::MetadataExt};

    use super::*;

    #[test]
    fn parses_socket_links() {
        assert_eq!(socket_inode("socket:[12345]"), Some(12345));
        assert_eq!(socket_inode("socket:[]"), None);
        assert_eq!(socket_inode("pipe:[12345]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
    }

    /// A socket this test opens is found under this process, with its fd and name.
    #[test]
    fn finds_this_process_socket() {
        let s = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback socket");
        let fd = s.as_raw_fd();
        let inode = fs::metadata(format!("/proc/self/fd/{fd}"))
            .expect("stat of the socket fd")
            .ino();
        let table = ProcessTable::scan();
        let me = std::process::id();
        let holders = table.holders(inode);
        assert!(
            holders.iter().any(|h| h.pid == me && h.fd == fd as u32),
            "{holders:?}"
        );
        let comm = fs::read_to_string("/proc/self/comm").expect("comm");
        assert!(holders.iter().all(|h| h.comm == comm.trim_end()));
        assert!(table.holders(u64::MAX).is_empty());
    }
}
