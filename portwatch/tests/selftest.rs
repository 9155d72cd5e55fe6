//! The scripted scenarios the VM matrix runs per backend, run here with the backend this
//! host allows (`--probe auto`).
mod common;

use std::process::Command;

use common::{bin, require_root};

#[test]
fn selftest_scenarios_pass_with_the_auto_backend() {
    if !require_root("selftest_scenarios_pass_with_the_auto_backend") {
        return;
    }
    let out = Command::new(bin())
        .args(["selftest", "--json"])
        .output()
        .expect("selftest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert!(
        out.status.success(),
        "{}",
        serde_json::to_string_pretty(&v).unwrap_or_default()
    );
    let scenarios = v["scenarios"].as_array().expect("scenarios");
    let names: Vec<&str> = scenarios
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "connect_bind_close",
            "bind_conflict",
            "quiz3",
            "reuseaddr_bind",
            "ephemeral_range",
            "port_release_reset",
            "dump_workload",
            "timewait_purge"
        ]
    );
    for s in scenarios {
        assert_eq!(s["failures"].as_array().map(|f| f.len()), Some(0), "{s}");
    }
}

/// The walk driver of kernels before 5.17 (bounded loops, snapshots over several program
/// runs), forced on this kernel: the same scenarios pass, and probes names the driver and
/// its limits.
#[test]
fn selftest_scenarios_pass_with_the_bounded_walk_driver() {
    if !require_root("selftest_scenarios_pass_with_the_bounded_walk_driver") {
        return;
    }
    let out = Command::new(bin())
        .args(["--walk-driver", "bounded", "selftest", "--json"])
        .output()
        .expect("selftest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert!(
        out.status.success(),
        "{}",
        serde_json::to_string_pretty(&v).unwrap_or_default()
    );
    for s in v["scenarios"].as_array().expect("scenarios") {
        assert_eq!(s["failures"].as_array().map(|f| f.len()), Some(0), "{s}");
    }

    let out = Command::new(bin())
        .args(["probes", "--json", "--walk-driver", "bounded"])
        .output()
        .expect("probes");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let walk = &v["walk"];
    assert_eq!(walk["driver"], "bounded", "{walk}");
    assert_eq!(
        walk["reason"], "requested with --walk-driver bounded",
        "{walk}"
    );
    for budget in ["owner_steps", "chain_steps", "snap_steps"] {
        assert!(
            walk[budget].as_u64().is_some_and(|n| n > 0),
            "{budget}: {walk}"
        );
    }
    let out = Command::new(bin())
        .args(["probes"])
        .output()
        .expect("probes");
    let text = String::from_utf8_lossy(&out.stdout);
    let bpf_loop_row = v["variants"]
        .as_array()
        .and_then(|vs| vs.iter().find(|x| x["id"] == "bpf-loop").cloned())
        .expect("the compatibility table has a bpf_loop row");
    if bpf_loop_row["present"] == true {
        assert!(
            text.contains("walks driven by bpf_loop (the kernel has it (5.17+))"),
            "{text}"
        );
    } else {
        assert!(text.contains("walks driven by bounded loops"), "{text}");
    }
}

#[test]
fn probes_reports_each_backend_and_kprobe_programs_pass_the_verifier_here() {
    if !require_root("probes_reports_each_backend_and_kprobe_programs_pass_the_verifier_here") {
        return;
    }
    let out = Command::new(bin())
        .args(["probes", "--json"])
        .output()
        .expect("probes");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let attempts = v["attempts"].as_array().expect("attempts");
    let order: Vec<&str> = attempts
        .iter()
        .filter_map(|a| a["backend"].as_str())
        .collect();
    // auto tries the best first and stops at the first that works.
    assert_eq!(order.first(), Some(&"fentry"), "{v}");
    let chosen = v["chosen"].as_str().expect("a backend is chosen");
    assert_eq!(order.last(), Some(&chosen));
    for a in attempts {
        if a["backend"] != chosen {
            assert!(
                a["refused"].as_str().is_some_and(|r| !r.is_empty()),
                "a refusal names its reason: {a}"
            );
        }
    }
    let kprobe = attempts.iter().find(|a| a["backend"] == "kprobe");
    if let Some(k) = kprobe {
        if let Some(reason) = k["refused"].as_str() {
            if reason.contains("no kprobes") {
                // A kernel without kprobes: the programs must still have been verified.
                assert!(reason.contains("passed the verifier"), "{reason}");
            }
        }
    }
}
