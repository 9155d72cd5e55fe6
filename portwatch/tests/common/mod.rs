//! Helpers for the root integration tests: a root guard that skips loudly (and fails
//! under CI), and a `portwatch` child process wrapper that is ended by pid on drop.
#![allow(dead_code)]

use std::{
    io::Read as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// True when the test may run. Not root: prints why it skips; under CI (CI=true) a
/// skip is a failure, since CI runs as root and must exercise these tests.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
    {
        panic!("{test}: needs root (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN for namespaces); CI must run tests as root");
    }
    eprintln!(
        "SKIPPED {test}: needs root (run `cargo xtask test`, which runs these tests as root)"
    );
    false
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_portwatch")
}

/// A running `portwatch` with piped output, ended by SIGINT (then SIGKILL) by pid.
pub struct Running {
    child: Option<Child>,
    pub ready: PathBuf,
    _dir: tempfile::TempDir,
}

impl Running {
    /// Starts `portwatch ARGS --ready-file F` and waits until F exists.
    pub fn start(args: &[&str]) -> Running {
        let dir = tempfile::tempdir().expect("tempdir");
        let ready = dir.path().join("ready");
        let mut cmd = Command::new(bin());
        cmd.args(args).arg("--ready-file").arg(&ready);
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd.spawn().expect("spawning portwatch");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!("portwatch {args:?} exited early with {status}: {err}");
            }
            assert!(
                Instant::now() < deadline,
                "portwatch {args:?} not ready after 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Running {
            child: Some(child),
            ready,
            _dir: dir,
        }
    }

    /// Sends SIGINT, waits for exit, returns (exit code, stdout, stderr).
    pub fn stop(mut self) -> (i32, String, String) {
        let mut child = self.child.take().expect("child");
        // SAFETY: kill on the pid of the child we spawned.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("portwatch did not exit within 20 s of SIGINT");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("collecting output");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Parses JSON lines.
pub fn json_lines(s: &str) -> Vec<serde_json::Value> {
    s.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

/// The path of a netns by inode that a child process can open: the netns thread's
/// /proc/PID/task/TID/ns/net.
pub fn netns_path(ns: &portwatch::netns::PrivateNetns) -> String {
    let tid = ns
        .run(|| {
            // SAFETY: gettid has no preconditions.
            unsafe { libc::gettid() }
        })
        .expect("netns thread");
    format!("/proc/{}/task/{}/ns/net", std::process::id(), tid)
}

pub fn v4(a: &str, port: u16) -> socket2::SockAddr {
    let ip: std::net::Ipv4Addr = a.parse().expect("ipv4");
    std::net::SocketAddr::from((ip, port)).into()
}

/// A TCP socket inside `ns`.
pub fn tcp(ns: &portwatch::netns::PrivateNetns) -> socket2::Socket {
    ns.socket(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .expect("socket")
}

/// A listener on 0.0.0.0:port inside `ns`.
pub fn listener(ns: &portwatch::netns::PrivateNetns, port: u16) -> socket2::Socket {
    let l = tcp(ns);
    l.bind(&v4("0.0.0.0", port)).expect("bind listener");
    l.listen(128).expect("listen");
    l
}

/// Runs `portwatch ARGS` to completion: (exit code, stdout, stderr). A panic in the child
/// is a test failure whatever the exit code.
pub fn run_portwatch(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running portwatch {args:?}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !stderr.contains("panicked"),
        "portwatch {args:?} panicked: {stderr}"
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

/// Runs `PROG ARGS` inside the network namespace at `netns_path` with
/// `nsenter --net=PATH` (util-linux): (exit code, stdout, stderr).
pub fn run_in_netns(netns_path: &str, prog: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new("nsenter")
        .arg(format!("--net={netns_path}"))
        .arg("--")
        .arg(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("running nsenter (util-linux) for {prog} {args:?}: {e}; install util-linux")
        });
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Raises this process's soft RLIMIT_NOFILE to its hard limit and returns the new soft
/// limit. Panics (naming the fix) when even the hard limit is below `need`.
pub fn raise_nofile_limit(need: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into `lim`, a valid, exclusively borrowed rlimit.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    assert_eq!(
        rc,
        0,
        "getrlimit(RLIMIT_NOFILE): {}",
        std::io::Error::last_os_error()
    );
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit only reads `lim`; raising the soft limit up to the hard limit
        // needs no privilege.
        let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
        assert_eq!(
            rc,
            0,
            "setrlimit(RLIMIT_NOFILE, {}): {}",
            lim.rlim_max,
            std::io::Error::last_os_error()
        );
    }
    let soft: u64 = lim.rlim_cur;
    assert!(
        soft >= need,
        "RLIMIT_NOFILE hard limit is {soft} but this test needs {need} open files; raise it (e.g. `ulimit -Hn {need}` as root, or LimitNOFILE= in the service)"
    );
    soft
}

// ---- Added for tests/reliability.rs and tests/top_tmux.rs -------------------------------

/// How a stopped `portwatch` ended: exit code (None when killed by a signal), the signal,
/// and its output.
#[derive(Debug)]
pub struct Ended {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Running {
    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(|c| c.id())
            .expect("child still owned")
    }

    /// Sends `signal` (None: none, just wait, e.g. for a child that ends by itself) and
    /// waits up to 20 s for the exit.
    pub fn end_with(mut self, signal: Option<i32>) -> Ended {
        use std::os::unix::process::ExitStatusExt as _;
        let mut child = self.child.take().expect("child");
        if let Some(sig) = signal {
            // SAFETY: kill on the pid of the child we spawned and have not reaped yet.
            unsafe { libc::kill(child.id() as i32, sig) };
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("portwatch did not exit within 20 s (signal {signal:?})");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("collecting output");
        Ended {
            code: out.status.code(),
            signal: out.status.signal(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// One program of `bpftool -j prog show`.
#[derive(Clone, Debug)]
pub struct LoadedProg {
    pub id: u32,
    /// As the kernel keeps it: at most 15 characters.
    pub name: String,
    /// bpftool's `pids` (empty when bpftool cannot tell: it needs BPF iterators).
    pub pids: Vec<u32>,
}

/// Every loaded BPF program, from `bpftool -j prog show`.
pub fn loaded_progs() -> Vec<LoadedProg> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running bpftool: {e}; install it (`apt-get install bpftool`, or `cargo xtask setup`)"));
    assert!(
        out.status.success(),
        "bpftool -j prog show: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = if text.trim().is_empty() {
        serde_json::Value::Array(Vec::new())
    } else {
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("bpftool output is not JSON: {e}: {text}"))
    };
    v.as_array()
        .expect("bpftool prog show: a JSON array")
        .iter()
        .map(|p| LoadedProg {
            id: p["id"].as_u64().expect("program id") as u32,
            name: p["name"].as_str().unwrap_or("").to_owned(),
            pids: p["pids"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x["pid"].as_u64())
                        .map(|x| x as u32)
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect()
}

/// `prog_id:` values in the fdinfo of `pid`'s file descriptors (bpf-prog fds and
/// bpf_link fds both name one): the programs that process holds.
pub fn held_prog_ids(pid: u32) -> std::collections::BTreeSet<u32> {
    let mut ids = std::collections::BTreeSet::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return ids;
    };
    for e in dir.flatten() {
        if let Ok(text) = std::fs::read_to_string(e.path()) {
            ids.extend(
                text.lines()
                    .filter_map(|l| l.strip_prefix("prog_id:"))
                    .filter_map(|v| v.trim().parse::<u32>().ok()),
            );
        }
    }
    ids
}

/// Program id -> pids holding it through an fd, over every process in /proc.
pub fn prog_holders() -> std::collections::HashMap<u32, Vec<u32>> {
    let mut m: std::collections::HashMap<u32, Vec<u32>> = std::collections::HashMap::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        for id in held_prog_ids(pid) {
            m.entry(id).or_default().push(pid);
        }
    }
    m
}

/// Waits up to `timeout` until none of `ids` is loaded any more (the kernel frees
/// programs shortly after the last reference goes); returns those still loaded.
pub fn wait_progs_gone(
    ids: &std::collections::BTreeSet<u32>,
    timeout: Duration,
) -> Vec<LoadedProg> {
    let deadline = Instant::now() + timeout;
    loop {
        let left: Vec<LoadedProg> = loaded_progs()
            .into_iter()
            .filter(|p| ids.contains(&p.id))
            .collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Names (as the kernel truncates them, 15 characters) that portwatch's programs start with.
pub const PORTWATCH_PROG_PREFIXES: [&str; 5] = [
    "sys_enter_",
    "sys_exit_",
    "inet_sock_set_s",
    "snapshot_trigge",
    "inet_",
];

/// The highest program id loaded now (0 when none): programs loaded later have larger ids.
pub fn max_prog_id() -> u32 {
    loaded_progs().iter().map(|p| p.id).max().unwrap_or(0)
}

/// Programs with an id above `after` that look like portwatch's and that no live process
/// holds, still loaded after `timeout`: what a dead portwatch left behind. (Programs of
/// processes that just exited are freed within the timeout; concurrent portwatch runs
/// hold theirs.)
pub fn orphan_progs_after(after: u32, timeout: Duration) -> Vec<LoadedProg> {
    let holders = prog_holders();
    let orphans: std::collections::BTreeSet<u32> = loaded_progs()
        .into_iter()
        .filter(|p| p.id > after && !holders.contains_key(&p.id))
        .filter(|p| {
            PORTWATCH_PROG_PREFIXES
                .iter()
                .any(|pre| p.name.starts_with(pre))
        })
        .map(|p| p.id)
        .collect();
    wait_progs_gone(&orphans, timeout)
}

/// Kills (by pid) and reaps a child still owned when dropped, e.g. when an assertion fails.
pub struct KillOnDrop(pub Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits until `child` created `ready` (its `--ready-file`); panics if it exits first or
/// takes more than 30 s.
pub fn wait_ready(child: &mut Child, ready: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready.exists() {
        if let Some(st) = child.try_wait().expect("try_wait") {
            panic!("portwatch exited early with {st}");
        }
        assert!(Instant::now() < deadline, "portwatch not ready after 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for `child` to exit (after a signal); kills it and panics after `limit`.
pub fn wait_exit(child: &mut Child, limit: Duration) {
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("portwatch did not exit within {limit:?} of the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads "N events dropped in total" from a trace's stderr (0 when absent).
pub fn dropped_total(stderr: &str) -> u64 {
    stderr
        .lines()
        .find_map(|l| {
            l.strip_prefix("portwatch: ")?
                .strip_suffix(" events dropped in total")
        })
        .map(|n| {
            n.trim()
                .parse()
                .unwrap_or_else(|e| panic!("drop count `{n}`: {e}"))
        })
        .unwrap_or(0)
}

/// Reads "N program runs skipped by the kernel in total" from a trace's stderr (0 when
/// absent).
pub fn skipped_total(stderr: &str) -> u64 {
    stderr
        .lines()
        .find_map(|l| {
            l.strip_prefix("portwatch: ")?
                .split_once(" program runs skipped by the kernel in total")
        })
        .map(|(n, _)| {
            n.trim()
                .parse()
                .unwrap_or_else(|e| panic!("skip count `{n}`: {e}"))
        })
        .unwrap_or(0)
}
