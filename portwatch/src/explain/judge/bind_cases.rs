//! Generated bind() cases: owners made one by one (each bind() and listen() on the way is
//! itself a judged case, predicted by the engine from the owners the case made), then a
//! candidate bind(), explained first through `explain bind`'s command path (the owners and
//! the bucket's fast path read from the kernel) and then made: the verdicts must be equal.
//! For a refusal, the named conflicts must be owners the case made; each is re-made alone in
//! a fresh namespace (at least one must refuse the candidate on its own), the named ones are
//! closed (the candidate must then succeed), and each fix is applied (the candidate must
//! succeed) — every one of those candidates explained first the same way.

use std::net::IpAddr;

use rand::{seq::IndexedRandom, RngExt};

use super::{
    super::{
        ask::{BindOpts, Endpoint},
        bind::{self, Fix, Phase, Verdict},
        lab::{errno, Lab, LabError, Recipe, Role},
        sock::{BucketState, OwnerState, SharingOpts, Sock},
        variant::Variant,
    },
    Judge,
};
use crate::model::BindExplanation;

/// The port every bind case is about (each case has its own namespace).
pub const PORT: u16 = 7000;

const V4: [&str; 3] = ["0.0.0.0", "127.0.0.1", "127.0.0.2"];
const V6: [&str; 5] = [
    "::",
    "::1",
    "::ffff:127.0.0.1",
    "::ffff:127.0.0.2",
    "::ffff:0.0.0.0",
];

