//! Snapshot engine: asks the in-kernel walker (`portwatch-ebpf/src/snapshot.rs`) for a
//! copy of the bind hash table and turns its records into a `model::Snapshot`.
//!
//! The walk takes no kernel locks, exactly like the article's drgn script: a bucket that
//! changes during the walk may be seen in either state, and a chain cut short is reported
//! as truncation. Every walk is bounded.
use aya::{
    maps::{Array, MapData, RingBuf},
    programs::TracePoint,
    Ebpf,
};
use portwatch_common::{rec, snapflag, SnapRecord, SnapRequest, NO_FIELD, SNAP_LOOKUP, SNAP_TRIGGER_PID, SNAP_WALK};

use crate::{
    backend::{error_chain, BackendError},
    btf::Resolved,
    decode::{decode_snap_record, fmt_addr, fmt_ip, tcp_state_name},
    model::{AddrRow, BucketInfo, BucketKey, BucketRow, OwnerRow, Snapshot},
};

const AF_INET6: u16 = 10;

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
}

impl Default for SnapOptions {
    fn default() -> Self {
        SnapOptions { netns: 0, port: 0, verbose: false, max_chain: 4096, max_owners: 65536 }
    }
}

/// The loaded trigger program and its ring buffer.
pub struct Snapshotter {
    rb: RingBuf<MapData>,
    seq: u64,
}

impl Snapshotter {
    /// Loads `snapshot_trigger` and attaches it to `syscalls:sys_enter_getpgid`.
    pub fn new(ebpf: &mut Ebpf) -> Result<Snapshotter, BackendError> {
        let prog: &mut TracePoint = ebpf
            .program_mut("snapshot_trigger")
            .ok_or(BackendError::Missing { what: "program", name: "snapshot_trigger".into() })?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| BackendError::Program {
                prog: "snapshot_trigger".into(),
                action: "type check",
                reason: e.to_string(),
            })?;
        prog.load().map_err(|e| BackendError::Program {
            prog: "snapshot_trigger".into(),
            action: "BPF_PROG_LOAD",
            reason: error_chain(&e),
        })?;
        prog.attach("syscalls", "sys_enter_getpgid").map_err(|e| BackendError::Program {
            prog: "snapshot_trigger".into(),
            action: "attach to syscalls:sys_enter_getpgid",
            reason: error_chain(&e),
        })?;
        let map = ebpf.take_map("SNAP_RB").ok_or(BackendError::Missing { what: "map", name: "SNAP_RB".into() })?;
        let rb = RingBuf::try_from(map).map_err(|e| BackendError::Map { map: "SNAP_RB".into(), reason: e.to_string() })?;
        Ok(Snapshotter { rb, seq: 0 })
    }

    /// Runs one walk and collects its records.
    pub fn take(&mut self, ebpf: &mut Ebpf, resolved: &Resolved, opts: &SnapOptions) -> Result<Snapshot, BackendError> {
        let req = SnapRequest {
            netns: opts.netns,
            port: opts.port,
            verbose: opts.verbose as u8,
            mode: SNAP_WALK,
            max_chain: opts.max_chain,
            max_owners: opts.max_owners,
            ..SnapRequest::default()
        };
        let (records, end) = self.request(ebpf, req)?;
        let tb2_v6 = resolved.layout.tb2_v6_rcv_saddr != NO_FIELD;
        let mut snap = assemble(&records, tb2_v6);
        snap.slots = end.netns;
        snap.truncated |= end.flags & snapflag::WALK_TRUNCATED != 0;
        Ok(snap)
    }

    /// Re-reads the one bucket of (`net`, `port`), `net` being the kernel address of a
    /// `struct net` taken from an event. `None`: no such bucket now.
    pub fn lookup(&mut self, ebpf: &mut Ebpf, net: u64, port: u16, max_owners: u32) -> Result<Option<SnapRecord>, BackendError> {
        let req = SnapRequest { port, mode: SNAP_LOOKUP, max_owners, net, ..SnapRequest::default() };
        let (records, _) = self.request(ebpf, req)?;
        Ok(records.into_iter().find(|r| r.kind == rec::BUCKET))
    }

    /// Writes the request, makes the trigger syscall, collects the records up to END.
    fn request(&mut self, ebpf: &mut Ebpf, mut req: SnapRequest) -> Result<(Vec<SnapRecord>, SnapRecord), BackendError> {
        // Records of an earlier, abandoned walk must not mix into this one.
        while self.rb.next().is_some() {}
        self.seq += 1;
        // SAFETY: gettid has no preconditions.
        req.tid = unsafe { libc::gettid() } as u32;
        req.seq = self.seq;
        {
            let mut arr: Array<_, SnapRequest> = Array::try_from(
                ebpf.map_mut("SNAP_REQ").ok_or(BackendError::Missing { what: "map", name: "SNAP_REQ".into() })?,
            )
            .map_err(|e| BackendError::Map { map: "SNAP_REQ".into(), reason: e.to_string() })?;
            arr.set(0, req, 0).map_err(|e| BackendError::Map { map: "SNAP_REQ".into(), reason: e.to_string() })?;
        }
        // The walk runs synchronously inside this syscall (which then fails with ESRCH,
        // as no such process exists).
        // SAFETY: getpgid has no memory-safety preconditions.
        unsafe { libc::getpgid(SNAP_TRIGGER_PID) };
        let mut records = Vec::new();
        while let Some(item) = self.rb.next() {
            let r = decode_snap_record(&item)?;
            if r.kind == rec::END {
                if r.addr == self.seq {
                    return Ok((records, r));
                }
                break;
            }
            records.push(r);
        }
        Err(BackendError::Snapshot(
            "the walk did not report back (is syscalls:sys_enter_getpgid traced? was the ring buffer full?)".into(),
        ))
    }
}

