//! Subprocess helpers shared by the xtask subcommands: PATH for children, running
//! commands with error context, and deciding how to get root (directly or via sudo).

use std::{
    env,
    ffi::{OsStr, OsString},
    io::IsTerminal,
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output},
};

use anyhow::{bail, Context, Result};

/// The workspace root: xtask/Cargo.toml sits one level below it.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest.to_path_buf())
}

/// cargo's bin directory (`$CARGO_HOME/bin`, else `$HOME/.cargo/bin`): where
/// `cargo install` puts bpf-linker.
pub fn cargo_bin_dir() -> Option<PathBuf> {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .map(|dir| dir.join("bin"))
}

/// `path` with `dir` in front, unless `dir` is already one of its entries.
pub fn path_with_front(path: Option<&OsStr>, dir: &Path) -> OsString {
    let entries: Vec<PathBuf> = path
        .map(|p| env::split_paths(p).collect())
        .unwrap_or_default();
    if entries.iter().any(|e| e == dir) {
        return path.map(OsStr::to_os_string).unwrap_or_default();
    }
    let mut all = vec![dir.to_path_buf()];
    all.extend(entries);
    // join_paths fails only if an entry contains ':'; fall back to the untouched PATH.
    env::join_paths(all).unwrap_or_else(|_| path.map(OsStr::to_os_string).unwrap_or_default())
}

/// The PATH every child process gets: the current PATH with cargo's bin dir in front,
/// so a freshly installed bpf-linker is found by the eBPF build.
pub fn child_path() -> OsString {
    let current = env::var_os("PATH");
    match cargo_bin_dir() {
        Some(dir) => path_with_front(current.as_deref(), &dir),
        None => current.unwrap_or_default(),
    }
}

/// Finds an executable named `name` on the children's PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    env::split_paths(&child_path())
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// A command whose PATH includes cargo's bin dir.
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("PATH", child_path());
    cmd
}

/// `cargo` (the one that runs xtask, from `$CARGO`), started in the workspace root.
pub fn cargo() -> Command {
    let program = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = command(program);
    cmd.current_dir(workspace_root());
    cmd
}

/// The command line of `cmd`, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Runs `cmd` with inherited stdio and returns its exit status.
pub fn status(cmd: &mut Command) -> Result<ExitStatus> {
    cmd.status().with_context(|| {
        format!(
            "could not start `{}`: is `{}` installed and on PATH?",
            describe(cmd),
            cmd.get_program().to_string_lossy()
        )
    })
}

/// Runs `cmd` with inherited stdio; an error if it does not exit with 0.
pub fn checked(cmd: &mut Command) -> Result<()> {
    let st = status(cmd)?;
    if !st.success() {
        bail!("`{}` failed ({})", describe(cmd), describe_status(st));
    }
    Ok(())
}

/// Runs `cmd` capturing stdout and stderr (whatever its exit status).
pub fn output(cmd: &mut Command) -> Result<Output> {
    cmd.output().with_context(|| {
        format!(
            "could not start `{}`: is `{}` installed and on PATH?",
            describe(cmd),
            cmd.get_program().to_string_lossy()
        )
    })
}

/// "exit code N" or "killed by signal N".
pub fn describe_status(st: ExitStatus) -> String {
    match (st.code(), st.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => "unknown status".to_string(),
    }
}

/// Owns a child process: if it still runs when the guard is dropped (an error or a panic
/// on the way), it is killed (SIGKILL, by pid through the handle) and reaped, so no child
/// outlives the step that started it.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// True when the CI environment variable says we run in CI (`CI=true`, `CI=1`, ...).
pub fn ci_value_is_true(value: Option<&str>) -> bool {
    match value {
        None => false,
        Some(v) => {
            let v = v.trim().to_ascii_lowercase();
            !(v.is_empty() || v == "0" || v == "false" || v == "no")
        }
    }
}

pub fn is_ci() -> bool {
    ci_value_is_true(env::var("CI").ok().as_deref())
}

/// Whether a password prompt could be answered (a terminal on stdin, not CI).
pub fn interactive() -> bool {
    !is_ci() && std::io::stdin().is_terminal()
}

