//! The tracepoint backend: syscall enter/exit of bind, listen, connect, accept and
//! accept4, `sock:inet_sock_set_state` for releases when a connection closes, and
//! `tcp:tcp_destroy_sock` with close()'s enter/exit for the release of a socket's port
//! when the socket is freed.
//!
//! bind/connect/listen: the enter hook resolves the fd to its socket and remembers what
//! it saw; the exit hook counts a failed bind()/connect() (`errors.rs`) and reports the
//! bucket of the port involved, looked up in the bind hash table.
//!
//! close: `tcp_destroy_sock` fires only for TCP sockets, before `inet_put_port()`, with
//! the socket and its port in the record, so the port filter applies before anything is
//! read. Inside close() (marked per CPU by `sys_enter_close`, which reads nothing) it
//! leaves the socket for `sys_exit_close`, which reads the bucket after the release.
//! Elsewhere (process exit, a socket freed from softirq or after the syscall returned,
//! dup2()) no hook of this backend runs after the release: the event is sent at once
//! with `OBSERVE_LATER` and user space reads the bucket.
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};
use portwatch_common::{flag, hook, op, Config, NO_FIELD};

use crate::{
    compat::port_range,
    emit::{
        config, count_lost, netns_wanted, port_wanted, remember, send, send_asked, send_known,
        Asked, Subject,
    },
    errors::count_failure,
    kernel::{is_tcp, net_inum, sk_net, sk_num, sock_from_fd, SockHead, AF_INET, AF_INET6},
    maps::{Pending, CLOSING, PENDING, SOCKS, TP},
    read::layout_ready,
};

/// Tag of a destroyed socket's entry in `PENDING` (key `pid_tgid ^ CLOSE_TAG`), apart
/// from the bind/connect/listen entries of the same thread.
const CLOSE_TAG: u64 = 1 << 63;

const EINPROGRESS: i64 = 115;
const TCP_CLOSE: i32 = 7;
const IPPROTO_TCP: u16 = 6;

/// Reads one field of the global `TP` (see `layout!`).
macro_rules! tp_off {
    ($f:ident) => {
        // SAFETY: TP is a plain static in .rodata; reading it is always valid.
        unsafe { core::ptr::read_volatile(&TP.$f) }
    };
}

#[inline(always)]
fn arg(ctx: &TracePointContext, n: u32) -> Option<u64> {
    let base = tp_off!(sys_enter_args);
    if base == NO_FIELD {
        return None;
    }
    // SAFETY: reads 8 bytes of the tracepoint record at an offset taken from its format.
    unsafe { ctx.read_at::<u64>((base + n * 8) as usize).ok() }
}

#[inline(always)]
fn ret(ctx: &TracePointContext) -> Option<i64> {
    let off = tp_off!(sys_exit_ret);
    if off == NO_FIELD {
        return None;
    }
    // SAFETY: as above.
    unsafe { ctx.read_at::<i64>(off as usize).ok() }
}

