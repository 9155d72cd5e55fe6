//! Runs quizzes and state checks with real sockets, each in a fresh private netns.

use std::{
    io,
    net::{Ipv4Addr, SocketAddrV4},
};

use anyhow::Context;
use socket2::{Domain, SockAddr, Socket, Type};

use super::{
    expect::{compare, compare_fastreuse, Call, Outcome, StateVerdict, Verdict},
    kernel_release,
    results::{
        Observed, QuizReport, QuizResult, SocketResult, StateCheckResult, StateStepResult,
        StatesReport, TimelineEntry,
    },
    scenarios::{
        Action, Quiz, Sock, SocketStep, StateCheck, LISTEN_PORT, QUIZZES, QUIZ_PORT,
        STATES_BASE_PORT, STATE_CHECKS,
    },
    Observer,
};
use crate::{
    model::{Errno, Transition},
    netns::PrivateNetns,
    sockopt,
};

#[derive(Debug, thiserror::Error)]
pub enum QuizError {
    #[error("unknown quiz id {id:?}; valid ids: {valid} (or \"all\")")]
    UnknownId { id: String, valid: String },
}

/// The quizzes selected by `ids` (empty or "all": every quiz), in the article's order.
pub fn select(ids: &[String]) -> Result<Vec<&'static Quiz>, QuizError> {
    if ids.is_empty() || ids.iter().any(|i| i.eq_ignore_ascii_case("all")) {
        return Ok(QUIZZES.iter().collect());
    }
    let valid = || QUIZZES.iter().map(|q| q.id).collect::<Vec<_>>().join(", ");
    let mut wanted = Vec::new();
    for id in ids {
        let id_norm = id.trim().trim_start_matches('#').to_ascii_lowercase();
        let q = QUIZZES
            .iter()
            .find(|q| q.id == id_norm)
            .ok_or_else(|| QuizError::UnknownId {
                id: id.clone(),
                valid: valid(),
            })?;
        if !wanted.iter().any(|w: &&Quiz| w.id == q.id) {
            wanted.push(q);
        }
    }
    wanted.sort_by_key(|q| QUIZZES.iter().position(|x| x.id == q.id));
    Ok(wanted)
}

/// Run the selected quizzes (empty: all), each in its own private netns with `lo` up, the
/// port range `60000 60000` and a listener on `0.0.0.0:1234`.
///
/// Errors only when nothing can run (unknown id, no privilege for namespaces); a quiz whose
/// setup fails is reported with its `error` set.
pub fn run_quizzes(ids: &[String], obs: &mut dyn Observer) -> anyhow::Result<QuizReport> {
    let selected = select(ids)?;
    let mut quizzes = Vec::with_capacity(selected.len());
    let mut pins = Vec::with_capacity(selected.len());
    for q in selected {
        quizzes.push(run_quiz(q, obs, &mut pins).with_context(|| format!("quiz {}", q.id))?);
    }
    drop(pins);
    Ok(QuizReport {
        kernel: kernel_release(),
        quizzes,
    })
}

/// Run the article's state-machine checks, each in its own private netns on its own port
/// (the port range set to that port), reading the bucket's fastreuse after every bind() and
/// connect() from `obs`.
pub fn run_states(obs: &mut dyn Observer) -> anyhow::Result<StatesReport> {
    let mut checks = Vec::with_capacity(STATE_CHECKS.len());
    let mut pins = Vec::with_capacity(STATE_CHECKS.len());
    for (i, c) in STATE_CHECKS.iter().enumerate() {
        let port = STATES_BASE_PORT + i as u16;
        checks.push(
            run_check(c, port, obs, &mut pins).with_context(|| format!("state check {}", c.id))?,
        );
    }
    drop(pins);
    Ok(StatesReport {
        kernel: kernel_release(),
        checks,
    })
}

