//! `explain`, judged by the running kernel: seeded, generated bind() and connect() cases,
//! each in its own private network namespace (root). Each candidate call is explained
//! first through the command path of `explain bind`/`explain connect` (the owners read
//! from the kernel by the eBPF snapshot), then made, and every answer must agree.
//!
//! `PORTWATCH_JUDGE_SEED`, `PORTWATCH_JUDGE_BIND` and `PORTWATCH_JUDGE_CONNECT` change the
//! seed and the case counts.
mod common;

use common::{listener, netns_path, require_root, run_portwatch, tcp, v4};
use portwatch::{
    backend::{ProbeSession, SessionOptions},
    explain::{
        judge::{self, Options},
        observe::observe,
        variant::{KernelVersion, Variant},
    },
    netns::PrivateNetns,
};
use serde_json::Value;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn generated_cases_agree_with_the_kernel() {
    if !require_root("generated_cases_agree_with_the_kernel") {
        return;
    }
    let host_range =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").expect("host range");
    let host_reserved = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_reserved_ports")
        .expect("host reserved");
    let version = KernelVersion::running().expect("kernel release");
    // Each dated rule observed by its own experiment must match the table's row for this
    // release; the generated cases then run with the observed rules.
    let (variant, observations) =
        observe(version).unwrap_or_else(|e| panic!("observing the rules: {e}"));
    for o in &observations {
        eprintln!(
            "row {}: observed {}, table says {}",
            o.row, o.observed, o.expected
        );
    }
    assert_eq!(variant, Variant::for_version(version), "the variant table's rows for {version} differ from what this kernel does: {observations:?}");
    let opts = Options {
        seed: env_or("PORTWATCH_JUDGE_SEED", 20261201),
        bind_cases: env_or("PORTWATCH_JUDGE_BIND", 300) as usize,
        connect_cases: env_or("PORTWATCH_JUDGE_CONNECT", 100) as usize,
    };
    let mut session = ProbeSession::open(&SessionOptions::default())
        .unwrap_or_else(|e| panic!("loading the snapshot program: {e}"));
    let started = std::time::Instant::now();
    let tally = judge::run(&opts, &variant, &mut session, |_| {})
        .unwrap_or_else(|e| panic!("judge run failed: {e}"));
    eprintln!(
        "kernel {version} (rows: {}): {}",
        variant
            .rows()
            .map(|r| r.name)
            .collect::<Vec<_>>()
            .join(", "),
        tally.summary(opts.seed, started.elapsed().as_secs_f64())
    );
    for d in &tally.disagreements {
        eprintln!("DISAGREEMENT {}: {}", d.case, d.what);
    }
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap(),
        host_range
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_reserved_ports").unwrap(),
        host_reserved
    );
    assert_eq!(tally.bind_cases, opts.bind_cases);
    assert_eq!(tally.connect_cases, opts.connect_cases);
    assert!(
        tally.bind_refusals > 0 && tally.bind_refusals < tally.bind_cases,
        "the generator covers both outcomes"
    );
    assert!(
        tally.explained >= tally.bind_cases + tally.connect_cases,
        "every candidate was explained through the command path first"
    );
    assert!(
        tally.disagreements.is_empty(),
        "{} disagreements (listed above)",
        tally.disagreements.len()
    );
}

