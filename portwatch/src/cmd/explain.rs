//! `portwatch explain`: why a bind() or connect() fails. `bind` and `connect` explain
//! one call from the owners the kernel holds now; the hidden `selftest` runs the seeded,
//! generated cases against the running kernel through the same path (the VM matrix calls
//! it in every guest).
use std::{io::Write as _, process::ExitCode};

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use portwatch::{
    backend::SessionOptions,
    explain::{
        ask::{self, parse_endpoint, BindOpts, Target},
        judge::{self, Options},
        observe::observe,
        variant::{KernelVersion, Variant},
    },
    model::Explanation,
    netns::{resolve_netns, NetnsFilter},
    render,
};

#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[command(subcommand)]
    command: ExplainCommand,
}

const EXIT_NOTE: &str =
    "Exit status: 0 when the call would succeed now, 1 when it would fail, 2 when \
the request cannot be explained (unparsable or non-local address, link-local IPv6 without a \
scope, a namespace or pid that does not exist, missing privileges). Nothing is changed on the \
host: the owners, the port range and the reserved ports are read from the kernel by a lock-free \
walk of its bind table (a racy snapshot, like dump); whether the address is local is asked of the \
namespace by binding a UDP socket that takes no port and is closed at once, and without --from \
the source address is a route lookup (like `ip route get`). Needs CAP_BPF and CAP_PERFMON \
(root); with --netns of another namespace also CAP_SYS_ADMIN (setns) for those two questions.";

#[derive(Debug, Subcommand)]
enum ExplainCommand {
    /// Would a bind() of ADDR:PORT succeed now? The verdict (ok or EADDRINUSE), every
    /// owner of the port it conflicts with (address, state, options, pid/comm), the rule
    /// each one trips, and the changes that would make the bind succeed.
    #[command(after_help = EXIT_NOTE)]
    Bind(BindArgs),
    /// Would a connect() to DST:PORT find a local port now? The range in force
    /// (ip_local_port_range minus ip_local_reserved_ports), how many ports are free,
    /// shared by connect(), already used toward DST, or blocked by bind() (with the
    /// processes holding them), and the verdict (ok or EADDRNOTAVAIL).
    #[command(after_help = EXIT_NOTE)]
    Connect(ConnectArgs),
    /// Judge the rules engine by the running kernel: observe each dated rule, then run
    /// seeded, generated bind() and connect() cases in private network namespaces, each
    /// explained through `explain bind`/`explain connect` first (owners read from the
    /// kernel), then made; every verdict must equal what the kernel did (root; exit 1 on
    /// any disagreement).
    #[command(hide = true)]
    Selftest(SelftestArgs),
}

