//! The command path of `portwatch explain bind` / `explain connect`: check the request
//! against the target namespace (the address must be one of its local addresses), read
//! the port's owners (or the whole range) from the kernel with a verbose snapshot, find
//! the processes holding them, and explain with the running kernel's rules. The
//! generated kernel-judged cases call the same functions.
//!
//! What is read without entering the namespace: its buckets and owners, its
//! `ip_local_port_range`, `ip_local_reserved_ports` and `tcp_tw_reuse` (eBPF, from its
//! `struct net`, reached through an open nsfs file). What needs the namespace itself:
//! whether the address is local there (a UDP socket bound to it, closed at once) and,
//! without `--from`, the source address routing picks for the destination (a UDP
//! socket connected to it, which sends nothing). For another namespace than the
//! caller's, those two enter it with `setns()` on a helper thread, which needs
//! CAP_SYS_ADMIN.

use std::{
    fs::File,
    io,
    net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use socket2::{Domain, SockAddr, Socket, Type};

use super::{
    query::{self, explain_bind, BindQuery, ConnectQuery},
    variant::Variant,
};
use crate::{
    backend::{BackendError, ProbeSession},
    model::{BindExplanation, ConnectExplanation},
    netns::{netns_inode_of, run_in, NetnsError},
    procs::ProcessTable,
    snapshot::{NetAsk, SnapOptions},
};

/// Why a request cannot be explained. Every one is a problem with the input or the
/// environment, not a verdict (the CLI exits with 2).
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("`{input}` is not an address and port: {why} (expected IPv4:PORT or [IPv6]:PORT, e.g. 127.0.0.1:8080 or [::1]:8080)")]
    Unparsable { input: String, why: String },
    #[error("{addr} is a link-local IPv6 address without a scope: say which interface, e.g. [{addr}%eth0] or [{addr}%2]")]
    NoScope { addr: Ipv6Addr },
    #[error("interface `{name}` does not exist in that network namespace (scope of {addr})")]
    NoInterface { name: String, addr: Ipv6Addr },
    #[error("{addr} is not a local address of network namespace {netns}: a socket cannot take it as its own address there (bind() fails with EADDRNOTAVAIL before any port is compared; see `ip addr` in that namespace)")]
    NotLocal { addr: IpAddr, netns: u32 },
    #[error("port 0 asks the kernel to pick a port; `explain bind` compares an explicit port's owners (for ports the kernel picks, use `explain connect`)")]
    PortZero,
    #[error("no route from network namespace {netns} to {dst} ({error}); pass --from IP to name the source address")]
    NoRoute {
        dst: SocketAddr,
        netns: u32,
        error: io::Error,
    },
    #[error("checking {what} in network namespace {netns}: {error}")]
    Probe {
        what: String,
        netns: u32,
        error: io::Error,
    },
    #[error("network namespace: {0}")]
    Netns(#[from] NetnsError),
    #[error("the namespace {path} went away while it was being read", path = .path.display())]
    Vanished { path: PathBuf },
    #[error("reading the bind table: {0}")]
    Snapshot(#[from] BackendError),
    #[error("the kernel gave no port range for network namespace {netns}: the eBPF program could not reach its struct net from {path}", path = .path.display())]
    NoRange { netns: u32, path: PathBuf },
}

/// A scope of a link-local IPv6 address: an interface index or name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Index(u32),
    Name(String),
}

/// `ADDR:PORT` as given: the address with its scope (link-local IPv6), and the port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
    pub scope: Option<Scope>,
}

fn is_link_local(a: &Ipv6Addr) -> bool {
    (a.segments()[0] & 0xffc0) == 0xfe80
}

/// Parses `IPv4:PORT`, `[IPv6]:PORT` or `[IPv6%SCOPE]:PORT`. A link-local IPv6 address
/// needs a scope; a scope on any other address is refused.
pub fn parse_endpoint(input: &str) -> Result<Endpoint, AskError> {
    let bad = |why: &str| AskError::Unparsable {
        input: input.to_owned(),
        why: why.to_owned(),
    };
    let s = input.trim();
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or_else(|| bad("no closing `]`"))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| bad("no `:PORT` after the address"))?;
        (inside, port)
    } else {
        let (h, p) = s.rsplit_once(':').ok_or_else(|| bad("no `:PORT`"))?;
        if h.contains(':') {
            return Err(bad("an IPv6 address must be in brackets"));
        }
        (h, p)
    };
    let port: u16 = port
        .parse()
        .map_err(|_| bad(&format!("`{port}` is not a port number (0-65535)")))?;
    let (addr, scope) = match host.split_once('%') {
        Some((a, sc)) => (a, Some(sc)),
        None => (host, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| bad(&format!("`{addr}` is not an IP address")))?;
    let scope = match (ip, scope) {
        (_, None) => None,
        (IpAddr::V6(a), Some(sc)) if is_link_local(&a) => Some(match sc.parse::<u32>() {
            Ok(i) => Scope::Index(i),
            Err(_) if !sc.is_empty() => Scope::Name(sc.to_owned()),
            Err(_) => return Err(bad("empty scope after `%`")),
        }),
        (_, Some(_)) => {
            return Err(bad(
                "a scope (`%...`) only goes with a link-local IPv6 address",
            ))
        }
    };
    if let IpAddr::V6(a) = ip {
        if is_link_local(&a) && scope.is_none() {
            return Err(AskError::NoScope { addr: a });
        }
    }
    Ok(Endpoint { ip, port, scope })
}