/// Enter side shared by bind/connect/listen: remember the socket of `fd`.
#[inline(always)]
fn enter(ctx: &TracePointContext, which: u8) -> Option<()> {
    if !layout_ready() {
        return None;
    }
    let cfg = config();
    let mut port = 0u16;
    let mut asked = [0u8; 16];
    let mut asked_family = 0u16;
    let mut asked_port = 0u16;
    if which == op::BIND || which == op::CONNECT {
        // struct sockaddr_in / sockaddr_in6: family (u16) then port (be16) for both.
        // Read first: an explicit bind() port the filter rejects ends here, before the
        // walk from the fd to the socket (the costly part for the busy, unwanted case).
        let uaddr = arg(ctx, 1)?;
        // SAFETY: a fault-tolerant read of user memory passed to the syscall.
        let hdr: [u8; 4] = unsafe { bpf_probe_read_user(uaddr as *const [u8; 4]).ok()? };
        let family = u16::from_ne_bytes([hdr[0], hdr[1]]);
        if family == AF_INET || family == AF_INET6 {
            asked_port = u16::from_be_bytes([hdr[2], hdr[3]]);
        }
        if which == op::BIND {
            port = asked_port;
            if port != 0 && !port_wanted(&cfg, port) {
                // No event wanted, but a failure is still counted: keep only the fd,
                // whose socket the exit resolves if the call failed.
                let p = Pending {
                    sk: 0,
                    net: 0,
                    aux: arg(ctx, 0)?,
                    netns: 0,
                    port,
                    op: which,
                    had_port: 0,
                    asked: [0; 16],
                    asked_family: 0,
                    asked_port: 0,
                    _pad: [0; 4],
                };
                return PENDING.insert(bpf_get_current_pid_tgid(), p, 0).ok();
            }
        }
        // The address (sin_addr at 4, sin6_addr at 8), reported if the call fails.
        if family == AF_INET {
            // SAFETY: as above.
            if let Ok(a) = unsafe { bpf_probe_read_user((uaddr + 4) as *const [u8; 4]) } {
                asked[..4].copy_from_slice(&a);
                asked_family = family;
            }
        } else if family == AF_INET6 {
            // SAFETY: as above.
            if let Ok(a) = unsafe { bpf_probe_read_user((uaddr + 8) as *const [u8; 16]) } {
                asked = a;
                asked_family = family;
            }
        }
    }
    let fd = arg(ctx, 0)? as i64;
    let sk = sock_from_fd(fd)?;
    let head = SockHead::read(sk);
    if !is_tcp(sk, &head) {
        return None;
    }
    let net = head.net();
    let netns = net_inum(net);
    if !netns_wanted(&cfg, netns) {
        return None;
    }
    let cur = head.num();
    let p = Pending {
        sk,
        net,
        aux: 0,
        netns,
        port,
        op: which,
        had_port: (cur != 0) as u8,
        asked,
        asked_family,
        asked_port,
        _pad: [0; 4],
    };
    let key = bpf_get_current_pid_tgid();
    if PENDING.insert(key, p, 0).is_err() {
        // The exit hook will find nothing: this operation's event is lost.
        count_lost(net, netns, if port != 0 { port } else { cur });
        return None;
    }
    Some(())
}

/// Exit side: report the bucket of the port involved, then count a failure. The count
/// comes last so that the verifier does not explore the report once per path through it
/// (older verifiers prune too little for that).
#[inline(always)]
fn exit(ctx: &TracePointContext, which: u8) -> Option<()> {
    let key = bpf_get_current_pid_tgid();
    // SAFETY: copy out the value; the entry is removed right after.
    let p = unsafe { *PENDING.get(key)? };
    let _ = PENDING.remove(key);
    if p.op != which {
        return None;
    }
    let rc = ret(ctx)?;
    let cfg = config();
    let ok = rc == 0 || (which == op::CONNECT && rc == -EINPROGRESS);
    let errno = if ok { 0 } else { (-rc) as i32 };
    // `sk` 0: a bind() only counted (its port is filtered out).
    if p.sk != 0 {
        let _ = report(&cfg, &p, which, ok, errno);
    }
    if !ok {
        if p.sk != 0 {
            count_failure(p.netns, which, errno);
        } else {
            let _ = count_unresolved(&cfg, p.aux as i64, which, errno);
        }
    }
    Some(())
}

/// The event of a finished call: the bucket of the port it took, held or asked for.
#[inline(always)]
fn report(cfg: &Config, p: &Pending, which: u8, ok: bool, errno: i32) -> Option<()> {
    let mut flags = if p.had_port != 0 { flag::HAD_PORT } else { 0 };
    let head = SockHead::read(p.sk);
    let now = head.num();
    let port = if ok {
        now
    } else if which == op::BIND && p.port != 0 {
        p.port
    } else if now != 0 {
        now
    } else {
        // An ephemeral search failed: name the port when the range holds just one.
        let (lo, hi) = port_range(p.net);
        if lo != 0 && lo == hi {
            flags |= flag::PORT_FROM_RANGE;
            lo
        } else {
            0
        }
    };
    if ok && port == 0 {
        // bind() with IP_BIND_ADDRESS_NO_PORT and port 0 takes no port: nothing changed.
        return None;
    }
    if port != 0 && !port_wanted(cfg, port) {
        return None;
    }
    // Only sockets whose port can be released by a state change (connected, or
    // listening without an explicit port) need their owner remembered for
    // `inet_sock_set_state`; a bound socket's port is released when it is destroyed,
    // where `tcp_destroy_sock` knows the owner.
    if ok && which != op::BIND {
        remember(p.sk, p.net, port, head.family());
    }
    let s = Subject {
        op: which,
        hook: hook::TRACEPOINT,
        sk: p.sk,
        head: Some(&head),
        net: p.net,
        netns: p.netns,
        port,
        errno,
        flags,
        anon: false,
    };
    // A failed bind() reset the socket's address, a failed connect() its remote port:
    // report what they asked for.
    let asked = if ok || p.had_port != 0 || p.asked_family == 0 {
        None
    } else if which == op::BIND {
        Some(Asked::Local(p.asked_family, p.asked))
    } else if which == op::CONNECT {
        Some(Asked::Remote(p.asked_family, p.asked, p.asked_port))
    } else {
        None
    };
    send_asked(cfg, &s, asked);
    Some(())
}

