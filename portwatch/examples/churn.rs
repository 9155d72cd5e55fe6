//! Socket churn workload for `cargo xtask bench` and `cargo xtask soak` (root: it creates
//! a private network namespace; nothing outside that namespace is touched).
//!
//! Protocol (one JSON object per stdout line, commands on stdin):
//! 1. creates a private netns (`lo` up, `ip_local_port_range` set inside it only) and
//!    whatever the mode needs before the run (listeners), then prints
//!    `{"ready":true,"netns_path":...,"netns_inode":...,"pid":...}`;
//! 2. waits for a line `go` on stdin (EOF: exit), runs, prints the counters
//!    `{"done":true,"cycles":...,...}`;
//! 3. keeps its sockets open until stdin reaches EOF, then exits (the netns goes away).
//!
//! Modes (`--workers` threads, each `setns()`-ed into the private netns):
//! - `bind`: socket, [SO_REUSEADDR], bind(127.0.0.1:0), close; for `--seconds`.
//! - `connect`: one listener per worker (127.0.0.1, ephemeral port); socket,
//!   [SO_REUSEADDR], connect, accept, then the *client* closes first with SO_LINGER 0
//!   (an RST: no TIME-WAIT anywhere, so every round starts from the same state and the
//!   listener's bucket does not fill up with TIME-WAIT owners), then the server socket
//!   (already reset, so it no longer holds the port) is closed; for `--seconds`.
//! - `ports`: bind each port of `--base`..`--base+--count` exactly once, then close it
//!   (workers interleave the ports); every port is used once, so every bind and every
//!   close is one event of its own bucket.
//! - `hold`: `--count` listening sockets on ports `--base`.. (for dump/top benchmarks);
//!   beyond its RLIMIT_NOFILE it starts helper processes of itself that enter the same
//!   netns and hold the rest (raising the hard limit needs CAP_SYS_RESOURCE).
//! - `soak`: random bind (random SO_REUSEADDR, random 127.0.0.{1..4}) / listen / close /
//!   connect+accept over `--count` ports from `--base` (also the netns' ephemeral range,
//!   so connect() picks from them), paced at `--rate` operations per second in total,
//!   until a line `stop` on stdin (or `--seconds` if > 0). Every close uses SO_LINGER 0,
//!   so no TIME-WAIT socket outlives the run: the final table is stable.
//!
//! ```text
//! cargo build --release -p portwatch --examples
//! sudo target/release/examples/churn --mode bind --seconds 3
//! ```
use std::{
    io::{BufRead, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    os::fd::AsFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Barrier,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, ValueEnum};
use nix::sched::CloneFlags;
use portwatch::netns::PrivateNetns;
use serde::Serialize;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Bind,
    Connect,
    Ports,
    Hold,
    Soak,
    /// Internal: a helper process of `hold` (one process cannot hold more sockets than
    /// its RLIMIT_NOFILE allows, and raising the hard limit needs CAP_SYS_RESOURCE).
    #[value(hide = true)]
    HoldPart,
}

#[derive(Debug, Parser)]
#[command(about = "Socket churn workload in a private netns (for cargo xtask bench/soak)")]
struct Args {
    #[arg(long, value_enum)]
    mode: Mode,
    /// Set SO_REUSEADDR on every socket (bind, connect; listeners too).
    #[arg(long)]
    reuseaddr: bool,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Run time of bind/connect (and soak when > 0).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// `ip_local_port_range` inside the private netns, `LO-HI` (soak: `--base`..+`--count`).
    #[arg(long, default_value = "10000-60999", value_parser = parse_range)]
    range: (u16, u16),
    /// ports/soak: number of ports; hold: number of listening sockets.
    #[arg(long, default_value_t = 1000)]
    count: u32,
    /// First port of ports/hold/soak.
    #[arg(long, default_value_t = 20000)]
    base: u16,
    /// soak: operations per second in total (0: as fast as possible).
    #[arg(long, default_value_t = 5000)]
    rate: u32,
    /// hold-part: the netns to enter (set by the `hold` parent).
    #[arg(long, hide = true)]
    netns_path: Option<String>,
}

fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let (lo, hi) = s
        .split_once('-')
        .ok_or_else(|| format!("`{s}`: expected LO-HI"))?;
    let lo: u16 = lo
        .trim()
        .parse()
        .map_err(|_| format!("`{s}`: bad low port"))?;
    let hi: u16 = hi
        .trim()
        .parse()
        .map_err(|_| format!("`{s}`: bad high port"))?;
    if lo == 0 || lo > hi {
        return Err(format!("`{s}`: need 1 <= LO <= HI"));
    }
    Ok((lo, hi))
}

