//! Explanations as text: the report of `explain bind`/`explain connect` (verdict,
//! conflicting owners with their processes and rules, the changes that make the call
//! succeed; or the range and its counts), and the one-line summary `trace` and `top` add
//! to a failed bind/connect. JSON is the model's own serialisation
//! ([`crate::model::Explanation`]).

use std::fmt::Write as _;

use crate::{
    explain::bind::{Change, Fix, Path, Rule},
    model::{
        BindExplanation, Conflict, ConflictRule, ConnectExplanation, Explanation, Family,
        NamedOwner, TcpState,
    },
};

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// `pid 4242 python3 (fd 3)`, `pids 1 nginx, 7 nginx`, the TIME-WAIT note, or `no
/// process holds it`.
pub fn holders(o: &NamedOwner) -> String {
    if o.time_wait() {
        return "TIME-WAIT: no process, the kernel holds it until it expires".to_owned();
    }
    match o.holders.as_slice() {
        [] => "no process holds it (not accepted yet, or its file is closed)".to_owned(),
        [h] => format!("pid {} {} (fd {})", h.pid, h.comm, h.fd),
        many => {
            let list: Vec<String> = many
                .iter()
                .map(|h| format!("{} {} (fd {})", h.pid, h.comm, h.fd))
                .collect();
            format!("pids {}", list.join(", "))
        }
    }
}

/// `127.0.0.1:60000 ESTABLISHED -> 127.8.8.8:1234 [SO_REUSEADDR] uid 1000`.
pub fn owner(o: &NamedOwner) -> String {
    let mut s = match o.family {
        Family::Inet6 if o.local.is_ipv4() => {
            format!("[::ffff:{}]:{}", o.local.ip(), o.local.port())
        }
        _ => o.local.to_string(),
    };
    let _ = write!(s, " {}", o.state);
    if let Some(r) = o.remote {
        let _ = write!(s, " -> {r}");
    }
    let opts: Vec<&str> = [
        (o.reuseaddr, "SO_REUSEADDR"),
        (o.reuseport, "SO_REUSEPORT"),
        (o.v6only, "IPV6_V6ONLY"),
    ]
    .into_iter()
    .filter_map(|(on, n)| on.then_some(n))
    .collect();
    if !opts.is_empty() {
        let _ = write!(s, " [{}]", opts.join(","));
    }
    if let Some(u) = o.uid {
        let _ = write!(s, " uid {u}");
    }
    s
}

/// The rule a conflict trips, as a sentence.
pub fn rule(c: &Conflict, e: &BindExplanation) -> String {
    let cand = &e.candidate;
    let overlap = match c.rule {
        ConflictRule::SameAddress => "same address".to_owned(),
        ConflictRule::WildcardOverlap => {
            if cand.local.ip().is_unspecified() {
                format!(
                    "wildcard overlap: {} covers {}",
                    cand.local.ip(),
                    c.owner.local.ip()
                )
            } else {
                format!(
                    "wildcard overlap: {} covers {}",
                    c.owner.local.ip(),
                    cand.local.ip()
                )
            }
        }
        ConflictRule::DualStackOverlap => {
            "dual-stack overlap: IPv4 and IPv6 ([::] without IPV6_V6ONLY, or a v4-mapped address)"
                .to_owned()
        }
        ConflictRule::ReuseaddrOwnerListening => {
            return "both set SO_REUSEADDR, but the owner is listening: SO_REUSEADDR never shares \
                    with a listener"
                .to_owned()
        }
        ConflictRule::ReuseportOtherUid => {
            return match c.sharing {
                Rule::ReuseportOtherUid {
                    candidate_uid,
                    owner_uid,
                } if candidate_uid != u32::MAX => format!(
                "both set SO_REUSEPORT, but SO_REUSEPORT shares only within one uid: the owner's \
                     is {owner_uid}, this socket's {candidate_uid}"
            ),
                Rule::ReuseportOtherUid { owner_uid, .. } => format!(
                "both set SO_REUSEPORT, but SO_REUSEPORT shares only within one uid: the owner's \
                     is {owner_uid}, this socket's is not known"
            ),
                _ => "SO_REUSEPORT shares only within one uid".to_owned(),
            }
        }
    };
    match c.sharing {
        Rule::NotShared {
            candidate_reuseaddr,
            owner_reuseaddr,
            candidate_reuseport,
            owner_reuseport,
        } => format!(
            "{overlap}, and the two do not share the port (SO_REUSEADDR: this {}, owner {}; \
             SO_REUSEPORT: this {}, owner {})",
            yes(candidate_reuseaddr),
            yes(owner_reuseaddr),
            yes(candidate_reuseport),
            yes(owner_reuseport)
        ),
        _ => overlap,
    }
}