fn pick_addr(rng: &mut impl RngExt) -> IpAddr {
    let all: Vec<&str> = V4.iter().chain(V6.iter()).copied().collect();
    all.choose(rng)
        .and_then(|a| a.parse().ok())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

fn is_mapped(a: IpAddr) -> bool {
    matches!(a, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some())
}

fn pick_recipe(rng: &mut impl RngExt, first: bool, candidate: bool) -> Recipe {
    let addr = pick_addr(rng);
    let v6only = match addr {
        IpAddr::V6(_) if is_mapped(addr) => candidate && rng.random_bool(0.05),
        IpAddr::V6(_) => rng.random_bool(0.4),
        IpAddr::V4(_) => false,
    };
    let roles: &[Role] = if candidate {
        &[Role::Bound]
    } else if first {
        &[
            Role::Bound,
            Role::Listen,
            Role::Connected,
            Role::TimeWait,
            Role::ServerConn,
            Role::ServerTimeWait,
        ]
    } else {
        &[Role::Bound, Role::Listen, Role::Connected, Role::TimeWait]
    };
    Recipe {
        addr,
        reuseaddr: rng.random_bool(0.45),
        reuseport: rng.random_bool(0.35),
        uid: if rng.random_bool(0.3) { 1000 } else { 0 },
        v6only,
        role: *roles.choose(rng).unwrap_or(&Role::Bound),
    }
}

/// One generated case: owners to make, then the candidate.
#[derive(Clone, Debug)]
pub struct Case {
    pub owners: Vec<Recipe>,
    pub candidate: Recipe,
}

pub fn generate(rng: &mut impl RngExt) -> Case {
    let n = rng.random_range(1..=3usize);
    let owners = (0..n).map(|i| pick_recipe(rng, i == 0, false)).collect();
    Case {
        owners,
        candidate: pick_recipe(rng, false, true),
    }
}

fn sock_of(r: &Recipe) -> Sock {
    Sock::new(
        r.addr,
        SharingOpts {
            reuseaddr: r.reuseaddr,
            reuseport: r.reuseport,
            uid: r.uid,
            v6only: r.v6only,
            bound_dev: 0,
        },
    )
}

fn kernel_verdict(res: &std::io::Result<()>) -> Result<Verdict, i32> {
    match res {
        Ok(()) => Ok(Verdict::Ok),
        Err(e) if errno(e) == libc::EADDRINUSE => Ok(Verdict::Eaddrinuse),
        Err(e) if errno(e) == libc::EINVAL => Ok(Verdict::Einval),
        Err(e) => Err(errno(e)),
    }
}

/// A namespace with owners made one by one, and the bucket's fast-path state followed
/// through every bind() and listen() the kernel accepted.
struct Built {
    lab: Lab,
    bucket: Option<BucketState>,
}

impl Built {
    fn new() -> Result<Built, LabError> {
        Ok(Built {
            lab: Lab::new()?,
            bucket: None,
        })
    }

    /// The rules' prediction for a candidate made from `r`.
    fn predict(&self, r: &Recipe, v: &Variant) -> bind::Report {
        let owners = self.lab.owners();
        let bucket = if owners.is_empty() {
            None
        } else {
            self.bucket.as_ref()
        };
        bind::check(&sock_of(r), &owners, bucket, v, Phase::Bind)
    }

    /// Makes one owner: bind() (and listen() for the roles that listen) judged when
    /// `judge` is given. `Ok(None)` when the kernel refused the bind().
    fn add(
        &mut self,
        r: &Recipe,
        v: &Variant,
        mut judge: Option<(&mut Judge, &str)>,
    ) -> Result<Option<usize>, LabError> {
        let s = self
            .lab
            .socket(r.addr, r.reuseaddr, r.reuseport, r.uid, r.v6only)?;
        let owners = self.lab.owners();
        let predicted = self.predict(r, v);
        let got = kernel_verdict(&Lab::bind(&s, r.addr, PORT));
        if let Some((j, step)) = judge.as_mut() {
            j.tally.bind_calls += 1;
            j.agree(
                &format!("{step} bind {}", r.describe()),
                predicted.verdict,
                got,
                &owners,
                &predicted,
            );
        }
        if got != Ok(Verdict::Ok) {
            return Ok(None);
        }
        self.bucket = Some(bind::after(
            self.bucket.as_ref().filter(|_| !owners.is_empty()),
            &sock_of(r),
            !owners.is_empty(),
            v,
            Phase::Bind,
        ));
        let listen = match r.role {
            Role::Listen | Role::ServerConn | Role::ServerTimeWait => {
                let me = Lab::owner_of(&s, r, OwnerState::Other)?;
                let predicted =
                    bind::check(&me.sock, &owners, self.bucket.as_ref(), v, Phase::Listen);
                let res = s.listen(16);
                if let Some((j, step)) = judge.as_mut() {
                    j.tally.bind_calls += 1;
                    let step = format!("{step} listen {}", r.describe());
                    j.agree(
                        &step,
                        predicted.verdict,
                        kernel_verdict(&res),
                        &owners,
                        &predicted,
                    );
                }
                if res.is_ok() {
                    self.bucket = Some(bind::after(
                        self.bucket.as_ref(),
                        &me.sock,
                        true,
                        v,
                        Phase::Listen,
                    ));
                }
                Some(res)
            }
            _ => None,
        };
        let held = self.lab.finish(s, *r, PORT, listen)?;
        Ok(Some(self.lab.push(held)))
    }

    /// Makes the owners of `recipes` without judging; the recipes are the ones a judged
    /// run produced (a refused listen() already turned into `Bound`), so each must come
    /// out the same.
    fn rebuild(recipes: &[Recipe], v: &Variant) -> Result<Built, LabError> {
        let mut b = Built::new()?;
        for r in recipes {
            match b.add(r, v, None)? {
                Some(i) if b.lab.held()[i].recipe == *r => {}
                _ => {
                    return Err(LabError::Setup(format!(
                        "re-making owner {} did not give the same result",
                        r.describe()
                    )))
                }
            }
        }
        Ok(b)
    }

    /// Asks `explain bind` (the command path: owners read from the kernel) about a
    /// candidate made from `r`, then binds it: the kernel's answer, judged against the
    /// explanation. A candidate that got the port keeps it and leaves the bucket's
    /// fast-path state as its bind() set it.
    fn judge_candidate(
        &mut self,
        j: &mut Judge,
        step: &str,
        r: &Recipe,
        v: &Variant,
    ) -> Result<(BindExplanation, Result<Verdict, i32>), LabError> {
        let owners = self.lab.owners();
        let target = self.lab.target()?;
        let ep = Endpoint {
            ip: r.addr,
            port: PORT,
            scope: None,
        };
        let opts = BindOpts {
            reuseaddr: r.reuseaddr,
            reuseport: r.reuseport,
            v6only: r.v6only,
            uid: Some(r.uid),
        };
        let e = j.asker.bind(&target, &ep, opts, v)?;
        j.tally.explained += 1;
        if e.owners != owners.len() || e.truncated {
            j.disagree(
                step,
                format!(
                    "the kernel's bucket shows {} owners{}, the case made {}",
                    e.owners,
                    if e.truncated { " (truncated)" } else { "" },
                    owners.len()
                ),
            );
        }
        let s = self
            .lab
            .socket(r.addr, r.reuseaddr, r.reuseport, r.uid, r.v6only)?;
        let got = kernel_verdict(&Lab::bind(&s, r.addr, PORT));
        j.tally.bind_calls += 1;
        if got != Ok(e.verdict) {
            j.disagree(
                step,
                format!(
                    "explain says {:?} (conflicts {:?}), the kernel said {got:?}; owners made {owners:?}",
                    e.verdict,
                    e.conflicts
                        .iter()
                        .map(|c| (c.owner.local, c.owner.state, c.rule))
                        .collect::<Vec<_>>()
                ),
            );
        }
        if got == Ok(Verdict::Ok) {
            self.bucket = Some(bind::after(
                self.bucket.as_ref().filter(|_| !owners.is_empty()),
                &sock_of(r),
                !owners.is_empty(),
                v,
                Phase::Bind,
            ));
        }
        Ok((e, got))
    }
}

/// Runs one case.
pub fn run_case(j: &mut Judge, label: &str, case: &Case, v: &Variant) -> Result<(), LabError> {
    let mut built = Built::new()?;
    for (i, r) in case.owners.iter().enumerate() {
        built.add(r, v, Some((&mut *j, &format!("{label} owner {i}"))))?;
    }
    let made: Vec<Recipe> = built.lab.held().iter().map(|h| h.recipe).collect();
    let cand = case.candidate;
    let step = format!(
        "{label} candidate {} against [{}]",
        cand.describe(),
        describe_all(&made)
    );
    j.tally.bind_cases += 1;
    // Judged in a copy of the namespace (same owners, same order): a candidate that gets
    // the port changes the bucket's fast-path state.
    let mut copy = Built::rebuild(&made, v)?;
    let (report, got) = copy.judge_candidate(j, &step, &cand, v)?;
    if got != Ok(report.verdict) || report.verdict != Verdict::Eaddrinuse {
        return Ok(());
    }
    j.tally.bind_refusals += 1;
    // The conflicts named are owners the case made (the copy holds them in `made` order).
    let mut named: Vec<usize> = Vec::new();
    for c in &report.conflicts {
        match copy.lab.index_of(&c.owner) {
            Some(i) => named.push(i),
            None => j.disagree(
                &step,
                format!(
                    "explain names {} {}, which is no owner the case made",
                    c.owner.local, c.owner.state
                ),
            ),
        }
    }
    drop(copy);

    // Each fix, in a copy of the namespace: explain says the candidate passes, and so
    // must the kernel.
    for fix in &report.fixes {
        let (recipes, cand2) = match fix {
            Fix::Candidate { change } => (made.clone(), apply(&cand, change)),
            Fix::CandidateAndOwners { change } => {
                let mut rs = made.clone();
                for i in &named {
                    rs[*i].reuseaddr |= change.reuseaddr;
                    rs[*i].reuseport |= change.reuseport;
                }
                (rs, apply(&cand, change))
            }
            Fix::WaitForTimeWait => continue,
        };
        let (e, got) = Built::rebuild(&recipes, v)?.judge_candidate(
            j,
            &format!("{step}: fix {fix:?}"),
            &cand2,
            v,
        )?;
        j.tally.fixes_verified += 1;
        if e.verdict != Verdict::Ok || got != Ok(Verdict::Ok) {
            j.disagree(
                &step,
                format!(
                    "fix {fix:?}: explain says {:?} once applied, the kernel said {got:?}",
                    e.verdict
                ),
            );
        }
    }
    // Each named conflict on its own: at least one must refuse the candidate by itself (an
    // owner alone may sit on a bucket of another family than it did beside the others).
    let mut real = 0;
    for i in &named {
        let (e, got) = Built::rebuild(&made[*i..=*i], v)?.judge_candidate(
            j,
            &format!("{step}: owner {i} alone"),
            &cand,
            v,
        )?;
        if e.verdict == Verdict::Eaddrinuse && got == Ok(Verdict::Eaddrinuse) {
            j.tally.conflicts_verified += 1;
            real += 1;
        }
    }
    if real == 0 && !named.is_empty() {
        j.disagree(
            &step,
            "none of the named conflicts refuses the candidate on its own".to_owned(),
        );
    }
    // Closing every named conflict that can be closed (TIME-WAIT cannot): explain then
    // names only the TIME-WAIT ones, and the kernel must agree; with none left, the bind
    // goes through, so the named list was complete.
    let mut open = built;
    named.sort_unstable_by(|a, b| b.cmp(a));
    for i in named {
        open.lab.close(i);
    }
    if open.lab.owners().is_empty() {
        open.bucket = None;
    }
    let (e, got) = open.judge_candidate(j, &format!("{step}: named conflicts closed"), &cand, v)?;
    if e.verdict == Verdict::Ok && got == Ok(Verdict::Ok) {
        j.tally.completeness_checks += 1;
    }
    Ok(())
}

fn apply(r: &Recipe, c: &bind::Change) -> Recipe {
    Recipe {
        reuseaddr: r.reuseaddr || c.reuseaddr,
        reuseport: r.reuseport || c.reuseport,
        v6only: r.v6only || c.v6only,
        uid: c.uid.unwrap_or(r.uid),
        ..*r
    }
}

fn describe_all(rs: &[Recipe]) -> String {
    rs.iter()
        .map(Recipe::describe)
        .collect::<Vec<_>>()
        .join("; ")
}
