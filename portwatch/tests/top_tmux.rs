//! `portwatch top` driven as a person would: in a real terminal (tmux), with keys
//! (send-keys) and reading the screen (capture-pane). Root, a fresh netns.
//!
//! The tmux server runs on its own socket (`tmux -S` in a temporary directory, no user config), and the session
//! is killed by name when the test ends, whatever happens.
mod common;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{bin, listener, netns_path, require_root, tcp, v4};
use portwatch::netns::PrivateNetns;

/// A detached tmux session on a private server socket, killed by name on drop.
struct Tmux {
    /// The server's socket, in `_dir` (removed with it).
    socket: std::path::PathBuf,
    name: String,
    _dir: tempfile::TempDir,
}

impl Tmux {
    fn tmux(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(["-f", "/dev/null"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!("running tmux {args:?}: {e}; install tmux (`cargo xtask setup`)")
            });
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Starts `command` in a new 160x45 session; the pane stays (dead) when it exits.
    fn start(command: &str) -> Tmux {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let id = format!("portwatch-test-{}-{nanos}", std::process::id());
        let dir = tempfile::tempdir().expect("tempdir for the tmux socket");
        let t = Tmux {
            socket: dir.path().join("tmux.sock"),
            name: id,
            _dir: dir,
        };
        let (ok, _, err) = t.tmux(&[
            "new-session",
            "-d",
            "-s",
            &t.name,
            "-x",
            "160",
            "-y",
            "45",
            command,
            ";",
            "set-option",
            "-t",
            &t.name,
            "remain-on-exit",
            "on",
        ]);
        assert!(ok, "tmux new-session: {err}");
        t
    }

    fn capture(&self) -> String {
        let (ok, out, err) = self.tmux(&["capture-pane", "-p", "-J", "-t", &self.name]);
        assert!(ok, "tmux capture-pane: {err}");
        out
    }

    /// The screen and the scrollback above it.
    fn capture_all(&self) -> String {
        let (ok, out, err) = self.tmux(&["capture-pane", "-p", "-J", "-S", "-", "-t", &self.name]);
        assert!(ok, "tmux capture-pane: {err}");
        out
    }

    /// Sends keys; `literal` text is typed as is (-l), else the args are tmux key names.
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.name];
        args.extend_from_slice(keys);
        let (ok, _, err) = self.tmux(&args);
        assert!(ok, "tmux send-keys {keys:?}: {err}");
    }

    fn type_text(&self, text: &str) {
        let (ok, _, err) = self.tmux(&["send-keys", "-t", &self.name, "-l", text]);
        assert!(ok, "tmux send-keys -l {text:?}: {err}");
    }

    /// `#{pane_dead} #{alternate_on}` of the pane. (`#{pane_dead_status}` is not used: tmux
    /// sometimes leaves it empty; the command prints its exit status itself.)
    fn pane_state(&self) -> String {
        let (ok, out, err) = self.tmux(&[
            "list-panes",
            "-t",
            &self.name,
            "-F",
            "#{pane_dead} #{alternate_on}",
        ]);
        assert!(ok, "tmux list-panes: {err}");
        out.trim().to_owned()
    }

    /// Polls the screen until `ok` holds; panics with the last screen after `timeout`.
    fn wait_for(&self, what: &str, timeout: Duration, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.capture();
            if ok(&screen) {
                return screen;
            }
            if Instant::now() > deadline {
                panic!("timed out after {timeout:?} waiting for {what}; screen:\n{screen}\npane (dead alternate): {}", self.pane_state());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // Only our session, on our own server socket (the server exits with it).
        let _ = self.tmux(&["kill-session", "-t", &self.name]);
    }
}

fn have_tmux(test: &str) -> bool {
    if Command::new("tmux")
        .arg("-V")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return true;
    }
    if std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
    {
        panic!("{test}: tmux is missing; CI must install it (`cargo xtask setup`)");
    }
    eprintln!("SKIPPED {test}: tmux is missing (install it: `apt-get install tmux`, or `cargo xtask setup`)");
    false
}

/// Table rows on the screen: (port, #owners), from the lines under the header that has
/// TCP-PORT and #OWNERS.
fn rows(screen: &str) -> Vec<(u16, u32)> {
    let mut cols: Option<(usize, usize)> = None;
    let mut out = Vec::new();
    for line in screen.lines() {
        let inner = line.trim_matches(|c: char| c == '│' || c.is_whitespace());
        let toks: Vec<&str> = inner.split_whitespace().collect();
        if let (Some(p), Some(o)) = (
            toks.iter().position(|t| *t == "TCP-PORT"),
            toks.iter().position(|t| *t == "#OWNERS"),
        ) {
            cols = Some((p, o));
            continue;
        }
        let Some((p, o)) = cols else { continue };
        if line.starts_with('└') {
            break;
        }
        if let (Some(port), Some(owners)) = (
            toks.get(p).and_then(|t| t.parse::<u16>().ok()),
            toks.get(o).and_then(|t| t.parse::<u32>().ok()),
        ) {
            out.push((port, owners));
        }
    }
    out
}

/// The recent-transitions pane: lines after its title.
fn pane(screen: &str) -> String {
    screen
        .split(" recent transitions")
        .nth(1)
        .unwrap_or("")
        .to_owned()
}

fn sort_label(screen: &str) -> String {
    screen
        .lines()
        .find_map(|l| l.strip_prefix("sort: "))
        .and_then(|rest| rest.split(" │").next())
        .unwrap_or_else(|| panic!("no sort label on the screen:\n{screen}"))
        .to_owned()
}

