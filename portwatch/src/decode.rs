//! Decoding, once, of the raw records the eBPF programs write into ring buffers: bytes
//! into the `#[repr(C)]` structs of `portwatch_common`, and those into the typed values of
//! [`crate::model`] ([`socket_event`], [`snapshot`]). Nothing past this module reads a
//! raw record.
//!
//! Everything here is pure: no syscalls, no root, unit-tested.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use portwatch_common::{flag, op, rec, snapdetail, snapflag, ErrorKey, Event, SnapRecord};

use crate::model::{
    AddrRow, AddrState, BucketInfo, BucketKey, BucketRow, Errno, FailureCount, FailureCounts,
    Family, FastPath, Fastreuse, NetInfo, Op, OwnerCount, OwnerRow, PortRange, SeenBucket,
    Snapshot, SockOpts, SocketEvent, Task, TcpState,
};

/// `AF_INET` as the kernel numbers it.
pub const AF_INET: u16 = 2;
/// `AF_INET6` as the kernel numbers it.
pub const AF_INET6: u16 = 10;

/// Why a raw record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error(
        "{what} record is {got} bytes, expected at least {want}: the eBPF object and the \
         user-space binary disagree on the layout; rebuild both from the same tree"
    )]
    TooShort {
        what: &'static str,
        got: usize,
        want: usize,
    },
    #[error(
        "event has unknown op {0}: the eBPF object is newer than this binary; rebuild \
         both from the same tree"
    )]
    UnknownOp(u8),
    #[error(
        "snapshot record has unknown kind {0}: the eBPF object is newer than this \
         binary; rebuild both from the same tree"
    )]
    UnknownKind(u8),
}

/// Reads a `T` from the start of `buf` after checking its length.
fn read_pod<T: Copy>(buf: &[u8], what: &'static str) -> Result<T, DecodeError> {
    let want = std::mem::size_of::<T>();
    if buf.len() < want {
        return Err(DecodeError::TooShort {
            what,
            got: buf.len(),
            want,
        });
    }
    // SAFETY: `buf` holds at least `size_of::<T>()` bytes (checked above);
    // `read_unaligned` has no alignment requirement; callers only use `T` = `Event` or
    // `SnapRecord`, `#[repr(C)]` types made only of integers and integer arrays with
    // explicit padding, for which every bit pattern is a valid value.
    Ok(unsafe { std::ptr::read_unaligned(buf.as_ptr().cast::<T>()) })
}

/// Decodes one [`Event`] from a ring-buffer record. Rejects short records and unknown
/// `op` values.
pub fn decode_event(buf: &[u8]) -> Result<Event, DecodeError> {
    let ev: Event = read_pod(buf, "event")?;
    op_of(ev.op)?;
    Ok(ev)
}

/// Decodes one [`SnapRecord`] from a ring-buffer record. Rejects short records and
/// unknown `kind` values.
pub fn decode_snap_record(buf: &[u8]) -> Result<SnapRecord, DecodeError> {
    let r: SnapRecord = read_pod(buf, "snapshot")?;
    match r.kind {
        rec::BUCKET | rec::ADDR | rec::OWNER | rec::END | rec::NET | rec::RESERVED => Ok(r),
        k => Err(DecodeError::UnknownKind(k)),
    }
}

/// Maps a kernel-boundary `op::*` value to the model's [`Op`].
fn op_of(v: u8) -> Result<Op, DecodeError> {
    Ok(match v {
        op::BIND => Op::Bind,
        op::LISTEN => Op::Listen,
        op::CONNECT => Op::Connect,
        op::ACCEPT => Op::Accept,
        op::CLOSE => Op::Close,
        op::RELEASE => Op::Release,
        op::TIMEWAIT => Op::Timewait,
        other => return Err(DecodeError::UnknownOp(other)),
    })
}

/// The typed event of a raw one. Rejects unknown `op` values.
pub fn socket_event(ev: &Event) -> Result<SocketEvent, DecodeError> {
    let has = |f: u16| ev.flags & f != 0;
    let errno = Errno::new(ev.errno);
    // A socket whose bind/connect failed holds no port: its address says nothing then,
    // except the address a failed bind() asked for (BIND_ADDR).
    let sock_known = has(flag::SOCK_KNOWN) && (errno.is_none() || has(flag::HAD_PORT));
    let local = if has(flag::BIND_ADDR) {
        socket_addr(ev.family, &ev.laddr, ev.port)
    } else if has(flag::CONNECT_DST) && !sock_known {
        // A failed connect() got no port; its source address, when it had one.
        (ev.laddr != [0; 16])
            .then(|| socket_addr(ev.family, &ev.laddr, 0))
            .flatten()
    } else {
        sock_known
            .then(|| socket_addr(ev.family, &ev.laddr, ev.port))
            .flatten()
    };
    let remote = if (sock_known || has(flag::CONNECT_DST)) && ev.rport != 0 {
        socket_addr(ev.family, &ev.raddr, ev.rport)
    } else {
        None
    };
    let read = has(flag::SOCK_KNOWN);
    Ok(SocketEvent {
        ts_ns: ev.ts_ns,
        op: op_of(ev.op)?,
        netns: ev.netns,
        port: ev.port,
        bucket: has(flag::BUCKET_PRESENT).then(|| SeenBucket {
            id: ev.bucket.tb,
            l3mdev: ev.bucket.l3mdev,
            info: BucketInfo {
                fastreuse: Fastreuse(ev.bucket.fastreuse),
                fastreuseport: Fastreuse(ev.bucket.fastreuseport),
                owners: OwnerCount {
                    n: ev.bucket.owners,
                    truncated: has(flag::OWNERS_TRUNCATED),
                },
            },
        }),
        errno,
        had_port: has(flag::HAD_PORT),
        task: task(ev.pid, &ev.comm),
        local,
        remote,
        opts: SockOpts {
            reuseaddr: has(flag::REUSEADDR),
            reuseport: has(flag::REUSEPORT),
            bind_address_no_port: has(flag::BIND_ADDRESS_NO_PORT),
            connect_bound: (has(flag::SOCK_KNOWN) && has(flag::CONNECT_BIND_KNOWN))
                .then(|| has(flag::CONNECT_BOUND)),
            local_port_range: PortRange::from_packed(ev.local_port_range)
                .filter(|_| has(flag::SOCK_KNOWN)),
        },
        port_from_range: has(flag::PORT_FROM_RANGE),
        net: ev.net,
        family: family(ev.family),
        v6only: has(flag::V6ONLY),
        uid: read.then_some(ev.uid),
        bound_dev: ev.bound_dev,
        explanation: None,
        lookup_truncated: has(flag::LOOKUP_TRUNCATED) && !has(flag::BUCKET_PRESENT),
        addr: has(flag::ADDR_STATE).then_some(AddrState {
            fastreuse: Fastreuse(ev.addr_fastreuse),
            fastreuseport: Fastreuse(ev.addr_fastreuseport),
        }),
    })
}