/// A network namespace to explain in: its inode and a path to its nsfs file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub inode: u32,
    pub path: PathBuf,
}

impl Target {
    /// The namespace of `path`, checked to be one.
    pub fn of_path(path: &Path) -> Result<Target, AskError> {
        Ok(Target {
            inode: netns_inode_of(path)?,
            path: path.to_owned(),
        })
    }

    /// Opens its nsfs file (kept open while the kernel reads the namespace through it),
    /// checking it is still the same namespace.
    fn open(&self) -> Result<File, AskError> {
        let f = File::open(&self.path).map_err(|_| AskError::Vanished {
            path: self.path.clone(),
        })?;
        if netns_inode_of(&self.path).ok() != Some(self.inode) {
            return Err(AskError::Vanished {
                path: self.path.clone(),
            });
        }
        Ok(f)
    }
}

fn socket_addr(ip: IpAddr, port: u16, scope_id: u32) -> SocketAddr {
    match ip {
        IpAddr::V6(a) => SocketAddr::V6(SocketAddrV6::new(a, port, 0, scope_id)),
        v4 => SocketAddr::new(v4, port),
    }
}

fn domain(ip: IpAddr) -> Domain {
    if ip.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    }
}

/// The interface index of a scope, in the target namespace.
fn scope_index(scope: &Scope) -> io::Result<u32> {
    match scope {
        Scope::Index(i) => Ok(*i),
        Scope::Name(n) => nix::net::if_::if_nametoindex(n.as_str()).map_err(io::Error::from),
    }
}

/// Checks in `target` that `ep`'s address is local there (the kernel's own check: a UDP
/// socket bound to it, port 0, closed at once) and returns the scope's interface index
/// (0 without scope).
pub fn check_local(target: &Target, ep: &Endpoint) -> Result<u32, AskError> {
    let (ip, scope) = (ep.ip, ep.scope.clone());
    let res = run_in(&target.path, move || -> Result<u32, (bool, io::Error)> {
        let index = match &scope {
            Some(sc) => scope_index(sc).map_err(|e| (true, e))?,
            None => 0,
        };
        if ip.is_unspecified() {
            return Ok(index);
        }
        let s = Socket::new(domain(ip), Type::DGRAM, None).map_err(|e| (false, e))?;
        // Validate the address only: with IP_BIND_ADDRESS_NO_PORT a bind to port 0 takes
        // no port (the range may be full or reserved).
        crate::sockopt::set_bind_address_no_port(&s).map_err(|e| (false, e))?;
        s.bind(&SockAddr::from(socket_addr(ip, 0, index)))
            .map_err(|e| (false, e))?;
        Ok(index)
    })?;
    match res {
        Ok(i) => Ok(i),
        Err((true, _)) => Err(match (&ep.scope, ep.ip) {
            (Some(Scope::Name(n)), IpAddr::V6(a)) => AskError::NoInterface {
                name: n.clone(),
                addr: a,
            },
            _ => AskError::NotLocal {
                addr: ep.ip,
                netns: target.inode,
            },
        }),
        Err((false, e)) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {
            Err(AskError::NotLocal {
                addr: ep.ip,
                netns: target.inode,
            })
        }
        Err((false, e)) => Err(AskError::Probe {
            what: format!("that {} is local", ep.ip),
            netns: target.inode,
            error: e,
        }),
    }
}

/// The source address routing picks in `target` toward `dst`: the kernel's answer to a
/// route lookup (`ip route get DST`), which takes no port and sends nothing.
pub fn route_source(target: &Target, dst: SocketAddr) -> Result<IpAddr, AskError> {
    let ip = dst.ip();
    let res = run_in(&target.path, move || rtnetlink_route_source(ip))?;
    res.map_err(|error| AskError::NoRoute {
        dst,
        netns: target.inode,
        error,
    })
}

