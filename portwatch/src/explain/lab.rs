//! Sockets made to order in a private network namespace: owners of a port in a given
//! state (bound, listening, connected, TIME-WAIT, an accepted connection left behind by a
//! closed listener), created under a given uid, with the options the rules read back from
//! the kernel afterwards.

use std::{
    collections::BTreeMap,
    io::{self, Read as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::{Duration, Instant},
};

use socket2::{Domain, SockAddr, Socket, Type};

use super::sock::{Family, Owner, OwnerState, SharingOpts, Sock};
use crate::netns::{NetnsError, PrivateNetns};

/// A failure to set sockets up as asked (not a verdict about the rules).
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("socket set-up: {0}")]
    Setup(String),
    #[error(transparent)]
    Ask(#[from] super::ask::AskError),
}

/// What an owner does after bind().
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// bind() only.
    Bound,
    /// bind() + listen().
    Listen,
    /// bind() + connect() to a helper listener of the namespace.
    Connected,
    /// As `Connected`, then closed first: the owner's TIME-WAIT stays on the port.
    TimeWait,
    /// bind() + listen(), one connection accepted, then the listener closed: the accepted
    /// socket stays on the port.
    ServerConn,
    /// As `ServerConn`, then the accepted socket closes first: its TIME-WAIT stays.
    ServerTimeWait,
}

/// How to make one socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recipe {
    pub addr: IpAddr,
    pub reuseaddr: bool,
    pub reuseport: bool,
    pub uid: u32,
    /// `IPV6_V6ONLY` before bind() (IPv6 sockets only).
    pub v6only: bool,
    pub role: Role,
}

impl Recipe {
    pub fn describe(&self) -> String {
        let mut flags = Vec::new();
        if self.reuseaddr {
            flags.push("SO_REUSEADDR");
        }
        if self.reuseport {
            flags.push("SO_REUSEPORT");
        }
        if self.v6only {
            flags.push("IPV6_V6ONLY");
        }
        let addr = match self.addr {
            IpAddr::V6(a) => format!("[{a}]"),
            IpAddr::V4(a) => a.to_string(),
        };
        format!(
            "{:?} {addr} uid {} {}",
            self.role,
            self.uid,
            if flags.is_empty() {
                "-".into()
            } else {
                flags.join("+")
            }
        )
    }
}

/// One owner made from a recipe: the recipe as it came out (a listen() the kernel refused
/// leaves `Bound`), the owner as the rules see it, and the sockets that keep it alive.
pub struct Held {
    pub recipe: Recipe,
    pub owner: Owner,
    /// The owner socket itself while it is open (none for TIME-WAIT).
    pub socket: Option<Socket>,
    /// Helper sockets (listener, peer) that keep the owner's connection up.
    pub helpers: Vec<Socket>,
}

/// A private namespace with the sockets made in it.
pub struct Lab {
    pub ns: PrivateNetns,
    held: Vec<Held>,
    /// Family of the per-address bucket of each address (IPv4 and v4-mapped forms
    /// counted as one): that of the socket that created it (see `Owner::bucket_family`).
    bucket_families: BTreeMap<IpAddr, Family>,
    next_helper_port: u16,
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Io { what, source }
}

fn domain(addr: IpAddr) -> Domain {
    if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    }
}

/// The errno of a failed call (`-1` when the error carries none).
pub fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

impl Lab {
    pub fn new() -> Result<Lab, LabError> {
        Ok(Lab {
            ns: PrivateNetns::new()?,
            held: Vec::new(),
            bucket_families: BTreeMap::new(),
            next_helper_port: 5000,
        })
    }

    /// Writes a sysctl of the namespace (`net/ipv4/tcp_tw_reuse`, ...), inside it only.
    pub fn sysctl(&self, name: &str, value: &str) -> Result<(), LabError> {
        let path = format!("/proc/sys/{name}");
        let v = value.to_owned();
        let p = path.clone();
        self.ns
            .run(move || std::fs::write(&p, v))?
            .map_err(io_err(format!(
                "writing {value:?} to {path} in the private netns"
            )))
    }

