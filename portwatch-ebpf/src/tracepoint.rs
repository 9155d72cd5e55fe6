//! The tracepoint backend: syscall enter/exit of bind, listen, connect, accept and
//! accept4, `sock:inet_sock_set_state` for releases when a connection closes, and
//! `tcp:tcp_destroy_sock` with close()'s enter/exit for the release of a socket's port
//! when the socket is freed.
//!
//! bind/connect/listen: the enter hook resolves the fd to its socket and remembers what
//! it saw; the exit hook counts a failed bind()/connect() (`errors.rs`) and reports the
//! bucket of the port involved, looked up in the bind hash table. From 5.15 bind() is
//! read at its exit alone, its arguments taken from the task's registers: one program
//! run and no hash-map entry per call, and after a successful call the socket's own port
//! (the filter's key) is known before anything else is read.
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
    compat::{self, port_range},
    emit::{
        config, count_lost, netns_wanted, port_wanted, remember, send, send_asked, send_known,
        Asked, Subject,
    },
    errors::count_failure,
    kernel::{is_tcp, net_inum, sk_net, sk_num, sock_from_fd, SockHead, AF_INET, AF_INET6},
    maps::{Pending, CLOSING, PENDING, SOCKS, TP},
    read::{idle, layout_ready},
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

/// Enter side shared by bind/connect/listen: remember what the call is about for the
/// exit. bind() needs no enter side where its arguments can be read at the exit (see
/// `bind_exit_alone`).
#[inline(always)]
fn enter(ctx: &TracePointContext, which: u8) -> Option<()> {
    if !layout_ready() {
        return None;
    }
    let cfg = config();
    let fd = arg(ctx, 0)?;
    let uaddr = if which == op::LISTEN { 0 } else { arg(ctx, 1)? };
    let p = called(&cfg, which, fd, uaddr, false)?;
    let key = bpf_get_current_pid_tgid();
    if PENDING.insert(key, p, 0).is_err() {
        // The exit hook will find nothing: this operation's event is lost.
        if p.sk != 0 {
            let port = if p.port != 0 { p.port } else { sk_num(p.sk) };
            count_lost(p.net, p.netns, port);
        }
        return None;
    }
    Some(())
}

/// What a bind()/connect()/listen() on `fd` is about (`uaddr`: the address bind() and
/// connect() pass), `None` when it is not a TCP socket of a wanted netns. A bind() to an
/// explicit port the filter rejects keeps only the fd (`sk` 0): its failure is still
/// counted, and only then is the socket looked up. `bound`: read after a bind() that
/// succeeded, whose port is the socket's own: the address it asked for is not needed
/// (it is reported only for a failure) and an unwanted port ends the search early.
#[inline(always)]
fn called(cfg: &Config, which: u8, fd: u64, uaddr: u64, bound: bool) -> Option<Pending> {
    let mut port = 0u16;
    let mut asked = [0u8; 16];
    let mut asked_family = 0u16;
    let mut asked_port = 0u16;
    if (which == op::BIND && !bound) || which == op::CONNECT {
        // struct sockaddr_in / sockaddr_in6: family (u16) and port (be16) for both, then
        // sin_addr at 4 (sin6_addr at 8). Read first: an explicit bind() port the filter
        // rejects ends here, before the walk from the fd to the socket (the costly part
        // for the busy, unwanted case).
        let (hdr, full) = read_sockaddr_head(uaddr)?;
        let family = u16::from_ne_bytes([hdr[0], hdr[1]]);
        if family == AF_INET || family == AF_INET6 {
            asked_port = u16::from_be_bytes([hdr[2], hdr[3]]);
        }
        if which == op::BIND {
            port = asked_port;
            if port != 0 && !port_wanted(cfg, port) {
                return Some(Pending {
                    sk: 0,
                    net: 0,
                    aux: fd,
                    netns: 0,
                    port,
                    op: which,
                    had_port: 0,
                    asked: [0; 16],
                    asked_family: 0,
                    asked_port: 0,
                    _pad: [0; 4],
                });
            }
        }
        // The address, reported if the call fails.
        if family == AF_INET && full {
            asked[..4].copy_from_slice(&hdr[4..8]);
            asked_family = family;
        } else if family == AF_INET6 {
            // SAFETY: a fault-tolerant read of user memory passed to the syscall.
            if let Ok(a) = unsafe { bpf_probe_read_user((uaddr + 8) as *const [u8; 16]) } {
                asked = a;
                asked_family = family;
            }
        }
    }
    let sk = sock_from_fd(fd as i64)?;
    let head = SockHead::read(sk);
    if bound {
        port = head.num();
        if port != 0 && !port_wanted(cfg, port) {
            return None;
        }
    }
    if !is_tcp(sk, &head) {
        return None;
    }
    let net = head.net();
    let netns = net_inum(net);
    if !netns_wanted(cfg, netns) {
        return None;
    }
    Some(Pending {
        sk,
        net,
        aux: 0,
        netns,
        port,
        op: which,
        had_port: (head.num() != 0) as u8,
        asked,
        asked_family,
        asked_port,
        _pad: [0; 4],
    })
}

