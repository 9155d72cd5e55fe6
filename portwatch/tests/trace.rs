//! Root integration tests of `portwatch trace`: each scenario in its own fresh network
//! namespace, the tracer filtered to it, values asserted as this kernel produces them.
mod common;

use std::time::Duration;

use common::{json_lines, listener, netns_path, require_root, tcp, v4, Running};
use portwatch::netns::PrivateNetns;
use serde_json::Value;

/// Runs `workload` in a fresh netns (port range `range`) with `portwatch trace --json`
/// attached to it, returns the transitions.
fn traced(range: (u16, u16), extra: &[&str], workload: impl FnOnce(&PrivateNetns)) -> Vec<Value> {
    traced_after(range, extra, |_| (), |ns, ()| workload(ns))
}

/// As [`traced`], with what `setup` makes in the namespace before the tracer starts
/// handed to the workload.
fn traced_after<S>(
    range: (u16, u16),
    extra: &[&str],
    setup: impl FnOnce(&PrivateNetns) -> S,
    workload: impl FnOnce(&PrivateNetns, S),
) -> Vec<Value> {
    let ns = PrivateNetns::with_port_range(range.0, range.1).expect("private netns");
    let before = setup(&ns);
    let path = netns_path(&ns);
    let mut args = vec![
        "trace",
        "--json",
        "--probe",
        "auto",
        "--netns",
        path.as_str(),
    ];
    args.extend_from_slice(extra);
    let run = Running::start(&args);
    workload(&ns, before);
    std::thread::sleep(Duration::from_millis(200));
    let (code, out, err) = run.stop();
    assert_eq!(code, 0, "trace exit code; stderr: {err}");
    assert!(err.contains("backend: "), "stderr names the backend: {err}");
    let lines = json_lines(&out);
    for l in &lines {
        assert_eq!(
            l["netns"].as_u64(),
            Some(ns.inode() as u64),
            "only our netns: {l}"
        );
    }
    lines
}

fn find<'a>(lines: &'a [Value], kind: &str, port: u64) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| l["kind"] == kind && l["port"] == port)
        .collect()
}

