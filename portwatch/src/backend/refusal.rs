//! Why a backend cannot run on this kernel, as a typed reason: the full text (Display)
//! for `portwatch probes` and errors, and a short form for one-line headers.
use crate::{bpf::ProgramLookupError, model::Errno};

/// Why a backend was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The BTF signatures lack parameters the required hooks read.
    #[error("BTF lacks the parameters {}", .0.join(", "))]
    MissingParameters(Vec<&'static str>),
    /// A required kernel function is not in the kernel's BTF.
    #[error("kernel has no function {0}")]
    MissingFunction(&'static str),
    /// A required function is in BTF but a hook on it would miss calls (inlined, cloned)
    /// or cannot attach (not ftrace-able).
    #[error("cannot hook {func}: {reason}")]
    HookSite { func: &'static str, reason: String },
    /// The object lacks a program (a build mismatch).
    #[error(transparent)]
    Program(#[from] ProgramLookupError),
    /// `BPF_PROG_LOAD` failed with `errno`; `log` holds the verifier's last lines.
    #[error("{what}: BPF_PROG_LOAD {errno}{}{}", errno_hint(*.errno), log_suffix(.log))]
    Verifier {
        what: String,
        errno: Errno,
        log: Vec<String>,
    },
    /// Loading failed before the kernel answered.
    #[error("{what}: {reason}")]
    Load { what: String, reason: String },
    /// The kernel was built without kprobes.
    #[error(
        "kernel has no kprobes (no kprobe_events in tracefs; the programs passed the verifier)"
    )]
    NoKprobes,
    /// The kernel's BTF could not be read for fentry's trampolines.
    #[error("reading kernel BTF: {0}")]
    KernelBtf(String),
    /// Attaching a loaded program failed.
    #[error("{program} on {target}: attach: {reason}")]
    Attach {
        program: String,
        target: String,
        reason: String,
    },
}

impl Refusal {
    /// The gist, for headers: e.g. "BPF_PROG_LOAD EPERM", "kernel has no kprobes".
    pub fn short(&self) -> String {
        match self {
            Refusal::MissingParameters(_) => "BTF lacks hook parameters".to_string(),
            Refusal::MissingFunction(f) => format!("kernel has no function {f}"),
            Refusal::HookSite { func, .. } => format!("{func} not hookable"),
            Refusal::Program(_) => "program missing from the object".to_string(),
            Refusal::Verifier { errno, .. } => format!("BPF_PROG_LOAD {errno}"),
            Refusal::Load { .. } => "loading failed".to_string(),
            Refusal::NoKprobes => "kernel has no kprobes".to_string(),
            Refusal::KernelBtf(_) => "no kernel BTF".to_string(),
            Refusal::Attach { target, .. } => format!("attaching to {target} failed"),
        }
    }

    /// A refusal from a program that would not load: the errno, and the last lines of
    /// the verifier's log when it has one.
    pub fn from_load(what: &str, e: &aya::programs::ProgramError) -> Refusal {
        match e {
            aya::programs::ProgramError::LoadError {
                io_error,
                verifier_log,
            } => {
                let log = verifier_log.to_string();
                // The log ends with statistics; the reason is the last lines before them.
                let stats = [
                    "verification time",
                    "stack depth",
                    "processed ",
                    "max_states_per_insn",
                ];
                let mut tail: Vec<String> = log
                    .lines()
                    .filter(|l| !l.trim().is_empty() && !stats.iter().any(|s| l.starts_with(s)))
                    .rev()
                    .take(3)
                    .map(str::to_string)
                    .collect();
                tail.reverse();
                Refusal::Verifier {
                    what: what.to_string(),
                    errno: Errno::of_io(io_error),
                    log: tail,
                }
            }
            other => Refusal::Load {
                what: what.to_string(),
                reason: crate::bpf::error_chain(other),
            },
        }
    }
}

fn errno_hint(errno: Errno) -> &'static str {
    match errno.number() {
        libc::EPERM => " (the kernel refuses this program type here)",
        libc::EACCES => " (rejected by the verifier)",
        _ => "",
    }
}

fn log_suffix(log: &[String]) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!("; verifier: {}", log.join(" | "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_have_a_full_text_and_a_short_form() {
        let eperm = Refusal::Verifier {
            what: "inet_csk_get_port".into(),
            errno: Errno::new(libc::EPERM).unwrap(),
            log: vec![],
        };
        assert_eq!(
            eperm.to_string(),
            "inet_csk_get_port: BPF_PROG_LOAD EPERM (the kernel refuses this program type here)"
        );
        assert_eq!(eperm.short(), "BPF_PROG_LOAD EPERM");
        let no_kprobes = Refusal::NoKprobes;
        assert_eq!(
            no_kprobes.to_string(),
            "kernel has no kprobes (no kprobe_events in tracefs; the programs passed the verifier)"
        );
        assert_eq!(no_kprobes.short(), "kernel has no kprobes");
        let eacces = Refusal::Verifier {
            what: "kp_get_port".into(),
            errno: Errno::new(libc::EACCES).unwrap(),
            log: vec!["x".into()],
        };
        assert_eq!(
            eacces.to_string(),
            "kp_get_port: BPF_PROG_LOAD EACCES (rejected by the verifier); verifier: x"
        );
        assert_eq!(eacces.short(), "BPF_PROG_LOAD EACCES");
    }
}