    /// A TCP socket of `addr`'s family created under `uid` (its `sk_uid`), with options set.
    pub fn socket(
        &self,
        addr: IpAddr,
        reuseaddr: bool,
        reuseport: bool,
        uid: u32,
        v6only: bool,
    ) -> Result<Socket, LabError> {
        let d = domain(addr);
        let made = self.ns.run(move || -> io::Result<Socket> {
            // SAFETY: setfsuid() changes only this thread's filesystem uid (the uid a new
            // socket inode, and so sk_uid, gets); it is set back before the closure returns.
            let prev = unsafe { libc::setfsuid(uid) };
            let s = Socket::new(d, Type::STREAM, None);
            // SAFETY: as above, restoring the previous filesystem uid.
            unsafe { libc::setfsuid(prev as libc::uid_t) };
            let s = s?;
            s.set_reuse_address(reuseaddr)?;
            s.set_reuse_port(reuseport)?;
            if d == Domain::IPV6 {
                s.set_only_v6(v6only)?;
            }
            Ok(s)
        })?;
        made.map_err(io_err("creating a socket in the private netns"))
    }

    /// The owner as the rules see it, read back from the kernel.
    pub fn owner_of(s: &Socket, r: &Recipe, state: OwnerState) -> Result<Owner, LabError> {
        let local = s
            .local_addr()
            .map_err(io_err("getsockname"))?
            .as_socket()
            .ok_or_else(|| LabError::Setup("getsockname gave no inet address".into()))?;
        let v6only = if r.addr.is_ipv6() {
            s.only_v6().map_err(io_err("getsockopt(IPV6_V6ONLY)"))?
        } else {
            false
        };
        let remote = s.peer_addr().ok().and_then(|a| a.as_socket());
        Ok(Owner {
            sock: Sock::new(
                local.ip(),
                SharingOpts {
                    reuseaddr: r.reuseaddr,
                    reuseport: r.reuseport,
                    uid: r.uid,
                    v6only,
                    bound_dev: 0,
                },
            ),
            state,
            remote,
            bucket_family: None,
            connect_bind: None,
        })
    }

    /// The owners of the port as they stand.
    pub fn owners(&self) -> Vec<Owner> {
        self.held
            .iter()
            .map(|h| Owner {
                bucket_family: self
                    .bucket_families
                    .get(&h.owner.sock.local.canonical())
                    .copied(),
                ..h.owner
            })
            .collect()
    }

    /// The owners made so far, in order.
    pub fn held(&self) -> &[Held] {
        &self.held
    }

    /// The namespace as `explain` addresses it (`--netns /proc/PID/task/TID/ns/net`).
    pub fn target(&self) -> Result<super::ask::Target, LabError> {
        Ok(super::ask::Target {
            inode: self.ns.inode(),
            path: self.ns.path()?,
        })
    }

    /// The owner an explanation names: by inode for a socket that has one, else (a
    /// TIME-WAIT socket) by local and remote address.
    pub fn index_of(&self, o: &crate::model::NamedOwner) -> Option<usize> {
        self.held.iter().position(|h| match (&h.socket, o.inode) {
            (Some(s), Some(ino)) => socket_inode(s) == Some(ino),
            (None, None) => {
                h.owner.sock.local.canonical() == o.local.ip()
                    && h.owner.remote.map(canonical) == o.remote.map(canonical)
            }
            _ => false,
        })
    }

    /// Adds an owner. A per-address bucket lives while it has owners: buckets of
    /// addresses no owner holds any more are gone, and the new owner creates its own
    /// bucket unless one exists for its address.
    pub fn push(&mut self, h: Held) -> usize {
        self.held.push(h);
        self.forget_empty_buckets();
        let last = &self.held[self.held.len() - 1].owner.sock.local;
        self.bucket_families
            .entry(last.canonical())
            .or_insert(last.family());
        self.held.len() - 1
    }

