//! Debian packages: checked with dpkg-query, installed with apt-get (through sudo when
//! not root) after a dry run proves nothing installed would be removed.

use std::process::Command;

use anyhow::{bail, Context, Result};

use super::{missing, present, Summary};
use crate::cmd;

/// True when a `dpkg-query -W -f='${Status}'` answer means "installed"
/// (`install ok installed`, `hold ok installed`); half-installed or removed-with-config
/// states count as missing so they get (re)installed.
pub fn dpkg_status_installed(status: &str) -> bool {
    let words: Vec<&str> = status.split_whitespace().collect();
    words.len() == 3 && words[1] == "ok" && words[2] == "installed"
}

fn dpkg_status(pkg: &str) -> Result<String> {
    let out = cmd::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg])).context(
        "dpkg-query is needed to check Debian packages: this setup supports Debian/Ubuntu only",
    )?;
    // Exit code 1 with "no packages found" on stderr means: not installed.
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The packages `apt-get -s` (simulate) output says would be removed (`Remv NAME ...`).
pub fn simulated_removals(simulation: &str) -> Vec<String> {
    simulation
        .lines()
        .filter_map(|l| l.strip_prefix("Remv "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// `apt-get install` arguments: never prompt, never pull in recommendations.
pub const APT_INSTALL: &[&str] = &["install", "-y", "--no-install-recommends"];

/// Installs the packages of `packages` that are missing.
pub fn install(summary: &mut Summary, packages: &[&str]) -> Result<()> {
    let mut to_install = Vec::new();
    for &pkg in packages {
        let status = dpkg_status(pkg)?;
        if dpkg_status_installed(&status) {
            present(summary, format!("apt {pkg}"), &status);
        } else {
            let why = if status.is_empty() {
                "not installed".to_string()
            } else {
                status
            };
            missing(&format!("apt {pkg}"), &why);
            to_install.push(pkg);
        }
    }
    if to_install.is_empty() {
        return Ok(());
    }
    let how = cmd::elevation("installing Debian packages with apt-get")?;
    let via_sudo = sudo_hint(&how);
    println!("setup: apt-get update");
    cmd::checked(apt_get(&how).arg("update")).with_context(|| {
        format!("apt-get update failed: check the network and /etc/apt/sources.list{via_sudo}")
    })?;
    // A dry run first: installing must not remove anything already installed.
    let mut sim = cmd::command("apt-get");
    sim.env("DEBIAN_FRONTEND", "noninteractive")
        .args(APT_INSTALL)
        .arg("-s")
        .args(&to_install);
    let out = cmd::output(&mut sim)?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            cmd::describe(&sim),
            cmd::describe_status(out.status),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let removals = simulated_removals(&String::from_utf8_lossy(&out.stdout));
    if !removals.is_empty() {
        bail!(
            "installing {} would remove the installed package(s) {} (a conflict with their \
             installed versions); setup does not remove packages: resolve it by hand (see \
             `{}`), then run setup again",
            to_install.join(" "),
            removals.join(" "),
            cmd::describe(&sim)
        );
    }
    println!(
        "setup: apt-get {} {}",
        APT_INSTALL.join(" "),
        to_install.join(" ")
    );
    cmd::checked(apt_get(&how).args(APT_INSTALL).args(&to_install)).with_context(|| {
        format!(
            "apt-get install {} failed (llvm-22-dev comes from the LLVM apt repository \
             if your Debian mirror lacks it){via_sudo}",
            to_install.join(" ")
        )
    })?;
    for pkg in to_install {
        let status = dpkg_status(pkg)?;
        if !dpkg_status_installed(&status) {
            bail!("apt-get reported success but {pkg} is still not installed (status: {status:?})");
        }
        summary.installed.push(format!("apt {pkg}"));
    }
    Ok(())
}

/// Extra advice for a failure of a command started through sudo.
fn sudo_hint(how: &cmd::Elevation) -> &'static str {
    match how {
        cmd::Elevation::Direct => "",
        cmd::Elevation::Sudo(args) if args.iter().any(|a| a == "-n") => {
            "; it ran through `sudo -n` (no terminal to ask for a password): run `sudo -v` \
             first or run as root"
        }
        cmd::Elevation::Sudo(_) => "; it ran through sudo",
    }
}

/// `apt-get` as root, never prompting (`env DEBIAN_FRONTEND=noninteractive` survives sudo's
/// environment reset).
fn apt_get(how: &cmd::Elevation) -> Command {
    let mut c = cmd::as_root(how, "env");
    c.args(["DEBIAN_FRONTEND=noninteractive", "apt-get"]);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_states() {
        assert!(dpkg_status_installed("install ok installed"));
        assert!(dpkg_status_installed("hold ok installed"));
        assert!(!dpkg_status_installed("deinstall ok config-files"));
        assert!(!dpkg_status_installed("install ok unpacked"));
        assert!(!dpkg_status_installed("install ok half-configured"));
        assert!(!dpkg_status_installed("unknown ok not-installed"));
        assert!(!dpkg_status_installed(""));
    }

    #[test]
    fn removals_in_a_simulation() {
        let sim = "NOTE: This is only a simulation!\n\
                   Remv qemu-utils [1:7.2+dfsg-7+deb12u15]\n\
                   Inst qemu-system-x86 (1:7.2+dfsg-7+deb12u18 Debian:12 [amd64])\n\
                   Conf qemu-system-x86 (1:7.2+dfsg-7+deb12u18 Debian:12 [amd64])\n";
        assert_eq!(simulated_removals(sim), ["qemu-utils"]);
        assert!(
            simulated_removals("Inst a (1 Debian [all])\nConf a (1 Debian [all])\n").is_empty()
        );
    }
}