/// Apply a socket option, bind() or connect() to an existing socket.
fn apply(sock: &Socket, action: Action, port_under_test: u16) -> io::Result<()> {
    match action {
        // Sockets are created by the replay, inside the private netns.
        Action::Socket => Ok(()),
        Action::ReuseAddr => sock.set_reuse_address(true),
        Action::BindAddressNoPort => sockopt::set_bind_address_no_port(sock),
        Action::Bind(a) => sock.bind(&SockAddr::from(a.resolve(port_under_test))),
        Action::Connect(a) => sock.connect(&SockAddr::from(a.resolve(port_under_test))),
        // Sockets are closed by the replay, which drops them.
        Action::Close => Ok(()),
    }
}

/// One replay (a quiz or a state check): a private netns, its observer, the listener and
/// two client sockets.
struct Replay<'o> {
    ns: PrivateNetns,
    obs: &'o mut dyn Observer,
    /// The single ephemeral port of this run.
    port: u16,
    listener: Option<Socket>,
    socks: [Option<Socket>; 2],
    failed: [Option<Outcome>; 2],
    timeline: Vec<TimelineEntry>,
    observer_error: Option<String>,
}

impl<'o> Replay<'o> {
    /// A fresh netns whose only ephemeral port is `port`. Its handle goes to `pins`: the
    /// caller keeps every namespace of a run alive until the run ends, so no two runs share
    /// an inode number (the kernel recycles the numbers of dead namespaces, and the
    /// observer tells namespaces apart by inode).
    fn open(
        port: u16,
        obs: &'o mut dyn Observer,
        pins: &mut Vec<std::fs::File>,
    ) -> anyhow::Result<Self> {
        let ns = PrivateNetns::with_port_range(port, port).with_context(|| {
            format!("creating a private network namespace with ip_local_port_range {port} {port}")
        })?;
        pins.push(
            ns.ns_file()
                .context("pinning the private network namespace")?,
        );
        let mut s = Replay {
            ns,
            obs,
            port,
            listener: None,
            socks: [None, None],
            failed: [None, None],
            timeline: Vec::new(),
            observer_error: None,
        };
        if let Err(e) = s.obs.watch(s.ns.inode()) {
            s.note_observer_error(format!("watch(netns {}): {e:#}", s.ns.inode()));
        }
        Ok(s)
    }

    fn note_observer_error(&mut self, msg: String) {
        if self.observer_error.is_none() {
            self.observer_error = Some(msg);
        }
    }

    /// Transitions since the last call on this run's ports, in this run's netns.
    fn collect(&mut self) -> Vec<Transition> {
        match self.obs.collect() {
            Ok(ts) => {
                let inode = self.ns.inode();
                ts.into_iter()
                    .filter(|t| {
                        t.key.netns == inode
                            && (t.key.port == self.port || t.key.port == LISTEN_PORT)
                    })
                    .collect()
            }
            Err(e) => {
                self.note_observer_error(format!("collect: {e:#}"));
                Vec::new()
            }
        }
    }

    fn record(&mut self, label: impl Into<String>) -> Vec<Transition> {
        let transitions = self.collect();
        self.timeline.push(TimelineEntry {
            label: label.into(),
            transitions: transitions.clone(),
        });
        transitions
    }

