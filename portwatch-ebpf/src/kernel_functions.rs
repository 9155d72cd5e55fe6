//! Hooks on kernel functions, shared by the kprobe and fentry backends: what to remember
//! when a hooked function is entered and what to report when it returns. The backends
//! differ only in how they read arguments and return values (`kprobe.rs`, `fentry.rs`).
//!
//! Hooked functions (every place an owner joins or leaves a bucket):
//! - `inet_csk_get_port(sk, snum)`: bind() and listen() autobind; fails with non-zero.
//! - `__inet_hash_connect(.., sk, ..)`: connect()'s port choice; writes -1/-1 itself.
//! - `__inet_inherit_port(sk, child)`: an accepted child joins the listener's bucket.
//! - `inet_put_port(sk)`: an owner leaves (close, RST, destroy).
//! - `inet_twsk_hashdance[_schedule](tw, sk, ..)`: a TIME-WAIT socket joins the bucket.
//! - `inet_twsk_bind_unhash(tw, ..)`: a TIME-WAIT socket leaves (expiry, netns exit).
use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use portwatch_common::{flag, op};

use crate::{
    compat::port_range,
    emit::{config, count_lost, netns_wanted, port_wanted, remember, send, send_known, Subject},
    errors::count_failure,
    kernel::{is_tcp, net_inum, sk_family, sk_net, sk_num, SockHead},
    maps::{Pending, PENDING, SOCKS},
    read::{field, layout, layout_ready},
};

/// Hook ids, in the top bits of the PENDING key.
pub const H_GET_PORT: u64 = 1;
pub const H_HASH_CONNECT: u64 = 2;
pub const H_INHERIT: u64 = 3;
pub const H_PUT_PORT: u64 = 4;
pub const H_HASHDANCE: u64 = 5;
pub const H_TW_UNHASH: u64 = 6;

const TCP_LISTEN: u8 = 10;
const EADDRINUSE: i32 = 98;

#[inline(always)]
fn key(hook_id: u64) -> u64 {
    bpf_get_current_pid_tgid() ^ (hook_id << 58)
}

#[inline(always)]
fn take(hook_id: u64) -> Option<Pending> {
    let k = key(hook_id);
    // SAFETY: copy the value out; the entry is removed right after.
    let p = unsafe { *PENDING.get(k)? };
    let _ = PENDING.remove(k);
    Some(p)
}

/// Remembers `sk` (a TCP socket of a wanted netns) for the return side.
#[inline(always)]
fn stash(hook_id: u64, sk: u64, aux: u64, which: u8, port: u16) -> Option<()> {
    if !layout_ready() || sk == 0 {
        return None;
    }
    let head = SockHead::read(sk);
    if !is_tcp(sk, &head) {
        return None;
    }
    let net = head.net();
    let netns = net_inum(net);
    if !netns_wanted(&config(), netns) {
        return None;
    }
    let cur = head.num();
    let p = Pending {
        sk,
        net,
        aux,
        netns,
        port,
        op: which,
        had_port: (cur != 0) as u8,
        asked: [0; 16],
        asked_family: 0,
        asked_port: 0,
        _pad: [0; 4],
    };
    if PENDING.insert(key(hook_id), p, 0).is_err() {
        // The return hook will find nothing: this operation's event is lost.
        count_lost(net, netns, if port != 0 { port } else { cur });
        return None;
    }
    Some(())
}

/// The port a failed ephemeral search was about: the range's only port, if so.
#[inline(always)]
fn failed_port(p: &Pending, flags: &mut u16) -> u16 {
    if p.port != 0 {
        return p.port;
    }
    let now = sk_num(p.sk);
    if now != 0 {
        return now;
    }
    let (lo, hi) = port_range(p.net);
    if lo != 0 && lo == hi {
        *flags |= flag::PORT_FROM_RANGE;
        lo
    } else {
        0
    }
}

#[inline(always)]
fn report(hook: u8, p: &Pending, which: u8, port: u16, errno: i32, flags: u16, anon: bool) {
    let cfg = config();
    if port != 0 && !port_wanted(&cfg, port) {
        return;
    }
    let s = Subject {
        op: which,
        hook,
        sk: p.sk,
        head: None,
        net: p.net,
        netns: p.netns,
        port,
        errno,
        flags,
        anon,
    };
    send(&cfg, &s);
}

// inet_csk_get_port: bind() (or listen()'s autobind / re-check when state is LISTEN).
#[inline(always)]
pub fn get_port_entry(sk: u64, snum: u16) {
    let state: u8 = field(sk, layout!(sk_state)).unwrap_or(0);
    let which = if state == TCP_LISTEN {
        op::LISTEN
    } else {
        op::BIND
    };
    let _ = stash(H_GET_PORT, sk, 0, which, snum);
}

#[inline(always)]
pub fn get_port_return(hook: u8, ret: i64) {
    let Some(p) = take(H_GET_PORT) else { return };
    let mut flags = if p.had_port != 0 { flag::HAD_PORT } else { 0 };
    if ret == 0 {
        let port = sk_num(p.sk);
        if port == 0 {
            return;
        }
        remember(p.sk, p.net, port, sk_family(p.sk));
        report(hook, &p, p.op, port, 0, flags, false);
    } else {
        let port = failed_port(&p, &mut flags);
        // bind() has not reset the socket's address yet: it is the one asked for.
        if p.op == op::BIND && p.had_port == 0 {
            flags |= flag::BIND_ADDR;
        }
        report(hook, &p, p.op, port, EADDRINUSE, flags, false);
        // bind() returns EADDRINUSE for any failure of inet_csk_get_port(). Counted after
        // the report, so the verifier explores the report once, not once per path here.
        count_failure(p.netns, p.op, EADDRINUSE);
    }
}

