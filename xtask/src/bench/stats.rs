//! Pure helpers of the benchmarks: medians, ratios, the expected event/transition counts
//! of each churn workload, parsing of the tools' outputs. Unit-tested without root.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Median of the finite values (mean of the two middle ones for an even count); `None`
/// when there is none.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The `p`-th percentile (0 < p <= 100) of the finite values by the nearest-rank method:
/// the smallest value with at least p % of the values at or below it; `None` when there
/// is none.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() || !(p > 0.0 && p <= 100.0) {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = (p / 100.0 * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// `num / den`, `None` unless both are finite and `den > 0`.
pub fn ratio(num: f64, den: f64) -> Option<f64> {
    (num.is_finite() && den.is_finite() && den > 0.0).then(|| num / den)
}

/// Slowdown in percent of a traced rate against its baseline: `(1 - traced/base) * 100`
/// (negative when the traced rounds were faster).
pub fn slowdown_pct(base: f64, traced: f64) -> Option<f64> {
    ratio(traced, base).map(|r| (1.0 - r) * 100.0)
}

/// The order of the variants in round `r`: a rotation of `0..n`, so that no variant always
/// runs first (A B C, B C A, C A B, ...). Every round still holds each variant once.
pub fn rotation(r: usize, n: usize) -> Vec<usize> {
    (0..n).map(|i| (i + r) % n.max(1)).collect()
}

/// The counters printed by the churn example when a run is done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct Counters {
    pub elapsed_s: f64,
    pub cycles: u64,
    pub binds_ok: u64,
    pub binds_failed: u64,
    pub listens_ok: u64,
    pub connects_ok: u64,
    pub connects_failed: u64,
    pub accepts_ok: u64,
    pub closes_bound: u64,
    pub closes_released: u64,
    #[serde(default)]
    pub held: u64,
}

impl Counters {
    /// Workload cycles per second.
    pub fn rate(&self) -> Option<f64> {
        ratio(self.cycles as f64, self.elapsed_s)
    }
}

/// The churn workloads the benchmarks run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// socket, bind(127.0.0.1:0), close.
    Bind,
    /// The same with SO_REUSEADDR.
    BindReuseaddr,
    /// connect, accept, client close with SO_LINGER 0 (RST), server close.
    Connect,
    /// The same with SO_REUSEADDR on every socket.
    ConnectReuseaddr,
}

impl Workload {
    pub const ALL: [Workload; 4] = [
        Workload::Bind,
        Workload::BindReuseaddr,
        Workload::Connect,
        Workload::ConnectReuseaddr,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Bind => "bind+close",
            Workload::BindReuseaddr => "bind+close SO_REUSEADDR",
            Workload::Connect => "connect+accept+close",
            Workload::ConnectReuseaddr => "connect+accept+close SO_REUSEADDR",
        }
    }

    /// Arguments of the churn example.
    pub fn churn_args(self) -> Vec<&'static str> {
        match self {
            Workload::Bind => vec!["--mode", "bind"],
            Workload::BindReuseaddr => vec!["--mode", "bind", "--reuseaddr"],
            Workload::Connect => vec!["--mode", "connect"],
            Workload::ConnectReuseaddr => vec!["--mode", "connect", "--reuseaddr"],
        }
    }

    fn is_bind(self) -> bool {
        matches!(self, Workload::Bind | Workload::BindReuseaddr)
    }

    /// Events the kernel programs of the tracepoint backend produce for a run, from the
    /// workload's own counters (this is what "events delivered + dropped" must equal):
    /// - bind: the bind (1) and the close of the bound socket (1);
    /// - connect: connect (1), accept (1), the client's close with SO_LINGER 0: its
    ///   `inet_sock_set_state -> TCP_CLOSE` release (1) and its close() (1, the port is
    ///   still set on entry), the server socket: the release when the RST arrives (1);
    ///   its later close() sees no port and sends nothing. (If the RST were processed
    ///   after the server's close(), that close() would send the event instead of the
    ///   release: still one.) 5 per connection.
    pub fn expected_events(self, c: &Counters) -> u64 {
        if self.is_bind() {
            c.binds_ok + c.closes_bound
        } else {
            c.connects_ok + c.accepts_ok + 2 * c.closes_bound + c.closes_released
        }
    }

    /// Transitions `trace` prints for a loss-free run, per (op, kind), from the workload's
    /// counters (the reducer's rules, src/reducer.rs):
    /// - bind: `bind/bucket_created` per bind (a fresh ephemeral port), `close/
    ///   bucket_destroyed` per close;
    /// - connect: `connect/bucket_created` (client's ephemeral port), `accept/owner_added`
    ///   (listener's bucket), `release/bucket_destroyed` (client reset), `release/
    ///   owner_removed` (server socket reset) per connection; the client's close() repeats
    ///   a destruction already reported and prints nothing.
    ///
    /// Two workers can hit the same port in the same instant (the kernel picks ephemeral
    /// ports at random); the reducer then merges or reorders transitions, so a few
    /// differences with zero drops are reordering, not loss: they are reported as such.
    pub fn expected_transitions(self, c: &Counters) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        if self.is_bind() {
            m.insert("bind/bucket_created".to_string(), c.binds_ok);
            m.insert("close/bucket_destroyed".to_string(), c.closes_bound);
        } else {
            m.insert("connect/bucket_created".to_string(), c.connects_ok);
            m.insert("accept/owner_added".to_string(), c.accepts_ok);
            m.insert("release/bucket_destroyed".to_string(), c.closes_bound);
            m.insert("release/owner_removed".to_string(), c.closes_released);
        }
        m
    }
}