    /// The article's setup: a listener on *:1234 with listen(SOMAXCONN).
    fn listen(&mut self) -> anyhow::Result<()> {
        let l = self
            .ns
            .socket(Domain::IPV4, Type::STREAM, None)
            .context("creating the listener socket in the private netns")?;
        let addr = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, LISTEN_PORT);
        let r = l.bind(&SockAddr::from(addr));
        self.record("setup listener bind");
        r.with_context(|| format!("binding the listener to {addr}"))?;
        let r = l.listen(libc::SOMAXCONN);
        self.record("setup listen");
        r.context("listen(SOMAXCONN) on the listener")?;
        self.listener = Some(l);
        Ok(())
    }

    /// Run one step. `Ok(None)`: skipped because the socket failed earlier.
    /// `Ok(Some(Err(errno)))`: the syscall failed. `Err`: the netns itself failed.
    fn step(&mut self, step: &SocketStep) -> anyhow::Result<Option<Result<(), Errno>>> {
        let i = step.sock.index();
        if self.failed[i].is_some() {
            return Ok(None);
        }
        let res: io::Result<()> = match step.action {
            Action::Socket => match self.ns.socket(Domain::IPV4, Type::STREAM, None) {
                Ok(s) => {
                    self.socks[i] = Some(s);
                    Ok(())
                }
                Err(crate::netns::NetnsError::Io { source, .. }) => Err(source),
                Err(e) => return Err(e).context("creating a socket in the private netns"),
            },
            Action::Close => match self.socks[i].take() {
                Some(s) => {
                    drop(s);
                    Ok(())
                }
                None => anyhow::bail!("scenario bug: {} closed before socket()", step.sock.name()),
            },
            action => {
                let Some(sock) = self.socks[i].as_ref() else {
                    anyhow::bail!("scenario bug: {} used before socket()", step.sock.name());
                };
                apply(sock, action, self.port)
            }
        };
        let res = res.map_err(|e| Errno::of_io(&e));
        if let Err(errno) = res {
            self.failed[i] = Some(Outcome::Failed {
                call: step.action.call(),
                errno,
            });
        }
        Ok(Some(res))
    }

    /// What became of a socket after its steps.
    fn outcome(&self, sock: Sock) -> Outcome {
        let i = sock.index();
        if let Some(f) = self.failed[i] {
            return f;
        }
        let Some(s) = self.socks[i].as_ref() else {
            return Outcome::Failed {
                call: Call::Socket,
                errno: Errno::EBADF,
            };
        };
        let local = match s.local_addr().map(|a| a.as_socket_ipv4()) {
            Ok(Some(a)) => a,
            Ok(None) => {
                return Outcome::Failed {
                    call: Call::Getsockname,
                    errno: Errno::EAFNOSUPPORT,
                }
            }
            Err(e) => {
                return Outcome::Failed {
                    call: Call::Getsockname,
                    errno: Errno::of_io(&e),
                }
            }
        };
        match s.peer_addr().map(|a| a.as_socket_ipv4()) {
            Ok(Some(peer)) => Outcome::Connected { local, peer },
            _ => Outcome::Bound { local },
        }
    }

    /// The article's cleanup: the listener accepts the pending connections and closes them
    /// (so the server side holds TIME-WAIT), then the clients and the listener close.
    fn cleanup(&mut self) {
        let mut accepted = Vec::new();
        if let Some(l) = self.listener.as_ref() {
            if l.set_nonblocking(true).is_ok() {
                while let Ok((conn, _)) = l.accept() {
                    accepted.push(conn);
                }
            }
        }
        if !accepted.is_empty() {
            let n = accepted.len();
            self.record(format!("cleanup accept ({n} pending)"));
            drop(accepted);
            self.record(format!(
                "cleanup close accepted ({n}, server side TIME-WAIT)"
            ));
        }
        for sock in Sock::ALL {
            if let Some(s) = self.socks[sock.index()].take() {
                drop(s);
                self.record(format!("cleanup close {}", sock.name()));
            }
        }
        if let Some(l) = self.listener.take() {
            drop(l);
            self.record("cleanup close listener");
        }
    }
}

fn run_quiz(
    q: &'static Quiz,
    obs: &mut dyn Observer,
    pins: &mut Vec<std::fs::File>,
) -> anyhow::Result<QuizResult> {
    let mut result = QuizResult {
        id: q.id.to_owned(),
        kind: q.kind,
        title: q.title.to_owned(),
        notation: q.notation(),
        code: q.code(),
        netns: None,
        sockets: Vec::new(),
        verdict: Verdict::NotRun,
        timeline: Vec::new(),
        error: None,
        observer_error: None,
    };
    let mut s = Replay::open(QUIZ_PORT, obs, pins)?;
    result.netns = Some(s.ns.inode());
    let mut observed: [Option<Outcome>; 2] = [None, None];
    match s.listen() {
        Err(e) => result.error = Some(format!("setup failed: {e:#}")),
        Ok(()) => {
            let mut run_err = None;
            for step in q.steps {
                match s.step(step) {
                    Ok(Some(_)) => {
                        s.record(step.label());
                    }
                    Ok(None) => {}
                    Err(e) => {
                        run_err = Some(format!("{e:#}"));
                        break;
                    }
                }
            }
            match run_err {
                Some(e) => result.error = Some(e),
                None => {
                    for sock in Sock::ALL {
                        observed[sock.index()] = Some(s.outcome(sock));
                    }
                }
            }
        }
    }
    s.cleanup();
    result.sockets = Sock::ALL
        .iter()
        .map(|sock| {
            let exp = &q.expected[sock.index()];
            let obs = observed[sock.index()];
            SocketResult {
                socket: *sock,
                article: exp.outcome,
                observed: obs,
                verdict: compare(&exp.outcome, obs.as_ref()),
                why: exp.why.to_owned(),
            }
        })
        .collect();
    result.verdict = Verdict::combine(result.sockets.iter().map(|r| r.verdict));
    result.timeline = std::mem::take(&mut s.timeline);
    result.observer_error = s.observer_error.take();
    Ok(result)
}