/// The article's quiz 6 and quiz 3, each in its own namespace, explained by the command
/// line as an SRE would run it: text and JSON name the socket in the way with its process
/// (this test), the rule, the fix, or the range and its counts.
#[test]
fn explain_bind_and_connect_name_the_owner_rule_and_fix() {
    if !require_root("explain_bind_and_connect_name_the_owner_rule_and_fix") {
        return;
    }
    let me = u64::from(std::process::id());
    // Quiz 6: s1 holds 127.0.0.1:60000 (bound, then connected to 127.8.8.8).
    let ns = PrivateNetns::with_port_range(60000, 60000).expect("private netns");
    let path = netns_path(&ns);
    let _server = listener(&ns, 1234);
    let s1 = tcp(&ns);
    s1.bind(&v4("127.0.0.1", 60000)).expect("s1 bind");
    s1.connect(&v4("127.8.8.8", 1234)).expect("s1 connect");
    let (code, out, err) = run_portwatch(&[
        "explain",
        "bind",
        "127.0.0.1:60000",
        "--netns",
        &path,
        "--json",
    ]);
    assert_eq!(code, 1, "a refused bind exits 1: {err}");
    let v: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["verdict"], "EADDRINUSE", "{v}");
    assert_eq!(v["port"], 60000, "{v}");
    let c = &v["conflicts"][0];
    assert_eq!(
        (c["local"].as_str(), c["state"].as_str()),
        (Some("127.0.0.1:60000"), Some("ESTABLISHED")),
        "{v}"
    );
    assert_eq!(
        (c["reuseaddr"].as_bool(), c["reuseport"].as_bool()),
        (Some(false), Some(false)),
        "{v}"
    );
    assert_eq!(c["pid"].as_u64(), Some(me), "{v}");
    assert!(c["comm"].is_string(), "{v}");
    assert_eq!(c["rule"], "same_address", "{v}");
    // The article's fix: SO_REUSEADDR on both sockets.
    assert!(
        v["fixes"]
            .as_array()
            .expect("fixes")
            .iter()
            .any(|f| f["kind"] == "candidate_and_owners" && f["change"]["reuseaddr"] == true),
        "{v}"
    );
    let (code, text, err) =
        run_portwatch(&["explain", "bind", "127.0.0.1:60000", "--netns", &path]);
    assert_eq!(code, 1, "{err}");
    for part in [
        "bind 127.0.0.1:60000",
        ": EADDRINUSE",
        "127.0.0.1:60000 ESTABLISHED -> 127.8.8.8:1234",
        &format!("pid {me} "),
        "rule: same address",
        "set SO_REUSEADDR on the new socket and on the conflicting owner",
    ] {
        assert!(text.contains(part), "missing {part:?} in\n{text}");
    }
    // Another address of the port is free to bind: exit 0.
    let (code, text, err) =
        run_portwatch(&["explain", "bind", "127.0.0.2:60000", "--netns", &path]);
    assert_eq!(code, 0, "{text}{err}");
    assert!(text.contains(": ok"), "{text}");
    drop(s1);

    // Quiz 3: s1 bound 127.1.1.1:0 (gets 60000) and connected; connect() has no port left.
    let ns = PrivateNetns::with_port_range(60000, 60000).expect("private netns");
    let path = netns_path(&ns);
    let _server = listener(&ns, 1234);
    let s1 = tcp(&ns);
    s1.bind(&v4("127.1.1.1", 0)).expect("s1 bind");
    s1.connect(&v4("127.9.9.9", 1234)).expect("s1 connect");
    let (code, out, err) = run_portwatch(&[
        "explain",
        "connect",
        "127.9.9.9:1234",
        "--netns",
        &path,
        "--json",
    ]);
    assert_eq!(code, 1, "{err}");
    let v: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["verdict"], "EADDRNOTAVAIL", "{v}");
    assert_eq!(v["range"], serde_json::json!([60000, 60000]), "{v}");
    for (k, n) in [
        ("reserved", 0),
        ("free", 0),
        ("shared_usable", 0),
        ("used_to_destination", 0),
        ("blocked", 1),
    ] {
        assert_eq!(v[k].as_u64(), Some(n), "{k}: {v}");
    }
    assert_eq!(v["blocked_by"][0]["local"], "127.1.1.1:60000", "{v}");
    assert_eq!(v["blocked_by"][0]["pid"].as_u64(), Some(me), "{v}");
    let (code, text, _) =
        run_portwatch(&["explain", "connect", "127.9.9.9:1234", "--netns", &path]);
    assert_eq!(code, 1);
    for part in [
        "connect to 127.9.9.9:1234 from 127.0.0.1",
        ": EADDRNOTAVAIL",
        "range 60000-60000 (ip_local_port_range): 1 port, 0 reserved",
        "blocked by bind() 1",
        "IP_BIND_ADDRESS_NO_PORT",
    ] {
        assert!(text.contains(part), "missing {part:?} in\n{text}");
    }
    // Reserving the port takes it out of the range's count.
    ns.run(|| std::fs::write("/proc/sys/net/ipv4/ip_local_reserved_ports", "60000"))
        .expect("netns thread")
        .expect("reserving 60000 inside the namespace");
    let (_, out, _) = run_portwatch(&[
        "explain",
        "connect",
        "127.9.9.9:1234",
        "--netns",
        &path,
        "--json",
        "--from",
        "127.0.0.1",
    ]);
    let v: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        (v["reserved"].as_u64(), v["blocked"].as_u64()),
        (Some(1), Some(0)),
        "{v}"
    );
    drop(s1);
}

/// Bad input gets a clear error and exit code 2, and nothing changes on the host.
#[test]
fn bad_input_exits_2_and_changes_nothing() {
    if !require_root("bad_input_exits_2_and_changes_nothing") {
        return;
    }
    let sysctls = [
        "ip_local_port_range",
        "ip_local_reserved_ports",
        "tcp_tw_reuse",
    ]
    .map(|f| std::fs::read_to_string(format!("/proc/sys/net/ipv4/{f}")).expect("sysctl"));
    let gone = {
        let ns = PrivateNetns::new().expect("private netns");
        netns_path(&ns)
    };
    let cases: &[(&[&str], &str)] = &[
        (&["explain", "bind", "127.0.0.1"], "no `:PORT`"),
        (&["explain", "bind", "300.0.0.1:80"], "is not an IP address"),
        (&["explain", "bind", "::1:80"], "in brackets"),
        (
            &["explain", "bind", "203.0.113.9:80"],
            "is not a local address",
        ),
        (&["explain", "bind", "[fe80::1]:80"], "without a scope"),
        (&["explain", "bind", "127.0.0.1:0"], "port 0"),
        (
            &["explain", "bind", "127.0.0.1:80", "--netns", "4194304"],
            "no process with pid 4194304",
        ),
        (
            &["explain", "bind", "127.0.0.1:80", "--netns", &gone],
            "does not exist",
        ),
        (
            &["explain", "bind", "127.0.0.1:80", "--netns", "all"],
            "one network namespace",
        ),
        (&["explain", "connect", "127.0.0.1"], "no `:PORT`"),
        (
            &[
                "explain",
                "connect",
                "127.0.0.1:80",
                "--from",
                "203.0.113.9",
            ],
            "is not a local address",
        ),
        (&["explain", "connect", "[fe80::2]:80"], "without a scope"),
    ];
    for (args, want) in cases {
        let (code, out, err) = run_portwatch(args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains(want), "{args:?}: stderr lacks {want:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
    }
    let after = [
        "ip_local_port_range",
        "ip_local_reserved_ports",
        "tcp_tw_reuse",
    ]
    .map(|f| std::fs::read_to_string(format!("/proc/sys/net/ipv4/{f}")).expect("sysctl"));
    assert_eq!(after, sysctls);
}
