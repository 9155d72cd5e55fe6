//! Network-namespace helpers.
//!
//! - [`PrivateNetns`]: a fresh network namespace owned by one dedicated OS thread. The rest
//!   of the process stays in its own netns; only that thread calls `unshare(CLONE_NEWNET)`.
//!   Sockets created on that thread belong to the private netns for their whole life and can
//!   then be used (bind, connect, close) from any thread.
//! - [`resolve_netns`]: the CLI's `--netns PID|PATH|all`.
//! - [`read_port_range_in`]: `net.ipv4.ip_local_port_range` of another netns, read by a
//!   short-lived thread that `setns()`-es into it.

use std::{
    fs::File,
    io,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
    sync::mpsc,
    thread::JoinHandle,
};

use nix::sched::CloneFlags;

/// The sysctl file of the ephemeral port range. Opened by a thread, it is the file of that
/// thread's network namespace.
pub const PORT_RANGE_SYSCTL: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// The calling thread's netns link (not `/proc/self`, which is the main thread's).
const THREAD_SELF_NETNS: &str = "/proc/thread-self/ns/net";

const NETNS_HINT: &str = "expected /proc/PID/ns/net or /run/netns/NAME";

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error(
        "{op} failed: {source}; creating or entering a network namespace needs CAP_SYS_ADMIN \
         (run as root, e.g. with sudo)"
    )]
    Permission {
        op: &'static str,
        source: nix::Error,
    },
    #[error("{op} failed: {source}")]
    Sys {
        op: &'static str,
        source: nix::Error,
    },
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("{path} is not a network namespace ({hint})", path = .path.display(), hint = NETNS_HINT)]
    NotNetns { path: PathBuf },
    #[error("no process with pid {pid} (its netns would be /proc/{pid}/ns/net); check the pid with `ps -p {pid}`")]
    NoSuchProcess { pid: u32 },
    #[error("{path} does not exist ({hint})", path = .path.display(), hint = NETNS_HINT)]
    NotFound { path: PathBuf },
    #[error("cannot parse ip_local_port_range {text:?}: expected two port numbers \"LOW HIGH\"")]
    BadRange { text: String },
    #[error("invalid port range {lo}-{hi}: need 1 <= LOW <= HIGH <= 65535")]
    InvalidRange { lo: u16, hi: u16 },
    #[error("namespace inode {ino} of {path} does not fit in 32 bits", path = .path.display())]
    BadInode { ino: u64, path: PathBuf },
    #[error(
        "no /proc/PID/ns/net or /run/netns/NAME refers to netns inode {inode}; pass the netns \
         as a path (e.g. --netns /proc/PID/ns/net) instead"
    )]
    NoPathForInode { inode: u32 },
    #[error(
        "the thread of the private network namespace has exited (it panicked or failed to start)"
    )]
    ThreadGone,
    #[error("spawning a thread for the network namespace failed: {0}")]
    Spawn(io::Error),
}

fn io_err(what: impl Into<String>, source: io::Error) -> NetnsError {
    NetnsError::Io {
        what: what.into(),
        source,
    }
}

fn sys_err(op: &'static str, e: nix::Error) -> NetnsError {
    match e {
        nix::Error::EPERM | nix::Error::EACCES => NetnsError::Permission { op, source: e },
        _ => NetnsError::Sys { op, source: e },
    }
}

/// What `--netns` selects.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NetnsFilter {
    /// Every network namespace.
    All,
    /// One network namespace: its inode (as in `ls -Li /proc/PID/ns/net`) and a path that
    /// refers to it (kept so it can be entered, e.g. by [`read_port_range_in`]).
    One { inode: u32, path: PathBuf },
}

impl NetnsFilter {
    /// The inode to filter on, `None` for all namespaces.
    pub fn inode(&self) -> Option<u32> {
        match self {
            NetnsFilter::All => None,
            NetnsFilter::One { inode, .. } => Some(*inode),
        }
    }
}

