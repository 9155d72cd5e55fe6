//! Generated connect() cases: a small `ip_local_port_range` (set inside the namespace)
//! filled port by port in mixed ways (free, reserved, taken by connect() toward the same or
//! another destination, TIME-WAIT, bound, listening, bound next to a connect(), bound then
//! closed), then a connect() that leaves the port to the kernel, explained first through
//! `explain connect`'s command path (the range, reserved ports and owners read from the
//! kernel). Every port is probed on its own (range narrowed to that port) and compared with
//! the class the explanation gave it; the real connect() over the whole range must end as
//! explained, on a port called usable; for a refusal, closing the named holders of a port
//! must make it usable.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
};

use rand::{seq::IndexedRandom, RngExt};
use socket2::{SockAddr, Socket};

use super::{
    super::{
        ask::Endpoint,
        connect::{self, Class, Scan, Verdict},
        lab::{drain_to_eof, errno, socket_inode, Lab, LabError},
        query::port_owners,
        sock::{Owner, OwnerState, SharingOpts, Sock},
        variant::Variant,
    },
    Judge,
};

/// First port of every generated range.
pub const LO: u16 = 40000;

const DSTS: [(Ipv4Addr, u16); 3] = [
    (Ipv4Addr::new(127, 0, 0, 1), 5000),
    (Ipv4Addr::new(127, 0, 0, 2), 5000),
    (Ipv4Addr::new(127, 0, 0, 1), 5001),
];
const SRC_ALT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// How one port of the range is filled.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Fill {
    Free,
    Reserved,
    /// connect()s that got this port: (explicit source or routing's, destination index).
    Connect(Vec<(Option<Ipv4Addr>, usize)>),
    /// A connect() on this port, closed first: its TIME-WAIT stays.
    ConnectTimeWait(Option<Ipv4Addr>, usize),
    Bound {
        addr: Ipv4Addr,
        reuseaddr: bool,
    },
    Listener(Ipv4Addr),
    /// A connect() on this port, then a bind() of another address to it.
    ConnectThenBind {
        src: Option<Ipv4Addr>,
        dst: usize,
        reuseaddr: bool,
        close_bound: bool,
    },
}

#[derive(Clone, Debug)]
pub struct Case {
    count: u16,
    fills: Vec<Fill>,
    src: Option<Ipv4Addr>,
    dst: usize,
}

fn pick_src(rng: &mut impl RngExt) -> Option<Ipv4Addr> {
    if rng.random_bool(0.3) {
        Some(SRC_ALT)
    } else {
        None
    }
}

pub fn generate(rng: &mut impl RngExt) -> Case {
    let count = rng.random_range(1..=7u16);
    let mut fills = Vec::new();
    for _ in 0..count {
        let f = match rng.random_range(0..9u8) {
            0 | 1 => Fill::Free,
            2 => Fill::Reserved,
            3 => {
                let mut v = vec![(pick_src(rng), rng.random_range(0..DSTS.len()))];
                if rng.random_bool(0.4) {
                    let other = (pick_src(rng), rng.random_range(0..DSTS.len()));
                    if !v.contains(&other) {
                        v.push(other);
                    }
                }
                Fill::Connect(v)
            }
            4 => Fill::ConnectTimeWait(pick_src(rng), rng.random_range(0..DSTS.len())),
            5 => Fill::Bound {
                addr: *[
                    Ipv4Addr::UNSPECIFIED,
                    Ipv4Addr::LOCALHOST,
                    Ipv4Addr::new(127, 0, 0, 2),
                ]
                .choose(rng)
                .unwrap_or(&Ipv4Addr::LOCALHOST),
                reuseaddr: rng.random_bool(0.5),
            },
            6 => Fill::Listener(Ipv4Addr::new(127, 0, 0, 2)),
            _ => Fill::ConnectThenBind {
                src: pick_src(rng),
                dst: rng.random_range(0..DSTS.len()),
                reuseaddr: rng.random_bool(0.5),
                close_bound: rng.random_bool(0.5),
            },
        };
        fills.push(f);
    }
    // Most cases aim at a destination some port already serves.
    Case {
        count,
        fills,
        src: pick_src(rng),
        dst: rng.random_range(0..DSTS.len()),
    }
}