/// What the workload did, counted by itself (the reference for capture checks).
#[derive(Clone, Copy, Debug, Default, Serialize)]
struct Counters {
    /// Loop iterations (bind: bind+close; connect: connect+accept+2 closes; ports: one port).
    cycles: u64,
    binds_ok: u64,
    binds_failed: u64,
    listens_ok: u64,
    connects_ok: u64,
    connects_failed: u64,
    accepts_ok: u64,
    /// close() of sockets that held a port when closed by this program: bound-only or
    /// listening sockets, and connected clients (closed with SO_LINGER 0).
    closes_bound: u64,
    /// close() of accepted sockets that the client's RST had already released.
    closes_released: u64,
}

impl Counters {
    fn add(&mut self, o: &Counters) {
        self.cycles += o.cycles;
        self.binds_ok += o.binds_ok;
        self.binds_failed += o.binds_failed;
        self.listens_ok += o.listens_ok;
        self.connects_ok += o.connects_ok;
        self.connects_failed += o.connects_failed;
        self.accepts_ok += o.accepts_ok;
        self.closes_bound += o.closes_bound;
        self.closes_released += o.closes_released;
    }
}

#[derive(Serialize)]
struct Ready<'a> {
    ready: bool,
    netns_path: &'a str,
    netns_inode: u32,
    pid: u32,
    mode: Mode,
    reuseaddr: bool,
    workers: usize,
}

#[derive(Serialize)]
struct Done {
    done: bool,
    elapsed_s: f64,
    #[serde(flatten)]
    counters: Counters,
    /// hold: sockets held open now.
    held: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.workers == 0 {
        bail!("--workers must be at least 1");
    }
    if args.mode == Mode::HoldPart {
        return hold_part(&args);
    }
    let need_fds = match args.mode {
        Mode::Hold => u64::from(args.count) + FD_RESERVE,
        Mode::Soak => u64::from(args.count) * 8 + 1024,
        _ => 4096,
    };
    let fd_limit = raise_nofile(need_fds)?;
    let range = if args.mode == Mode::Soak {
        let hi = u32::from(args.base) + args.count.saturating_sub(1);
        let hi = u16::try_from(hi).context("--base + --count goes past port 65535")?;
        (args.base, hi)
    } else {
        args.range
    };
    let ns = PrivateNetns::with_port_range(range.0, range.1)
        .context("creating the private netns (needs root: CAP_SYS_ADMIN)")?;
    let pid = std::process::id();
    let tid = ns.run(|| nix::unistd::gettid().as_raw())?;
    let netns_path = format!("/proc/{pid}/task/{tid}/ns/net");
    let ns_file = Arc::new(ns.ns_file()?);

