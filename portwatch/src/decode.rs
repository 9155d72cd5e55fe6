//! Decoding of the raw records the eBPF programs write into ring buffers, and small
//! helpers that turn kernel values into text (addresses, errno names, TCP states).
//!
//! Everything here is pure: no syscalls, no root, unit-tested.

use std::net::{Ipv4Addr, Ipv6Addr};

use portwatch_common::{op, rec, Event, SnapRecord};

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
        rec::BUCKET | rec::ADDR | rec::OWNER | rec::END => Ok(r),
        k => Err(DecodeError::UnknownKind(k)),
    }
}

/// Maps a kernel-boundary `op::*` value to the model's [`crate::model::Op`].
pub fn op_of(v: u8) -> Result<crate::model::Op, DecodeError> {
    use crate::model::Op;
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

/// The task name up to its first NUL, invalid UTF-8 replaced.
pub fn comm_str(comm: &[u8; 16]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

/// The address alone (no port): `127.0.0.1`, `::1`; v4-mapped v6 printed as v4.
/// Unknown families print as `?`.
pub fn fmt_ip(family: u16, addr: &[u8; 16]) -> String {
    match family {
        AF_INET => Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]).to_string(),
        AF_INET6 => {
            let a6 = Ipv6Addr::from(*addr);
            match a6.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => a6.to_string(),
            }
        }
        _ => "?".to_string(),
    }
}

/// `127.0.0.1:60000`, `[::1]:60000`; v4-mapped v6 printed as v4; unknown family `?:port`.
pub fn fmt_addr(family: u16, addr: &[u8; 16], port: u16) -> String {
    match family {
        AF_INET6 => {
            let a6 = Ipv6Addr::from(*addr);
            match a6.to_ipv4_mapped() {
                Some(v4) => format!("{v4}:{port}"),
                None => format!("[{a6}]:{port}"),
            }
        }
        _ => format!("{}:{port}", fmt_ip(family, addr)),
    }
}

/// `errno_name`, or `errno N` when the number has no name here.
pub fn errno_label(errno: i32) -> String {
    match errno_name(errno) {
        "E?" => format!("errno {errno}"),
        name => name.to_string(),
    }
}

/// Symbolic name of a (positive) errno value as Linux numbers it, "E?" when unknown.
pub fn errno_name(errno: i32) -> &'static str {
    match errno.unsigned_abs() as i32 {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EINVAL => "EINVAL",
        libc::EMFILE => "EMFILE",
        libc::ENFILE => "ENFILE",
        libc::ENOBUFS => "ENOBUFS",
        libc::ENOTSOCK => "ENOTSOCK",
        libc::EDESTADDRREQ => "EDESTADDRREQ",
        libc::EPROTOTYPE => "EPROTOTYPE",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETDOWN => "ENETDOWN",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::ECONNRESET => "ECONNRESET",
        libc::EISCONN => "EISCONN",
        libc::ENOTCONN => "ENOTCONN",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::EALREADY => "EALREADY",
        libc::EINPROGRESS => "EINPROGRESS",
        _ => "E?",
    }
}

/// Name of a TCP state in kernel numbering (`TCP_ESTABLISHED` = 1), "?" when unknown.
pub fn tcp_state_name(state: u8) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        13 => "BOUND_INACTIVE",
        _ => "?",
    }
}

#[cfg(test)]
mod tests {
    use portwatch_common::{flag, BucketState};

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
        }
    }

    #[test]
    fn event_round_trips() {
        let ev = sample_event();
        let b = bytes_of(&ev);
        assert_eq!(b.len(), 128);
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
            decode_event(&b[..127]),
            Err(DecodeError::TooShort {
                what: "event",
                got: 127,
                want: 128
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
        };
        let b = bytes_of(&r);
        assert_eq!(b.len(), 48);
        assert_eq!(decode_snap_record(&b), Ok(r));
        assert_eq!(
            decode_snap_record(&b[..47]),
            Err(DecodeError::TooShort {
                what: "snapshot",
                got: 47,
                want: 48
            })
        );
        for k in [rec::ADDR, rec::OWNER, rec::END] {
            let mut r2 = r;
            r2.kind = k;
            assert_eq!(decode_snap_record(&bytes_of(&r2)), Ok(r2));
        }
        for k in [0u8, 5, 200] {
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
        assert_eq!(comm_str(&c), "curl");
        assert_eq!(comm_str(&[b'a'; 16]), "a".repeat(16));
        assert_eq!(comm_str(&[0; 16]), "");
        let mut bad = [0u8; 16];
        bad[0] = 0xff;
        bad[1] = b'z';
        assert_eq!(comm_str(&bad), "\u{fffd}z");
    }

    #[test]
    fn addresses() {
        let mut v4 = [0u8; 16];
        v4[..4].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(fmt_addr(AF_INET, &v4, 60000), "127.0.0.1:60000");
        let lo6 = Ipv6Addr::LOCALHOST.octets();
        assert_eq!(fmt_addr(AF_INET6, &lo6, 60000), "[::1]:60000");
        let mapped = Ipv4Addr::new(127, 2, 2, 2).to_ipv6_mapped().octets();
        assert_eq!(fmt_addr(AF_INET6, &mapped, 80), "127.2.2.2:80");
        assert_eq!(fmt_addr(AF_INET6, &[0; 16], 1234), "[::]:1234");
        assert_eq!(fmt_addr(AF_INET, &[0; 16], 1234), "0.0.0.0:1234");
        assert_eq!(fmt_addr(0, &v4, 1), "?:1");
        assert_eq!(fmt_ip(AF_INET, &v4), "127.0.0.1");
        assert_eq!(fmt_ip(AF_INET6, &lo6), "::1");
    }

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(98), "EADDRINUSE");
        assert_eq!(errno_name(99), "EADDRNOTAVAIL");
        assert_eq!(errno_name(111), "ECONNREFUSED");
        assert_eq!(errno_name(22), "EINVAL");
        assert_eq!(errno_name(13), "EACCES");
        assert_eq!(errno_name(1), "EPERM");
        assert_eq!(errno_name(110), "ETIMEDOUT");
        assert_eq!(errno_name(106), "EISCONN");
        assert_eq!(errno_name(114), "EALREADY");
        assert_eq!(errno_name(9), "EBADF");
        assert_eq!(errno_name(88), "ENOTSOCK");
        assert_eq!(errno_name(97), "EAFNOSUPPORT");
        assert_eq!(errno_name(115), "EINPROGRESS");
        assert_eq!(errno_name(-98), "EADDRINUSE");
        assert_eq!(errno_name(0), "E?");
        assert_eq!(errno_name(4095), "E?");
        assert_eq!(errno_name(i32::MIN), "E?");
    }

    #[test]
    fn tcp_states() {
        let want = [
            "?",
            "ESTABLISHED",
            "SYN_SENT",
            "SYN_RECV",
            "FIN_WAIT1",
            "FIN_WAIT2",
            "TIME_WAIT",
            "CLOSE",
            "CLOSE_WAIT",
            "LAST_ACK",
            "LISTEN",
            "CLOSING",
            "NEW_SYN_RECV",
            "BOUND_INACTIVE",
            "?",
        ];
        for (i, w) in want.iter().enumerate() {
            assert_eq!(tcp_state_name(i as u8), *w, "state {i}");
        }
        assert_eq!(tcp_state_name(255), "?");
    }
}