fn summary(lines: &[Value]) -> String {
    lines
        .iter()
        .map(|l| {
            format!(
                "{} {} {} fr={} owners={} errno={}",
                l["port"], l["kind"], l["op"], l["fastreuse"], l["owners"], l["errno"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_connection_from_before_the_tracer_is_released_and_traced() {
    if !require_root("a_connection_from_before_the_tracer_is_released_and_traced") {
        return;
    }
    // The client's port comes from a one-port range: 60000.
    let lines = traced_after(
        (60000, 60000),
        &[],
        |ns| {
            let l = listener(ns, 1234);
            let client = tcp(ns);
            client
                .connect(&v4("127.0.0.1", 1234))
                .expect("connect before the tracer");
            let (server, _) = l.accept().expect("accept");
            (l, client, server)
        },
        |_, (l, client, server)| {
            // The server closes first (its side goes to TIME-WAIT on 1234), so the
            // client's close ends in LAST_ACK -> CLOSE, which releases port 60000.
            drop(server);
            std::thread::sleep(Duration::from_millis(100));
            drop(client);
            std::thread::sleep(Duration::from_millis(200));
            drop(l);
        },
    );
    let s = summary(&lines);
    let gone = find(&lines, "bucket_destroyed", 60000);
    assert_eq!(gone.len(), 1, "the client's port is released once: {s}");
    assert_eq!(gone[0]["op"], "release", "{s}");
}

#[test]
fn connect_creates_minus_one_plain_bind_moves_to_zero_last_close_destroys() {
    if !require_root("connect_creates_minus_one_plain_bind_moves_to_zero_last_close_destroys") {
        return;
    }
    let lines = traced((60000, 60000), &[], |ns| {
        let l = listener(ns, 1234);
        let s1 = tcp(ns);
        s1.connect(&v4("127.0.0.1", 1234)).expect("connect");
        let s2 = tcp(ns);
        s2.bind(&v4("127.2.2.2", 60000))
            .expect("plain bind of another address on 60000");
        let (c, _) = l.accept().expect("accept");
        drop(c);
        drop(s1);
        drop(s2);
        drop(l);
    });
    let s = summary(&lines);
    // connect(): the port's bucket is created at -1 with one owner.
    let created = find(&lines, "bucket_created", 60000);
    assert_eq!(created.len(), 1, "{s}");
    assert_eq!(created[0]["op"], "connect", "{s}");
    assert_eq!(created[0]["fastreuse"], -1, "{s}");
    assert_eq!(created[0]["fastreuseport"], -1, "{s}");
    assert_eq!(created[0]["owners"], 1, "{s}");
    assert!(created[0]["pid"].as_u64().unwrap_or(0) > 0, "{s}");
    // plain bind() of another address: owner added, fastreuse -1 -> 0.
    let added = find(&lines, "owner_added", 60000);
    assert_eq!(added.len(), 1, "{s}");
    assert_eq!(added[0]["op"], "bind", "{s}");
    assert_eq!(added[0]["owners"], 2, "{s}");
    let changed = find(&lines, "fastreuse_changed", 60000);
    assert_eq!(changed.len(), 1, "{s}");
    assert_eq!(changed[0]["from"], -1, "{s}");
    assert_eq!(changed[0]["to"], 0, "{s}");
    assert_eq!(changed[0]["fastreuse"], 0, "{s}");
    // closing the owners: the last one destroys the bucket (the server side holds the
    // TIME-WAIT, on port 1234).
    let destroyed = find(&lines, "bucket_destroyed", 60000);
    assert_eq!(destroyed.len(), 1, "exactly one destruction: {s}");
    assert_eq!(destroyed[0]["owners"], 0, "{s}");
    assert_eq!(destroyed[0]["fastreuse"], Value::Null, "{s}");
    // The destruction comes after the creation.
    let pos = |k: &str| {
        lines
            .iter()
            .position(|l| l["kind"] == k && l["port"] == 60000)
            .unwrap_or(usize::MAX)
    };
    assert!(pos("bucket_created") < pos("owner_added"), "{s}");
    assert!(pos("owner_added") < pos("bucket_destroyed"), "{s}");
}

#[test]
fn bind_conflict_is_bind_failed_with_eaddrinuse() {
    if !require_root("bind_conflict_is_bind_failed_with_eaddrinuse") {
        return;
    }
    let lines = traced((32768, 60999), &[], |ns| {
        let a = tcp(ns);
        a.bind(&v4("127.0.0.1", 5000)).expect("first bind");
        let b = tcp(ns);
        let err = b
            .bind(&v4("127.0.0.1", 5000))
            .expect_err("second bind must conflict");
        assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE));
        // The owner in the way stays a moment, as it would in real life: the failure is
        // explained from the bucket read after the event arrives.
        std::thread::sleep(Duration::from_millis(500));
        drop(a);
        drop(b);
    });
    let s = summary(&lines);
    let failed = find(&lines, "bind_failed", 5000);
    assert_eq!(failed.len(), 1, "{s}");
    assert_eq!(failed[0]["errno"], 98, "{s}");
    assert_eq!(failed[0]["errno_name"], "EADDRINUSE", "{s}");
    // The bucket that made it fail: one owner, bound without SO_REUSEADDR: 0.
    assert_eq!(failed[0]["owners"], 1, "{s}");
    assert_eq!(failed[0]["fastreuse"], 0, "{s}");
    assert_eq!(find(&lines, "bucket_created", 5000).len(), 1, "{s}");
    assert_eq!(find(&lines, "bucket_destroyed", 5000).len(), 1, "{s}");
    // Explained as it happened: the address it asked for, and the owner in the way with
    // its process (this test) and the rule it trips.
    assert_eq!(failed[0]["local"], "127.0.0.1:5000", "{s}");
    let why = &failed[0]["explanation"];
    assert_eq!(why["call"], "bind", "{}", failed[0]);
    assert_eq!(why["verdict"], "EADDRINUSE", "{why}");
    assert_eq!(why["conflicts"].as_array().map(Vec::len), Some(1), "{why}");
    let c = &why["conflicts"][0];
    assert_eq!(c["local"], "127.0.0.1:5000", "{why}");
    assert_eq!(c["rule"], "same_address", "{why}");
    assert_eq!(
        c["pid"].as_u64(),
        Some(u64::from(std::process::id())),
        "{why}"
    );
    assert!(
        why["drift"].is_null(),
        "read while the owner was still there: {why}"
    );
    // Successful transitions carry none.
    for l in lines.iter().filter(|l| l["errno"] == 0) {
        assert!(l["explanation"].is_null(), "{l}");
    }
}

#[test]
fn quiz3_connect_fails_with_eaddrnotavail_on_60000() {
    if !require_root("quiz3_connect_fails_with_eaddrnotavail_on_60000") {
        return;
    }
    let lines = traced((60000, 60000), &["--port", "60000"], |ns| {
        let l = listener(ns, 1234);
        let s1 = tcp(ns);
        s1.bind(&v4("127.1.1.1", 0)).expect("s1 bind");
        s1.connect(&v4("127.9.9.9", 1234)).expect("s1 connect");
        let s2 = tcp(ns);
        let err = s2
            .connect(&v4("127.9.9.9", 1234))
            .expect_err("s2 connect must fail");
        assert_eq!(err.raw_os_error(), Some(libc::EADDRNOTAVAIL));
        std::thread::sleep(Duration::from_millis(500));
        let (c, _) = l.accept().expect("accept");
        drop(c);
        drop(s1);
        drop(s2);
    });
    let s = summary(&lines);
    for l in &lines {
        assert_eq!(l["port"], 60000, "--port 60000 filters in the kernel: {s}");
    }
    let created = find(&lines, "bucket_created", 60000);
    assert_eq!(created.len(), 1, "{s}");
    assert_eq!(created[0]["op"], "bind", "{s}");
    assert_eq!(created[0]["fastreuse"], 0, "{s}");
    assert_eq!(created[0]["owners"], 1, "{s}");
    let failed = find(&lines, "connect_failed", 60000);
    assert_eq!(failed.len(), 1, "{s}");
    assert_eq!(failed[0]["errno"], 99, "{s}");
    assert_eq!(failed[0]["errno_name"], "EADDRNOTAVAIL", "{s}");
    assert_eq!(failed[0]["port_from_range"], true, "{s}");
    // The bucket that made it fail: s1's, bound by bind(): 0, one owner.
    assert_eq!(failed[0]["fastreuse"], 0, "{s}");
    assert_eq!(failed[0]["owners"], 1, "{s}");
    // Explained as it happened: the range read from the namespace, its one port blocked
    // by s1 (this test's socket), bound before it connected.
    assert_eq!(failed[0]["remote"], "127.9.9.9:1234", "{s}");
    let why = &failed[0]["explanation"];
    assert_eq!(why["call"], "connect", "{}", failed[0]);
    assert_eq!(why["verdict"], "EADDRNOTAVAIL", "{why}");
    assert_eq!(why["range"], serde_json::json!([60000, 60000]), "{why}");
    assert_eq!(
        (why["free"].as_u64(), why["blocked"].as_u64()),
        (Some(0), Some(1)),
        "{why}"
    );
    assert_eq!(
        why["source"], "127.0.0.1",
        "routing's source toward 127.9.9.9: {why}"
    );
    let holder = &why["blocked_by"][0];
    assert_eq!(holder["local"], "127.1.1.1:60000", "{why}");
    assert_eq!(
        holder["pid"].as_u64(),
        Some(u64::from(std::process::id())),
        "{why}"
    );
}

#[test]
fn port_filter_that_matches_nothing_reports_nothing() {
    if !require_root("port_filter_that_matches_nothing_reports_nothing") {
        return;
    }
    let lines = traced((60000, 60000), &["--port", "9"], |ns| {
        let l = listener(ns, 1234);
        let s1 = tcp(ns);
        s1.connect(&v4("127.0.0.1", 1234)).expect("connect");
        drop(s1);
        drop(l);
    });
    assert!(lines.is_empty(), "nothing on port 9: {}", summary(&lines));
}

#[test]
fn human_output_has_a_header_and_one_line_per_transition() {
    if !require_root("human_output_has_a_header_and_one_line_per_transition") {
        return;
    }
    let ns = PrivateNetns::with_port_range(60000, 60000).expect("netns");
    let path = netns_path(&ns);
    let run = Running::start(&["trace", "--netns", &path]);
    let a = tcp(&ns);
    a.bind(&v4("127.0.0.1", 7000)).expect("bind");
    drop(a);
    std::thread::sleep(Duration::from_millis(200));
    let (code, out, err) = run.stop();
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("TIME(UTC)"), "{out}");
    assert_eq!(lines.len(), 3, "header, created, destroyed: {out}");
    assert!(
        lines[1].contains("bucket_created") && lines[1].contains("7000"),
        "{out}"
    );
    assert!(lines[2].contains("bucket_destroyed"), "{out}");
}

#[test]
fn ipv6_sockets_are_traced_with_their_addresses() {
    if !require_root("ipv6_sockets_are_traced_with_their_addresses") {
        return;
    }
    let v6 = |a: &str| -> socket2::SockAddr {
        a.parse::<std::net::SocketAddr>()
            .expect("v6 literal")
            .into()
    };
    let lines = traced((32768, 60999), &["--port", "7777"], |ns| {
        let tcp6 = || {
            ns.socket(socket2::Domain::IPV6, socket2::Type::STREAM, None)
                .expect("v6 socket")
        };
        let l = tcp6();
        l.bind(&v6("[::1]:7777")).expect("bind [::1]:7777");
        l.listen(8).expect("listen");
        let c = tcp6();
        c.connect(&v6("[::1]:7777")).expect("connect");
        let (a, _) = l.accept().expect("accept");
        let d = tcp6();
        let err = d.bind(&v6("[::1]:7777")).expect_err("conflicting bind");
        assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE));
        drop(a);
        drop(c);
        drop(d);
        drop(l);
    });
    let s = summary(&lines);
    let created = find(&lines, "bucket_created", 7777);
    assert_eq!(created.len(), 1, "{s}");
    assert_eq!(created[0]["local"], "[::1]:7777", "{s}");
    let accepted = find(&lines, "owner_added", 7777);
    assert!(
        accepted.iter().any(|l| l["op"] == "accept"
            && l["remote"]
                .as_str()
                .is_some_and(|r| r.starts_with("[::1]:"))),
        "{s}"
    );
    let failed = find(&lines, "bind_failed", 7777);
    assert_eq!(failed.len(), 1, "{s}");
    assert_eq!(failed[0]["errno"], 98, "{s}");
}

