//! Locating, downloading and unpacking Debian's stock cloud kernels.
//!
//! Package names are looked up with `apt-cache search` at run time, through a private
//! apt configuration under the cache directory ([`crate::apt::PrivateApt`]) that lists
//! the suites carrying the matrix's kernels on the mirrors the machine's own sources
//! name; nothing about versions or URLs is hard-coded and the machine's apt sources,
//! lists and caches are never touched. The newest package of each requested series
//! ("6.12", or "7" for the newest 7.x) is downloaded with `apt-get download` and
//! unpacked with `dpkg -x` into the cache directory; both steps are skipped when the
//! unpacked image is already present.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::{
    apt::{self, PrivateApt},
    cmd,
};

const PKG_PREFIX: &str = "linux-image-";
const PKG_SUFFIX: &str = "-cloud-amd64";

/// A bootable kernel image extracted from a Debian package.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct KernelImage {
    /// The series asked for, e.g. "6.12".
    pub series: String,
    /// The Debian package it came from, e.g. "linux-image-6.12.117+deb12-cloud-amd64".
    pub package: String,
    /// The release string from the image file name (`vmlinuz-<release>`); the
    /// kernel's `uname -r` should print the same.
    pub release: String,
    /// Path of the compressed kernel image (bzImage) to pass to qemu's `-kernel`.
    pub vmlinuz: PathBuf,
}

/// Validates a series string: "MAJOR.MINOR" (e.g. "6.12"), or "MAJOR" for the newest
/// MAJOR.x the registry serves (e.g. "7"); a missing minor is `u32::MAX`.
pub fn parse_series(series: &str) -> Result<(u32, u32)> {
    if !series.is_empty() && series.chars().all(|c| c.is_ascii_digit()) {
        let maj = series
            .parse::<u32>()
            .with_context(|| format!("kernel series {series:?} is not a number"))?;
        return Ok((maj, u32::MAX));
    }
    let (maj, min) = series.split_once('.').with_context(|| {
        format!(
            "kernel series {series:?} is not of the form MAJOR.MINOR (e.g. 6.12) or MAJOR (e.g. 7)"
        )
    })?;
    let maj = maj
        .parse::<u32>()
        .with_context(|| format!("kernel series {series:?}: major {maj:?} is not a number"))?;
    let min = min
        .parse::<u32>()
        .with_context(|| format!("kernel series {series:?}: minor {min:?} is not a number"))?;
    Ok((maj, min))
}

/// The `apt-cache search --names-only` regular expression for a series.
pub fn apt_regex(series: &str) -> Result<String> {
    let (maj, min) = parse_series(series)?;
    if min == u32::MAX {
        return Ok(format!(
            "^{PKG_PREFIX}{maj}\\.[0-9]+\\.[0-9].*{PKG_SUFFIX}$"
        ));
    }
    Ok(format!("^{PKG_PREFIX}{maj}\\.{min}\\.[0-9].*{PKG_SUFFIX}$"))
}

/// Numeric sort key of a kernel package name: all digit runs of its version part,
/// e.g. "linux-image-6.1.0-56-cloud-amd64" -> [6, 1, 0, 56].
pub fn version_key(package: &str) -> Vec<u64> {
    let core = package
        .strip_prefix(PKG_PREFIX)
        .unwrap_or(package)
        .trim_end_matches(PKG_SUFFIX);
    core.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse::<u64>().ok())
        .collect()
}

/// Whether `package` is a signed stock cloud image of `series` (no -dbg, no -unsigned,
/// no meta-package).
pub fn matches_series(package: &str, series: &str) -> bool {
    let Some(core) = package
        .strip_prefix(PKG_PREFIX)
        .and_then(|p| p.strip_suffix(PKG_SUFFIX))
    else {
        return false;
    };
    let Some(rest) = core.strip_prefix(&format!("{series}.")) else {
        return false;
    };
    // The next character must start the patch level: "6.1." must not match "6.12.";
    // for a major-only series ("7") it starts the minor.
    rest.chars().next().is_some_and(|c| c.is_ascii_digit())
        && !core.contains("-dbg")
        && !core.contains("-unsigned")
}