fn change_words(c: &Change) -> String {
    let mut parts: Vec<String> = Vec::new();
    if c.reuseaddr {
        parts.push("SO_REUSEADDR".into());
    }
    if c.reuseport {
        parts.push("SO_REUSEPORT".into());
    }
    if c.v6only {
        parts.push("IPV6_V6ONLY".into());
    }
    let mut s = parts.join(" and ");
    if let Some(u) = c.uid {
        if s.is_empty() {
            s = format!("the socket created as uid {u}");
        } else {
            s.push_str(&format!(", the socket created as uid {u}"));
        }
    }
    s
}

/// A fix as a sentence.
pub fn fix(f: &Fix, e: &BindExplanation) -> String {
    match f {
        Fix::Candidate { change } if change.reuseaddr || change.reuseport || change.v6only => {
            format!("set {} on the new socket", change_words(change))
        }
        Fix::Candidate { change } => match change.uid {
            Some(u) => format!(
                "create the new socket as uid {u} (SO_REUSEPORT shares only within one uid)"
            ),
            None => change_words(change),
        },
        Fix::CandidateAndOwners { change } => {
            let pids: Vec<String> = e
                .conflicts
                .iter()
                .flat_map(|c| {
                    c.owner
                        .holders
                        .iter()
                        .map(|h| format!("{} {}", h.pid, h.comm))
                })
                .collect();
            let restart = if pids.is_empty() {
                String::new()
            } else {
                format!(" (restart {})", pids.join(", "))
            };
            let already = (!change.reuseaddr || e.candidate.reuseaddr)
                && (!change.reuseport || e.candidate.reuseport);
            format!(
                "set {} on {} conflicting owner{}{restart}",
                change_words(change),
                if already {
                    "the"
                } else {
                    "the new socket and on the"
                },
                if e.conflicts.len() > 1 { "s" } else { "" }
            )
        }
        Fix::WaitForTimeWait => {
            "wait: every conflict is a TIME-WAIT socket, gone within 60 s".to_owned()
        }
    }
}