/// The task of an event: the eBPF side leaves pid and comm zero for events no task
/// caused (timer or softirq context).
fn task(pid: u32, comm: &[u8; 16]) -> Task {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    if pid == 0 && end == 0 {
        return Task::Kernel;
    }
    Task::Process {
        pid,
        comm: String::from_utf8_lossy(&comm[..end]).into_owned(),
    }
}

/// The address of `family`: IPv4 in the first 4 bytes, IPv6 in all 16; a v4-mapped IPv6
/// address is the IPv4 address it maps. `None` for other families.
fn ip(family: u16, addr: &[u8; 16]) -> Option<IpAddr> {
    match family {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::new(
            addr[0], addr[1], addr[2], addr[3],
        ))),
        AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(*addr)).to_canonical()),
        _ => None,
    }
}

fn socket_addr(family: u16, addr: &[u8; 16], port: u16) -> Option<SocketAddr> {
    ip(family, addr).map(|ip| SocketAddr::new(ip, port))
}

/// The family of a kernel `AF_*` value.
fn family(af: u16) -> Option<Family> {
    match af {
        AF_INET => Some(Family::Inet),
        AF_INET6 => Some(Family::Inet6),
        _ => None,
    }
}

/// An OWNER record as a row (its holders are filled in later, from /proc).
fn owner_row(r: &SnapRecord) -> OwnerRow {
    let state = TcpState::from_kernel(r.state);
    // TIME-WAIT and request sockets are not full sockets: they have no uid or inode.
    let full = !matches!(state, TcpState::TimeWait | TcpState::NewSynRecv);
    OwnerRow {
        local: socket_addr(r.family, &r.laddr, r.port),
        family: family(r.family),
        state,
        reuseaddr: r.flags & snapflag::REUSEADDR != 0,
        reuseport: r.flags & snapflag::REUSEPORT != 0,
        v6only: r.detail & snapdetail::V6ONLY != 0,
        uid: full.then_some(r.uid),
        bound_dev: r.bound_dev,
        inode: (full && r.ino != 0).then_some(r.ino),
        remote: (r.rport != 0)
            .then(|| socket_addr(r.family, &r.raddr, r.rport))
            .flatten(),
        bucket_family: if r.detail & snapdetail::TB2_FAMILY != 0 {
            family(r.tb2_family)
        } else {
            None
        },
        connect_bound: (r.flags & snapflag::CONNECT_BIND_KNOWN != 0)
            .then_some(r.flags & snapflag::CONNECT_BOUND != 0),
        local_port_range: PortRange::from_packed(r.local_port_range),
        holders: Vec::new(),
    }
}

/// The fast path a BUCKET record carries, while `fastreuseport` is positive (the kernel
/// writes the fast fields only when it makes the bucket strict or any).
fn fast_path(r: &SnapRecord) -> Option<FastPath> {
    (r.fastreuseport > 0).then(|| FastPath {
        uid: r.uid,
        address: ip(r.family, &r.laddr),
        family: family(r.family),
        ipv6_only: r.detail & snapdetail::V6ONLY != 0,
    })
}

/// The reserved ports of `bits` (RESERVED records: 128 ports from `port`) inside
/// `range`, as inclusive ranges in order.
fn reserved_ranges(chunks: &[(u16, [u8; 16])], range: (u16, u16)) -> Vec<(u16, u16)> {
    let mut ports: Vec<u16> = Vec::new();
    for (base, bits) in chunks {
        for (i, byte) in bits.iter().enumerate() {
            for b in 0..8 {
                if byte & (1 << b) == 0 {
                    continue;
                }
                let port = u32::from(*base) + (i as u32) * 8 + b;
                if let Ok(p) = u16::try_from(port) {
                    if (range.0..=range.1).contains(&p) {
                        ports.push(p);
                    }
                }
            }
        }
    }
    ports.sort_unstable();
    ports.dedup();
    let mut out: Vec<(u16, u16)> = Vec::new();
    for p in ports {
        match out.last_mut() {
            Some(last) if u32::from(last.1) + 1 == u32::from(p) => last.1 = p,
            _ => out.push((p, p)),
        }
    }
    out
}