/// The first 8 bytes of a sockaddr in user memory (family, port and an IPv4 address)
/// with one read, and whether all 8 were read: a shorter buffer at the end of a mapping
/// still gives family and port.
#[inline(always)]
fn read_sockaddr_head(uaddr: u64) -> Option<([u8; 8], bool)> {
    // SAFETY: fault-tolerant reads of user memory passed to the syscall.
    if let Ok(h) = unsafe { bpf_probe_read_user(uaddr as *const [u8; 8]) } {
        return Some((h, true));
    }
    // SAFETY: as above.
    let h: [u8; 4] = unsafe { bpf_probe_read_user(uaddr as *const [u8; 4]).ok()? };
    Some(([h[0], h[1], h[2], h[3], 0, 0, 0, 0], false))
}

/// Exit side: report the bucket of the port involved, then count a failure.
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
    let ok = rc == 0 || (which == op::CONNECT && rc == -EINPROGRESS);
    finish(&config(), &p, which, ok, rc)
}

/// bind() seen at its exit alone: its fd and address read from the task's registers
/// (`compat::syscall_args`, 5.15+). A program of its own, attached to
/// `syscalls:sys_exit_bind` in place of the `sys_enter_bind`/`sys_exit_bind` pair, so
/// that each kernel verifies only the one it runs.
#[inline(always)]
fn bind_exit_alone(ctx: &TracePointContext) -> Option<()> {
    if !layout_ready() {
        return None;
    }
    let rc = ret(ctx)?;
    let ok = rc == 0;
    let (fd, uaddr) = compat::syscall_args()?;
    let cfg = config();
    let mut p = called(&cfg, op::BIND, fd, uaddr, ok)?;
    // bind() refuses a socket that holds a port and leaves it as it was: after a
    // successful call the socket held none before.
    if ok {
        p.had_port = 0;
    }
    finish(&cfg, &p, op::BIND, ok, rc)
}

/// Reports a finished call, then counts a failure. The count comes last so that the
/// verifier does not explore the report once per path through it (older verifiers
/// prune too little for that).
#[inline(always)]
fn finish(cfg: &Config, p: &Pending, which: u8, ok: bool, rc: i64) -> Option<()> {
    let errno = if ok { 0 } else { (-rc) as i32 };
    // `sk` 0: a bind() only counted (its port is filtered out).
    if p.sk != 0 {
        let _ = report(cfg, p, which, ok, errno);
    }
    if !ok {
        if p.sk != 0 {
            count_failure(p.netns, which, errno);
        } else {
            let _ = count_unresolved(cfg, p.aux as i64, which, errno);
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
    if idle() {
        return 0;
    }
    let _ = enter(&ctx, op::BIND);
    0
}

#[tracepoint]
pub fn sys_exit_bind(ctx: TracePointContext) -> u32 {
    if idle() {
        return 0;
    }
    let _ = exit(&ctx, op::BIND);
    0
}

#[tracepoint]
pub fn bind_from_regs(ctx: TracePointContext) -> u32 {
    if idle() {
        return 0;
    }
    let _ = bind_exit_alone(&ctx);
    0
}

#[tracepoint]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    if idle() {
        return 0;
    }
    let _ = enter(&ctx, op::CONNECT);
    0
}