/// Parse `--netns PID|PATH|all`.
///
/// `all` selects every netns; a number is a pid (its `/proc/PID/ns/net`); anything else is a
/// path that must be an nsfs file of a *network* namespace (`/proc/PID/ns/net`,
/// `/run/netns/NAME`, ...).
pub fn resolve_netns(spec: &str) -> Result<NetnsFilter, NetnsError> {
    let spec = spec.trim();
    if spec.eq_ignore_ascii_case("all") {
        return Ok(NetnsFilter::All);
    }
    if !spec.is_empty() && spec.bytes().all(|b| b.is_ascii_digit()) {
        let pid: u32 = spec.parse().map_err(|_| NetnsError::NotFound {
            path: PathBuf::from(format!("/proc/{spec}/ns/net")),
        })?;
        let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return Err(NetnsError::NoSuchProcess { pid });
        }
        let inode = netns_inode_of(&path)?;
        return Ok(NetnsFilter::One { inode, path });
    }
    let path = PathBuf::from(spec);
    let inode = netns_inode_of(&path)?;
    Ok(NetnsFilter::One { inode, path })
}

/// Inode of the network namespace that `path` refers to, after checking that it is one.
pub fn netns_inode_of(path: &Path) -> Result<u32, NetnsError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(NetnsError::NotFound {
                path: path.to_owned(),
            })
        }
        Err(e) => return Err(io_err(format!("opening {}", path.display()), e)),
    };
    if !is_net_nsfs(&file, path)? {
        return Err(NetnsError::NotNetns {
            path: path.to_owned(),
        });
    }
    let ino = file
        .metadata()
        .map_err(|e| io_err(format!("stat {}", path.display()), e))?
        .ino();
    u32::try_from(ino).map_err(|_| NetnsError::BadInode {
        ino,
        path: path.to_owned(),
    })
}

/// True when `file` is an nsfs file of a network namespace.
fn is_net_nsfs(file: &File, path: &Path) -> Result<bool, NetnsError> {
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the open fd, which `file` keeps
    // alive for the duration of the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::NS_GET_NSTYPE) };
    if rc >= 0 {
        return Ok(rc == libc::CLONE_NEWNET);
    }
    // Kernels before 4.11 lack NS_GET_NSTYPE: fall back to the filesystem magic plus the
    // `net:[N]` link text (only /proc/PID/ns/* links have one).
    let fs = nix::sys::statfs::fstatfs(file).map_err(|e| sys_err("fstatfs", e))?;
    if fs.filesystem_type() != nix::sys::statfs::NSFS_MAGIC {
        return Ok(false);
    }
    match std::fs::read_link(path) {
        Ok(target) => Ok(target.to_string_lossy().starts_with("net:[")),
        // A bind-mounted nsfs file (/run/netns/NAME) of unknown type: the name of its
        // directory is the best evidence left.
        Err(_) => Ok(path.parent() == Some(Path::new("/run/netns"))),
    }
}

fn inode_of_link(path: &str) -> Result<u32, NetnsError> {
    let ino = std::fs::metadata(path)
        .map_err(|e| io_err(format!("stat {path}"), e))?
        .ino();
    u32::try_from(ino).map_err(|_| NetnsError::BadInode {
        ino,
        path: PathBuf::from(path),
    })
}

/// Inode of the calling thread's network namespace.
pub fn current_netns_inode() -> Result<u32, NetnsError> {
    inode_of_link(THREAD_SELF_NETNS)
}

/// Parse the text of `ip_local_port_range` ("32768\t60999\n").
pub fn parse_port_range(text: &str) -> Result<(u16, u16), NetnsError> {
    let bad = || NetnsError::BadRange {
        text: text.to_owned(),
    };
    let mut it = text.split_whitespace();
    let lo: u16 = it.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    let hi: u16 = it.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    if it.next().is_some() {
        return Err(bad());
    }
    Ok((lo, hi))
}

/// The port range of the calling thread's netns.
pub fn read_port_range_here() -> Result<(u16, u16), NetnsError> {
    let text = std::fs::read_to_string(PORT_RANGE_SYSCTL)
        .map_err(|e| io_err(format!("reading {PORT_RANGE_SYSCTL}"), e))?;
    parse_port_range(&text)
}

/// Write the port range of the calling thread's netns. Only called on the thread of a
/// [`PrivateNetns`].
fn write_port_range_here(lo: u16, hi: u16) -> Result<(), NetnsError> {
    if lo == 0 || lo > hi {
        return Err(NetnsError::InvalidRange { lo, hi });
    }
    std::fs::write(PORT_RANGE_SYSCTL, format!("{lo} {hi}"))
        .map_err(|e| io_err(format!("writing \"{lo} {hi}\" to {PORT_RANGE_SYSCTL}"), e))
}