    /// Closes owner `i` (with a reset, so a connected owner leaves no TIME-WAIT). `false`
    /// when it is a TIME-WAIT socket, which cannot be closed.
    pub fn close(&mut self, i: usize) -> bool {
        let Some(h) = self.held.get_mut(i) else {
            return false;
        };
        let Some(s) = h.socket.take() else {
            return false;
        };
        let _ = s.set_linger(Some(Duration::ZERO));
        drop(s);
        self.held.remove(i);
        self.forget_empty_buckets();
        true
    }

    fn forget_empty_buckets(&mut self) {
        let used: Vec<IpAddr> = self
            .held
            .iter()
            .map(|h| h.owner.sock.local.canonical())
            .collect();
        self.bucket_families.retain(|a, _| used.contains(a));
    }

    /// A dual-stack listener on `[::]:port` for owners to connect to.
    fn helper_listener(&mut self) -> Result<(Socket, u16), LabError> {
        let port = self.next_helper_port;
        self.next_helper_port += 1;
        let any: IpAddr = Ipv6Addr::UNSPECIFIED.into();
        let l = self.socket(any, false, false, 0, false)?;
        l.bind(&SockAddr::from(SocketAddr::new(any, port)))
            .map_err(io_err(format!("binding helper [::]:{port}")))?;
        l.listen(16).map_err(io_err("listen on the helper"))?;
        Ok((l, port))
    }

