//! Root integration tests of `portwatch dump`: each scenario in its own fresh network
//! namespace, the real binary run against it, every count checked against what the test
//! itself created and, at scale, against `ss -tanH` run inside the namespace.
//!
//! Values are asserted as the running kernel produces them; where that differs from the
//! 2023 article the comment says so.
mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Read as _,
    time::{Duration, Instant},
};

use common::{netns_path, raise_nofile_limit, require_root, run_in_netns, run_portwatch, v4};
use portwatch::netns::PrivateNetns;
use serde_json::Value;
use socket2::{Domain, Socket, Type};

// ---------------------------------------------------------------------------------------
// Socket helpers. They run on the namespace's thread (inside `ns.run(..)`), where a new
// socket belongs to the private namespace.

fn new_tcp() -> Socket {
    Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket(AF_INET, SOCK_STREAM)")
}

/// A socket bound to `ip:port` with the given options, not listening.
fn bound(ip: &str, port: u16, reuseaddr: bool, reuseport: bool) -> Socket {
    let s = new_tcp();
    s.set_reuse_address(reuseaddr).expect("SO_REUSEADDR");
    s.set_reuse_port(reuseport).expect("SO_REUSEPORT");
    s.bind(&v4(ip, port)).unwrap_or_else(|e| {
        panic!("bind {ip}:{port} (reuseaddr={reuseaddr}, reuseport={reuseport}): {e}")
    });
    s
}

fn listening(ip: &str, port: u16, reuseaddr: bool, reuseport: bool) -> Socket {
    let s = bound(ip, port, reuseaddr, reuseport);
    s.listen(4096).expect("listen");
    s
}

fn local_port(s: &Socket) -> u16 {
    s.local_addr()
        .expect("getsockname")
        .as_socket()
        .expect("an inet address")
        .port()
}

/// Connects a client to `ip:port`, accepts it on `l`: (client, accepted server side).
fn connected(l: &Socket, ip: &str, port: u16) -> (Socket, Socket) {
    let c = new_tcp();
    c.connect(&v4(ip, port))
        .unwrap_or_else(|e| panic!("connect {ip}:{port}: {e}"));
    let (a, _) = l.accept().expect("accept");
    (c, a)
}

/// Closes a connection so that the accepted server side holds the TIME-WAIT (as the
/// article does): the server closes first; the client waits for the FIN (EOF), then
/// closes, goes LAST-ACK and is gone once the server's ACK arrives. Waiting for the EOF
/// avoids a simultaneous close, which would leave both sides in TIME-WAIT.
fn close_server_first(client: Socket, server: Socket) {
    drop(server);
    let mut buf = [0u8; 16];
    let n = (&client)
        .read(&mut buf)
        .expect("client read until the server's FIN");
    assert_eq!(n, 0, "the server sent no data, the client must see EOF");
    drop(client);
}

// ---------------------------------------------------------------------------------------
// Running the binary and reading its output.

/// `portwatch dump ARGS --json`: exit code 0, one JSON array.
fn dump_json(args: &[&str]) -> Vec<Value> {
    let mut all = vec!["dump", "--json"];
    all.extend_from_slice(args);
    let (code, out, err) = run_portwatch(&all);
    assert_eq!(code, 0, "portwatch {all:?} failed: {err}");
    assert!(!err.contains("cut short"), "walk truncated: {err}");
    match serde_json::from_str::<Value>(&out) {
        Ok(Value::Array(rows)) => rows,
        other => panic!("portwatch {all:?}: expected one JSON array, got {other:?}: {out}"),
    }
}

/// Rows by port, checking that each row is in `netns`, l3mdev 0, not truncated, and that
/// no port appears twice.
fn by_port(rows: &[Value], netns: u32) -> BTreeMap<u16, &Value> {
    let mut m = BTreeMap::new();
    for r in rows {
        assert_eq!(
            r["netns"].as_u64(),
            Some(u64::from(netns)),
            "only our netns: {r}"
        );
        assert_eq!(r["l3mdev"], 0, "no VRF here: {r}");
        assert_eq!(r["owners_truncated"], false, "owners must be exact: {r}");
        let port = r["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_else(|| panic!("port: {r}"));
        assert!(m.insert(port, r).is_none(), "port {port} listed twice");
    }
    m
}

/// (fastreuse, fastreuseport, owners) of a row.
fn state(r: &Value) -> (i64, i64, u64) {
    (
        r["fastreuse"]
            .as_i64()
            .unwrap_or_else(|| panic!("fastreuse: {r}")),
        r["fastreuseport"]
            .as_i64()
            .unwrap_or_else(|| panic!("fastreuseport: {r}")),
        r["owners"]
            .as_u64()
            .unwrap_or_else(|| panic!("owners: {r}")),
    )
}

fn states(rows: &BTreeMap<u16, &Value>) -> BTreeMap<u16, (i64, i64, u64)> {
    rows.iter().map(|(p, r)| (*p, state(r))).collect()
}

/// `ss -tanH` inside the namespace: per local port, the number of sockets (one line per
/// socket, TIME-WAIT included), and per state name, the number of sockets.
struct SsView {
    per_port: BTreeMap<u16, u32>,
    per_state: BTreeMap<String, u32>,
    lines: usize,
}

fn parse_ss(out: &str) -> SsView {
    let mut v = SsView {
        per_port: BTreeMap::new(),
        per_state: BTreeMap::new(),
        lines: 0,
    };
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        // State Recv-Q Send-Q Local:Port Peer:Port
        let f: Vec<&str> = line.split_whitespace().collect();
        assert!(f.len() >= 5, "unexpected ss line: {line:?}");
        // Local is 127.0.0.1:80, 0.0.0.0:80, *:80 or [::]:80: the port follows the last ':'.
        let port: u16 = f[3]
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no local port in ss line {line:?}"));
        *v.per_port.entry(port).or_default() += 1;
        *v.per_state.entry(f[0].to_owned()).or_default() += 1;
        v.lines += 1;
    }
    v
}

