//! Output of `trace`: one human-readable line or one JSON object per [`Transition`].
//!
//! Times are printed in **UTC** (no time-zone database is read): the header says so.
//! Kernel timestamps are `bpf_ktime_get_ns()` (CLOCK_MONOTONIC); [`Clock`] maps them to
//! wall-clock time with the REALTIME - MONOTONIC offset measured at start-up.

use serde::Serialize;

use crate::{
    decode::errno_name,
    model::{Transition, TransitionKind},
};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("clock_gettime({clock}) failed: {source}; the tool needs CLOCK_REALTIME and CLOCK_MONOTONIC")]
    Clock {
        clock: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serialise a transition to JSON: {0}")]
    Json(#[from] serde_json::Error),
}

const NS_PER_SEC: i128 = 1_000_000_000;

fn now_ns(id: libc::clockid_t, name: &'static str) -> Result<i128, FormatError> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable `timespec` that lives for the whole call; the
    // clock ids passed are constants the kernel knows.
    let rc = unsafe { libc::clock_gettime(id, &mut ts) };
    if rc != 0 {
        return Err(FormatError::Clock {
            clock: name,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(i128::from(ts.tv_sec) * NS_PER_SEC + i128::from(ts.tv_nsec))
}

/// Maps kernel monotonic timestamps to wall-clock (UTC) time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    /// CLOCK_REALTIME - CLOCK_MONOTONIC, in ns.
    offset_ns: i128,
}

impl Clock {
    /// Measures the REALTIME - MONOTONIC offset now.
    pub fn new() -> Result<Clock, FormatError> {
        let mono0 = now_ns(libc::CLOCK_MONOTONIC, "CLOCK_MONOTONIC")?;
        let real = now_ns(libc::CLOCK_REALTIME, "CLOCK_REALTIME")?;
        let mono1 = now_ns(libc::CLOCK_MONOTONIC, "CLOCK_MONOTONIC")?;
        // Bracketing the REALTIME read halves the error of the offset.
        Ok(Clock {
            offset_ns: real - (mono0 + (mono1 - mono0) / 2),
        })
    }

    /// A clock with a given offset (tests, replays).
    pub fn from_offset_ns(offset_ns: i128) -> Clock {
        Clock { offset_ns }
    }

    /// Nanoseconds since the Unix epoch for a kernel monotonic timestamp.
    pub fn unix_ns(&self, ts_ns: u64) -> i128 {
        i128::from(ts_ns) + self.offset_ns
    }

    /// `HH:MM:SS.mmm` in UTC.
    pub fn wall(&self, ts_ns: u64) -> String {
        let (_, _, _, h, m, s, ms) = civil(self.unix_ns(ts_ns));
        format!("{h:02}:{m:02}:{s:02}.{ms:03}")
    }

    /// RFC 3339 in UTC with milliseconds, e.g. `2024-05-01T14:02:11.347Z`.
    pub fn rfc3339(&self, ts_ns: u64) -> String {
        let (y, mo, d, h, m, s, ms) = civil(self.unix_ns(ts_ns));
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.{ms:03}Z")
    }
}

/// (year, month, day, hour, minute, second, millisecond) in UTC of Unix-epoch ns.
fn civil(unix_ns: i128) -> (i64, u32, u32, u32, u32, u32, u32) {
    let ms_total = unix_ns.div_euclid(1_000_000);
    let ms = ms_total.rem_euclid(1000) as u32;
    let secs = ms_total.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    // Howard Hinnant's days-from-civil inverse.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(mo <= 2);
    (y, mo, d, sod / 3600, sod % 3600 / 60, sod % 60, ms)
}

const W_TIME: usize = 12;
const W_WHO: usize = 23;
const W_NS: usize = 13;
const W_PORT: usize = 10;
const W_KIND: usize = 21;
const W_OP: usize = 8;
const W_CHANGE: usize = 18;
const W_BUCKET: usize = 36;

/// The column header of [`human_line`], with a note that times are UTC.
pub fn header() -> String {
    let line = format!(
        "{:<W_TIME$}  {:<W_WHO$}  {:<W_NS$}  {:<W_PORT$}  {:<W_KIND$}  {:<W_OP$}  {:<W_CHANGE$}  {:<W_BUCKET$}  SOCKET",
        "TIME(UTC)", "PID/COMM", "NETNS", "PORT", "EVENT", "OP", "CHANGE", "BUCKET AFTER",
    );
    line.trim_end().to_string()
}

fn is_failure(kind: TransitionKind) -> bool {
    matches!(
        kind,
        TransitionKind::BindFailed | TransitionKind::ConnectFailed
    )
}

/// One aligned, greppable line for a transition (no trailing newline).
pub fn human_line(t: &Transition, clock: &Clock) -> String {
    // pid 0: no task caused it (timer or softirq, e.g. TIME-WAIT expiry).
    let who = if t.pid == 0 && t.comm.is_empty() { "[kernel]".to_string() } else { format!("{}/{}", t.pid, t.comm) };
    let ns = format!("ns:{}", t.key.netns);
    let port = if t.key.l3mdev != 0 {
        format!("port {} vrf:{}", t.key.port, t.key.l3mdev)
    } else {
        format!("port {}", t.key.port)
    };
    let change = if is_failure(t.kind) {
        format!("{} ({})", errno_name(t.errno), t.errno)
    } else {
        match (t.from, t.to) {
            (Some(f), Some(to)) => format!("{f} -> {to}"),
            _ => "-".to_string(),
        }
    };
    let bucket = match (&t.after, is_failure(t.kind)) {
        (Some(a), false) => format!(
            "owners {}{}  (fr {}, frp {})",
            a.owners,
            if a.owners_truncated { "+" } else { "" },
            a.fastreuse,
            a.fastreuseport
        ),
        (Some(a), true) => format!(
            "bucket fastreuse {} owners {}{} (frp {})",
            a.fastreuse,
            a.owners,
            if a.owners_truncated { "+" } else { "" },
            a.fastreuseport
        ),
        (None, _) => "no bucket".to_string(),
    };
    let mut sock = Vec::new();
    if let Some(l) = &t.local {
        sock.push(format!("local {l}"));
    }
    if let Some(r) = &t.remote {
        sock.push(format!("remote {r}"));
    }
    let mut opts = Vec::new();
    if t.opts.reuseaddr {
        opts.push("REUSEADDR");
    }
    if t.opts.reuseport {
        opts.push("REUSEPORT");
    }
    if t.opts.bind_address_no_port {
        opts.push("BIND_ADDRESS_NO_PORT");
    }
    if !opts.is_empty() {
        sock.push(format!("[{}]", opts.join(",")));
    }
    if t.port_from_range {
        sock.push("(only port of the ephemeral range)".to_string());
    }
    if sock.is_empty() {
        sock.push("-".to_string());
    }
    let line = format!(
        "{:<W_TIME$}  {:<W_WHO$}  {:<W_NS$}  {:<W_PORT$}  {:<W_KIND$}  {:<W_OP$}  {:<W_CHANGE$}  {:<W_BUCKET$}  {}",
        clock.wall(t.ts_ns),
        who,
        ns,
        port,
        t.kind.as_str(),
        t.op.as_str(),
        change,
        bucket,
        sock.join("  "),
    );
    line.trim_end().to_string()
}

/// The JSON object of one transition; keys in this order, names fixed.
#[derive(Serialize)]
struct JsonLine<'a> {
    ts_ns: u64,
    time: String,
    netns: u32,
    port: u16,
    l3mdev: i32,
    kind: &'static str,
    op: &'static str,
    fastreuse: Option<i8>,
    fastreuseport: Option<i8>,
    owners: u32,
    owners_truncated: bool,
    from: Option<i8>,
    to: Option<i8>,
    pid: u32,
    comm: &'a str,
    errno: i32,
    errno_name: Option<&'static str>,
    local: Option<&'a str>,
    remote: Option<&'a str>,
    reuseaddr: bool,
    reuseport: bool,
    bind_address_no_port: bool,
    port_from_range: bool,
}

/// One JSON object (one line, no trailing newline) for a transition. `time` is RFC 3339
/// UTC with milliseconds.
pub fn json_line(t: &Transition, clock: &Clock) -> Result<String, FormatError> {
    let changed = matches!(
        t.kind,
        TransitionKind::FastreuseChanged | TransitionKind::FastreuseportChanged
    );
    let j = JsonLine {
        ts_ns: t.ts_ns,
        time: clock.rfc3339(t.ts_ns),
        netns: t.key.netns,
        port: t.key.port,
        l3mdev: t.key.l3mdev,
        kind: t.kind.as_str(),
        op: t.op.as_str(),
        fastreuse: t.after.map(|a| a.fastreuse),
        fastreuseport: t.after.map(|a| a.fastreuseport),
        owners: t.after.map_or(0, |a| a.owners),
        owners_truncated: t.after.is_some_and(|a| a.owners_truncated),
        from: if changed { t.from } else { None },
        to: if changed { t.to } else { None },
        pid: t.pid,
        comm: &t.comm,
        errno: t.errno,
        errno_name: (t.errno != 0).then(|| errno_name(t.errno)),
        local: t.local.as_deref(),
        remote: t.remote.as_deref(),
        reuseaddr: t.opts.reuseaddr,
        reuseport: t.opts.reuseport,
        bind_address_no_port: t.opts.bind_address_no_port,
        port_from_range: t.port_from_range,
    };
    Ok(serde_json::to_string(&j)?)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::model::{BucketInfo, BucketKey, Op, SockOpts};

    /// 2024-05-01T14:02:11.000Z as Unix seconds.
    const T0: i128 = 1_714_572_131;

    fn clock() -> Clock {
        // Kernel ts 5 s (+347 ms) after boot maps to T0 + 0.347 s.
        Clock::from_offset_ns(T0 * NS_PER_SEC - 5 * NS_PER_SEC)
    }

    fn fr_changed() -> Transition {
        Transition {
            ts_ns: 5_347_000_000,
            kind: TransitionKind::FastreuseChanged,
            op: Op::Bind,
            key: BucketKey {
                netns: 4026532290,
                l3mdev: 0,
                port: 60000,
            },
            after: Some(BucketInfo {
                fastreuse: 0,
                fastreuseport: -1,
                owners: 2,
                owners_truncated: false,
            }),
            from: Some(-1),
            to: Some(0),
            errno: 0,
            pid: 4242,
            comm: "python3".into(),
            local: Some("127.2.2.2:60000".into()),
            remote: None,
            opts: SockOpts {
                reuseaddr: true,
                ..Default::default()
            },
            port_from_range: false,
        }
    }

    fn connect_failed() -> Transition {
        Transition {
            kind: TransitionKind::ConnectFailed,
            op: Op::Connect,
            after: Some(BucketInfo {
                fastreuse: 0,
                fastreuseport: -1,
                owners: 1,
                owners_truncated: false,
            }),
            from: None,
            to: None,
            errno: 99,
            local: Some("127.0.0.1:60000".into()),
            remote: Some("127.9.9.9:1234".into()),
            opts: SockOpts::default(),
            port_from_range: true,
            ..fr_changed()
        }
    }

    fn destroyed() -> Transition {
        Transition {
            kind: TransitionKind::BucketDestroyed,
            op: Op::Close,
            after: None,
            from: None,
            to: None,
            local: None,
            opts: SockOpts::default(),
            ..fr_changed()
        }
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0, 0));
        assert_eq!(
            civil(T0 * NS_PER_SEC + 347_000_000),
            (2024, 5, 1, 14, 2, 11, 347)
        );
        // Leap day and end of year.
        assert_eq!(civil(951_782_400 * NS_PER_SEC), (2000, 2, 29, 0, 0, 0, 0));
        assert_eq!(
            civil(1_704_067_199_999 * 1_000_000),
            (2023, 12, 31, 23, 59, 59, 999)
        );
        // Before the epoch rounds towards the past.
        assert_eq!(civil(-1), (1969, 12, 31, 23, 59, 59, 999));
    }

    #[test]
    fn clock_maps_monotonic_to_wall() {
        let c = clock();
        assert_eq!(c.wall(5_347_000_000), "14:02:11.347");
        assert_eq!(c.rfc3339(5_347_000_000), "2024-05-01T14:02:11.347Z");
        let live = Clock::new().expect("clocks readable");
        // A timestamp taken now maps to roughly now.
        let mono = now_ns(libc::CLOCK_MONOTONIC, "m").expect("monotonic") as u64;
        let real = now_ns(libc::CLOCK_REALTIME, "r").expect("realtime");
        assert!((live.unix_ns(mono) - real).abs() < 50_000_000);
    }

    #[test]
    fn human_line_changed() {
        let l = human_line(&fr_changed(), &clock());
        assert!(l.starts_with("14:02:11.347  4242/python3 "), "{l}");
        for part in [
            "ns:4026532290",
            "port 60000 ",
            "  fastreuse_changed  ",
            "  bind  ",
            "-1 -> 0",
            "owners 2  (fr 0, frp -1)",
            "local 127.2.2.2:60000",
            "[REUSEADDR]",
        ] {
            assert!(l.contains(part), "missing {part:?} in {l}");
        }
        assert!(!l.contains("remote"));
        assert!(!l.ends_with(' '));
    }

    #[test]
    fn human_line_failure_and_destroyed() {
        let l = human_line(&connect_failed(), &clock());
        for part in [
            "connect_failed",
            "EADDRNOTAVAIL (99)",
            "bucket fastreuse 0 owners 1 (frp -1)",
            "local 127.0.0.1:60000",
            "remote 127.9.9.9:1234",
            "ephemeral range",
        ] {
            assert!(l.contains(part), "missing {part:?} in {l}");
        }
        let l = human_line(&destroyed(), &clock());
        assert!(l.contains("bucket_destroyed"), "{l}");
        assert!(l.contains("no bucket"), "{l}");
        assert!(!l.contains("local"), "{l}");
        assert!(l.ends_with("  -"), "{l}");
    }

    #[test]
    fn human_columns_align_with_header() {
        let h = header();
        let c = clock();
        let lines = [
            human_line(&fr_changed(), &c),
            human_line(&connect_failed(), &c),
            human_line(&destroyed(), &c),
        ];
        for col in [
            "PID/COMM",
            "NETNS",
            "PORT",
            "EVENT",
            "OP",
            "CHANGE",
            "BUCKET AFTER",
            "SOCKET",
        ] {
            let at = h.find(col).expect("column in header");
            for l in &lines {
                // Every column starts after two spaces, at the header's position.
                assert_eq!(&l[at - 2..at], "  ", "column {col} misaligned in {l}\n{h}");
                assert_ne!(&l[at..at + 1], " ", "column {col} empty in {l}\n{h}");
            }
        }
        assert!(h.contains("UTC"));
    }

    fn parse(t: &Transition) -> serde_json::Map<String, Value> {
        let s = json_line(t, &clock()).expect("serialises");
        assert!(!s.contains('\n'));
        match serde_json::from_str::<Value>(&s).expect("valid JSON") {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    const KEYS: [&str; 23] = [
        "ts_ns",
        "time",
        "netns",
        "port",
        "l3mdev",
        "kind",
        "op",
        "fastreuse",
        "fastreuseport",
        "owners",
        "owners_truncated",
        "from",
        "to",
        "pid",
        "comm",
        "errno",
        "errno_name",
        "local",
        "remote",
        "reuseaddr",
        "reuseport",
        "bind_address_no_port",
        "port_from_range",
    ];

    #[test]
    fn json_changed() {
        let m = parse(&fr_changed());
        let mut got: Vec<&str> = m.keys().map(String::as_str).collect();
        got.sort_unstable();
        let mut want = KEYS.to_vec();
        want.sort_unstable();
        assert_eq!(got, want);
        assert_eq!(m["ts_ns"], 5_347_000_000u64);
        assert_eq!(m["time"], "2024-05-01T14:02:11.347Z");
        assert_eq!(m["netns"], 4026532290u32);
        assert_eq!(m["port"], 60000);
        assert_eq!(m["l3mdev"], 0);
        assert_eq!(m["kind"], "fastreuse_changed");
        assert_eq!(m["op"], "bind");
        assert_eq!(m["fastreuse"], 0);
        assert_eq!(m["fastreuseport"], -1);
        assert_eq!(m["owners"], 2);
        assert_eq!(m["owners_truncated"], false);
        assert_eq!(m["from"], -1);
        assert_eq!(m["to"], 0);
        assert_eq!(m["pid"], 4242);
        assert_eq!(m["comm"], "python3");
        assert_eq!(m["errno"], 0);
        assert_eq!(m["errno_name"], Value::Null);
        assert_eq!(m["local"], "127.2.2.2:60000");
        assert_eq!(m["remote"], Value::Null);
        assert_eq!(m["reuseaddr"], true);
        assert_eq!(m["reuseport"], false);
        assert_eq!(m["bind_address_no_port"], false);
        assert_eq!(m["port_from_range"], false);
    }

    #[test]
    fn json_key_order_is_stable() {
        let s = json_line(&fr_changed(), &clock()).expect("serialises");
        let mut last = 0;
        for k in KEYS {
            let at = s.find(&format!("\"{k}\":")).expect("key present");
            assert!(at >= last, "key {k} out of order in {s}");
            last = at;
        }
    }

    #[test]
    fn json_failure_and_destroyed() {
        let m = parse(&connect_failed());
        assert_eq!(m["kind"], "connect_failed");
        assert_eq!(m["errno"], 99);
        assert_eq!(m["errno_name"], "EADDRNOTAVAIL");
        assert_eq!(m["fastreuse"], 0);
        assert_eq!(m["owners"], 1);
        assert_eq!(m["from"], Value::Null);
        assert_eq!(m["to"], Value::Null);
        assert_eq!(m["remote"], "127.9.9.9:1234");
        assert_eq!(m["port_from_range"], true);

        let m = parse(&destroyed());
        assert_eq!(m["kind"], "bucket_destroyed");
        assert_eq!(m["op"], "close");
        assert_eq!(m["fastreuse"], Value::Null);
        assert_eq!(m["fastreuseport"], Value::Null);
        assert_eq!(m["owners"], 0);
        assert_eq!(m["local"], Value::Null);
        assert_eq!(m["errno_name"], Value::Null);
    }

    #[test]
    fn json_vrf_and_truncated() {
        let mut t = fr_changed();
        t.key.l3mdev = 7;
        if let Some(a) = t.after.as_mut() {
            a.owners_truncated = true;
        }
        let m = parse(&t);
        assert_eq!(m["l3mdev"], 7);
        assert_eq!(m["owners_truncated"], true);
        let l = human_line(&t, &clock());
        assert!(l.contains("port 60000 vrf:7"), "{l}");
        assert!(l.contains("owners 2+"), "{l}");
    }
}
