//! The Debian package tested where users install it: a fresh Debian bookworm root made
//! with `debootstrap --variant=minbase` under target/debroot/ (kept between runs; made
//! again if incomplete), entered with `chroot` inside a private mount namespace (its
//! /proc mount vanishes with the namespace). In it: `dpkg -i`, then `portwatch --version`
//! and `--help`, the man pages and the bash, zsh and fish completions at Debian's paths,
//! the exporter's systemd unit starting the installed binary, then `dpkg --purge`, after which the root's file tree must be what it was before the
//! install (dpkg's own records aside).

use std::{
    collections::BTreeMap,
    fs,
    io::Read,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, ensure, Context, Result};

use crate::{build, cmd};

pub const SUITE: &str = "bookworm";
/// The Debian mirror debootstrap reads (`PORTWATCH_DEBIAN_MIRROR` overrides it).
pub const MIRROR: &str = "http://deb.debian.org/debian";
/// Written last by a complete debootstrap run.
const DONE: &str = ".portwatch-debootstrap-done";

/// Where the package lands, by Debian's conventions.
pub const INSTALLED: &[&str] = &[
    "usr/sbin/portwatch",
    "usr/share/man/man1/portwatch.1.gz",
    "usr/share/man/man1/portwatch-dump.1.gz",
    "usr/share/bash-completion/completions/portwatch",
    "usr/share/zsh/vendor-completions/_portwatch",
    "usr/share/fish/vendor_completions.d/portwatch.fish",
    "usr/share/doc/portwatch/copyright",
    UNIT,
    "usr/share/portwatch/prometheus/portwatch-rules.yml",
    "usr/share/portwatch/grafana/portwatch-dashboard.json",
];

/// The exporter's systemd unit, as the package installs it.
const UNIT: &str = "usr/lib/systemd/system/portwatch-export.service";

/// Files dpkg itself changes on install and purge: its database, logs and caches.
pub fn dpkg_bookkeeping(path: &str) -> bool {
    path.starts_with("var/lib/dpkg/")
        || path.starts_with("var/log/")
        || path.starts_with("var/cache/")
        || path.starts_with("tmp/")
}

/// The root, made (or completed) with debootstrap.
pub fn ensure_root() -> Result<PathBuf> {
    let root = build::target_dir()?.join("debroot").join(SUITE);
    if root.join(DONE).is_file() {
        return Ok(root);
    }
    if root.exists() {
        println!("debroot: {} is incomplete, making it again", root.display());
        fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
    }
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let mirror = std::env::var("PORTWATCH_DEBIAN_MIRROR").unwrap_or_else(|_| MIRROR.to_owned());
    let mut d = cmd::command("debootstrap");
    d.args(["--variant=minbase", SUITE]).arg(&root).arg(&mirror);
    println!("debroot: {}", cmd::describe(&d));
    let out = cmd::output(&mut d)?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}; `cargo xtask setup` installs debootstrap): {}",
            cmd::describe(&d),
            cmd::describe_status(out.status),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .chain(String::from_utf8_lossy(&out.stdout).lines())
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join(" / ")
        );
    }
    fs::write(root.join(DONE), b"").context("marking the Debian root complete")?;
    Ok(root)
}

/// `sh -c SCRIPT` run chrooted into `root`, in a private mount namespace with /proc.
fn in_root(root: &Path, script: &str) -> Command {
    let mut c = cmd::command("unshare");
    c.args(["--mount", "--propagation", "private", "--fork", "sh", "-c"])
        .arg("mount -t proc proc \"$1/proc\" && exec chroot \"$1\" /bin/sh -c \"$2\"")
        .arg("sh")
        .arg(root)
        .arg(script)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C");
    c
}

/// Runs `script` in the root; its stdout, or an error with its output.
fn run_in_root(root: &Path, script: &str) -> Result<String> {
    let out = cmd::output(&mut in_root(root, script))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "in the Debian root, `{script}` failed ({}): {}{}",
            cmd::describe_status(out.status),
            String::from_utf8_lossy(&out.stderr).trim(),
            stdout.trim()
        );
    }
    Ok(stdout)
}