/// Where [`read_port_range_in`] reads from.
#[derive(Clone, Copy, Debug)]
pub enum NetnsTarget<'a> {
    /// A path to an nsfs file (`/proc/PID/ns/net`, `/run/netns/NAME`).
    Path(&'a Path),
    /// An inode only: a path is looked up with [`netns_path_for_inode`].
    Inode(u32),
    /// A private namespace of ours.
    Private(&'a PrivateNetns),
}

/// `net.ipv4.ip_local_port_range` of the given network namespace, as (low, high).
///
/// For a path or inode, a short-lived thread `setns()`-es into the namespace and reads the
/// sysctl there; the calling thread is not moved.
pub fn read_port_range_in(target: NetnsTarget<'_>) -> Result<(u16, u16), NetnsError> {
    match target {
        NetnsTarget::Private(ns) => ns.port_range(),
        NetnsTarget::Path(p) => read_port_range_at(p),
        NetnsTarget::Inode(inode) => {
            if current_netns_inode()? == inode {
                return read_port_range_here();
            }
            let path = netns_path_for_inode(inode)?;
            read_port_range_at(&path)
        }
    }
}

/// Runs `f` in the network namespace of nsfs file `path`: on this thread when it is this
/// thread's namespace, else on a short-lived thread that `setns()`-es into it (which
/// needs CAP_SYS_ADMIN). The calling thread is not moved.
pub fn run_in<F, R>(path: &Path, f: F) -> Result<R, NetnsError>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    if netns_inode_of(path)? == current_netns_inode()? {
        return Ok(f());
    }
    let file = File::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => NetnsError::NotFound {
            path: path.to_owned(),
        },
        _ => io_err(format!("opening {}", path.display()), e),
    })?;
    let handle = std::thread::Builder::new()
        .name("portwatch-setns".into())
        .spawn(move || -> Result<R, NetnsError> {
            nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                .map_err(|e| sys_err("setns(CLONE_NEWNET)", e))?;
            Ok(f())
        })
        .map_err(NetnsError::Spawn)?;
    handle.join().map_err(|_| NetnsError::ThreadGone)?
}

fn read_port_range_at(path: &Path) -> Result<(u16, u16), NetnsError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(NetnsError::NotFound {
                path: path.to_owned(),
            })
        }
        Err(e) => return Err(io_err(format!("opening {}", path.display()), e)),
    };
    if !is_net_nsfs(&file, path)? {
        return Err(NetnsError::NotNetns {
            path: path.to_owned(),
        });
    }
    let handle = std::thread::Builder::new()
        .name("portwatch-setns".into())
        .spawn(move || -> Result<(u16, u16), NetnsError> {
            nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                .map_err(|e| sys_err("setns(CLONE_NEWNET)", e))?;
            read_port_range_here()
        })
        .map_err(NetnsError::Spawn)?;
    handle.join().map_err(|_| NetnsError::ThreadGone)?
}

/// Find a path that refers to the netns with this inode: `/run/netns/*` first, then
/// `/proc/PID/ns/net` of every process, then `/proc/PID/task/TID/ns/net` of every thread.
pub fn netns_path_for_inode(inode: u32) -> Result<PathBuf, NetnsError> {
    let matches = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.ino() == u64::from(inode))
            .unwrap_or(false)
    };
    if let Ok(dir) = std::fs::read_dir("/run/netns") {
        for entry in dir.flatten() {
            let p = entry.path();
            if matches(&p) {
                return Ok(p);
            }
        }
    }
    let pids: Vec<String> = std::fs::read_dir("/proc")
        .map_err(|e| io_err("listing /proc", e))?
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    for pid in &pids {
        let p = PathBuf::from(format!("/proc/{pid}/ns/net"));
        if matches(&p) {
            return Ok(p);
        }
    }
    // A namespace only some thread is in (a process's helper thread that entered it).
    for pid in &pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let p = t.path().join("ns/net");
            if matches(&p) {
                return Ok(p);
            }
        }
    }
    Err(NetnsError::NoPathForInode { inode })
}

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A private network namespace with `lo` up, owned by a dedicated OS thread.
///
/// Created by `unshare(CLONE_NEWNET)` on that thread only; the other threads of the process
/// stay where they are. Dropping the guard ends the thread; the namespace disappears once
/// the last socket created in it is closed.
pub struct PrivateNetns {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    inode: u32,
}

