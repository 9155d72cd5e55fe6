//! Privilege checks with messages that name the missing capability.
use std::fs;

use thiserror::Error;

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[derive(Debug, Error)]
pub enum PrivilegeError {
    #[error(
        "portwatch needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN) to load eBPF programs; missing: {missing}. \
         Run it as root (`sudo portwatch ...`) or grant them: `sudo setcap cap_bpf,cap_perfmon,cap_sys_admin+ep $(which portwatch)`"
    )]
    Missing { missing: String },
    #[error("cannot read /proc/self/status to check capabilities: {0}")]
    Status(#[from] std::io::Error),
}

/// Effective capability mask of this process.
pub fn effective_caps() -> Result<u64, PrivilegeError> {
    let status = fs::read_to_string("/proc/self/status")?;
    Ok(parse_cap_eff(&status).unwrap_or(0))
}

pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// Which of the needed capabilities are missing from `caps` (empty: none).
pub fn missing_caps(caps: u64) -> Vec<&'static str> {
    let has = |c: u32| caps & (1u64 << c) != 0;
    if has(CAP_SYS_ADMIN) {
        return Vec::new();
    }
    let mut v = Vec::new();
    if !has(CAP_BPF) {
        v.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) {
        v.push("CAP_PERFMON");
    }
    v
}

/// Fails with a message naming what is missing.
pub fn require_bpf() -> Result<(), PrivilegeError> {
    let missing = missing_caps(effective_caps()?);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PrivilegeError::Missing { missing: missing.join(", ") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_names_missing() {
        let s = "Name:\tx\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(s), Some(0x1ff_ffff_ffff));
        assert!(missing_caps(0x1ff_ffff_ffff).is_empty());
        assert_eq!(missing_caps(0), vec!["CAP_BPF", "CAP_PERFMON"]);
        assert_eq!(missing_caps(1 << CAP_BPF), vec!["CAP_PERFMON"]);
        assert!(missing_caps(1 << CAP_SYS_ADMIN).is_empty());
        assert_eq!(parse_cap_eff("nothing"), None);
    }
}