/// Groups the records of one walk into a [`Snapshot`] sorted by key (see
/// [`SnapshotDecoder`]).
pub fn snapshot(records: &[SnapRecord]) -> Snapshot {
    let mut d = SnapshotDecoder::default();
    for r in records {
        d.push(r);
    }
    d.finish()
}

/// Groups the records of one walk into a [`Snapshot`] as they arrive, so a walk's
/// records need not be kept. A NET record (and its RESERVED records) comes first when
/// the namespace was asked for. ADDR and OWNER records precede the BUCKET record they
/// belong to (the walker learns the owner count only at the end of a bucket). ADDR
/// records carry their family: AF_INET6 (v4-mapped for IPv4) on kernels that store every
/// per-address bucket as IPv6, else the bucket's. Every record carries its bucket's
/// address: records of a bucket the walk left without its BUCKET record (the bucket left
/// its chain between two runs of the walk) are not given to the next bucket.
#[derive(Default)]
pub struct SnapshotDecoder {
    snap: Snapshot,
    addrs: Vec<AddrRow>,
    reserved: Vec<(u16, [u8; 16])>,
    /// Owners seen before any ADDR record (kernels whose owners hang off the bucket).
    loose: Vec<(Option<IpAddr>, OwnerRow)>,
    /// The bucket the pending ADDR/OWNER records belong to.
    pending_of: u64,
    /// The (netns, struct net) last put in `snap.nets`.
    last_net: (u32, u64),
}

impl SnapshotDecoder {
    /// Takes the next record of the walk.
    pub fn push(&mut self, r: &SnapRecord) {
        if matches!(r.kind, rec::ADDR | rec::OWNER | rec::BUCKET) && r.addr != self.pending_of {
            self.addrs.clear();
            self.loose.clear();
            self.pending_of = r.addr;
        }
        match r.kind {
            rec::NET => {
                self.snap.net = Some(NetInfo {
                    netns: r.netns,
                    range: (r.port, r.rport),
                    reserved: Vec::new(),
                    tw_reuse: r.state,
                });
            }
            rec::RESERVED => self.reserved.push((r.port, r.laddr)),
            rec::ADDR => {
                let has_state = r.owners != 0;
                self.addrs.push(AddrRow {
                    address: ip(r.family, &r.laddr),
                    family: if r.detail & snapdetail::TB2_FAMILY != 0 {
                        family(r.family)
                    } else {
                        None
                    },
                    fastreuse: has_state.then_some(Fastreuse(r.fastreuse)),
                    fastreuseport: has_state.then_some(Fastreuse(r.fastreuseport)),
                    owners: Vec::new(),
                });
            }
            rec::OWNER => {
                let owner = owner_row(r);
                match self.addrs.last_mut() {
                    Some(a) => a.owners.push(owner),
                    None => self.loose.push((ip(r.family, &r.laddr), owner)),
                }
            }
            rec::BUCKET => {
                for (address, owner) in self.loose.drain(..) {
                    match self.addrs.iter_mut().find(|a| a.address == address) {
                        Some(a) => a.owners.push(owner),
                        None => self.addrs.push(AddrRow {
                            address,
                            family: None,
                            fastreuse: None,
                            fastreuseport: None,
                            owners: vec![owner],
                        }),
                    }
                }
                let truncated = r.flags & snapflag::OWNERS_TRUNCATED != 0;
                self.snap.owners_truncated |= truncated;
                // Consecutive buckets mostly share their namespace (all of them in a walk
                // of one namespace): one map insert per change, not one per bucket.
                if r.net != 0 && self.last_net != (r.netns, r.net) {
                    self.snap.nets.insert(r.netns, r.net);
                    self.last_net = (r.netns, r.net);
                }
                self.snap.buckets.push(BucketRow {
                    key: BucketKey {
                        netns: r.netns,
                        l3mdev: r.l3mdev,
                        port: r.port,
                    },
                    info: BucketInfo {
                        fastreuse: Fastreuse(r.fastreuse),
                        fastreuseport: Fastreuse(r.fastreuseport),
                        owners: OwnerCount {
                            n: r.owners,
                            truncated,
                        },
                    },
                    addresses: std::mem::take(&mut self.addrs),
                    fast: fast_path(r),
                });
            }
            _ => {}
        }
    }

    /// The snapshot, sorted by key.
    pub fn finish(mut self) -> Snapshot {
        if let Some(net) = self.snap.net.as_mut() {
            net.reserved = reserved_ranges(&self.reserved, net.range);
        }
        sort_by_key(&mut self.snap.buckets);
        self.snap
    }
}

/// Sorts a walk's rows by key. A walk of one namespace gives its buckets (of one l3mdev)
/// in slot order, and a port's slot is the port plus a per-namespace offset, masked to
/// the table's size: one run sorted by port, rotated where the slot index wraps. One
/// rotation sorts that in place; a stable sort would first copy the whole table to
/// scratch memory (about 1 ms of page faults and copying for 50,000 buckets). Any other
/// order is sorted.
fn sort_by_key(rows: &mut [BucketRow]) {
    let mut descents = rows
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[0].key > w[1].key)
        .map(|(i, _)| i + 1);
    match (descents.next(), descents.next()) {
        (None, _) => {}
        // The last key below the first: rotating keeps equal keys in walk order.
        (Some(at), None) if rows.last().map(|r| r.key) < rows.first().map(|r| r.key) => {
            rows.rotate_left(at)
        }
        _ => rows.sort_by_key(|b| b.key),
    }
}

