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
    let out = Command::new(bin()).args(["selftest", "--json"]).output().expect("selftest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert!(out.status.success(), "{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    let scenarios = v["scenarios"].as_array().expect("scenarios");
    assert_eq!(scenarios.len(), 4);
    for s in scenarios {
        assert_eq!(s["failures"].as_array().map(|f| f.len()), Some(0), "{s}");
    }
}
