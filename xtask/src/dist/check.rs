//! Checks of the artefacts `cargo xtask dist` wrote (a stage of `cargo xtask test`):
//! the binary is static, small and quick to start; the tarball holds every asset with
//! root ownership and the commit's time; the Debian package installs into a fresh Debian
//! root and leaves nothing behind (see [`super::debroot`]).

use std::{
    fs,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};

use super::{assets, debroot, tarball, Dist};
use crate::cmd;

/// Targets from the issue: a static binary under 10 MiB that prints `--help` in < 20 ms.
pub const MAX_BINARY_BYTES: u64 = 10 * 1024 * 1024;
pub const MAX_HELP: Duration = Duration::from_millis(20);

/// What the checks measured, for the summary.
#[derive(Debug, Default)]
pub struct Measured {
    pub binary_bytes: u64,
    pub help_median: Duration,
    pub debroot_secs: f64,
}

/// All the checks; the first failure is the error.
pub fn all(d: &Dist) -> Result<Measured> {
    let mut m = binary(&d.binary, &d.version)?;
    tarball_contents(d)?;
    let t = Instant::now();
    debroot::check_package(&d.deb, &d.version)?;
    m.debroot_secs = t.elapsed().as_secs_f64();
    Ok(m)
}

/// `ldd`'s verdict on a static executable (exit 1 with this message).
pub fn ldd_says_static(ldd_output: &str) -> bool {
    ldd_output.contains("not a dynamic executable") || ldd_output.contains("statically linked")
}

/// The median of `samples`.
pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

fn binary(bin: &Path, version: &str) -> Result<Measured> {
    let bytes = fs::metadata(bin)
        .with_context(|| format!("stat {}", bin.display()))?
        .len();
    println!(
        "artefacts: {} is {bytes} bytes ({:.1} MiB)",
        bin.display(),
        bytes as f64 / 1048576.0
    );
    ensure!(
        bytes < MAX_BINARY_BYTES,
        "{} is {bytes} bytes, over the 10 MiB target",
        bin.display()
    );
    let ldd = cmd::output(cmd::command("ldd").arg(bin))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&ldd.stdout),
        String::from_utf8_lossy(&ldd.stderr)
    );
    println!("artefacts: ldd {}: {}", bin.display(), text.trim());
    ensure!(
        ldd_says_static(&text),
        "ldd does not call {} static: {}",
        bin.display(),
        text.trim()
    );
    let out = cmd::output(cmd::command(bin).arg("--version"))?;
    let v = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && v.contains(version) && v.contains("commit ") && v.contains("aya "),
        "`portwatch --version` printed {:?}: expected the version {version}, the commit and aya",
        v.trim()
    );
    // Start-up: the median of 21 runs of `--help` (the first warms the page cache).
    let mut samples = Vec::new();
    for _ in 0..22 {
        let t = Instant::now();
        let out = cmd::output(cmd::command(bin).arg("--help"))?;
        let el = t.elapsed();
        ensure!(
            out.status.success()
                && String::from_utf8_lossy(&out.stdout).contains("Usage: portwatch"),
            "`portwatch --help` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        samples.push(el);
    }
    samples.remove(0);
    let help = median(samples);
    println!(
        "artefacts: `portwatch --help` median {:.2} ms over 21 runs",
        help.as_secs_f64() * 1e3
    );
    ensure!(
        help < MAX_HELP,
        "`portwatch --help` takes {:.1} ms (median), over the 20 ms target",
        help.as_secs_f64() * 1e3
    );
    Ok(Measured {
        binary_bytes: bytes,
        help_median: help,
        ..Measured::default()
    })
}

/// `tar -tv` lines: mode, owner, and name of each entry.
fn tarball_contents(d: &Dist) -> Result<()> {
    let epoch = super::source_date_epoch()?;
    let release = super::musl_release_dir()?;
    let list = assets::from_manifest(&cmd::workspace_root().join("portwatch"), &release)?;
    let out = cmd::output(
        cmd::command("tar")
            .args([
                "--list",
                "--verbose",
                "--full-time",
                "--numeric-owner",
                "-zf",
            ])
            .arg(&d.tarball),
    )?;
    ensure!(
        out.status.success(),
        "tar cannot list {}: {}",
        d.tarball.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let top = tarball::top_dir(&d.version);
    let when = chrono::DateTime::from_timestamp(epoch as i64, 0)
        .context("SOURCE_DATE_EPOCH out of range")?
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    for line in text.lines() {
        ensure!(
            line.contains(" 0/0 ") && line.contains(&when),
            "tarball entry not owned by 0/0 at {when} (SOURCE_DATE_EPOCH): {line}"
        );
    }
    for a in &list {
        let name = format!("{top}/{}", a.tar_path());
        let Some(line) = text.lines().find(|l| l.ends_with(&format!(" {name}"))) else {
            bail!("{} lacks {name}:\n{text}", d.tarball.display());
        };
        let want = if a.mode & 0o111 != 0 {
            "-rwxr-xr-x"
        } else {
            "-rw-r--r--"
        };
        ensure!(line.starts_with(want), "{name} should be {want}: {line}");
    }
    let files = text.lines().filter(|l| l.starts_with('-')).count();
    ensure!(
        files == list.len(),
        "{} holds {files} files, the asset list {}",
        d.tarball.display(),
        list.len()
    );
    println!(
        "artefacts: {} holds the {} assets, owner 0/0, mtime {when}",
        d.tarball.display(),
        list.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_verdicts() {
        assert!(ldd_says_static("\tnot a dynamic executable\n"));
        assert!(!ldd_says_static(
            "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x7f)\n"
        ));
    }

    #[test]
    fn median_of_samples() {
        let ms = Duration::from_millis;
        assert_eq!(median(vec![ms(9), ms(1), ms(5)]), ms(5));
        assert_eq!(median(vec![]), ms(0));
    }
}