#[test]
fn top_in_tmux_shows_sorts_filters_pauses_and_quits_cleanly() {
    let test = "top_in_tmux_shows_sorts_filters_pauses_and_quits_cleanly";
    if !require_root(test) || !have_tmux(test) {
        return;
    }
    let ns = PrivateNetns::with_port_range(60000, 60010).expect("private netns");
    let path = netns_path(&ns);
    // After top exits, the shell reports its status and the terminal modes, on the
    // normal screen: `icanon echo` (not `-icanon -echo`) means raw mode was left.
    let command = format!(
        "{} top --netns {path} --interval 0.5; echo PORTWATCH_EXITED=$?; stty -a",
        bin()
    );
    let t = Tmux::start(&command);
    t.wait_for("the header", Duration::from_secs(30), |s| {
        s.contains("portwatch top │") && s.contains("TCP-PORT")
    });
    assert_eq!(t.pane_state(), "0 1", "top runs on the alternate screen");

    // A listener on 1234 and three connections (ephemeral ports from 60000-60010).
    let l = listener(&ns, 1234);
    let clients: Vec<socket2::Socket> = (0..3)
        .map(|_| {
            let c = tcp(&ns);
            c.connect(&v4("127.0.0.1", 1234)).expect("connect");
            c
        })
        .collect();
    let accepted: Vec<socket2::Socket> = (0..3).map(|_| l.accept().expect("accept").0).collect();
    let client_ports: Vec<u16> = clients
        .iter()
        .map(|c| {
            c.local_addr()
                .expect("local addr")
                .as_socket()
                .expect("inet")
                .port()
        })
        .collect();
    // 1234: the listener and the three accepted sockets; each client port: one owner.
    let mut want: Vec<(u16, u32)> = vec![(1234, 4)];
    want.extend(client_ports.iter().map(|&p| (p, 1)));
    let screen = t.wait_for(
        "port 1234 with 4 owners and the client ports with 1",
        Duration::from_secs(5),
        |s| {
            let r = rows(s);
            want.iter().all(|w| r.contains(w))
        },
    );
    let pane_text = pane(&screen);
    assert!(
        pane_text
            .lines()
            .any(|l| l.contains(":1234") && l.contains("created")),
        "the transitions pane shows the creation of 1234:\n{screen}"
    );
    for p in &client_ports {
        assert!(
            pane_text.lines().any(|l| l.contains(&format!(":{p}"))
                && l.contains("created")
                && l.contains("connect")),
            "the transitions pane shows the creation of {p} by connect():\n{screen}"
        );
    }

    // `s`: the sort label changes.
    let before = sort_label(&screen);
    t.keys(&["s"]);
    let screen = t.wait_for("a new sort label", Duration::from_secs(3), |s| {
        sort_label(s) != before
    });
    eprintln!("sort: {before:?} -> {:?}", sort_label(&screen));

    // `/1234` Enter: only port 1234 (the filter also matches netns inodes containing it).
    t.keys(&["/"]);
    t.type_text("1234");
    t.keys(&["Enter"]);
    let netns_matches = ns.inode().to_string().contains("1234");
    let screen = t.wait_for("the filter applied", Duration::from_secs(3), |s| {
        s.contains("filter: \"1234\"")
    });
    let shown: Vec<u16> = rows(&screen).iter().map(|r| r.0).collect();
    if netns_matches {
        assert!(shown.contains(&1234), "{screen}");
    } else {
        assert_eq!(
            shown,
            vec![1234],
            "only port 1234 after filtering:\n{screen}"
        );
    }
    // Esc in the filter prompt clears it.
    t.keys(&["/"]);
    t.keys(&["Escape"]);
    t.wait_for("the filter cleared", Duration::from_secs(3), |s| {
        s.contains("filter: none") && rows(s).len() == want.len()
    });

    // `p`: paused, the screen stops changing while sockets come and go.
    t.keys(&["p"]);
    let paused = t.wait_for("PAUSED", Duration::from_secs(3), |s| s.contains("PAUSED"));
    let extra = listener(&ns, 5555);
    std::thread::sleep(Duration::from_millis(1500));
    let still = t.capture();
    assert_eq!(paused, still, "the screen is frozen while paused");
    assert!(!rows(&still).iter().any(|r| r.0 == 5555), "{still}");
    // `p` again: it resumes and shows the new listener.
    t.keys(&["p"]);
    let screen = t.wait_for("port 5555 after resuming", Duration::from_secs(5), |s| {
        !s.contains("PAUSED") && rows(s).contains(&(5555, 1))
    });
    assert!(
        pane(&screen).contains(":5555"),
        "the transition made while paused shows after resuming:\n{screen}"
    );

    // `q`: top exits 0 and the terminal is restored (normal screen, cooked mode).
    t.keys(&["q"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let state = loop {
        let st = t.pane_state();
        if st.starts_with('1') || Instant::now() > deadline {
            break st;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let screen = t.capture_all();
    assert_eq!(
        state, "1 0",
        "the pane's command ended and the pane is not on the alternate screen:\n{screen}"
    );
    assert!(
        screen.contains("PORTWATCH_EXITED=0"),
        "top exit status 0:\n{screen}"
    );
    let after = screen.split("PORTWATCH_EXITED=0").nth(1).unwrap_or("");
    let modes: Vec<&str> = after.split_whitespace().collect();
    for m in ["icanon", "echo", "isig"] {
        assert!(
            modes.contains(&m),
            "stty shows {m} (raw mode left):\n{screen}"
        );
    }
    let visible = t.capture();
    assert!(
        !visible.contains("TCP-PORT"),
        "the table (alternate screen) is gone:\n{visible}"
    );
    drop((extra, accepted, clients, l));
}
