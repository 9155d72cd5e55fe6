//! `portwatch export` tested with the real thing: Debian's Prometheus server scrapes the
//! exporter on loopback every second and the assertions go through its HTTP API;
//! `promtool` checks the exposition, the alerting rules (and their unit tests) and the
//! dashboard's queries only use exported metrics.
mod common;

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{require_root, Running};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A tool from Debian's `prometheus` package, or a failure naming the fix.
fn prometheus_tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} not found: install Debian's prometheus package (`cargo xtask setup` does: apt-get install prometheus)");
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{text}",
        out.status
    );
    text
}

/// The series names the exporter serves (families plus the suffixes their types add).
fn exported_series() -> Vec<String> {
    use portwatch::export::exposition::names::*;
    let mut v: Vec<String> = [
        EPHEMERAL_RANGE_PORTS,
        EPHEMERAL_PORTS,
        BIND_BUCKETS,
        SCRAPE_DURATION,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(
        [BIND_ERRORS, CONNECT_ERRORS, ERRORS_OVERFLOW, EVENTS_LOST]
            .iter()
            .map(|s| format!("{s}_total")),
    );
    v.extend([BUILD, NETNS_NAME].iter().map(|s| format!("{s}_info")));
    v
}

/// Every `portwatch_...` identifier in `text`.
fn metric_names_in(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("portwatch_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

#[test]
fn alerting_rules_pass_promtool() {
    let dir = repo_root().join("contrib/prometheus");
    let promtool = prometheus_tool("promtool");
    let out = run_ok(
        Command::new(&promtool)
            .arg("check")
            .arg("rules")
            .arg(dir.join("portwatch-rules.yml")),
    );
    assert!(out.contains("SUCCESS"), "{out}");
    let out = run_ok(Command::new(&promtool).current_dir(&dir).args([
        "test",
        "rules",
        "portwatch-rules.test.yml",
    ]));
    assert!(out.contains("SUCCESS"), "{out}");
    let rules = std::fs::read_to_string(dir.join("portwatch-rules.yml")).unwrap();
    let known = exported_series();
    for name in metric_names_in(&rules) {
        assert!(
            known.contains(&name),
            "portwatch-rules.yml uses {name}, which the exporter does not serve"
        );
    }
}

#[test]
fn dashboard_queries_only_exported_metrics() {
    let path = repo_root().join("contrib/grafana/portwatch-dashboard.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 6);
    let known = exported_series();
    let mut used = Vec::new();
    for p in panels {
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr");
            for name in metric_names_in(expr) {
                assert!(
                    known.contains(&name),
                    "panel {:?} queries {name}, which the exporter does not serve",
                    p["title"]
                );
                used.push(name);
            }
        }
    }
    for name in [
        "portwatch_ephemeral_ports",
        "portwatch_bind_errors_total",
        "portwatch_connect_errors_total",
    ] {
        assert!(used.iter().any(|u| u == name), "no panel shows {name}");
    }
}

#[test]
fn systemd_unit_is_valid_and_not_root() {
    let unit =
        std::fs::read_to_string(repo_root().join("contrib/systemd/portwatch-export.service"))
            .unwrap();
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::trim)
    };
    assert_eq!(value("DynamicUser"), Some("yes"));
    assert_eq!(value("User"), None, "runs as a dynamic user, never root");
    let ambient = value("AmbientCapabilities").expect("AmbientCapabilities");
    assert_eq!(
        ambient,
        value("CapabilityBoundingSet").expect("CapabilityBoundingSet")
    );
    for cap in ["CAP_BPF", "CAP_PERFMON"] {
        assert!(ambient.split_whitespace().any(|c| c == cap), "{ambient}");
    }
    assert!(!ambient.contains("CAP_SYS_ADMIN"), "{ambient}");
    assert_eq!(value("NoNewPrivileges"), Some("yes"));
    assert!(
        value("ExecStart").is_some_and(|e| e.contains(" export")),
        "{unit}"
    );
    // The binary where the Debian package (which ships this unit) installs it.
    let manifest = std::fs::read_to_string(repo_root().join("portwatch/Cargo.toml")).unwrap();
    assert!(
        manifest.contains(r#"["target/release/portwatch", "usr/sbin/", "755"]"#),
        "the package's binary moved"
    );
    assert!(manifest.contains(
        r#"["../contrib/systemd/portwatch-export.service", "usr/lib/systemd/system/", "644"]"#
    ));
    assert!(
        value("ExecStart").is_some_and(|e| e.starts_with("/usr/sbin/portwatch ")),
        "{unit}"
    );
    let Ok(analyze) = which("systemd-analyze") else {
        eprintln!("SKIPPED systemd-analyze verify: systemd-analyze not installed");
        return;
    };
    // Verified with ExecStart pointing at the binary just built.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("portwatch-export.service");
    let exec = unit
        .lines()
        .map(|l| match l.strip_prefix("ExecStart=") {
            Some(rest) => format!(
                "ExecStart={}{}",
                common::bin(),
                &rest[rest.find(' ').unwrap_or(rest.len())..]
            ),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&copy, exec).unwrap();
    let out = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && !text.contains("portwatch-export.service:"),
        "systemd-analyze verify:\n{text}"
    );
}

fn which(name: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.exists())
        })
        .ok_or(())
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` over HTTP/1.0 with extra header lines: (status, headers, body).
fn http_get(addr: SocketAddr, path: &str, headers: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n{headers}\r\n").as_bytes())
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Debian's Prometheus server with a private config and data directory, scraping `target`
/// every second; ended by pid on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Prometheus {
        let bin = prometheus_tool("prometheus");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: portwatch\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting prometheus");
        let mut p = Prometheus {
            child,
            addr,
            _dir: dir,
        };
        p.wait_ready();
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("prometheus exited with {status}:\n{}", self.log());
            }
            if TcpStream::connect(self.addr).is_ok() && http_get(self.addr, "/-/ready", "").0 == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready after 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The result vector of an instant query.
    fn query(&self, q: &str) -> Vec<serde_json::Value> {
        let (status, _, body) = http_get(
            self.addr,
            &format!("/api/v1/query?query={}", url_encode(q)),
            "",
        );
        assert_eq!(status, 200, "query {q}: {body}");
        let v: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("query {q}: {e}: {body}"));
        assert_eq!(v["status"], "success", "{body}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The value of the single series `q` returns, once there is one.
    fn value_of(&self, q: &str) -> f64 {
        let r = self.query(q);
        assert_eq!(r.len(), 1, "{q}: expected one series, got {r:?}");
        r[0]["value"][1]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{q}: {r:?}"))
    }

    /// Waits until `q` returns at least one series.
    fn wait_for(&self, q: &str, within: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + within;
        loop {
            let r = self.query(q);
            if !r.is_empty() {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "{q} returned nothing within {within:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // SAFETY: kill on the pid of the child this test started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The effective capability mask of a running process.
fn cap_eff(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    portwatch::privileges::parse_cap_eff(&status).expect("CapEff")
}

#[test]
fn prometheus_scrapes_the_exporter() {
    if !require_root("prometheus_scrapes_the_exporter") {
        return;
    }
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let exporter = Running::start(&["export", "--listen", &addr.to_string(), "--interval", "1"]);
    let prom = Prometheus::start(addr);

    let up = prom.wait_for(r#"up{job="portwatch"} == 1"#, Duration::from_secs(30));
    assert_eq!(up.len(), 1, "{up:?}");
    let info = prom.wait_for("portwatch_build_info", Duration::from_secs(10));
    let labels = &info[0]["metric"];
    assert_eq!(labels["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        ["fentry", "kprobe", "tracepoint"].contains(&labels["backend"].as_str().unwrap_or("")),
        "{labels}"
    );
    let release = nix::sys::utsname::uname()
        .unwrap()
        .release()
        .to_string_lossy()
        .into_owned();
    assert_eq!(labels["kernel"], release.as_str());
    // The last scrape used OpenMetrics (Prometheus asks for it first): its info type made it.
    assert_eq!(
        prom.value_of(r#"portwatch_events_lost_total{job="portwatch"}"#),
        0.0
    );
    let took = prom.value_of(r#"portwatch_scrape_duration_seconds{job="portwatch"}"#);
    assert!(took > 0.0 && took < 1.0, "{took}");

    // The classic text format passes promtool's linter.
    let (status, head, body) = http_get(addr, "/metrics", "");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let mut lint = Command::new(prometheus_tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    lint.stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = lint.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}\n--- exposition:\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Bad requests get HTTP errors and do not disturb collection.
    let scrapes = |p: &Prometheus| p.value_of(r#"count_over_time(up{job="portwatch"}[10m])"#);
    let before = scrapes(&prom);
    assert_eq!(http_get(addr, "/nope", "").0, 404);
    assert_eq!(
        http_get(
            addr,
            "/metrics",
            &format!("X-Big: {}\r\n", "a".repeat(64 * 1024))
        )
        .0,
        431
    );
    {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"DELETE /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        assert!(text.starts_with("HTTP/1.1 405"), "{text}");
    }
    // A client that never finishes its request holds one connection, nothing more.
    let _stalled = TcpStream::connect(addr).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while scrapes(&prom) < before + 3.0 {
        assert!(
            Instant::now() < deadline,
            "Prometheus stopped scraping after the bad requests"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(prom.value_of(r#"up{job="portwatch"}"#), 1.0);

    // Capabilities were dropped once attached: nothing is left where map reads need none.
    let host = portwatch::export::caps::Host::current();
    let kept = portwatch::export::caps::kept_after_attach(host);
    let want: u64 = kept.iter().map(|k| 1u64 << k.cap.index()).sum();
    assert_eq!(
        cap_eff(exporter.pid()),
        want,
        "capabilities after attach (kept: {kept:?})"
    );

    drop(prom);
    let (code, _out, err) = exporter.stop();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("capabilities after attach:"), "{err}");
    assert!(err.contains("every program detached"), "{err}");
}

/// A TCP socket of `ns` bound to 127.0.0.1:`port` (0: any), or the bind's error.
fn bound(ns: &portwatch::netns::PrivateNetns, port: u16) -> std::io::Result<socket2::Socket> {
    let s = ns
        .socket(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .expect("a socket in the private netns");
    s.bind(&SocketAddr::from(([127, 0, 0, 1], port)).into())?;
    Ok(s)
}

/// A TCP socket of `ns` connected to 127.0.0.1:`port` from an ephemeral port, or the error.
fn connected(ns: &portwatch::netns::PrivateNetns, port: u16) -> std::io::Result<socket2::Socket> {
    let s = ns
        .socket(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .expect("a socket in the private netns");
    s.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())?;
    Ok(s)
}

/// The issue's scenario through a real Prometheus: namespace 1 with a 10-port range, 3
/// ports blocked by bound sockets, 2 taken by connect()s to one destination and one
/// EADDRINUSE; namespace 2 with a one-port range that is blocked and one EADDRNOTAVAIL;
/// namespace 3 with a 10-port range holding one reserved port. The exact values are read
/// back with Prometheus's query API.
#[test]
fn prometheus_sees_exact_port_pressure_and_failures() {
    if !require_root("prometheus_sees_exact_port_pressure_and_failures") {
        return;
    }
    use portwatch::netns::PrivateNetns;
    let ns1 = PrivateNetns::with_port_range(40000, 40009).unwrap();
    let ns2 = PrivateNetns::with_port_range(40100, 40100).unwrap();
    let ns3 = PrivateNetns::with_port_range(40200, 40209).unwrap();
    ns3.run(|| std::fs::write("/proc/sys/net/ipv4/ip_local_reserved_ports", "40205,8080"))
        .unwrap()
        .expect("writing ip_local_reserved_ports in the private netns");

    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let exporter = Running::start(&["export", "--listen", &addr.to_string(), "--interval", "1"]);

    // Namespace 1: 3 ports blocked by bound sockets, 2 taken by connect()s to one
    // destination (a listener outside the range), one bind() refused.
    let listener1 = bound(&ns1, 5000).unwrap();
    listener1.listen(16).unwrap();
    let blocked1: Vec<_> = (40000..40003).map(|p| bound(&ns1, p).unwrap()).collect();
    let clients1: Vec<_> = (0..2).map(|_| connected(&ns1, 5000).unwrap()).collect();
    for c in &clients1 {
        let port = c.local_addr().unwrap().as_socket().unwrap().port();
        assert!(
            (40003..=40009).contains(&port),
            "connect() took {port}, outside the free part of the range"
        );
    }
    let refused = bound(&ns1, 40001).err().and_then(|e| e.raw_os_error());
    assert_eq!(refused, Some(libc::EADDRINUSE));

    // Namespace 2: its only port blocked by a bound socket, then a connect() that finds none.
    let listener2 = bound(&ns2, 5000).unwrap();
    listener2.listen(16).unwrap();
    let blocked2 = bound(&ns2, 40100).unwrap();
    let refused = connected(&ns2, 5000).err().and_then(|e| e.raw_os_error());
    assert_eq!(refused, Some(libc::EADDRNOTAVAIL));

    // Namespace 3: a listener outside the range makes it seen; nothing else.
    let listener3 = bound(&ns3, 5000).unwrap();
    listener3.listen(16).unwrap();

    let prom = Prometheus::start(addr);
    prom.wait_for(r#"up{job="portwatch"} == 1"#, Duration::from_secs(30));
    let (n1, n2, n3) = (ns1.inode(), ns2.inode(), ns3.inode());
    let expected: Vec<(String, f64)> = [
        (
            format!(r#"portwatch_ephemeral_range_ports{{netns="{n1}"}}"#),
            10.0,
        ),
        (
            format!(r#"portwatch_ephemeral_ports{{netns="{n1}",state="free"}}"#),
            5.0,
        ),
        (
            format!(r#"portwatch_ephemeral_ports{{netns="{n1}",state="shared"}}"#),
            2.0,
        ),
        (
            format!(r#"portwatch_ephemeral_ports{{netns="{n1}",state="blocked"}}"#),
            3.0,
        ),
        (
            format!(r#"portwatch_bind_buckets{{netns="{n1}",fastreuse="-1"}}"#),
            2.0,
        ),
        (
            format!(r#"portwatch_bind_buckets{{netns="{n1}",fastreuse="0"}}"#),
            4.0,
        ),
        (
            format!(r#"portwatch_bind_errors_total{{netns="{n1}",errno="EADDRINUSE"}}"#),
            1.0,
        ),
        (
            format!(r#"count(portwatch_bind_errors_total{{netns="{n1}"}})"#),
            1.0,
        ),
        (
            format!(r#"count(portwatch_connect_errors_total{{netns="{n1}"}}) or vector(0)"#),
            0.0,
        ),
        (
            format!(r#"portwatch_ephemeral_range_ports{{netns="{n2}"}}"#),
            1.0,
        ),
        (
            format!(r#"portwatch_ephemeral_ports{{netns="{n2}",state="free"}}"#),
            0.0,
        ),
        (
            format!(r#"portwatch_ephemeral_ports{{netns="{n2}",state="shared"}}"#),
            0.0,
        ),
        (
            format!(r#"portwatch_ephemeral_ports{{netns="{n2}",state="blocked"}}"#),
            1.0,
        ),
        (
            format!(r#"portwatch_connect_errors_total{{netns="{n2}",errno="EADDRNOTAVAIL"}}"#),
            1.0,
        ),
        (
            format!(r#"count(portwatch_connect_errors_total{{netns="{n2}"}})"#),
            1.0,
        ),
        (
            format!(r#"count(portwatch_bind_errors_total{{netns="{n2}"}}) or vector(0)"#),
            0.0,
        ),
        (
            format!(r#"portwatch_ephemeral_range_ports{{netns="{n3}"}}"#),
            9.0,
        ),
        (
            format!(r#"portwatch_ephemeral_ports{{netns="{n3}",state="free"}}"#),
            9.0,
        ),
        (r#"portwatch_errors_overflow_total"#.to_string(), 0.0),
    ]
    .into_iter()
    .collect();
    // Prometheus scrapes every second; the exporter rescans at most every second.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got: Vec<Option<f64>>;
    loop {
        got = expected
            .iter()
            .map(|(q, _)| {
                let r = prom.query(q);
                (r.len() == 1)
                    .then(|| r[0]["value"][1].as_str().and_then(|s| s.parse().ok()))
                    .flatten()
            })
            .collect();
        if got
            .iter()
            .zip(&expected)
            .all(|(g, (_, want))| *g == Some(*want))
            || Instant::now() > deadline
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let table: Vec<String> = expected
        .iter()
        .zip(&got)
        .map(|((q, want), g)| format!("{q}: expected {want}, got {g:?}"))
        .collect();
    assert!(
        got.iter()
            .zip(&expected)
            .all(|(g, (_, want))| *g == Some(*want)),
        "{}",
        table.join("\n")
    );

    // The exposition with every family filled passes promtool's linter.
    let (status, _, body) = http_get(addr, "/metrics", "");
    assert_eq!(status, 200);
    assert!(
        body.contains(&format!(
            r#"portwatch_connect_errors_total{{netns="{n2}",errno="EADDRNOTAVAIL"}} 1"#
        )),
        "{body}"
    );
    let mut lint = Command::new(prometheus_tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    lint.stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = lint.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}\n--- exposition:\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    drop((
        listener1, blocked1, clients1, listener2, blocked2, listener3,
    ));
    drop(prom);
    let (code, _out, err) = exporter.stop();
    assert_eq!(code, 0, "{err}");
}