    /// Where a socket bound to `local` reaches the helper on `port`.
    fn helper_target(local: IpAddr, port: u16) -> SocketAddr {
        match local {
            IpAddr::V4(_) => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port),
            IpAddr::V6(a) if a.to_ipv4_mapped().is_some() => {
                SocketAddr::new(Ipv4Addr::LOCALHOST.to_ipv6_mapped().into(), port)
            }
            IpAddr::V6(_) => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port),
        }
    }

    /// Where a client reaches a listener bound to `local`.
    fn listener_target(local: IpAddr, port: u16) -> SocketAddr {
        match local {
            IpAddr::V4(a) if a.is_unspecified() => {
                SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)
            }
            IpAddr::V4(a) => SocketAddr::new(a.into(), port),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) if v4.is_unspecified() => {
                    SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)
                }
                Some(v4) => SocketAddr::new(v4.into(), port),
                None if a.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port),
                None => SocketAddr::new(a.into(), port),
            },
        }
    }

    /// Waits until the namespace shows a TIME-WAIT socket on (`local_port`, `remote`).
    fn wait_time_wait(&self, local_port: u16, remote_port: u16) -> Result<(), LabError> {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let found = self
                .ns
                .run(move || tcp_table_has(local_port, remote_port, 6))?;
            if found {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(LabError::Setup(format!(
                    "no TIME-WAIT socket on local port {local_port} / remote port {remote_port} after 3 s"
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Binds `s` (made from `r`) to `r.addr:port`.
    pub fn bind(s: &Socket, addr: IpAddr, port: u16) -> io::Result<()> {
        s.bind(&SockAddr::from(SocketAddr::new(addr, port)))
    }

    /// Takes a bound socket (made from `r`) through the rest of its role and returns the
    /// held owner; `listen` is what listen() returned, for the roles that listen.
    pub fn finish(
        &mut self,
        s: Socket,
        mut r: Recipe,
        port: u16,
        listen: Option<io::Result<()>>,
    ) -> Result<Held, LabError> {
        match r.role {
            Role::Bound => {
                let owner = Self::owner_of(&s, &r, OwnerState::Other)?;
                Ok(Held {
                    recipe: r,
                    owner,
                    socket: Some(s),
                    helpers: Vec::new(),
                })
            }
            Role::Listen | Role::ServerConn | Role::ServerTimeWait => {
                match listen {
                    Some(Ok(())) => {}
                    _ => {
                        // The kernel refused listen(): the socket stays a bound owner.
                        r.role = Role::Bound;
                        let owner = Self::owner_of(&s, &r, OwnerState::Other)?;
                        return Ok(Held {
                            recipe: r,
                            owner,
                            socket: Some(s),
                            helpers: Vec::new(),
                        });
                    }
                }
                if r.role == Role::Listen {
                    let owner = Self::owner_of(&s, &r, OwnerState::Listen)?;
                    return Ok(Held {
                        recipe: r,
                        owner,
                        socket: Some(s),
                        helpers: Vec::new(),
                    });
                }
                let local = s
                    .local_addr()
                    .map_err(io_err("getsockname"))?
                    .as_socket()
                    .map(|a| a.ip())
                    .unwrap_or(r.addr);
                let target = Self::listener_target(local, port);
                let client = self.socket(target.ip(), false, false, 0, false)?;
                client
                    .connect(&SockAddr::from(target))
                    .map_err(io_err(format!("connecting to the listener at {target}")))?;
                let child = self
                    .accept_as(s, r.uid)
                    .map_err(io_err(format!("accepting on {}", r.describe())))?;
                let owner = Self::owner_of(&child, &r, OwnerState::Other)?;
                if r.role == Role::ServerConn {
                    return Ok(Held {
                        recipe: r,
                        owner,
                        socket: Some(child),
                        helpers: vec![client],
                    });
                }
                // The accepted side closes first and keeps the TIME-WAIT.
                let peer_port = owner.remote.map_or(0, |a| a.port());
                drop(child);
                drain_to_eof(&client)?;
                drop(client);
                self.wait_time_wait(port, peer_port)?;
                Ok(Held {
                    recipe: r,
                    owner: Owner {
                        state: OwnerState::TimeWait,
                        ..owner
                    },
                    socket: None,
                    helpers: Vec::new(),
                })
            }
            Role::Connected | Role::TimeWait => {
                let (helper, hport) = self.helper_listener()?;
                let local = s
                    .local_addr()
                    .map_err(io_err("getsockname"))?
                    .as_socket()
                    .map(|a| a.ip())
                    .unwrap_or(r.addr);
                let target = Self::helper_target(local, hport);
                if let Err(e) = s.connect(&SockAddr::from(target)) {
                    return Err(LabError::Setup(format!(
                        "{}: connect to the helper at {target} failed: {e}",
                        r.describe()
                    )));
                }
                let (child, _) = helper.accept().map_err(io_err("accepting on the helper"))?;
                let owner = Self::owner_of(&s, &r, OwnerState::Other)?;
                if r.role == Role::Connected {
                    return Ok(Held {
                        recipe: r,
                        owner,
                        socket: Some(s),
                        helpers: vec![helper, child],
                    });
                }
                drop(s);
                drain_to_eof(&child)?;
                drop(child);
                self.wait_time_wait(port, hport)?;
                Ok(Held {
                    recipe: r,
                    owner: Owner {
                        state: OwnerState::TimeWait,
                        ..owner
                    },
                    socket: None,
                    helpers: vec![helper],
                })
            }
        }
    }

    /// accept() on `listener` by a thread running as `uid`, as the server owning the
    /// listener would: the accepted socket's `sk_uid` is the accepting task's fsuid
    /// (`sock_graft()`), not the listener's. The listener is closed afterwards.
    fn accept_as(&self, listener: Socket, uid: u32) -> io::Result<Socket> {
        let r = self.ns.run(move || -> io::Result<Socket> {
            listener.set_read_timeout(Some(Duration::from_secs(3)))?;
            // SAFETY: setfsuid() changes only this thread's filesystem uid, the uid the
            // accepted socket's inode gets; it is set back before the closure returns.
            let prev = unsafe { libc::setfsuid(uid) };
            let res = listener.accept();
            // SAFETY: as above, restoring the previous filesystem uid.
            unsafe { libc::setfsuid(prev as libc::uid_t) };
            drop(listener);
            res.map(|(c, _)| c)
        });
        match r {
            Ok(res) => res,
            Err(e) => Err(io::Error::other(e.to_string())),
        }
    }

    /// Makes an owner from `r` without judging anything. `Ok(None)` when the kernel
    /// refuses its bind().
    pub fn realize(&mut self, r: Recipe, port: u16) -> Result<Option<usize>, LabError> {
        let s = self.socket(r.addr, r.reuseaddr, r.reuseport, r.uid, r.v6only)?;
        if Self::bind(&s, r.addr, port).is_err() {
            return Ok(None);
        }
        let listen = match r.role {
            Role::Listen | Role::ServerConn | Role::ServerTimeWait => Some(s.listen(16)),
            _ => None,
        };
        let held = self.finish(s, r, port, listen)?;
        Ok(Some(self.push(held)))
    }

    /// A socket for connect(): bound to `src` with `IP_BIND_ADDRESS_NO_PORT` when `src` is
    /// given (the port is still chosen by connect()).
    pub fn connect_socket(
        &self,
        family_of: IpAddr,
        src: Option<IpAddr>,
    ) -> Result<Socket, LabError> {
        let s = self.socket(family_of, false, false, 0, false)?;
        if let Some(src) = src {
            crate::sockopt::set_bind_address_no_port(&s)
                .map_err(io_err("setsockopt(IP_BIND_ADDRESS_NO_PORT)"))?;
            Self::bind(&s, src, 0).map_err(io_err(format!(
                "binding {src}:0 with IP_BIND_ADDRESS_NO_PORT"
            )))?;
        }
        Ok(s)
    }

    /// A listener on `addr:port` (plain options).
    pub fn listener(&self, addr: IpAddr, port: u16) -> Result<Socket, LabError> {
        let l = self.socket(addr, false, false, 0, false)?;
        Self::bind(&l, addr, port)
            .map_err(io_err(format!("binding a listener on {addr}:{port}")))?;
        l.listen(256).map_err(io_err("listen"))?;
        Ok(l)
    }

    /// Waits for a TIME-WAIT socket on (`local_port`, `remote_port`).
    pub fn expect_time_wait(&self, local_port: u16, remote_port: u16) -> Result<(), LabError> {
        self.wait_time_wait(local_port, remote_port)
    }
}

/// The inode of a socket (`socket:[N]` in /proc/PID/fd).
pub fn socket_inode(s: &Socket) -> Option<u64> {
    nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(s))
        .ok()
        .map(|st| st.st_ino)
}

/// A socket address with IPv4 and v4-mapped forms made equal.
pub fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// Reads until the peer's FIN (with a deadline).
pub fn drain_to_eof(s: &Socket) -> Result<(), LabError> {
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(io_err("SO_RCVTIMEO"))?;
    let mut buf = [0u8; 64];
    let mut r: &Socket = s;
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(io_err("waiting for the peer's FIN")(e)),
        }
    }
}

/// True when the calling thread's netns has a TCP socket in `state` (kernel number) on
/// (`local_port`, `remote_port`), per `/proc/thread-self/net/tcp{,6}`.
fn tcp_table_has(local_port: u16, remote_port: u16, state: u8) -> bool {
    ["tcp", "tcp6"].iter().any(|f| {
        let Ok(text) = std::fs::read_to_string(format!("/proc/thread-self/net/{f}")) else {
            return false;
        };
        text.lines().skip(1).any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let port_of = |c: &str| {
                c.rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
            };
            cols.len() > 3
                && port_of(cols[1]) == Some(local_port)
                && port_of(cols[2]) == Some(remote_port)
                && u8::from_str_radix(cols[3], 16).ok() == Some(state)
        })
    })
}
