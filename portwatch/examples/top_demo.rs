//! `portwatch top` driven by a fake, animated data source: no eBPF, no root.
//!
//! ```text
//! cargo run -p portwatch --example top_demo                  # the live TUI
//! cargo run -p portwatch --example top_demo -- --once        # one plain table
//! cargo run -p portwatch --example top_demo -- --interval 2 | cat   # plain, every 2 s
//! cargo run -p portwatch --example top_demo -- --panic-after 2  # the terminal survives a panic
//! ```
//!
//! The fake plays a loop of the article's story in one namespace with
//! `ip_local_port_range 60000 60009`: connect()s create buckets at -1, a plain bind()
//! moves one to 0, SO_REUSEADDR binds, failures with EADDRINUSE / EADDRNOTAVAIL, closes,
//! and TIME-WAIT sockets that expire silently (only a rescan notices them).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use portwatch::{
    model::{
        BucketInfo, BucketKey, BucketRow, Errno, Fastreuse, NetInfo, Op, OwnerCount, Scope,
        SeenBucket, Snapshot, SockOpts, SocketEvent, Task,
    },
    views::top::{run_top, TopOptions, TopSource},
};

const NETNS: u32 = 4026532999;
const RANGE: (u16, u16) = (60000, 60009);
const STEP: Duration = Duration::from_millis(400);

fn bucket(fastreuse: i8, owners: u32) -> BucketInfo {
    BucketInfo {
        fastreuse: Fastreuse(fastreuse),
        fastreuseport: Fastreuse(-1),
        owners: OwnerCount::exact(owners),
    }
}

/// A fake kernel: its buckets, and the events a tracer would have sent about them.
struct DemoSource {
    started: Instant,
    steps_done: u64,
    buckets: BTreeMap<u16, BucketInfo>,
    pending: Vec<SocketEvent>,
    rng: u64,
    /// Panic (inside `events`) this long after start: shows the panic hook restores
    /// the terminal.
    panic_after: Option<Duration>,
}

impl DemoSource {
    fn new() -> Self {
        let mut buckets = BTreeMap::new();
        buckets.insert(1234, bucket(0, 1));
        buckets.insert(22, bucket(0, 1));
        DemoSource {
            started: Instant::now(),
            steps_done: 0,
            buckets,
            pending: Vec::new(),
            rng: 0x9e37_79b9,
            panic_after: None,
        }
    }

    fn next_rand(&mut self, n: u64) -> u64 {
        // xorshift64: deterministic, good enough for a demo.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng % n
    }

    /// The event of `op` on `port` as the tracer reports it: the bucket after the call.
    fn emit(&mut self, op: Op, port: u16, errno: i32) {
        let comm = match op {
            Op::Connect => "curl",
            Op::Bind | Op::Listen => "quiz",
            _ => "demo",
        };
        let remote = (op == Op::Connect).then(|| {
            let r = 8 + (port % 2) as u8;
            SocketAddr::from(([127, r, r, r], 1234))
        });
        self.pending.push(SocketEvent {
            ts_ns: self.started.elapsed().as_nanos() as u64,
            op,
            netns: NETNS,
            port,
            bucket: self.buckets.get(&port).map(|&info| SeenBucket {
                id: 0,
                l3mdev: 0,
                info,
            }),
            errno: Errno::new(errno),
            had_port: op == Op::Close,
            task: Task::Process {
                pid: 4000 + u32::from(port % 100),
                comm: comm.to_owned(),
            },
            local: Some(SocketAddr::from(([127, 0, 0, 1], port))),
            remote,
            opts: SockOpts {
                reuseaddr: op == Op::Bind && port.is_multiple_of(2),
                ..SockOpts::default()
            },
            port_from_range: RANGE.0 == RANGE.1,
            net: 0,
            family: None,
            v6only: false,
            uid: None,
            bound_dev: 0,
            explanation: None,
            lookup_truncated: false,
            addr: None,
        });
    }