/// Counts of `trace --json` lines by `op/kind`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TraceCounts {
    pub lines: u64,
    pub by_op_kind: BTreeMap<String, u64>,
    /// Lines that were not JSON objects with `op` and `kind`.
    pub unparsed: u64,
}

impl TraceCounts {
    /// Counts one output line. A cheap scan of the two string fields, no full JSON
    /// parse: this runs at the tracer's full output rate on the same CPUs as the workload.
    pub fn add_line(&mut self, line: &str) {
        self.lines += 1;
        match (json_str_field(line, "op"), json_str_field(line, "kind")) {
            (Some(op), Some(kind)) => {
                *self.by_op_kind.entry(format!("{op}/{kind}")).or_insert(0) += 1;
            }
            _ => self.unparsed += 1,
        }
    }

    pub fn transitions(&self) -> u64 {
        self.by_op_kind.values().sum()
    }

    /// Transitions of delivered events: without the corrections (op `rescan`) that
    /// follow a `resync` record after a loss.
    pub fn event_transitions(&self) -> u64 {
        self.by_op_kind
            .iter()
            .filter(|(k, _)| !k.starts_with("rescan/"))
            .map(|(_, n)| n)
            .sum()
    }
}

/// The value of a top-level string field `"name":"value"` in a one-line JSON object
/// (values without escapes, as `trace --json` prints for op and kind).
pub fn json_str_field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("\"{name}\":\"");
    let start = line.find(&key)? + key.len();
    let rest = &line[start..];
    let end = rest.find('"')?;
    Some(&rest[..end])
}

/// The total of `portwatch: N events dropped in total` in trace's stderr. `trace` prints
/// that line at exit only when N > 0, so a clean exit without it means 0.
pub fn dropped_total(stderr: &str) -> Option<u64> {
    stderr.lines().rev().find_map(|l| {
        let rest = l.trim().strip_prefix("portwatch: ")?;
        let n = rest.strip_suffix(" events dropped in total")?;
        n.trim().parse().ok()
    })
}

/// The sum of `portwatch: N events dropped (ring buffer full)...`, the losses trace
/// reports while it runs (at most every 500 ms), in a part of its stderr.
pub fn dropped_reported(stderr: &str) -> u64 {
    stderr
        .lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("portwatch: ")?;
            let (n, what) = rest.split_once(' ')?;
            what.starts_with("events dropped (ring buffer full)")
                .then(|| n.parse::<u64>().ok())
                .flatten()
        })
        .sum()
}