// __inet_hash_connect: connect()'s port choice.
#[inline(always)]
pub fn hash_connect_entry(sk: u64) {
    let _ = stash(H_HASH_CONNECT, sk, 0, op::CONNECT, 0);
}

#[inline(always)]
pub fn hash_connect_return(hook: u8, ret: i64) {
    let Some(p) = take(H_HASH_CONNECT) else {
        return;
    };
    let mut flags = if p.had_port != 0 { flag::HAD_PORT } else { 0 };
    if ret == 0 {
        let port = sk_num(p.sk);
        if port == 0 {
            return;
        }
        remember(p.sk, p.net, port, sk_family(p.sk));
        report(hook, &p, op::CONNECT, port, 0, flags, false);
    } else {
        let port = failed_port(&p, &mut flags);
        // The socket still has its destination and source: tcp_v4/v6_connect() resets
        // them only after this returns.
        flags |= flag::CONNECT_DST;
        report(hook, &p, op::CONNECT, port, (-ret) as i32, flags, false);
        count_failure(p.netns, op::CONNECT, (-ret) as i32);
    }
}

// __inet_inherit_port: the child of a listener gets the listener's port (at handshake
// completion, in softirq: the listener's owner is the task to blame).
#[inline(always)]
pub fn inherit_entry(listener: u64, child: u64) {
    let _ = stash(H_INHERIT, child, listener, op::ACCEPT, 0);
}

#[inline(always)]
pub fn inherit_return(hook: u8, ret: i64) {
    let Some(p) = take(H_INHERIT) else { return };
    if ret != 0 {
        return;
    }
    let port = sk_num(p.sk);
    if port == 0 {
        return;
    }
    let cfg = config();
    if !port_wanted(&cfg, port) {
        return;
    }
    // SAFETY: copy of a plain value.
    if let Some(k) = unsafe { SOCKS.get(p.aux) } {
        let mut kk = *k;
        kk.port = port;
        // Attribute to the listener's owner; the child is remembered under its own
        // address for its later release.
        let _ = SOCKS.insert(p.sk, kk, 0);
        send_known(&cfg, op::ACCEPT, hook, p.sk, &kk, 0);
    } else {
        remember(p.sk, p.net, port, sk_family(p.sk));
        let s = Subject {
            op: op::ACCEPT,
            hook,
            sk: p.sk,
            head: None,
            net: p.net,
            netns: p.netns,
            port,
            errno: 0,
            flags: 0,
            anon: true,
        };
        send(&cfg, &s);
    }
}

// inet_put_port: an owner leaves. The port is read before the kernel clears it.
#[inline(always)]
pub fn put_port_entry(sk: u64) {
    let port = sk_num(sk);
    if port != 0 {
        let _ = stash(H_PUT_PORT, sk, 0, op::RELEASE, port);
    }
}

#[inline(always)]
pub fn put_port_return(hook: u8) {
    let Some(p) = take(H_PUT_PORT) else { return };
    let cfg = config();
    if !port_wanted(&cfg, p.port) {
        return;
    }
    // SAFETY: copy of a plain value.
    let known = unsafe { SOCKS.get(p.sk).copied() };
    let _ = SOCKS.remove(p.sk);
    match known {
        Some(k) => send_known(&cfg, op::RELEASE, hook, p.sk, &k, 0),
        None => release_anon(&cfg, hook, &p),
    }
}

/// An owner left, with no task to blame and the socket not to be read any more.
#[inline(always)]
fn release_anon(cfg: &portwatch_common::Config, hook: u8, p: &Pending) {
    send(cfg, &Subject::released(op::RELEASE, hook, p, true));
}

// inet_twsk_hashdance[_schedule]: the TIME-WAIT socket joins the closing socket's bucket.
#[inline(always)]
pub fn hashdance_entry(sk: u64) {
    let port = sk_num(sk);
    if port != 0 {
        let _ = stash(H_HASHDANCE, sk, 0, op::TIMEWAIT, port);
    }
}

#[inline(always)]
pub fn hashdance_return(hook: u8) {
    let Some(p) = take(H_HASHDANCE) else { return };
    report(hook, &p, op::TIMEWAIT, p.port, 0, flag::HAD_PORT, true);
}

// inet_twsk_bind_unhash: a TIME-WAIT socket leaves its bucket (timer, RST, netns exit).
// A TIME-WAIT socket starts with `struct sock_common`, so the sock offsets apply.
#[inline(always)]
pub fn tw_unhash_entry(tw: u64) {
    if !layout_ready() || tw == 0 {
        return;
    }
    let port = sk_num(tw);
    let Some(net) = sk_net(tw) else { return };
    let netns = net_inum(net);
    if port == 0 || !netns_wanted(&config(), netns) {
        return;
    }
    let p = Pending {
        sk: tw,
        net,
        aux: 0,
        netns,
        port,
        op: op::RELEASE,
        had_port: 1,
        asked: [0; 16],
        asked_family: 0,
        asked_port: 0,
        _pad: [0; 4],
    };
    if PENDING.insert(key(H_TW_UNHASH), p, 0).is_err() {
        count_lost(net, netns, port);
    }
}

#[inline(always)]
pub fn tw_unhash_return(hook: u8) {
    let Some(p) = take(H_TW_UNHASH) else { return };
    let cfg = config();
    if port_wanted(&cfg, p.port) {
        release_anon(&cfg, hook, &p);
    }
}
