//! The one list of shipped files: `[package.metadata.deb] assets` in
//! portwatch/Cargo.toml (`[source, destination, mode]`, cargo-deb's format). cargo-deb
//! reads it for the Debian package; the tarball is made from the same entries, each
//! placed by its destination (see [`tar_path`]).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::cmd;

/// One shipped file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asset {
    pub source: PathBuf,
    /// Installed path in the Debian package, relative to `/` (e.g. `usr/sbin/portwatch`).
    pub dest: String,
    pub mode: u32,
}

impl Asset {
    /// Its path inside the tarball's top directory.
    pub fn tar_path(&self) -> String {
        let name = self
            .source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        tar_path(&self.dest, &name)
    }
}

/// Where a file installed at `dest` (Debian path) goes in the tarball: binaries and
/// docs at the top, man pages under man/, completions under completions/ (with their
/// source names, which say the shell), anything else at its installed path.
pub fn tar_path(dest: &str, source_name: &str) -> String {
    let dir = match dest.rsplit_once('/') {
        Some((d, _)) => d,
        None => "",
    };
    if dir == "usr/sbin" || dir == "usr/bin" || dir.starts_with("usr/share/doc/") {
        source_name.to_owned()
    } else if dir.starts_with("usr/share/man/") {
        format!("man/{source_name}")
    } else if dir.contains("completion") {
        format!("completions/{source_name}")
    } else {
        dest.to_owned()
    }
}

/// cargo-deb's source path: `target/release/...` stands for the release directory of
/// the target being packaged; anything else is relative to the package.
fn resolve_source(source: &str, package: &Path, release: &Path) -> PathBuf {
    match source.strip_prefix("target/release/") {
        Some(rest) => release.join(rest),
        None => package.join(source),
    }
}

/// Expands a `*` in the file name (the only glob the list uses), sorted.
fn expand(path: &Path) -> Result<Vec<PathBuf>> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some((prefix, suffix)) = name.split_once('*') else {
        return Ok(vec![path.to_owned()]);
    };
    let dir = path.parent().context("asset glob without a directory")?;
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(suffix))
        })
        .collect();
    found.sort();
    if found.is_empty() {
        bail!("asset {} matches no file", path.display());
    }
    Ok(found)
}

/// Parses the asset entries (JSON, as `cargo metadata` shows the manifest's metadata).
pub fn parse(entries: &serde_json::Value, package: &Path, release: &Path) -> Result<Vec<Asset>> {
    let list = entries
        .as_array()
        .context("[package.metadata.deb] assets is not a list")?;
    let mut out = Vec::new();
    for e in list {
        let (Some(src), Some(dest), Some(mode)) = (e[0].as_str(), e[1].as_str(), e[2].as_str())
        else {
            bail!("asset entry {e} is not [source, destination, mode]");
        };
        let mode = u32::from_str_radix(mode, 8)
            .with_context(|| format!("asset {src}: mode {mode:?} is not octal"))?;
        for source in expand(&resolve_source(src, package, release))? {
            if !source.is_file() {
                bail!("asset {} does not exist", source.display());
            }
            let dest = if dest.ends_with('/') {
                let name = source
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                format!("{dest}{name}")
            } else {
                dest.to_owned()
            };
            out.push(Asset { source, dest, mode });
        }
    }
    Ok(out)
}

/// The asset list of the package in `package` (its directory), with `target/release/`
/// standing for `release`.
pub fn from_manifest(package: &Path, release: &Path) -> Result<Vec<Asset>> {
    let out = cmd::output(cmd::cargo().args(["metadata", "--format-version", "1", "--no-deps"]))?;
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("cargo metadata printed invalid JSON")?;
    let manifest = package.join("Cargo.toml");
    let pkg = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["manifest_path"].as_str().map(Path::new) == Some(manifest.as_path()))
        .with_context(|| format!("cargo metadata does not list {}", manifest.display()))?;
    parse(&pkg["metadata"]["deb"]["assets"], package, release)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tarball_places_files_by_their_debian_destination() {
        assert_eq!(tar_path("usr/sbin/portwatch", "portwatch"), "portwatch");
        assert_eq!(
            tar_path("usr/share/doc/portwatch/README.md", "README.md"),
            "README.md"
        );
        assert_eq!(
            tar_path("usr/share/man/man1/portwatch.1", "portwatch.1"),
            "man/portwatch.1"
        );
        assert_eq!(
            tar_path(
                "usr/share/bash-completion/completions/portwatch",
                "portwatch.bash"
            ),
            "completions/portwatch.bash"
        );
        assert_eq!(
            tar_path("usr/share/zsh/vendor-completions/_portwatch", "_portwatch"),
            "completions/_portwatch"
        );
        assert_eq!(
            tar_path("lib/systemd/system/portwatch.service", "portwatch.service"),
            "lib/systemd/system/portwatch.service"
        );
    }

    #[test]
    fn parses_cargo_deb_entries_with_globs_and_target_release() {
        let dir = std::env::temp_dir().join(format!("xtask-assets-{}", std::process::id()));
        let release = dir.join("rel");
        std::fs::create_dir_all(release.join("man")).unwrap();
        for f in ["man/b.1", "man/a.1", "man/skip.txt", "bin"] {
            std::fs::write(release.join(f), b"x").unwrap();
        }
        std::fs::write(dir.join("README.md"), b"r").unwrap();
        let entries = serde_json::json!([
            ["target/release/bin", "usr/sbin/portwatch", "755"],
            ["target/release/man/*.1", "usr/share/man/man1/", "644"],
            ["README.md", "usr/share/doc/portwatch/", "644"],
        ]);
        let list = parse(&entries, &dir, &release).unwrap();
        let got: Vec<(String, u32)> = list.iter().map(|a| (a.dest.clone(), a.mode)).collect();
        assert_eq!(
            got,
            [
                ("usr/sbin/portwatch".to_owned(), 0o755),
                ("usr/share/man/man1/a.1".to_owned(), 0o644),
                ("usr/share/man/man1/b.1".to_owned(), 0o644),
                ("usr/share/doc/portwatch/README.md".to_owned(), 0o644),
            ]
        );
        assert_eq!(list[0].source, release.join("bin"));
        assert!(parse(
            &serde_json::json!([["missing", "usr/bin/", "755"]]),
            &dir,
            &release
        )
        .is_err());
        assert!(parse(
            &serde_json::json!([["README.md", "x", "9z"]]),
            &dir,
            &release
        )
        .is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
