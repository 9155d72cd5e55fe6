//! Child processes of the benchmarks: the churn workload (examples/churn.rs), the
//! `portwatch trace` tracer, machine facts, /proc sampling. Every child is ours; it is
//! stopped by its pid (SIGINT, then SIGKILL after a timeout) and always reaped.

use std::{
    io::{BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use nix::{sys::signal::Signal, unistd::Pid};
use serde::{Deserialize, Serialize};

use super::stats::{dropped_total, Counters, FinalStates, TraceCounts};

/// Where the release binaries are.
#[derive(Clone, Debug)]
pub struct Bins {
    pub portwatch: PathBuf,
    pub churn: PathBuf,
}

impl Bins {
    /// The release binaries under `target` (cargo's target directory).
    pub fn new(target: &Path) -> Bins {
        Bins {
            portwatch: target.join("release").join("portwatch"),
            churn: target.join("release").join("examples").join("churn"),
        }
    }

    pub fn check(&self) -> Result<()> {
        for p in [&self.portwatch, &self.churn] {
            if !p.exists() {
                bail!(
                    "{} is missing: build it with `cargo build --release -p portwatch --bins --examples` \
                     (or drop --no-build)",
                    p.display()
                );
            }
        }
        Ok(())
    }
}

/// Machine facts for the report.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub kernel: String,
    pub cpu_model: String,
}

pub fn machine() -> Machine {
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"));
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    Machine {
        nproc,
        kernel,
        cpu_model,
    }
}

/// Backend report from `portwatch probes --json`.
#[derive(Clone, Debug, Serialize)]
pub struct Backends {
    pub chosen: Option<String>,
    /// Backends to benchmark: those `probes` did not refuse (including any it did not try
    /// because an earlier one was chosen).
    pub usable: Vec<String>,
    pub refused: Vec<(String, String)>,
}

pub fn backends(bins: &Bins) -> Result<Backends> {
    let out = Command::new(&bins.portwatch)
        .args(["probes", "--json"])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} probes --json", bins.portwatch.display()))?;
    if !out.status.success() {
        bail!(
            "`portwatch probes --json` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("`portwatch probes --json` printed no JSON")?;
    let chosen = v.get("chosen").and_then(|x| x.as_str()).map(str::to_string);
    let mut usable = Vec::new();
    let mut refused = Vec::new();
    let mut tried = Vec::new();
    for a in v
        .get("attempts")
        .and_then(|x| x.as_array())
        .into_iter()
        .flatten()
    {
        let Some(b) = a.get("backend").and_then(|x| x.as_str()) else {
            continue;
        };
        tried.push(b.to_string());
        match a.get("refused").and_then(|x| x.as_str()) {
            Some(why) => refused.push((b.to_string(), why.to_string())),
            None => usable.push(b.to_string()),
        }
    }
    for b in ["fentry", "kprobe", "tracepoint"] {
        if !tried.iter().any(|t| t == b) {
            usable.push(b.to_string());
        }
    }
    Ok(Backends {
        chosen,
        usable,
        refused,
    })
}

/// What churn prints once its netns is ready.
#[derive(Clone, Debug, Deserialize)]
pub struct ChurnReady {
    pub netns_path: String,
    pub netns_inode: u32,
}

/// A running churn process (waiting for `go`, or holding its sockets).
pub struct Churn {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pub ready: ChurnReady,
}

impl Churn {
    pub fn start(bins: &Bins, args: &[String]) -> Result<Churn> {
        let mut child = Command::new(&bins.churn)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", bins.churn.display()))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("churn: no stdin/stdout pipes");
        };
        let mut c = Churn {
            child,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout),
            ready: ChurnReady {
                netns_path: String::new(),
                netns_inode: 0,
            },
        };
        let line = c.read_line().context("churn did not report ready")?;
        c.ready =
            serde_json::from_str(&line).with_context(|| format!("churn's ready line {line:?}"))?;
        Ok(c)
    }

    /// A churn holding `count` listening sockets on ports from `base`, once they all
    /// listen.
    pub fn hold(bins: &Bins, base: u16, count: u32) -> Result<Churn> {
        let args = [
            "--mode",
            "hold",
            "--base",
            &base.to_string(),
            "--count",
            &count.to_string(),
        ]
        .map(String::from);
        let mut churn = Churn::start(bins, &args)?;
        churn.go()?;
        let held = churn.result()?;
        if held.held != u64::from(count) {
            bail!("churn holds {} sockets, not {count}", held.held);
        }
        Ok(churn)
    }

    fn read_line(&mut self) -> Result<String> {
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .context("reading churn's stdout")?;
        if n == 0 {
            bail!("churn exited early (see its stderr above)");
        }
        Ok(line)
    }

    fn send(&mut self, cmd: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("churn's stdin is closed")?;
        writeln!(stdin, "{cmd}")
            .and_then(|_| stdin.flush())
            .context("writing to churn's stdin")
    }

    /// Start the workload.
    pub fn go(&mut self) -> Result<()> {
        self.send("go")
    }

    /// Ask a soak run to stop.
    pub fn stop(&mut self) -> Result<()> {
        self.send("stop")
    }

    /// Wait for the counters of the run (churn keeps its sockets afterwards).
    pub fn result(&mut self) -> Result<Counters> {
        let line = self
            .read_line()
            .context("churn did not report its counters")?;
        serde_json::from_str(&line).with_context(|| format!("churn's result line {line:?}"))
    }

    /// Close stdin: churn closes its sockets and exits.
    pub fn finish(mut self) -> Result<()> {
        self.stdin.take();
        wait_or_kill(&mut self.child, Duration::from_secs(20), "churn")
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        self.stdin.take();
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = wait_or_kill(&mut self.child, Duration::from_secs(5), "churn");
        }
    }
}

