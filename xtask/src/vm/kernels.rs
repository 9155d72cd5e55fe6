//! Locating, downloading and unpacking Debian's stock cloud kernels.
//!
//! Package names are looked up with `apt-cache search` at run time; nothing about
//! versions or URLs is hard-coded. The newest package of each requested series
//! (e.g. "6.1", "6.12") is downloaded with `apt-get download` and unpacked with
//! `dpkg -x` into the cache directory; both steps are skipped when the unpacked
//! image is already present.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use serde::Serialize;

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

/// Validates a series string ("MAJOR.MINOR", digits only).
pub fn parse_series(series: &str) -> Result<(u32, u32)> {
    let (maj, min) = series.split_once('.').with_context(|| {
        format!("kernel series {series:?} is not of the form MAJOR.MINOR, e.g. 6.12")
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
    // The next character must start the patch level: "6.1." must not match "6.12.".
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

fn apt_search(series: &str) -> Result<String> {
    let re = apt_regex(series)?;
    let out = Command::new("apt-cache")
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

fn apt_update() -> Result<()> {
    eprintln!("vm: no kernel packages known to apt; running apt-get update");
    let st = Command::new("apt-get")
        .args(["update", "-q"])
        .status()
        .context("running apt-get update")?;
    if !st.success() {
        bail!("apt-get update failed ({st}); run it by hand (as root) and retry");
    }
    Ok(())
}

/// Finds `boot/vmlinuz-*` under an unpacked package root.
pub fn find_vmlinuz(unpacked: &Path) -> Result<(PathBuf, String)> {
    let boot = unpacked.join("boot");
    let rd = fs::read_dir(&boot).with_context(|| format!("reading {}", boot.display()))?;
    for e in rd {
        let e = e.with_context(|| format!("reading {}", boot.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(release) = name.strip_prefix("vmlinuz-") {
            return Ok((e.path(), release.to_owned()));
        }
    }
    bail!("no boot/vmlinuz-* in {}", unpacked.display())
}

/// Returns the cached image of `package`, downloading and unpacking it when absent.
fn fetch_package(cache: &Path, package: &str) -> Result<(PathBuf, String)> {
    let unpacked = cache.join("unpacked").join(package);
    if let Ok(found) = find_vmlinuz(&unpacked) {
        eprintln!("vm: {package}: cached in {}", unpacked.display());
        return Ok(found);
    }
    let debs = cache.join("debs");
    fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    let deb = match find_deb(&debs, package)? {
        Some(d) => d,
        None => {
            eprintln!("vm: {package}: apt-get download into {}", debs.display());
            let out = Command::new("apt-get")
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
        fs::remove_dir_all(&unpacked)
            .with_context(|| format!("removing incomplete {}", unpacked.display()))?;
    }
    fs::rename(&tmp, &unpacked)
        .with_context(|| format!("renaming {} to {}", tmp.display(), unpacked.display()))?;
    find_vmlinuz(&unpacked)
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
    let mut updated = false;
    for s in series {
        parse_series(s)?;
        let mut names = candidates(&apt_search(s)?, s);
        if names.is_empty() && !updated {
            updated = true;
            apt_update()?;
            names = candidates(&apt_search(s)?, s);
        }
        let mut errors = Vec::new();
        let mut chosen = None;
        // Newest first; an index may list a package the mirror no longer serves.
        for name in names.iter().take(3) {
            match fetch_package(cache, name) {
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
                    "no Debian package matches {} (series {s}); check /etc/apt/sources.list* \
                     has Debian main and run apt-get update",
                    apt_regex(s)?
                );
            }
            bail!(
                "could not fetch any kernel of series {s}: {}",
                errors.join("; ")
            );
        };
        eprintln!("vm: series {s}: {package} ({})", vmlinuz.display());
        out.push(KernelImage {
            series: (*s).to_owned(),
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
        assert!(parse_series("6").is_err());
        assert!(parse_series("6.x").is_err());
        assert_eq!(parse_series("6.12").ok(), Some((6, 12)));
        assert_eq!(
            apt_regex("6.1").ok().as_deref(),
            Some("^linux-image-6\\.1\\.[0-9].*-cloud-amd64$")
        );
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