/// The report of `explain bind`.
pub fn bind_text(e: &BindExplanation) -> String {
    let mut s = format!(
        "bind {} (netns {}): {}\n",
        match e.candidate.family {
            Family::Inet6 if e.candidate.local.is_ipv4() =>
                format!("[::ffff:{}]:{}", e.candidate.local.ip(), e.port),
            _ => e.candidate.local.to_string(),
        },
        e.netns,
        e.verdict.name()
    );
    let opts: Vec<&str> = [
        (e.candidate.reuseaddr, "SO_REUSEADDR"),
        (e.candidate.reuseport, "SO_REUSEPORT"),
        (e.candidate.v6only, "IPV6_V6ONLY"),
    ]
    .into_iter()
    .filter_map(|(on, n)| on.then_some(n))
    .collect();
    let _ = writeln!(
        s,
        "  socket options: {}{}",
        if opts.is_empty() {
            "none".to_owned()
        } else {
            opts.join(", ")
        },
        e.candidate
            .uid
            .map_or(String::new(), |u| format!("; uid {u}"))
    );
    if let Some(why) = &e.invalid {
        let _ = writeln!(s, "  {why}");
        return s;
    }
    let _ = writeln!(
        s,
        "  port {} has {} owner{}{}",
        e.port,
        e.owners,
        if e.owners == 1 { "" } else { "s" },
        if e.truncated {
            " (walk cut short: more may exist)"
        } else {
            ""
        }
    );
    match e.path {
        Path::FastReuse => {
            let _ = writeln!(
                s,
                "  ok by the bucket's fast path: fastreuse is +1 and this socket sets SO_REUSEADDR, \
                 so the kernel compares no owner"
            );
        }
        Path::FastReuseport => {
            let _ = writeln!(
                s,
                "  ok by the bucket's fast path: fastreuseport matches this socket's uid (and \
                 address), so the kernel compares no owner"
            );
        }
        _ => {}
    }
    if !e.bypassed.is_empty() {
        let _ = writeln!(
            s,
            "  owners the full check would refuse, skipped by the fast path:"
        );
        for c in &e.bypassed {
            conflict_lines(&mut s, c, e);
        }
    }
    if e.conflicts.is_empty() {
        return s;
    }
    let _ = writeln!(s, "  conflicts with:");
    for c in &e.conflicts {
        conflict_lines(&mut s, c, e);
    }
    if !e.fixes.is_empty() {
        let _ = writeln!(s, "  the bind succeeds if you:");
        for f in &e.fixes {
            let _ = writeln!(s, "    - {}", fix(f, e));
        }
    }
    s
}

fn conflict_lines(s: &mut String, c: &Conflict, e: &BindExplanation) {
    let _ = writeln!(s, "    {}  {}", owner(&c.owner), holders(&c.owner));
    let _ = writeln!(s, "      rule: {}", rule(c, e));
}

/// The report of `explain connect`.
pub fn connect_text(e: &ConnectExplanation) -> String {
    let mut s = format!(
        "connect to {} from {} (netns {}): {}\n",
        e.destination,
        e.source,
        e.netns,
        e.verdict.name()
    );
    let (lo, hi) = e.range;
    let size = usize::from(hi.saturating_sub(lo)) + 1;
    let _ = writeln!(
        s,
        "  range {lo}-{hi} (ip_local_port_range): {size} port{}, {} reserved (ip_local_reserved_ports)",
        if size == 1 { "" } else { "s" },
        e.reserved
    );
    let _ = writeln!(
        s,
        "  free {}  shared by connect() and usable {}  used to {} already {}  blocked by bind() {}",
        e.free, e.shared_usable, e.destination, e.used_to_destination, e.blocked
    );
    if e.time_wait_reusable > 0 {
        let _ = writeln!(
            s,
            "  {} used only by TIME-WAIT sockets tcp_tw_reuse={} lets connect() take over",
            e.time_wait_reusable, e.tw_reuse
        );
    }
    if e.usable_sometimes_skipped > 0 {
        let _ = writeln!(
            s,
            "  {} usable port{} at an end of an odd-sized range: some attempts skip {}",
            e.usable_sometimes_skipped,
            if e.usable_sometimes_skipped == 1 {
                ""
            } else {
                "s"
            },
            if e.usable_sometimes_skipped == 1 {
                "it"
            } else {
                "them"
            }
        );
    }
    if e.truncated {
        let _ = writeln!(s, "  (walk cut short: counts are lower bounds)");
    }
    if !e.blocked_by.is_empty() {
        let _ = writeln!(
            s,
            "  blocked ports (fastreuse/fastreuseport not -1: connect() never shares them):"
        );
        for h in &e.blocked_by {
            let _ = writeln!(
                s,
                "    {:<5}  fr {} frp {}  {}  {}{}",
                h.port,
                h.fastreuse,
                h.fastreuseport,
                owner(&h.owner),
                holders(&h.owner),
                if h.freed_by_closing {
                    "; closing it frees the port"
                } else {
                    ""
                }
            );
        }
        if e.blocked > e.blocked_by.len() {
            let _ = writeln!(s, "    ... ({} blocked ports in all)", e.blocked);
        }
    }
    if !e.blocked_by_process.is_empty() {
        let list: Vec<String> = e
            .blocked_by_process
            .iter()
            .map(|p| {
                format!(
                    "{} pid {} ({} port{})",
                    p.comm,
                    p.pid,
                    p.ports,
                    if p.ports == 1 { "" } else { "s" }
                )
            })
            .collect();
        let _ = writeln!(s, "  processes holding blocked ports: {}", list.join(", "));
    }
    if !e.used_by.is_empty() {
        let _ = writeln!(
            s,
            "  ports already connected from {} to {}:",
            e.source, e.destination
        );
        for h in &e.used_by {
            let _ = writeln!(
                s,
                "    {:<5}  {}  {}",
                h.port,
                owner(&h.owner),
                holders(&h.owner)
            );
        }
    }
    let fixes = connect_fixes(e);
    if !fixes.is_empty() {
        let _ = writeln!(s, "  the connect succeeds if you:");
        for f in fixes {
            let _ = writeln!(s, "    - {f}");
        }
    }
    s
}

