//! Failed bind()/connect() calls as the kernel counted them (the `ERRORS` map of the eBPF
//! programs), independent of the event stream.

use super::{Errno, Op};

/// How many calls of one kind failed with one errno in one network namespace, since the
/// programs were loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailureCount {
    pub netns: u32,
    /// [`Op::Bind`] or [`Op::Connect`].
    pub op: Op,
    pub errno: Errno,
    pub count: u64,
}

/// Everything the kernel counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FailureCounts {
    /// Sorted by netns, then op (bind first), then errno.
    pub counts: Vec<FailureCount>,
    /// Failures that found the counter map full and are in no count above.
    pub unslotted: u64,
}

impl FailureCounts {
    /// The counts of one namespace and operation, by errno.
    pub fn of(&self, netns: u32, op: Op) -> impl Iterator<Item = &FailureCount> {
        self.counts
            .iter()
            .filter(move |c| c.netns == netns && c.op == op)
    }

    /// The namespaces with at least one count.
    pub fn namespaces(&self) -> impl Iterator<Item = u32> + '_ {
        let mut last = None;
        self.counts.iter().filter_map(move |c| {
            let new = last != Some(c.netns);
            last = Some(c.netns);
            new.then_some(c.netns)
        })
    }
}