fn ss_in(path: &str, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["-tanH"];
    args.extend_from_slice(extra);
    run_in_netns(path, "ss", &args)
}

fn require_tools(test: &str) {
    for tool in ["nsenter", "ss"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        assert!(
            found,
            "{test}: `{tool}` not found in PATH; install util-linux (nsenter) and iproute2 (ss)"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 1. Scale: 10,000 sockets on exactly 2,000 ports, mixed states.

/// Bound-only ports start here, cycling through three layouts (see [`bound_layout`]);
/// how many there are is decided once the clients' ephemeral ports are known, so that
/// the namespace ends with exactly [`PORTS`] ports.
const BOUND_START: u16 = 10000;
/// Bound-only sockets in all.
const BOUND_SOCKETS: u32 = 2800;
/// Ports in use in the namespace at the end.
const PORTS: usize = 2000;
/// Listener ports (0.0.0.0:P), each with accepted connections.
const LISTEN_PORTS: std::ops::Range<u16> = 20000..20400;
/// Connections kept ESTABLISHED (client + accepted server side: 2 sockets each).
const ESTABLISHED: u32 = 2600;
/// Connections closed server side first: the server side stays in TIME-WAIT on the
/// listener's port (1 socket each), the client side goes away.
const TIME_WAIT: u32 = 1600;
/// The ephemeral range configured in the namespace for the clients. connect() prefers
/// even ports and shares a -1/-1 bucket between different remotes, so about half of it
/// ends up used.
const EPHEMERAL: (u16, u16) = (40000, 40999);
const TOTAL: u32 = 10_000;

/// The bound-only sockets of the i-th bound port: (local address, SO_REUSEADDR).
/// Several local addresses on one port, with and without SO_REUSEADDR, and two
/// SO_REUSEADDR sockets sharing one address (allowed: both set it, neither listens).
fn bound_layout(i: usize) -> &'static [(&'static str, bool)] {
    match i % 3 {
        0 => &[
            ("127.0.0.1", false),
            ("127.0.0.2", false),
            ("127.0.0.3", true),
            ("127.0.0.4", true),
            ("127.0.0.4", true),
        ],
        1 => &[("127.0.0.1", false), ("127.0.0.2", true)],
        _ => &[("127.0.0.5", false)],
    }
}

/// How many sockets the i-th of `ports` bound ports gets so that `total` sockets cover
/// them all: its layout's size, cut so that every later port still gets one.
fn bound_share(i: usize, ports: usize, placed: u32, total: u32) -> usize {
    let later = (ports - i - 1) as u32;
    let room = total.saturating_sub(placed).saturating_sub(later);
    let last = i + 1 == ports;
    let want = if last {
        room
    } else {
        room.min(bound_layout(i).len() as u32)
    };
    want.max(1) as usize
}

/// What the test created: the live sockets and, per port, how many sockets hold it.
struct Built {
    keep: Vec<Socket>,
    /// Every socket holding each port, whatever its state (TIME-WAIT included).
    expected: BTreeMap<u16, u32>,
    /// Of those, the sockets that are only bound (`ss` of iproute2 < 6.10 cannot list them).
    bound_only: BTreeMap<u16, u32>,
}

fn build_scale() -> Built {
    let mut keep = Vec::with_capacity(TOTAL as usize);
    let mut expected: BTreeMap<u16, u32> = BTreeMap::new();
    let mut bound_only: BTreeMap<u16, u32> = BTreeMap::new();
    let listeners: Vec<(u16, Socket)> = LISTEN_PORTS
        .map(|p| (p, listening("0.0.0.0", p, true, false)))
        .collect();
    for (p, _) in &listeners {
        *expected.entry(*p).or_default() += 1;
    }
    let n = listeners.len() as u32;
    // TIME-WAIT first: their clients' ephemeral ports are released (LAST-ACK) while the
    // rest is built.
    for i in 0..TIME_WAIT {
        let (p, l) = &listeners[(i % n) as usize];
        let (c, a) = connected(l, "127.0.0.1", *p);
        close_server_first(c, a);
        *expected.entry(*p).or_default() += 1;
    }
    // Kept connections go to another address of the listeners: a connect() that took a
    // closed TIME-WAIT client's port to the same address and port would hit that
    // TIME-WAIT's 4-tuple, and the kernel recycles a TIME-WAIT hit by a new SYN.
    for i in 0..ESTABLISHED {
        let (p, l) = &listeners[(i % n) as usize];
        let (c, a) = connected(l, "127.0.0.2", *p);
        let eph = local_port(&c);
        assert!(
            (EPHEMERAL.0..=EPHEMERAL.1).contains(&eph),
            "client port {eph} outside the configured range {EPHEMERAL:?}"
        );
        assert_eq!(
            local_port(&a),
            *p,
            "the accepted side holds the listener's port"
        );
        *expected.entry(eph).or_default() += 1;
        *expected.entry(*p).or_default() += 1;
        keep.push(c);
        keep.push(a);
    }
    keep.extend(listeners.into_iter().map(|(_, l)| l));
    // Bound-only sockets fill the namespace up to exactly PORTS ports.
    let bound_ports = PORTS - expected.len();
    assert!(
        bound_ports >= 1 && bound_ports as u32 <= BOUND_SOCKETS,
        "{} ports already in use: cannot place {BOUND_SOCKETS} bound sockets on the rest of {PORTS}",
        expected.len()
    );
    let mut placed = 0u32;
    for i in 0..bound_ports {
        let port = BOUND_START + i as u16;
        let share = bound_share(i, bound_ports, placed, BOUND_SOCKETS);
        let layout = bound_layout(i);
        for k in 0..share {
            // Beyond its layout (only the last port, if at all), extra distinct addresses.
            let (ip, reuseaddr) = match layout.get(k) {
                Some(&(ip, r)) => (ip.to_string(), r),
                None => (format!("127.1.{}.{}", k / 250, k % 250 + 1), false),
            };
            keep.push(bound(&ip, port, reuseaddr, false));
            *expected.entry(port).or_default() += 1;
            *bound_only.entry(port).or_default() += 1;
            placed += 1;
        }
    }
    assert_eq!(placed, BOUND_SOCKETS, "bound sockets placed");
    Built {
        keep,
        expected,
        bound_only,
    }
}

/// Polls `ss` until only LISTEN, ESTAB and TIME-WAIT remain (the LAST-ACK clients are
/// gone and every closed server side reached TIME-WAIT) with the expected number of lines.
fn settle(path: &str, lines: usize) -> SsView {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, out, err) = ss_in(path, &[]);
        assert_eq!(code, 0, "ss -tanH in the netns failed: {err}");
        let v = parse_ss(&out);
        let transient = v
            .per_state
            .keys()
            .any(|s| !matches!(s.as_str(), "LISTEN" | "ESTAB" | "TIME-WAIT"));
        if !transient && v.lines == lines {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "sockets did not settle within 20 s: {:?}, {} lines, want {lines}",
            v.per_state,
            v.lines
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn ten_thousand_sockets_every_port_counted_exactly() {
    if !require_root("ten_thousand_sockets_every_port_counted_exactly") {
        return;
    }
    require_tools("ten_thousand_sockets_every_port_counted_exactly");
    let listeners = (LISTEN_PORTS.end - LISTEN_PORTS.start) as u32;
    assert_eq!(
        BOUND_SOCKETS + listeners + 2 * ESTABLISHED + TIME_WAIT,
        TOTAL,
        "the plan adds up"
    );
    // Open at the same time: bound, listeners, established pairs; plus slack for other
    // tests of this binary running in parallel.
    let open = TOTAL - TIME_WAIT;
    raise_nofile_limit(u64::from(open) + 512);
    let ns = PrivateNetns::with_port_range(EPHEMERAL.0, EPHEMERAL.1).expect("private netns");
    let path = netns_path(&ns);
    let t0 = Instant::now();
    let built = ns.run(build_scale).expect("netns thread");
    let build_time = t0.elapsed();
    assert_eq!(built.keep.len() as u32, open);
    assert_eq!(built.expected.len(), PORTS, "exactly {PORTS} ports in use");
    assert_eq!(
        built.expected.values().sum::<u32>(),
        TOTAL,
        "the test's own bookkeeping"
    );

    let listed = TOTAL - built.bound_only.values().sum::<u32>();
    let t_ss = Instant::now();
    let ss = settle(&path, listed as usize);
    let ss_time = t_ss.elapsed();
    // ss agrees with what the test meant to build.
    assert_eq!(
        ss.per_state.get("LISTEN").copied(),
        Some(listeners),
        "{:?}",
        ss.per_state
    );
    assert_eq!(
        ss.per_state.get("ESTAB").copied(),
        Some(2 * ESTABLISHED),
        "{:?}",
        ss.per_state
    );
    assert_eq!(
        ss.per_state.get("TIME-WAIT").copied(),
        Some(TIME_WAIT),
        "{:?}",
        ss.per_state
    );

    // One more ss run, timed on its own, for the report.
    let t_ss1 = Instant::now();
    let (code, ss_out, err) = ss_in(&path, &[]);
    let ss_once = t_ss1.elapsed();
    assert_eq!(code, 0, "{err}");
    let ss = {
        let again = parse_ss(&ss_out);
        assert_eq!(
            again.per_port, ss.per_port,
            "the namespace is static once settled"
        );
        again
    };
    // Bound-only sockets: listed by `ss state bound-inactive` where ss and the kernel
    // support it (iproute2 >= 6.10, Linux >= 6.10), else the test's own bookkeeping.
    let bound_only: BTreeMap<u16, u32> = match ss_in(&path, &["state", "bound-inactive"]) {
        (0, out, _) => parse_ss(&out).per_port,
        _ => built.bound_only.clone(),
    };
    assert_eq!(bound_only, built.bound_only, "bound-only sockets per port");

    let t_dump = Instant::now();
    let rows = dump_json(&["--netns", &path]);
    let dump_time = t_dump.elapsed();
    let got = by_port(&rows, ns.inode());

    // The bounded-loop walk driver (kernels before 5.17) walks the same table in small
    // steps over many program runs: it must find exactly the same rows.
    let t_bounded = Instant::now();
    let bounded_rows = dump_json(&["--walk-driver", "bounded", "--netns", &path]);
    let bounded_time = t_bounded.elapsed();
    assert_eq!(
        states(&by_port(&bounded_rows, ns.inode())),
        states(&got),
        "dump with the bounded-loop walk driver vs bpf_loop"
    );

    let ports: BTreeSet<u16> = got.keys().copied().collect();
    let want_ports: BTreeSet<u16> = built.expected.keys().copied().collect();
    assert_eq!(
        ports.symmetric_difference(&want_ports).collect::<Vec<_>>(),
        Vec::<&u16>::new(),
        "ports in the dump vs ports the test used ({} vs {})",
        ports.len(),
        want_ports.len()
    );
    let mut wrong = Vec::new();
    let mut wrong_ss = Vec::new();
    for (port, row) in &got {
        let owners = row["owners"]
            .as_u64()
            .unwrap_or_else(|| panic!("owners: {row}"));
        let want = u64::from(built.expected[port]);
        if owners != want {
            wrong.push(format!("port {port}: dump {owners}, created {want}"));
        }
        let from_ss = u64::from(
            ss.per_port.get(port).copied().unwrap_or(0)
                + bound_only.get(port).copied().unwrap_or(0),
        );
        if owners != from_ss {
            wrong_ss.push(format!("port {port}: dump {owners}, ss {from_ss}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} ports with wrong owners, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(20)]
    );
    assert!(
        wrong_ss.is_empty(),
        "{} ports disagree with ss, e.g. {:?}",
        wrong_ss.len(),
        &wrong_ss[..wrong_ss.len().min(20)]
    );
    let ss_ports: BTreeSet<u16> = ss
        .per_port
        .keys()
        .chain(bound_only.keys())
        .copied()
        .collect();
    assert_eq!(ss_ports, ports, "ss and the dump list the same ports");
    assert_eq!(
        got.values().map(|r| state(r).2).sum::<u64>(),
        u64::from(TOTAL)
    );

    // The bucket state of each kind of port, as 6.18 produces it.
    for (port, row) in &got {
        let (fr, frp, _) = state(row);
        let want = if built.bound_only.contains_key(port) || LISTEN_PORTS.contains(port) {
            // bind() with or without SO_REUSEADDR: 0 on 6.18 (a new bucket never takes
            // the "first owner" branch that would set +1).
            (0, 0)
        } else {
            // Only connect()-ed clients: created at -1/-1 by __inet_hash_connect.
            (-1, -1)
        };
        assert_eq!((fr, frp), want, "port {port}: {row}");
    }

    eprintln!(
        "scale: {} sockets on {} ports (build {:.0} ms); portwatch dump --json {:.0} ms (bounded-loop driver {:.0} ms), ss -tanH {:.0} ms (settle incl. polling {:.0} ms)",
        TOTAL,
        ports.len(),
        build_time.as_secs_f64() * 1e3,
        dump_time.as_secs_f64() * 1e3,
        bounded_time.as_secs_f64() * 1e3,
        ss_once.as_secs_f64() * 1e3,
        ss_time.as_secs_f64() * 1e3
    );
    drop(built);
}

// ---------------------------------------------------------------------------------------
// 2. fastreuse / fastreuseport for simple known cases.

#[test]
fn fastreuse_values_as_this_kernel_sets_them() {
    if !require_root("fastreuse_values_as_this_kernel_sets_them") {
        return;
    }
    let ns = PrivateNetns::with_port_range(50000, 50000).expect("private netns");
    let path = netns_path(&ns);
    let keep = ns
        .run(|| {
            let l = listening("0.0.0.0", 1234, false, false);
            // Two connect()-ed clients share the only ephemeral port (different remotes).
            let (c1, a1) = connected(&l, "127.0.0.1", 1234);
            let (c2, a2) = connected(&l, "127.0.0.2", 1234);
            assert_eq!((local_port(&c1), local_port(&c2)), (50000, 50000));
            vec![
                l,
                c1,
                a1,
                c2,
                a2,
                bound("127.0.0.1", 5000, false, false),
                bound("127.0.0.1", 5001, true, false),
                bound("127.0.0.1", 5001, true, false),
                bound("127.0.0.1", 5002, false, true),
                bound("127.0.0.1", 5002, false, true),
                listening("0.0.0.0", 5003, false, true),
                listening("0.0.0.0", 5003, false, true),
                bound("127.0.0.1", 5004, false, true),
                bound("127.0.0.2", 5004, false, false),
            ]
        })
        .expect("netns thread");
    let got = states(&by_port(&dump_json(&["--netns", &path]), ns.inode()));
    let want: BTreeMap<u16, (i64, i64, u64)> = [
        // Listener bound without SO_REUSEADDR, plus the two accepted sockets.
        (1234, (0, 0, 3)),
        // Only connect()-ed sockets: __inet_hash_connect creates the bucket at -1/-1.
        (50000, (-1, -1, 2)),
        // bind() without SO_REUSEADDR: 0.
        (5000, (0, 0, 1)),
        // bind() with SO_REUSEADDR (twice, same address): the article (Linux 6.2) shows
        // +1, but 6.18 links the new bhash2 bucket into tb->bhash2 before
        // inet_csk_update_fastreuse tests hlist_empty(&tb->bhash2), so the "first owner"
        // branch is never taken and fastreuse stays 0.
        (5001, (0, 0, 2)),
        // SO_REUSEPORT binds: for the same reason the first owner goes through the
        // "else" branch, where sk_reuseport_match() fails on a bucket at 0 and the
        // kernel sets FASTREUSEPORT_STRICT (2), not FASTREUSEPORT_ANY (1) as the first
        // owner did on older kernels.
        (5002, (0, 2, 2)),
        (5003, (0, 2, 2)),
        // A plain bind (other address) joining a SO_REUSEPORT bucket resets it to 0.
        (5004, (0, 0, 2)),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want);

    // Transitions of the connect()-created bucket on 50000.
    let plain = ns
        .run(|| bound("127.3.3.3", 50000, false, false))
        .expect("netns thread");
    let got = states(&by_port(
        &dump_json(&["--netns", &path, "--port", "50000"]),
        ns.inode(),
    ));
    assert_eq!(
        got.get(&50000),
        Some(&(0, 0, 3)),
        "plain bind of another address: -1 -> 0"
    );
    drop(plain);
    let got = states(&by_port(
        &dump_json(&["--netns", &path, "--port", "50000"]),
        ns.inode(),
    ));
    // 6.18 "tcp: Update bind bucket state on port release": the remaining owners are all
    // connect()-bound (SOCK_CONNECT_BIND), so the bucket returns to -1/-1. Earlier kernels
    // keep 0 until the bucket dies.
    assert_eq!(
        got.get(&50000),
        Some(&(-1, -1, 2)),
        "back to -1 once the bind()-bound owner left"
    );
    let reuse = ns
        .run(|| bound("127.4.4.4", 50000, true, false))
        .expect("netns thread");
    let got = states(&by_port(
        &dump_json(&["--netns", &path, "--port", "50000"]),
        ns.inode(),
    ));
    // SO_REUSEADDR bind of another address keeps fastreuse -1 (as the article says), but
    // inet_csk_update_fastreuse sets fastreuseport to 0 (the socket has no SO_REUSEPORT).
    assert_eq!(
        got.get(&50000),
        Some(&(-1, 0, 3)),
        "SO_REUSEADDR bind keeps fastreuse -1"
    );
    drop(reuse);
    drop(keep);
}

// ---------------------------------------------------------------------------------------
// 3. -v: per-address rows and owner sockets.

/// (address, [(local, state, reuseaddr, reuseport)]) of a verbose row, sorted.
fn addresses(row: &Value) -> BTreeMap<String, BTreeSet<(String, String, bool, bool)>> {
    let list = row["addresses"]
        .as_array()
        .unwrap_or_else(|| panic!("-v rows have `addresses`: {row}"));
    let mut m = BTreeMap::new();
    for a in list {
        let owners = a["owners"]
            .as_array()
            .unwrap_or_else(|| panic!("owners list: {a}"))
            .iter()
            .map(|o| {
                (
                    o["local"]
                        .as_str()
                        .unwrap_or_else(|| panic!("local: {o}"))
                        .to_owned(),
                    o["state"]
                        .as_str()
                        .unwrap_or_else(|| panic!("state: {o}"))
                        .to_owned(),
                    o["reuseaddr"]
                        .as_bool()
                        .unwrap_or_else(|| panic!("reuseaddr: {o}")),
                    o["reuseport"]
                        .as_bool()
                        .unwrap_or_else(|| panic!("reuseport: {o}")),
                )
            })
            .collect::<BTreeSet<_>>();
        let n = a["owners"].as_array().map(Vec::len).unwrap_or(0);
        assert_eq!(
            owners.len(),
            n,
            "owners listed once each (distinct here): {a}"
        );
        let addr = a["address"]
            .as_str()
            .unwrap_or_else(|| panic!("address: {a}"))
            .to_owned();
        assert!(
            m.insert(addr, owners).is_none(),
            "address listed twice: {row}"
        );
    }
    m
}

fn o(local: &str, state: &str, reuseaddr: bool, reuseport: bool) -> (String, String, bool, bool) {
    (local.to_owned(), state.to_owned(), reuseaddr, reuseport)
}

#[test]
fn verbose_lists_addresses_and_owner_sockets() {
    if !require_root("verbose_lists_addresses_and_owner_sockets") {
        return;
    }
    let ns = PrivateNetns::with_port_range(50000, 50000).expect("private netns");
    let path = netns_path(&ns);
    let keep = ns
        .run(|| {
            let l = listening("0.0.0.0", 1234, false, false);
            let (c1, a1) = connected(&l, "127.0.0.1", 1234);
            // The accepted side of this one (local 127.0.0.2:1234) holds a TIME-WAIT.
            let (c2, a2) = connected(&l, "127.0.0.2", 1234);
            close_server_first(c2, a2);
            vec![
                l,
                c1,
                a1,
                bound("127.0.0.1", 6000, false, false),
                bound("127.0.0.2", 6000, true, false),
                bound("127.0.0.1", 6001, true, true),
            ]
        })
        .expect("netns thread");
    // Wait until the client of the closed connection left LAST-ACK and the server side
    // reached TIME-WAIT.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, out, _) = ss_in(&path, &[]);
        let v = parse_ss(&out);
        if v.per_state.get("TIME-WAIT") == Some(&1)
            && v.per_state
                .keys()
                .all(|s| matches!(s.as_str(), "LISTEN" | "ESTAB" | "TIME-WAIT"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "no settled TIME-WAIT: {out}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let rows = dump_json(&["--netns", &path, "-v"]);
    let got = by_port(&rows, ns.inode());
    assert_eq!(
        got.keys().copied().collect::<Vec<_>>(),
        vec![1234, 6000, 6001, 50000]
    );

    let want_6000: BTreeMap<String, BTreeSet<_>> = [
        (
            "127.0.0.1".to_owned(),
            [o("127.0.0.1:6000", "CLOSE", false, false)].into(),
        ),
        (
            "127.0.0.2".to_owned(),
            [o("127.0.0.2:6000", "CLOSE", true, false)].into(),
        ),
    ]
    .into();
    assert_eq!(
        addresses(got[&6000]),
        want_6000,
        "two local addresses, two rows: {}",
        got[&6000]
    );
    assert_eq!(state(got[&6000]).2, 2);

    // The accepted sockets inherit the listener's options; the TIME-WAIT socket is
    // listed by its own state name.
    let want_1234: BTreeMap<String, BTreeSet<_>> = [
        (
            "0.0.0.0".to_owned(),
            [o("0.0.0.0:1234", "LISTEN", false, false)].into(),
        ),
        (
            "127.0.0.1".to_owned(),
            [o("127.0.0.1:1234", "ESTABLISHED", false, false)].into(),
        ),
        (
            "127.0.0.2".to_owned(),
            [o("127.0.0.2:1234", "TIME_WAIT", false, false)].into(),
        ),
    ]
    .into();
    assert_eq!(addresses(got[&1234]), want_1234, "{}", got[&1234]);
    assert_eq!(state(got[&1234]).2, 3, "listener, accepted, TIME-WAIT");

    let want_6001: BTreeMap<String, BTreeSet<_>> = [(
        "127.0.0.1".to_owned(),
        [o("127.0.0.1:6001", "CLOSE", true, true)].into(),
    )]
    .into();
    assert_eq!(addresses(got[&6001]), want_6001, "{}", got[&6001]);

    let want_50000: BTreeMap<String, BTreeSet<_>> = [(
        "127.0.0.1".to_owned(),
        [o("127.0.0.1:50000", "ESTABLISHED", false, false)].into(),
    )]
    .into();
    assert_eq!(
        addresses(got[&50000]),
        want_50000,
        "the TIME-WAIT was the server's, the client is gone: {}",
        got[&50000]
    );

    // Every row: owners = the sum over its addresses.
    for (port, row) in &got {
        let listed: usize = addresses(row).values().map(BTreeSet::len).sum();
        assert_eq!(state(row).2, listed as u64, "port {port}: {row}");
    }

    // The table form shows the same rows, indented.
    let (code, out, err) = run_portwatch(&["dump", "-v", "--netns", &path]);
    assert_eq!(code, 0, "{err}");
    for needle in [
        "  addr 127.0.0.1",
        "  addr 127.0.0.2",
        "  addr 0.0.0.0",
        "127.0.0.1:6000 CLOSE",
        "127.0.0.2:6000 CLOSE REUSEADDR",
        "127.0.0.1:6001 CLOSE REUSEADDR REUSEPORT",
        "0.0.0.0:1234 LISTEN",
        "127.0.0.1:1234 ESTABLISHED",
        "127.0.0.2:1234 TIME_WAIT",
    ] {
        assert!(out.contains(needle), "table -v lacks {needle:?}:\n{out}");
    }
    // Like ss -p: the processes holding each owner (this test holds them all), in the
    // JSON and the table; the TIME-WAIT socket has no process, uid or inode.
    let me = std::process::id();
    let comm = std::fs::read_to_string("/proc/self/comm").expect("comm");
    let comm = comm.trim_end();
    for (port, row) in &got {
        for a in row["addresses"].as_array().expect("addresses") {
            for o in a["owners"].as_array().expect("owners") {
                if o["state"] == "TIME_WAIT" {
                    assert_eq!(o["holders"], serde_json::json!([]), "port {port}: {o}");
                    assert!(
                        o["uid"].is_null() && o["inode"].is_null(),
                        "port {port}: {o}"
                    );
                    assert!(
                        !o["remote"].is_null(),
                        "a TIME-WAIT socket keeps its peer: {o}"
                    );
                } else {
                    let pids: Vec<u64> = o["holders"]
                        .as_array()
                        .expect("holders")
                        .iter()
                        .filter_map(|h| h["pid"].as_u64())
                        .collect();
                    assert_eq!(pids, vec![u64::from(me)], "port {port}: {o}");
                    assert_eq!(o["holders"][0]["comm"], comm, "port {port}: {o}");
                    assert!(
                        o["inode"].as_u64().is_some_and(|i| i > 0),
                        "port {port}: {o}"
                    );
                    assert_eq!(o["uid"], 0, "port {port}: {o}");
                }
            }
        }
    }
    assert!(
        out.lines().any(|l| l.contains("127.0.0.2:1234 TIME_WAIT ")
            && l.contains(" -> ")
            && l.ends_with("(TIME-WAIT: no process)")),
        "{out}"
    );
    let users = format!("users:((\"{comm}\",pid={me},fd=");
    assert!(
        out.lines()
            .filter(|l| l.contains("0.0.0.0:1234 LISTEN"))
            .all(|l| l.contains(&users)),
        "table -v names the holding process like ss -p ({users}...):\n{out}"
    );
    // Without -v: no address rows, no `addresses` key.
    let rows = dump_json(&["--netns", &path]);
    assert!(
        rows.iter().all(|r| r.get("addresses").is_none()),
        "{rows:?}"
    );
    drop(keep);
}

// ---------------------------------------------------------------------------------------
// 4. --port, --netns all, default netns.

#[test]
fn port_filter_netns_all_and_default_netns() {
    if !require_root("port_filter_netns_all_and_default_netns") {
        return;
    }
    require_tools("port_filter_netns_all_and_default_netns");
    let ns = PrivateNetns::with_port_range(50000, 50000).expect("private netns");
    let path = netns_path(&ns);
    let inode = ns.inode();
    let keep = ns
        .run(|| {
            let l = listening("0.0.0.0", 7100, false, false);
            let (c, a) = connected(&l, "127.0.0.1", 7100);
            vec![
                l,
                c,
                a,
                bound("127.0.0.1", 7101, false, false),
                bound("127.0.0.1", 7102, true, false),
            ]
        })
        .expect("netns thread");
    let ours: BTreeSet<u16> = [7100, 7101, 7102, 50000].into();

    // --port P: that port only.
    let rows = dump_json(&["--netns", &path, "--port", "7101"]);
    let got = by_port(&rows, inode);
    assert_eq!(
        got.keys().copied().collect::<Vec<_>>(),
        vec![7101],
        "{rows:?}"
    );
    assert_eq!(state(got[&7101]), (0, 0, 1));
    let rows = dump_json(&["--netns", &path, "--port", "7100"]);
    assert_eq!(
        states(&by_port(&rows, inode)),
        [(7100, (0, 0, 2))].into(),
        "listener + accepted"
    );
    // A port nobody uses: no rows, still success.
    assert!(dump_json(&["--netns", &path, "--port", "7199"]).is_empty());

    // --netns all: our rows are among them, with a NETNS column in the table.
    let (code, out, err) = run_portwatch(&["dump", "--netns", "all"]);
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    let header = lines.next().unwrap_or_default();
    assert!(
        header.split_whitespace().next() == Some("NETNS"),
        "first column is NETNS: {header}"
    );
    assert!(
        header.contains("TCP-PORT") && header.contains("FASTREUSE") && header.contains("#OWNERS"),
        "{header}"
    );
    let mine: BTreeSet<u16> = lines
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&inode.to_string().as_str()))
                .then(|| f[1].parse::<u16>().expect("port column"))
        })
        .collect();
    assert_eq!(mine, ours, "--netns all shows our namespace's rows:\n{out}");
    let rows = dump_json(&["--netns", "all"]);
    let ours_json: BTreeSet<u16> = rows
        .iter()
        .filter(|r| r["netns"].as_u64() == Some(u64::from(inode)))
        .filter_map(|r| r["port"].as_u64().and_then(|p| u16::try_from(p).ok()))
        .collect();
    assert_eq!(ours_json, ours);

    // No --netns: the caller's namespace. Run inside ours with nsenter.
    let (code, out, err) = run_in_netns(&path, common::bin(), &["dump", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let rows: Vec<Value> =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("JSON array: {e}: {out}"));
    let got = by_port(&rows, inode);
    assert_eq!(
        got.keys().copied().collect::<BTreeSet<_>>(),
        ours,
        "only this namespace's ports"
    );
    // And the table without --netns has no NETNS column.
    let (code, out, err) = run_in_netns(&path, common::bin(), &["dump"]);
    assert_eq!(code, 0, "{err}");
    let header = out.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("TCP-PORT"),
        "no NETNS column for one namespace: {out}"
    );
    assert_eq!(out.lines().count(), 1 + ours.len(), "{out}");
    drop(keep);
}

/// `dump --port P` in one namespace walks only the hash chain where P lives: for ports
/// with a bucket (a listener with an accepted connection, bound-only sockets, a shared
/// port) and without one, in a namespace of 1,200 ports, its rows equal the whole-table
/// walk's rows of P, verbose or not, with either walk driver and with a ring so small
/// that the walk of one bucket takes several runs; from inside the namespace (no
/// --netns) too.
#[test]
fn port_walks_one_chain_and_equals_the_whole_table() {
    if !require_root("port_walks_one_chain_and_equals_the_whole_table") {
        return;
    }
    const N: u16 = 1200;
    raise_nofile_limit(u64::from(N) + 200);
    // The connecting socket's port: 50000.
    let ns = PrivateNetns::with_port_range(50000, 50000).expect("private netns");
    let path = netns_path(&ns);
    let _keep = ns
        .run(|| {
            let mut keep: Vec<Socket> = (0..N)
                .map(|i| bound("127.0.0.1", 40000 + i, i % 2 == 0, false))
                .collect();
            let l = listening("0.0.0.0", 7100, true, false);
            let (c, a) = connected(&l, "127.0.0.1", 7100);
            keep.extend([l, c, a]);
            keep.extend((0..40).map(|_| bound("127.0.0.1", 7200, true, true)));
            keep
        })
        .expect("netns thread");
    for verbose in [false, true] {
        let v: &[&str] = if verbose { &["-v"] } else { &[] };
        let mut args = vec!["--netns", path.as_str()];
        args.extend_from_slice(v);
        let whole = dump_json(&args);
        assert_eq!(whole.len(), usize::from(N) + 3, "every port has its bucket");
        for port in [
            7100u16, 7200, 50000, 40000, 40001, 40599, 41199, 41200, 7199,
        ] {
            let want: Vec<Value> = whole
                .iter()
                .filter(|r| r["port"].as_u64() == Some(u64::from(port)))
                .cloned()
                .collect();
            let p = port.to_string();
            for extra in [
                &[][..],
                &["--walk-driver", "bounded"][..],
                &["--snapshot-ring-bytes", "4096"][..],
            ] {
                let mut a = args.clone();
                a.extend_from_slice(&["--port", &p]);
                a.extend_from_slice(extra);
                assert_eq!(
                    dump_json(&a),
                    want,
                    "dump {a:?} equals the whole table's rows of port {port}"
                );
            }
            let mut inside = vec!["dump", "--json", "--port", &p];
            inside.extend_from_slice(v);
            let (code, out, err) = run_in_netns(&path, common::bin(), &inside);
            assert_eq!(code, 0, "{inside:?}: {err}");
            let rows: Value = serde_json::from_str(&out).expect("dump JSON");
            assert_eq!(rows, Value::Array(want), "{inside:?} inside the namespace");
        }
    }
}

// ---------------------------------------------------------------------------------------
// 5. Errors: non-zero exit, a message naming the problem, no panic.

/// A walk that fills its ring goes on in further program runs, each resuming inside a
/// chain where the previous one stopped (the ring is drained in between): with a
/// 4096-byte snapshot ring (~60 records per run), and with the bounded-loop driver (a
/// step budget per run), the dump of 1,200 ports is complete (exit 0, no INCOMPLETE)
/// and equal to the one-run dump.
#[test]
fn a_walk_over_many_runs_is_complete_and_equal_to_one_run() {
    if !require_root("a_walk_over_many_runs_is_complete_and_equal_to_one_run") {
        return;
    }
    const N: u16 = 1200;
    raise_nofile_limit(u64::from(N) + 200);
    let ns = PrivateNetns::new().expect("private netns");
    let path = netns_path(&ns);
    let _keep = ns
        .run(|| {
            (0..N)
                .map(|i| bound("127.0.0.1", 40000 + i, i % 2 == 0, false))
                .collect::<Vec<_>>()
        })
        .expect("netns thread");
    let one_run = dump_json(&["--netns", &path]);
    assert_eq!(one_run.len(), usize::from(N), "every port has its bucket");
    for extra in [
        &["--snapshot-ring-bytes", "4096"][..],
        &["--walk-driver", "bounded"][..],
    ] {
        let mut args = vec!["--netns", path.as_str()];
        args.extend_from_slice(extra);
        let (code, out, err) = {
            let mut all = vec!["dump", "--json"];
            all.extend_from_slice(&args);
            run_portwatch(&all)
        };
        assert_eq!(code, 0, "dump {args:?}: {err}");
        assert!(!err.contains("INCOMPLETE"), "dump {args:?}: {err}");
        let rows: Value = serde_json::from_str(&out).expect("dump JSON");
        assert_eq!(
            rows,
            Value::Array(one_run.clone()),
            "dump {args:?} equals the one-run dump"
        );
    }
}

#[test]
fn bad_arguments_fail_cleanly() {
    // Argument and --netns checks come before any privileged step: no root needed.
    let (code, _, err) = run_portwatch(&["dump", "--netns", "/tmp"]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("/tmp is not a network namespace"), "{err}");
    assert!(
        err.contains("/proc/PID/ns/net"),
        "the message says what is expected: {err}"
    );

    let (code, _, err) = run_portwatch(&["dump", "--netns", "/nonexistent/ns"]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("/nonexistent/ns does not exist"), "{err}");

    for bad in ["0", "70000", "http"] {
        let (code, out, err) = run_portwatch(&["dump", "--port", bad]);
        assert_ne!(code, 0, "--port {bad}: {out} {err}");
        assert!(out.is_empty(), "nothing on stdout for --port {bad}: {out}");
        assert!(
            err.contains(&format!("invalid port `{bad}`")),
            "--port {bad}: {err}"
        );
        assert!(
            err.contains("1 to 65535"),
            "--port {bad}: the message gives the valid range: {err}"
        );
    }
}
