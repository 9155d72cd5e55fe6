//! Booting one kernel + initramfs under qemu (TCG) with the serial console captured,
//! and killing the guest (the qemu process spawned here, by pid) at a timeout.

use std::{
    fs,
    io::{Read, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use crate::cmd::ChildGuard;

pub const QEMU: &str = "qemu-system-x86_64";

/// Raw outcome of one qemu run.
#[derive(Debug)]
pub struct QemuRun {
    /// The serial console output (what the log file holds before the trailer).
    pub log: String,
    /// qemu's own stderr (also appended to the log file).
    pub stderr: String,
    pub duration: Duration,
    pub timed_out: bool,
    /// qemu's own exit status, if it exited by itself.
    pub exit: Option<std::process::ExitStatus>,
}

/// The qemu command line (documented in the module; tested below).
pub fn qemu_args(kernel: &Path, initrd: &Path) -> Vec<String> {
    let mut a: Vec<String> = [
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-m",
        "1024",
        "-smp",
        "1",
        "-nographic",
        "-no-reboot",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    a.push("-kernel".into());
    a.push(kernel.display().to_string());
    a.push("-initrd".into());
    a.push(initrd.display().to_string());
    a.push("-append".into());
    a.push("console=ttyS0 panic=-1 quiet".into());
    a
}

fn pump(mut src: impl Read, mut sink: Option<fs::File>) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match src.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                all.extend_from_slice(&buf[..n]);
                if let Some(f) = sink.as_mut() {
                    // The log is best effort; the in-memory copy is what gets parsed.
                    let _ = f.write_all(&buf[..n]);
                }
            }
        }
    }
    all
}

/// Boots `kernel` with `initrd`, streaming the serial console into `log_path`.
pub fn boot(kernel: &Path, initrd: &Path, timeout: Duration, log_path: &Path) -> Result<QemuRun> {
    if let Some(dir) = log_path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let log_file =
        fs::File::create(log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let start = Instant::now();
    let child = Command::new(QEMU)
        .args(qemu_args(kernel, initrd))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!("starting {QEMU}; install qemu-system-x86 (cargo xtask setup does)")
        })?;
    let mut guard = ChildGuard(child);
    let stdout = guard
        .0
        .stdout
        .take()
        .context("qemu stdout was not captured")?;
    let stderr = guard
        .0
        .stderr
        .take()
        .context("qemu stderr was not captured")?;
    let out_t = thread::spawn(move || pump(stdout, Some(log_file)));
    let err_t = thread::spawn(move || pump(stderr, None));

    let mut timed_out = false;
    let exit = loop {
        if let Some(st) = guard.0.try_wait().context("waiting for qemu")? {
            break Some(st);
        }
        if start.elapsed() >= timeout {
            timed_out = true;
            guard.0.kill().context("killing qemu after the timeout")?;
            guard.0.wait().context("reaping qemu")?;
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let duration = start.elapsed();
    let out = out_t.join().unwrap_or_default();
    let err = err_t.join().unwrap_or_default();
    let log = String::from_utf8_lossy(&out).into_owned();
    let stderr = String::from_utf8_lossy(&err).into_owned();
    let mut tail = String::new();
    if !err.is_empty() {
        tail.push_str(&format!("\n@@PW-QEMU-STDERR@@\n{stderr}"));
    }
    if timed_out {
        tail.push_str(&format!(
            "\n@@PW-TIMEOUT after {} s: qemu killed@@\n",
            timeout.as_secs()
        ));
    }
    if !tail.is_empty() {
        // Only the file gets the trailer; `log` stays pure serial output for the parser.
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(log_path)
            .with_context(|| format!("appending to {}", log_path.display()))?;
        f.write_all(tail.as_bytes())
            .with_context(|| format!("appending to {}", log_path.display()))?;
    }
    Ok(QemuRun {
        log,
        stderr,
        duration,
        timed_out,
        exit,
    })
}

/// Checks qemu is installed (before spending time on builds and downloads).
pub fn check_qemu() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(QEMU))
        .find(|p| p.is_file())
        .with_context(|| format!("{QEMU} not found in PATH; run `cargo xtask setup` or apt-get install qemu-system-x86"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_is_tcg_serial_no_reboot() {
        let a = qemu_args(Path::new("/k/vmlinuz"), Path::new("/w/initrd.gz")).join(" ");
        assert_eq!(
            a,
            "-accel tcg -cpu max -m 1024 -smp 1 -nographic -no-reboot -kernel /k/vmlinuz \
             -initrd /w/initrd.gz -append console=ttyS0 panic=-1 quiet"
        );
    }
}
