//! A gap in the event stream and its repair: events the kernel could not deliver, and
//! the buckets read again so that the known state is right again.

/// What was read again after a loss.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reread {
    /// These buckets, (netns, port), in order: the lost events were about them.
    Ports(Vec<(u32, u16)>),
    /// Every bucket the stream covers: some lost event's bucket is not known.
    /// `netns` `None`: every namespace; `ports` empty: every port.
    Scope { netns: Option<u32>, ports: Vec<u16> },
}

/// Events lost since the previous check, and what was read again to repair them. The
/// corrections follow it as transitions of op `rescan`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resync {
    /// Kernel monotonic time of the re-read.
    pub ts_ns: u64,
    /// Events the programs could not deliver (ring buffer full, no room to keep an
    /// operation for its exit hook).
    pub dropped: u64,
    /// Program runs the kernel skipped (`recursion_misses`: another tracing program was
    /// running on that CPU); each may have been an event.
    pub skipped: u64,
    pub reread: Reread,
    /// The re-read covered all of it. When false, some bucket could not be read (a
    /// lookup or walk cut short): the buckets it did not see keep their known state,
    /// which may still be wrong.
    pub complete: bool,
    /// Corrections that follow (transitions of op `rescan`).
    pub corrections: usize,
}

impl Resync {
    /// Events lost, at most (a skipped run may not have been an event).
    pub fn lost(&self) -> u64 {
        self.dropped + self.skipped
    }
}