/// Groups walk records into buckets. ADDR and OWNER records precede the BUCKET record
/// they belong to (the walker learns the owner count only at the end of a bucket).
pub fn assemble(records: &[SnapRecord], tb2_v6: bool) -> Snapshot {
    let mut snap = Snapshot::default();
    let mut addrs: Vec<AddrRow> = Vec::new();
    // Owners seen before any ADDR record (kernels whose owners hang off the bucket).
    let mut loose: Vec<(String, OwnerRow)> = Vec::new();
    for r in records {
        match r.kind {
            rec::ADDR => {
                let address = if tb2_v6 { fmt_ip(AF_INET6, &r.laddr) } else { fmt_ip(2, &r.laddr) };
                let has_state = r.owners != 0;
                addrs.push(AddrRow {
                    address,
                    fastreuse: has_state.then_some(r.fastreuse),
                    fastreuseport: has_state.then_some(r.fastreuseport),
                    owners: Vec::new(),
                });
            }
            rec::OWNER => {
                let owner = OwnerRow {
                    local: fmt_addr(r.family, &r.laddr, r.port),
                    state: tcp_state_name(r.state).to_string(),
                    reuseaddr: r.flags & snapflag::REUSEADDR != 0,
                    reuseport: r.flags & snapflag::REUSEPORT != 0,
                };
                match addrs.last_mut() {
                    Some(a) => a.owners.push(owner),
                    None => loose.push((fmt_ip(r.family, &r.laddr), owner)),
                }
            }
            rec::BUCKET => {
                for (address, owner) in loose.drain(..) {
                    match addrs.iter_mut().find(|a| a.address == address) {
                        Some(a) => a.owners.push(owner),
                        None => addrs.push(AddrRow { address, fastreuse: None, fastreuseport: None, owners: vec![owner] }),
                    }
                }
                let owners_truncated = r.flags & snapflag::OWNERS_TRUNCATED != 0;
                snap.truncated |= owners_truncated;
                snap.buckets.push(BucketRow {
                    key: BucketKey { netns: r.netns, l3mdev: r.l3mdev, port: r.port },
                    info: BucketInfo {
                        fastreuse: r.fastreuse,
                        fastreuseport: r.fastreuseport,
                        owners: r.owners,
                        owners_truncated,
                    },
                    addresses: std::mem::take(&mut addrs),
                });
            }
            _ => {}
        }
    }
    snap.buckets.sort_by_key(|b| b.key);
    snap
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(kind: u8, port: u16, owners: u32) -> SnapRecord {
        SnapRecord { kind, port, owners, netns: 7, ..Default::default() }
    }

    #[test]
    fn groups_addresses_and_owners_under_their_bucket() {
        let mut a = rec(rec::ADDR, 60000, 1);
        a.laddr[10] = 0xff;
        a.laddr[11] = 0xff;
        a.laddr[12..16].copy_from_slice(&[127, 0, 0, 1]);
        let mut o = rec(rec::OWNER, 60000, 0);
        o.family = 2;
        o.laddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        o.state = 1;
        o.flags = snapflag::REUSEADDR;
        let mut b = rec(rec::BUCKET, 60000, 1);
        b.fastreuse = -1;
        b.fastreuseport = -1;
        let b2 = rec(rec::BUCKET, 1234, 2);
        let snap = assemble(&[a, o, b, b2], true);
        assert_eq!(snap.buckets.len(), 2);
        // Sorted by key: 1234 first.
        assert_eq!(snap.buckets[0].key.port, 1234);
        assert!(snap.buckets[0].addresses.is_empty());
        let row = &snap.buckets[1];
        assert_eq!(row.info.fastreuse, -1);
        assert_eq!(row.info.owners, 1);
        assert_eq!(row.addresses.len(), 1);
        assert_eq!(row.addresses[0].address, "127.0.0.1");
        assert_eq!(row.addresses[0].fastreuse, Some(0));
        assert_eq!(row.addresses[0].owners[0].local, "127.0.0.1:60000");
        assert!(row.addresses[0].owners[0].reuseaddr);
        assert_eq!(row.addresses[0].owners[0].state, "ESTABLISHED");
    }

    #[test]
    fn loose_owners_are_grouped_by_address() {
        let mut o1 = rec(rec::OWNER, 80, 0);
        o1.family = 2;
        o1.laddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        let o2 = o1;
        let mut o3 = o1;
        o3.laddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        let b = rec(rec::BUCKET, 80, 3);
        let snap = assemble(&[o1, o2, o3, b], false);
        let row = &snap.buckets[0];
        assert_eq!(row.addresses.len(), 2);
        assert_eq!(row.addresses[0].owners.len(), 2);
        assert_eq!(row.addresses[0].fastreuse, None);
        assert!(!snap.truncated);
    }

    #[test]
    fn truncation_is_reported() {
        let mut b = rec(rec::BUCKET, 80, 4096);
        b.flags = snapflag::OWNERS_TRUNCATED;
        let snap = assemble(&[b], false);
        assert!(snap.truncated);
        assert!(snap.buckets[0].info.owners_truncated);
    }
}