#[tracepoint]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    if idle() {
        return 0;
    }
    let _ = exit(&ctx, op::CONNECT);
    0
}

#[tracepoint]
pub fn sys_enter_listen(ctx: TracePointContext) -> u32 {
    if idle() {
        return 0;
    }
    let _ = enter(&ctx, op::LISTEN);
    0
}

#[tracepoint]
pub fn sys_exit_listen(ctx: TracePointContext) -> u32 {
    if idle() {
        return 0;
    }
    let _ = exit(&ctx, op::LISTEN);
    0
}

/// Marks this CPU's thread as being in close(); reads nothing.
#[tracepoint]
pub fn sys_enter_close(_ctx: TracePointContext) -> u32 {
    if idle() {
        return 0;
    }
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
    if idle() {
        return 0;
    }
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
    if idle() {
        return 0;
    }
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
    if idle() {
        return 0;
    }
    let _ = accepted(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_accept4(ctx: TracePointContext) -> u32 {
    if idle() {
        return 0;
    }
    let _ = accepted(&ctx);
    0
}

/// `->TCP_CLOSE` fires after `tcp_set_state()` released the port of a socket that did
/// not bind it explicitly (the kernel has cleared the socket's port by then): connections
/// closed by close(), RST or timeout, in any context. A socket whose bind/connect/accept
/// these programs saw is reported with the attribution saved then; one from before they
/// were attached has none, and is reported from the record's `sport` (`inet_put_port()`
/// clears `inet_num`, not `inet_sport`) without a process.
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
    // A port bound explicitly (SOCK_BINDPORT_LOCK, inherited by accepted sockets) stays
    // until the socket is destroyed: `tcp_destroy_sock` reports that release.
    if sk_num(sk) != 0 {
        return None;
    }
    let cfg = config();
    // SAFETY: copy out the value; the entry is removed right after.
    if let Some(k) = unsafe { SOCKS.get(sk).copied() } {
        let _ = SOCKS.remove(sk);
        if !netns_wanted(&cfg, k.netns) || !port_wanted(&cfg, k.port) {
            return None;
        }
        send_known(&cfg, op::RELEASE, hook::TRACEPOINT, sk, &k, 0);
        return Some(());
    }
    released_unknown(ctx, &cfg, sk)
}

/// The release of a port by a socket these programs have no attribution for.
#[inline(always)]
fn released_unknown(ctx: &TracePointContext, cfg: &Config, sk: u64) -> Option<()> {
    let off_sport = tp_off!(set_state_sport);
    if off_sport == NO_FIELD {
        return None;
    }
    // SAFETY: a read of the tracepoint record at an offset taken from its format.
    let port: u16 = unsafe { ctx.read_at(off_sport as usize).ok()? };
    if port == 0 || !port_wanted(cfg, port) {
        return None;
    }
    let net = sk_net(sk)?;
    let netns = net_inum(net);
    if !netns_wanted(cfg, netns) {
        return None;
    }
    send(
        cfg,
        &Subject {
            op: op::RELEASE,
            hook: hook::TRACEPOINT,
            sk: 0,
            head: None,
            net,
            netns,
            port,
            errno: 0,
            flags: flag::HAD_PORT,
            // Any context (softirq for a reset or a timer): no process to name.
            anon: true,
        },
    );
    Some(())
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    if idle() {
        return 0;
    }
    let _ = set_state(&ctx);
    0
}