#[derive(Debug, Args)]
struct BindArgs {
    /// The address and port: IPv4:PORT, [IPv6]:PORT, [fe80::1%eth0]:PORT (a link-local
    /// address needs its interface), [::ffff:IPv4]:PORT for an IPv6 socket on a
    /// v4-mapped address.
    #[arg(value_name = "ADDR:PORT")]
    addr: String,
    /// The socket sets SO_REUSEADDR.
    #[arg(long)]
    reuseaddr: bool,
    /// The socket sets SO_REUSEPORT.
    #[arg(long)]
    reuseport: bool,
    /// The (IPv6) socket sets IPV6_V6ONLY.
    #[arg(long)]
    v6only: bool,
    /// The uid the socket would belong to (SO_REUSEPORT shares a port only within one
    /// uid). Default: yours.
    #[arg(long, value_name = "UID")]
    uid: Option<u32>,
    /// Network namespace: a PID, or a path such as /proc/PID/ns/net or /run/netns/NAME.
    /// Default: yours.
    #[arg(long, value_name = "PID|PATH")]
    netns: Option<String>,
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ConnectArgs {
    /// The destination: IPv4:PORT or [IPv6]:PORT.
    #[arg(value_name = "DST:PORT")]
    dst: String,
    /// The source address (as bound with IP_BIND_ADDRESS_NO_PORT). Default: the one
    /// routing picks toward DST in that namespace.
    #[arg(long, value_name = "IP")]
    from: Option<String>,
    /// Network namespace: a PID, or a path such as /proc/PID/ns/net or /run/netns/NAME.
    /// Default: yours.
    #[arg(long, value_name = "PID|PATH")]
    netns: Option<String>,
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct SelftestArgs {
    /// Seed of the case generator.
    #[arg(long, default_value_t = 20261201)]
    seed: u64,
    /// Number of generated bind() cases.
    #[arg(long, default_value_t = 300)]
    bind: usize,
    /// Number of generated connect() cases.
    #[arg(long, default_value_t = 100)]
    connect: usize,
    /// JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: ExplainArgs) -> Result<ExitCode> {
    match a.command {
        ExplainCommand::Bind(b) => bind(b),
        ExplainCommand::Connect(c) => connect(c),
        ExplainCommand::Selftest(s) => selftest(s),
    }
}

/// `--netns`: the caller's namespace by default; `all` makes no sense for one call.
fn target(spec: Option<&str>) -> Result<Target> {
    let spec = spec.unwrap_or("/proc/self/ns/net");
    match resolve_netns(spec).with_context(|| format!("--netns {spec}"))? {
        NetnsFilter::All => anyhow::bail!(
            "--netns all: explain answers for one network namespace; give a PID or a path"
        ),
        NetnsFilter::One { inode, path } => Ok(Target { inode, path }),
    }
}

fn rules() -> Result<Variant> {
    let version = KernelVersion::running().context("reading the kernel release")?;
    Ok(Variant::for_version(version))
}

/// Prints an explanation; exit 0 when the call would succeed, 1 when not.
fn report(e: &Explanation, json: bool) -> Result<ExitCode> {
    let text = if json {
        let mut v = match e {
            Explanation::Bind(b) => serde_json::to_string_pretty(b)?,
            Explanation::Connect(c) => serde_json::to_string_pretty(c)?,
        };
        v.push('\n');
        v
    } else {
        render::explain::text(e)
    };
    // `| head`: the reader left; the verdict still decides the exit status.
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(e).context("writing to stdout")
        }
        _ => {}
    }
    Ok(if e.verdict_name() == "ok" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn bind(a: BindArgs) -> Result<ExitCode> {
    let ep = parse_endpoint(&a.addr)?;
    let target = target(a.netns.as_deref())?;
    let v = rules()?;
    let mut session = super::open_session(&SessionOptions::default())?;
    let opts = BindOpts {
        reuseaddr: a.reuseaddr,
        reuseport: a.reuseport,
        v6only: a.v6only,
        uid: Some(a.uid.unwrap_or_else(|| nix::unistd::geteuid().as_raw())),
    };
    let e = ask::bind(&mut session, &target, &ep, opts, &v)?;
    report(&Explanation::Bind(e), a.json)
}

fn connect(a: ConnectArgs) -> Result<ExitCode> {
    let dst = parse_endpoint(&a.dst)?;
    let from = match &a.from {
        // A source address is an address without a port.
        Some(ip) => Some(parse_endpoint(&format!(
            "{}:0",
            if ip.contains(':') && !ip.starts_with('[') {
                format!("[{ip}]")
            } else {
                ip.clone()
            }
        ))?),
        None => None,
    };
    let target = target(a.netns.as_deref())?;
    let v = rules()?;
    let mut session = super::open_session(&SessionOptions::default())?;
    let e = ask::connect(&mut session, &target, &dst, from.as_ref(), &v)?;
    report(&Explanation::Connect(e), a.json)
}

fn selftest(a: SelftestArgs) -> Result<ExitCode> {
    let version = KernelVersion::running().context("reading the kernel release")?;
    let (variant, observations) =
        observe(version).context("observing the kernel's rules in a private netns")?;
    let table = Variant::for_version(version);
    let opts = Options {
        seed: a.seed,
        bind_cases: a.bind,
        connect_cases: a.connect,
    };
    let mut session = super::open_session(&SessionOptions::default())?;
    let started = std::time::Instant::now();
    let tally =
        judge::run(&opts, &variant, &mut session, |_| {}).context("running the generated cases")?;
    let secs = started.elapsed().as_secs_f64();
    let table_matches = variant == table;
    if a.json {
        let v = serde_json::json!({
            "kernel": version,
            "options": opts,
            "observations": observations,
            "table_matches": table_matches,
            "variant": variant,
            "tally": tally,
            "secs": (secs * 10.0).round() / 10.0,
        });
        println!("{}", serde_json::to_string(&v)?);
    } else {
        println!("kernel {version}");
        for o in &observations {
            println!(
                "  rule {:<28} observed {:<5} table {}",
                o.row, o.observed, o.expected
            );
        }
        println!("{}", tally.summary(opts.seed, secs));
        for d in &tally.disagreements {
            println!("DISAGREEMENT {}: {}", d.case, d.what);
        }
    }
    Ok(if tally.disagreements.is_empty() && table_matches {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