/// One `RTM_GETROUTE` request on an rtnetlink socket of the calling thread's namespace
/// (`ip route get DST`): the reply's `RTA_PREFSRC` is the source address routing picks.
pub fn rtnetlink_route_source(dst: IpAddr) -> io::Result<IpAddr> {
    use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
    use netlink_packet_route::{
        route::{RouteAddress, RouteAttribute, RouteMessage},
        AddressFamily, RouteNetlinkMessage,
    };
    use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let mut route = RouteMessage::default();
    let (family, bits) = match dst {
        IpAddr::V4(_) => (AddressFamily::Inet, 32),
        IpAddr::V6(_) => (AddressFamily::Inet6, 128),
    };
    route.header.address_family = family;
    route.header.destination_prefix_length = bits;
    route
        .attributes
        .push(RouteAttribute::Destination(RouteAddress::from(dst)));
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST;
    let mut req = NetlinkMessage::new(
        header,
        NetlinkPayload::from(RouteNetlinkMessage::GetRoute(route)),
    );
    req.finalize();
    let mut buf = vec![0; req.header.length as usize];
    req.serialize(&mut buf);
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind_auto()?;
    sock.connect(&SocketAddr::new(0, 0))?;
    sock.send(&buf, 0)?;
    let mut reply = vec![0; 8192];
    let n = sock.recv(&mut &mut reply[..], 0)?;
    let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply[..n])
        .map_err(|e| invalid(e.to_string()))?;
    match msg.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r)) => r
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::PrefSource(RouteAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
                RouteAttribute::PrefSource(RouteAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
                _ => None,
            })
            .ok_or_else(|| io::Error::other("the route has no source address")),
        NetlinkPayload::Error(e) => Err(e.to_io()),
        other => Err(invalid(format!("unexpected reply {other:?}"))),
    }
}

/// A verbose snapshot of `port` (0: every port) in `target`, with the namespace's range
/// and reserved ports read from its `struct net` and the processes holding each owner.
fn verbose_snapshot(
    session: &mut ProbeSession,
    target: &Target,
    port: u16,
) -> Result<crate::model::Snapshot, AskError> {
    let ns = target.open()?;
    let procs = ProcessTable::scan();
    let mut snap = session.snapshot(&SnapOptions {
        netns: target.inode,
        port,
        verbose: true,
        net: NetAsk::Fd(ns.as_raw_fd()),
        ..SnapOptions::default()
    })?;
    drop(ns);
    holders(procs, &mut snap);
    Ok(snap)
}

/// Fills in the holders of `snap`'s owners from `procs`, scanned before the walk (an owner
/// that closes during the walk is still in it), scanning again for sockets made since.
fn holders(procs: ProcessTable, snap: &mut crate::model::Snapshot) {
    let missing = snap
        .buckets
        .iter()
        .flat_map(|b| b.addresses.iter().flat_map(|a| a.owners.iter()))
        .filter_map(|o| o.inode)
        .any(|i| !procs.knows(i));
    let procs = if missing { ProcessTable::scan() } else { procs };
    procs.fill(snap);
}

/// Options of a bind() to explain, besides its address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BindOpts {
    pub reuseaddr: bool,
    pub reuseport: bool,
    pub v6only: bool,
    /// The uid the socket would belong to.
    pub uid: Option<u32>,
}

/// `portwatch explain bind`: what a bind() of `ep` with `opts` would do in `target`
/// now, from the owners the kernel holds.
pub fn bind(
    session: &mut ProbeSession,
    target: &Target,
    ep: &Endpoint,
    opts: BindOpts,
    v: &Variant,
) -> Result<BindExplanation, AskError> {
    if ep.port == 0 {
        return Err(AskError::PortZero);
    }
    let scope = check_local(target, ep)?;
    let snap = verbose_snapshot(session, target, ep.port)?;
    let q = BindQuery {
        addr: socket_addr(ep.ip, ep.port, 0),
        reuseaddr: opts.reuseaddr,
        reuseport: opts.reuseport,
        v6only: opts.v6only,
        uid: opts.uid,
        bound_dev: scope,
    };
    Ok(explain_bind(&snap, target.inode, &q, v))
}

/// `portwatch explain connect`: what a connect() to `dst` that leaves the local port to
/// the kernel would find in `target`'s range now; from `from` (checked to be local) or
/// from the address routing picks.
pub fn connect(
    session: &mut ProbeSession,
    target: &Target,
    dst: &Endpoint,
    from: Option<&Endpoint>,
    v: &Variant,
) -> Result<ConnectExplanation, AskError> {
    connect_report(session, target, dst, from, v).map(|r| r.explanation)
}

/// An explained connect() with what it was made from: the engine's verdict on every port
/// of the range, and the snapshot read (owners of a port in the engine's order are
/// [`query::port_owners`]).
pub struct ConnectReport {
    pub explanation: ConnectExplanation,
    pub ports: super::connect::Report,
    pub snapshot: crate::model::Snapshot,
}