fn dst_addr(i: usize) -> SocketAddr {
    let (a, p) = DSTS[i];
    SocketAddr::new(a.into(), p)
}

/// One owner made for a port, with the socket that keeps it (none for TIME-WAIT).
struct Made {
    owner: Owner,
    socket: Option<Socket>,
}

/// The namespace of one case.
struct Fixture {
    lab: Lab,
    /// Listener sockets of the destinations and every connection they accepted.
    servers: Vec<Socket>,
    ports: BTreeMap<u16, Vec<Made>>,
}

impl Fixture {
    fn new() -> Result<Fixture, LabError> {
        let lab = Lab::new()?;
        lab.sysctl("net/ipv4/tcp_tw_reuse", "0")?;
        let any: IpAddr = Ipv4Addr::UNSPECIFIED.into();
        let servers = vec![lab.listener(any, 5000)?, lab.listener(any, 5001)?];
        Ok(Fixture {
            lab,
            servers,
            ports: BTreeMap::new(),
        })
    }

    /// connect() with the range narrowed to `port`: the kernel has no other choice.
    fn connect_on(
        &mut self,
        port: u16,
        src: Option<Ipv4Addr>,
        dst: usize,
    ) -> Result<Socket, LabError> {
        self.lab.ns.set_port_range(port, port)?;
        let s = self
            .lab
            .connect_socket(Ipv4Addr::LOCALHOST.into(), src.map(IpAddr::V4))?;
        let d = dst_addr(dst);
        s.connect(&SockAddr::from(d)).map_err(|e| {
            LabError::Setup(format!(
                "filling port {port}: connect from {src:?} to {d} failed: {e}"
            ))
        })?;
        let got = s
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map(|a| a.port());
        if got != Some(port) {
            return Err(LabError::Setup(format!(
                "filling port {port}: connect() took port {got:?}"
            )));
        }
        Ok(s)
    }

    fn add_connect(
        &mut self,
        port: u16,
        src: Option<Ipv4Addr>,
        dst: usize,
        v: &Variant,
    ) -> Result<usize, LabError> {
        let s = self.connect_on(port, src, dst)?;
        let mut owner = owner_of(&s, OwnerState::Other)?;
        owner.connect_bind = v.release_resets_bucket.then_some(true);
        let list = self.ports.entry(port).or_default();
        list.push(Made {
            owner,
            socket: Some(s),
        });
        Ok(list.len() - 1)
    }

    fn add_bound(
        &mut self,
        port: u16,
        addr: Ipv4Addr,
        reuseaddr: bool,
        listen: bool,
        v: &Variant,
    ) -> Result<usize, LabError> {
        let s = self.lab.socket(addr.into(), reuseaddr, false, 0, false)?;
        Lab::bind(&s, addr.into(), port).map_err(|e| {
            LabError::Setup(format!("filling port {port}: bind {addr} failed: {e}"))
        })?;
        if listen {
            s.listen(16)
                .map_err(|e| LabError::Setup(format!("filling port {port}: listen failed: {e}")))?;
        }
        let mut owner = owner_of(
            &s,
            if listen {
                OwnerState::Listen
            } else {
                OwnerState::Other
            },
        )?;
        owner.sock.opts.reuseaddr = reuseaddr;
        owner.connect_bind = v.release_resets_bucket.then_some(false);
        let list = self.ports.entry(port).or_default();
        list.push(Made {
            owner,
            socket: Some(s),
        });
        Ok(list.len() - 1)
    }