impl std::fmt::Debug for PrivateNetns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateNetns")
            .field("inode", &self.inode)
            .finish()
    }
}

impl PrivateNetns {
    /// A fresh netns with `lo` up and the default port range.
    pub fn new() -> Result<Self, NetnsError> {
        Self::build(None)
    }

    /// A fresh netns with `lo` up and `net.ipv4.ip_local_port_range = lo hi` set inside it
    /// (the host's value is not touched).
    pub fn with_port_range(lo: u16, hi: u16) -> Result<Self, NetnsError> {
        Self::build(Some((lo, hi)))
    }

    fn build(range: Option<(u16, u16)>) -> Result<Self, NetnsError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<u32, NetnsError>>(1);
        let thread = std::thread::Builder::new()
            .name("portwatch-netns".into())
            .spawn(move || {
                let setup = (|| -> Result<u32, NetnsError> {
                    nix::sched::unshare(CloneFlags::CLONE_NEWNET)
                        .map_err(|e| sys_err("unshare(CLONE_NEWNET)", e))?;
                    bring_lo_up()?;
                    if let Some((lo, hi)) = range {
                        write_port_range_here(lo, hi)?;
                    }
                    current_netns_inode()
                })();
                let ok = setup.is_ok();
                // The receiver only disappears if `build` itself went away; nothing to do then.
                let _ = ready_tx.send(setup);
                if !ok {
                    return;
                }
                while let Ok(job) = rx.recv() {
                    job();
                }
            })
            .map_err(NetnsError::Spawn)?;
        let inode = match ready_rx.recv() {
            Ok(Ok(inode)) => inode,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(NetnsError::ThreadGone);
            }
        };
        Ok(PrivateNetns {
            tx: Some(tx),
            thread: Some(thread),
            inode,
        })
    }

    /// Inode of the namespace (st_ino of /proc/thread-self/ns/net as seen by its thread),
    /// the value the kernel reports as `net->ns.inum`.
    pub fn inode(&self) -> u32 {
        self.inode
    }

    /// Run `f` on the namespace's thread and return its result. A panic in `f` is resumed
    /// on the caller's thread; the namespace thread survives it.
    pub fn run<F, R>(&self, f: F) -> Result<R, NetnsError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let (rtx, rrx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = rtx.send(r);
        });
        let tx = self.tx.as_ref().ok_or(NetnsError::ThreadGone)?;
        tx.send(job).map_err(|_| NetnsError::ThreadGone)?;
        match rrx.recv() {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => Err(NetnsError::ThreadGone),
        }
    }

    /// An open handle of the namespace (its `/proc/thread-self/ns/net`). It keeps the
    /// namespace, and so its inode number, alive after this guard and all its sockets are
    /// gone, and can be passed to `setns()`.
    pub fn ns_file(&self) -> Result<File, NetnsError> {
        self.run(|| File::open(THREAD_SELF_NETNS))?.map_err(|e| {
            io_err(
                format!("opening {THREAD_SELF_NETNS} of the private netns"),
                e,
            )
        })
    }

    /// A path naming the namespace while this guard lives: its thread's
    /// `/proc/PID/task/TID/ns/net`.
    pub fn path(&self) -> Result<PathBuf, NetnsError> {
        self.run(|| {
            PathBuf::from(format!(
                "/proc/{}/task/{}/ns/net",
                std::process::id(),
                nix::unistd::gettid()
            ))
        })
    }

    /// The namespace's `ip_local_port_range`.
    pub fn port_range(&self) -> Result<(u16, u16), NetnsError> {
        self.run(read_port_range_here)?
    }

    /// Set the namespace's `ip_local_port_range` (inside it only).
    pub fn set_port_range(&self, lo: u16, hi: u16) -> Result<(), NetnsError> {
        self.run(move || write_port_range_here(lo, hi))?
    }

    /// Create a socket inside the namespace (it stays there whichever thread uses it later).
    pub fn socket(
        &self,
        domain: socket2::Domain,
        ty: socket2::Type,
        protocol: Option<socket2::Protocol>,
    ) -> Result<socket2::Socket, NetnsError> {
        self.run(move || socket2::Socket::new(domain, ty, protocol))?
            .map_err(|e| io_err("creating a socket in the private netns", e))
    }
}