/// Extracts package names from `apt-cache search` output ("name - description" lines)
/// and returns those of `series`, newest first.
pub fn candidates(apt_search_output: &str, series: &str) -> Vec<String> {
    let mut names: Vec<String> = apt_search_output
        .lines()
        .filter_map(|l| l.split(" - ").next())
        .map(str::trim)
        .filter(|n| matches_series(n, series))
        .map(str::to_owned)
        .collect();
    names.sort_by(|a, b| version_key(b).cmp(&version_key(a)).then_with(|| b.cmp(a)));
    names.dedup();
    names
}

/// Suites of the main archive and of the security archive that carry the matrix's
/// kernels: 5.10 in bullseye(-security), 6.1 in bookworm, 6.12 in bookworm and trixie,
/// 6.16 to 7.x in trixie-backports.
const MAIN_SUITES: [&str; 6] = [
    "bullseye",
    "bookworm",
    "bookworm-updates",
    "bookworm-backports",
    "trixie",
    "trixie-backports",
];
const SECURITY_SUITES: [&str; 3] = ["bullseye-security", "bookworm-security", "trixie-security"];

/// The sources.list of the private configuration.
pub fn private_sources(main: &str, security: &str) -> String {
    let suites = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let mut s = apt::sources_lines(main, &suites(&MAIN_SUITES));
    s.push_str(&apt::sources_lines(security, &suites(&SECURITY_SUITES)));
    s
}

/// The private configuration under `cache/apt`, its lists fetched when missing or older
/// than a day.
fn prepare_apt(cache: &Path) -> Result<PrivateApt> {
    let (main, security) = apt::host_mirrors()?;
    let how = cmd::elevation("fetching the package lists of the VM matrix's kernels")?;
    PrivateApt::prepare(&cache.join("apt"), &private_sources(&main, &security), &how)
}

/// `Depends:` of the newest version of `package`.
fn depends(apt: &PrivateApt, package: &str) -> Result<Vec<String>> {
    let out = cmd::output(
        apt.command("apt-cache")
            .args(["show", "--no-all-versions", package]),
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("Depends:"))
        .flat_map(|d| d.split(','))
        .map(|d| d.split_whitespace().next().unwrap_or("").to_owned())
        .filter(|d| !d.is_empty())
        .collect())
}

