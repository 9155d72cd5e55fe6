//! Transitions as text: the `trace` line (and its header), the quiz timeline line, and
//! the short description `top` shows as a bucket's last change and in its recent pane.

use std::{fmt::Write as _, time::Duration};

use super::time::{age, Clock};
use crate::model::{BucketInfo, Reread, Resync, SockOpts, Task, Transition, TransitionKind};

const W_TIME: usize = 12;
const W_WHO: usize = 23;
const W_NS: usize = 13;
const W_PORT: usize = 10;
const W_KIND: usize = 21;
const W_OP: usize = 8;
const W_CHANGE: usize = 18;
const W_BUCKET: usize = 36;

/// The column header of [`trace_line`], with a note that times are UTC.
pub fn trace_header() -> String {
    let line = format!(
        "{:<W_TIME$}  {:<W_WHO$}  {:<W_NS$}  {:<W_PORT$}  {:<W_KIND$}  {:<W_OP$}  {:<W_CHANGE$}  {:<W_BUCKET$}  SOCKET",
        "TIME(UTC)", "PID/COMM", "NETNS", "PORT", "EVENT", "OP", "CHANGE", "BUCKET AFTER",
    );
    line.trim_end().to_string()
}

/// `[REUSEADDR,REUSEPORT,BIND_ADDRESS_NO_PORT]` (the options set), `None` when none is.
fn sock_opts(o: &SockOpts) -> Option<String> {
    let set: Vec<&str> = [
        (o.reuseaddr, "REUSEADDR"),
        (o.reuseport, "REUSEPORT"),
        (o.bind_address_no_port, "BIND_ADDRESS_NO_PORT"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    (!set.is_empty()).then(|| format!("[{}]", set.join(",")))
}

/// How a socket got its port, where the kernel records it (6.18+): `connect()-bound` or
/// `bind()-bound`.
pub fn bound_by(connect_bound: Option<bool>) -> Option<&'static str> {
    connect_bound.map(|c| if c { "connect()-bound" } else { "bind()-bound" })
}

/// One aligned, greppable `trace` line for a transition (no trailing newline).
pub fn trace_line(t: &Transition, clock: &Clock) -> String {
    let who = match &t.task {
        Task::Kernel => "[kernel]".to_string(),
        Task::Process { pid, comm } => format!("{pid}/{comm}"),
    };
    let ns = format!("ns:{}", t.key.netns);
    let port = if t.key.l3mdev != 0 {
        format!("port {} vrf:{}", t.key.port, t.key.l3mdev)
    } else {
        format!("port {}", t.key.port)
    };
    let change = match (t.errno, t.change()) {
        (Some(e), _) if t.kind.is_failure() || t.kind == TransitionKind::LookupTruncated => {
            format!("{e:#}")
        }
        (_, Some((from, to))) => format!("{from} -> {to}"),
        _ => "-".to_string(),
    };
    let bucket = match (&t.after, t.kind.is_failure()) {
        (Some(a), false) => format!(
            "owners {}  (fr {}, frp {})",
            a.owners, a.fastreuse, a.fastreuseport
        ),
        (Some(a), true) => format!(
            "bucket fastreuse {} owners {} (frp {})",
            a.fastreuse, a.owners, a.fastreuseport
        ),
        (None, _) if t.kind == TransitionKind::LookupTruncated => {
            "unknown (hash chain walk cut short)".to_string()
        }
        (None, _) => "no bucket".to_string(),
    };
    let mut sock = Vec::new();
    if let Some(l) = &t.local {
        sock.push(format!("local {l}"));
    }
    if let Some(r) = &t.remote {
        sock.push(format!("remote {r}"));
    }
    sock.extend(sock_opts(&t.opts));
    sock.extend(bound_by(t.opts.connect_bound).map(str::to_owned));
    if let Some(r) = t.opts.local_port_range {
        sock.push(format!("range {r}"));
    }
    if let Some(a) = t.addr {
        sock.push(format!(
            "addr bucket fr {} frp {}",
            a.fastreuse, a.fastreuseport
        ));
    }
    if t.port_from_range {
        sock.push("(only port of the ephemeral range)".to_string());
    }
    if sock.is_empty() {
        sock.push("-".to_string());
    }
    if let Some(e) = &t.explanation {
        sock.push(format!("why: {}", super::explain::summary(e)));
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

/// Buckets a text resync line names before it says how many more there are.
const RESYNC_PORTS_SHOWN: usize = 32;

/// One `trace` line for a gap in the stream and its repair (no trailing newline), e.g.
/// `12:00:00.000  [kernel]  resync: 12 events lost, 1 program run skipped; re-read
/// ns:7 ports 80,443; 3 corrections follow (op rescan)`.
pub fn resync_line(r: &Resync, clock: &Clock) -> String {
    let what = match &r.reread {
        Reread::Ports(ports) if ports.is_empty() => "nothing to re-read".to_string(),
        Reread::Ports(ports) => {
            let mut groups: Vec<(u32, Vec<u16>)> = Vec::new();
            for &(netns, port) in ports.iter().take(RESYNC_PORTS_SHOWN) {
                match groups.last_mut() {
                    Some((ns, list)) if *ns == netns => list.push(port),
                    _ => groups.push((netns, vec![port])),
                }
            }
            let mut s = groups
                .iter()
                .map(|(ns, list)| {
                    let list: Vec<String> = list.iter().map(u16::to_string).collect();
                    format!(
                        "ns:{ns} port{} {}",
                        if list.len() == 1 { "" } else { "s" },
                        list.join(",")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            if ports.len() > RESYNC_PORTS_SHOWN {
                let _ = write!(s, " (+{} more)", ports.len() - RESYNC_PORTS_SHOWN);
            }
            format!("re-read {s}")
        }
        Reread::Scope { netns, ports } => {
            let ns = netns.map_or("every netns".to_string(), |n| format!("ns:{n}"));
            if ports.is_empty() {
                format!("re-read every bucket of {ns}")
            } else {
                let list: Vec<String> = ports.iter().map(u16::to_string).collect();
                format!("re-read ports {} of {ns}", list.join(","))
            }
        }
    };
    let plural = |n: u64| if n == 1 { "" } else { "s" };
    let mut line = format!(
        "{:<W_TIME$}  {:<W_WHO$}  resync: {} event{} lost, {} program run{} skipped; {what}; {} correction{} follow{} (op rescan)",
        clock.wall(r.ts_ns),
        "[kernel]",
        r.dropped,
        plural(r.dropped),
        r.skipped,
        plural(r.skipped),
        r.corrections,
        plural(r.corrections as u64),
        if r.corrections == 1 { "s" } else { "" },
    );
    if !r.complete {
        line.push_str("; INCOMPLETE: some bucket could not be read, its state may still be wrong");
    }
    line
}

/// One bucket transition as a quiz timeline line:
/// `port 60000 bucket_created fastreuse -1 owners 1 [127.0.0.1:60000]`.
pub fn timeline_line(t: &Transition) -> String {
    let mut s = format!("port {} {}", t.key.port, t.kind);
    if let Some((from, to)) = t.change() {
        let _ = write!(s, " {from} -> {to}");
    }
    if let (Some(e), true) = (
        t.errno,
        t.kind.is_failure() || t.kind == TransitionKind::LookupTruncated,
    ) {
        let _ = write!(s, " {e:#}");
    }
    match t.after {
        Some(info) => {
            let _ = write!(s, " fastreuse {} owners {}", info.fastreuse, info.owners);
            if info.fastreuseport != info.fastreuse {
                let _ = write!(s, " fastreuseport {}", info.fastreuseport);
            }
        }
        None if t.kind == TransitionKind::LookupTruncated => s.push_str(" (bucket state unknown)"),
        None if t.kind != TransitionKind::BucketDestroyed => s.push_str(" (no bucket)"),
        None => {}
    }
    match (&t.local, &t.remote) {
        (Some(l), Some(r)) => {
            let _ = write!(s, " [{l} -> {r}]");
        }
        (Some(l), None) => {
            let _ = write!(s, " [{l}]");
        }
        _ => {}
    }
    s
}

/// The differences between two states of a bucket, e.g. `fastreuse 0→-1, owners 2→1`.
fn state_change(old: &BucketInfo, new: &BucketInfo) -> String {
    let mut parts: Vec<String> = Vec::new();
    if old.fastreuse != new.fastreuse {
        parts.push(format!("fastreuse {}→{}", old.fastreuse, new.fastreuse));
    }
    if old.fastreuseport != new.fastreuseport {
        parts.push(format!(
            "fastreuseport {}→{}",
            old.fastreuseport, new.fastreuseport
        ));
    }
    if old.owners != new.owners {
        parts.push(format!("owners {}→{}", old.owners, new.owners));
    }
    parts.join(", ")
}

/// What a transition did to its bucket, in a few words, e.g. `fastreuse -1→0 (bind)`,
/// `owners 1→2 (connect)`, `bind failed EADDRINUSE (nc)`. A correction found by a
/// rescan ([`crate::model::Op::Rescan`]) is described as the whole difference of its
/// bucket: `fastreuse 0→-1, owners 2→1 (rescan)`, `appeared (rescan)`.
pub fn describe(t: &Transition) -> String {
    let op = t.op;
    if op == crate::model::Op::Rescan {
        return match (&t.before, &t.after) {
            (None, _) => "appeared (rescan)".to_owned(),
            (Some(_), None) => "gone (rescan)".to_owned(),
            (Some(b), Some(a)) => format!("{} (rescan)", state_change(b, a)),
        };
    }
    let owners_move = |what: &str| match (&t.before, &t.after) {
        (Some(o), Some(a)) => format!("owners {}→{} ({op})", o.owners, a.owners),
        _ => format!("{what} ({op})"),
    };
    let field_move = |name: &str, field: fn(&BucketInfo) -> crate::model::Fastreuse| match (
        t.before.as_ref().map(field),
        t.after.as_ref().map(field),
    ) {
        (Some(f), Some(v)) => format!("{name} {f}→{v} ({op})"),
        (None, Some(v)) => format!("{name} →{v} ({op})"),
        _ => format!("{name} changed ({op})"),
    };
    match t.kind {
        TransitionKind::BucketCreated => match t.after {
            Some(a) => format!("created {}/{} ({op})", a.fastreuse, a.fastreuseport),
            None => format!("created ({op})"),
        },
        TransitionKind::OwnerAdded => owners_move("owner added"),
        TransitionKind::OwnerRemoved => owners_move("owner removed"),
        TransitionKind::FastreuseChanged => field_move("fastreuse", |i| i.fastreuse),
        TransitionKind::FastreuseportChanged => field_move("fastreuseport", |i| i.fastreuseport),
        TransitionKind::BucketDestroyed => format!("destroyed ({op})"),
        TransitionKind::BindFailed | TransitionKind::ConnectFailed => {
            let call = if t.kind == TransitionKind::BindFailed {
                "bind"
            } else {
                "connect"
            };
            let mut s = format!("{call} failed");
            if let Some(e) = t.errno {
                let _ = write!(s, " {e}");
            }
            if let Some(comm) = t.task.comm().filter(|c| !c.is_empty()) {
                let _ = write!(s, " ({comm})");
            }
            s
        }
        TransitionKind::LookupTruncated => match t.errno {
            Some(e) => format!("state unknown, lookup truncated ({op} failed {e})"),
            None => format!("state unknown, lookup truncated ({op})"),
        },
    }
}

/// One line of `top`'s recent-transitions pane: its age, the netns when `netns`, the
/// port, [`describe`], then who and which socket.
pub fn recent_line(t: &Transition, age_of: Duration, netns: bool) -> String {
    let mut s = format!("{:>6}  ", age(age_of));
    if netns {
        let _ = write!(s, "{:>10}  ", t.key.netns);
    }
    let _ = write!(s, ":{:<5}  {}", t.key.port, describe(t));
    if let Task::Process { pid, comm } = &t.task {
        let _ = write!(s, "  pid {pid} {comm}");
    }
    match (&t.local, &t.remote) {
        (Some(l), Some(r)) => {
            let _ = write!(s, "  {l} → {r}");
        }
        (Some(l), None) => {
            let _ = write!(s, "  {l}");
        }
        (None, Some(r)) => {
            let _ = write!(s, "  → {r}");
        }
        (None, None) => {}
    }
    if let Some(o) = sock_opts(&t.opts) {
        let _ = write!(s, "  {o}");
    }
    if t.port_from_range {
        s.push_str("  (only port of the range)");
    }
    if let Some(e) = &t.explanation {
        let _ = write!(s, "  why: {}", super::explain::summary(e));
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{
        model::{BucketKey, Errno, Fastreuse, Op, OwnerCount},
        render::time::tests::clock,
    };

    fn info(fr: i8, frp: i8, owners: u32) -> BucketInfo {
        BucketInfo {
            fastreuse: Fastreuse(fr),
            fastreuseport: Fastreuse(frp),
            owners: OwnerCount::exact(owners),
        }
    }

    pub(crate) fn fr_changed() -> Transition {
        Transition {
            ts_ns: 5_347_000_000,
            kind: TransitionKind::FastreuseChanged,
            op: Op::Bind,
            key: BucketKey {
                netns: 4026532290,
                l3mdev: 0,
                port: 60000,
            },
            before: Some(info(-1, -1, 1)),
            after: Some(info(0, -1, 2)),
            errno: None,
            task: Task::Process {
                pid: 4242,
                comm: "python3".into(),
            },
            local: Some("127.2.2.2:60000".parse().expect("literal")),
            remote: None,
            opts: SockOpts {
                reuseaddr: true,
                ..Default::default()
            },
            port_from_range: false,
            explanation: None,
            addr: None,
        }
    }

    pub(crate) fn connect_failed() -> Transition {
        Transition {
            kind: TransitionKind::ConnectFailed,
            op: Op::Connect,
            before: Some(info(0, -1, 1)),
            after: Some(info(0, -1, 1)),
            errno: Errno::new(99),
            local: Some("127.0.0.1:60000".parse().expect("literal")),
            remote: Some("127.9.9.9:1234".parse().expect("literal")),
            opts: SockOpts::default(),
            port_from_range: true,
            ..fr_changed()
        }
    }

    pub(crate) fn destroyed() -> Transition {
        Transition {
            kind: TransitionKind::BucketDestroyed,
            op: Op::Close,
            before: Some(info(0, -1, 1)),
            after: None,
            local: None,
            opts: SockOpts::default(),
            ..fr_changed()
        }
    }

    #[test]
    fn a_truncated_lookup_says_the_state_is_unknown() {
        let t = Transition {
            kind: TransitionKind::LookupTruncated,
            op: Op::Bind,
            before: Some(info(0, -1, 1)),
            after: None,
            errno: Errno::new(98),
            ..fr_changed()
        };
        let l = trace_line(&t, &clock());
        for part in [
            "  lookup_truncated  ",
            "EADDRINUSE (98)",
            "unknown (hash chain walk cut short)",
        ] {
            assert!(l.contains(part), "missing {part:?} in {l}");
        }
        assert!(!l.contains("no bucket"), "{l}");
        let tl = timeline_line(&t);
        assert!(
            tl.contains("(bucket state unknown)") && tl.contains("EADDRINUSE"),
            "{tl}"
        );
        assert_eq!(
            describe(&t),
            "state unknown, lookup truncated (bind failed EADDRINUSE)"
        );
    }

    #[test]
    fn trace_line_changed() {
        let l = trace_line(&fr_changed(), &clock());
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
    fn trace_line_failure_and_destroyed() {
        let l = trace_line(&connect_failed(), &clock());
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
        let l = trace_line(&destroyed(), &clock());
        assert!(l.contains("bucket_destroyed"), "{l}");
        assert!(l.contains("no bucket"), "{l}");
        assert!(!l.contains("local"), "{l}");
        assert!(l.ends_with("  -"), "{l}");
    }

    #[test]
    fn trace_columns_align_with_header() {
        let h = trace_header();
        let c = clock();
        let mut kernel = destroyed();
        kernel.task = Task::Kernel;
        let lines = [
            trace_line(&fr_changed(), &c),
            trace_line(&connect_failed(), &c),
            trace_line(&destroyed(), &c),
            trace_line(&kernel, &c),
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
        assert!(lines[3].contains("  [kernel]  "), "{}", lines[3]);
    }

    #[test]
    fn trace_line_vrf_truncated_and_plus_one() {
        let mut t = fr_changed();
        t.key.l3mdev = 7;
        if let Some(a) = t.after.as_mut() {
            a.owners.truncated = true;
            a.fastreuse = Fastreuse(1);
        }
        let l = trace_line(&t, &clock());
        assert!(l.contains("port 60000 vrf:7"), "{l}");
        assert!(l.contains("owners ≥2"), "{l}");
        assert!(l.contains("-1 -> +1"), "{l}");
        assert!(l.contains("(fr +1, frp -1)"), "{l}");
    }

    fn tl(kind: TransitionKind, after: Option<(i8, u32)>) -> Transition {
        Transition {
            ts_ns: 1,
            kind,
            op: Op::Connect,
            key: BucketKey {
                netns: 4026532000,
                l3mdev: 0,
                port: 60000,
            },
            before: None,
            after: after.map(|(f, o)| info(f, f, o)),
            errno: None,
            task: Task::Process {
                pid: 7,
                comm: "portwatch".into(),
            },
            local: None,
            remote: None,
            opts: SockOpts::default(),
            port_from_range: false,
            explanation: None,
            addr: None,
        }
    }

    #[test]
    fn timeline_lines() {
        assert_eq!(
            timeline_line(&tl(TransitionKind::BucketCreated, Some((-1, 1)))),
            "port 60000 bucket_created fastreuse -1 owners 1"
        );
        let mut t = tl(TransitionKind::FastreuseChanged, Some((0, 2)));
        t.before = Some(info(1, 0, 2));
        t.local = Some("127.2.2.2:60000".parse().expect("literal"));
        assert_eq!(
            timeline_line(&t),
            "port 60000 fastreuse_changed +1 -> 0 fastreuse 0 owners 2 [127.2.2.2:60000]"
        );
        let mut f = tl(TransitionKind::ConnectFailed, Some((0, 1)));
        f.errno = Errno::new(99);
        assert!(timeline_line(&f).starts_with("port 60000 connect_failed EADDRNOTAVAIL (99)"));
        assert_eq!(
            timeline_line(&tl(TransitionKind::BucketDestroyed, None)),
            "port 60000 bucket_destroyed"
        );
        let mut trunc = tl(TransitionKind::OwnerAdded, Some((0, 64)));
        if let Some(a) = trunc.after.as_mut() {
            a.owners.truncated = true;
        }
        assert!(
            timeline_line(&trunc).ends_with("owners ≥64"),
            "{}",
            timeline_line(&trunc)
        );
    }

    fn tr(
        kind: TransitionKind,
        op: Op,
        before: Option<BucketInfo>,
        after: Option<BucketInfo>,
    ) -> Transition {
        Transition {
            kind,
            op,
            before,
            after,
            task: Task::Process {
                pid: 42,
                comm: "nc".into(),
            },
            ..tl(kind, None)
        }
    }

    #[test]
    fn descriptions() {
        let created = tr(
            TransitionKind::BucketCreated,
            Op::Connect,
            None,
            Some(info(-1, -1, 1)),
        );
        assert_eq!(describe(&created), "created -1/-1 (connect)");
        let frp = tr(
            TransitionKind::FastreuseportChanged,
            Op::Listen,
            Some(info(0, -1, 1)),
            Some(info(0, 1, 1)),
        );
        assert_eq!(describe(&frp), "fastreuseport -1→+1 (listen)");
        let frp = Transition {
            before: Some(info(0, 0, 1)),
            ..frp
        };
        assert_eq!(describe(&frp), "fastreuseport 0→+1 (listen)");
        let frp = Transition {
            before: None,
            ..frp
        };
        assert_eq!(describe(&frp), "fastreuseport →+1 (listen)");
        let rm = tr(
            TransitionKind::OwnerRemoved,
            Op::Release,
            Some(info(0, -1, 2)),
            Some(info(0, -1, 1)),
        );
        assert_eq!(describe(&rm), "owners 2→1 (release)");
        let rm = Transition { before: None, ..rm };
        assert_eq!(describe(&rm), "owner removed (release)");
        let d = tr(TransitionKind::BucketDestroyed, Op::Timewait, None, None);
        assert_eq!(describe(&d), "destroyed (timewait)");
        let mut f = tr(
            TransitionKind::BindFailed,
            Op::Bind,
            None,
            Some(info(0, -1, 1)),
        );
        f.errno = Errno::new(-98);
        assert_eq!(describe(&f), "bind failed EADDRINUSE (nc)");
        f.kind = TransitionKind::ConnectFailed;
        f.errno = Errno::new(100000);
        f.task = Task::Kernel;
        assert_eq!(describe(&f), "connect failed errno 100000");
        let rescan = tr(
            TransitionKind::OwnerRemoved,
            Op::Rescan,
            Some(info(0, -1, 2)),
            Some(info(-1, -1, 1)),
        );
        assert_eq!(describe(&rescan), "fastreuse 0→-1, owners 2→1 (rescan)");
        let appeared = tr(
            TransitionKind::BucketCreated,
            Op::Rescan,
            None,
            Some(info(0, 0, 1)),
        );
        assert_eq!(describe(&appeared), "appeared (rescan)");
        let mut trunc = info(0, -1, 64);
        trunc.owners.truncated = true;
        let grew = tr(
            TransitionKind::OwnerAdded,
            Op::Rescan,
            Some(info(0, -1, 2)),
            Some(trunc),
        );
        assert_eq!(describe(&grew), "owners 2→≥64 (rescan)");
    }

    #[test]
    fn recent_lines() {
        let mut t = tr(
            TransitionKind::BucketCreated,
            Op::Connect,
            None,
            Some(info(-1, -1, 1)),
        );
        t.remote = Some("127.9.9.9:1234".parse().expect("literal"));
        t.port_from_range = true;
        t.key.port = 60000;
        assert_eq!(
            recent_line(&t, Duration::from_millis(1500), false),
            "  1.5s  :60000  created -1/-1 (connect)  pid 42 nc  → 127.9.9.9:1234  (only port of the range)"
        );
        t.task = Task::Kernel;
        t.opts.reuseaddr = true;
        t.local = Some("127.0.0.1:60000".parse().expect("literal"));
        let l = recent_line(&t, Duration::from_secs(42), true);
        assert!(l.starts_with("   42s  4026532000  :60000  created"), "{l}");
        assert!(!l.contains("pid"), "{l}");
        assert!(
            l.contains("  127.0.0.1:60000 → 127.9.9.9:1234  [REUSEADDR]"),
            "{l}"
        );
    }

    /// A failure carries its explanation into `top`'s recent pane and `trace`'s line,
    /// spelled by the one renderer.
    #[test]
    fn failures_carry_their_explanation() {
        use crate::{
            explain::connect::Verdict,
            model::{ConnectExplanation, Explanation},
        };
        let mut t = connect_failed();
        let e = Explanation::Connect(ConnectExplanation {
            verdict: Verdict::Eaddrnotavail,
            netns: 4026532290,
            source: "127.0.0.1".parse().expect("literal"),
            destination: "127.9.9.9:1234".parse().expect("literal"),
            range: (60000, 60000),
            reserved: 0,
            free: 0,
            shared_usable: 0,
            used_to_destination: 0,
            time_wait_reusable: 0,
            blocked: 1,
            usable_sometimes_skipped: 0,
            tw_reuse: 2,
            blocked_by: vec![],
            blocked_by_process: vec![],
            used_by: vec![],
            truncated: false,
        });
        let why = super::super::explain::summary(&e);
        t.explanation = Some(e);
        let l = recent_line(&t, Duration::from_secs(1), false);
        assert!(l.ends_with(&format!("  why: {why}")), "{l}");
        assert!(
            why.starts_with("EADDRNOTAVAIL: range 60000-60000, free 0"),
            "{why}"
        );
        let l = trace_line(&t, &clock());
        assert!(l.ends_with(&format!("  why: {why}")), "{l}");
        // Other transitions have none.
        assert!(!recent_line(&fr_changed(), Duration::from_secs(1), false).contains("why:"));
    }

    #[test]
    fn resync_line_names_the_loss_and_the_buckets_read_again() {
        let mut r = Resync {
            ts_ns: 1_000_000_000,
            dropped: 12,
            skipped: 1,
            reread: Reread::Ports(vec![(7, 80), (7, 443), (9, 22)]),
            complete: true,
            corrections: 3,
        };
        let line = resync_line(&r, &clock());
        assert!(line.contains("  [kernel]  "), "{line}");
        assert!(
            line.ends_with(
                "resync: 12 events lost, 1 program run skipped; re-read ns:7 ports 80,443; ns:9 port 22; 3 corrections follow (op rescan)"
            ),
            "{line}"
        );
        r.reread = Reread::Scope {
            netns: Some(7),
            ports: vec![],
        };
        r.corrections = 1;
        r.complete = false;
        let line = resync_line(&r, &clock());
        assert!(
            line.contains(
                "re-read every bucket of ns:7; 1 correction follows (op rescan); INCOMPLETE"
            ),
            "{line}"
        );
        r.reread = Reread::Ports((0..40).map(|p| (1, p)).collect());
        assert!(resync_line(&r, &clock()).contains("(+8 more)"));
    }
}
