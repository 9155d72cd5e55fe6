//! The running kernel as the judge of `explain`: seeded, generated cases, each in its own
//! private network namespace. Every candidate call is first explained through the command
//! path of `explain bind`/`explain connect` ([`Ask`]: the owners read from the kernel by
//! eBPF, not the ones the case made), then made; every answer of the kernel is compared
//! with the explanation. Needs root (namespaces, sockets under another uid, eBPF);
//! changes nothing outside the namespaces it creates.

pub mod bind_cases;
pub mod connect_cases;

use rand::SeedableRng;
use rand_xorshift::XorShiftRng;
use serde::Serialize;

use super::{
    ask::{self, AskError, BindOpts, ConnectReport, Endpoint, Target},
    bind::{self, Verdict},
    lab::LabError,
    sock::Owner,
    variant::Variant,
};
use crate::{backend::ProbeSession, model::BindExplanation};

/// The command path the cases ask before each call: `ProbeSession` runs the real one.
pub trait Ask {
    fn bind(
        &mut self,
        target: &Target,
        ep: &Endpoint,
        opts: BindOpts,
        v: &Variant,
    ) -> Result<BindExplanation, AskError>;
    fn connect(
        &mut self,
        target: &Target,
        dst: &Endpoint,
        from: Option<&Endpoint>,
        v: &Variant,
    ) -> Result<ConnectReport, AskError>;
}

impl Ask for ProbeSession {
    fn bind(
        &mut self,
        target: &Target,
        ep: &Endpoint,
        opts: BindOpts,
        v: &Variant,
    ) -> Result<BindExplanation, AskError> {
        ask::bind(self, target, ep, opts, v)
    }

    fn connect(
        &mut self,
        target: &Target,
        dst: &Endpoint,
        from: Option<&Endpoint>,
        v: &Variant,
    ) -> Result<ConnectReport, AskError> {
        ask::connect_report(self, target, dst, from, v)
    }
}

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
    /// Explanations asked through the command path (snapshots read from the kernel).
    pub explained: usize,
    pub disagreements: Vec<Disagreement>,
}

impl Tally {
    /// One line of counts.
    pub fn summary(&self, seed: u64, secs: f64) -> String {
        format!(
            "seed {seed}: {} bind cases ({} calls judged, {} refusals, {} conflicts re-made alone, \
             {} completeness checks, {} fixes), {} connect cases ({} range connects, {} decided by \
             where the scan starts, {} port probes, {} holder checks); {} explanations read from \
             the kernel; {secs:.1} s: {} disagreements",
            self.bind_cases,
            self.bind_calls,
            self.bind_refusals,
            self.conflicts_verified,
            self.completeness_checks,
            self.fixes_verified,
            self.connect_cases,
            self.connect_calls,
            self.connect_depends,
            self.port_probes,
            self.blockers_verified,
            self.explained,
            self.disagreements.len()
        )
    }
}

/// The state of a run: the tally, where disagreements go, and the command path.
pub struct Judge<'a> {
    pub tally: Tally,
    pub asker: &'a mut dyn Ask,
}

impl Judge<'_> {
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

/// Runs the cases of `opts` against the running kernel with the rules of `variant`,
/// asking `asker` first. `progress` is told about each case as it starts.
pub fn run(
    opts: &Options,
    variant: &Variant,
    asker: &mut dyn Ask,
    mut progress: impl FnMut(&str),
) -> Result<Tally, LabError> {
    let mut rng = XorShiftRng::seed_from_u64(opts.seed);
    let mut j = Judge {
        tally: Tally::default(),
        asker,
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
