//! Private apt configurations: Debian suites the machine's own apt sources do not list
//! (backports, other releases) are read through a sources list, package lists and a cache
//! of our own under `target/`, on the mirrors the machine's sources already name. The
//! machine's apt sources, lists and caches are never written.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::cmd;

/// The keyring Debian's archive is signed with (package debian-archive-keyring).
pub const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// The machine's apt sources.
const HOST_SOURCE_LIST: &str = "/etc/apt/sources.list";
const HOST_SOURCE_PARTS: &str = "/etc/apt/sources.list.d";
/// Package lists older than this are fetched again.
const LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// The mirror URIs in apt sources text (one-line `deb URI suite...` and deb822 `URIs:`
/// forms): (main archive, security archive), each the first one named.
pub fn mirrors_from_sources(text: &str) -> (Option<String>, Option<String>) {
    let mut main = None;
    let mut security = None;
    for line in text.lines() {
        let line = line.trim();
        let uris: Vec<&str> = if let Some(rest) = line.strip_prefix("URIs:") {
            rest.split_whitespace().collect()
        } else if line.starts_with("deb ") {
            line.split_whitespace()
                .skip(1)
                .find(|w| !w.starts_with('[') && !w.ends_with(']') && w.contains("://"))
                .into_iter()
                .collect()
        } else {
            continue;
        };
        for u in uris {
            let u = u.trim_end_matches('/');
            if u.ends_with("/debian-security") {
                security.get_or_insert_with(|| u.to_owned());
            } else if u.ends_with("/debian") {
                main.get_or_insert_with(|| u.to_owned());
            }
        }
    }
    (main, security)
}

/// The text of every apt source file the machine uses (apt reads only `*.list` and
/// `*.sources` in sources.list.d).
fn host_sources_text() -> String {
    let mut text = fs::read_to_string(HOST_SOURCE_LIST).unwrap_or_default();
    if let Ok(rd) = fs::read_dir(HOST_SOURCE_PARTS) {
        let mut paths: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "list" || e == "sources"))
            .collect();
        paths.sort();
        for p in paths {
            text.push('\n');
            text.push_str(&fs::read_to_string(p).unwrap_or_default());
        }
    }
    text
}

/// The Debian archive mirrors the machine uses: (main, security).
pub fn host_mirrors() -> Result<(String, String)> {
    let (main, security) = mirrors_from_sources(&host_sources_text());
    let main = main.context(
        "no Debian archive mirror (a URI ending in /debian) in /etc/apt/sources.list or \
         /etc/apt/sources.list.d: extra Debian suites are fetched from the mirror the \
         machine already uses",
    )?;
    let security = security.unwrap_or_else(|| format!("{main}-security"));
    Ok((main, security))
}

/// `VERSION_CODENAME` of an os-release text.
pub fn codename_of(os_release: &str) -> Option<String> {
    os_release
        .lines()
        .filter_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .find(|v| !v.is_empty())
}

/// The machine's Debian release name (`bookworm`), from /etc/os-release.
pub fn host_codename() -> Result<String> {
    let text = fs::read_to_string("/etc/os-release").context("reading /etc/os-release")?;
    codename_of(&text).context("/etc/os-release names no VERSION_CODENAME (not Debian?)")
}

/// One `deb` line per suite, signed by Debian's archive keyring.
pub fn sources_lines(mirror: &str, suites: &[String]) -> String {
    suites
        .iter()
        .map(|s| format!("deb [signed-by={KEYRING}] {mirror} {s} main\n"))
        .collect()
}

/// A private apt configuration in a directory of ours.
pub struct PrivateApt {
    dir: PathBuf,
}

