//! `portwatch-VERSION-x86_64-linux-musl.tar.gz`, reproducibly: the files are staged
//! under one top directory with the modes of the asset list, then GNU tar writes them
//! sorted by name with owner root:root and every mtime at SOURCE_DATE_EPOCH, and
//! `gzip -n` leaves out the name and time it would otherwise record.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{bail, Context, Result};

use super::Asset;
use crate::cmd;

/// The tarball's top directory: `portwatch-VERSION-x86_64-linux-musl`.
pub fn top_dir(version: &str) -> String {
    format!("portwatch-{version}-x86_64-linux-musl")
}

/// GNU tar arguments that make the archive depend only on the files' contents, names
/// and modes.
pub fn tar_args(epoch: u64) -> Vec<String> {
    [
        "--sort=name",
        "--format=gnu",
        "--owner=0",
        "--group=0",
        "--numeric-owner",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([format!("--mtime=@{epoch}")])
    .collect()
}

pub fn write(assets: &[Asset], version: &str, epoch: u64, out: &Path) -> Result<()> {
    let stage = out.with_extension("stage");
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    }
    let top = top_dir(version);
    let root = stage.join(&top);
    let mut placed: Vec<PathBuf> = Vec::new();
    for a in assets {
        let path = root.join(a.tar_path());
        if placed.contains(&path) {
            bail!("two assets land on {} in the tarball", a.tar_path());
        }
        if let Some(d) = path.parent() {
            fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        fs::copy(&a.source, &path)
            .with_context(|| format!("copying {} to {}", a.source.display(), path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(a.mode))
            .with_context(|| format!("chmod {:o} {}", a.mode, path.display()))?;
        placed.push(path);
    }
    // Directories get one mode whatever the umask.
    let mut dirs = vec![root.clone()];
    while let Some(d) = dirs.pop() {
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod 755 {}", d.display()))?;
        for e in fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                dirs.push(p);
            }
        }
    }
    let gz = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut tar = cmd::command("tar");
    tar.args(tar_args(epoch))
        .arg("-C")
        .arg(&stage)
        .args(["-cf", "-", &top])
        .stdout(Stdio::piped());
    let mut tar_child = tar.spawn().context("starting GNU tar")?;
    let tar_out = tar_child
        .stdout
        .take()
        .context("tar stdout was not captured")?;
    let gzip = cmd::command("gzip")
        .args(["-n", "-9", "-c"])
        .stdin(tar_out)
        .stdout(gz)
        .status()
        .context("running gzip")?;
    let tar_st = tar_child.wait().context("waiting for tar")?;
    if !tar_st.success() || !gzip.success() {
        bail!(
            "tar ({}) | gzip ({}) failed writing {}",
            cmd::describe_status(tar_st),
            cmd::describe_status(gzip),
            out.display()
        );
    }
    fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_is_byte_identical_whatever_the_file_times() {
        let dir = std::env::temp_dir().join(format!("xtask-tarball-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("portwatch"), dir.join("README.md"));
        fs::write(&a, b"bin").unwrap();
        fs::write(&b, b"readme").unwrap();
        let assets = vec![
            Asset {
                source: b.clone(),
                dest: "usr/share/doc/portwatch/README.md".into(),
                mode: 0o644,
            },
            Asset {
                source: a.clone(),
                dest: "usr/sbin/portwatch".into(),
                mode: 0o755,
            },
        ];
        let (t1, t2) = (dir.join("1.tar.gz"), dir.join("2.tar.gz"));
        write(&assets, "0.1.0", 1_700_000_000, &t1).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        fs::write(&a, b"bin").unwrap(); // a new mtime, same content
        write(&assets, "0.1.0", 1_700_000_000, &t2).unwrap();
        assert_eq!(fs::read(&t1).unwrap(), fs::read(&t2).unwrap());
        let list = std::process::Command::new("tar")
            .args(["-tvzf"])
            .arg(&t1)
            .output()
            .unwrap();
        let list = String::from_utf8_lossy(&list.stdout);
        let lines: Vec<&str> = list.lines().collect();
        assert_eq!(lines.len(), 3, "{list}");
        assert!(
            lines[0].starts_with("drwxr-xr-x 0/0")
                && lines[0].ends_with("portwatch-0.1.0-x86_64-linux-musl/"),
            "{list}"
        );
        assert!(
            lines[1].starts_with("-rw-r--r-- 0/0")
                && lines[1].contains("2023-11-14")
                && lines[1].ends_with("/README.md"),
            "{list}"
        );
        assert!(
            lines[2].starts_with("-rwxr-xr-x 0/0") && lines[2].ends_with("/portwatch"),
            "{list}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
