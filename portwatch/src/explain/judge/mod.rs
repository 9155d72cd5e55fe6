//! The running kernel as the judge of the rules engine: seeded, generated cases, each in
//! its own private network namespace; the engine predicts, then the calls are made and
//! every answer of the kernel is compared with the prediction. Needs root (namespaces,
//! sockets under another uid); changes nothing outside the namespaces it creates.

pub mod bind_cases;
pub mod connect_cases;

use rand::SeedableRng;
use rand_xorshift::XorShiftRng;
use serde::Serialize;

use super::{
    bind::{self, Verdict},
    lab::LabError,
    sock::Owner,
    variant::Variant,
};

/// How many cases to run, from which seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Options {
    pub seed: u64,
    pub bind_cases: usize,
    pub connect_cases: usize,
}

/// One answer of the kernel that differs from the engine's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Disagreement {
    pub case: String,
    pub what: String,
}

/// What was judged.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Generated bind cases (one candidate each).
    pub bind_cases: usize,
    /// bind() and listen() calls judged (owners on the way and candidates).
    pub bind_calls: usize,
    /// Candidates the kernel refused.
    pub bind_refusals: usize,
    /// Named conflicts re-made alone that refused the candidate.
    pub conflicts_verified: usize,
    /// Refusals re-made without the named conflicts.
    pub completeness_checks: usize,
    /// Fixes applied and checked.
    pub fixes_verified: usize,
    pub connect_cases: usize,
    /// connect() calls over the whole range.
    pub connect_calls: usize,
    /// Of those, cases where only ports some attempts skip were usable.
    pub connect_depends: usize,
    /// connect() calls with the range narrowed to one port.
    pub port_probes: usize,
    /// Refusals where closing the named holders freed their port.
    pub blockers_verified: usize,
    pub disagreements: Vec<Disagreement>,
}

/// The state of a run: the tally and where disagreements go.
pub struct Judge {
    pub tally: Tally,
}

impl Judge {
    fn disagree(&mut self, case: &str, what: String) {
        self.tally.disagreements.push(Disagreement {
            case: case.to_owned(),
            what,
        });
    }

    /// Compares a bind()/listen() prediction with the kernel's answer; true when they agree.
    fn agree(
        &mut self,
        step: &str,
        predicted: Verdict,
        got: Result<Verdict, i32>,
        owners: &[Owner],
        r: &bind::Report,
    ) -> bool {
        if got == Ok(predicted) {
            return true;
        }
        self.disagree(
            step,
            format!("engine says {predicted:?} (conflicts {:?}), the kernel said {got:?}; owners {owners:?}", r.conflicts),
        );
        false
    }
}

/// Runs the cases of `opts` against the running kernel with the rules of `variant`.
/// `progress` is told about each case as it starts.
pub fn run(
    opts: &Options,
    variant: &Variant,
    mut progress: impl FnMut(&str),
) -> Result<Tally, LabError> {
    let mut rng = XorShiftRng::seed_from_u64(opts.seed);
    let mut j = Judge {
        tally: Tally::default(),
    };
    for i in 0..opts.bind_cases {
        let case = bind_cases::generate(&mut rng);
        let label = format!("bind case {i} (seed {})", opts.seed);
        progress(&label);
        bind_cases::run_case(&mut j, &label, &case, variant)?;
    }
    for i in 0..opts.connect_cases {
        let case = connect_cases::generate(&mut rng);
        let label = format!("connect case {i} (seed {})", opts.seed);
        progress(&label);
        connect_cases::run_case(&mut j, &label, &case, variant)?;
    }
    Ok(j.tally)
}