/// The failure counts of the `ERRORS` map's entries. Entries of another op or errno 0
/// (which the programs never write) are left out.
pub fn failure_counts(entries: impl IntoIterator<Item = (ErrorKey, u64)>) -> FailureCounts {
    let mut out = FailureCounts::default();
    for (key, count) in entries {
        if key == ErrorKey::MAP_FULL {
            out.unslotted += count;
            continue;
        }
        let op = match key.op {
            op::BIND => Op::Bind,
            op::CONNECT => Op::Connect,
            _ => continue,
        };
        let Some(errno) = Errno::new(i32::from(key.errno)) else {
            continue;
        };
        out.counts.push(FailureCount {
            netns: key.netns,
            op,
            errno,
            count,
        });
    }
    out.counts
        .sort_by_key(|c| (c.netns, c.op != Op::Bind, c.errno));
    out
}

#[cfg(test)]
mod tests {
    use portwatch_common::BucketState;

    use super::*;

    fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
        let n = std::mem::size_of::<T>();
        // SAFETY: test-only; `v` is a valid `T` of `n` bytes and the types used here
        // (`Event`, `SnapRecord`) have explicit padding fields, so every byte is
        // initialised.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), n).to_vec() }
    }

    fn sample_event() -> Event {
        let mut comm = [0u8; 16];
        comm[..7].copy_from_slice(b"python3");
        Event {
            ts_ns: 123_456_789,
            sock: 0xffff_8880_1234_5678,
            net: 0xffff_ffff_8200_0000,
            bucket: BucketState {
                tb: 0xffff_8880_dead_beef,
                owners: 2,
                l3mdev: 0,
                port: 60000,
                fastreuse: -1,
                fastreuseport: -1,
                _pad: [0; 4],
            },
            pid: 4242,
            tid: 4243,
            netns: 4026532290,
            errno: 0,
            range_lo: 60000,
            range_hi: 60000,
            family: AF_INET,
            port: 60000,
            laddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            raddr: [127, 9, 9, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            rport: 1234,
            flags: flag::BUCKET_PRESENT | flag::SOCK_KNOWN,
            op: op::CONNECT,
            sk_state: 1,
            hook: 1,
            _pad: [0],
            comm,
            local_port_range: 0,
            addr_fastreuse: 0,
            addr_fastreuseport: 0,
            _pad2: [0; 2],
            uid: 1000,
            bound_dev: 0,
        }
    }

    #[test]
    fn event_round_trips() {
        let ev = sample_event();
        let b = bytes_of(&ev);
        assert_eq!(b.len(), 144);
        assert_eq!(decode_event(&b), Ok(ev));
    }

    #[test]
    fn event_decodes_unaligned_and_with_trailing_bytes() {
        let ev = sample_event();
        let mut b = vec![0u8];
        b.extend(bytes_of(&ev));
        b.extend([0xaa; 8]);
        assert_eq!(decode_event(&b[1..]), Ok(ev));
    }

    #[test]
    fn event_too_short_is_an_error() {
        let b = bytes_of(&sample_event());
        assert_eq!(
            decode_event(&b[..143]),
            Err(DecodeError::TooShort {
                what: "event",
                got: 143,
                want: 144
            })
        );
        assert!(decode_event(&[]).is_err());
        let msg = decode_event(&b[..10]).unwrap_err().to_string();
        assert!(msg.contains("rebuild"), "{msg}");
    }

    #[test]
    fn event_unknown_op_is_an_error() {
        for bad in [0u8, 8, 255] {
            let mut ev = sample_event();
            ev.op = bad;
            assert_eq!(
                decode_event(&bytes_of(&ev)),
                Err(DecodeError::UnknownOp(bad))
            );
        }
        for good in 1u8..=7 {
            let mut ev = sample_event();
            ev.op = good;
            assert!(decode_event(&bytes_of(&ev)).is_ok());
        }
    }

    #[test]
    fn snap_record_round_trips_and_rejects() {
        let r = SnapRecord {
            addr: 0xffff_8880_0000_1000,
            netns: 4026531840,
            owners: 3,
            l3mdev: 0,
            port: 1234,
            family: AF_INET,
            laddr: [0; 16],
            fastreuse: 0,
            fastreuseport: -1,
            kind: rec::BUCKET,
            flags: 0,
            state: 0,
            _pad: [0; 3],
            local_port_range: 0,
            net: 0xffff_ffff_8200_0000,
            ..SnapRecord::default()
        };
        let b = bytes_of(&r);
        assert_eq!(b.len(), 104);
        assert_eq!(decode_snap_record(&b), Ok(r));
        assert_eq!(
            decode_snap_record(&b[..103]),
            Err(DecodeError::TooShort {
                what: "snapshot",
                got: 103,
                want: 104
            })
        );
        for k in [rec::ADDR, rec::OWNER, rec::END, rec::NET, rec::RESERVED] {
            let mut r2 = r;
            r2.kind = k;
            assert_eq!(decode_snap_record(&bytes_of(&r2)), Ok(r2));
        }
        for k in [0u8, 7, 200] {
            let mut r2 = r;
            r2.kind = k;
            assert_eq!(
                decode_snap_record(&bytes_of(&r2)),
                Err(DecodeError::UnknownKind(k))
            );
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x1234_5678_u32;
        for len in 0..300 {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (seed >> 16) as u8
                })
                .collect();
            let _ = decode_event(&buf);
            let _ = decode_snap_record(&buf);
        }
    }

    #[test]
    fn comm_stops_at_nul_and_is_lossy() {
        let mut c = [0u8; 16];
        c[..4].copy_from_slice(b"curl");
        c[5] = b'x';
        assert_eq!(task(1, &c).comm(), Some("curl"));
        assert_eq!(task(1, &[b'a'; 16]).comm(), Some("a".repeat(16).as_str()));
        assert_eq!(task(1, &[0; 16]).comm(), Some(""));
        let mut bad = [0u8; 16];
        bad[0] = 0xff;
        bad[1] = b'z';
        assert_eq!(task(1, &bad).comm(), Some("\u{fffd}z"));
        // No pid and no name: no task caused the event.
        assert_eq!(task(0, &[0; 16]), Task::Kernel);
        assert_eq!(task(0, &c).pid(), Some(0));
    }

    #[test]
    fn addresses() {
        let sa =
            |family, addr: &[u8; 16], port| socket_addr(family, addr, port).map(|a| a.to_string());
        let mut v4 = [0u8; 16];
        v4[..4].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(sa(AF_INET, &v4, 60000).as_deref(), Some("127.0.0.1:60000"));
        let lo6 = Ipv6Addr::LOCALHOST.octets();
        assert_eq!(sa(AF_INET6, &lo6, 60000).as_deref(), Some("[::1]:60000"));
        let mapped = Ipv4Addr::new(127, 2, 2, 2).to_ipv6_mapped().octets();
        assert_eq!(sa(AF_INET6, &mapped, 80).as_deref(), Some("127.2.2.2:80"));
        assert_eq!(sa(AF_INET6, &[0; 16], 1234).as_deref(), Some("[::]:1234"));
        assert_eq!(sa(AF_INET, &[0; 16], 1234).as_deref(), Some("0.0.0.0:1234"));
        // An address of an unknown family is no address.
        assert_eq!(sa(0, &v4, 1), None);
        assert_eq!(
            ip(AF_INET, &v4).map(|a| a.to_string()).as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(
            ip(AF_INET6, &lo6).map(|a| a.to_string()).as_deref(),
            Some("::1")
        );
    }

    #[test]
    fn socket_event_is_typed() {
        let e = socket_event(&sample_event()).expect("decodes");
        assert_eq!(e.op, Op::Connect);
        assert_eq!((e.netns, e.port, e.ts_ns), (4026532290, 60000, 123_456_789));
        assert_eq!(
            e.bucket,
            Some(SeenBucket {
                id: 0xffff_8880_dead_beef,
                l3mdev: 0,
                info: BucketInfo {
                    fastreuse: Fastreuse(-1),
                    fastreuseport: Fastreuse(-1),
                    owners: OwnerCount::exact(2),
                },
            })
        );
        assert_eq!(e.errno, None);
        assert!(!e.had_port);
        assert_eq!(
            e.task,
            Task::Process {
                pid: 4242,
                comm: "python3".into()
            }
        );
        assert_eq!(
            e.local.map(|a| a.to_string()).as_deref(),
            Some("127.0.0.1:60000")
        );
        assert_eq!(
            e.remote.map(|a| a.to_string()).as_deref(),
            Some("127.9.9.9:1234")
        );
        assert_eq!(e.opts, SockOpts::default());
        assert!(!e.port_from_range);

        let mut raw = sample_event();
        raw.flags = flag::OWNERS_TRUNCATED
            | flag::REUSEADDR
            | flag::REUSEPORT
            | flag::BIND_ADDRESS_NO_PORT
            | flag::PORT_FROM_RANGE
            | flag::SOCK_KNOWN;
        raw.errno = 99;
        raw.pid = 0;
        raw.comm = [0; 16];
        let e = socket_event(&raw).expect("decodes");
        assert_eq!(e.bucket, None, "no BUCKET_PRESENT: no bucket");
        assert_eq!(e.errno, Errno::new(99));
        assert_eq!(e.task, Task::Kernel);
        assert_eq!(
            e.opts,
            SockOpts {
                reuseaddr: true,
                reuseport: true,
                bind_address_no_port: true,
                connect_bound: None,
                local_port_range: None,
            }
        );
        assert!(e.port_from_range);
        // A failed socket that had no port holds none: its addresses say nothing.
        assert_eq!((e.local, e.remote), (None, None));
        raw.flags |= flag::HAD_PORT;
        let e = socket_event(&raw).expect("decodes");
        assert!(e.had_port && e.local.is_some() && e.remote.is_some());
        // Unknown socket: no addresses; no remote port: no remote.
        raw.flags &= !flag::SOCK_KNOWN;
        assert_eq!(socket_event(&raw).expect("decodes").local, None);
        let mut raw = sample_event();
        raw.rport = 0;
        assert_eq!(socket_event(&raw).expect("decodes").remote, None);
        raw.op = 0;
        assert_eq!(socket_event(&raw), Err(DecodeError::UnknownOp(0)));
    }

    #[test]
    fn what_newer_kernels_record_per_socket() {
        let mut raw = sample_event();
        let e = socket_event(&raw).expect("decodes");
        assert_eq!(
            (e.opts.connect_bound, e.opts.local_port_range, e.addr),
            (None, None, None)
        );
        raw.flags |= flag::CONNECT_BIND_KNOWN | flag::CONNECT_BOUND | flag::ADDR_STATE;
        raw.local_port_range = 40009 << 16 | 40000;
        raw.addr_fastreuse = 0;
        raw.addr_fastreuseport = -1;
        let e = socket_event(&raw).expect("decodes");
        assert_eq!(e.opts.connect_bound, Some(true));
        assert_eq!(
            e.opts.local_port_range,
            Some(PortRange {
                lo: 40000,
                hi: 40009
            })
        );
        assert_eq!(
            e.addr,
            Some(AddrState {
                fastreuse: Fastreuse(0),
                fastreuseport: Fastreuse(-1)
            })
        );
        raw.flags &= !flag::CONNECT_BOUND;
        assert_eq!(
            socket_event(&raw).expect("decodes").opts.connect_bound,
            Some(false)
        );
        // Nothing is said about a socket that could not be read.
        raw.flags &= !flag::SOCK_KNOWN;
        let e = socket_event(&raw).expect("decodes");
        assert_eq!(
            (e.opts.connect_bound, e.opts.local_port_range),
            (None, None)
        );

        let mut o = rec(rec::OWNER, 60000, 0);
        o.family = 2;
        o.flags = snapflag::CONNECT_BIND_KNOWN;
        o.local_port_range = 50000 << 16;
        let b = rec(rec::BUCKET, 60000, 1);
        let snap = snapshot(&[o, b]);
        let owner = &snap.buckets[0].addresses[0].owners[0];
        assert_eq!(owner.connect_bound, Some(false));
        assert_eq!(owner.local_port_range, Some(PortRange { lo: 0, hi: 50000 }));
        o.flags = snapflag::CONNECT_BOUND;
        let snap = snapshot(&[o, b]);
        assert_eq!(
            snap.buckets[0].addresses[0].owners[0].connect_bound, None,
            "not recorded"
        );
    }

    #[test]
    fn a_lookup_that_gave_up_is_not_an_absent_bucket() {
        let mut raw = sample_event();
        raw.flags = flag::LOOKUP_TRUNCATED | flag::SOCK_KNOWN;
        let e = socket_event(&raw).expect("decodes");
        assert_eq!(e.bucket, None);
        assert!(e.lookup_truncated);
        raw.flags = flag::SOCK_KNOWN;
        assert!(!socket_event(&raw).expect("decodes").lookup_truncated);
        // A bucket that was found is known, whatever else is set.
        raw.flags = flag::LOOKUP_TRUNCATED | flag::BUCKET_PRESENT;
        let e = socket_event(&raw).expect("decodes");
        assert!(e.bucket.is_some() && !e.lookup_truncated);
    }

    fn rec(kind: u8, port: u16, owners: u32) -> SnapRecord {
        SnapRecord {
            kind,
            port,
            owners,
            netns: 7,
            ..Default::default()
        }
    }

    #[test]
    fn snapshot_groups_addresses_and_owners_under_their_bucket() {
        let mut a = rec(rec::ADDR, 60000, 1);
        a.family = 10;
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
        let snap = snapshot(&[a, o, b, b2]);
        assert_eq!(snap.buckets.len(), 2);
        // Sorted by key: 1234 first.
        assert_eq!(snap.buckets[0].key.port, 1234);
        assert!(snap.buckets[0].addresses.is_empty());
        let row = &snap.buckets[1];
        assert_eq!(row.info.fastreuse, Fastreuse(-1));
        assert_eq!(row.info.owners, OwnerCount::exact(1));
        assert_eq!(row.addresses.len(), 1);
        assert_eq!(
            row.addresses[0].address,
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
        );
        assert_eq!(row.addresses[0].fastreuse, Some(Fastreuse(0)));
        assert_eq!(
            row.addresses[0].owners[0].local,
            Some(SocketAddr::from(([127, 0, 0, 1], 60000)))
        );
        assert!(row.addresses[0].owners[0].reuseaddr);
        assert_eq!(row.addresses[0].owners[0].state, TcpState::Established);
    }

    #[test]
    fn snapshot_groups_loose_owners_by_address() {
        let mut o1 = rec(rec::OWNER, 80, 0);
        o1.family = 2;
        o1.laddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        let o2 = o1;
        let mut o3 = o1;
        o3.laddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        let b = rec(rec::BUCKET, 80, 3);
        let snap = snapshot(&[o1, o2, o3, b]);
        let row = &snap.buckets[0];
        assert_eq!(row.addresses.len(), 2);
        assert_eq!(row.addresses[0].owners.len(), 2);
        assert_eq!(row.addresses[0].fastreuse, None);
        assert!(!snap.owners_truncated && snap.complete);
    }

    #[test]
    fn records_of_a_bucket_left_without_its_bucket_record_are_dropped() {
        // The walk emitted an owner of bucket 0x100, then (next run) lost that bucket from
        // its chain and went on with bucket 0x200.
        let mut stale = rec(rec::OWNER, 80, 0);
        stale.addr = 0x100;
        stale.family = 2;
        let mut a = rec(rec::ADDR, 81, 0);
        a.addr = 0x200;
        a.family = 2;
        let mut o = rec(rec::OWNER, 81, 0);
        o.addr = 0x200;
        o.family = 2;
        let mut b = rec(rec::BUCKET, 81, 1);
        b.addr = 0x200;
        let snap = snapshot(&[stale, a, o, b]);
        assert_eq!(snap.buckets.len(), 1);
        let owners: usize = snap.buckets[0]
            .addresses
            .iter()
            .map(|a| a.owners.len())
            .sum();
        assert_eq!((snap.buckets[0].addresses.len(), owners), (1, 1));
    }

    #[test]
    fn snapshot_keeps_what_explain_needs() {
        // NET with reserved ports 60001-60002 and 60130 (two chunks), range 60000-60127.
        let mut net = rec(rec::NET, 60000, 0);
        net.rport = 60127;
        net.state = 2;
        let mut r1 = rec(rec::RESERVED, 59904, 0);
        // Bits for 60001, 60002: offsets 97, 98 from 59904.
        r1.laddr[12] = 0b0000_0110;
        let mut r2 = rec(rec::RESERVED, 60032, 0);
        r2.laddr[12] = 0b0000_0100; // 60130: outside the range
        let mut a = rec(rec::ADDR, 7000, 0);
        a.family = AF_INET6;
        a.detail = snapdetail::TB2_FAMILY;
        let mut o = rec(rec::OWNER, 7000, 0);
        o.family = AF_INET6;
        o.laddr = Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped().octets();
        o.state = 10;
        o.detail = snapdetail::V6ONLY;
        o.uid = 1000;
        o.ino = 4711;
        o.bound_dev = 2;
        o.detail |= snapdetail::TB2_FAMILY;
        o.tb2_family = AF_INET;
        let mut tw = rec(rec::OWNER, 7000, 0);
        tw.family = AF_INET;
        tw.laddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        tw.state = 6;
        tw.uid = 77;
        tw.ino = 88;
        tw.raddr[..4].copy_from_slice(&[127, 0, 0, 2]);
        tw.rport = 5000;
        let mut b = rec(rec::BUCKET, 7000, 2);
        b.fastreuseport = 2;
        b.uid = 1000;
        b.family = AF_INET;
        b.detail = snapdetail::V6ONLY;
        let snap = snapshot(&[net, r1, r2, a, o, tw, b]);
        let n = snap.net.expect("NET record");
        assert_eq!((n.netns, n.range, n.tw_reuse), (7, (60000, 60127), 2));
        assert_eq!(n.reserved, vec![(60001, 60002)]);
        assert!(n.is_reserved(60002) && !n.is_reserved(60003));
        let row = &snap.buckets[0];
        assert_eq!(row.addresses[0].family, Some(Family::Inet6));
        let owner = &row.addresses[0].owners[0];
        assert_eq!(owner.local, Some(SocketAddr::from(([127, 0, 0, 1], 7000))));
        assert_eq!(owner.family, Some(Family::Inet6));
        assert_eq!(
            (owner.uid, owner.inode, owner.v6only, owner.bound_dev),
            (Some(1000), Some(4711), true, 2)
        );
        // A v4-mapped socket on a per-address bucket an IPv4 socket created (6.1 to 6.7).
        assert_eq!(owner.bucket_family, Some(Family::Inet));
        let t = &row.addresses[0].owners[1];
        assert_eq!(
            (t.state, t.uid, t.inode),
            (TcpState::TimeWait, None, None),
            "TIME-WAIT has no uid or inode"
        );
        assert_eq!(
            t.bucket_family, None,
            "no TB2_FAMILY flag: no bucket family"
        );
        assert_eq!(t.remote, Some(SocketAddr::from(([127, 0, 0, 2], 5000))));
        let fast = row.fast.expect("fastreuseport 2 has a fast path");
        assert_eq!(
            (fast.uid, fast.family, fast.ipv6_only),
            (1000, Some(Family::Inet), true)
        );
        // No fast path while fastreuseport is not positive; no family without the flag.
        let mut b0 = rec(rec::BUCKET, 80, 0);
        b0.uid = 5;
        let a0 = rec(rec::ADDR, 80, 0);
        let snap = snapshot(&[a0, b0]);
        assert_eq!(snap.buckets[0].fast, None);
        assert_eq!(snap.buckets[0].addresses[0].family, None);
        assert_eq!(snap.net, None);
    }

    #[test]
    fn failed_calls_report_what_they_asked_for() {
        let mut raw = sample_event();
        raw.op = op::BIND;
        raw.errno = 98;
        raw.flags = flag::SOCK_KNOWN | flag::BIND_ADDR | flag::V6ONLY;
        raw.family = AF_INET6;
        raw.laddr = Ipv6Addr::LOCALHOST.octets();
        raw.port = 7000;
        let e = socket_event(&raw).expect("decodes");
        assert_eq!(e.local, Some("[::1]:7000".parse().unwrap()));
        assert_eq!(
            (e.family, e.v6only, e.uid),
            (Some(Family::Inet6), true, Some(1000))
        );
        assert_eq!(e.net, raw.net);
        // A failed connect: the destination asked for, and its source without a port.
        let mut raw = sample_event();
        raw.errno = 99;
        raw.flags = flag::SOCK_KNOWN | flag::CONNECT_DST;
        let e = socket_event(&raw).expect("decodes");
        assert_eq!(e.remote, Some("127.9.9.9:1234".parse().unwrap()));
        assert_eq!(e.local, Some("127.0.0.1:0".parse().unwrap()));
        raw.laddr = [0; 16];
        assert_eq!(socket_event(&raw).expect("decodes").local, None);
        // Without the flag a failed socket says nothing about its addresses.
        raw.flags = flag::SOCK_KNOWN;
        let e = socket_event(&raw).expect("decodes");
        assert_eq!((e.local, e.remote), (None, None));
    }

    #[test]
    fn snapshot_reports_truncation() {
        let mut b = rec(rec::BUCKET, 80, 4096);
        b.flags = snapflag::OWNERS_TRUNCATED;
        let snap = snapshot(&[b]);
        assert!(snap.owners_truncated);
        assert_eq!(snap.buckets[0].info.owners, OwnerCount::at_least(4096));
    }

    #[test]
    fn snapshot_addr_records_follow_the_kernels_address_field() {
        let mut a = rec(rec::ADDR, 80, 0);
        a.family = 2;
        a.laddr[..4].copy_from_slice(&[10, 1, 2, 3]);
        let b = rec(rec::BUCKET, 80, 0);
        let snap = snapshot(&[a, b]);
        assert_eq!(
            snap.buckets[0].addresses[0].address,
            Some(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)))
        );
        // No owners on this per-address bucket: no per-address state either.
        assert_eq!(snap.buckets[0].addresses[0].fastreuseport, None);
    }

    #[test]
    fn snapshot_keeps_the_net_of_each_namespace() {
        let mut b = rec(rec::BUCKET, 80, 1);
        b.net = 0xffff_8880_0100_0000;
        let mut c = rec(rec::BUCKET, 81, 1);
        c.netns = 8;
        c.net = 0xffff_8880_0200_0000;
        let snap = snapshot(&[b, c, rec(rec::BUCKET, 82, 1)]);
        assert_eq!(snap.nets.get(&7), Some(&0xffff_8880_0100_0000));
        assert_eq!(snap.nets.get(&8), Some(&0xffff_8880_0200_0000));
        assert_eq!(snap.nets.len(), 2);
    }

    #[test]
    fn walk_rows_sort_by_key_rotated_or_not() {
        use crate::render::table::tests::bucket;
        let keys = |rows: &[BucketRow]| -> Vec<(u32, u16, u32)> {
            rows.iter()
                .map(|b| (b.key.netns, b.key.port, b.info.owners.n))
                .collect()
        };
        let sorted = |mut rows: Vec<BucketRow>| {
            let mut want = rows.clone();
            want.sort_by_key(|b| b.key);
            sort_by_key(&mut rows);
            assert_eq!(keys(&rows), keys(&want));
            rows
        };
        // One namespace in slot order: ports 40000.. then, past the wrap, 10000...
        let walk: Vec<BucketRow> = (40000..40100)
            .chain(10000..10050)
            .map(|p| bucket(7, p, 0, 0, 1))
            .collect();
        let rows = sorted(walk.clone());
        assert_eq!(rows[0].key.port, 10000);
        sorted(walk.iter().rev().cloned().collect());
        // Two namespaces interleaved, equal keys (kept in walk order), nothing, one row.
        sorted(vec![
            bucket(2, 80, 0, 0, 1),
            bucket(1, 90, 0, 0, 1),
            bucket(2, 81, 0, 0, 1),
            bucket(1, 80, 0, 0, 1),
        ]);
        sorted(vec![
            bucket(1, 80, 0, 0, 1),
            bucket(1, 90, 0, 0, 2),
            bucket(1, 80, 0, 0, 3),
        ]);
        sorted(vec![
            bucket(1, 90, 0, 0, 1),
            bucket(1, 80, 0, 0, 2),
            bucket(1, 90, 0, 0, 3),
        ]);
        sorted(vec![]);
        sorted(vec![bucket(1, 80, 0, 0, 1)]);
    }

    #[test]
    fn reserved_ranges_cover_the_edges_of_the_port_space_and_of_chunks() {
        let mut low = [0u8; 16];
        low[0] = 1; // port 0
        low[7] = 0x80; // port 63
        low[8] = 1; // port 64
        let mut high = [0u8; 16];
        high[15] = 0x80; // port 65535 (chunk 511, bit 127)
        let chunks = [(0u16, low), (65408u16, high)];
        assert_eq!(
            reserved_ranges(&chunks, (0, 65535)),
            [(0, 0), (63, 64), (65535, 65535)]
        );
        // Only those inside the range count.
        assert_eq!(reserved_ranges(&chunks, (1, 65534)), [(63, 64)]);
    }

    #[test]
    fn failure_counts_sorted_with_the_unslotted_apart() {
        let key = |netns, errno, op| ErrorKey {
            netns,
            errno,
            op,
            _pad: 0,
        };
        let counts = failure_counts([
            (key(9, 99, op::CONNECT), 4),
            (key(9, 98, op::BIND), 1),
            (key(7, 111, op::CONNECT), 2),
            (ErrorKey::MAP_FULL, 5),
            (key(7, 98, op::LISTEN), 3),
            (key(7, 0, op::BIND), 3),
        ]);
        let got: Vec<(u32, Op, String, u64)> = counts
            .counts
            .iter()
            .map(|c| (c.netns, c.op, c.errno.to_string(), c.count))
            .collect();
        assert_eq!(
            got,
            [
                (7, Op::Connect, "ECONNREFUSED".to_string(), 2),
                (9, Op::Bind, "EADDRINUSE".to_string(), 1),
                (9, Op::Connect, "EADDRNOTAVAIL".to_string(), 4),
            ]
        );
        assert_eq!(counts.unslotted, 5);
        assert_eq!(counts.namespaces().collect::<Vec<_>>(), [7, 9]);
        assert_eq!(counts.of(9, Op::Connect).count(), 1);
    }
}