fn apt_search(apt: &PrivateApt, series: &str) -> Result<String> {
    let re = apt_regex(series)?;
    let out = apt
        .command("apt-cache")
        .args(["search", "--names-only", &re])
        .output()
        .context("running apt-cache (Debian's apt is needed to locate kernels)")?;
    if !out.status.success() {
        bail!(
            "apt-cache search {re:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Finds the kernel image under an unpacked package root: `boot/vmlinuz-RELEASE` (image
/// packages up to 6.x) or `usr/lib/modules/RELEASE/vmlinuz` (the `linux-binary-RELEASE`
/// package that 7.x image packages depend on).
pub fn find_vmlinuz(unpacked: &Path) -> Result<(PathBuf, String)> {
    let boot = unpacked.join("boot");
    if let Ok(rd) = fs::read_dir(&boot) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(release) = name.strip_prefix("vmlinuz-") {
                return Ok((e.path(), release.to_owned()));
            }
        }
    }
    let modules = unpacked.join("usr/lib/modules");
    if let Ok(rd) = fs::read_dir(&modules) {
        for e in rd.flatten() {
            let img = e.path().join("vmlinuz");
            if img.is_file() {
                return Ok((img, e.file_name().to_string_lossy().into_owned()));
            }
        }
    }
    bail!(
        "no boot/vmlinuz-* or usr/lib/modules/*/vmlinuz in {}",
        unpacked.display()
    )
}

/// Returns the cached image of `package`, downloading and unpacking it when absent.
fn fetch_package(apt: &PrivateApt, cache: &Path, package: &str) -> Result<(PathBuf, String)> {
    // 7.x image packages are meta packages: the image is in linux-binary-RELEASE.
    let release = package
        .strip_prefix(PKG_PREFIX)
        .unwrap_or(package)
        .to_owned();
    let binary = format!("linux-binary-{release}");
    let unpacked_dir = cache.join("unpacked").join(package);
    if find_vmlinuz(&unpacked_dir).is_err() && depends(apt, package)?.contains(&binary) {
        return fetch_one(apt, cache, &binary, &unpacked_dir);
    }
    fetch_one(apt, cache, package, &unpacked_dir)
}

/// Downloads `package` (unless its .deb is cached) and unpacks it into `unpacked`.
fn fetch_one(
    apt: &PrivateApt,
    cache: &Path,
    package: &str,
    unpacked: &Path,
) -> Result<(PathBuf, String)> {
    if let Ok(found) = find_vmlinuz(unpacked) {
        eprintln!("vm: {package}: cached in {}", unpacked.display());
        return Ok(found);
    }
    let debs = cache.join("debs");
    fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    let deb = match find_deb(&debs, package)? {
        Some(d) => d,
        None => {
            eprintln!("vm: {package}: apt-get download into {}", debs.display());
            let out = apt
                .command("apt-get")
                .args(["download", "-q", package])
                .current_dir(&debs)
                .output()
                .context("running apt-get download")?;
            if !out.status.success() {
                bail!(
                    "apt-get download {package} failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            find_deb(&debs, package)?.with_context(|| {
                format!(
                    "apt-get download {package} succeeded but no {package}_*.deb is in {}",
                    debs.display()
                )
            })?
        }
    };
    let tmp = cache.join("unpacked").join(format!(".{package}.tmp"));
    fs::create_dir_all(cache.join("unpacked"))
        .with_context(|| format!("creating {}", cache.join("unpacked").display()))?;
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_context(|| format!("removing stale {}", tmp.display()))?;
    }
    fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    eprintln!("vm: {package}: dpkg -x {}", deb.display());
    let st = Command::new("dpkg")
        .arg("-x")
        .arg(&deb)
        .arg(&tmp)
        .status()
        .context("running dpkg -x (Debian's dpkg is needed to unpack kernels)")?;
    if !st.success() {
        bail!(
            "dpkg -x {} failed ({st}); delete the file and retry",
            deb.display()
        );
    }
    find_vmlinuz(&tmp).with_context(|| format!("package {package} holds no kernel image"))?;
    if unpacked.exists() {
        fs::remove_dir_all(unpacked)
            .with_context(|| format!("removing incomplete {}", unpacked.display()))?;
    }
    fs::rename(&tmp, unpacked)
        .with_context(|| format!("renaming {} to {}", tmp.display(), unpacked.display()))?;
    find_vmlinuz(unpacked)
}

fn find_deb(dir: &Path, package: &str) -> Result<Option<PathBuf>> {
    let prefix = format!("{package}_");
    for e in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e.with_context(|| format!("reading {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            return Ok(Some(e.path()));
        }
    }
    Ok(None)
}

/// Newest already-unpacked package of `series` in the cache (offline fallback).
fn cached_for_series(cache: &Path, series: &str) -> Option<(String, PathBuf, String)> {
    let dir = cache.join("unpacked");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| matches_series(n, series))
        .collect();
    names.sort_by_key(|n| std::cmp::Reverse(version_key(n)));
    names.into_iter().find_map(|n| {
        let (img, rel) = find_vmlinuz(&dir.join(&n)).ok()?;
        Some((n, img, rel))
    })
}