/// As [`connect`], keeping what the explanation was made from.
pub fn connect_report(
    session: &mut ProbeSession,
    target: &Target,
    dst: &Endpoint,
    from: Option<&Endpoint>,
    v: &Variant,
) -> Result<ConnectReport, AskError> {
    if dst.port == 0 {
        return Err(AskError::Unparsable {
            input: format!("{}:0", dst.ip),
            why: "connect() needs a destination port".into(),
        });
    }
    let dst_scope = match &dst.scope {
        Some(sc) => {
            let sc = sc.clone();
            run_in(&target.path, move || scope_index(&sc))?.map_err(|_| {
                match (&dst.scope, dst.ip) {
                    (Some(Scope::Name(n)), IpAddr::V6(a)) => AskError::NoInterface {
                        name: n.clone(),
                        addr: a,
                    },
                    _ => AskError::NotLocal {
                        addr: dst.ip,
                        netns: target.inode,
                    },
                }
            })?
        }
        None => 0,
    };
    let destination = socket_addr(dst.ip, dst.port, dst_scope);
    let source = match from {
        Some(f) => {
            check_local(target, f)?;
            f.ip
        }
        None => route_source(target, destination)?,
    };
    let snap = verbose_snapshot(session, target, 0)?;
    let q = ConnectQuery {
        source,
        destination,
    };
    let (explanation, ports) =
        query::connect_report(&snap, target.inode, &q, v).ok_or_else(|| AskError::NoRange {
            netns: target.inode,
            path: target.path.clone(),
        })?;
    Ok(ConnectReport {
        explanation,
        ports,
        snapshot: snap,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_with_brackets_and_scopes() {
        let e = parse_endpoint("127.0.0.1:8080").unwrap();
        assert_eq!(
            (e.ip, e.port, e.scope),
            ("127.0.0.1".parse().unwrap(), 8080, None)
        );
        let e = parse_endpoint("[::1]:80").unwrap();
        assert_eq!(e.ip, "::1".parse::<IpAddr>().unwrap());
        let e = parse_endpoint("[fe80::1%2]:80").unwrap();
        assert_eq!(e.scope, Some(Scope::Index(2)));
        let e = parse_endpoint("[fe80::1%eth0]:80").unwrap();
        assert_eq!(e.scope, Some(Scope::Name("eth0".into())));
        let e = parse_endpoint("[::ffff:127.0.0.1]:7").unwrap();
        assert!(e.ip.is_ipv6());
        for bad in [
            "127.0.0.1",
            "127.0.0.1:99999",
            "localhost:80",
            "::1:80",
            "[::1]80",
            "[::1:80",
            "[::1%2]:80",
            "127.0.0.1%2:80",
            "[fe80::1%]:80",
            "",
        ] {
            let e = parse_endpoint(bad).unwrap_err();
            assert!(matches!(e, AskError::Unparsable { .. }), "{bad}: {e}");
        }
        let e = parse_endpoint("[fe80::1]:80").unwrap_err();
        assert!(matches!(e, AskError::NoScope { .. }), "{e}");
        assert!(e.to_string().contains("%eth0"), "{e}");
    }

    #[test]
    fn locality_is_the_kernels_own_check() {
        let me = Target::of_path(Path::new("/proc/self/ns/net")).unwrap();
        let ep = |s: &str| parse_endpoint(s).unwrap();
        assert_eq!(check_local(&me, &ep("127.0.0.1:1")).unwrap(), 0);
        assert_eq!(check_local(&me, &ep("0.0.0.0:1")).unwrap(), 0);
        if std::path::Path::new("/proc/net/if_inet6").exists() {
            assert_eq!(check_local(&me, &ep("[::1]:1")).unwrap(), 0);
            assert_eq!(check_local(&me, &ep("[::ffff:127.0.0.1]:1")).unwrap(), 0);
        }
        // TEST-NET-3 is nobody's local address.
        let e = check_local(&me, &ep("203.0.113.7:1")).unwrap_err();
        assert!(matches!(e, AskError::NotLocal { .. }), "{e}");
        assert!(e.to_string().contains("EADDRNOTAVAIL"), "{e}");
        let e = check_local(&me, &ep("[fe80::1%nosuchif0]:1")).unwrap_err();
        assert!(matches!(e, AskError::NoInterface { .. }), "{e}");
        // Routing's source toward loopback, as `ip route get` says.
        let src = route_source(&me, "127.9.9.9:9".parse().unwrap()).unwrap();
        assert_eq!(src, "127.0.0.1".parse::<IpAddr>().unwrap());
        let e = route_source(&me, "240.0.0.1:9".parse().unwrap());
        if let Ok(ip) = e {
            // A default route answers for anything; its source is a local address.
            assert!(check_local(
                &me,
                &Endpoint {
                    ip,
                    port: 0,
                    scope: None
                }
            )
            .is_ok());
        }
    }
}
