//! `cargo xtask vm`: boot Debian's stock cloud kernels under qemu (TCG) with a busybox
//! initramfs that runs portwatch commands, and report a kernel x command matrix.
//!
//! Building blocks for the matrix logic on top:
//! - [`prepare_kernels`]: newest Debian cloud kernel of each series (apt, cached in
//!   `target/vm-cache/`);
//! - [`boot::boot_and_run_with`] / [`run_all`]: one guest boot running a list of
//!   [`GuestCmd`], parsed into a [`GuestRun`] (full log in `target/vm-results/`);
//! - [`render_matrix`] / [`MatrixReport`]: the table and its JSON form.
//!
//! The default run (no `--cmd`) is the backend matrix: in every guest, and on the host,
//! `portwatch probes --json`, `portwatch selftest --probe B --json` for each backend and
//! `portwatch quiz --all --json`; [`matrix`] turns their JSON into kernel x backend ->
//! pass / FAIL / refused, checks that the passing backends agree, summarises the quizzes
//! and state checks, and renders the tables (target/vm-results/matrix.{json,md}, and the
//! README section with `--update-readme`).

mod boot;
mod host;
mod initramfs;
mod kernels;
pub mod matrix;
mod qemu;
mod readme;
mod serial;

use std::{
    fs,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
pub use boot::{run_all, BootOptions, GuestRun};
pub use initramfs::{GuestCmd, GuestFile};
pub use kernels::KernelImage;
use serde::Serialize;
pub use serial::CmdResult;

/// Arguments of `cargo xtask vm`.
#[derive(clap::Args, Debug, Clone)]
pub struct VmArgs {
    /// Kernel series to boot: MAJOR.MINOR for the newest Debian cloud kernel of that
    /// series, MAJOR for the newest MAJOR.x the registry serves (the row is labelled with
    /// the MAJOR.MINOR it resolved to). Found through a private apt configuration under
    /// target/vm-cache/apt, downloaded once and cached there.
    #[arg(long, value_delimiter = ',', default_value = "5.10,6.1,6.12,6.18,7")]
    pub kernels: Vec<String>,
    /// Seconds before a guest is killed and reported as failed.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Keep the work directories (initramfs) under target/vm-work/.
    #[arg(long)]
    pub keep: bool,
    /// JSON results file [default: target/vm-results/results.json].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Do not build; use the existing static target/dist/portwatch (from `cargo xtask dist`).
    #[arg(long)]
    pub no_build: bool,
    /// Guests booted at the same time (each qemu TCG guest keeps one host core busy;
    /// measured on the 2-core build machine with the default matrix, 2 at a time: about
    /// 35 s wall for 6.1+6.12, plus about 5 s for the host row).
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// Guest command NAME=PROGRAM ARGS... (repeatable; replaces the default list).
    #[arg(long = "cmd", value_name = "NAME=PROGRAM ARGS")]
    pub cmds: Vec<String>,
    /// Also fail when a guest command exits non-zero (by default only boot failures,
    /// timeouts and unfinished commands fail). Only for `--cmd` runs: the default
    /// matrix judges every command itself.
    #[arg(long)]
    pub strict: bool,
    /// Replace the README section between `<!-- vm-matrix:begin -->` and
    /// `<!-- vm-matrix:end -->` with the matrix (adds the section if absent).
    #[arg(long, conflicts_with = "cmds")]
    pub update_readme: bool,
    /// Rounds of each churn variant (untraced, and traced per backend) in every guest
    /// and on the host; the medians are taken over them.
    #[arg(long, default_value_t = matrix::ChurnPlan::default().rounds)]
    pub churn_rounds: usize,
    /// Also time `trace --port 9` (a filter matching nothing) in the churn rounds: one
    /// more tracer start per backend and round, a few seconds each under TCG.
    #[arg(long)]
    pub churn_port9: bool,
    /// Leave out the host row (by default the same commands run on this machine, as
    /// root, with the same static target/dist/portwatch).
    #[arg(long)]
    pub no_host: bool,
}

/// Newest Debian cloud kernel of each series (e.g. `["6.1", "6.12"]`), downloaded and
/// unpacked into target/vm-cache/ unless already there.
pub fn prepare_kernels(series: &[&str]) -> Result<Vec<KernelImage>> {
    kernels::prepare_kernels_in(&crate::build::target_dir()?.join("vm-cache"), series)
}

/// One kernel's row in the JSON report.
#[derive(Debug, Serialize)]
pub struct RunReport<'a> {
    #[serde(flatten)]
    pub run: &'a GuestRun,
    /// Empty when the boot itself worked.
    pub boot_problems: Vec<String>,
}

