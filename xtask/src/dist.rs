//! `cargo xtask dist`: the release artefacts under target/dist/.
//!
//! 1. A fully static `x86_64-unknown-linux-musl` portwatch (eBPF object embedded), stripped.
//! 2. Its man pages and shell completions, written by the binary itself (`portwatch
//!    generate`, from the clap definitions behind `--help`).
//! 3. `portwatch-VERSION-x86_64-linux-musl.tar.gz` and a Debian package (cargo-deb), both
//!    made from ONE asset list: `[package.metadata.deb] assets` in portwatch/Cargo.toml.
//!    A new shipped file (a systemd unit, a rules file) is one line there and lands in
//!    both artefacts.
//!
//! 4. Not shipped: the churn workload (examples/churn.rs), static too, for the tracing
//!    overhead rounds `cargo xtask vm` runs inside its guests ([`vm_churn`]).
//!
//! Both artefacts are reproducible: SOURCE_DATE_EPOCH is the commit's time, tar entries
//! are sorted with a fixed owner, mode and mtime, gzip runs with `-n`, and cargo-deb
//! honours SOURCE_DATE_EPOCH.

mod assets;
pub mod check;
pub mod debroot;
mod tarball;

use std::{
    fs,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{bail, Context, Result};

pub use self::assets::Asset;
use crate::{build, cmd, setup};

/// The static binary's target.
pub const TARGET: &str = setup::MUSL_TARGET;

#[derive(clap::Args, Debug, Clone)]
pub struct DistArgs {
    /// Skip `cargo xtask setup --for dist`.
    #[arg(long)]
    pub no_setup: bool,
    /// Then check the artefacts as `cargo xtask test` does (static, size, start-up time,
    /// tarball contents, the package in a fresh Debian root; needs root).
    #[arg(long)]
    pub check: bool,
}

/// Where everything went.
#[derive(Debug, Clone)]
pub struct Dist {
    /// target/dist/portwatch: the stripped static binary.
    pub binary: PathBuf,
    pub tarball: PathBuf,
    pub deb: PathBuf,
    pub version: String,
}

/// target/dist.
pub fn dist_dir() -> Result<PathBuf> {
    Ok(build::target_dir()?.join("dist"))
}

/// The static binary cargo builds (before stripping it in place).
fn musl_release_dir() -> Result<PathBuf> {
    Ok(build::target_dir()?.join(TARGET).join("release"))
}

/// The static churn workload (examples/churn.rs) built by [`build_all`] for the VM guests.
pub fn vm_churn() -> Result<PathBuf> {
    Ok(musl_release_dir()?.join("examples").join("churn"))
}

/// The commit time of HEAD (seconds since the epoch): the timestamp of every file in the
/// artefacts, so two builds of one commit are byte-identical.
pub fn source_date_epoch() -> Result<u64> {
    if let Some(v) = std::env::var_os("SOURCE_DATE_EPOCH") {
        let v = v.to_string_lossy();
        return v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"));
    }
    let out = cmd::output(
        cmd::command("git")
            .args(["log", "-1", "--format=%ct", "HEAD"])
            .current_dir(cmd::workspace_root()),
    )?;
    if !out.status.success() {
        bail!(
            "git log failed ({}): set SOURCE_DATE_EPOCH when building outside a git checkout",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("git log -1 --format=%ct printed no number")
}

pub fn run(args: &DistArgs) -> Result<()> {
    if !args.no_setup {
        setup::run(setup::Need::Dist)?;
    }
    let d = build_all()?;
    println!("dist: {}", d.binary.display());
    println!("dist: {}", d.tarball.display());
    println!("dist: {}", d.deb.display());
    if args.check {
        let m = check::all(&d)?;
        println!(
            "dist: checks passed: binary {} bytes, --help {:.2} ms, Debian root test {:.1} s",
            m.binary_bytes,
            m.help_median.as_secs_f64() * 1e3,
            m.debroot_secs
        );
    }
    Ok(())
}

/// `cargo build --release -p portwatch --target TARGET` and `extra`, with the
/// SOURCE_DATE_EPOCH that makes the build reproducible.
fn musl_build(epoch: u64, extra: &[&str]) -> std::process::Command {
    let mut c = cmd::cargo();
    c.env("SOURCE_DATE_EPOCH", epoch.to_string())
        .args(["build", "--release", "-p", "portwatch", "--target", TARGET])
        .args(extra);
    c
}

/// Builds the binary and both artefacts.
pub fn build_all() -> Result<Dist> {
    let started = Instant::now();
    let epoch = source_date_epoch()?;
    let version = portwatch_version()?;
    let release = musl_release_dir()?;
    let dist = dist_dir()?;

    // 1. The static binary.
    let mut build = musl_build(epoch, &[]);
    println!("dist: {}", cmd::describe(&build));
    cmd::checked(&mut build).context(
        "building the static portwatch failed (`cargo xtask setup --for dist` installs the musl target)",
    )?;
    let built = release.join("portwatch");
    // Stripped in place: cargo-deb packages this path (its asset list names it), and a
    // no-op rebuild leaves it as it is. The eBPF object is data in the binary and keeps
    // its BTF.
    cmd::checked(cmd::command("strip").arg("--strip-all").arg(&built))
        .context("strip comes with binutils")?;

    // 2. Man pages and completions, from the binary's own clap definitions.
    let generated = release.join("dist");
    if generated.exists() {
        fs::remove_dir_all(&generated)
            .with_context(|| format!("removing {}", generated.display()))?;
    }
    cmd::checked(
        cmd::command(&built)
            .arg("generate")
            .arg("--out")
            .arg(&generated),
    )
    .context("portwatch generate (man pages and completions) failed")?;
    gzip_man_pages(&generated.join("man"))?;

    // 3. The artefacts, from the one asset list.
    fs::create_dir_all(&dist).with_context(|| format!("creating {}", dist.display()))?;
    let list = assets::from_manifest(&cmd::workspace_root().join("portwatch"), &release)?;
    let binary = dist.join("portwatch");
    fs::copy(&built, &binary)
        .with_context(|| format!("copying {} to {}", built.display(), binary.display()))?;
    let tarball = dist.join(format!("portwatch-{version}-x86_64-linux-musl.tar.gz"));
    tarball::write(&list, &version, epoch, &tarball)?;
    let deb = debian_package(&dist, epoch)?;

    // 4. The churn workload for the VM guests: a cargo invocation of its own, so the
    // example's dev-dependencies cannot change the features the shipped binary is built
    // with.
    let mut churn = musl_build(epoch, &["--example", "churn"]);
    println!("dist: {}", cmd::describe(&churn));
    cmd::checked(&mut churn).context("building the static churn workload for the VM guests")?;
    println!(
        "dist: built in {:.1} s (SOURCE_DATE_EPOCH={epoch})",
        started.elapsed().as_secs_f64()
    );
    Ok(Dist {
        binary,
        tarball,
        deb,
        version,
    })
}

/// `gzip -n -9` every page in `dir` (Debian installs man pages compressed; `-n` keeps
/// the name and time out of the file).
fn gzip_man_pages(dir: &Path) -> Result<()> {
    let mut pages: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "1"))
        .collect();
    pages.sort();
    if pages.is_empty() {
        bail!(
            "portwatch generate wrote no man page into {}",
            dir.display()
        );
    }
    cmd::checked(cmd::command("gzip").args(["-n", "-9"]).args(&pages))
        .context("compressing the man pages")
}

/// portwatch's version from its manifest (through cargo metadata).
fn portwatch_version() -> Result<String> {
    let out = cmd::output(cmd::cargo().args(["metadata", "--format-version", "1", "--no-deps"]))?;
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("cargo metadata printed invalid JSON")?;
    meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "portwatch")
        .and_then(|p| p["version"].as_str())
        .map(str::to_owned)
        .context("cargo metadata lists no portwatch package")
}

/// `cargo deb` on the binary built above (no rebuild, no second strip).
fn debian_package(dist: &Path, epoch: u64) -> Result<PathBuf> {
    let mut deb = cmd::cargo();
    deb.env("SOURCE_DATE_EPOCH", epoch.to_string())
        .args([
            "deb",
            "-p",
            "portwatch",
            "--no-build",
            "--no-strip",
            "--target",
            TARGET,
        ])
        .arg("--output")
        .arg(dist);
    println!("dist: {}", cmd::describe(&deb));
    let out = cmd::output(&mut deb)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}{}",
            cmd::describe(&deb),
            cmd::describe_status(out.status),
            String::from_utf8_lossy(&out.stderr).trim(),
            stdout.trim()
        );
    }
    // cargo-deb prints the path of the package it wrote.
    let path = stdout
        .lines()
        .map(str::trim)
        .find(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .context("cargo deb printed no .deb path")?;
    if !path.is_file() {
        bail!(
            "cargo deb reported {} but it does not exist",
            path.display()
        );
    }
    Ok(path)
}