/// Locates (and if needed downloads and unpacks) the newest cloud kernel of each series
/// into `cache`.
pub fn prepare_kernels_in(cache: &Path, series: &[&str]) -> Result<Vec<KernelImage>> {
    let mut out = Vec::new();
    for s in series {
        parse_series(s)?;
    }
    // Offline with everything cached: the cached kernels serve.
    let apt = match prepare_apt(cache) {
        Ok(a) => Some(a),
        Err(e) => {
            eprintln!("vm: warning: {e:#}; using cached kernels only");
            None
        }
    };
    for s in series {
        let names = match &apt {
            Some(apt) => candidates(&apt_search(apt, s)?, s),
            None => Vec::new(),
        };
        let mut errors = Vec::new();
        let mut chosen = None;
        // Newest first; an index may list a package the mirror no longer serves.
        for name in names.iter().take(3) {
            let Some(apt) = &apt else { break };
            match fetch_package(apt, cache, name) {
                Ok((img, rel)) => {
                    chosen = Some((name.clone(), img, rel));
                    break;
                }
                Err(e) => {
                    eprintln!("vm: warning: {name}: {e:#}");
                    errors.push(format!("{name}: {e:#}"));
                }
            }
        }
        if chosen.is_none() {
            if let Some(c) = cached_for_series(cache, s) {
                eprintln!(
                    "vm: warning: using cached {} for series {s} (apt gave nothing usable)",
                    c.0
                );
                chosen = Some(c);
            }
        }
        let Some((package, vmlinuz, release)) = chosen else {
            if names.is_empty() {
                bail!(
                    "no Debian package matches {} (series {s}) in the suites {:?} and {:?}",
                    apt_regex(s)?,
                    MAIN_SUITES,
                    SECURITY_SUITES
                );
            }
            bail!(
                "could not fetch any kernel of series {s}: {}",
                errors.join("; ")
            );
        };
        eprintln!("vm: series {s}: {package} ({})", vmlinuz.display());
        // A major-only series ("7") is labelled with the MAJOR.MINOR it resolved to.
        let label = match parse_series(s)? {
            (_, u32::MAX) => {
                let k = version_key(&package);
                match k.get(..2) {
                    Some([maj, min]) => format!("{maj}.{min}"),
                    _ => (*s).to_owned(),
                }
            }
            _ => (*s).to_owned(),
        };
        out.push(KernelImage {
            series: label,
            package,
            release,
            vmlinuz,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEARCH: &str = "\
linux-image-6.1.0-47-cloud-amd64 - Linux 6.1 for x86-64 cloud (signed)
linux-image-6.1.0-9-cloud-amd64 - Linux 6.1 for x86-64 cloud (signed)
linux-image-6.1.0-56-cloud-amd64 - Linux 6.1 for x86-64 cloud (signed)
linux-image-6.1.0-56-cloud-amd64-dbg - Debug symbols
linux-image-6.1.0-57-cloud-amd64-unsigned - Linux 6.1 for x86-64 cloud
linux-image-6.12.100+deb12-cloud-amd64 - Linux 6.12 for x86-64 cloud (signed)
linux-image-6.12.99+deb12-cloud-amd64 - Linux 6.12 for x86-64 cloud (signed)
linux-image-6.12.117+deb12-cloud-amd64 - Linux 6.12 for x86-64 cloud (signed)
linux-image-6.12-cloud-amd64 - Linux for x86-64 cloud (meta-package)
linux-image-cloud-amd64 - Linux for x86-64 cloud (meta-package)
";

    #[test]
    fn picks_newest_numerically_and_keeps_series_apart() {
        let c61 = candidates(SEARCH, "6.1");
        assert_eq!(
            c61,
            vec![
                "linux-image-6.1.0-56-cloud-amd64",
                "linux-image-6.1.0-47-cloud-amd64",
                "linux-image-6.1.0-9-cloud-amd64"
            ]
        );
        let c612 = candidates(SEARCH, "6.12");
        assert_eq!(c612[0], "linux-image-6.12.117+deb12-cloud-amd64");
        assert_eq!(
            c612.last().map(String::as_str),
            Some("linux-image-6.12.99+deb12-cloud-amd64")
        );
        assert_eq!(c612.len(), 3, "meta-packages must be excluded: {c612:?}");
    }

    #[test]
    fn excludes_dbg_unsigned_and_other_series() {
        assert!(!matches_series(
            "linux-image-6.1.0-56-cloud-amd64-dbg",
            "6.1"
        ));
        assert!(!matches_series(
            "linux-image-6.1.0-57-cloud-amd64-unsigned",
            "6.1"
        ));
        assert!(!matches_series(
            "linux-image-6.12.1+deb12-cloud-amd64",
            "6.1"
        ));
        assert!(!matches_series("linux-image-6.1.0-56-amd64", "6.1"));
        assert!(matches_series("linux-image-6.1.0-56-cloud-amd64", "6.1"));
    }

    #[test]
    fn version_key_is_numeric() {
        assert_eq!(
            version_key("linux-image-6.1.0-56-cloud-amd64"),
            vec![6, 1, 0, 56]
        );
        assert!(
            version_key("linux-image-6.12.117+deb12-cloud-amd64")
                > version_key("linux-image-6.12.99+deb12-cloud-amd64")
        );
    }

    #[test]
    fn series_validation_and_regex() {
        assert_eq!(parse_series("7").ok(), Some((7, u32::MAX)));
        assert!(parse_series("6.x").is_err());
        assert!(parse_series("").is_err());
        assert_eq!(
            apt_regex("7").ok().as_deref(),
            Some("^linux-image-7\\.[0-9]+\\.[0-9].*-cloud-amd64$")
        );
        assert_eq!(parse_series("6.12").ok(), Some((6, 12)));
        assert_eq!(
            apt_regex("6.1").ok().as_deref(),
            Some("^linux-image-6\\.1\\.[0-9].*-cloud-amd64$")
        );
    }

    #[test]
    fn major_only_series_takes_the_newest_minor() {
        let search = "\
linux-image-7.0.13+deb13-cloud-amd64 - Linux 7.0 for x86-64 cloud (signed)
linux-image-7.3.4+deb13-cloud-amd64 - Linux 7.3 for x86-64 cloud (signed)
linux-image-7.2.12+deb13-cloud-amd64 - Linux 7.2 for x86-64 cloud (signed)
linux-image-6.19.14+deb13-cloud-amd64 - Linux 6.19 for x86-64 cloud (signed)
";
        let c = candidates(search, "7");
        assert_eq!(c[0], "linux-image-7.3.4+deb13-cloud-amd64");
        assert_eq!(c.len(), 3, "{c:?}");
    }

    #[test]
    fn private_sources_list_every_kernel_suite_signed() {
        let list = private_sources(
            "http://m.example/debian",
            "http://m.example/debian-security",
        );
        assert!(list.contains("http://m.example/debian trixie-backports main"));
        assert!(list.contains("http://m.example/debian bullseye main"));
        assert!(list.contains("http://m.example/debian-security bullseye-security main"));
        assert_eq!(
            list.lines().count(),
            MAIN_SUITES.len() + SECURITY_SUITES.len()
        );
        assert!(list.lines().all(|l| l.starts_with("deb [signed-by=")));
    }

    #[test]
    fn finds_vmlinuz_of_7x_binary_package() {
        let d = tempdir();
        let m = d.join("usr/lib/modules/7.3.4+deb13-cloud-amd64");
        fs::create_dir_all(&m).unwrap();
        fs::write(m.join("vmlinuz"), "x").unwrap();
        let (p, rel) = find_vmlinuz(&d).unwrap();
        assert_eq!(rel, "7.3.4+deb13-cloud-amd64");
        assert!(p.ends_with("usr/lib/modules/7.3.4+deb13-cloud-amd64/vmlinuz"));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn finds_vmlinuz_in_unpacked_tree() {
        let d = tempdir();
        assert!(find_vmlinuz(&d).is_err());
        fs::create_dir_all(d.join("boot")).unwrap();
        fs::write(d.join("boot/config-6.1.0-56-cloud-amd64"), "x").unwrap();
        fs::write(d.join("boot/vmlinuz-6.1.0-56-cloud-amd64"), "x").unwrap();
        let (p, rel) = find_vmlinuz(&d).unwrap();
        assert_eq!(rel, "6.1.0-56-cloud-amd64");
        assert!(p.ends_with("boot/vmlinuz-6.1.0-56-cloud-amd64"));
        fs::remove_dir_all(&d).unwrap();
    }

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "xtask-vm-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }
}