/// The JSON results file.
#[derive(Debug, Serialize)]
pub struct MatrixReport<'a> {
    pub commands: &'a [GuestCmd],
    pub jobs: usize,
    pub total_secs: f64,
    pub runs: Vec<RunReport<'a>>,
}

impl<'a> MatrixReport<'a> {
    pub fn new(cmds: &'a [GuestCmd], runs: &'a [GuestRun], jobs: usize, total: Duration) -> Self {
        Self {
            commands: cmds,
            jobs,
            total_secs: (total.as_secs_f64() * 100.0).round() / 100.0,
            runs: runs
                .iter()
                .map(|r| RunReport {
                    run: r,
                    boot_problems: r.boot_problems(cmds),
                })
                .collect(),
        }
    }
}

fn cell(run: &GuestRun, name: &str) -> String {
    let Some(r) = run.result(name) else {
        return "FAIL not run".to_owned();
    };
    let status = match r.rc {
        Some(0) => "ok".to_owned(),
        Some(rc) => format!("FAIL rc={rc}"),
        None if run.timed_out => "FAIL timeout".to_owned(),
        None => "FAIL unfinished".to_owned(),
    };
    match r.secs {
        Some(t) => format!("{status} {t:.1}s"),
        None => status,
    }
}

/// The kernel x command table (rows: kernels; columns: boot time, then one per command).
pub fn render_matrix(cmds: &[GuestCmd], runs: &[GuestRun]) -> String {
    let mut header = vec![
        "kernel".to_owned(),
        "uname -r".to_owned(),
        "boot".to_owned(),
    ];
    header.extend(cmds.iter().map(|c| c.name.clone()));
    let mut rows = vec![header];
    for r in runs {
        let problems = r.boot_problems(cmds);
        let boot = if r.timed_out {
            format!("TIMEOUT {:.0}s", r.duration.as_secs_f64())
        } else if problems.is_empty() {
            format!("ok {:.1}s", r.duration.as_secs_f64())
        } else {
            format!("FAIL {:.1}s", r.duration.as_secs_f64())
        };
        let mut row = vec![
            r.kernel.series.clone(),
            r.kernel_release.clone().unwrap_or_else(|| "?".into()),
            boot,
        ];
        row.extend(cmds.iter().map(|c| cell(r, &c.name)));
        rows.push(row);
    }
    crate::table::text(&rows)
}

/// The guest runs as matrix rows (the label is the kernel series).
fn guest_inputs(runs: &[GuestRun], cmds: &[GuestCmd]) -> Vec<matrix::KernelInput> {
    runs.iter()
        .map(|r| matrix::KernelInput {
            label: r.kernel.series.clone(),
            host: false,
            release: Some(r.kernel.release.clone()),
            secs: Some((r.duration.as_secs_f64() * 10.0).round() / 10.0),
            boot_problems: r
                .boot_problems(cmds)
                .into_iter()
                .map(|p| format!("{p} (log {})", r.log_path.display()))
                .collect(),
            results: r.results.clone(),
        })
        .collect()
}

/// The host row: the matrix commands run here with the static binary. `Err` with
/// a note when it cannot run (not root, or `--no-host`).
fn host_input(
    args: &VmArgs,
    cmds: &[GuestCmd],
    opts: &BootOptions,
) -> Result<std::result::Result<matrix::KernelInput, String>> {
    if args.no_host {
        return Ok(Err("host row left out (--no-host)".to_owned()));
    }
    if !nix::unistd::geteuid().is_root() {
        return Ok(Err(
            "host row skipped: loading eBPF programs needs root; run `cargo xtask vm` as root \
             (or pass --no-host)"
                .to_owned(),
        ));
    }
    let binary = opts
        .files
        .first()
        .map(|f| f.host.clone())
        .context("no portwatch binary configured for the guests")?;
    let bin_dir = opts
        .work_dir
        .join(format!("host-bin-{}", std::process::id()));
    host::bin_dir(&opts.files, &bin_dir)?;
    let release = host::release()?;
    eprintln!(
        "vm: host {release}: running the matrix commands with {}",
        binary.display()
    );
    let started = Instant::now();
    let mut results = Vec::new();
    for c in cmds {
        let r = host::run_one(
            c,
            &binary,
            Some(&bin_dir),
            Duration::from_secs(args.timeout),
        )?;
        eprintln!(
            "vm: host {}: rc {} in {:.1} s",
            c.name,
            r.rc.map_or_else(|| "none (killed)".to_owned(), |rc| rc.to_string()),
            r.secs.unwrap_or(0.0)
        );
        results.push(r);
    }
    let _ = fs::remove_dir_all(&bin_dir);
    Ok(Ok(matrix::KernelInput {
        label: format!("host ({})", host::series_of(&release)),
        host: true,
        release: Some(release),
        secs: Some((started.elapsed().as_secs_f64() * 10.0).round() / 10.0),
        boot_problems: Vec::new(),
        results,
    }))
}