    // Sockets made before the run (listeners), created on the netns thread.
    let reuse = args.reuseaddr;
    let mut held: Vec<Socket> = Vec::new();
    let mut listeners: Vec<Socket> = Vec::new();
    let mut helpers = Helpers(Vec::new());
    let mut held_by_helpers = 0u64;
    match args.mode {
        Mode::Connect => {
            for _ in 0..args.workers {
                let l = ns.socket(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
                l.set_reuse_address(reuse)?;
                l.bind(&sa(Ipv4Addr::LOCALHOST, 0))
                    .context("binding a listener")?;
                l.listen(4096).context("listen")?;
                listeners.push(l);
            }
        }
        Mode::Soak => {
            // One listener per worker just below the churned range, targets of connect().
            for w in 0..args.workers {
                let port = args
                    .base
                    .checked_sub(1 + w as u16)
                    .context("--base too small for the soak listeners")?;
                let l = ns.socket(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
                l.bind(&sa(Ipv4Addr::LOCALHOST, port))
                    .with_context(|| format!("binding the soak listener on port {port}"))?;
                l.listen(4096).context("listen")?;
                listeners.push(l);
            }
        }
        Mode::Hold => {
            let per_proc = fd_limit.saturating_sub(FD_RESERVE).max(1) as u32;
            let own = args.count.min(per_proc);
            for i in 0..own {
                let port = u32::from(args.base) + i;
                let port = u16::try_from(port).context("--base + --count goes past port 65535")?;
                let l = ns.socket(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
                l.set_reuse_address(reuse)?;
                l.bind(&sa(Ipv4Addr::LOCALHOST, port))
                    .with_context(|| format!("binding listener {i} on port {port}"))?;
                l.listen(16).context("listen")?;
                held.push(l);
            }
            // The rest in helper processes (same program, `--mode hold-part`).
            let exe = std::env::current_exe().context("finding the churn executable")?;
            let mut next = own;
            while next < args.count {
                let n = (args.count - next).min(per_proc);
                let base = u16::try_from(u32::from(args.base) + next).context("port past 65535")?;
                let mut cmd = std::process::Command::new(&exe);
                cmd.args(["--mode", "hold-part", "--netns-path", &netns_path])
                    .args(["--base", &base.to_string(), "--count", &n.to_string()])
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped());
                if reuse {
                    cmd.arg("--reuseaddr");
                }
                let mut child = cmd.spawn().context("starting a hold-part helper")?;
                let mut line = String::new();
                if let Some(out) = child.stdout.take() {
                    std::io::BufReader::new(out)
                        .read_line(&mut line)
                        .context("reading a helper's stdout")?;
                }
                helpers.0.push(child);
                if line.trim() != "ready" {
                    bail!("a hold-part helper failed (ports {base}.. x{n}); see its stderr");
                }
                held_by_helpers += u64::from(n);
                next += n;
            }
        }
        Mode::Bind | Mode::Ports | Mode::HoldPart => {}
    }

    let mut out = std::io::stdout().lock();
    let ready = Ready {
        ready: true,
        netns_path: &netns_path,
        netns_inode: ns.inode(),
        pid,
        mode: args.mode,
        reuseaddr: reuse,
        workers: args.workers,
    };
    writeln!(out, "{}", serde_json::to_string(&ready)?)?;
    out.flush()?;

    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    match lines.next() {
        Some(Ok(l)) if l.trim() == "go" => {}
        Some(Ok(l)) => bail!("expected `go` on stdin, got {l:?}"),
        Some(Err(e)) => return Err(e).context("reading stdin"),
        None => return Ok(()),
    }

    let stop = Arc::new(AtomicBool::new(false));
    let mut elapsed = 0.0f64;
    let counters = if args.mode == Mode::Hold {
        let n = held.len() as u64 + held_by_helpers;
        Counters {
            listens_ok: n,
            binds_ok: n,
            ..Counters::default()
        }
    } else {
        let listeners = Arc::new(listeners);
        let barrier = Arc::new(Barrier::new(args.workers + 1));
        let mut handles = Vec::new();
        for w in 0..args.workers {
            let ns_file = Arc::clone(&ns_file);
            let stop = Arc::clone(&stop);
            let barrier = Arc::clone(&barrier);
            let listeners = Arc::clone(&listeners);
            let a = WorkerArgs {
                mode: args.mode,
                reuse,
                index: w,
                workers: args.workers,
                base: args.base,
                count: args.count,
                rate_per_worker: if args.rate == 0 {
                    0
                } else {
                    (args.rate / args.workers as u32).max(1)
                },
            };
            handles.push(std::thread::spawn(move || -> Result<Counters> {
                nix::sched::setns(ns_file.as_fd(), CloneFlags::CLONE_NEWNET)
                    .context("setns() into the private netns")?;
                barrier.wait();
                worker(&a, &listeners, &stop)
            }));
        }
        barrier.wait();
        let started = Instant::now();
        let timed = matches!(args.mode, Mode::Bind | Mode::Connect)
            || (args.mode == Mode::Soak && args.seconds > 0.0);
        if timed {
            std::thread::sleep(Duration::from_secs_f64(args.seconds));
            stop.store(true, Ordering::Relaxed);
        } else if args.mode == Mode::Soak {
            // Until `stop` (or EOF) on stdin.
            for l in lines.by_ref() {
                match l {
                    Ok(l) if l.trim() == "stop" => break,
                    Ok(_) => continue,
                    Err(_) => break,
                }
            }
            stop.store(true, Ordering::Relaxed);
        }
        let mut total = Counters::default();
        for h in handles {
            match h.join() {
                Ok(r) => total.add(&r?),
                Err(_) => bail!("a worker thread panicked"),
            }
        }
        // Measured from the moment every worker was released.
        elapsed = started.elapsed().as_secs_f64();
        total
    };
    let mut kept = held.len() as u64 + held_by_helpers;
    HELD.with_lock(|h| kept += h.len() as u64);
    let done = Done {
        done: true,
        elapsed_s: elapsed,
        counters,
        held: kept,
    };
    writeln!(out, "{}", serde_json::to_string(&done)?)?;
    out.flush()?;
    // Keep every socket (and the netns) until the driver closes stdin.
    for l in lines {
        if l.is_err() {
            break;
        }
    }
    drop(held);
    drop(helpers);
    Ok(())
}

fn sa(ip: Ipv4Addr, port: u16) -> SockAddr {
    SockAddr::from(SocketAddr::V4(SocketAddrV4::new(ip, port)))
}

fn tcp_socket(reuse: bool) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    if reuse {
        s.set_reuse_address(true)?;
    }
    Ok(s)
}

/// Raise RLIMIT_NOFILE's soft limit to `want`, or to the hard limit when that is lower
/// (raising the hard limit needs CAP_SYS_RESOURCE, which root may lack in containers).
/// Returns the soft limit in force afterwards.
fn raise_nofile(want: u64) -> Result<u64> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    if rl.rlim_cur >= want {
        return Ok(rl.rlim_cur);
    }
    rl.rlim_cur = want.min(rl.rlim_max);
    // SAFETY: `rl` is a valid rlimit; the kernel only reads it.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("setrlimit(RLIMIT_NOFILE, soft {})", rl.rlim_cur));
    }
    Ok(rl.rlim_cur)
}