impl Drop for PrivateNetns {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop.
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `ip link set lo up` for the calling thread's netns: an RTM_SETLINK request over
/// rtnetlink, acknowledged by the kernel.
fn bring_lo_up() -> Result<(), NetnsError> {
    use netlink_packet_core::{
        NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST,
    };
    use netlink_packet_route::{
        link::{LinkFlags, LinkMessage},
        RouteNetlinkMessage,
    };
    use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

    let index = nix::net::if_::if_nametoindex("lo")
        .map_err(|e| io_err("looking up the index of lo", e.into()))?;
    let mut link = LinkMessage::default();
    link.header.index = index;
    link.header.flags = LinkFlags::Up;
    link.header.change_mask = LinkFlags::Up;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK;
    let mut req = NetlinkMessage::new(
        header,
        NetlinkPayload::from(RouteNetlinkMessage::SetLink(link)),
    );
    req.finalize();
    let mut buf = vec![0; req.header.length as usize];
    req.serialize(&mut buf);

    let mut sock =
        Socket::new(NETLINK_ROUTE).map_err(|e| io_err("opening an rtnetlink socket", e))?;
    sock.bind_auto()
        .map_err(|e| io_err("binding an rtnetlink socket", e))?;
    sock.connect(&SocketAddr::new(0, 0))
        .map_err(|e| io_err("connecting an rtnetlink socket", e))?;
    sock.send(&buf, 0)
        .map_err(|e| io_err("sending RTM_SETLINK (lo up)", e))?;
    let mut reply = vec![0; 4096];
    let n = sock
        .recv(&mut &mut reply[..], 0)
        .map_err(|e| io_err("reading the RTM_SETLINK acknowledgement", e))?;
    let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply[..n]).map_err(|e| {
        io_err(
            "parsing the RTM_SETLINK acknowledgement",
            io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
        )
    })?;
    match msg.payload {
        NetlinkPayload::Error(e) if e.code.is_some() => {
            Err(io_err("RTM_SETLINK (lo up)", e.to_io()))
        }
        NetlinkPayload::Error(_) => Ok(()),
        other => Err(io_err(
            "RTM_SETLINK (lo up)",
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected reply {other:?}"),
            ),
        )),
    }
}

