//! Privilege checks with messages that name the missing capability and a safe fix.
use std::fs;

use thiserror::Error;

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[derive(Debug, Error)]
pub enum PrivilegeError {
    #[error("portwatch needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN) to load eBPF programs; missing: {missing}. {ADVICE}")]
    Missing { missing: String },
    #[error("cannot read /proc/self/status to check capabilities: {0}")]
    Status(#[from] std::io::Error),
}

/// How to get the capabilities safely. Capabilities set on a file act for everyone who
/// can execute it: with them portwatch reads the sockets of every network namespace on
/// the host, and CAP_DAC_READ_SEARCH (needed because tracefs, where the tracepoint
/// formats are read, is root-only) bypasses file read permissions. So sudo first, and
/// file capabilities only on a binary that a root-owned group alone may execute; never
/// CAP_SYS_ADMIN, which is close to full root.
pub const ADVICE: &str =
    "Run it through sudo: `sudo portwatch ...`. To let a group of operators run it \
without sudo, first make the binary executable by a root-owned group only (whoever can \
execute it gets its capabilities: every network namespace's sockets, and file reads past \
permissions), then grant the three capabilities it uses, CAP_BPF and CAP_PERFMON for the \
eBPF programs and CAP_DAC_READ_SEARCH to read the root-only tracefs: `sudo groupadd \
--system portwatch && sudo chown root:portwatch /usr/sbin/portwatch && sudo chmod 0750 \
/usr/sbin/portwatch && sudo setcap cap_bpf,cap_perfmon,cap_dac_read_search=ep \
/usr/sbin/portwatch` (adjust the path to where portwatch is), then add the operators to \
the group. `quiz` creates network namespaces and still needs root. Never grant \
cap_sys_admin: it is close to full root.";

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
        Err(PrivilegeError::Missing {
            missing: missing.join(", "),
        })
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

    #[test]
    fn advice_is_sudo_first_and_never_a_world_executable_cap_sys_admin() {
        let msg = PrivilegeError::Missing {
            missing: "CAP_BPF".into(),
        }
        .to_string();
        let sudo = msg.find("sudo portwatch").expect("recommends sudo");
        let setcap = msg.find("setcap").expect("shows the narrow setcap");
        assert!(sudo < setcap, "sudo comes first: {msg}");
        // The file is restricted to a root-owned group before any capability is granted.
        let chmod = msg.find("chmod 0750").expect("mode 0750");
        assert!(
            msg.find("chown root:portwatch").is_some_and(|c| c < setcap) && chmod < setcap,
            "{msg}"
        );
        assert!(
            msg.contains("setcap cap_bpf,cap_perfmon,cap_dac_read_search=ep "),
            "{msg}"
        );
        assert!(
            !msg.contains("cap_sys_admin+") && !msg.contains("cap_sys_admin="),
            "{msg}"
        );
    }
}