fn run_check(
    c: &'static StateCheck,
    port: u16,
    obs: &mut dyn Observer,
    pins: &mut Vec<std::fs::File>,
) -> anyhow::Result<StateCheckResult> {
    let mut result = StateCheckResult {
        id: c.id.to_owned(),
        title: c.title.to_owned(),
        from: c.from,
        port,
        netns: None,
        notation: c.notation_at(port),
        steps: Vec::new(),
        error: None,
        observer_error: None,
    };
    let mut s = Replay::open(port, obs, pins)?;
    let inode = s.ns.inode();
    result.netns = Some(inode);
    if let Err(e) = s.listen() {
        result.error = Some(format!("setup failed: {e:#}"));
    } else {
        for st in c.steps {
            let step = &st.step;
            let mut r = StateStepResult {
                label: step.label(),
                code: step.code_at(Some(port)),
                call_errno: None,
                article: st.expect,
                observed: None,
                verdict: None,
                why: st.why.to_owned(),
                transitions: Vec::new(),
            };
            if result.error.is_some() {
                result.steps.push(r);
                continue;
            }
            match s.step(step) {
                Ok(Some(Ok(()))) => {}
                Ok(Some(Err(errno))) => {
                    r.call_errno = Some(errno);
                    result.error = Some(format!(
                        "{} failed: {errno:#}; the article's check expects it to succeed",
                        r.code
                    ));
                }
                Ok(None) => {}
                Err(e) => result.error = Some(format!("{e:#}")),
            }
            r.transitions = s.collect();
            if r.call_errno.is_none() && result.error.is_none() {
                if let Some(article) = st.expect {
                    let observed = match s.obs.bucket(inode, port) {
                        Ok(Some(info)) => Observed::Present { info },
                        Ok(None) => Observed::Absent,
                        Err(e) => Observed::Unavailable {
                            reason: format!("{e:#}"),
                        },
                    };
                    r.verdict = Some(match &observed {
                        // The observer positively saw no bucket where the article has one.
                        Observed::Absent => StateVerdict::Finding,
                        o => compare_fastreuse(article, o.fastreuse()),
                    });
                    r.observed = Some(observed);
                }
            }
            result.steps.push(r);
        }
    }
    s.cleanup();
    result.observer_error = s.observer_error.take();
    Ok(result)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::{
        model::{BucketInfo, BucketKey, Fastreuse, Op, OwnerCount, SockOpts, Task, TransitionKind},
        netns::{tests::root_or_skip, PORT_RANGE_SYSCTL},
        quiz::NullObserver,
    };

    #[test]
    fn select_ids() {
        assert_eq!(select(&[]).unwrap().len(), 11);
        assert_eq!(select(&["all".into()]).unwrap().len(), 11);
        let ids: Vec<_> = select(&["8".into(), "3fix".into(), "#3".into(), "8".into()])
            .unwrap()
            .iter()
            .map(|q| q.id)
            .collect();
        assert_eq!(ids, ["3", "3fix", "8"]);
        let e = select(&["9".into()]).unwrap_err().to_string();
        assert!(e.contains("unknown quiz id \"9\""), "{e}");
        assert!(
            e.contains("1, 2, 3, 3fix, 4, 5, 5fix, 6, 6fix, 7, 8"),
            "{e}"
        );
    }

    #[test]
    fn unknown_id_fails_before_any_namespace() {
        // Works without root: the id is checked first.
        let e = run_quizzes(&["nine".into()], &mut NullObserver).unwrap_err();
        assert!(format!("{e:#}").contains("valid ids"), "{e:#}");
    }

    /// The host's range, before and after, is unchanged; every quiz matches the article on
    /// this kernel; each quiz ran in its own netns.
    #[test]
    fn all_quizzes_match_the_article_in_private_netns() {
        if !root_or_skip("all_quizzes_match_the_article_in_private_netns") {
            return;
        }
        let host_before = std::fs::read_to_string(PORT_RANGE_SYSCTL).unwrap();
        let host_ns = crate::netns::current_netns_inode().unwrap();
        let report = run_quizzes(&[], &mut NullObserver).unwrap();
        assert_eq!(
            std::fs::read_to_string(PORT_RANGE_SYSCTL).unwrap(),
            host_before
        );
        assert_eq!(report.quizzes.len(), 11);
        assert!(
            report.all_ran(),
            "{:#?}",
            report.quizzes.iter().map(|q| &q.error).collect::<Vec<_>>()
        );
        for q in &report.quizzes {
            for s in &q.sockets {
                assert_eq!(
                    s.verdict,
                    Verdict::Same,
                    "quiz {} {}: article {} observed {:?}",
                    q.id,
                    s.socket.name(),
                    s.article,
                    s.observed
                );
            }
        }
        assert!(report.differences().is_empty());
        assert_eq!(
            report.matching(crate::quiz::scenarios::QuizKind::Quiz),
            (8, 8)
        );
        assert_eq!(
            report.matching(crate::quiz::scenarios::QuizKind::Fix),
            (3, 3)
        );
        let inodes: HashSet<u32> = report.quizzes.iter().map(|q| q.netns.unwrap()).collect();
        assert_eq!(inodes.len(), 11, "each quiz has its own netns");
        assert!(!inodes.contains(&host_ns));
        let text = crate::render::quiz::render_quizzes(&report);
        println!("{text}");
        assert!(
            text.trim_end()
                .ends_with("8/8 quizzes match the article; 3/3 fixes work"),
            "{text}"
        );
        // NullObserver: the timeline has labels but no transitions.
        assert!(report.quizzes[0]
            .timeline
            .iter()
            .all(|t| t.transitions.is_empty()));
        assert!(report.quizzes[0]
            .timeline
            .iter()
            .any(|t| t.label == "s1 connect"));
    }

    /// An observer that replays a scripted kernel: checks the runner's wiring (watch once,
    /// collect after each step, bucket() after each checked step, netns/port filtering).
    struct Scripted {
        watched: Vec<u32>,
        collects: usize,
        netns: u32,
        /// fastreuse the fake kernel reports for any bucket query.
        fastreuse: i8,
    }

    impl Observer for Scripted {
        fn watch(&mut self, netns: u32) -> anyhow::Result<()> {
            self.watched.push(netns);
            self.netns = netns;
            Ok(())
        }
        fn collect(&mut self) -> anyhow::Result<Vec<Transition>> {
            self.collects += 1;
            let t = |netns: u32, port: u16| Transition {
                ts_ns: self.collects as u64,
                kind: TransitionKind::OwnerAdded,
                op: Op::Bind,
                key: BucketKey {
                    netns,
                    l3mdev: 0,
                    port,
                },
                before: None,
                after: Some(BucketInfo {
                    fastreuse: Fastreuse(0),
                    fastreuseport: Fastreuse(-1),
                    owners: OwnerCount::exact(1),
                }),
                errno: None,
                task: Task::Process {
                    pid: 1,
                    comm: "t".into(),
                },
                local: None,
                remote: None,
                opts: SockOpts::default(),
                port_from_range: false,
                explanation: None,
                addr: None,
            };
            // One transition of ours, one of another netns, one of an unrelated port.
            Ok(vec![
                t(self.netns, 1234),
                t(self.netns + 1, 1234),
                t(self.netns, 22),
            ])
        }
        fn bucket(&mut self, netns: u32, _port: u16) -> anyhow::Result<Option<BucketInfo>> {
            assert_eq!(netns, self.netns);
            Ok(Some(BucketInfo {
                fastreuse: Fastreuse(self.fastreuse),
                fastreuseport: Fastreuse(-1),
                owners: OwnerCount::exact(1),
            }))
        }
    }

    #[test]
    fn runner_wires_the_observer() {
        if !root_or_skip("runner_wires_the_observer") {
            return;
        }
        let mut obs = Scripted {
            watched: vec![],
            collects: 0,
            netns: 0,
            fastreuse: 0,
        };
        let report = run_quizzes(&["3".into()], &mut obs).unwrap();
        let q = &report.quizzes[0];
        assert_eq!(obs.watched, vec![q.netns.unwrap()]);
        // Every timeline entry kept only the transition of its own netns and ports.
        assert!(!q.timeline.is_empty());
        for e in &q.timeline {
            assert_eq!(e.transitions.len(), 1, "{}", e.label);
            assert_eq!(e.transitions[0].key.netns, q.netns.unwrap());
        }
        let labels: Vec<&str> = q.timeline.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(
            &labels[..7],
            [
                "setup listener bind",
                "setup listen",
                "s1 socket",
                "s1 bind",
                "s1 connect",
                "s2 socket",
                "s2 connect"
            ]
        );
        assert!(labels.contains(&"cleanup accept (1 pending)"), "{labels:?}");
        assert!(labels.contains(&"cleanup close s2"), "{labels:?}");

        // States: a fake kernel that always says 0 makes exactly the steps expecting -1 or +1
        // findings.
        let mut obs = Scripted {
            watched: vec![],
            collects: 0,
            netns: 0,
            fastreuse: 0,
        };
        let states = run_states(&mut obs).unwrap();
        assert!(
            states.all_ran(),
            "{:#?}",
            states.checks.iter().map(|c| &c.error).collect::<Vec<_>>()
        );
        assert_eq!(obs.watched.len(), STATE_CHECKS.len());
        for c in &states.checks {
            for st in &c.steps {
                match st.article {
                    Some(a) => {
                        let want = if a == Fastreuse(0) {
                            StateVerdict::Same
                        } else {
                            StateVerdict::Finding
                        };
                        assert_eq!(st.verdict, Some(want), "{} {}", c.id, st.label);
                    }
                    None => assert_eq!(st.verdict, None),
                }
            }
        }
        let diff: Vec<&str> = states.differences().iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            diff,
            [
                "-1/connect",
                "-1/no-port-bind",
                "-1/bind",
                "-1/bind-release",
                "-1/reuseaddr-bind",
                "+1/reuseaddr-bind",
                "+1/bind"
            ]
        );
    }

    #[test]
    fn states_run_without_tracer_reports_not_observed() {
        if !root_or_skip("states_run_without_tracer_reports_not_observed") {
            return;
        }
        let host_before = std::fs::read_to_string(PORT_RANGE_SYSCTL).unwrap();
        let r = run_states(&mut NullObserver).unwrap();
        assert_eq!(
            std::fs::read_to_string(PORT_RANGE_SYSCTL).unwrap(),
            host_before
        );
        // Every syscall of every check succeeds on this kernel, as in the article.
        assert!(
            r.all_ran(),
            "{:#?}",
            r.checks.iter().map(|c| &c.error).collect::<Vec<_>>()
        );
        assert!(!r.observed());
        assert!(r.differences().is_empty());
        let ports: HashSet<u16> = r.checks.iter().map(|c| c.port).collect();
        assert_eq!(ports.len(), r.checks.len());
        let inodes: HashSet<u32> = r.checks.iter().map(|c| c.netns.unwrap()).collect();
        assert_eq!(inodes.len(), r.checks.len(), "each check has its own netns");
        let text = crate::render::quiz::render_states(&r);
        println!("{text}");
        assert!(
            text.trim_end()
                .ends_with("states: 9 checks ran, bucket states not observed (no tracer)"),
            "{text}"
        );
        for c in &r.checks {
            for st in c.steps.iter().filter(|s| s.article.is_some()) {
                assert_eq!(st.verdict, Some(StateVerdict::NotObserved));
                assert!(matches!(st.observed, Some(Observed::Unavailable { .. })));
            }
        }
    }
}