/// Counts a failure of a call whose socket the enter side did not resolve.
#[inline(always)]
fn count_unresolved(cfg: &Config, fd: i64, which: u8, errno: i32) -> Option<()> {
    let sk = sock_from_fd(fd)?;
    let head = SockHead::read(sk);
    if !is_tcp(sk, &head) {
        return None;
    }
    let netns = net_inum(head.net());
    if netns_wanted(cfg, netns) {
        count_failure(netns, which, errno);
    }
    Some(())
}

#[tracepoint]
pub fn sys_enter_bind(ctx: TracePointContext) -> u32 {
    let _ = enter(&ctx, op::BIND);
    0
}

#[tracepoint]
pub fn sys_exit_bind(ctx: TracePointContext) -> u32 {
    let _ = exit(&ctx, op::BIND);
    0
}

#[tracepoint]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    let _ = enter(&ctx, op::CONNECT);
    0
}

#[tracepoint]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    let _ = exit(&ctx, op::CONNECT);
    0
}

#[tracepoint]
pub fn sys_enter_listen(ctx: TracePointContext) -> u32 {
    let _ = enter(&ctx, op::LISTEN);
    0
}

#[tracepoint]
pub fn sys_exit_listen(ctx: TracePointContext) -> u32 {
    let _ = exit(&ctx, op::LISTEN);
    0
}

/// Marks this CPU's thread as being in close(); reads nothing.
#[tracepoint]
pub fn sys_enter_close(_ctx: TracePointContext) -> u32 {
    if let Some(m) = CLOSING.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; tracing programs do not nest on one CPU.
        unsafe {
            (*m).pid_tgid = bpf_get_current_pid_tgid();
            (*m).stashed = 0;
        }
    }
    0
}

/// A TCP socket is being destroyed (`tcp_v4_destroy_sock()`, before `inet_put_port()`).
#[inline(always)]
fn destroyed(ctx: &TracePointContext) -> Option<()> {
    if !layout_ready() {
        return None;
    }
    let off_sk = tp_off!(destroy_skaddr);
    let off_sport = tp_off!(destroy_sport);
    if off_sk == NO_FIELD || off_sport == NO_FIELD {
        return None;
    }
    // SAFETY: reads of the tracepoint record at offsets taken from its format.
    let port: u16 = unsafe { ctx.read_at(off_sport as usize).ok()? };
    let cfg = config();
    if port == 0 || !port_wanted(&cfg, port) {
        return None;
    }
    // SAFETY: as above.
    let sk: u64 = unsafe { ctx.read_at(off_sk as usize).ok()? };
    // `sport` outlives the port: a socket whose port a state change released already
    // (reported by `inet_sock_set_state`) has none left here.
    if sk_num(sk) != port {
        return None;
    }
    let net = sk_net(sk)?;
    let netns = net_inum(net);
    if !netns_wanted(&cfg, netns) {
        return None;
    }
    // SAFETY: copy out the value; the entry is removed right after.
    let known = unsafe { SOCKS.get(sk).copied() };
    if known.is_some() {
        let _ = SOCKS.remove(sk);
    }
    let key = bpf_get_current_pid_tgid();
    if let Some(m) = CLOSING.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; tracing programs do not nest on one CPU.
        let m = unsafe { &mut *m };
        if m.pid_tgid == key {
            let p = Pending {
                sk,
                net,
                aux: 0,
                netns,
                port,
                op: op::CLOSE,
                had_port: 1,
                asked: [0; 16],
                asked_family: 0,
                asked_port: 0,
                _pad: [0; 4],
            };
            if PENDING
                .insert(key ^ CLOSE_TAG, p, BPF_NOEXIST as u64)
                .is_ok()
            {
                m.stashed = 1;
                return Some(());
            }
        }
    }
    match known {
        Some(k) => send_known(
            &cfg,
            op::RELEASE,
            hook::TRACEPOINT,
            sk,
            &k,
            flag::OBSERVE_LATER,
        ),
        None => send(
            &cfg,
            &Subject {
                op: op::RELEASE,
                hook: hook::TRACEPOINT,
                sk,
                head: None,
                net,
                netns,
                port,
                errno: 0,
                flags: flag::HAD_PORT | flag::OBSERVE_LATER,
                anon: false,
            },
        ),
    }
    Some(())
}