/// What would give a refused connect() a port.
pub fn connect_fixes(e: &ConnectExplanation) -> Vec<String> {
    if e.verdict.name() == "ok" {
        return Vec::new();
    }
    let mut out = Vec::new();
    let connected_binders = e
        .blocked_by
        .iter()
        .any(|h| h.owner.remote.is_some() && h.owner.state != TcpState::Listen);
    if connected_binders {
        out.push(
            "make the sockets that bind() before connect() set IP_BIND_ADDRESS_NO_PORT: they then \
             take their port at connect() and leave the bucket shareable (-1)"
                .to_owned(),
        );
    }
    if e.blocked_by.iter().any(|h| h.freed_by_closing) {
        out.push("close a socket holding a blocked port (listed above)".to_owned());
    }
    if e.used_to_destination > 0 {
        out.push(format!(
            "connect from another source address, or to another destination: {} ports are already \
             used from {} to {}",
            e.used_to_destination, e.source, e.destination
        ));
    }
    out.push("widen net.ipv4.ip_local_port_range (or reserve fewer ports)".to_owned());
    out
}

/// `; the bucket changed before it was read (owners 1 at the failure, now gone)`.
pub fn drift(d: &crate::model::Drift) -> String {
    let side = |b: &Option<crate::model::BucketInfo>| match b {
        Some(i) => format!("owners {}, fastreuse {}", i.owners, i.fastreuse),
        None => "no bucket".to_owned(),
    };
    format!(
        "; the bucket changed before it could be read (at the failure: {}; read: {})",
        side(&d.at_failure),
        side(&d.when_read)
    )
}

/// The text report of either call.
pub fn text(e: &Explanation) -> String {
    match e {
        Explanation::Bind(b) => bind_text(b),
        Explanation::Connect(c) => connect_text(c),
    }
}

