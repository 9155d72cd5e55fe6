//! How the in-kernel walks (bucket lookup, owner count, snapshot) run on this kernel:
//! which of the two embedded objects is loaded ([`super::object`]), with which step
//! budgets, and why. The programs' side is `portwatch-ebpf/src/drive.rs`.
//!
//! - `bpf_loop` (5.17+, row `bpf-loop` of the compatibility table): one program run per
//!   walk, owner counts exact up to `--max-owners`.
//! - Bounded loops (older kernels, or `--walk-driver bounded`): the verifier explores a
//!   bounded loop iteration by iteration, so each run takes at most a small number of
//!   steps per walk ([`WalkBudget`]). An owner count per event stops at the budget (shown
//!   as `≥N`), a bucket lookup gives up after a few buckets of one hash chain (reported
//!   as `lookup_truncated`, never as "no bucket"), and a snapshot resumes over as many
//!   program runs as it needs. Where the verifier refuses a budget as too complex
//!   (`E2BIG`), the session loads the object again with the next smaller one.
use std::fmt;

use portwatch_common::WalkBudget;
use serde::{Deserialize, Serialize};

use super::Refusal;

/// What `--walk-driver` asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WalkDriverChoice {
    /// `bpf_loop` where the kernel has it, bounded loops otherwise.
    #[default]
    Auto,
    /// `bpf_loop` or nothing (refused on kernels without it).
    BpfLoop,
    /// Bounded loops even where the kernel has `bpf_loop` (the driver of kernels before
    /// 5.17, to test it on a newer one).
    Bounded,
}

/// The driver of the loaded object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "driver")]
pub enum WalkDriver {
    BpfLoop,
    Bounded {
        owner_steps: u32,
        chain_steps: u32,
        snap_steps: u32,
    },
}

impl WalkDriver {
    fn bounded(b: &WalkBudget) -> WalkDriver {
        WalkDriver::Bounded {
            owner_steps: b.owner_steps,
            chain_steps: b.chain_steps,
            snap_steps: b.snap_steps,
        }
    }
}

/// The budgets the bounded driver tries, largest first. The first loads on the kernels
/// checked (5.10 takes ~40 s per backend to verify it under qemu TCG, ~0.3 s on 6.18
/// natively); a kernel whose verifier refuses it as too complex gets the next.
pub const BUDGETS: [WalkBudget; 3] = [
    WalkBudget {
        owner_steps: 16,
        chain_steps: 8,
        snap_steps: 16,
        _pad: 0,
    },
    WalkBudget {
        owner_steps: 8,
        chain_steps: 4,
        snap_steps: 8,
        _pad: 0,
    },
    WalkBudget {
        owner_steps: 2,
        chain_steps: 2,
        snap_steps: 2,
        _pad: 0,
    },
];

/// The budget `bpf_loop` objects are loaded with: they ignore it (their bounds come
/// from each request), but the global must be set.
pub const BPF_LOOP_BUDGET: WalkBudget = BUDGETS[0];

/// The walk driver of a session and why it was chosen (`walk` in `portwatch probes
/// --json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalkReport {
    #[serde(flatten)]
    pub driver: WalkDriver,
    /// Why this driver.
    pub reason: String,
    /// Larger budgets the verifier refused (bounded driver only), each with the program
    /// and the verifier's verdict.
    pub refused_budgets: Vec<String>,
}

impl WalkReport {
    /// What the driver limits, in a sentence; `None` for `bpf_loop`.
    pub fn limits(&self) -> Option<String> {
        match self.driver {
            WalkDriver::BpfLoop => None,
            WalkDriver::Bounded {
                owner_steps,
                chain_steps,
                snap_steps,
            } => Some(format!(
                "per event, owners are counted up to {owner_steps} steps of the owner walk (a \
                 larger count shows as ≥N) and a bucket lookup stops after {chain_steps} buckets \
                 of one hash chain (shown as lookup_truncated); a snapshot runs {snap_steps} \
                 steps per program run and resumes until done"
            )),
        }
    }
}

