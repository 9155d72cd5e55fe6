//! One guest boot: the initramfs with the guest files and commands, qemu with a timeout,
//! the serial log parsed into per-command results; and several boots at a time.

use std::{
    fs,
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
    time::Duration,
};

use anyhow::{Context, Result};
use serde::Serialize;

use super::{initramfs, qemu, serial, CmdResult, GuestCmd, GuestFile, KernelImage};

/// Result of one guest boot.
#[derive(Debug, Clone, Serialize)]
pub struct GuestRun {
    pub kernel: KernelImage,
    /// `uname -r` printed inside the guest; `None` if init never got that far.
    pub kernel_release: Option<String>,
    pub results: Vec<CmdResult>,
    /// From qemu start to qemu exit (or kill).
    #[serde(rename = "duration_secs", serialize_with = "secs")]
    pub duration: Duration,
    pub log_path: PathBuf,
    /// Guest uptime when init started: the kernel's own boot time under TCG.
    pub kernel_boot_secs: Option<f64>,
    /// Guest time spent running the commands (uptime at the end minus at the start).
    pub commands_secs: Option<f64>,
    /// The guest's init ran to its end (`@@PW-DONE@@`).
    pub completed: bool,
    /// qemu was killed at the timeout.
    pub timed_out: bool,
    /// Init warnings (mount failures...) and parser warnings.
    pub warnings: Vec<String>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 100.0).round() / 100.0)
}

impl GuestRun {
    /// Boot problems: empty when the guest booted, ran every command and powered off.
    pub fn boot_problems(&self, cmds: &[GuestCmd]) -> Vec<String> {
        let mut p = Vec::new();
        if self.timed_out {
            p.push(format!(
                "timed out after {:.0} s",
                self.duration.as_secs_f64()
            ));
        }
        match &self.kernel_release {
            None => p.push("init never printed uname -r (kernel or init failed)".to_owned()),
            Some(r) if *r != self.kernel.release => {
                p.push(format!("guest runs {r}, expected {}", self.kernel.release))
            }
            Some(_) => {}
        }
        if !self.completed && !self.timed_out {
            p.push("guest stopped before @@PW-DONE@@".to_owned());
        }
        for c in cmds {
            match self.result(&c.name) {
                None => p.push(format!("{}: never ran", c.name)),
                Some(r) if r.rc.is_none() => p.push(format!("{}: did not finish", c.name)),
                Some(_) => {}
            }
        }
        p
    }

    pub fn result(&self, name: &str) -> Option<&CmdResult> {
        self.results.iter().find(|r| r.name == name)
    }
}

/// Where things go, and what goes into the guest.
#[derive(Debug, Clone)]
pub struct BootOptions {
    pub timeout: Duration,
    /// Static host executables copied into the guest.
    pub files: Vec<GuestFile>,
    /// Serial logs go to `<results_dir>/<kernel release>.log`.
    pub results_dir: PathBuf,
    /// Scratch space for the initramfs (a subdirectory per boot).
    pub work_dir: PathBuf,
    /// Keep the per-boot work subdirectory.
    pub keep: bool,
    /// Log file name suffix, for booting one kernel more than once in a run:
    /// `<results_dir>/<release>-<tag>.log` instead of `<release>.log`.
    pub log_tag: Option<String>,
}