/// Waits up to `timeout` for `child` to exit; then SIGKILL (by its pid) and reap.
pub fn wait_or_kill(child: &mut Child, timeout: Duration, what: &str) -> Result<()> {
    let until = Instant::now() + timeout;
    loop {
        if let Some(st) = child
            .try_wait()
            .with_context(|| format!("waiting for {what}"))?
        {
            if !st.success() {
                bail!("{what} exited with {st}");
            }
            return Ok(());
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not exit within {timeout:?}; killed it");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What to do with the tracer's stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceSink {
    /// /dev/null (overhead: no consumer competes for the CPU).
    Null,
    /// A pipe drained by a thread that counts lines by op/kind.
    Count,
    /// A pipe drained by a thread that counts and keeps each port's last state (soak).
    Final,
}

/// What a finished tracer reports.
#[derive(Debug, Default)]
pub struct TraceOutcome {
    pub counts: TraceCounts,
    pub finals: FinalStates,
    pub stderr: String,
    /// From `portwatch: N events dropped in total` (0 when a clean exit printed none).
    pub dropped: Option<u64>,
}

/// A running `portwatch trace`.
pub struct Tracer {
    child: Child,
    out: Option<JoinHandle<(TraceCounts, FinalStates)>>,
    err: Option<JoinHandle<String>>,
    ready_file: PathBuf,
}

impl Tracer {
    /// Starts `portwatch trace ARGS --ready-file F` and waits until F exists.
    pub fn start(bins: &Bins, args: &[String], sink: TraceSink, scratch: &Path) -> Result<Tracer> {
        std::fs::create_dir_all(scratch)
            .with_context(|| format!("creating {}", scratch.display()))?;
        let ready_file = scratch.join(format!("trace-ready-{}", std::process::id()));
        let _ = std::fs::remove_file(&ready_file);
        let mut cmd = Command::new(&bins.portwatch);
        cmd.arg("trace")
            .args(args)
            .arg("--ready-file")
            .arg(&ready_file)
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        cmd.stdout(if sink == TraceSink::Null {
            Stdio::null()
        } else {
            Stdio::piped()
        });
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {} trace", bins.portwatch.display()))?;
        let out = child.stdout.take().map(|o| {
            std::thread::spawn(move || {
                let mut counts = TraceCounts::default();
                let mut finals = FinalStates::default();
                let mut r = BufReader::with_capacity(1 << 20, o);
                let mut line = String::new();
                while matches!(r.read_line(&mut line), Ok(n) if n > 0) {
                    counts.add_line(&line);
                    if sink == TraceSink::Final {
                        finals.add_line(&line);
                    }
                    line.clear();
                }
                (counts, finals)
            })
        });
        let err = child.stderr.take().map(|mut e| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = e.read_to_string(&mut s);
                s
            })
        });
        let mut t = Tracer {
            child,
            out,
            err,
            ready_file,
        };
        let until = Instant::now() + Duration::from_secs(60);
        while !t.ready_file.exists() {
            if let Ok(Some(st)) = t.child.try_wait() {
                let stderr = t.err.take().and_then(|h| h.join().ok()).unwrap_or_default();
                bail!(
                    "portwatch trace exited before it was ready ({st}): {}",
                    stderr.trim()
                );
            }
            if Instant::now() >= until {
                bail!(
                    "portwatch trace was not ready within 60 s (no {})",
                    t.ready_file.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(t)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGINT (trace drains what is in the ring buffer, prints the drop total, detaches
    /// and exits), then collect.
    pub fn stop(mut self) -> Result<TraceOutcome> {
        let pid = Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, Signal::SIGINT).context("sending SIGINT to portwatch trace")?;
        let waited = wait_or_kill(&mut self.child, Duration::from_secs(30), "portwatch trace");
        let (counts, finals) = self
            .out
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let stderr = self
            .err
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let _ = std::fs::remove_file(&self.ready_file);
        if let Err(e) = waited {
            bail!("{e:#}: {}", stderr.trim());
        }
        let dropped = Some(dropped_total(&stderr).unwrap_or(0));
        Ok(TraceOutcome {
            counts,
            finals,
            stderr,
            dropped,
        })
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let pid = Pid::from_raw(self.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, Signal::SIGINT);
            let _ = wait_or_kill(&mut self.child, Duration::from_secs(10), "portwatch trace");
        }
        let _ = std::fs::remove_file(&self.ready_file);
    }
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let p = format!("/proc/{pid}/stat");
    let s = std::fs::read_to_string(&p).with_context(|| format!("reading {p}"))?;
    super::stats::stat_cpu_ticks(&s).with_context(|| format!("parsing {p}"))
}

/// Clock ticks per second (`getconf CLK_TCK`).
pub fn clk_tck() -> Result<u64> {
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .context("running getconf CLK_TCK")?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("parsing `getconf CLK_TCK`")
}

/// VmRSS of a process in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let p = format!("/proc/{pid}/status");
    let s = std::fs::read_to_string(&p).with_context(|| format!("reading {p}"))?;
    super::stats::vm_rss_kib(&s).with_context(|| format!("no VmRSS in {p}"))
}