/// File descriptors kept free for everything that is not a held socket.
const FD_RESERVE: u64 = 256;

/// `hold-part`: enter the netns of the `hold` parent, hold `--count` listeners from
/// `--base`, print `ready`, wait for EOF on stdin.
fn hold_part(args: &Args) -> Result<()> {
    let path = args
        .netns_path
        .as_deref()
        .context("hold-part needs --netns-path")?;
    let f = std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
    nix::sched::setns(f.as_fd(), CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("setns({path})"))?;
    let mut held = Vec::new();
    for i in 0..args.count {
        let port = u16::try_from(u32::from(args.base) + i).context("port past 65535")?;
        held.push(
            listener(args.reuseaddr, port).with_context(|| format!("listener on port {port}"))?,
        );
    }
    println!("ready");
    std::io::stdout().flush()?;
    for l in std::io::stdin().lock().lines() {
        if l.is_err() {
            break;
        }
    }
    drop(held);
    Ok(())
}

fn listener(reuse: bool, port: u16) -> std::io::Result<Socket> {
    let l = tcp_socket(reuse)?;
    l.bind(&sa(Ipv4Addr::LOCALHOST, port))?;
    l.listen(16)?;
    Ok(l)
}

/// Helper processes of `hold`, each holding part of the sockets; they exit when their
/// stdin (held here) closes.
struct Helpers(Vec<std::process::Child>);

impl Drop for Helpers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            c.stdin.take();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

struct WorkerArgs {
    mode: Mode,
    reuse: bool,
    index: usize,
    workers: usize,
    base: u16,
    count: u32,
    rate_per_worker: u32,
}

fn worker(a: &WorkerArgs, listeners: &[Socket], stop: &AtomicBool) -> Result<Counters> {
    let mut c = Counters::default();
    match a.mode {
        Mode::Bind => {
            let any = sa(Ipv4Addr::LOCALHOST, 0);
            while !stop.load(Ordering::Relaxed) {
                let s = tcp_socket(a.reuse).context("socket()")?;
                match s.bind(&any) {
                    Ok(()) => c.binds_ok += 1,
                    Err(_) => c.binds_failed += 1,
                }
                let bound = s
                    .local_addr()
                    .ok()
                    .and_then(|l| l.as_socket())
                    .is_some_and(|l| l.port() != 0);
                drop(s);
                if bound {
                    c.closes_bound += 1;
                }
                c.cycles += 1;
            }
        }
        Mode::Connect => {
            let l = listeners
                .get(a.index)
                .context("no listener for this worker")?;
            let target = l.local_addr().context("listener address")?;
            while !stop.load(Ordering::Relaxed) {
                let cl = tcp_socket(a.reuse).context("socket()")?;
                if cl.connect(&target).is_err() {
                    c.connects_failed += 1;
                    c.cycles += 1;
                    continue;
                }
                c.connects_ok += 1;
                let (srv, _) = l.accept().context("accept()")?;
                c.accepts_ok += 1;
                // Client first, with an RST: no TIME-WAIT, the server socket is released.
                cl.set_linger(Some(Duration::ZERO)).context("SO_LINGER 0")?;
                drop(cl);
                c.closes_bound += 1;
                drop(srv);
                c.closes_released += 1;
                c.cycles += 1;
            }
        }
        Mode::Ports => {
            let mut i = a.index as u32;
            while i < a.count {
                let port = u32::from(a.base) + i;
                let Ok(port) = u16::try_from(port) else { break };
                let s = tcp_socket(a.reuse).context("socket()")?;
                match s.bind(&sa(Ipv4Addr::LOCALHOST, port)) {
                    Ok(()) => {
                        c.binds_ok += 1;
                        drop(s);
                        c.closes_bound += 1;
                    }
                    Err(_) => c.binds_failed += 1,
                }
                c.cycles += 1;
                i += a.workers as u32;
            }
        }
        Mode::Soak => soak_worker(a, listeners, stop, &mut c)?,
        Mode::Hold | Mode::HoldPart => {}
    }
    Ok(c)
}