/// A process that exits with a bound socket (no close()) releases the port when its
/// files are closed at exit: the release is traced, attributed to that process.
#[test]
fn a_port_held_at_process_exit_is_released_and_traced() {
    if !require_root("a_port_held_at_process_exit_is_released_and_traced") {
        return;
    }
    let mut child_pid = 0;
    let lines = traced((32768, 60999), &["--port", "7400"], |ns| {
        child_pid = ns
            .run(|| {
                let addr = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: 7400u16.to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: the child makes only async-signal-safe calls (socket, bind,
                // _exit) and exits holding the bound socket; the parent waits for it.
                let pid = unsafe { libc::fork() };
                assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
                if pid == 0 {
                    // SAFETY: see above; `addr` is a valid sockaddr_in of the given size.
                    unsafe {
                        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                        let rc = libc::bind(
                            fd,
                            (&addr as *const libc::sockaddr_in).cast(),
                            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                        );
                        libc::_exit(if rc == 0 { 0 } else { 1 });
                    }
                }
                let mut status = 0;
                // SAFETY: waits for the child forked above.
                let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
                assert_eq!(waited, pid);
                assert!(
                    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                    "the child's bind failed: {status}"
                );
                pid as u32
            })
            .expect("netns thread");
    });
    let s = summary(&lines);
    let created = find(&lines, "bucket_created", 7400);
    assert_eq!(created.len(), 1, "{s}");
    assert_eq!(created[0]["op"], "bind", "{s}");
    let destroyed = find(&lines, "bucket_destroyed", 7400);
    assert_eq!(destroyed.len(), 1, "the release at exit is traced: {s}");
    assert_eq!(
        destroyed[0]["pid"].as_u64(),
        Some(u64::from(child_pid)),
        "{s}"
    );
    assert_eq!(destroyed[0]["owners"], 0, "{s}");
}

/// Whether the running kernel has compatibility-table row `id`, as `probes --json` says.
fn kernel_has(id: &str) -> bool {
    let out = std::process::Command::new(common::bin())
        .args(["probes", "--json"])
        .output()
        .expect("probes");
    let v: Value = serde_json::from_slice(&out.stdout).expect("probes JSON");
    v["variants"]
        .as_array()
        .and_then(|vs| vs.iter().find(|x| x["id"] == id))
        .map(|x| x["present"] == true)
        .unwrap_or_else(|| panic!("no row {id} in probes: {v}"))
}

/// What newer kernels record per socket, in the trace JSON: connect()-bound or bound
/// (6.18+), the socket's own IP_LOCAL_PORT_RANGE (6.3+), its per-address bucket's state
/// (6.18+); null where the kernel does not keep it.
#[test]
fn trace_shows_what_the_kernel_records_per_socket() {
    if !require_root("trace_shows_what_the_kernel_records_per_socket") {
        return;
    }
    let (connect_bind, own_range, addr_state) = (
        kernel_has("connect-bind"),
        kernel_has("socket-port-range"),
        kernel_has("tb2-fastreuse"),
    );
    let lines = traced((40000, 40009), &[], |ns| {
        let l = listener(ns, 1234);
        let c = tcp(ns);
        if own_range {
            use std::os::fd::AsRawFd as _;
            let v: u32 = 40005 | 40009 << 16;
            // SAFETY: setsockopt reads size_of::<u32>() bytes from a live u32.
            let rc = unsafe {
                libc::setsockopt(
                    c.as_raw_fd(),
                    libc::IPPROTO_IP,
                    51,
                    (&v as *const u32).cast(),
                    4,
                )
            };
            assert_eq!(
                rc,
                0,
                "IP_LOCAL_PORT_RANGE: {}",
                std::io::Error::last_os_error()
            );
        }
        c.connect(&v4("127.0.0.1", 1234)).expect("connect");
        let b = tcp(ns);
        b.bind(&v4("127.0.0.1", 7001)).expect("bind");
        drop(b);
        drop(c);
        drop(l);
    });
    let s = summary(&lines);
    let created = |port: Option<u64>| {
        lines
            .iter()
            .find(|l| {
                l["kind"] == "bucket_created"
                    && l["op"] != "rescan"
                    && port.is_none_or(|p| l["port"] == p)
                    && l["port"] != 1234
            })
            .unwrap_or_else(|| panic!("bucket_created: {s}"))
    };
    let by_connect = created(None);
    let by_bind = created(Some(7001));
    assert_eq!(by_connect["op"], "connect", "{s}");
    if connect_bind {
        assert_eq!(by_connect["connect_bound"], true, "{by_connect}");
        assert_eq!(by_bind["connect_bound"], false, "{by_bind}");
    } else {
        assert_eq!(by_connect["connect_bound"], Value::Null, "{by_connect}");
    }
    if own_range {
        assert_eq!(
            by_connect["local_port_range"],
            serde_json::json!({"lo": 40005, "hi": 40009}),
            "{by_connect}"
        );
        let port = by_connect["port"].as_u64().expect("port");
        assert!((40005..=40009).contains(&port), "{by_connect}");
    }
    assert_eq!(by_bind["local_port_range"], Value::Null, "{by_bind}");
    if addr_state {
        // connect() creates its address's bucket at -1/-1 too; a plain bind() at 0/0.
        assert_eq!(
            (
                by_connect["addr_fastreuse"].as_i64(),
                by_connect["addr_fastreuseport"].as_i64()
            ),
            (Some(-1), Some(-1)),
            "{by_connect}"
        );
        assert_eq!(
            (
                by_bind["addr_fastreuse"].as_i64(),
                by_bind["addr_fastreuseport"].as_i64()
            ),
            (Some(0), Some(0)),
            "{by_bind}"
        );
    } else {
        assert_eq!(by_bind["addr_fastreuse"], Value::Null, "{by_bind}");
    }
}

/// A tiny event ring loses events under churn: the loss is reported, a `resync` record
/// names what was read again, and the state the stream ends with (the reducer's, printed
/// by `--state-at-exit` after the last resync) equals a fresh `dump` of the namespace.
#[test]
fn lost_events_are_resynced_and_the_final_state_equals_a_fresh_dump() {
    if !require_root("lost_events_are_resynced_and_the_final_state_equals_a_fresh_dump") {
        return;
    }
    let ns = PrivateNetns::new().expect("private netns");
    let path = netns_path(&ns);
    let inode = u64::from(ns.inode());
    // stdout goes to a file: thousands of lines would fill a pipe nobody reads.
    let dir = tempfile::tempdir().expect("tempdir");
    let ready = dir.path().join("ready");
    let out_path = dir.path().join("stdout");
    let child = std::process::Command::new(common::bin())
        .args([
            "trace",
            "--json",
            "--state-at-exit",
            "--ring-bytes",
            "4096",
            "--netns",
            &path,
            "--ready-file",
        ])
        .arg(&ready)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawning portwatch");
    let mut guard = common::KillOnDrop(Some(child));
    common::wait_ready(guard.0.as_mut().expect("child"), &ready);

    // Churn: 3 rounds over 600 ports. Each round binds every port (every third with
    // SO_REUSEADDR and a second owner), listens on some, closes most again; what is kept
    // open stays until the dump below, so the final state is known to the kernel.
    const PORTS: u16 = 600;
    common::raise_nofile_limit(u64::from(PORTS) * 3 + 200);
    let mut kept = Vec::new();
    for round in 0..3u16 {
        let mut socks = Vec::new();
        for i in 0..PORTS {
            let port = 30000 + i;
            let s = tcp(&ns);
            let shared = i % 3 == 0;
            if shared {
                s.set_reuse_address(true).expect("SO_REUSEADDR");
            }
            if s.bind(&v4("127.0.0.1", port)).is_err() {
                continue;
            }
            if shared {
                let t = tcp(&ns);
                t.set_reuse_address(true).expect("SO_REUSEADDR");
                if t.bind(&v4("127.0.0.1", port)).is_ok() {
                    socks.push(t);
                }
            }
            if i % 5 == 0 {
                s.listen(16).expect("listen");
            }
            socks.push(s);
        }
        // Keep every seventh socket of the last round; close the rest.
        for (i, s) in socks.into_iter().enumerate() {
            if round == 2 && i % 7 == 0 {
                kept.push(s);
            }
        }
    }
    // A few more ticks of the tracer (it checks for losses every 500 ms), then stop: the
    // stop drains the ring, resyncs once more, and prints the state.
    std::thread::sleep(Duration::from_millis(1200));
    let child = guard.0.as_mut().expect("child");
    // SAFETY: kill on the pid of the child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    common::wait_exit(child, Duration::from_secs(30));
    let res = guard
        .0
        .take()
        .expect("child")
        .wait_with_output()
        .expect("output");
    let err = String::from_utf8_lossy(&res.stderr).into_owned();
    assert_eq!(res.status.code(), Some(0), "trace exit code; stderr: {err}");
    let (code, dump_out, dump_err) = common::run_portwatch(&["dump", "--json", "--netns", &path]);
    assert_eq!(code, 0, "dump: {dump_err}");
    drop(kept);

    let lines = json_lines(&std::fs::read_to_string(&out_path).expect("stdout file"));
    let dropped = common::dropped_total(&err);
    assert!(
        dropped > 0,
        "a 4096-byte ring loses events of this churn; stderr: {err}"
    );
    let resyncs: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "resync").collect();
    assert!(
        !resyncs.is_empty(),
        "no resync record after {dropped} lost events; stderr: {err}"
    );
    let reported: u64 = resyncs
        .iter()
        .map(|r| r["dropped"].as_u64().expect("dropped"))
        .sum();
    let corrections: u64 = resyncs
        .iter()
        .map(|r| r["corrections"].as_u64().expect("corrections"))
        .sum();
    eprintln!(
        "{dropped} events dropped, {} resync records, {corrections} corrections",
        resyncs.len()
    );
    assert_eq!(
        reported, dropped,
        "the resync records account for every dropped event: {resyncs:?}"
    );
    for r in &resyncs {
        let lost =
            r["dropped"].as_u64().expect("dropped") + r["skipped"].as_u64().expect("skipped");
        match (&r["reread"]["ports"], &r["reread"]["scope"]) {
            (Value::Array(ports), Value::Null) => {
                assert!(
                    !ports.is_empty() || lost == 0,
                    "a loss names the buckets read again: {r}"
                );
                for p in ports {
                    assert_eq!(p["netns"].as_u64(), Some(inode), "{r}");
                    assert!(
                        (30000..30000 + u64::from(PORTS))
                            .contains(&p["port"].as_u64().expect("port")),
                        "{r}"
                    );
                }
            }
            (Value::Null, Value::Object(scope)) => {
                assert_eq!(scope["netns"].as_u64(), Some(inode), "{r}")
            }
            _ => panic!("reread is either ports or a scope: {r}"),
        }
        assert_eq!(
            r["complete"], true,
            "every lost bucket could be read again: {r}"
        );
    }
    // Corrections come right after their resync record, as op `rescan`.
    let first = lines
        .iter()
        .position(|l| l["kind"] == "resync")
        .expect("a resync");
    assert!(lines[first + 1..]
        .iter()
        .take(resyncs[0]["corrections"].as_u64().expect("corrections") as usize)
        .all(|l| l["op"] == "rescan"));
    let state = lines.last().expect("a last line");
    assert_eq!(
        state["kind"], "state",
        "the stream ends with the state: {state}"
    );
    let dumped: Value = serde_json::from_str(&dump_out).expect("dump JSON");
    assert!(
        dumped.as_array().is_some_and(|rows| !rows.is_empty()),
        "the kept sockets hold buckets"
    );
    assert_eq!(
        state["buckets"], dumped,
        "after the resync the stream's state equals a fresh dump"
    );
}