/// `walk_ms=<float>` printed by `dump --timing` on stderr.
pub fn walk_ms(stderr: &str) -> Option<f64> {
    stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("walk_ms=")?.trim().parse().ok())
}

/// utime + stime (clock ticks) from the text of /proc/PID/stat. The comm field may hold
/// spaces and parentheses: fields are counted after the last `)`.
pub fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // After the comm: state is field 3 of the man page, utime 14, stime 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// VmRSS in KiB from the text of /proc/PID/status.
pub fn vm_rss_kib(status: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let v = l.strip_prefix("VmRSS:")?;
        v.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// Per-port state as the trace stream leaves it: the last transition of each port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PortState {
    pub owners: u32,
    pub fastreuse: i8,
    pub fastreuseport: i8,
}

/// Folds `trace --json` lines into each (netns, port)'s last known state: `None` after
/// `bucket_destroyed`, else the `owners`/`fastreuse`/`fastreuseport` the line reports.
/// Lines without a bucket state (e.g. a failure on a port without bucket) change nothing.
#[derive(Debug, Default)]
pub struct FinalStates {
    pub ports: BTreeMap<(u32, u16), Option<PortState>>,
}

impl FinalStates {
    pub fn add_line(&mut self, line: &str) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            return;
        };
        let (Some(ns), Some(port), Some(kind)) = (
            v.get("netns").and_then(|x| x.as_u64()),
            v.get("port").and_then(|x| x.as_u64()),
            v.get("kind").and_then(|x| x.as_str()),
        ) else {
            return;
        };
        let (Ok(ns), Ok(port)) = (u32::try_from(ns), u16::try_from(port)) else {
            return;
        };
        if kind == "bucket_destroyed" {
            self.ports.insert((ns, port), None);
            return;
        }
        let fr = v.get("fastreuse").and_then(|x| x.as_i64());
        let frp = v.get("fastreuseport").and_then(|x| x.as_i64());
        let owners = v.get("owners").and_then(|x| x.as_u64());
        if let (Some(fr), Some(frp), Some(owners)) = (fr, frp, owners) {
            self.ports.insert(
                (ns, port),
                Some(PortState {
                    owners: owners as u32,
                    fastreuse: fr as i8,
                    fastreuseport: frp as i8,
                }),
            );
        }
    }
}

/// One difference between the dump and the trace stream's final states.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    pub port: u16,
    pub dump: Option<PortState>,
    pub trace: Option<PortState>,
}

