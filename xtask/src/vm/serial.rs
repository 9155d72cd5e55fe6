//! Parsing the guest's serial console log into per-command results.

use serde::Serialize;

/// Outcome of one guest command.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CmdResult {
    pub name: String,
    /// Exit status; `None` when the END marker never came (guest hung, crashed or was
    /// killed at the timeout).
    pub rc: Option<i32>,
    /// Combined stdout and stderr, console carriage returns removed.
    pub output: String,
    /// Guest seconds the command took (from `@@PW-TIME <name> <start> <end>@@`).
    pub secs: Option<f64>,
}

impl CmdResult {
    pub fn ok(&self) -> bool {
        self.rc == Some(0)
    }
}

/// Everything recovered from one serial log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedLog {
    /// `uname -r` as printed by the guest's init.
    pub kernel_release: Option<String>,
    pub results: Vec<CmdResult>,
    /// The init script reached its end (`@@PW-DONE@@`).
    pub done: bool,
    /// `@@PW-WARN ...@@` lines (e.g. a filesystem that failed to mount).
    pub warnings: Vec<String>,
    /// Guest uptime (seconds) when init started, i.e. the kernel's own boot time.
    pub uptime_start: Option<f64>,
    /// Guest uptime (seconds) after the last command.
    pub uptime_end: Option<f64>,
}

fn marker<'a>(line: &'a str, tag: &str) -> Option<(&'a str, &'a str)> {
    let start = line.find(tag)?;
    let rest = &line[start + tag.len()..];
    let end = rest.find("@@")?;
    Some((&line[..start], rest[..end].trim()))
}

fn finish(results: &mut Vec<CmdResult>, name: String, lines: Vec<String>, rc: Option<i32>) {
    results.push(CmdResult {
        name,
        rc,
        output: lines.join("\n"),
        secs: None,
    });
}