impl fmt::Display for WalkReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.driver {
            WalkDriver::BpfLoop => write!(f, "bpf_loop ({})", self.reason)?,
            WalkDriver::Bounded {
                owner_steps,
                chain_steps,
                snap_steps,
            } => write!(
                f,
                "bounded loops, {owner_steps}/{chain_steps}/{snap_steps} owner/chain/snapshot \
                 steps per run ({})",
                self.reason
            )?,
        }
        for r in &self.refused_budgets {
            write!(f, "; refused: {r}")?;
        }
        Ok(())
    }
}

/// Why the object of a driver could not be used.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error(
        "--walk-driver bpf-loop: this kernel's verifier refused bpf_loop ({0}); use \
         --walk-driver auto"
    )]
    NoBpfLoop(Refusal),
}

/// The choice of driver and budget for a session, step by step: [`WalkPlan::next`]
/// says which object and budget to load, [`WalkPlan::bpf_loop_refused`] and
/// [`WalkPlan::too_complex`] move to the next choice.
#[derive(Debug)]
pub struct WalkPlan {
    choice: WalkDriverChoice,
    /// The kernel's BTF has the `bpf_loop` helper.
    btf_has_bpf_loop: bool,
    /// Index into [`BUDGETS`] once the bounded driver is chosen.
    level: Option<usize>,
    reason: String,
    refused_budgets: Vec<String>,
}

/// What to load next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    /// The `bpf_loop` object; check it with `probe_bpf_loop` before use.
    BpfLoop,
    /// The bounded object with this budget.
    Bounded(WalkBudget),
}

impl WalkPlan {
    pub fn new(choice: WalkDriverChoice, btf_has_bpf_loop: bool) -> WalkPlan {
        let (level, reason) = match choice {
            WalkDriverChoice::Bounded => (Some(0), "requested with --walk-driver bounded"),
            WalkDriverChoice::BpfLoop => (None, "requested with --walk-driver bpf-loop"),
            WalkDriverChoice::Auto if btf_has_bpf_loop => (None, "the kernel has it (5.17+)"),
            WalkDriverChoice::Auto => (Some(0), "the kernel has no bpf_loop (5.17+)"),
        };
        WalkPlan {
            choice,
            btf_has_bpf_loop,
            level,
            reason: reason.to_string(),
            refused_budgets: Vec::new(),
        }
    }

    pub fn next(&self) -> Load {
        match self.level {
            None => Load::BpfLoop,
            Some(i) => Load::Bounded(BUDGETS[i]),
        }
    }

    /// The `bpf_loop` object's probe program was refused: the bounded driver next, or an
    /// error when `bpf_loop` was asked for.
    pub fn bpf_loop_refused(&mut self, why: Refusal) -> Result<(), WalkError> {
        if self.choice == WalkDriverChoice::BpfLoop {
            return Err(WalkError::NoBpfLoop(why));
        }
        self.level = Some(0);
        self.reason = if self.btf_has_bpf_loop {
            format!("the kernel's BTF has bpf_loop but its verifier refused it: {why}")
        } else {
            format!("the verifier refused bpf_loop: {why}")
        };
        Ok(())
    }

    /// The verifier refused a program of the bounded object as too complex for the
    /// current budget: true when a smaller budget is left to try.
    pub fn too_complex(&mut self, why: &Refusal) -> bool {
        let Some(i) = self.level else {
            return false;
        };
        if i + 1 >= BUDGETS.len() {
            return false;
        }
        let b = BUDGETS[i];
        self.refused_budgets.push(format!(
            "{}/{}/{} ({why})",
            b.owner_steps, b.chain_steps, b.snap_steps
        ));
        self.level = Some(i + 1);
        true
    }

    /// The report once the object of [`WalkPlan::next`] is in use.
    pub fn report(&self) -> WalkReport {
        let driver = match self.next() {
            Load::BpfLoop => WalkDriver::BpfLoop,
            Load::Bounded(b) => WalkDriver::bounded(&b),
        };
        WalkReport {
            driver,
            reason: self.reason.clone(),
            refused_budgets: self.refused_budgets.clone(),
        }
    }
}

