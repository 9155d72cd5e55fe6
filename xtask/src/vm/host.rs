//! The host row of the matrix: the guest commands run on this machine with the same
//! static binary as the guests (portwatch creates its own network namespaces for every
//! scenario and quiz, so the host's network configuration is never touched).

use std::{
    io::Read,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::{CmdResult, GuestCmd, GuestFile};
use crate::cmd::ChildGuard;

/// The host command line for a guest command: `portwatch` becomes `binary`.
pub fn host_argv(cmd: &GuestCmd, binary: &Path) -> Vec<String> {
    let mut argv = cmd.argv.clone();
    if argv.first().is_some_and(|p| p == "portwatch") {
        argv[0] = binary.display().to_string();
    }
    argv
}

/// A directory of symbolic links, one per guest file, named as the guest's own copy
/// (`/usr/bin/churn` -> `DIR/churn`): first in PATH, the host runs what the guest runs.
pub fn bin_dir(files: &[GuestFile], dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for f in files {
        let name = Path::new(&f.guest)
            .file_name()
            .with_context(|| format!("guest file {} has no file name", f.guest))?;
        let link = dir.join(name);
        let _ = std::fs::remove_file(&link);
        let target = std::path::absolute(&f.host)
            .with_context(|| format!("resolving {}", f.host.display()))?;
        std::os::unix::fs::symlink(&target, &link)
            .with_context(|| format!("linking {} to {}", link.display(), target.display()))?;
    }
    Ok(())
}

fn read_all(mut r: impl Read) -> Vec<u8> {
    let mut v = Vec::new();
    let _ = r.read_to_end(&mut v);
    v
}

/// Runs one command with a timeout. The result's output is stderr then stdout, the
/// order the guest's serial console usually shows them in; `rc` is `None` when the
/// command was killed at the timeout. `bin_dir` (see [`bin_dir`]) goes first in PATH.
pub fn run_one(
    cmd: &GuestCmd,
    binary: &Path,
    bin_dir: Option<&Path>,
    timeout: Duration,
) -> Result<CmdResult> {
    let argv = host_argv(cmd, binary);
    let (prog, args) = argv
        .split_first()
        .with_context(|| format!("host command {} has no program", cmd.name))?;
    let start = Instant::now();
    let mut command = Command::new(prog);
    if let Some(dir) = bin_dir {
        let mut path = std::ffi::OsString::from(dir);
        if let Some(old) = std::env::var_os("PATH") {
            path.push(":");
            path.push(old);
        }
        command.env("PATH", path);
    }
    let child = command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {} on the host", argv.join(" ")))?;
    let mut guard = ChildGuard(child);
    let out = guard.0.stdout.take().context("stdout was not captured")?;
    let err = guard.0.stderr.take().context("stderr was not captured")?;
    let out_t = thread::spawn(move || read_all(out));
    let err_t = thread::spawn(move || read_all(err));
    let rc = loop {
        if let Some(st) = guard.0.try_wait().context("waiting for a host command")? {
            use std::os::unix::process::ExitStatusExt;
            break Some(st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0)));
        }
        if start.elapsed() >= timeout {
            guard
                .0
                .kill()
                .context("killing a host command after the timeout")?;
            guard.0.wait().context("reaping a host command")?;
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let secs = start.elapsed().as_secs_f64();
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    let mut output = String::from_utf8_lossy(&stderr).into_owned();
    if !output.is_empty() && !output.ends_with('\n') {
        output.push('\n');
    }
    output.push_str(&String::from_utf8_lossy(&stdout));
    if rc.is_none() {
        output.push_str(&format!("\n(killed after {} s)", timeout.as_secs()));
    }
    Ok(CmdResult {
        name: cmd.name.clone(),
        rc,
        output: output.trim_end().to_owned(),
        secs: Some((secs * 100.0).round() / 100.0),
    })
}

/// The running kernel's release (`uname -r`).
pub fn release() -> Result<String> {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .context("reading /proc/sys/kernel/osrelease (is /proc mounted?)")
}

/// "6.18" from "6.18.44-fc-v669".
pub fn series_of(release: &str) -> String {
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    match (it.next(), it.next()) {
        (Some(a), Some(b)) => format!("{a}.{b}"),
        _ => release.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portwatch_becomes_the_static_binary() {
        let c = GuestCmd::new("p", ["portwatch", "probes", "--json"]);
        assert_eq!(
            host_argv(&c, Path::new("/w/target/dist/portwatch")),
            ["/w/target/dist/portwatch", "probes", "--json"]
        );
        let c = GuestCmd::new("u", ["uname", "-r"]);
        assert_eq!(host_argv(&c, Path::new("/x")), ["uname", "-r"]);
    }

    #[test]
    fn bin_dir_puts_the_guest_files_first_in_path() {
        let dir = std::env::temp_dir().join(format!("pw-vm-bin-{}", std::process::id()));
        let files = [GuestFile {
            host: "/bin/sh".into(),
            guest: "/usr/bin/pwshell".into(),
        }];
        bin_dir(&files, &dir).unwrap();
        let c = GuestCmd::new("p", ["pwshell", "-c", "echo in-path"]);
        let r = run_one(
            &c,
            Path::new("/unused"),
            Some(&dir),
            Duration::from_secs(10),
        )
        .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!((r.rc, r.output.as_str()), (Some(0), "in-path"));
    }

    #[test]
    fn series_from_release() {
        assert_eq!(series_of("6.18.44-fc-v669"), "6.18");
        assert_eq!(series_of("6.1.0-56-cloud-amd64"), "6.1");
        assert_eq!(series_of("weird"), "weird");
    }

    #[test]
    fn run_one_captures_both_streams_rc_and_timeout() {
        let c = GuestCmd::new("sh", ["sh", "-c", "echo err >&2; echo '{\"a\":1}'; exit 3"]);
        let r = run_one(&c, Path::new("/unused"), None, Duration::from_secs(10)).unwrap();
        assert_eq!(r.rc, Some(3));
        assert_eq!(r.output, "err\n{\"a\":1}");
        let c = GuestCmd::new("slow", ["sleep", "5"]);
        let r = run_one(&c, Path::new("/unused"), None, Duration::from_millis(200)).unwrap();
        assert_eq!(r.rc, None);
        assert!(r.secs.unwrap() < 4.0);
        assert!(r.output.contains("killed after"));
    }
}