/// Parses a serial log written by the init script of [`super::initramfs::init_script`].
pub fn parse_log(log: &str) -> ParsedLog {
    let mut p = ParsedLog::default();
    let mut cur: Option<(String, Vec<String>)> = None;
    for raw in log.split('\n') {
        let line = raw.trim_end_matches('\r').replace('\r', "");
        if let Some((before, body)) = marker(&line, "@@PW-END ") {
            let (name, rc) = match body.rsplit_once(" rc=") {
                Some((n, rc)) => (n.trim().to_owned(), rc.trim().parse::<i32>().ok()),
                None => (body.to_owned(), None),
            };
            match cur.take() {
                Some((open, mut lines)) if open == name => {
                    if !before.is_empty() {
                        lines.push(before.to_owned());
                    }
                    finish(&mut p.results, open, lines, rc);
                }
                Some((open, lines)) => {
                    finish(&mut p.results, open, lines, None);
                    p.warnings
                        .push(format!("END marker for {name} without BEGIN"));
                }
                None => p
                    .warnings
                    .push(format!("END marker for {name} without BEGIN")),
            }
        } else if let Some((_, name)) = marker(&line, "@@PW-BEGIN ") {
            if let Some((open, lines)) = cur.take() {
                finish(&mut p.results, open, lines, None);
            }
            cur = Some((name.to_owned(), Vec::new()));
        } else if let Some((_, rel)) = marker(&line, "@@PW-KERNEL ") {
            p.kernel_release = Some(rel.to_owned());
        } else if let Some((_, up)) = marker(&line, "@@PW-UPTIME ") {
            match up.split_once(' ') {
                Some(("start", v)) => p.uptime_start = v.trim().parse().ok(),
                Some(("end", v)) => p.uptime_end = v.trim().parse().ok(),
                _ => p.warnings.push(format!("unreadable uptime marker {up:?}")),
            }
        } else if let Some((_, t)) = marker(&line, "@@PW-TIME ") {
            let mut it = t.split_whitespace();
            let (name, a, b) = (
                it.next(),
                it.next().and_then(|v| v.parse::<f64>().ok()),
                it.next().and_then(|v| v.parse::<f64>().ok()),
            );
            match (
                name.and_then(|n| p.results.iter_mut().rev().find(|r| r.name == n)),
                a,
                b,
            ) {
                (Some(r), Some(a), Some(b)) => r.secs = Some(((b - a) * 100.0).round() / 100.0),
                _ => p.warnings.push(format!("unreadable time marker {t:?}")),
            }
        } else if let Some((_, w)) = marker(&line, "@@PW-WARN ") {
            p.warnings.push(w.to_owned());
        } else if line.contains("@@PW-DONE@@") {
            p.done = true;
        } else if let Some((_, lines)) = cur.as_mut() {
            lines.push(line);
        }
    }
    if let Some((open, mut lines)) = cur.take() {
        // Drop the trailing empty piece produced by the final newline, if any.
        if lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        finish(&mut p.results, open, lines, None);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands_rc_and_output() {
        let log = "SeaBIOS junk\r\n\
                   @@PW-KERNEL 6.1.0-56-cloud-amd64@@\r\n\
                   @@PW-UPTIME start 4.25@@\r\n\
                   @@PW-BEGIN version@@\r\n\
                   portwatch 0.1.0\r\n\
                   @@PW-END version rc=0@@\r\n\
                   @@PW-TIME version 4.30 4.81@@\r\n\
                   @@PW-BEGIN probes@@\r\n\
                   error: unrecognized subcommand 'probes'\r\n\
                   \r\n\
                   Usage: portwatch\r\n\
                   @@PW-END probes rc=2@@\r\n\
                   @@PW-BEGIN nonl@@\r\n\
                   no newline@@PW-END nonl rc=0@@\r\n\
                   @@PW-WARN mount debugfs on /sys/kernel/debug failed@@\r\n\
                   @@PW-UPTIME end 7.50@@\r\n\
                   @@PW-DONE@@\r\n\
                   reboot: Power down\r\n";
        let p = parse_log(log);
        assert_eq!(p.kernel_release.as_deref(), Some("6.1.0-56-cloud-amd64"));
        assert!(p.done);
        assert_eq!((p.uptime_start, p.uptime_end), (Some(4.25), Some(7.5)));
        assert_eq!(p.warnings, ["mount debugfs on /sys/kernel/debug failed"]);
        assert_eq!(
            p.results,
            vec![
                CmdResult {
                    name: "version".into(),
                    rc: Some(0),
                    output: "portwatch 0.1.0".into(),
                    secs: Some(0.51)
                },
                CmdResult {
                    name: "probes".into(),
                    rc: Some(2),
                    output: "error: unrecognized subcommand 'probes'\n\nUsage: portwatch".into(),
                    secs: None,
                },
                CmdResult {
                    name: "nonl".into(),
                    rc: Some(0),
                    output: "no newline".into(),
                    secs: None
                },
            ]
        );
        assert!(p.results[0].ok() && !p.results[1].ok());
    }

    #[test]
    fn unfinished_command_has_no_rc() {
        let log = "@@PW-KERNEL 6.12.1@@\n@@PW-BEGIN hang@@\nstarting\n";
        let p = parse_log(log);
        assert!(!p.done);
        assert_eq!(
            p.results,
            vec![CmdResult {
                name: "hang".into(),
                rc: None,
                output: "starting".into(),
                secs: None
            }]
        );
    }

    #[test]
    fn begin_without_end_is_closed_by_next_begin() {
        let p = parse_log("@@PW-BEGIN a@@\nx\n@@PW-BEGIN b@@\ny\n@@PW-END b rc=1@@\n");
        assert_eq!(p.results.len(), 2);
        assert_eq!((p.results[0].rc, p.results[1].rc), (None, Some(1)));
        assert_eq!(p.results[1].output, "y");
    }

    #[test]
    fn empty_log_gives_nothing() {
        assert_eq!(parse_log(""), ParsedLog::default());
    }
}