#[tracepoint]
pub fn tcp_destroy_sock(ctx: TracePointContext) -> u32 {
    let _ = destroyed(&ctx);
    0
}

/// close() returns: report the bucket of the socket it destroyed, now released.
#[inline(always)]
fn close_exit() -> Option<()> {
    let key = bpf_get_current_pid_tgid();
    let m = CLOSING.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot; tracing programs do not nest on one CPU.
    let m = unsafe { &mut *m };
    if m.pid_tgid == key {
        m.pid_tgid = 0;
        if m.stashed == 0 {
            return None;
        }
        m.stashed = 0;
    }
    // A socket is stashed, or this CPU's mark is another thread's (this thread may have
    // moved to this CPU during close()): look for its entry.
    let k = key ^ CLOSE_TAG;
    // SAFETY: copy out the value; the entry is removed right after.
    let p = unsafe { *PENDING.get(k)? };
    let _ = PENDING.remove(k);
    let cfg = config();
    // Freed by now: not to be read.
    send(
        &cfg,
        &Subject::released(op::CLOSE, hook::TRACEPOINT, &p, false),
    );
    Some(())
}

#[tracepoint]
pub fn sys_exit_close(_ctx: TracePointContext) -> u32 {
    let _ = close_exit();
    0
}

/// accept()/accept4() return the new fd: its socket joined the listener's bucket.
#[inline(always)]
fn accepted(ctx: &TracePointContext) -> Option<()> {
    if !layout_ready() {
        return None;
    }
    let fd = ret(ctx)?;
    let sk = sock_from_fd(fd)?;
    let head = SockHead::read(sk);
    if !is_tcp(sk, &head) {
        return None;
    }
    let net = head.net();
    let netns = net_inum(net);
    let cfg = config();
    if !netns_wanted(&cfg, netns) {
        return None;
    }
    let port = head.num();
    if port == 0 || !port_wanted(&cfg, port) {
        return None;
    }
    remember(sk, net, port, head.family());
    let s = Subject {
        op: op::ACCEPT,
        hook: hook::TRACEPOINT,
        sk,
        head: Some(&head),
        net,
        netns,
        port,
        errno: 0,
        flags: 0,
        anon: false,
    };
    send(&cfg, &s);
    Some(())
}

#[tracepoint]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    let _ = accepted(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_accept4(ctx: TracePointContext) -> u32 {
    let _ = accepted(&ctx);
    0
}

/// `->TCP_CLOSE` fires after `tcp_set_state()` released the port of a socket that did
/// not bind it explicitly (the kernel has cleared the socket's port by then, hence the
/// saved attribution): connections closed by close(), RST or timeout, in any context.
#[inline(always)]
fn set_state(ctx: &TracePointContext) -> Option<()> {
    if !layout_ready() {
        return None;
    }
    let off_sk = tp_off!(set_state_skaddr);
    let off_new = tp_off!(set_state_newstate);
    let off_proto = tp_off!(set_state_protocol);
    if off_sk == NO_FIELD || off_new == NO_FIELD || off_proto == NO_FIELD {
        return None;
    }
    // SAFETY: reads of the tracepoint record at offsets taken from its format.
    let newstate: i32 = unsafe { ctx.read_at(off_new as usize).ok()? };
    if newstate != TCP_CLOSE {
        return None;
    }
    // SAFETY: as above.
    let proto: u16 = unsafe { ctx.read_at(off_proto as usize).ok()? };
    if proto != IPPROTO_TCP {
        return None;
    }
    // SAFETY: as above.
    let sk: u64 = unsafe { ctx.read_at(off_sk as usize).ok()? };
    // SAFETY: copy out the value; the entry is removed right after.
    let k = unsafe { *SOCKS.get(sk)? };
    // A port bound explicitly (SOCK_BINDPORT_LOCK, inherited by accepted sockets) stays
    // until the socket is destroyed: `tcp_destroy_sock` reports that release.
    if sk_num(sk) != 0 {
        return None;
    }
    let _ = SOCKS.remove(sk);
    let cfg = config();
    if !netns_wanted(&cfg, k.netns) || !port_wanted(&cfg, k.port) {
        return None;
    }
    send_known(&cfg, op::RELEASE, hook::TRACEPOINT, sk, &k, 0);
    Some(())
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let _ = set_state(&ctx);
    0
}