impl BootOptions {
    /// Defaults for this repository: the static target/dist/portwatch (what `cargo xtask
    /// dist` ships) as /usr/bin/portwatch and the static churn workload as /usr/bin/churn,
    /// logs in target/vm-results, scratch in target/vm-work.
    pub fn for_repo(timeout: Duration) -> Result<Self> {
        let target = crate::build::target_dir()?;
        let pw = crate::dist::dist_dir()?.join("portwatch");
        if !pw.is_file() {
            anyhow::bail!(
                "{} is missing: build it with `cargo xtask dist` (or drop --no-build)",
                pw.display()
            );
        }
        let churn = crate::dist::vm_churn()?;
        if !churn.is_file() {
            anyhow::bail!(
                "{} is missing: `cargo xtask dist` builds it (or drop --no-build)",
                churn.display()
            );
        }
        Ok(Self {
            timeout,
            files: vec![
                GuestFile {
                    host: pw,
                    guest: "/usr/bin/portwatch".into(),
                },
                GuestFile {
                    host: churn,
                    guest: format!("/usr/bin/{}", super::matrix::CHURN_PROGRAM),
                },
            ],
            results_dir: target.join("vm-results"),
            work_dir: target.join("vm-work"),
            keep: false,
            log_tag: None,
        })
    }
}

/// Boots `kernel` with `opts` and runs `cmds`. A timeout is not an `Err`: the run comes
/// back with `timed_out` set and whatever the log holds; see [`GuestRun::boot_problems`].
pub fn boot_and_run_with(
    kernel: &KernelImage,
    cmds: &[GuestCmd],
    opts: &BootOptions,
) -> Result<GuestRun> {
    for c in cmds {
        c.validate()?;
    }
    let busybox = initramfs::find_busybox()?;
    static BOOTS: AtomicUsize = AtomicUsize::new(0);
    let work = opts.work_dir.join(format!(
        "{}-{}-{}",
        kernel.release,
        std::process::id(),
        BOOTS.fetch_add(1, Ordering::SeqCst)
    ));
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let initrd = work.join("initramfs.cpio.gz");
    let archive = initramfs::build_archive(&busybox, &opts.files, cmds)?;
    initramfs::write_gzip(&archive, &initrd)?;
    let log_path = opts.results_dir.join(match &opts.log_tag {
        Some(tag) => format!("{}-{tag}.log", kernel.release),
        None => format!("{}.log", kernel.release),
    });
    let run = qemu::boot(&kernel.vmlinuz, &initrd, opts.timeout, &log_path);
    if !opts.keep {
        let _ = fs::remove_dir_all(&work);
    }
    let q = run.with_context(|| format!("booting {}", kernel.package))?;
    let parsed = serial::parse_log(&q.log);
    let mut warnings = parsed.warnings;
    let qemu_err = q.stderr.trim();
    if !qemu_err.is_empty() {
        warnings.push(format!("qemu stderr: {qemu_err}"));
    }
    if !parsed.done && !q.timed_out {
        if let Some(st) = q.exit {
            warnings.push(format!("qemu exited ({st}) before the guest finished"));
        }
    }
    Ok(GuestRun {
        kernel: kernel.clone(),
        kernel_release: parsed.kernel_release,
        results: parsed.results,
        duration: q.duration,
        log_path,
        kernel_boot_secs: parsed.uptime_start,
        commands_secs: parsed
            .uptime_start
            .zip(parsed.uptime_end)
            .map(|(a, b)| ((b - a) * 100.0).round() / 100.0),
        completed: parsed.done,
        timed_out: q.timed_out,
        warnings,
    })
}

/// Boots every kernel, at most `jobs` at a time (a work queue: a free slot takes the
/// next kernel). Results come back in the order of `kernels`.
pub fn run_all(
    kernels: &[KernelImage],
    cmds: &[GuestCmd],
    opts: &BootOptions,
    jobs: usize,
) -> Vec<Result<GuestRun>> {
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<Result<GuestRun>>>> =
        kernels.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1).min(kernels.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(k) = kernels.get(i) else { break };
                let r = boot_and_run_with(k, cmds, opts);
                if let Ok(mut slot) = slots[i].lock() {
                    *slot = Some(r);
                }
            });
        }
    });
    slots
        .into_iter()
        .zip(kernels)
        .map(|(slot, k)| {
            slot.into_inner().ok().flatten().unwrap_or_else(|| {
                Err(anyhow::anyhow!(
                    "the boot of {} reported nothing",
                    k.package
                ))
            })
        })
        .collect()
}
