//! When `top` walks the whole bind table again. The event stream keeps the table current
//! between walks; a walk catches what the stream cannot see (TIME-WAIT expiry under the
//! tracepoint backend, events lost when the ring was full). A walk of 10,000 buckets
//! costs tens of milliseconds of CPU (kernel time of this process: the walk runs in its
//! context), so by default walks are spaced to stay within [`WALK_BUDGET`] of one core,
//! and come back to every `--interval` while events are being lost.

use std::time::{Duration, Instant};

/// Share of one core the walks of `--rescan auto` may take.
pub const WALK_BUDGET: f64 = 0.005;

/// How often to walk the whole table (`--rescan`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rescan {
    /// Every `--interval`, spaced out so walks stay within [`WALK_BUDGET`] of a core;
    /// every `--interval` after events were lost.
    Auto,
    /// Every this long, whatever a walk costs.
    Every(Duration),
}

/// The rescan clock of one `top` run: when the next walk is due, and what the last one
/// cost.
#[derive(Clone, Debug)]
pub struct Schedule {
    rescan: Rescan,
    interval: Duration,
    next: Option<Instant>,
    /// CPU time of the last walk (walk, decode, reconcile).
    cost: Option<Duration>,
    /// Time between the last walk and the next.
    period: Duration,
}

impl Schedule {
    /// A schedule whose first walk is due at once.
    pub fn new(rescan: Rescan, interval: Duration) -> Schedule {
        Schedule {
            rescan,
            interval,
            next: None,
            cost: None,
            period: interval,
        }
    }

    /// Whether a walk is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.next.is_none_or(|next| now >= next)
    }

    /// Makes the next walk due at once (un-pausing).
    pub fn now(&mut self) {
        self.next = None;
    }

    /// Records a walk started at `started` that took `cost` of CPU; `lost` says whether
    /// events were lost since the walk before it (then the next walk comes after
    /// `--interval`, whatever it costs).
    pub fn walked(&mut self, started: Instant, cost: Duration, lost: bool) {
        self.cost = Some(cost);
        self.period = match self.rescan {
            Rescan::Every(d) => d,
            Rescan::Auto if lost => self.interval,
            Rescan::Auto => self.interval.max(cost.div_f64(WALK_BUDGET)),
        };
        self.next = Some(started + self.period);
    }

    /// CPU time of the last walk, if one was made.
    pub fn cost(&self) -> Option<Duration> {
        self.cost
    }

    /// Time from the last walk to the next.
    pub fn period(&self) -> Duration {
        self.period
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn auto_spaces_walks_to_the_budget_and_not_below_the_interval() {
        let t0 = Instant::now();
        let mut s = Schedule::new(Rescan::Auto, Duration::from_secs(1));
        assert!(s.due(t0), "the first walk is due at once");
        // 20 ms of CPU per walk at 0.5 % of a core: one walk every 4 s.
        s.walked(t0, 20 * MS, false);
        assert_eq!(s.period(), Duration::from_secs(4));
        assert_eq!(s.cost(), Some(20 * MS));
        assert!(!s.due(t0 + Duration::from_millis(3999)));
        assert!(s.due(t0 + Duration::from_secs(4)));
        // A cheap walk: every interval.
        s.walked(t0, MS, false);
        assert_eq!(s.period(), Duration::from_secs(1));
        // Events lost: back to every interval, whatever the walk costs.
        s.walked(t0, 20 * MS, true);
        assert_eq!(s.period(), Duration::from_secs(1));
        assert!(s.due(t0 + Duration::from_secs(1)));
        // Un-pausing makes the next walk due at once.
        s.walked(t0, 20 * MS, false);
        s.now();
        assert!(s.due(t0));
    }

    #[test]
    fn a_fixed_rescan_ignores_the_cost() {
        let t0 = Instant::now();
        let mut s = Schedule::new(
            Rescan::Every(Duration::from_secs(2)),
            Duration::from_secs(1),
        );
        s.walked(t0, 100 * MS, false);
        assert_eq!(s.period(), Duration::from_secs(2));
        s.walked(t0, MS, true);
        assert_eq!(s.period(), Duration::from_secs(2));
    }
}