impl PrivateApt {
    /// Writes `sources` (sources.list text) into `dir` and fetches its package lists
    /// when the sources changed or the lists are missing or older than a day.
    /// `how` says how apt-get gets root (it writes the lists as root).
    pub fn prepare(dir: &Path, sources: &str, how: &cmd::Elevation) -> Result<PrivateApt> {
        for d in ["lists/partial", "cache/archives/partial"] {
            let p = dir.join(d);
            fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        }
        if !Path::new(KEYRING).is_file() {
            bail!("{KEYRING} is missing: install the debian-archive-keyring package");
        }
        let list = dir.join("sources.list");
        let changed = fs::read_to_string(&list).ok().as_deref() != Some(sources);
        if changed {
            fs::write(&list, sources).with_context(|| format!("writing {}", list.display()))?;
        }
        let apt = PrivateApt {
            dir: dir.to_path_buf(),
        };
        if changed || apt.lists_stale() {
            println!(
                "apt: apt-get update (private configuration in {})",
                apt.dir.display()
            );
            let mut c = cmd::as_root(how, "apt-get");
            c.args(apt.options()).args(["update", "-q"]);
            let out = cmd::output(&mut c)?;
            if !out.status.success() {
                bail!(
                    "`{}` failed ({}): {}",
                    cmd::describe(&c),
                    cmd::describe_status(out.status),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        Ok(apt)
    }

    fn lists_stale(&self) -> bool {
        let newest = fs::read_dir(self.dir.join("lists"))
            .ok()
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with("Release"))
            .filter_map(|e| e.metadata().ok()?.modified().ok())
            .max();
        match newest {
            None => true,
            Some(t) => t.elapsed().map_or(true, |age| age > LISTS_MAX_AGE),
        }
    }

    /// The `-o` options that point apt-get / apt-cache at this configuration.
    pub fn options(&self) -> Vec<String> {
        let d = &self.dir;
        [
            format!("Dir::Etc::sourcelist={}", d.join("sources.list").display()),
            "Dir::Etc::sourceparts=-".to_owned(),
            format!("Dir::State::Lists={}", d.join("lists").display()),
            format!("Dir::Cache={}", d.join("cache").display()),
            // Downloads land in directories the sandboxing user cannot write.
            "APT::Sandbox::User=root".to_owned(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_owned(), o])
        .collect()
    }

    /// `program` (apt-get, apt-cache) with this configuration, as the current user.
    pub fn command(&self, program: &str) -> Command {
        let mut c = cmd::command(program);
        c.args(self.options());
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_in_both_source_formats() {
        let deb822 = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm \
                      bookworm-updates\n\nTypes: deb\nURIs: http://deb.debian.org/debian-security\n\
                      Suites: bookworm-security\n";
        assert_eq!(
            mirrors_from_sources(deb822),
            (
                Some("http://deb.debian.org/debian".into()),
                Some("http://deb.debian.org/debian-security".into())
            )
        );
        let one_line =
            "# comment\ndeb [arch=amd64 signed-by=/x.gpg] http://m.example/debian/ bookworm main\n\
                        deb https://packages.example.com/apt cloud main\n";
        assert_eq!(
            mirrors_from_sources(one_line),
            (Some("http://m.example/debian".into()), None)
        );
        assert_eq!(mirrors_from_sources(""), (None, None));
    }

    #[test]
    fn codename_from_os_release() {
        let text = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_ID=\"12\"\n\
                    VERSION_CODENAME=bookworm\nID=debian\n";
        assert_eq!(codename_of(text).as_deref(), Some("bookworm"));
        assert_eq!(
            codename_of("VERSION_CODENAME=\"trixie\"\n").as_deref(),
            Some("trixie")
        );
        assert_eq!(codename_of("ID=debian\n"), None);
        assert_eq!(codename_of("VERSION_CODENAME=\n"), None);
    }

    #[test]
    fn signed_deb_lines() {
        let s = sources_lines(
            "http://deb.debian.org/debian",
            &["bookworm".into(), "bookworm-backports".into()],
        );
        assert_eq!(
            s,
            format!(
                "deb [signed-by={KEYRING}] http://deb.debian.org/debian bookworm main\n\
                 deb [signed-by={KEYRING}] http://deb.debian.org/debian bookworm-backports main\n"
            )
        );
    }
}