/// target/vm-results/matrix.json.
#[derive(Debug, Serialize)]
struct MatrixFile<'a> {
    command: &'a str,
    date: &'a str,
    commands: &'a [GuestCmd],
    notes: &'a [String],
    total_secs: f64,
    #[serde(flatten)]
    matrix: &'a matrix::Matrix,
    failures: Vec<String>,
}

/// How this xtask was invoked, for the "produced by" line.
fn invocation() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("cargo xtask {}", args.join(" "))
        .trim_end()
        .to_owned()
}

/// `cargo xtask vm`.
pub fn run(args: &VmArgs) -> Result<()> {
    let started = Instant::now();
    qemu::check_qemu()?;
    initramfs::find_busybox()?;
    let custom = !args.cmds.is_empty();
    let cmds = if custom {
        args.cmds
            .iter()
            .map(|c| GuestCmd::parse(c))
            .collect::<Result<Vec<_>>>()?
    } else {
        if args.churn_rounds == 0 {
            bail!("--churn-rounds must be at least 1");
        }
        matrix::matrix_cmds(&matrix::ChurnPlan {
            rounds: args.churn_rounds,
            port9: args.churn_port9,
            ..matrix::ChurnPlan::default()
        })
    };
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = cmds.iter().find(|c| !seen.insert(c.name.as_str())) {
        bail!(
            "guest command name {:?} is used twice; names must be unique",
            dup.name
        );
    }
    let root = crate::cmd::workspace_root();
    if !args.no_build {
        crate::dist::build_all()?;
    }
    let series: Vec<&str> = args.kernels.iter().map(String::as_str).collect();
    let kernels = prepare_kernels(&series)?;
    let mut opts = BootOptions::for_repo(Duration::from_secs(args.timeout))?;
    opts.keep = args.keep;

    // The host row first, so it does not compete for the cores with the guests.
    let host = if custom {
        None
    } else {
        Some(host_input(args, &cmds, &opts)?)
    };

    eprintln!(
        "vm: booting {} kernel(s), {} at a time, timeout {} s",
        kernels.len(),
        args.jobs.max(1),
        args.timeout
    );
    let boot_start = Instant::now();
    let mut runs = Vec::new();
    let mut errors = Vec::new();
    for (k, r) in kernels
        .iter()
        .zip(run_all(&kernels, &cmds, &opts, args.jobs))
    {
        match r {
            Ok(run) => {
                let opt = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |v| format!("{v:.1}"));
                eprintln!(
                    "vm: {} -> uname -r {} in {:.1} s (kernel boot {} s, commands {} s; log {})",
                    k.package,
                    run.kernel_release.as_deref().unwrap_or("?"),
                    run.duration.as_secs_f64(),
                    opt(run.kernel_boot_secs),
                    opt(run.commands_secs),
                    run.log_path.display()
                );
                runs.push(run);
            }
            Err(e) => errors.push(format!("{}: {e:#}", k.package)),
        }
    }
    let boot_wall = boot_start.elapsed();

    println!("{}", render_matrix(&cmds, &runs));
    println!(
        "boot wall time {:.1} s ({} at a time); total {:.1} s",
        boot_wall.as_secs_f64(),
        args.jobs.max(1),
        started.elapsed().as_secs_f64()
    );
    let out = match &args.out {
        Some(p) => p.clone(),
        None => opts.results_dir.join("results.json"),
    };
    if let Some(d) = out.parent() {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let report = MatrixReport::new(&cmds, &runs, args.jobs.max(1), boot_wall);
    let json = serde_json::to_string_pretty(&report).context("serialising the VM results")?;
    fs::write(&out, json + "\n").with_context(|| format!("writing {}", out.display()))?;
    println!("results: {}", out.display());

    let Some(host) = host else {
        // `--cmd`: the plain kernel x command table is the whole report.
        for r in &runs {
            for p in r.boot_problems(&cmds) {
                errors.push(format!(
                    "{}: {p} (log {})",
                    r.kernel.package,
                    r.log_path.display()
                ));
            }
            if args.strict {
                for c in r.results.iter().filter(|c| c.rc.is_some() && !c.ok()) {
                    errors.push(format!(
                        "{}: {} exited with rc {}",
                        r.kernel.package,
                        c.name,
                        c.rc.unwrap_or(-1)
                    ));
                }
            }
        }
        if !errors.is_empty() {
            bail!("VM matrix failed:\n  {}", errors.join("\n  "));
        }
        return Ok(());
    };

    let mut inputs = guest_inputs(&runs, &cmds);
    let mut notes = Vec::new();
    match host {
        Ok(h) => inputs.push(h),
        Err(note) => notes.push(note),
    }
    let m = matrix::Matrix::new(&inputs, errors);
    println!();
    print!("{}", matrix::render_text(&m));
    for n in &notes {
        println!("note: {n}");
    }

    let command = invocation();
    let date = readme::today_utc();
    let mut kernels_line: Vec<String> = m
        .rows
        .iter()
        .map(|r| match (&r.release, r.host) {
            (Some(rel), true) => format!("host {rel}"),
            (Some(rel), false) => format!("Debian {rel}"),
            (None, _) => r.label.clone(),
        })
        .collect();
    kernels_line.dedup();
    let mut produced_by = format!(
        "Produced by `{command}` on {date} ({}; qemu TCG guests, busybox initramfs).",
        kernels_line.join(", ")
    );
    for n in &notes {
        produced_by.push_str(&format!(" Note: {n}."));
    }
    let md = matrix::render_markdown(&m, &produced_by);
    let failures = m.failures();
    let file = MatrixFile {
        command: &command,
        date: &date,
        commands: &cmds,
        notes: &notes,
        total_secs: (started.elapsed().as_secs_f64() * 100.0).round() / 100.0,
        matrix: &m,
        failures: failures.clone(),
    };
    let mjson = opts.results_dir.join("matrix.json");
    let mmd = opts.results_dir.join("matrix.md");
    let text = serde_json::to_string_pretty(&file).context("serialising the matrix")?;
    fs::write(&mjson, text + "\n").with_context(|| format!("writing {}", mjson.display()))?;
    fs::write(&mmd, &md).with_context(|| format!("writing {}", mmd.display()))?;
    println!("matrix: {} and {}", mjson.display(), mmd.display());

    if args.update_readme {
        let path = root.join("README.md");
        let old = fs::read_to_string(&path)
            .with_context(|| format!("reading {} for --update-readme", path.display()))?;
        let new = readme::replace_section(&old, &md)
            .with_context(|| format!("updating {}", path.display()))?;
        if new != old {
            fs::write(&path, new).with_context(|| format!("writing {}", path.display()))?;
        }
        println!(
            "README: section between {} and {} updated in {}",
            readme::BEGIN,
            readme::END,
            path.display()
        );
    }

    println!("total {:.1} s", started.elapsed().as_secs_f64());
    if !failures.is_empty() {
        bail!(
            "VM matrix failed ({} problem(s)):\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kimg(series: &str, release: &str) -> KernelImage {
        KernelImage {
            series: series.into(),
            package: format!("linux-image-{release}"),
            release: release.into(),
            vmlinuz: PathBuf::from(format!("/c/vmlinuz-{release}")),
        }
    }

    fn grun(
        series: &str,
        release: &str,
        results: Vec<CmdResult>,
        completed: bool,
        timed_out: bool,
    ) -> GuestRun {
        GuestRun {
            kernel: kimg(series, release),
            kernel_release: completed.then(|| release.to_owned()),
            results,
            duration: Duration::from_millis(5400),
            log_path: PathBuf::from(format!("/r/{release}.log")),
            kernel_boot_secs: Some(4.0),
            commands_secs: Some(1.0),
            completed,
            timed_out,
            warnings: vec![],
        }
    }

    fn res(name: &str, rc: Option<i32>) -> CmdResult {
        CmdResult {
            name: name.into(),
            rc,
            output: String::new(),
            secs: Some(0.5),
        }
    }

    #[test]
    fn matrix_marks_ok_fail_and_timeouts() {
        let cmds = vec![GuestCmd::new("a", ["true"]), GuestCmd::new("b", ["false"])];
        let runs = vec![
            grun(
                "6.1",
                "6.1.0-56-cloud-amd64",
                vec![res("a", Some(0)), res("b", Some(1))],
                true,
                false,
            ),
            grun(
                "6.12",
                "6.12.117+deb12-cloud-amd64",
                vec![res("a", None)],
                false,
                true,
            ),
        ];
        let t = render_matrix(&cmds, &runs);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(
            lines[0].starts_with("kernel") && lines[0].contains(" a ") && lines[0].ends_with('b')
        );
        assert!(lines[2].contains("6.1.0-56-cloud-amd64") && lines[2].contains("ok 5.4s"));
        assert!(
            lines[2].contains("ok 0.5s") && lines[2].ends_with("FAIL rc=1 0.5s"),
            "{t}"
        );
        assert!(
            lines[3].contains("TIMEOUT")
                && lines[3].contains("FAIL timeout 0.5s")
                && lines[3].ends_with("FAIL not run"),
            "{t}"
        );
        assert!(runs[0].boot_problems(&cmds).is_empty());
        let p = runs[1].boot_problems(&cmds);
        assert!(
            p.iter().any(|s| s.contains("timed out"))
                && p.iter().any(|s| s.starts_with("b: never ran")),
            "{p:?}"
        );
    }

    #[test]
    fn wrong_kernel_is_a_boot_problem() {
        let mut r = grun("6.1", "6.1.0-56-cloud-amd64", vec![], true, false);
        r.kernel_release = Some("6.18.0".into());
        assert!(r
            .boot_problems(&[])
            .iter()
            .any(|p| p.contains("guest runs 6.18.0")));
    }

    #[test]
    fn json_report_has_rc_output_and_seconds() {
        let cmds = vec![GuestCmd::new("a", ["true"])];
        let runs = vec![grun(
            "6.1",
            "6.1.0-56-cloud-amd64",
            vec![res("a", Some(0))],
            true,
            false,
        )];
        let rep = MatrixReport::new(&cmds, &runs, 2, Duration::from_millis(6123));
        let v: serde_json::Value = serde_json::to_value(&rep).unwrap();
        assert_eq!(v["total_secs"], 6.12);
        assert_eq!(v["runs"][0]["duration_secs"], 5.4);
        assert_eq!(v["runs"][0]["kernel_release"], "6.1.0-56-cloud-amd64");
        assert_eq!(v["runs"][0]["results"][0]["rc"], 0);
        assert_eq!(v["runs"][0]["kernel"]["series"], "6.1");
        assert_eq!(
            v["runs"][0]["boot_problems"].as_array().map(Vec::len),
            Some(0)
        );
        assert_eq!(v["commands"][0]["argv"][0], "true");
    }

    #[test]
    fn guest_runs_become_matrix_rows() {
        let cmds = matrix::matrix_cmds(&matrix::ChurnPlan::default());
        let ok = grun(
            "6.1",
            "6.1.0-56-cloud-amd64",
            cmds.iter().map(|c| res(&c.name, Some(0))).collect(),
            true,
            false,
        );
        let hung = grun("6.12", "6.12.117+deb12-cloud-amd64", vec![], false, true);
        let rows = guest_inputs(&[ok, hung], &cmds);
        assert_eq!(rows[0].label, "6.1");
        assert_eq!(rows[0].release.as_deref(), Some("6.1.0-56-cloud-amd64"));
        assert!(!rows[0].host && rows[0].boot_problems.is_empty());
        assert_eq!(rows[0].results.len(), cmds.len());
        assert!(rows[1].boot_problems[0].starts_with("timed out"));
        assert!(rows[1]
            .boot_problems
            .iter()
            .all(|p| p.ends_with("(log /r/6.12.117+deb12-cloud-amd64.log)")));
    }

    #[test]
    fn update_readme_is_only_for_the_matrix() {
        #[derive(clap::Parser, Debug)]
        struct P {
            #[command(flatten)]
            vm: VmArgs,
        }
        use clap::Parser;
        let p = P::try_parse_from(["vm", "--update-readme", "--no-host"]).unwrap();
        assert!(p.vm.update_readme && p.vm.no_host && p.vm.cmds.is_empty());
        assert!(P::try_parse_from(["vm", "--update-readme", "--cmd", "a=true"]).is_err());
    }

    #[test]
    fn default_cmds_are_valid_and_unique() {
        let c = matrix::matrix_cmds(&matrix::ChurnPlan::default());
        assert!(c.iter().all(|c| c.validate().is_ok()));
        let names: std::collections::HashSet<_> = c.iter().map(|c| &c.name).collect();
        assert_eq!(names.len(), c.len());
        assert!(c
            .iter()
            .any(|c| c.argv == ["portwatch", "probes", "--json"]));
        assert!(c
            .iter()
            .any(|c| c.argv == ["portwatch", "quiz", "--all", "--json"]));
    }
}
