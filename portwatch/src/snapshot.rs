//! Snapshot engine: asks the in-kernel walker (`portwatch-ebpf/src/snapshot.rs`) for a
//! copy of the bind hash table; [`crate::decode::snapshot`] turns its records into a
//! `model::Snapshot`. It sits below the backends: every backend's session has one, and
//! the tracepoint backend uses its single-bucket lookup to re-read buckets after close().
//! A request can also ask for a namespace's NET record (port range, reserved ports,
//! `tcp_tw_reuse`), read from its `struct net` without entering it; [`Snapshotter::net_info`]
//! asks for that record alone.
//!
//! The walk takes no kernel locks, exactly like the article's drgn script: a bucket that
//! changes during the walk may be seen in either state, and a chain cut short is reported
//! as truncation. Every walk is bounded. A walk may take several program runs (the
//! bounded-loop driver spends its step budget long before the table ends): each run ends
//! with an END record, flagged `WALK_MORE` while the walk goes on, and [`Snapshotter`]
//! triggers the next run until one ends without it.
use aya::{
    maps::{Array, MapData, RingBuf},
    programs::{RawTracePoint, RawTracePointRunOptions, TestRun as _},
    Ebpf,
};
use portwatch_common::{
    rec, snapflag, SnapRecord, SnapRequest, SNAP_CHAIN, SNAP_LOOKUP, SNAP_WALK,
};

use crate::{
    backend::Refusal,
    bpf::{self, MapError, ProgramLookupError},
    decode::{decode_snap_record, DecodeError, SnapshotDecoder},
    model::{NetInfo, Snapshot},
};

/// The program that runs the walk: a raw tracepoint program attached nowhere, run with
/// `BPF_PROG_TEST_RUN` in the calling thread (no attach, so no detach and none of the
/// RCU grace period that closing a tracepoint link waits for).
const PROGRAM: &str = "snapshot_trigger";
/// The same walk without ADDR and OWNER records, lookups or verbose lookups: a smaller
/// program for the verifier, for sessions that only take non-verbose walks (`dump`).
const BRIEF: &str = "snapshot_brief";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Map(#[from] MapError),
    #[error(transparent)]
    Program(#[from] ProgramLookupError),
    /// The kernel refused to load the walk program.
    #[error("the snapshot walk could not be loaded: {0}")]
    Refused(Refusal),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// `BPF_PROG_TEST_RUN` of the walk program failed.
    #[error("snapshot: running `{0}` with BPF_PROG_TEST_RUN failed: {1}")]
    Run(&'static str, String),
    #[error("snapshot: the walk did not report back (was the ring buffer full?)")]
    NoReply,
    #[error("snapshot: the walk did not finish in {0} program runs")]
    TooManyRuns(u32),
}

/// Bound on the program runs of one walk. The bounded-loop driver's smallest budget (2
/// steps per run) needs about 40,000 runs for an empty 65,536-slot table; every slot,
/// bucket and owner is one step.
const MAX_RUNS: u32 = 1 << 22;

/// What a single-bucket lookup found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    Bucket(SnapRecord),
    /// The chain ended without the bucket.
    Absent,
    /// The lookup gave up before the end of the chain (walk step budget): not known.
    Unknown,
}

/// Which namespace's NET record (port range, reserved ports, `tcp_tw_reuse`) a walk
/// also returns, read from its `struct net` without entering it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NetAsk {
    #[default]
    None,
    /// The namespace of an open nsfs file of this process (`/proc/PID/ns/net`,
    /// `/run/netns/NAME`), by descriptor: the file must stay open during the walk.
    Fd(std::os::fd::RawFd),
    /// The `struct net` at this kernel address (from an event, or a walk's
    /// [`Snapshot::nets`]).
    Kernel(u64),
}

/// What to walk.
#[derive(Clone, Copy, Debug)]
pub struct SnapOptions {
    /// 0 = every netns.
    pub netns: u32,
    /// 0 = every port.
    pub port: u16,
    /// Per-address buckets and owners too.
    pub verbose: bool,
    /// At most this many buckets per chain.
    pub max_chain: u32,
    /// At most this many owners counted per bucket.
    pub max_owners: u32,
    /// Also the NET record of a namespace.
    pub net: NetAsk,
}