    /// One step of the story on a random port of the range.
    fn step(&mut self) {
        let port = RANGE.0 + self.next_rand(u64::from(RANGE.1 - RANGE.0) + 1) as u16;
        let action = self.next_rand(6);
        match (self.buckets.get(&port).copied(), action) {
            (None, 0..=3) => {
                self.buckets.insert(port, bucket(-1, 1));
                self.emit(Op::Connect, port, 0);
            }
            (None, _) => {
                self.buckets.insert(port, bucket(0, 1));
                self.emit(Op::Bind, port, 0);
            }
            (Some(b), 0 | 1) if b.fastreuse == Fastreuse(-1) => {
                self.bump(port, 1);
                self.emit(Op::Connect, port, 0);
            }
            (Some(b), 2) if b.fastreuse == Fastreuse(-1) => {
                // A plain bind() of another address: one more owner, -1 -> 0.
                self.bump(port, 1);
                if let Some(b) = self.buckets.get_mut(&port) {
                    b.fastreuse = Fastreuse(0);
                }
                self.emit(Op::Bind, port, 0);
            }
            (Some(_), 2) => self.emit(Op::Bind, port, libc::EADDRINUSE),
            (Some(b), 3) if b.fastreuse != Fastreuse(-1) => {
                self.emit(Op::Connect, port, libc::EADDRNOTAVAIL);
            }
            (Some(b), 4) if b.owners.n > 1 => {
                self.bump(port, -1);
                self.emit(Op::Close, port, 0);
            }
            (Some(_), 4) => {
                self.buckets.remove(&port);
                self.emit(Op::Close, port, 0);
            }
            (Some(_), _) => {
                // A TIME-WAIT socket expires: no syscall, no event; only a rescan sees it.
                if self.buckets.get(&port).is_some_and(|b| b.owners.n > 1) {
                    self.bump(port, -1);
                } else {
                    self.buckets.remove(&port);
                }
            }
        }
    }

    fn bump(&mut self, port: u16, delta: i32) {
        if let Some(b) = self.buckets.get_mut(&port) {
            b.owners.n = b.owners.n.saturating_add_signed(delta);
        }
    }

    fn advance(&mut self) {
        let due = self.started.elapsed().as_millis() / STEP.as_millis();
        while u128::from(self.steps_done) < due {
            self.step();
            self.steps_done += 1;
        }
    }
}

impl TopSource for DemoSource {
    fn snapshot(&mut self) -> anyhow::Result<Snapshot> {
        self.advance();
        Ok(Snapshot {
            buckets: self
                .buckets
                .iter()
                .map(|(&port, &info)| BucketRow {
                    key: BucketKey {
                        netns: NETNS,
                        l3mdev: 0,
                        port,
                    },
                    info,
                    addresses: Vec::new(),
                    fast: None,
                })
                .collect(),
            complete: true,
            owners_truncated: false,
            slots: 65536,
            ..Default::default()
        })
    }

    fn scope(&self) -> Scope {
        Scope {
            netns: Some(NETNS),
            port: None,
        }
    }

    fn events(&mut self) -> anyhow::Result<Vec<SocketEvent>> {
        if self
            .panic_after
            .is_some_and(|d| self.started.elapsed() >= d)
        {
            panic!("top_demo: deliberate panic (--panic-after) to check the terminal is restored");
        }
        self.advance();
        Ok(std::mem::take(&mut self.pending))
    }

    fn port_range(&mut self, netns: u32) -> anyhow::Result<NetInfo> {
        if netns != NETNS {
            bail!("the demo knows only netns {NETNS}, not {netns}");
        }
        Ok(NetInfo {
            netns,
            range: RANGE,
            reserved: vec![],
            tw_reuse: 0,
        })
    }

    fn header_netns(&self) -> u32 {
        NETNS
    }

    fn backend_summary(&self) -> String {
        "backend: demo (fake data, no eBPF)".to_owned()
    }

    fn dropped_events(&self) -> u64 {
        0
    }
}

fn main() -> anyhow::Result<()> {
    let mut src = DemoSource::new();
    let mut opts = TopOptions {
        netns_label: format!("{NETNS} (demo)"),
        ..TopOptions::default()
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--once" => opts.once = true,
            "--interval" => {
                let v = args
                    .next()
                    .context("--interval needs a number of seconds, e.g. --interval 2")?;
                let secs: f64 = v
                    .parse()
                    .with_context(|| format!("--interval {v}: not a number of seconds"))?;
                if !(0.1..=3600.0).contains(&secs) {
                    bail!("--interval {v}: use 0.1 to 3600 seconds");
                }
                opts.interval = Duration::from_secs_f64(secs);
            }
            "--panic-after" => {
                let v = args
                    .next()
                    .context("--panic-after needs a number of seconds")?;
                let secs: f64 = v
                    .parse()
                    .with_context(|| format!("--panic-after {v}: not a number of seconds"))?;
                src.panic_after = Some(Duration::from_secs_f64(secs.max(0.0)));
            }
            other => bail!(
                "unknown argument {other:?} (known: --once, --interval SECS, --panic-after SECS)"
            ),
        }
    }
    run_top(&mut src, &opts)
}
