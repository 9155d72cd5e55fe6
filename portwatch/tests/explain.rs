//! `explain`, judged by the running kernel: seeded, generated bind() and connect() cases,
//! each in its own private network namespace (root). Each candidate call is explained
//! first through the command path of `explain bind`/`explain connect` (the owners read
//! from the kernel by the eBPF snapshot), then made, and every answer must agree.
//!
//! `PORTWATCH_JUDGE_SEED`, `PORTWATCH_JUDGE_BIND` and `PORTWATCH_JUDGE_CONNECT` change the
//! seed and the case counts.
mod common;

use common::require_root;
use portwatch::{
    backend::{ProbeSession, SessionOptions},
    explain::{
        judge::{self, Options},
        observe::observe,
        variant::{KernelVersion, Variant},
    },
};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn generated_cases_agree_with_the_kernel() {
    if !require_root("generated_cases_agree_with_the_kernel") {
        return;
    }
    let host_range =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").expect("host range");
    let host_reserved = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_reserved_ports")
        .expect("host reserved");
    let version = KernelVersion::running().expect("kernel release");
    // Each dated rule observed by its own experiment must match the table's row for this
    // release; the generated cases then run with the observed rules.
    let (variant, observations) = observe(version).unwrap_or_else(|e| panic!("observing the rules: {e}"));
    for o in &observations {
        eprintln!("row {}: observed {}, table says {}", o.row, o.observed, o.expected);
    }
    assert_eq!(variant, Variant::for_version(version), "the variant table's rows for {version} differ from what this kernel does: {observations:?}");
    let opts = Options {
        seed: env_or("PORTWATCH_JUDGE_SEED", 20261201),
        bind_cases: env_or("PORTWATCH_JUDGE_BIND", 300) as usize,
        connect_cases: env_or("PORTWATCH_JUDGE_CONNECT", 100) as usize,
    };
    let mut session = ProbeSession::open(&SessionOptions::default())
        .unwrap_or_else(|e| panic!("loading the snapshot program: {e}"));
    let started = std::time::Instant::now();
    let tally = judge::run(&opts, &variant, &mut session, |_| {})
        .unwrap_or_else(|e| panic!("judge run failed: {e}"));
    eprintln!(
        "kernel {version} (rows: {}): {}",
        variant.rows().map(|r| r.name).collect::<Vec<_>>().join(", "),
        tally.summary(opts.seed, started.elapsed().as_secs_f64())
    );
    for d in &tally.disagreements {
        eprintln!("DISAGREEMENT {}: {}", d.case, d.what);
    }
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap(),
        host_range
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_reserved_ports").unwrap(),
        host_reserved
    );
    assert_eq!(tally.bind_cases, opts.bind_cases);
    assert_eq!(tally.connect_cases, opts.connect_cases);
    assert!(
        tally.bind_refusals > 0 && tally.bind_refusals < tally.bind_cases,
        "the generator covers both outcomes"
    );
    assert!(
        tally.explained >= tally.bind_cases + tally.connect_cases,
        "every candidate was explained through the command path first"
    );
    assert!(
        tally.disagreements.is_empty(),
        "{} disagreements (listed above)",
        tally.disagreements.len()
    );
}
