//! Builds the eBPF programs (crate `portwatch-ebpf`) with the nightly toolchain and
//! bpf-linker when the `ebpf` feature is on: with the `bpf_loop` walk driver (kernels
//! 5.17+) and with the bounded-loop driver (feature `bounded`, older kernels), each with
//! every program and with the snapshot walk alone (feature `walk_only`, for sessions
//! that attach nothing). The four objects are embedded into the binary (see
//! `src/backend/object.rs`); the loader picks one at run time. Also records, for
//! `portwatch --version`, the git commit the binary is built from and the aya version it
//! links.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let workspace = manifest_dir.join("..");
    println!(
        "cargo:rustc-env=PORTWATCH_GIT_COMMIT={}",
        git_commit(&workspace)
    );
    println!(
        "cargo:rustc-env=PORTWATCH_AYA_VERSION={}",
        aya_version(&workspace)
    );
    #[cfg(feature = "ebpf")]
    build_ebpf(&workspace)?;
    Ok(())
}

/// (features of `portwatch-ebpf`, name of the object in OUT_DIR)
#[cfg(feature = "ebpf")]
const OBJECTS: [(&[&str], &str); 4] = [
    (&[], "portwatch-bpf-loop"),
    (&["bounded"], "portwatch-bounded"),
    (&["walk_only"], "portwatch-walk-bpf-loop"),
    (&["bounded", "walk_only"], "portwatch-walk-bounded"),
];

#[cfg(feature = "ebpf")]
fn build_ebpf(workspace: &Path) -> anyhow::Result<()> {
    let root = workspace.join("portwatch-ebpf");
    let root_dir = root
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path {}", root.display()))?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    for (features, name) in OBJECTS {
        aya_build::build_ebpf(
            [aya_build::Package {
                name: "portwatch-ebpf",
                root_dir,
                features,
                ..Default::default()
            }],
            aya_build::Toolchain::default(),
        )?;
        // aya-build copies the binary target (named `portwatch`) into OUT_DIR.
        std::fs::rename(out_dir.join("portwatch"), out_dir.join(name))?;
        strip_debug(&out_dir.join(name))?;
    }
    Ok(())
}

/// Removes the DWARF sections from an eBPF object. They are three quarters of its size
/// and only debuggers read them; loading needs the `.BTF`/`.BTF.ext` sections, which
/// `--strip-debug` keeps. llvm-strip comes with LLVM 22, the LLVM bpf-linker is built
/// against.
#[cfg(feature = "ebpf")]
fn strip_debug(object: &Path) -> anyhow::Result<()> {
    let tools = ["llvm-strip-22", "llvm-strip"];
    for tool in tools {
        match Command::new(tool).arg("--strip-debug").arg(object).status() {
            Ok(s) if s.success() => return Ok(()),
            Ok(s) => anyhow::bail!("`{tool} --strip-debug {}` failed ({s})", object.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => anyhow::bail!("running {tool}: {e}"),
        }
    }
    anyhow::bail!(
        "none of {tools:?} found: install the Debian package llvm-22 (`cargo xtask setup` does)"
    )
}

/// `PORTWATCH_GIT_COMMIT` when set (a build from a source tarball), else the checkout's
/// commit (12 hex digits), else "unknown".
fn git_commit(workspace: &Path) -> String {
    println!("cargo:rerun-if-env-changed=PORTWATCH_GIT_COMMIT");
    if let Ok(c) = std::env::var("PORTWATCH_GIT_COMMIT") {
        return c;
    }
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .args(args)
            .current_dir(workspace)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    // Rebuild when HEAD moves: its file, the branch it names, and packed refs.
    for path in ["HEAD", "packed-refs"]
        .into_iter()
        .map(str::to_owned)
        .chain(git(&["symbolic-ref", "-q", "HEAD"]))
        .filter_map(|p| git(&["rev-parse", "--git-path", &p]))
    {
        let p = workspace.join(path);
        if p.exists() {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    }
    git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_owned())
}

/// The version of the `aya` package in the workspace's Cargo.lock.
fn aya_version(workspace: &Path) -> String {
    let lock = workspace.join("Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let text = std::fs::read_to_string(&lock).unwrap_or_default();
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if l.trim() == "name = \"aya\"" {
            if let Some(v) = lines
                .next()
                .and_then(|v| v.trim().strip_prefix("version = "))
            {
                return v.trim_matches('"').to_owned();
            }
        }
    }
    "unknown".to_owned()
}