impl Default for SnapOptions {
    fn default() -> Self {
        SnapOptions {
            netns: 0,
            port: 0,
            verbose: false,
            max_chain: 4096,
            max_owners: 65536,
            net: NetAsk::None,
        }
    }
}

/// The fields of a request that ask for a NET record.
fn net_fields(req: &mut SnapRequest, ask: NetAsk) {
    match ask {
        NetAsk::None => {}
        NetAsk::Fd(fd) => {
            req.with_net = 1;
            req.netns_fd = fd;
        }
        NetAsk::Kernel(net) => {
            req.with_net = 1;
            req.net = net;
        }
    }
}

/// The loaded walk program and its ring buffer.
pub struct Snapshotter {
    rb: RingBuf<MapData>,
    seq: u64,
    /// `snapshot_trigger` is loaded (else only `snapshot_brief`).
    full: bool,
}

impl Snapshotter {
    /// Loads the walk program (it is run, never attached): `snapshot_trigger`, or with
    /// `brief` the smaller `snapshot_brief`, for non-verbose walks only; a session that
    /// asks for more then loads `snapshot_trigger` too.
    pub fn new(ebpf: &mut Ebpf, brief: bool) -> Result<Snapshotter, SnapshotError> {
        // A kernel that refuses the brief program gets the full one (which it may then
        // refuse too, with the verifier's reason).
        let full = !brief || load(ebpf, BRIEF).is_err();
        if full {
            load(ebpf, PROGRAM)?;
        }
        let rb = bpf::take_map(ebpf, "SNAP_RB")?;
        Ok(Snapshotter { rb, seq: 0, full })
    }

    /// Runs one walk and collects its records. One port of one namespace whose NET
    /// record is asked for (`opts.net`) is looked for in its own hash chain only.
    pub fn take(&mut self, ebpf: &mut Ebpf, opts: &SnapOptions) -> Result<Snapshot, SnapshotError> {
        let one_chain = opts.port != 0 && opts.netns != 0 && opts.net != NetAsk::None;
        let mut req = SnapRequest {
            netns: opts.netns,
            port: opts.port,
            verbose: opts.verbose as u8,
            mode: if one_chain { SNAP_CHAIN } else { SNAP_WALK },
            max_chain: opts.max_chain,
            max_owners: opts.max_owners,
            netns_fd: -1,
            ..SnapRequest::default()
        };
        net_fields(&mut req, opts.net);
        // Decoded as each run's records are read: a large table's records are not kept.
        let mut decoder = SnapshotDecoder::default();
        let end = self.request(ebpf, req, |r| decoder.push(&r))?;
        let mut snap = decoder.finish();
        snap.slots = end.netns;
        snap.complete = end.flags & snapflag::WALK_TRUNCATED == 0;
        Ok(snap)
    }

    /// Re-reads the one bucket of (`net`, `port`), `net` being the kernel address of a
    /// `struct net` taken from an event.
    pub fn lookup(
        &mut self,
        ebpf: &mut Ebpf,
        net: u64,
        port: u16,
        max_owners: u32,
    ) -> Result<Lookup, SnapshotError> {
        let req = SnapRequest {
            port,
            mode: SNAP_LOOKUP,
            max_owners,
            net,
            netns_fd: -1,
            ..SnapRequest::default()
        };
        let mut bucket = None;
        let end = self.request(ebpf, req, |r| {
            if r.kind == rec::BUCKET && bucket.is_none() {
                bucket = Some(r);
            }
        })?;
        Ok(match bucket {
            Some(r) => Lookup::Bucket(r),
            None if end.flags & snapflag::LOOKUP_TRUNCATED != 0 => Lookup::Unknown,
            None => Lookup::Absent,
        })
    }

