//! `dump -v` of a known workload, checked port by port against the owners the workload
//! created: bound-only sockets, an SO_REUSEADDR pair, a listener with connected and
//! accepted sockets, TIME-WAIT on both sides of a connection (two server-side ones on the
//! listener's per-address bucket), ephemeral ports chosen by bind() and by connect(), and
//! a socket with its own IP_LOCAL_PORT_RANGE where the kernel has the option. What the
//! kernel records per owner (connect()-bound, the socket's own range) is checked where
//! the compatibility table says it keeps it.
use std::{
    collections::{BTreeMap, BTreeSet},
    io::Read as _,
    net::SocketAddr,
    os::fd::AsRawFd as _,
    time::{Duration, Instant},
};

use socket2::Socket;

use super::{addr, tcp, ScenarioResult};
use crate::{
    model::{Fastreuse, OwnerRow, PortRange, Snapshot, TcpState},
    netns::PrivateNetns,
    observer::SessionObserver,
};

/// The namespace's ephemeral range.
const RANGE: (u16, u16) = (40000, 40009);
/// The range one socket sets for itself with IP_LOCAL_PORT_RANGE.
const OWN_RANGE: PortRange = PortRange {
    lo: 40005,
    hi: 40009,
};
/// `IP_LOCAL_PORT_RANGE` (include/uapi/linux/in.h).
const IP_LOCAL_PORT_RANGE: libc::c_int = 51;

/// One owner as the workload made it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Want {
    local: String,
    state: String,
    reuseaddr: bool,
    /// `None` on kernels that do not record it.
    connect_bound: Option<bool>,
    local_port_range: Option<PortRange>,
}

impl Want {
    fn of(o: &OwnerRow) -> Want {
        Want {
            local: o.local.map_or_else(|| "?".to_owned(), |a| a.to_string()),
            state: o.state.to_string(),
            reuseaddr: o.reuseaddr,
            connect_bound: o.connect_bound,
            local_port_range: o.local_port_range,
        }
    }
}

/// What the kernel records, from the compatibility table.
#[derive(Clone, Copy, Debug)]
pub struct Records {
    /// connect()-bound owners are marked (6.18+).
    pub connect_bind: bool,
    /// Sockets may set IP_LOCAL_PORT_RANGE (6.3+, 6.1.31+).
    pub socket_port_range: bool,
}

struct Workload {
    /// Port -> its owners, as created.
    want: BTreeMap<u16, Vec<Want>>,
    /// Ports only connect() took (their buckets are -1/-1 on every kernel).
    by_connect: BTreeSet<u16>,
    /// Sockets kept open until the dump.
    keep: Vec<Socket>,
    records: Records,
}

fn local(s: &Socket) -> anyhow::Result<SocketAddr> {
    s.local_addr()?
        .as_socket()
        .ok_or_else(|| anyhow::anyhow!("a socket without an inet address"))
}

impl Workload {
    fn add(
        &mut self,
        s: &Socket,
        state: TcpState,
        reuseaddr: bool,
        by_connect: bool,
        range: Option<PortRange>,
    ) -> anyhow::Result<()> {
        let a = local(s)?;
        self.add_at(a, state, reuseaddr, by_connect, range);
        Ok(())
    }

    fn add_at(
        &mut self,
        a: SocketAddr,
        state: TcpState,
        reuseaddr: bool,
        by_connect: bool,
        range: Option<PortRange>,
    ) {
        self.want.entry(a.port()).or_default().push(Want {
            local: a.to_string(),
            state: state.to_string(),
            reuseaddr,
            connect_bound: self.records.connect_bind.then_some(by_connect),
            local_port_range: range,
        });
    }

