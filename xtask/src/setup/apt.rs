//! Debian packages: checked with dpkg-query, installed with apt-get (through sudo when
//! not root) after a dry run proves nothing installed would be removed.

use std::process::Command;

use anyhow::{bail, Context, Result};

use super::{missing, present, Summary};
use crate::{apt, cmd};

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
    // Dry runs first: installing must not remove anything already installed. A package
    // that the machine's own suites cannot install cleanly (a newer installed package
    // breaks the release's version, e.g. a backported qemu-utils and the release's
    // qemu-system-x86) comes from the release's backports, read through a private apt
    // configuration under target/.
    let mut from_host = Vec::new();
    let mut from_backports = Vec::new();
    if simulate(&mut host_simulation(&to_install)).is_clean() {
        from_host = to_install.clone();
    } else {
        for &pkg in &to_install {
            match simulate(&mut host_simulation(&[pkg])) {
                Simulation::Clean => from_host.push(pkg),
                other => from_backports.push((pkg, other)),
            }
        }
    }
    if !from_host.is_empty() {
        println!(
            "setup: apt-get {} {}",
            APT_INSTALL.join(" "),
            from_host.join(" ")
        );
        cmd::checked(apt_get(&how).args(APT_INSTALL).args(&from_host)).with_context(|| {
            format!(
                "apt-get install {} failed (llvm-22-dev comes from the LLVM apt repository \
                 if your Debian mirror lacks it){via_sudo}",
                from_host.join(" ")
            )
        })?;
    }
    if !from_backports.is_empty() {
        install_from_backports(&how, &from_backports)?;
    }
    for pkg in to_install {
        let status = dpkg_status(pkg)?;
        if !dpkg_status_installed(&status) {
            bail!("apt-get reported success but {pkg} is still not installed (status: {status:?})");
        }
        summary.installed.push(format!("apt {pkg}"));
    }
    Ok(())
}

/// What an `apt-get -s install` dry run says.
#[derive(Debug, PartialEq, Eq)]
pub enum Simulation {
    Clean,
    /// It would remove these installed packages.
    Removes(Vec<String>),
    /// apt refuses (unmet dependencies, breaks): its message.
    Refused(String),
}

impl Simulation {
    fn is_clean(&self) -> bool {
        *self == Simulation::Clean
    }
}

impl std::fmt::Display for Simulation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Simulation::Clean => f.write_str("installs cleanly"),
            Simulation::Removes(p) => write!(f, "would remove {}", p.join(" ")),
            Simulation::Refused(msg) => write!(f, "apt refuses: {msg}"),
        }
    }
}

/// Reads a dry run's outcome.
pub fn simulation_outcome(success: bool, stdout: &str, stderr: &str) -> Simulation {
    if !success {
        let why: Vec<&str> = stdout
            .lines()
            .chain(stderr.lines())
            .map(str::trim)
            .filter(|l| l.contains("Depends:") || l.contains("Breaks:") || l.starts_with("E:"))
            .collect();
        return Simulation::Refused(why.join("; "));
    }
    let removals = simulated_removals(stdout);
    if removals.is_empty() {
        Simulation::Clean
    } else {
        Simulation::Removes(removals)
    }
}

fn simulate(c: &mut Command) -> Simulation {
    match cmd::output(c) {
        Ok(out) => simulation_outcome(
            out.status.success(),
            &String::from_utf8_lossy(&out.stdout),
            &String::from_utf8_lossy(&out.stderr),
        ),
        Err(e) => Simulation::Refused(format!("{e:#}")),
    }
}

/// A dry run of installing `packages` from the machine's own suites.
fn host_simulation(packages: &[&str]) -> Command {
    let mut sim = cmd::command("apt-get");
    sim.env("DEBIAN_FRONTEND", "noninteractive")
        .args(APT_INSTALL)
        .arg("-s")
        .args(packages);
    sim
}

/// Installs `packages` from `<release>-backports` through a private apt configuration
/// (target/apt/backports): the machine's suites plus the backports suite, on the
/// machine's own mirrors; the machine's apt configuration is not changed.
fn install_from_backports(how: &cmd::Elevation, packages: &[(&str, Simulation)]) -> Result<()> {
    let names: Vec<&str> = packages.iter().map(|(p, _)| *p).collect();
    let host_why: Vec<String> = packages.iter().map(|(p, s)| format!("{p}: {s}")).collect();
    let release = apt::host_codename()?;
    let backports = format!("{release}-backports");
    let (main, security) = apt::host_mirrors()?;
    let mut sources = apt::sources_lines(
        &main,
        &[
            release.clone(),
            format!("{release}-updates"),
            backports.clone(),
        ],
    );
    sources.push_str(&apt::sources_lines(
        &security,
        &[format!("{release}-security")],
    ));
    let dir = crate::build::target_dir()?.join("apt").join("backports");
    println!(
        "setup: {} cannot come from the machine's suites ({}); trying {backports}",
        names.join(" "),
        host_why.join("; ")
    );
    let private = apt::PrivateApt::prepare(&dir, &sources, how)?;
    let mut sim = private.command("apt-get");
    sim.env("DEBIAN_FRONTEND", "noninteractive")
        .args(APT_INSTALL)
        .args(["-s", "-t", &backports])
        .args(&names);
    let outcome = simulate(&mut sim);
    if !outcome.is_clean() {
        bail!(
            "installing {} from the machine's suites: {}; from {backports}: {outcome}. Setup \
             does not remove packages: resolve it by hand (see `{}`), then run setup again",
            names.join(" "),
            host_why.join("; "),
            cmd::describe(&sim)
        );
    }
    println!(
        "setup: apt-get {} -t {backports} {} (private configuration in {})",
        APT_INSTALL.join(" "),
        names.join(" "),
        dir.display()
    );
    let mut c = apt_get(how);
    c.args(private.options())
        .args(APT_INSTALL)
        .args(["-t", &backports])
        .args(&names);
    cmd::checked(&mut c).with_context(|| {
        format!(
            "apt-get install -t {backports} {} failed{}",
            names.join(" "),
            sudo_hint(how)
        )
    })
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

    #[test]
    fn dry_run_outcomes() {
        let inst = "Inst a (1 Debian [all])\nConf a (1 Debian [all])\n";
        assert_eq!(simulation_outcome(true, inst, ""), Simulation::Clean);
        let remv = "Remv qemu-utils [1:10.0.2+ds-2+deb13u1~bpo12+1]\nInst qemu-system-x86 (1)\n";
        assert_eq!(
            simulation_outcome(true, remv, ""),
            Simulation::Removes(vec!["qemu-utils".into()])
        );
        // What apt says on a machine with a backported qemu-utils asked for the release's
        // qemu-system-x86 without recommendations.
        let out = "The following packages have unmet dependencies:\n \
                   qemu-utils : Breaks: qemu-system-common (< 1:8.0+dfsg-5~) but \
                   1:7.2+dfsg-7+deb12u18+b3 is to be installed\n";
        let err = "E: Error, pkgProblemResolver::Resolve generated breaks, this may be caused \
                   by held packages.\n";
        match simulation_outcome(false, out, err) {
            Simulation::Refused(msg) => {
                assert!(msg.contains("Breaks: qemu-system-common"), "{msg}");
                assert!(msg.contains("E: Error"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
    }
}