/// True when the process runs as root (effective uid 0). Used by tests that need
/// namespaces.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Root-only tests call this first: `false` means skip (the reason is printed). With
    /// `CI=true` a missing privilege is a failure, not a skip.
    pub(crate) fn root_or_skip(test: &str) -> bool {
        if is_root() {
            return true;
        }
        let msg = format!("{test}: needs root (CAP_SYS_ADMIN for unshare(CLONE_NEWNET)); skipped");
        if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
            panic!("{msg} -- but CI=true, so this is a failure");
        }
        eprintln!("{msg}");
        false
    }

    #[test]
    fn parse_range_accepts_kernel_format() {
        assert_eq!(parse_port_range("32768\t60999\n").unwrap(), (32768, 60999));
        assert_eq!(parse_port_range("60000 60000").unwrap(), (60000, 60000));
        assert!(parse_port_range("60000").is_err());
        assert!(parse_port_range("1 2 3").is_err());
        assert!(parse_port_range("a b").is_err());
        assert!(parse_port_range("70000 70001").is_err());
    }

    #[test]
    fn permission_errors_name_the_capability() {
        let e = sys_err("unshare(CLONE_NEWNET)", nix::Error::EPERM);
        assert!(matches!(e, NetnsError::Permission { .. }));
        let msg = e.to_string();
        assert!(
            msg.contains("unshare(CLONE_NEWNET)") && msg.contains("CAP_SYS_ADMIN"),
            "{msg}"
        );
        assert!(matches!(
            sys_err("setns", nix::Error::EINVAL),
            NetnsError::Sys { .. }
        ));
    }

    #[test]
    fn resolve_all_and_errors() {
        assert_eq!(resolve_netns("all").unwrap(), NetnsFilter::All);
        assert_eq!(resolve_netns("all").unwrap().inode(), None);
        let e = resolve_netns("/etc/hostname").unwrap_err();
        assert!(matches!(e, NetnsError::NotNetns { .. }), "{e}");
        assert!(e.to_string().contains("is not a network namespace"), "{e}");
        assert!(e.to_string().contains("/run/netns/NAME"), "{e}");
        let e = resolve_netns("/nonexistent/netns").unwrap_err();
        assert!(matches!(e, NetnsError::NotFound { .. }), "{e}");
        let e = resolve_netns("4294967295").unwrap_err();
        assert!(
            matches!(e, NetnsError::NoSuchProcess { .. } | NetnsError::Io { .. }),
            "{e}"
        );
    }

    #[test]
    fn resolve_own_pid_and_path() {
        // The test threads share the main thread's netns.
        let me = current_netns_inode().unwrap();
        let pid = std::process::id().to_string();
        let f = resolve_netns(&pid).unwrap();
        assert_eq!(f.inode(), Some(me));
        let f = resolve_netns("/proc/self/ns/net").unwrap();
        assert_eq!(f.inode(), Some(me));
        // Another namespace type is refused.
        let e = resolve_netns("/proc/self/ns/uts").unwrap_err();
        assert!(matches!(e, NetnsError::NotNetns { .. }), "{e}");
    }

    #[test]
    fn port_range_of_own_netns() {
        let here = read_port_range_here().unwrap();
        let me = current_netns_inode().unwrap();
        assert_eq!(read_port_range_in(NetnsTarget::Inode(me)).unwrap(), here);
    }

    #[test]
    fn private_netns_is_private_and_host_range_untouched() {
        if !root_or_skip("private_netns_is_private_and_host_range_untouched") {
            return;
        }
        let host_before = std::fs::read_to_string(PORT_RANGE_SYSCTL).unwrap();
        let host_inode = current_netns_inode().unwrap();
        let ns = PrivateNetns::with_port_range(60000, 60000).unwrap();
        assert_ne!(ns.inode(), host_inode);
        // This thread did not move.
        assert_eq!(current_netns_inode().unwrap(), host_inode);
        assert_eq!(ns.run(current_netns_inode).unwrap().unwrap(), ns.inode());
        assert_eq!(ns.port_range().unwrap(), (60000, 60000));
        assert_eq!(
            read_port_range_in(NetnsTarget::Private(&ns)).unwrap(),
            (60000, 60000)
        );
        // The namespace thread's /proc/PID/task/TID/ns/net is a path to the private netns.
        let tid_path = ns
            .run(|| {
                format!(
                    "/proc/{}/task/{}/ns/net",
                    std::process::id(),
                    nix::unistd::gettid()
                )
            })
            .unwrap();
        assert_eq!(netns_inode_of(Path::new(&tid_path)).unwrap(), ns.inode());
        assert_eq!(
            read_port_range_in(NetnsTarget::Path(Path::new(&tid_path))).unwrap(),
            (60000, 60000)
        );
        ns.set_port_range(61000, 61010).unwrap();
        assert_eq!(ns.port_range().unwrap(), (61000, 61010));
        assert!(ns.set_port_range(5, 4).is_err());
        // lo is up: a listener and a connect on loopback work inside.
        let l = ns
            .socket(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .unwrap();
        l.bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
        l.listen(8).unwrap();
        let addr = l.local_addr().unwrap();
        let c = ns
            .socket(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .unwrap();
        c.connect(&addr).unwrap();
        let local = c.local_addr().unwrap().as_socket().unwrap();
        assert!((61000..=61010).contains(&local.port()), "{local}");
        // A panic inside run() reaches the caller, and the thread survives.
        let r =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ns.run(|| panic!("boom"))));
        assert!(r.is_err());
        assert_eq!(ns.run(|| 7).unwrap(), 7);
        drop(ns);
        assert_eq!(
            std::fs::read_to_string(PORT_RANGE_SYSCTL).unwrap(),
            host_before
        );
    }

    #[test]
    fn two_private_netns_differ() {
        if !root_or_skip("two_private_netns_differ") {
            return;
        }
        let a = PrivateNetns::new().unwrap();
        let b = PrivateNetns::new().unwrap();
        assert_ne!(a.inode(), b.inode());
        // A pinned namespace outlives its guard: its handle still names the same inode.
        let pin = a.ns_file().unwrap();
        let inode = a.inode();
        drop(a);
        assert_eq!(pin.metadata().unwrap().ino(), u64::from(inode));
        let c = PrivateNetns::new().unwrap();
        assert_ne!(c.inode(), inode);
    }
}