/// Every path under `root` (same filesystem) with its type, mode, owner and size.
pub fn tree(root: &Path) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let dev = fs::symlink_metadata(root)?.dev();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let p = e?.path();
            let m = fs::symlink_metadata(&p)?;
            let rel = p
                .strip_prefix(root)
                .map(|r| r.to_string_lossy().into_owned())
                .unwrap_or_default();
            if m.dev() != dev {
                continue; // a mount point's contents (e.g. /proc) are not the root's
            }
            let kind = if m.is_dir() {
                "d"
            } else if m.file_type().is_symlink() {
                "l"
            } else {
                "f"
            };
            let size = if m.is_dir() { 0 } else { m.len() };
            out.insert(
                rel,
                format!(
                    "{kind} {:o} {}:{} {size}",
                    m.permissions().mode() & 0o7777,
                    m.uid(),
                    m.gid()
                ),
            );
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    Ok(out)
}

/// The differences between two trees, dpkg's bookkeeping aside.
pub fn tree_diff(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut d = Vec::new();
    for (p, v) in after {
        if dpkg_bookkeeping(p) {
            continue;
        }
        match before.get(p) {
            None => d.push(format!("left behind: /{p} ({v})")),
            Some(b) if b != v => d.push(format!("changed: /{p} ({b} -> {v})")),
            Some(_) => {}
        }
    }
    for (p, v) in before {
        if !dpkg_bookkeeping(p) && !after.contains_key(p) {
            d.push(format!("removed: /{p} ({v})"));
        }
    }
    d
}