    /// The one bucket of (`net`, `port`) with its per-address buckets and owners, `net`
    /// being the kernel address of a `struct net` taken from an event; with `with_net`,
    /// also that namespace's NET record. A bucket that is gone gives an empty snapshot; one
    /// the search gave up on, an empty one marked truncated.
    pub fn lookup_owners(
        &mut self,
        ebpf: &mut Ebpf,
        net: u64,
        port: u16,
        max_owners: u32,
        with_net: bool,
    ) -> Result<Snapshot, SnapshotError> {
        let mut req = SnapRequest {
            port,
            verbose: 1,
            mode: SNAP_LOOKUP,
            max_owners,
            max_chain: 1,
            net,
            netns_fd: -1,
            ..SnapRequest::default()
        };
        if with_net {
            req.with_net = 1;
        }
        let mut decoder = SnapshotDecoder::default();
        let end = self.request(ebpf, req, |r| decoder.push(&r))?;
        let mut snap = decoder.finish();
        // A search that gave up found no bucket without knowing there is none.
        snap.complete = end.flags & (snapflag::WALK_TRUNCATED | snapflag::LOOKUP_TRUNCATED) == 0;
        Ok(snap)
    }

    /// The NET record of a namespace alone (its port range, reserved ports and
    /// `tcp_tw_reuse`): a verbose lookup of port 0, which no bucket has, asking for it.
    /// `None` when the namespace is gone or, given `expect`, its `struct net` now belongs
    /// to another namespace (a freed `struct net` may be reused).
    pub fn net_info(
        &mut self,
        ebpf: &mut Ebpf,
        ask: NetAsk,
        expect: Option<u32>,
    ) -> Result<Option<NetInfo>, SnapshotError> {
        let mut req = SnapRequest {
            verbose: 1,
            mode: SNAP_LOOKUP,
            max_chain: 1,
            netns_fd: -1,
            ..SnapRequest::default()
        };
        net_fields(&mut req, ask);
        let mut decoder = SnapshotDecoder::default();
        self.request(ebpf, req, |r| decoder.push(&r))?;
        let net = decoder.finish().net;
        Ok(net.filter(|n| n.netns != 0 && expect.is_none_or(|e| e == n.netns)))
    }

    /// Writes the request, runs the walk program, hands each record up to END to `each`
    /// and returns END.
    fn request(
        &mut self,
        ebpf: &mut Ebpf,
        mut req: SnapRequest,
        mut each: impl FnMut(SnapRecord),
    ) -> Result<SnapRecord, SnapshotError> {
        let brief = req.mode != SNAP_LOOKUP && req.verbose == 0;
        if !brief && !self.full {
            load(ebpf, PROGRAM)?;
            self.full = true;
        }
        let name = if self.full { PROGRAM } else { BRIEF };
        // Records of an earlier, abandoned walk must not mix into this one.
        while self.rb.next().is_some() {}
        self.seq += 1;
        // SAFETY: gettid has no preconditions.
        req.tid = unsafe { libc::gettid() } as u32;
        req.seq = self.seq;
        let mut arr: Array<_, SnapRequest> = bpf::map_mut(ebpf, "SNAP_REQ")?;
        arr.set(0, req, 0).map_err(bpf::access("SNAP_REQ"))?;
        // Each run is synchronous inside BPF_PROG_TEST_RUN, in this thread; a run that
        // ends with WALK_MORE is followed by another.
        let prog: &mut RawTracePoint = bpf::program(ebpf, name)?;
        for _ in 0..MAX_RUNS {
            prog.test_run(RawTracePointRunOptions::new())
                .map_err(|e| SnapshotError::Run(name, bpf::error_chain(&e)))?;
            let mut end = None;
            while let Some(item) = self.rb.next() {
                let r = decode_snap_record(&item)?;
                if r.kind == rec::END {
                    if r.addr == self.seq {
                        end = Some(r);
                    }
                    break;
                }
                each(r);
            }
            match end {
                Some(e) if e.flags & snapflag::WALK_MORE != 0 => continue,
                Some(e) => return Ok(e),
                None => return Err(SnapshotError::NoReply),
            }
        }
        Err(SnapshotError::TooManyRuns(MAX_RUNS))
    }
}

/// Loads walk program `name`.
fn load(ebpf: &mut Ebpf, name: &'static str) -> Result<(), SnapshotError> {
    let prog: &mut RawTracePoint = bpf::program(ebpf, name)?;
    prog.load()
        .map_err(|e| SnapshotError::Refused(Refusal::from_load(name, &e)))
}
