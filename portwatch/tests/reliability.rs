//! Reliability and bad-input tests of the real binary:
//! - nothing is left behind (no BPF program outlives `portwatch`) after SIGINT, SIGTERM
//!   or a panic, for `trace` and for `top` in plain (non-TTY) mode;
//! - bad arguments, wrong namespaces and missing privileges fail cleanly, naming the
//!   problem, without a panic; `--help` works unprivileged;
//! - refused backends are reported with their reason;
//! - ring-buffer loss is counted exactly (up to the program runs the kernel skipped,
//!   which are counted too).
//!
//! Which programs a process holds is read from /proc/PID/fdinfo (`prog_id:` of its
//! bpf-prog and bpf_link fds), and checked against `bpftool -j prog show`. bpftool's own
//! `pids` field needs BPF iterators, which some kernels refuse; when bpftool does give
//! it, it is checked as well.
mod common;

use std::{
    collections::BTreeSet,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{
    bin, held_prog_ids, loaded_progs, max_prog_id, netns_path, orphan_progs_after, require_root,
    run_portwatch, v4, wait_progs_gone, Ended, Running,
};
use portwatch::netns::PrivateNetns;

/// How long the kernel may take to free the programs of a process that exited.
const FREE_TIMEOUT: Duration = Duration::from_secs(10);

fn assert_no_pid_references(pid: u32) {
    for p in loaded_progs() {
        assert!(
            !p.pids.contains(&pid),
            "program {} ({}) still lists the dead pid {pid}",
            p.id,
            p.name
        );
    }
}

/// Checks, while `run` is running, that it holds programs bpftool lists (among them
/// `must_have`), stops it with `signal` and checks the exit code and that every one of
/// those programs is gone.
fn stop_and_check_clean(run: Running, what: &str, signal: i32, must_have: &[&str]) -> Ended {
    let pid = run.pid();
    let ids = held_prog_ids(pid);
    assert!(
        !ids.is_empty(),
        "{what}: /proc/{pid}/fdinfo shows no BPF program while it runs"
    );
    let listed: Vec<_> = loaded_progs()
        .into_iter()
        .filter(|p| ids.contains(&p.id))
        .collect();
    let listed_ids: BTreeSet<u32> = listed.iter().map(|p| p.id).collect();
    assert_eq!(
        listed_ids, ids,
        "{what}: bpftool lists every program the process holds"
    );
    for name in must_have {
        // The kernel keeps 15 characters of a program name; bpftool shows the full one
        // when the program has BTF.
        let short: String = name.chars().take(15).collect();
        assert!(
            listed.iter().any(|p| p.name == *name || p.name == short),
            "{what}: program {name} loaded by pid {pid}; listed: {:?}",
            listed.iter().map(|p| &p.name).collect::<Vec<_>>()
        );
    }
    if listed.iter().any(|p| !p.pids.is_empty()) {
        for p in &listed {
            assert!(
                p.pids.contains(&pid),
                "{what}: bpftool names pid {pid} for program {} ({})",
                p.id,
                p.name
            );
        }
    } else {
        eprintln!("{what}: bpftool gives no `pids` here (it needs BPF iterators); checked through /proc/{pid}/fdinfo");
    }
    let end = run.end_with(Some(signal));
    assert!(
        !end.stderr.contains("panicked"),
        "{what}: panicked: {}",
        end.stderr
    );
    assert_eq!(
        end.code,
        Some(0),
        "{what}: exit code after signal {signal}; stderr: {}",
        end.stderr
    );
    let left = wait_progs_gone(&ids, FREE_TIMEOUT);
    assert!(
        left.is_empty(),
        "{what}: programs left behind after signal {signal}: {left:?}"
    );
    assert_no_pid_references(pid);
    end
}

fn trace_args(path: &str) -> Vec<String> {
    ["trace", "--json", "--netns", path]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn top_args(path: &str) -> Vec<String> {
    ["top", "--netns", path, "--interval", "0.2"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn start(args: &[String]) -> Running {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Running::start(&refs)
}

#[test]
fn trace_leaves_nothing_behind_after_sigint_and_sigterm() {
    if !require_root("trace_leaves_nothing_behind_after_sigint_and_sigterm") {
        return;
    }
    let ns = PrivateNetns::new().expect("private netns");
    let path = netns_path(&ns);
    for (sig, name) in [(libc::SIGINT, "SIGINT"), (libc::SIGTERM, "SIGTERM")] {
        let run = start(&trace_args(&path));
        // Something to report, so the stream is live when the signal comes.
        let s = common::tcp(&ns);
        s.bind(&v4("127.0.0.1", 4321)).expect("bind");
        drop(s);
        std::thread::sleep(Duration::from_millis(200));
        let end = stop_and_check_clean(
            run,
            &format!("trace, {name}"),
            sig,
            &["sys_enter_connect", "sys_exit_close"],
        );
        assert!(
            end.stdout.contains("\"bucket_created\""),
            "trace, {name}: events before the signal are printed: {}",
            end.stdout
        );
    }
}

#[test]
fn top_plain_leaves_nothing_behind_after_sigint_and_sigterm() {
    if !require_root("top_plain_leaves_nothing_behind_after_sigint_and_sigterm") {
        return;
    }
    let ns = PrivateNetns::new().expect("private netns");
    let path = netns_path(&ns);
    let _l = common::listener(&ns, 1234);
    for (sig, name) in [(libc::SIGINT, "SIGINT"), (libc::SIGTERM, "SIGTERM")] {
        let run = start(&top_args(&path));
        std::thread::sleep(Duration::from_millis(600));
        let end = stop_and_check_clean(
            run,
            &format!("top (not a TTY), {name}"),
            sig,
            &["sys_enter_connect", "snapshot_trigger"],
        );
        assert!(
            end.stdout.contains("1234"),
            "top (not a TTY), {name}: the table shows the listener: {}",
            end.stdout
        );
    }
}

#[test]
fn trace_panic_after_attach_exits_non_zero_and_leaves_nothing_behind() {
    if !require_root("trace_panic_after_attach_exits_non_zero_and_leaves_nothing_behind") {
        return;
    }
    let ns = PrivateNetns::new().expect("private netns");
    let path = netns_path(&ns);
    let dir = tempfile::tempdir().expect("tempdir");
    let ready = dir.path().join("ready");
    let before = max_prog_id();
    let mut child = Command::new(bin())
        .args(["trace", "--json", "--netns", &path, "--ready-file"])
        .arg(&ready)
        .env("PORTWATCH_TEST_PANIC_AFTER_ATTACH", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning portwatch");
    let pid = child.id();
    // The panic comes right after attaching: collect the programs it holds while it loads.
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("try_wait").is_none() {
        seen.extend(held_prog_ids(pid));
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("portwatch with PORTWATCH_TEST_PANIC_AFTER_ATTACH=1 still runs after 60 s");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let out = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        ready.exists(),
        "it attached (wrote the ready file) before the panic: {stderr}"
    );
    assert!(
        !out.status.success(),
        "a panic is a failure exit: {:?}",
        out.status
    );
    assert!(
        stderr.contains("induced panic after attaching"),
        "the panic is the induced one: {stderr}"
    );
    assert!(
        !seen.is_empty(),
        "programs were seen in /proc/{pid}/fdinfo while it loaded"
    );
    let left = wait_progs_gone(&seen, FREE_TIMEOUT);
    assert!(
        left.is_empty(),
        "programs left behind after the panic: {left:?}"
    );
    let orphans = orphan_progs_after(before, FREE_TIMEOUT);
    assert!(
        orphans.is_empty(),
        "programs without any holder left behind after the panic: {orphans:?}"
    );
    assert_no_pid_references(pid);
}

// ---- bad input -------------------------------------------------------------------------

/// Runs `portwatch ARGS` (run_portwatch fails on "panicked") and checks a non-zero exit
/// and that stderr contains `expect`.
fn fails_with(args: &[&str], expect: &str) {
    let (code, _out, err) = run_portwatch(args);
    assert_ne!(code, 0, "portwatch {args:?} must fail; stderr: {err}");
    assert!(
        err.contains(expect),
        "portwatch {args:?}: stderr names the problem ({expect:?}): {err}"
    );
}

#[test]
fn invalid_cli_values_fail_with_a_clear_message() {
    // Argument errors come before any privilege check: no root needed.
    fails_with(
        &["trace", "--port", "0"],
        "invalid port `0`: expected a number from 1 to 65535",
    );
    fails_with(&["trace", "--port", "65536"], "invalid port `65536`");
    fails_with(&["trace", "--port", "abc"], "invalid port `abc`");
    fails_with(&["trace", "--port", "80,0"], "invalid port `0`");
    fails_with(&["dump", "--port", "0"], "invalid port `0`");
    fails_with(&["top", "--port", "abc"], "invalid port `abc`");
    fails_with(&["top", "--interval", "0"], "invalid interval `0`");
    fails_with(&["top", "--interval", "abc"], "invalid interval `abc`");
    fails_with(
        &["top", "--rescan", "0"],
        "invalid rescan `0`: `auto` or seconds from 0.05 to 3600",
    );
    fails_with(
        &["trace", "--probe", "bogus"],
        "invalid value 'bogus' for '--probe",
    );
    fails_with(
        &["top", "--probe", "bogus"],
        "possible values: auto, fentry, kprobe, tracepoint",
    );
    fails_with(
        &["trace", "--ring-bytes", "1000"],
        "invalid ring size `1000`",
    );
    fails_with(&["quiz", "99"], "unknown quiz `99`");
    fails_with(&["trace", "--no-such-flag"], "--no-such-flag");
}

#[test]
fn netns_that_is_not_a_netns_or_missing_fails_with_a_clear_message() {
    for sub in ["trace", "dump", "top"] {
        fails_with(&[sub, "--netns", "/tmp"], "/tmp is not a network namespace");
        fails_with(
            &[sub, "--netns", "/proc/self/ns/uts"],
            "/proc/self/ns/uts is not a network namespace",
        );
        fails_with(
            &[sub, "--netns", "/nonexistent/portwatch-test"],
            "/nonexistent/portwatch-test does not exist",
        );
    }
}

/// `setpriv ARGS BIN SUB...`: (exit code, stdout, stderr).
fn setpriv(setpriv_args: &[&str], args: &[&str]) -> (i32, String, String) {
    let out = Command::new("setpriv")
        .args(setpriv_args)
        .arg(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running setpriv (util-linux): {e}; install util-linux"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const AS_NOBODY: [&str; 3] = ["--reuid=65534", "--regid=65534", "--clear-groups"];
const NO_CAPS: [&str; 2] = ["--inh-caps=-all", "--bounding-set=-all"];

#[test]
fn help_of_every_subcommand_works_as_nobody() {
    if !require_root("help_of_every_subcommand_works_as_nobody (needs root to become nobody)") {
        return;
    }
    for sub in [
        &[][..],
        &["trace"],
        &["dump"],
        &["top"],
        &["quiz"],
        &["probes"],
    ] {
        let mut args: Vec<&str> = sub.to_vec();
        args.push("--help");
        let (code, out, err) = setpriv(&AS_NOBODY, &args);
        assert_eq!(code, 0, "portwatch {args:?} as nobody: {err}");
        assert!(
            out.contains("Usage: portwatch"),
            "portwatch {args:?} prints usage: {out}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn without_capabilities_trace_dump_top_probes_name_cap_bpf_and_cap_perfmon() {
    if !require_root("without_capabilities_trace_dump_top_probes_name_cap_bpf_and_cap_perfmon") {
        return;
    }
    let before = max_prog_id();
    for (how, prefix) in [
        ("as nobody", &AS_NOBODY[..]),
        ("as root without capabilities", &NO_CAPS[..]),
    ] {
        for args in [
            &["trace"][..],
            &["trace", "--json", "--port", "80"],
            &["dump"],
            &["top", "--once"],
            &["probes"],
        ] {
            let (code, _out, err) = setpriv(prefix, args);
            assert_ne!(code, 0, "portwatch {args:?} {how} must fail: {err}");
            assert!(
                !err.contains("panicked"),
                "portwatch {args:?} {how} panicked: {err}"
            );
            assert!(
                err.contains("CAP_BPF") && err.contains("CAP_PERFMON"),
                "portwatch {args:?} {how}: the message names CAP_BPF and CAP_PERFMON: {err}"
            );
        }
    }
    let orphans = orphan_progs_after(before, FREE_TIMEOUT);
    assert!(
        orphans.is_empty(),
        "unprivileged runs left programs behind: {orphans:?}"
    );
}

// ---- backends --------------------------------------------------------------------------

/// Whether this kernel offers kprobes (tracefs has kprobe_events), independently of
/// portwatch.
fn host_has_kprobes() -> bool {
    [
        "/sys/kernel/tracing/kprobe_events",
        "/sys/kernel/debug/tracing/kprobe_events",
    ]
    .iter()
    .any(|p| Path::new(p).exists())
}

/// Whether this kernel loads TRACING programs (fentry), per `bpftool feature probe`.
fn host_allows_tracing_progs() -> bool {
    let out = Command::new("bpftool")
        .args(["feature", "probe", "kernel"])
        .stdin(Stdio::null())
        .output()
        .expect("running bpftool feature probe kernel");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("program_type tracing"),
        "bpftool feature probe names the tracing type: {text}"
    );
    !text.contains("program_type tracing is NOT available")
}

/// `portwatch trace --probe BACKEND` fails naming `reason` when the host refuses that
/// backend, and starts when it allows it.
fn check_forced_backend(ns_path: &str, backend: &str, allowed: bool, reason: &str) {
    if allowed {
        let run = Running::start(&["trace", "--json", "--probe", backend, "--netns", ns_path]);
        let (code, _out, err) = run.stop();
        assert_eq!(
            code, 0,
            "--probe {backend} on a kernel that allows it: {err}"
        );
        assert!(err.contains(&format!("backend: {backend}")), "{err}");
    } else {
        let before = max_prog_id();
        let (code, _out, err) = run_portwatch(&["trace", "--probe", backend, "--netns", ns_path]);
        assert_ne!(code, 0, "--probe {backend} must fail here: {err}");
        assert!(
            err.contains(reason),
            "--probe {backend}: the message names the reason ({reason:?}): {err}"
        );
        let orphans = orphan_progs_after(before, FREE_TIMEOUT);
        assert!(
            orphans.is_empty(),
            "--probe {backend} left programs behind: {orphans:?}"
        );
    }
}

#[test]
fn forced_backends_fail_with_the_reason_and_probes_lists_them() {
    if !require_root("forced_backends_fail_with_the_reason_and_probes_lists_them") {
        return;
    }
    let ns = PrivateNetns::new().expect("private netns");
    let path = netns_path(&ns);
    let kprobes = host_has_kprobes();
    let fentry = host_allows_tracing_progs();
    check_forced_backend(&path, "kprobe", kprobes, "kernel has no kprobes");
    check_forced_backend(&path, "fentry", fentry, "EPERM");

    let (code, out, err) = run_portwatch(&["probes"]);
    assert_eq!(code, 0, "probes: {err}");
    let line = |b: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(b))
            .unwrap_or_else(|| panic!("probes lists {b}: {out}"))
    };
    if !fentry {
        assert!(
            line("fentry").contains("refused") && line("fentry").contains("EPERM"),
            "{out}"
        );
    }
    if !kprobes {
        assert!(
            line("kprobe").contains("refused: kernel has no kprobes"),
            "{out}"
        );
    }
    if !fentry && !kprobes {
        let tp = line("tracepoint");
        assert!(
            tp.contains("tracepoint") && tp.contains("ok (chosen)"),
            "{out}"
        );
    }
    let (code, json, err) = run_portwatch(&["probes", "--json"]);
    assert_eq!(code, 0, "probes --json: {err}");
    let v: serde_json::Value = serde_json::from_str(&json).expect("probes --json is JSON");
    let attempts = v["attempts"].as_array().expect("attempts");
    let refused = |b: &str| {
        attempts
            .iter()
            .find(|a| a["backend"] == b)
            .map(|a| !a["refused"].is_null())
    };
    if !kprobes {
        assert_eq!(refused("kprobe"), Some(true), "{json}");
    }
    if !fentry {
        assert_eq!(refused("fentry"), Some(true), "{json}");
        if !kprobes {
            assert_eq!(v["chosen"], "tracepoint", "{json}");
        }
    }
}

// ---- loss ------------------------------------------------------------------------------

#[test]
fn drops_are_reported_and_delivered_plus_dropped_equals_produced() {
    if !require_root("drops_are_reported_and_delivered_plus_dropped_equals_produced") {
        return;
    }
    let ns = PrivateNetns::new().expect("private netns");
    let path = netns_path(&ns);
    // stdout goes to a file: ~3000 JSON lines would fill a pipe nobody reads, and a
    // blocked writer cannot notice SIGINT.
    let dir = tempfile::tempdir().expect("tempdir");
    let ready = dir.path().join("ready");
    let out_path = dir.path().join("stdout");
    let child = Command::new(bin())
        .args([
            "trace",
            "--json",
            "--ring-bytes",
            "4096",
            "--netns",
            &path,
            "--ready-file",
        ])
        .arg(&ready)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning portwatch");
    let mut guard = common::KillOnDrop(Some(child));
    let child = guard.0.as_mut().expect("child");
    common::wait_ready(child, &ready);
    // The burst: 1500 sockets created first (no event), then bound to distinct ports (one
    // event per successful bind), then closed (one event per close of a bound socket).
    const N: u16 = 1500;
    common::raise_nofile_limit(u64::from(N) + 200);
    let produced = ns
        .run(|| {
            let socks: Vec<socket2::Socket> = (0..N)
                .map(|_| {
                    socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                        .expect("socket")
                })
                .collect();
            let mut binds = 0u64;
            for (i, s) in socks.iter().enumerate() {
                if s.bind(&v4("127.0.0.1", 20000 + i as u16)).is_ok() {
                    binds += 1;
                }
            }
            let closes = binds;
            drop(socks);
            binds + closes
        })
        .expect("netns thread");
    assert_eq!(
        produced,
        2 * u64::from(N),
        "every bind succeeds in a fresh netns"
    );
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: kill on the pid of the child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    common::wait_exit(child, Duration::from_secs(20));
    let res = guard
        .0
        .take()
        .expect("child")
        .wait_with_output()
        .expect("output");
    let err = String::from_utf8_lossy(&res.stderr).into_owned();
    let out = std::fs::read_to_string(&out_path).expect("stdout file");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(res.status.code(), Some(0), "{err}");
    let dropped = common::dropped_total(&err);
    let skipped = common::skipped_total(&err);
    let lines = common::json_lines(&out);
    // The transitions events delivered: not the resync records, nor the corrections
    // (op `rescan`) that follow them.
    let delivered = lines
        .iter()
        .filter(|l| l["kind"] != "resync" && l["op"] != "rescan")
        .count() as u64;
    let resynced: u64 = lines
        .iter()
        .filter(|l| l["kind"] == "resync")
        .map(|l| l["dropped"].as_u64().expect("dropped"))
        .sum();
    eprintln!("produced {produced}, delivered {delivered} transitions, dropped {dropped}, skipped runs {skipped}");
    assert!(
        dropped > 0,
        "a 4096-byte ring loses part of a {produced}-event burst; stderr: {err}"
    );
    assert!(
        err.contains(&format!("{dropped} events dropped in total")),
        "{err}"
    );
    assert_eq!(
        resynced, dropped,
        "the resync records account for every dropped event"
    );
    if skipped == 0 {
        assert_eq!(
            delivered + dropped,
            produced,
            "delivered ({delivered}) + dropped ({dropped}) = produced ({produced}); stderr: {err}"
        );
    } else {
        // A program run the kernel skipped (another tracing program was running on that
        // CPU, e.g. another tool's walk) may or may not have been one of our events: the
        // count is exact up to those runs, which trace reports and resyncs.
        assert!(
            delivered + dropped <= produced && produced <= delivered + dropped + skipped,
            "delivered ({delivered}) + dropped ({dropped}) <= produced ({produced}) <= that + skipped runs ({skipped}); stderr: {err}"
        );
    }
}