/// Whether the verifier refused a program because it is too complex or too large for
/// its limits (`E2BIG`: "BPF program is too large", "The sequence of N jumps is too
/// complex"), as opposed to refusing what it does.
pub fn is_too_complex(r: &Refusal) -> bool {
    matches!(r, Refusal::Verifier { errno, .. } if errno.number() == libc::E2BIG)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Errno;

    fn verifier(errno: i32) -> Refusal {
        Refusal::Verifier {
            what: "sys_exit_bind".into(),
            errno: Errno::new(errno).expect("non-zero"),
            log: vec!["BPF program is too large. Processed 1000001 insn".into()],
        }
    }

    #[test]
    fn auto_follows_the_kernels_btf() {
        let p = WalkPlan::new(WalkDriverChoice::Auto, true);
        assert_eq!(p.next(), Load::BpfLoop);
        assert_eq!(p.report().driver, WalkDriver::BpfLoop);
        let p = WalkPlan::new(WalkDriverChoice::Auto, false);
        assert_eq!(p.next(), Load::Bounded(BUDGETS[0]));
        assert_eq!(
            p.report().to_string(),
            "bounded loops, 16/8/16 owner/chain/snapshot steps per run (the kernel has no \
             bpf_loop (5.17+))"
        );
        let p = WalkPlan::new(WalkDriverChoice::Bounded, true);
        assert_eq!(p.next(), Load::Bounded(BUDGETS[0]));
        assert!(p
            .report()
            .limits()
            .is_some_and(|l| l.contains("up to 16 steps")));
    }

    #[test]
    fn a_refused_probe_falls_back_unless_bpf_loop_was_asked_for() {
        let mut p = WalkPlan::new(WalkDriverChoice::Auto, true);
        p.bpf_loop_refused(verifier(libc::EINVAL))
            .expect("falls back");
        assert_eq!(p.next(), Load::Bounded(BUDGETS[0]));
        assert!(p.report().reason.starts_with("the kernel's BTF has bpf_loop but its verifier refused it: sys_exit_bind: BPF_PROG_LOAD EINVAL"), "{}", p.report().reason);
        let mut p = WalkPlan::new(WalkDriverChoice::BpfLoop, false);
        assert_eq!(p.next(), Load::BpfLoop);
        let err = p.bpf_loop_refused(verifier(libc::EINVAL)).unwrap_err();
        assert!(err.to_string().contains("--walk-driver auto"), "{err}");
    }

    #[test]
    fn too_complex_budgets_shrink_until_none_is_left() {
        assert!(is_too_complex(&verifier(libc::E2BIG)));
        assert!(!is_too_complex(&verifier(libc::EACCES)));
        assert!(!is_too_complex(&Refusal::NoKprobes));
        let mut p = WalkPlan::new(WalkDriverChoice::Auto, false);
        let mut seen = vec![p.next()];
        while p.too_complex(&verifier(libc::E2BIG)) {
            seen.push(p.next());
        }
        assert_eq!(
            seen,
            BUDGETS
                .iter()
                .map(|b| Load::Bounded(*b))
                .collect::<Vec<_>>()
        );
        let r = p.report();
        assert_eq!(r.refused_budgets.len(), BUDGETS.len() - 1);
        assert!(
            r.refused_budgets[0].starts_with("16/8/16 (sys_exit_bind: BPF_PROG_LOAD E2BIG"),
            "{:?}",
            r.refused_budgets
        );
        assert!(r.to_string().contains("; refused: 8/4/8"), "{r}");
        // bpf_loop has no budget to shrink.
        let mut p = WalkPlan::new(WalkDriverChoice::Auto, true);
        assert!(!p.too_complex(&verifier(libc::E2BIG)));
    }

    #[test]
    fn budgets_shrink_and_are_never_zero() {
        for w in BUDGETS.windows(2) {
            assert!(w[1].owner_steps < w[0].owner_steps);
            assert!(w[1].chain_steps <= w[0].chain_steps);
            assert!(w[1].snap_steps < w[0].snap_steps);
        }
        for b in BUDGETS {
            assert!(
                b.owner_steps >= 2 && b.chain_steps >= 1 && b.snap_steps >= 2,
                "{b:?}"
            );
        }
    }
}