/// One line for `trace` and `top`: the verdict, the first conflicting owner with its
/// process and rule (and how many more), or the range counts.
pub fn summary(e: &Explanation) -> String {
    match e {
        Explanation::Bind(b) => match b.conflicts.first() {
            Some(c) => {
                let who = if c.owner.time_wait() {
                    "TIME-WAIT".to_owned()
                } else {
                    match (c.owner.pid, c.owner.comm.as_deref()) {
                        (Some(pid), Some(comm)) => format!("pid {pid} {comm}"),
                        _ => "no process".to_owned(),
                    }
                };
                let more = match b.conflicts.len() {
                    1 => String::new(),
                    n => format!(" (+{} more)", n - 1),
                };
                format!(
                    "{}: {} {} {who}, {}{more}",
                    b.verdict.name(),
                    c.owner.local,
                    c.owner.state,
                    c.rule.as_str()
                )
            }
            None => format!(
                "rules say {} now ({} owner{}){}",
                b.verdict.name(),
                b.owners,
                if b.owners == 1 { "" } else { "s" },
                b.drift.as_ref().map_or(String::new(), drift)
            ),
        },
        Explanation::Connect(c) => {
            let mut s = format!(
                "{}: range {}-{}, free {}, shared {}, used to dst {}, blocked {}, reserved {}",
                c.verdict.name(),
                c.range.0,
                c.range.1,
                c.free,
                c.shared_usable,
                c.used_to_destination,
                c.blocked,
                c.reserved
            );
            if let Some(p) = c.blocked_by_process.first() {
                let _ = write!(s, " (most by {} pid {})", p.comm, p.pid);
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::{
        explain::{
            bind::{Overlap, Verdict, Via},
            connect,
        },
        model::{Candidate, Fastreuse, Holder, PortHolder, ProcessPorts},
    };

    fn named(local: &str, state: TcpState, holders: Vec<Holder>) -> NamedOwner {
        NamedOwner {
            local: local.parse().unwrap(),
            family: Family::Inet,
            state,
            reuseaddr: false,
            reuseport: false,
            v6only: false,
            uid: (state != TcpState::TimeWait).then_some(0),
            inode: None,
            remote: None,
            pid: holders.first().map(|h| h.pid),
            comm: holders.first().map(|h| h.comm.clone()),
            holders,
        }
    }

    fn refused() -> BindExplanation {
        let nc = Holder {
            pid: 4242,
            comm: "python3".into(),
            fd: 3,
        };
        BindExplanation {
            verdict: Verdict::Eaddrinuse,
            port: 60000,
            netns: 7,
            candidate: Candidate {
                local: "127.0.0.1:60000".parse().unwrap(),
                family: Family::Inet,
                reuseaddr: false,
                reuseport: false,
                v6only: false,
                uid: Some(0),
            },
            path: Path::ConflictCheck,
            conflicts: vec![
                Conflict {
                    owner: named("127.0.0.1:60000", TcpState::Established, vec![nc]),
                    rule: ConflictRule::SameAddress,
                    overlap: Overlap::SameAddress,
                    sharing: Rule::NotShared {
                        candidate_reuseaddr: false,
                        owner_reuseaddr: false,
                        candidate_reuseport: false,
                        owner_reuseport: false,
                    },
                    via: Via::SameAddressBucket,
                },
                Conflict {
                    owner: named("127.0.0.1:60000", TcpState::TimeWait, vec![]),
                    rule: ConflictRule::SameAddress,
                    overlap: Overlap::SameAddress,
                    sharing: Rule::NotShared {
                        candidate_reuseaddr: false,
                        owner_reuseaddr: false,
                        candidate_reuseport: false,
                        owner_reuseport: false,
                    },
                    via: Via::SameAddressBucket,
                },
            ],
            bypassed: vec![],
            fixes: vec![Fix::CandidateAndOwners {
                change: Change {
                    reuseaddr: true,
                    ..Change::default()
                },
            }],
            invalid: None,
            owners: 2,
            truncated: false,
            drift: None,
        }
    }

    #[test]
    fn bind_report_names_owner_process_rule_and_fix() {
        let t = bind_text(&refused());
        for part in [
            "bind 127.0.0.1:60000 (netns 7): EADDRINUSE",
            "127.0.0.1:60000 ESTABLISHED uid 0  pid 4242 python3 (fd 3)",
            "rule: same address, and the two do not share the port",
            "TIME-WAIT: no process",
            "set SO_REUSEADDR on the new socket and on the conflicting owners (restart 4242 python3)",
        ] {
            assert!(t.contains(part), "missing {part:?} in\n{t}");
        }
        let one = summary(&Explanation::Bind(refused()));
        assert_eq!(
            one,
            "EADDRINUSE: 127.0.0.1:60000 ESTABLISHED pid 4242 python3, same_address (+1 more)"
        );
    }

    #[test]
    fn bind_json_has_the_issue_keys() {
        let v = serde_json::to_value(refused()).unwrap();
        assert_eq!(v["verdict"], "EADDRINUSE");
        assert_eq!(v["port"], 60000);
        let c = &v["conflicts"][0];
        assert_eq!(c["local"], "127.0.0.1:60000");
        assert_eq!(c["state"], "ESTABLISHED");
        assert_eq!(
            (c["reuseaddr"].as_bool(), c["reuseport"].as_bool()),
            (Some(false), Some(false))
        );
        assert_eq!(
            (c["pid"].as_u64(), c["comm"].as_str()),
            (Some(4242), Some("python3"))
        );
        assert_eq!(c["rule"], "same_address");
        let tw = &v["conflicts"][1];
        assert!(tw["pid"].is_null() && tw["comm"].is_null(), "{tw}");
        // Round trip through the tagged form trace --json carries.
        let e = Explanation::Bind(refused());
        let back: Explanation = serde_json::from_value(serde_json::to_value(&e).unwrap()).unwrap();
        assert_eq!(back, e);
    }

    fn exhausted() -> ConnectExplanation {
        let mut o = named(
            "127.1.1.1:60000",
            TcpState::Established,
            vec![Holder {
                pid: 9,
                comm: "client".into(),
                fd: 4,
            }],
        );
        o.remote = Some("127.9.9.9:1234".parse().unwrap());
        ConnectExplanation {
            verdict: connect::Verdict::Eaddrnotavail,
            netns: 7,
            source: "127.0.0.1".parse().unwrap(),
            destination: "127.9.9.9:1234".parse::<SocketAddr>().unwrap(),
            range: (60000, 60000),
            reserved: 0,
            free: 0,
            shared_usable: 0,
            used_to_destination: 0,
            time_wait_reusable: 0,
            blocked: 1,
            usable_sometimes_skipped: 0,
            tw_reuse: 2,
            blocked_by: vec![PortHolder {
                port: 60000,
                fastreuse: Fastreuse(0),
                fastreuseport: Fastreuse(0),
                owner: o,
                freed_by_closing: true,
            }],
            blocked_by_process: vec![ProcessPorts {
                pid: 9,
                comm: "client".into(),
                ports: 1,
            }],
            used_by: vec![],
            truncated: false,
        }
    }

    #[test]
    fn connect_report_and_json() {
        let t = connect_text(&exhausted());
        for part in [
            "connect to 127.9.9.9:1234 from 127.0.0.1 (netns 7): EADDRNOTAVAIL",
            "range 60000-60000 (ip_local_port_range): 1 port, 0 reserved",
            "free 0  shared by connect() and usable 0",
            "blocked by bind() 1",
            "60000  fr 0 frp 0  127.1.1.1:60000 ESTABLISHED -> 127.9.9.9:1234 uid 0  pid 9 client (fd 4); closing it frees the port",
            "IP_BIND_ADDRESS_NO_PORT",
        ] {
            assert!(t.contains(part), "missing {part:?} in\n{t}");
        }
        let v = serde_json::to_value(exhausted()).unwrap();
        assert_eq!(v["verdict"], "EADDRNOTAVAIL");
        assert_eq!(v["range"], serde_json::json!([60000, 60000]));
        for k in [
            "reserved",
            "free",
            "shared_usable",
            "used_to_destination",
            "blocked",
        ] {
            assert!(v[k].is_u64(), "{k}: {v}");
        }
        assert_eq!(v["blocked_by"][0]["pid"], 9);
        assert_eq!(
            summary(&Explanation::Connect(exhausted())),
            "EADDRNOTAVAIL: range 60000-60000, free 0, shared 0, used to dst 0, blocked 1, reserved 0 (most by client pid 9)"
        );
    }
}