/// xorshift64*: a small deterministic generator (no rand crate needed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const SOAK_MAX_PER_PORT: usize = 4;

fn soak_worker(
    a: &WorkerArgs,
    listeners: &[Socket],
    stop: &AtomicBool,
    c: &mut Counters,
) -> Result<()> {
    let l = listeners
        .get(a.index)
        .context("no listener for this worker")?;
    let target = l.local_addr().context("listener address")?;
    let mut rng =
        Rng(0x9e37_79b9_7f4a_7c15 ^ (a.index as u64 + 1).wrapping_mul(0x1234_5678_9abc_def1));
    // Sockets this worker holds, per port offset.
    let mut held: Vec<Vec<Socket>> = (0..a.count).map(|_| Vec::new()).collect();
    let mut accepted: std::collections::VecDeque<Socket> = std::collections::VecDeque::new();
    let pace = (a.rate_per_worker > 0)
        .then(|| Duration::from_secs_f64(1.0 / f64::from(a.rate_per_worker)));
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if let Some(p) = pace {
            let due = started + p.mul_f64(c.cycles as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        c.cycles += 1;
        let off = rng.below(u64::from(a.count)) as usize;
        let port = a.base + off as u16;
        let slot = &mut held[off];
        match rng.below(8) {
            0..=2 if slot.len() < SOAK_MAX_PER_PORT => {
                let s = tcp_socket(rng.below(2) == 0).context("socket()")?;
                let ip = Ipv4Addr::new(127, 0, 0, 1 + rng.below(4) as u8);
                if s.bind(&sa(ip, port)).is_ok() {
                    c.binds_ok += 1;
                    if rng.below(4) == 0 && s.listen(16).is_ok() {
                        c.listens_ok += 1;
                    }
                    slot.push(s);
                } else {
                    c.binds_failed += 1;
                }
            }
            3 => {
                // connect() from an ephemeral port of the churned range.
                let s = tcp_socket(rng.below(2) == 0).context("socket()")?;
                if s.connect(&target).is_ok() {
                    c.connects_ok += 1;
                    if let Ok((srv, _)) = l.accept() {
                        c.accepts_ok += 1;
                        accepted.push_back(srv);
                    }
                    let local = s
                        .local_addr()
                        .ok()
                        .and_then(|x| x.as_socket())
                        .map(|x| x.port());
                    match local {
                        Some(p) if p >= a.base && u32::from(p - a.base) < a.count => {
                            held[usize::from(p - a.base)].push(s);
                        }
                        _ => {
                            s.set_linger(Some(Duration::ZERO))?;
                            drop(s);
                            c.closes_bound += 1;
                        }
                    }
                } else {
                    c.connects_failed += 1;
                }
                while accepted.len() > 64 {
                    if let Some(srv) = accepted.pop_front() {
                        srv.set_linger(Some(Duration::ZERO))?;
                        drop(srv);
                        c.closes_bound += 1;
                    }
                }
            }
            _ => {
                if !slot.is_empty() {
                    let i = rng.below(slot.len() as u64) as usize;
                    let s = slot.swap_remove(i);
                    // No TIME-WAIT may outlive the run: reset instead of FIN.
                    s.set_linger(Some(Duration::ZERO))?;
                    drop(s);
                    c.closes_bound += 1;
                }
            }
        }
    }
    // Hand the held sockets to the caller's lifetime: leak them into a static holder until
    // exit, so the final state stays in place for the comparison dump.
    HELD.with_lock(|h| {
        h.extend(held.into_iter().flatten());
        h.extend(accepted);
    });
    Ok(())
}

/// Sockets kept open after the soak workers returned (until the process exits).
static HELD: Holder = Holder(std::sync::Mutex::new(Vec::new()));

struct Holder(std::sync::Mutex<Vec<Socket>>);

impl Holder {
    fn with_lock(&self, f: impl FnOnce(&mut Vec<Socket>)) {
        let mut g = match self.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut g);
    }
}
