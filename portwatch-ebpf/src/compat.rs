//! One helper per kernel change the programs must handle, each naming the commit that
//! made it necessary (as libbpf-tools' `core_fixes.bpf.h` does). User space recognises
//! each change in the running kernel's BTF (one row each in the compatibility table of
//! `portwatch/src/kernel/compat.rs`) and passes the outcome in `LAYOUT`; these helpers
//! are the only code here that branches on it.
//!
//! Changes with no helper: the `inet_flags` move (ca571e2eb7eb, 6.6) is folded by user
//! space into the one `BitField` `inet_bind_address_no_port`; `inet_twsk_hashdance`
//! becoming `inet_twsk_hashdance_schedule` (b334b924c9b7, 6.11) only decides which
//! fentry program attaches; moved members (such as `ns_common.inum`) are offsets.
use aya_ebpf::helpers::generated::{bpf_get_current_task_btf, bpf_task_pt_regs};
use portwatch_common::{NO_FIELD, OWNERS_ON_TB2};

use crate::read::{field, layout, zbits, zfield, Window};

const AF_INET6: u16 = 10;
const TCP_TIME_WAIT: u8 = 6;

/// `sk_protocol`, from a copy of the socket that holds it when it does (`w`). A `u16`
/// since "sock: Make sk_protocol a 16-bit value" (bf9765145b85, 5.6); user space refuses
/// the older bit field, so only the width varies here.
#[inline(always)]
pub fn sk_protocol<const N: usize>(w: &Window<N>) -> u16 {
    if layout!(sk_protocol_size) == 1 {
        u16::from(w.get::<u8>(layout!(sk_protocol)))
    } else {
        w.get::<u16>(layout!(sk_protocol))
    }
}

/// Whether [`syscall_args`] can read a syscall's arguments at its exit.
#[inline(always)]
pub fn syscall_args_at_exit() -> bool {
    layout!(regs_arg0) != NO_FIELD && layout!(regs_arg1) != NO_FIELD
}

/// The current syscall's first two arguments, read from the task's saved user
/// registers at the syscall's exit tracepoint, whose record holds only the return value.
/// "bpf: Add bpf_task_pt_regs() helper" (dd6e10fbd9fb, 5.15); before it the enter
/// tracepoint keeps them (user space leaves `regs_arg0` unset and attaches it).
#[inline(always)]
pub fn syscall_args() -> Option<(u64, u64)> {
    if !syscall_args_at_exit() {
        return None;
    }
    // SAFETY: both helpers only return pointers to the current task and its registers;
    // the registers are then read with fault-tolerant probe reads.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as u64;
    let arg0: u64 = field(regs, layout!(regs_arg0))?;
    let arg1: u64 = field(regs, layout!(regs_arg1))?;
    Some((arg0, arg1))
}

/// The netns's ephemeral port range `(lo, hi)`. "Use READ/WRITE_ONCE() for IP
/// local_port_range" (d9f28735af87, 6.8) packed `int range[2]` into one `u32`
/// (`hi << 16 | lo`).
#[inline(always)]
pub fn port_range(net: u64) -> (u16, u16) {
    if layout!(port_range_packed) == 1 {
        let r: u32 = zfield(net, layout!(net_port_range));
        ((r & 0xffff) as u16, (r >> 16) as u16)
    } else {
        let r: [i32; 2] = zfield(net, layout!(net_port_range));
        (r[0] as u16, r[1] as u16)
    }
}

/// Where the owner walk of bucket `tb` starts: `(first tb2 node, first owner node)`,
/// one of them 0. "tcp: Link bhash2 to bhash." (822fb91fc724) and "tcp: Unlink sk from
/// bhash." (b2cb9f9ef240), 6.8: owners left `tb->owners` for the `owners` list of each
/// per-address bucket on `tb->bhash2`.
/// `field` reads the bucket's pointer at an offset (0 when absent or unreadable).
#[inline(always)]
pub fn owner_lists(field: impl Fn(u32) -> u64) -> (u64, u64) {
    if layout!(owners_mode) == OWNERS_ON_TB2 {
        (field(layout!(tb_bhash2)), 0)
    } else {
        (0, field(layout!(tb_owners)))
    }
}