    fn build(ns: &PrivateNetns, records: Records) -> anyhow::Result<Workload> {
        let mut w = Workload {
            want: BTreeMap::new(),
            by_connect: BTreeSet::new(),
            keep: Vec::new(),
            records,
        };
        let sock = |reuse: bool| -> anyhow::Result<Socket> {
            let s = tcp(ns)?;
            s.set_reuse_address(reuse)?;
            Ok(s)
        };
        // Bound only.
        let b = sock(false)?;
        b.bind(&addr("127.0.0.1:7001"))?;
        w.add(&b, TcpState::Close, false, false, None)?;
        w.keep.push(b);
        // Two SO_REUSEADDR sockets on one address (neither listens).
        for _ in 0..2 {
            let r = sock(true)?;
            r.bind(&addr("127.0.0.1:7002"))?;
            w.add(&r, TcpState::Close, true, false, None)?;
            w.keep.push(r);
        }
        // bind() to port 0: the kernel picks an ephemeral port.
        let e = sock(false)?;
        e.bind(&addr("127.0.0.1:0"))?;
        w.add(&e, TcpState::Close, false, false, None)?;
        w.keep.push(e);
        // A listener with one connection kept open.
        let l = sock(true)?;
        l.bind(&addr("127.0.0.1:7003"))?;
        l.listen(16)?;
        w.add(&l, TcpState::Listen, true, false, None)?;
        let c1 = sock(false)?;
        c1.connect(&addr("127.0.0.1:7003"))?;
        w.add(&c1, TcpState::Established, false, true, None)?;
        w.by_connect.insert(local(&c1)?.port());
        let (a1, _) = l.accept()?;
        // The accepted socket inherits the listener's port and options.
        w.add(&a1, TcpState::Established, true, false, None)?;
        // Every connection is opened before any is closed. In a range this small a later
        // connect() often gets the port a closed client released and sends its SYN on
        // the 4-tuple of that client's peer in TIME-WAIT; the kernel then ends the
        // TIME-WAIT and hands the SYN to the listener (tcp_timewait_state_process:
        // TCP_TW_SYN), so the TIME-WAIT would be gone by the dump. With no connect()
        // after the first close, each TIME-WAIT stays until its timer (60 s).
        //
        // A socket with its own range, where the kernel has the option.
        let p = sock(false)?;
        let mut range = None;
        if records.socket_port_range {
            let v: u32 = u32::from(OWN_RANGE.lo) | u32::from(OWN_RANGE.hi) << 16;
            // SAFETY: setsockopt reads `size_of::<u32>()` bytes from a live u32.
            let rc = unsafe {
                libc::setsockopt(
                    p.as_raw_fd(),
                    libc::IPPROTO_IP,
                    IP_LOCAL_PORT_RANGE,
                    (&v as *const u32).cast(),
                    std::mem::size_of::<u32>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                anyhow::bail!("IP_LOCAL_PORT_RANGE: {}", std::io::Error::last_os_error());
            }
            range = Some(OWN_RANGE);
        }
        p.connect(&addr("127.0.0.1:7003"))?;
        w.add(&p, TcpState::Established, false, true, range)?;
        w.by_connect.insert(local(&p)?.port());
        if let Some(r) = range {
            let port = local(&p)?.port();
            if !(r.lo..=r.hi).contains(&port) {
                anyhow::bail!("connect() chose port {port} outside the socket's own range {r}");
            }
        }
        let (a4, _) = l.accept()?;
        w.add(&a4, TcpState::Established, true, false, None)?;
        // Two connections to close server side first (two TIME-WAIT owners on the
        // listener's per-address bucket) and one to close client side first.
        let mut server_first = Vec::new();
        for _ in 0..2 {
            let c = sock(false)?;
            c.connect(&addr("127.0.0.1:7003"))?;
            let (a, _) = l.accept()?;
            server_first.push((c, a));
        }
        let c3 = sock(false)?;
        c3.connect(&addr("127.0.0.1:7003"))?;
        let (a3, _) = l.accept()?;
        // TIME-WAIT on the server side: it closes first; the client waits for the FIN.
        for (c, a) in server_first {
            let a_at = local(&a)?;
            drop(a);
            let _ = (&c).read(&mut [0u8; 1])?;
            drop(c);
            w.add_at(a_at, TcpState::TimeWait, true, false, None);
        }
        // TIME-WAIT on the client side: connect()-bound, on its ephemeral port.
        let c3_at = local(&c3)?;
        drop(c3);
        let _ = (&a3).read(&mut [0u8; 1])?;
        drop(a3);
        w.add_at(c3_at, TcpState::TimeWait, false, true, None);
        w.by_connect.insert(c3_at.port());
        w.keep.extend([l, c1, a1, p, a4]);
        Ok(w)
    }
}

/// Owners per port as the dump shows them.
fn got(snap: &Snapshot) -> BTreeMap<u16, Vec<Want>> {
    snap.buckets
        .iter()
        .map(|b| {
            let mut owners: Vec<Want> = b
                .addresses
                .iter()
                .flat_map(|a| a.owners.iter().map(Want::of))
                .collect();
            owners.sort();
            (b.key.port, owners)
        })
        .collect()
}

pub fn dump_workload(obs: &mut SessionObserver<'_>, records: Records) -> ScenarioResult {
    let name = "dump_workload";
    let mut failures = Vec::new();
    let mut observations = Vec::new();
    let run = (|| -> anyhow::Result<()> {
        let ns = PrivateNetns::with_port_range(RANGE.0, RANGE.1)?;
        let mut w = Workload::build(&ns, records)?;
        for owners in w.want.values_mut() {
            owners.sort();
        }
        // The client sides closed second leave LAST-ACK/FIN states for a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        let snap = loop {
            let snap = obs.snapshot(ns.inode(), true)?;
            if got(&snap) == w.want || Instant::now() > deadline {
                break snap;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let seen = got(&snap);
        for (port, want) in &w.want {
            match seen.get(port) {
                None => failures.push(format!(
                    "port {port}: not in the dump; created {} owner(s)",
                    want.len()
                )),
                Some(have) if have != want => failures.push(format!(
                    "port {port}: dump shows {have:?}, created {want:?}"
                )),
                Some(_) => {}
            }
        }
        for port in seen.keys().filter(|p| !w.want.contains_key(p)) {
            failures.push(format!(
                "port {port}: in the dump, but the workload made no socket on it"
            ));
        }
        if !snap.complete {
            failures.push("the walk did not cover the whole table".to_owned());
        }
        if snap.owners_truncated {
            failures.push("the walk cut an owner list short".to_owned());
        }
        for b in &snap.buckets {
            let owners = w.want.get(&b.key.port).map_or(0, Vec::len) as u32;
            if b.info.owners.n != owners || b.info.owners.truncated {
                failures.push(format!(
                    "port {}: owner count {}, created {owners}",
                    b.key.port, b.info.owners
                ));
            }
            // Ports only connect() took are shared by connect() alone: -1/-1 on every kernel.
            if w.by_connect.contains(&b.key.port)
                && (b.info.fastreuse, b.info.fastreuseport) != (Fastreuse(-1), Fastreuse(-1))
            {
                failures.push(format!(
                    "port {}: only connect() took it, bucket {}/{} (expected -1/-1)",
                    b.key.port, b.info.fastreuse, b.info.fastreuseport
                ));
            }
            let label = match b.key.port {
                7001 => Some("bucket of a plain bind()"),
                7002 => Some("bucket of an SO_REUSEADDR pair"),
                7003 => Some("bucket of an SO_REUSEADDR listener and its connections"),
                _ => None,
            };
            if let Some(l) = label {
                observations.push((
                    l.to_owned(),
                    format!("{}/{}", b.info.fastreuse, b.info.fastreuseport),
                ));
            }
        }
        drop(w.keep);
        Ok(())
    })();
    if let Err(e) = run {
        failures.push(format!("could not run: {e:#}"));
    }
    ScenarioResult {
        name: name.to_owned(),
        steps: Vec::new(),
        failures,
        observations,
    }
}