fn gunzip(path: &Path) -> Result<String> {
    let out = cmd::output(cmd::command("gzip").arg("-dc").arg(path))?;
    ensure!(out.status.success(), "{} is not gzip data", path.display());
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The whole package test (root, needs namespaces and chroot).
pub fn check_package(deb: &Path, version: &str) -> Result<()> {
    if !cmd::is_root() {
        bail!("the Debian package test needs root (chroot, mount namespace): run as root");
    }
    let root = ensure_root()?;
    // A previous run that failed half-way may have left the package installed.
    let _ = run_in_root(&root, "dpkg --purge portwatch >/dev/null 2>&1; true");
    let before = tree(&root)?;
    let staged = root.join("tmp").join("portwatch.deb");
    fs::copy(deb, &staged).with_context(|| format!("copying {} into the root", deb.display()))?;
    let result = install_and_check(&root, version);
    let purge = run_in_root(&root, "dpkg --purge portwatch");
    let _ = fs::remove_file(&staged);
    result?;
    purge?;
    let after = tree(&root)?;
    let diff = tree_diff(&before, &after);
    ensure!(
        diff.is_empty(),
        "`dpkg --purge portwatch` left the root different from before the install:\n  {}",
        diff.join("\n  ")
    );
    println!("debroot: installed, checked and purged; nothing left behind");
    Ok(())
}

/// The program a unit's `ExecStart=` runs (its first word, without systemd's `-@:+!`
/// prefixes).
fn exec_start_binary(unit: &str) -> Option<&str> {
    let line = unit
        .lines()
        .find_map(|l| l.trim().strip_prefix("ExecStart="))?;
    let word = line.split_whitespace().next()?;
    Some(word.trim_start_matches(['-', '@', ':', '+', '!']))
}

fn install_and_check(root: &Path, version: &str) -> Result<()> {
    run_in_root(root, "dpkg -i /tmp/portwatch.deb")?;
    let listed = run_in_root(root, "dpkg -L portwatch")?;
    for p in INSTALLED {
        ensure!(
            root.join(p).is_file(),
            "the package did not install /{p} (dpkg -L:\n{listed})"
        );
        ensure!(
            listed.lines().any(|l| l == format!("/{p}")),
            "dpkg -L portwatch does not list /{p}"
        );
    }
    let v = run_in_root(root, "portwatch --version")?;
    ensure!(
        v.starts_with(&format!("portwatch {version} (commit ")) && v.contains(", aya "),
        "`portwatch --version` in the Debian root printed {:?}",
        v.trim()
    );
    let help = run_in_root(root, "portwatch --help")?;
    ensure!(
        help.contains("Usage: portwatch") && help.contains("dump"),
        "`portwatch --help` in the Debian root printed {help:?}"
    );
    // The unit starts the binary where the package put it.
    let unit = fs::read_to_string(root.join(UNIT))?;
    let exec = exec_start_binary(&unit).with_context(|| format!("/{UNIT} has no ExecStart"))?;
    ensure!(
        INSTALLED.contains(&exec.trim_start_matches('/')),
        "/{UNIT} starts {exec}, which the package does not install (it installs /{})",
        INSTALLED[0]
    );
    let v = run_in_root(root, &format!("{exec} --version"))?;
    ensure!(
        v.starts_with("portwatch "),
        "`{exec} --version` (the unit's ExecStart) in the Debian root printed {:?}",
        v.trim()
    );
    // Man pages: gzip'd roff, one per visible subcommand, in man1.
    let man = gunzip(&root.join("usr/share/man/man1/portwatch.1.gz"))?;
    ensure!(
        man.contains(".TH portwatch 1") && man.contains("dump"),
        "portwatch.1.gz is not the portwatch man page: {}",
        man.lines().take(5).collect::<Vec<_>>().join(" / ")
    );
    // Completions: bash loads its file and registers portwatch; zsh and fish files are
    // theirs.
    let b = run_in_root(
        root,
        "bash -c '. /usr/share/bash-completion/completions/portwatch && complete -p portwatch'",
    )?;
    ensure!(
        b.contains("portwatch"),
        "the bash completion registers nothing for portwatch: {b:?}"
    );
    let mut zsh = String::new();
    fs::File::open(root.join("usr/share/zsh/vendor-completions/_portwatch"))?
        .read_to_string(&mut zsh)?;
    ensure!(
        zsh.starts_with("#compdef portwatch"),
        "_portwatch is not a zsh completion for portwatch"
    );
    let fish = fs::read_to_string(root.join("usr/share/fish/vendor_completions.d/portwatch.fish"))?;
    ensure!(
        fish.contains("complete -c portwatch"),
        "portwatch.fish is not a fish completion for portwatch"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_diff_ignores_only_dpkg_bookkeeping() {
        let t = |v: &[(&str, &str)]| -> BTreeMap<String, String> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let before = t(&[
            ("etc", "d 755 0:0 0"),
            ("var/lib/dpkg/status", "f 644 0:0 10"),
        ]);
        let same = t(&[
            ("etc", "d 755 0:0 0"),
            ("var/lib/dpkg/status", "f 644 0:0 99"),
        ]);
        assert!(tree_diff(&before, &same).is_empty());
        let left = t(&[
            ("etc", "d 755 0:0 0"),
            ("usr/sbin/portwatch", "f 755 0:0 5"),
        ]);
        assert_eq!(
            tree_diff(&before, &left),
            ["left behind: /usr/sbin/portwatch (f 755 0:0 5)"]
        );
        let changed = t(&[("etc", "d 700 0:0 0")]);
        assert_eq!(
            tree_diff(&before, &changed),
            ["changed: /etc (d 755 0:0 0 -> d 700 0:0 0)"]
        );
    }

    #[test]
    fn exec_start_binary_is_the_first_word() {
        assert_eq!(
            exec_start_binary("[Service]\nExecStart=/usr/sbin/portwatch export --listen x\n"),
            Some("/usr/sbin/portwatch")
        );
        assert_eq!(
            exec_start_binary("ExecStart=-/usr/bin/true\n"),
            Some("/usr/bin/true")
        );
        assert_eq!(exec_start_binary("[Service]\nType=simple\n"), None);
    }

    #[test]
    fn tree_lists_files_with_modes() {
        let dir = std::env::temp_dir().join(format!("xtask-tree-{}", std::process::id()));
        fs::create_dir_all(dir.join("a")).unwrap();
        fs::write(dir.join("a/f"), b"123").unwrap();
        fs::set_permissions(dir.join("a/f"), fs::Permissions::from_mode(0o640)).unwrap();
        let t = tree(&dir).unwrap();
        assert!(
            t["a"].starts_with("d 755") || t["a"].starts_with("d 7"),
            "{t:?}"
        );
        assert!(
            t["a/f"].starts_with("f 640 ") && t["a/f"].ends_with(" 3"),
            "{t:?}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