/// The address of per-address bucket `tb2` as `(family, address)`, IPv4 in the first
/// four bytes or v4-mapped (user space prints v4-mapped addresses as IPv4).
/// "tcp: Save address type in inet_bind2_bucket." (5a22bba13d01) and "tcp: Save v4
/// address as v4-mapped-v6 in inet_bind2_bucket.v6_rcv_saddr." (06a8c04f8994), 6.8:
/// every address is an IPv6 one; before, `family` (AF_*) chose between the members of
/// a union (28044fc1d495, 6.1).
#[inline(always)]
pub fn tb2_address(tb2: u64) -> (u16, [u8; 16]) {
    if layout!(tb2_addr_mapped) == 1 {
        return (AF_INET6, zfield(tb2, layout!(tb2_v6_rcv_saddr)));
    }
    let family: u16 = zfield(tb2, layout!(tb2_family));
    let addr = if family == AF_INET6 {
        zfield(tb2, layout!(tb2_v6_rcv_saddr))
    } else {
        let a: [u8; 4] = zfield(tb2, layout!(tb2_rcv_saddr));
        [a[0], a[1], a[2], a[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    };
    (family, addr)
}

/// The family of the per-address bucket owner `sk` hangs on (`full`: a full socket, else
/// a TIME-WAIT one), 0 where buckets keep none. From "net: Add a bhash2 table hashed by
/// port and address" (28044fc1d495, 6.1) to "tcp: Save address type in
/// inet_bind2_bucket." (5a22bba13d01, 6.8) a bucket keeps the family of the socket that
/// created it, and an IPv4 socket and a v4-mapped IPv6 one of an address share it.
#[inline(always)]
pub fn tb2_family_of(sk: u64, full: bool) -> u16 {
    let has = layout!(tb2_addr_mapped) != 1 && layout!(tb2_family) != NO_FIELD;
    let link = if full {
        layout!(icsk_bind2_hash)
    } else {
        layout!(tw_tb2)
    };
    let tb2: u64 = zfield(sk, link);
    // Branch-free (see `sk_addr_fastreuse`): a zero bucket reads as family 0.
    let family: u16 = zfield(tb2, layout!(tb2_family));
    family * ((has && tb2 != 0) as u16)
}

/// `(known, fastreuse, fastreuseport)` of per-address bucket `tb2`, known on kernels
/// where it has its own pair: "tcp: Update bind bucket state on port release"
/// (d57f4b874946, 6.18) gave each `inet_bind2_bucket` one. Branch-free (see
/// `sk_addr_fastreuse`).
#[inline(always)]
pub fn tb2_fastreuse(tb2: u64) -> (bool, i8, i8) {
    (
        layout!(tb2_fastreuse) != NO_FIELD,
        zfield(tb2, layout!(tb2_fastreuse)),
        zfield(tb2, layout!(tb2_fastreuseport)),
    )
}

/// Whether the kernel marks sockets whose port connect() chose. "tcp: Update bind bucket
/// state on port release" (d57f4b874946, 6.18) added `SOCK_CONNECT_BIND` to
/// `sk_userlocks` and `tw_connect_bind` to TIME-WAIT sockets; user space passes the bit
/// (0 on kernels without it).
#[inline(always)]
pub fn connect_bind_known() -> bool {
    let m = layout!(connect_bind_mask);
    m != 0 && m != NO_FIELD
}

/// Whether socket `sk` (in TCP state `state`) got its port from connect(): the mark of
/// d57f4b874946 (see `connect_bind_known`), on a full socket or a TIME-WAIT one.
#[inline(always)]
pub fn connect_bound(sk: u64, state: u8) -> bool {
    if state == TCP_TIME_WAIT {
        zbits(sk, layout!(tw_connect_bind)) != 0
    } else {
        zbits(sk, layout!(sk_userlocks)) & u64::from(layout!(connect_bind_mask)) != 0
    }
}

/// The socket's own ephemeral port range, IP_LOCAL_PORT_RANGE (lo | hi << 16; 0 when it
/// set none or the kernel has none). "inet: Add IP_LOCAL_PORT_RANGE socket option"
/// (91d0b78c5177, 6.3, backported to 6.1.31) added `inet_sock.local_port_range` as a
/// `{ u16 lo, hi }` pair; 6.8 made it one u32 of the same bytes. A TIME-WAIT socket has
/// no `inet_sock` part: 0.
#[inline(always)]
pub fn socket_port_range(sk: u64, state: u8) -> u32 {
    if state == TCP_TIME_WAIT {
        return 0;
    }
    zfield(sk, layout!(inet_local_port_range))
}

/// `(known, fastreuse, fastreuseport)` of the per-address bucket socket `sk` is on
/// (`icsk_bind2_hash`), known on kernels where it has its own pair (d57f4b874946, 6.18;
/// see `tb2_fastreuse`). Read without branching on the outcome (see `read::zfield`):
/// values kept on one path only would be stack slots some paths never wrote, which the
/// verifier of older kernels refuses to read back.
#[inline(always)]
pub fn sk_addr_fastreuse(sk: u64) -> (bool, i8, i8) {
    let has = layout!(tb2_fastreuse) != NO_FIELD && layout!(icsk_bind2_hash) != NO_FIELD;
    let tb2: u64 = zfield(sk, layout!(icsk_bind2_hash));
    (
        has && tb2 != 0,
        zfield(tb2, layout!(tb2_fastreuse)),
        zfield(tb2, layout!(tb2_fastreuseport)),
    )
}

/// `net.ipv4.tcp_tw_reuse` of a namespace. "tcp: convert elligible sysctls to u8"
/// (4ecc1baf362c, 5.13, in 5.10.178) narrowed it from an `int` to a `u8`.
#[inline(always)]
pub fn tcp_tw_reuse(net: u64) -> u8 {
    if layout!(net_tw_reuse_size) == 1 {
        zfield::<u8>(net, layout!(net_tw_reuse))
    } else {
        zfield::<i32>(net, layout!(net_tw_reuse)) as u8
    }
}