/// Compares a `dump --json` array (of one netns) with the trace's final states of that
/// netns, port by port over the union of both.
pub fn compare_final(
    dump: &serde_json::Value,
    finals: &FinalStates,
    netns: u32,
) -> (usize, Vec<Mismatch>) {
    let mut from_dump: BTreeMap<u16, PortState> = BTreeMap::new();
    if let Some(arr) = dump.as_array() {
        for b in arr {
            if b.get("netns").and_then(|x| x.as_u64()) != Some(u64::from(netns)) {
                continue;
            }
            let port = b
                .get("port")
                .and_then(|x| x.as_u64())
                .and_then(|p| u16::try_from(p).ok());
            let fr = b.get("fastreuse").and_then(|x| x.as_i64());
            let frp = b.get("fastreuseport").and_then(|x| x.as_i64());
            let owners = b.get("owners").and_then(|x| x.as_u64());
            if let (Some(port), Some(fr), Some(frp), Some(owners)) = (port, fr, frp, owners) {
                from_dump.insert(
                    port,
                    PortState {
                        owners: owners as u32,
                        fastreuse: fr as i8,
                        fastreuseport: frp as i8,
                    },
                );
            }
        }
    }
    let mut ports: Vec<u16> = from_dump.keys().copied().collect();
    for (&(ns, port), _) in finals.ports.iter() {
        if ns == netns {
            ports.push(port);
        }
    }
    ports.sort_unstable();
    ports.dedup();
    let mut mismatches = Vec::new();
    for &port in &ports {
        let d = from_dump.get(&port).copied();
        let t = finals.ports.get(&(netns, port)).copied().flatten();
        if d != t {
            mismatches.push(Mismatch {
                port,
                dump: d,
                trace: t,
            });
        }
    }
    (ports.len(), mismatches)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
    }

    #[test]
    fn percentile_nearest_rank() {
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&v, 99.0), Some(198.0));
        assert_eq!(percentile(&v, 50.0), Some(100.0));
        assert_eq!(percentile(&v, 100.0), Some(200.0));
        assert_eq!(percentile(&[7.0, f64::NAN], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 99.0), None);
        assert_eq!(percentile(&[1.0], 0.0), None);
    }

    #[test]
    fn ratio_and_slowdown() {
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(3.0, 2.0), Some(1.5));
        let s = slowdown_pct(100.0, 95.0).unwrap();
        assert!((s - 5.0).abs() < 1e-9, "{s}");
        assert!(slowdown_pct(100.0, 110.0).unwrap() < 0.0);
    }

    #[test]
    fn rotation_covers_every_variant_once() {
        assert_eq!(rotation(0, 3), vec![0, 1, 2]);
        assert_eq!(rotation(1, 3), vec![1, 2, 0]);
        assert_eq!(rotation(5, 3), vec![2, 0, 1]);
        for r in 0..7 {
            let mut v = rotation(r, 4);
            v.sort_unstable();
            assert_eq!(v, vec![0, 1, 2, 3]);
        }
    }

    fn counters(cycles: u64) -> Counters {
        Counters {
            elapsed_s: 2.0,
            cycles,
            ..Counters::default()
        }
    }

    #[test]
    fn expected_counts_per_workload() {
        let c = Counters {
            binds_ok: 10,
            closes_bound: 10,
            ..counters(10)
        };
        assert_eq!(Workload::Bind.expected_events(&c), 20);
        let t = Workload::BindReuseaddr.expected_transitions(&c);
        assert_eq!(t.values().sum::<u64>(), 20);
        assert_eq!(t["bind/bucket_created"], 10);
        let c = Counters {
            connects_ok: 7,
            accepts_ok: 7,
            closes_bound: 7,
            closes_released: 7,
            ..counters(7)
        };
        assert_eq!(Workload::Connect.expected_events(&c), 35);
        let t = Workload::ConnectReuseaddr.expected_transitions(&c);
        assert_eq!(t.values().sum::<u64>(), 28);
        assert_eq!(t["release/owner_removed"], 7);
        assert_eq!(c.rate(), Some(3.5));
    }

    #[test]
    fn counters_parse_churn_output() {
        let line = r#"{"done":true,"elapsed_s":2.0,"cycles":4,"binds_ok":4,"binds_failed":0,"listens_ok":0,"connects_ok":0,"connects_failed":0,"accepts_ok":0,"closes_bound":4,"closes_released":0,"held":0}"#;
        let c: Counters = serde_json::from_str(line).unwrap();
        assert_eq!(c.binds_ok, 4);
        assert_eq!(c.rate(), Some(2.0));
    }

    #[test]
    fn trace_line_counting() {
        let mut t = TraceCounts::default();
        t.add_line(
            r#"{"ts_ns":1,"netns":5,"port":80,"kind":"bucket_created","op":"bind","comm":"x"}"#,
        );
        t.add_line(r#"{"ts_ns":2,"kind":"bucket_destroyed","op":"close"}"#);
        t.add_line(r#"{"ts_ns":3,"kind":"bucket_destroyed","op":"close"}"#);
        t.add_line("garbage");
        assert_eq!(t.lines, 4);
        assert_eq!(t.unparsed, 1);
        assert_eq!(t.transitions(), 3);
        assert_eq!(t.event_transitions(), 3);
        // A loss: the resync record is no transition, its corrections are not events'.
        t.add_line(r#"{"complete":true,"corrections":1,"dropped":4,"kind":"resync","reread":{"ports":[]},"skipped":0}"#);
        t.add_line(r#"{"ts_ns":4,"netns":5,"port":81,"kind":"bucket_destroyed","op":"rescan"}"#);
        assert_eq!(
            (t.unparsed, t.transitions(), t.event_transitions()),
            (2, 4, 3)
        );
        assert_eq!(t.by_op_kind["close/bucket_destroyed"], 2);
        assert_eq!(json_str_field(r#"{"a":"b","op":"x"}"#, "op"), Some("x"));
        assert_eq!(json_str_field(r#"{"op":null}"#, "op"), None);
    }

    #[test]
    fn drop_and_walk_parsing() {
        let err = "portwatch: backend: tracepoint\nportwatch: 12 events dropped (ring buffer full); transitions may be missing\nportwatch: 1234 events dropped in total\n";
        assert_eq!(dropped_total(err), Some(1234));
        assert_eq!(dropped_total("portwatch: backend: tracepoint\n"), None);
        let running = "portwatch: 5 events dropped (ring buffer full); their buckets were re-read (see the resync record)\nportwatch: backend: x\nportwatch: 7 events dropped (ring buffer full); their buckets were re-read\nportwatch: 12 events dropped in total\n";
        assert_eq!(dropped_reported(running), 12);
        assert_eq!(dropped_reported("portwatch: backend: tracepoint\n"), 0);
        assert_eq!(walk_ms("portwatch: x\nwalk_ms=3.250\n"), Some(3.25));
        assert_eq!(walk_ms("nothing"), None);
    }

    #[test]
    fn proc_parsing() {
        let stat = "1234 (my (odd) comm) S 1 1234 1234 0 -1 4194560 500 0 0 0 17 4 0 0 20 0 1 0 100 1000 200";
        assert_eq!(stat_cpu_ticks(stat), Some(21));
        assert_eq!(stat_cpu_ticks("garbage"), None);
        let status = "Name:\tportwatch\nVmPeak:\t  9000 kB\nVmRSS:\t   5120 kB\n";
        assert_eq!(vm_rss_kib(status), Some(5120));
        assert_eq!(vm_rss_kib("Name: x\n"), None);
    }

    #[test]
    fn final_states_and_comparison() {
        let mut f = FinalStates::default();
        f.add_line(r#"{"netns":7,"port":100,"kind":"bucket_created","fastreuse":0,"fastreuseport":0,"owners":1}"#);
        f.add_line(r#"{"netns":7,"port":100,"kind":"owner_added","fastreuse":0,"fastreuseport":0,"owners":2}"#);
        f.add_line(r#"{"netns":7,"port":101,"kind":"bucket_created","fastreuse":-1,"fastreuseport":-1,"owners":1}"#);
        f.add_line(r#"{"netns":7,"port":101,"kind":"bucket_destroyed","fastreuse":null,"fastreuseport":null,"owners":0}"#);
        f.add_line(r#"{"netns":7,"port":102,"kind":"bucket_created","fastreuse":0,"fastreuseport":0,"owners":1}"#);
        // A failure on a port without a bucket leaves the state alone.
        f.add_line(r#"{"netns":7,"port":103,"kind":"bind_failed","fastreuse":null,"fastreuseport":null,"owners":0}"#);
        let dump = serde_json::json!([
            {"netns":7,"port":100,"fastreuse":0,"fastreuseport":0,"owners":2},
            {"netns":7,"port":102,"fastreuse":0,"fastreuseport":0,"owners":3},
            {"netns":7,"port":104,"fastreuse":-1,"fastreuseport":-1,"owners":1},
            {"netns":8,"port":105,"fastreuse":0,"fastreuseport":0,"owners":1},
        ]);
        let (n, m) = compare_final(&dump, &f, 7);
        assert_eq!(n, 4, "ports 100, 101, 102, 104");
        let ports: Vec<u16> = m.iter().map(|x| x.port).collect();
        assert_eq!(ports, vec![102, 104]);
        assert_eq!(m[1].trace, None);
    }
}