/// How a command that needs root is started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Elevation {
    /// We are root already.
    Direct,
    /// Through sudo with these leading arguments (`sudo -E` or, when no prompt can be
    /// answered, `sudo -n -E` so it fails instead of hanging).
    Sudo(Vec<String>),
}

/// Decides how to get root. `what` names the action, for the error message.
pub fn plan_elevation(
    what: &str,
    root: bool,
    sudo: Option<&Path>,
    interactive: bool,
) -> Result<Elevation> {
    if root {
        return Ok(Elevation::Direct);
    }
    let Some(sudo) = sudo else {
        bail!(
            "{what} needs root, you are not root, and sudo is not installed: \
             run the command as root (e.g. `su -c 'cargo xtask ...'`) or install sudo"
        );
    };
    let mut args = vec![sudo.to_string_lossy().into_owned()];
    if !interactive {
        args.push("-n".to_string());
    }
    args.push("-E".to_string());
    Ok(Elevation::Sudo(args))
}

/// `plan_elevation` for this process.
pub fn elevation(what: &str) -> Result<Elevation> {
    plan_elevation(what, is_root(), which("sudo").as_deref(), interactive())
}

/// A command running `program args...` as root according to `how`.
pub fn as_root(how: &Elevation, program: impl AsRef<OsStr>) -> Command {
    match how {
        Elevation::Direct => command(program),
        Elevation::Sudo(prefix) => {
            let mut cmd = command(&prefix[0]);
            cmd.args(&prefix[1..]).arg(program);
            cmd
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_front_adds_missing_dir_first() {
        let p = path_with_front(
            Some(OsStr::new("/usr/bin:/bin")),
            Path::new("/h/.cargo/bin"),
        );
        assert_eq!(p, OsString::from("/h/.cargo/bin:/usr/bin:/bin"));
    }

    #[test]
    fn path_front_keeps_present_dir_in_place() {
        let p = path_with_front(
            Some(OsStr::new("/usr/bin:/h/.cargo/bin")),
            Path::new("/h/.cargo/bin"),
        );
        assert_eq!(p, OsString::from("/usr/bin:/h/.cargo/bin"));
    }

    #[test]
    fn path_front_without_path() {
        assert_eq!(path_with_front(None, Path::new("/x")), OsString::from("/x"));
    }

    #[test]
    fn ci_values() {
        assert!(ci_value_is_true(Some("true")));
        assert!(ci_value_is_true(Some("1")));
        assert!(ci_value_is_true(Some("TRUE")));
        assert!(!ci_value_is_true(Some("false")));
        assert!(!ci_value_is_true(Some("0")));
        assert!(!ci_value_is_true(Some("")));
        assert!(!ci_value_is_true(None));
    }

    #[test]
    fn elevation_root_is_direct() {
        assert_eq!(
            plan_elevation("x", true, None, false).unwrap(),
            Elevation::Direct
        );
    }

    #[test]
    fn elevation_sudo_interactive_and_not() {
        let sudo = Path::new("/usr/bin/sudo");
        assert_eq!(
            plan_elevation("x", false, Some(sudo), true).unwrap(),
            Elevation::Sudo(vec!["/usr/bin/sudo".into(), "-E".into()])
        );
        assert_eq!(
            plan_elevation("x", false, Some(sudo), false).unwrap(),
            Elevation::Sudo(vec!["/usr/bin/sudo".into(), "-n".into(), "-E".into()])
        );
    }

    #[test]
    fn elevation_without_sudo_names_the_fix() {
        let err = plan_elevation("installing apt packages", false, None, true).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("installing apt packages"), "{msg}");
        assert!(msg.contains("sudo is not installed"), "{msg}");
    }

    #[test]
    fn as_root_prefixes_sudo() {
        let how = Elevation::Sudo(vec!["sudo".into(), "-n".into(), "-E".into()]);
        let mut cmd = as_root(&how, "apt-get");
        cmd.arg("update");
        assert_eq!(describe(&cmd), "sudo -n -E apt-get update");
        assert_eq!(describe(&as_root(&Elevation::Direct, "apt-get")), "apt-get");
    }
}