    /// Accepts every pending connection of the destinations' listeners until the one whose
    /// peer is `peer` shows up (the server side of a loopback handshake may complete after
    /// connect() returns).
    fn accept_peer(&mut self, peer: SocketAddr) -> Result<Socket, LabError> {
        let nonblocking = |e| LabError::Io {
            what: "O_NONBLOCK".into(),
            source: e,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        loop {
            for i in 0..2 {
                self.servers[i].set_nonblocking(true).map_err(nonblocking)?;
                while let Ok((c, from)) = self.servers[i].accept() {
                    if from.as_socket() == Some(peer) {
                        c.set_nonblocking(false).map_err(nonblocking)?;
                        return Ok(c);
                    }
                    self.servers.push(c);
                }
            }
            if std::time::Instant::now() > deadline {
                return Err(LabError::Setup(format!(
                    "no accepted connection from {peer} after 3 s"
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    fn fill(&mut self, port: u16, f: &Fill, v: &Variant) -> Result<(), LabError> {
        match f {
            Fill::Free | Fill::Reserved => {}
            Fill::Connect(list) => {
                for (src, dst) in list {
                    self.add_connect(port, *src, *dst, v)?;
                }
            }
            Fill::ConnectTimeWait(src, dst) => {
                let i = self.add_connect(port, *src, *dst, v)?;
                let made = &mut self.ports.get_mut(&port).expect("just added")[i];
                let s = made.socket.take().expect("connected socket");
                made.owner.state = OwnerState::TimeWait;
                let local = s
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_socket())
                    .ok_or_else(|| LabError::Setup("getsockname".into()))?;
                let child = self.accept_peer(local)?;
                drop(s);
                drain_to_eof(&child)?;
                drop(child);
                self.lab.expect_time_wait(port, dst_addr(*dst).port())?;
            }
            Fill::Bound { addr, reuseaddr } => {
                self.add_bound(port, *addr, *reuseaddr, false, v)?;
            }
            Fill::Listener(addr) => {
                self.add_bound(port, *addr, false, true, v)?;
            }
            Fill::ConnectThenBind {
                src,
                dst,
                reuseaddr,
                close_bound,
            } => {
                self.add_connect(port, *src, *dst, v)?;
                let i = self.add_bound(port, Ipv4Addr::new(127, 0, 0, 2), *reuseaddr, false, v)?;
                if *close_bound {
                    let list = self.ports.get_mut(&port).expect("just added");
                    drop(list.remove(i));
                }
            }
        }
        Ok(())
    }

    /// connect() to `dst` with the range narrowed to `port`, closed with a reset: `Ok(true)`
    /// when the kernel gave that port.
    fn probe(
        &mut self,
        port: u16,
        src: Option<Ipv4Addr>,
        dst: usize,
    ) -> Result<Result<bool, i32>, LabError> {
        self.lab.ns.set_port_range(port, port)?;
        let s = self
            .lab
            .connect_socket(Ipv4Addr::LOCALHOST.into(), src.map(IpAddr::V4))?;
        s.set_linger(Some(std::time::Duration::ZERO))
            .map_err(|e| LabError::Io {
                what: "SO_LINGER".into(),
                source: e,
            })?;
        Ok(match s.connect(&SockAddr::from(dst_addr(dst))) {
            Ok(()) => Ok(s
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .map(|a| a.port())
                == Some(port)),
            Err(e) if errno(&e) == libc::EADDRNOTAVAIL => Ok(false),
            Err(e) => Err(errno(&e)),
        })
    }
}

fn owner_of(s: &Socket, state: OwnerState) -> Result<Owner, LabError> {
    let local = s
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .ok_or_else(|| LabError::Setup("getsockname".into()))?;
    Ok(Owner {
        sock: Sock::new(local.ip(), SharingOpts::plain(0)),
        state,
        remote: s.peer_addr().ok().and_then(|a| a.as_socket()),
        bucket_family: None,
        connect_bind: None,
    })
}

pub fn run_case(j: &mut Judge, label: &str, case: &Case, v: &Variant) -> Result<(), LabError> {
    let mut fx = Fixture::new()?;
    let hi = LO + case.count - 1;
    let mut reserved = Vec::new();
    for (i, f) in case.fills.iter().enumerate() {
        let port = LO + i as u16;
        if *f == Fill::Reserved {
            reserved.push(port);
        }
        fx.fill(port, f, v)?;
    }
    let list: Vec<String> = reserved.iter().map(u16::to_string).collect();
    if !list.is_empty() {
        fx.lab
            .sysctl("net/ipv4/ip_local_reserved_ports", &list.join(","))?;
    }
    let dst = dst_addr(case.dst);
    fx.lab.ns.set_port_range(LO, hi)?;
    // Asked first, as `explain connect DST [--from SRC] --netns ...` would.
    let target = fx.lab.target()?;
    let dst_ep = Endpoint {
        ip: dst.ip(),
        port: dst.port(),
        scope: None,
    };
    let from = case.src.map(|s| Endpoint {
        ip: IpAddr::V4(s),
        port: 0,
        scope: None,
    });
    let asked = j.asker.connect(&target, &dst_ep, from.as_ref(), v)?;
    j.tally.explained += 1;
    let report = &asked.ports;
    let e = &asked.explanation;
    let step = format!(
        "{label} connect from {} to {dst} over {LO}-{hi} filled {:?}",
        e.source, case.fills
    );
    j.tally.connect_cases += 1;
    if e.range != (LO, hi) || e.reserved != reserved.len() {
        j.disagree(
            &step,
            format!(
                "explain read range {:?} with {} reserved, the case set {LO}-{hi} with {:?}",
                e.range, e.reserved, reserved
            ),
        );
    }

    // Each port on its own.
    for p in &report.ports {
        let predicted = matches!(p.class, Class::Free | Class::Shared);
        let got = fx.probe(p.port, case.src, case.dst)?;
        j.tally.port_probes += 1;
        if got != Ok(predicted) {
            j.disagree(
                &step,
                format!(
                    "port {}: explain says {:?}, the kernel's connect() gave {got:?}",
                    p.port, p.class
                ),
            );
        }
    }
    // The whole range.
    fx.lab.ns.set_port_range(LO, hi)?;
    let s = fx
        .lab
        .connect_socket(Ipv4Addr::LOCALHOST.into(), case.src.map(IpAddr::V4))?;
    let res = s.connect(&SockAddr::from(dst));
    j.tally.connect_calls += 1;
    let got = match &res {
        Ok(()) => Ok(Verdict::Ok),
        Err(e) if errno(e) == libc::EADDRNOTAVAIL => Ok(Verdict::Eaddrnotavail),
        Err(e) => Err(errno(e)),
    };
    let agrees = match e.verdict {
        Verdict::Depends => {
            j.tally.connect_depends += 1;
            matches!(got, Ok(Verdict::Ok | Verdict::Eaddrnotavail))
        }
        v => got == Ok(v),
    };
    if !agrees {
        j.disagree(
            &step,
            format!(
                "explain says {:?} ({}), the kernel said {got:?}",
                e.verdict,
                counts(report)
            ),
        );
        return Ok(());
    }
    if res.is_ok() {
        let port = s
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map(|a| a.port())
            .unwrap_or(0);
        if !report.usable().any(|p| p == port)
            || report
                .ports
                .iter()
                .any(|p| p.port == port && p.scan == Scan::Never)
        {
            j.disagree(
                &step,
                format!("the kernel chose port {port}, which explain does not call usable"),
            );
        }
        let _ = s.set_linger(Some(std::time::Duration::ZERO));
        return Ok(());
    }
    drop(s);
    // A refusal: the holders explain names (owners read from the kernel) really hold
    // their port. They are sockets the case made, found by inode.
    let target = report.ports.iter().find_map(|p| {
        if !p.freed_by_closing_holders || p.holders.is_empty() {
            return None;
        }
        let named = port_owners(&asked.snapshot, e.netns, p.port);
        let made = fx.ports.get(&p.port)?;
        let idx: Option<Vec<usize>> = p
            .holders
            .iter()
            .map(|h| {
                let ino = named.get(*h)?.as_ref()?.inode?;
                made.iter()
                    .position(|m| m.socket.as_ref().and_then(socket_inode) == Some(ino))
            })
            .collect();
        idx.map(|i| (p.port, i))
    });
    if let Some((port, idx)) = target {
        if let Some(made) = fx.ports.get_mut(&port) {
            for i in idx {
                if let Some(sock) = made[i].socket.take() {
                    let _ = sock.set_linger(Some(std::time::Duration::ZERO));
                    drop(sock);
                }
            }
        }
        let got = fx.probe(port, case.src, case.dst)?;
        j.tally.blockers_verified += 1;
        if got != Ok(true) {
            j.disagree(&step, format!("port {port}: after closing the named holders the kernel's connect() gave {got:?}"));
        }
    }
    Ok(())
}

fn counts(r: &connect::Report) -> String {
    format!(
        "free {} shared {} used-to-destination {} blocked {} reserved {}; usable but skipped by some attempts {}",
        r.free, r.shared_usable, r.used_to_destination, r.blocked, r.reserved, r.usable_sometimes_skipped
    )
}
