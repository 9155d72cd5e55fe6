//! The tracepoint backend: syscall enter/exit tracepoints, `sock:inet_sock_set_state` and
//! `tcp:tcp_destroy_sock` (programs in `portwatch-ebpf/src/tracepoint.rs`), and its
//! fix-up: a release the programs could only see before it happened is read after the
//! fact.
use aya::{programs::TracePoint, Ebpf};
use portwatch_common::{flag, snapflag, Event};

use super::{Backend, BackendError, Descriptor, FixUp, Refusal};
use crate::{
    bpf::{self, error_chain},
    kernel::Resolved,
    snapshot::Lookup,
};

pub const DESCRIPTOR: Descriptor = Descriptor {
    backend: Backend::Tracepoint,
    programs,
    attach,
    fix_up: Some(observe_releases),
};

/// When a program is attached.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    Required,
    /// Attached where the kernel has the tracepoint; its absence is a warning.
    Optional,
    /// Where a syscall's arguments can be read at its exit (`bpf_task_pt_regs`, 5.15+;
    /// see `Resolved::syscall_args_at_exit`).
    ArgsAtExit,
    /// Where they cannot: an enter program keeps them for the exit.
    ArgsAtEnter,
}

/// A program and the tracepoint it is attached to.
struct Hook {
    program: &'static str,
    category: &'static str,
    tracepoint: &'static str,
    need: Need,
}

/// A program named after its tracepoint.
const fn tp(name: &'static str, category: &'static str, need: Need) -> Hook {
    Hook {
        program: name,
        category,
        tracepoint: name,
        need,
    }
}

const TRACEPOINTS: [Hook; 13] = [
    tp("sys_enter_bind", "syscalls", Need::ArgsAtEnter),
    tp("sys_exit_bind", "syscalls", Need::ArgsAtEnter),
    Hook {
        program: "bind_from_regs",
        category: "syscalls",
        tracepoint: "sys_exit_bind",
        need: Need::ArgsAtExit,
    },
    tp("sys_enter_connect", "syscalls", Need::Required),
    tp("sys_exit_connect", "syscalls", Need::Required),
    tp("sys_enter_listen", "syscalls", Need::Required),
    tp("sys_exit_listen", "syscalls", Need::Required),
    tp("sys_enter_close", "syscalls", Need::Required),
    tp("sys_exit_close", "syscalls", Need::Required),
    tp("sys_exit_accept", "syscalls", Need::Optional),
    tp("sys_exit_accept4", "syscalls", Need::Required),
    tp("inet_sock_set_state", "sock", Need::Required),
    tp("tcp_destroy_sock", "tcp", Need::Required),
];

fn programs() -> Vec<&'static str> {
    TRACEPOINTS.iter().map(|t| t.program).collect()
}

fn attach(ebpf: &mut Ebpf, resolved: &Resolved, warnings: &mut Vec<String>) -> Result<(), Refusal> {
    let at_exit = resolved.syscall_args_at_exit();
    for h in &TRACEPOINTS {
        let wanted = match h.need {
            Need::ArgsAtExit => at_exit,
            Need::ArgsAtEnter => !at_exit,
            Need::Required | Need::Optional => true,
        };
        if !wanted {
            continue;
        }
        let result = (|| -> Result<(), Refusal> {
            let p: &mut TracePoint = bpf::program(ebpf, h.program)?;
            p.load().map_err(|e| Refusal::from_load(h.program, &e))?;
            p.attach(h.category, h.tracepoint)
                .map_err(|e| Refusal::Attach {
                    program: h.program.to_string(),
                    target: format!("{}:{}", h.category, h.tracepoint),
                    reason: error_chain(&e),
                })?;
            Ok(())
        })();
        match result {
            Ok(()) => {}
            Err(e) if h.need == Need::Optional => {
                warnings.push(format!("optional tracepoint skipped: {e}"))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `tcp:tcp_destroy_sock` fires before the kernel releases the socket's port; inside
/// close() the release is read at the syscall's exit, but elsewhere (process exit, a
/// socket freed from softirq or by a deferred final fput) no hook runs after it, and the
/// event comes flagged `OBSERVE_LATER` without a bucket: its bucket is read now, when the
/// release is done.
fn observe_releases(
    cx: &mut FixUp<'_>,
    mut events: Vec<Event>,
) -> Result<Vec<Event>, BackendError> {
    for ev in events
        .iter_mut()
        .filter(|e| e.flags & flag::OBSERVE_LATER != 0)
    {
        observe(cx, ev)?;
    }
    Ok(events)
}

/// Fills in the bucket of `ev`, read now.
fn observe(cx: &mut FixUp<'_>, ev: &mut Event) -> Result<(), BackendError> {
    ev.flags &= !(flag::OBSERVE_LATER | flag::BUCKET_PRESENT | flag::OWNERS_TRUNCATED);
    ev.bucket = Default::default();
    if ev.net == 0 {
        return Ok(());
    }
    let now = cx
        .snapshots
        .lookup(cx.ebpf, ev.net, ev.port, cx.max_owners)?;
    ev.flags &= !flag::LOOKUP_TRUNCATED;
    match now {
        Lookup::Bucket(r) => {
            ev.bucket.tb = r.addr;
            ev.bucket.owners = r.owners;
            ev.bucket.fastreuse = r.fastreuse;
            ev.bucket.fastreuseport = r.fastreuseport;
            ev.bucket.l3mdev = r.l3mdev;
            ev.bucket.port = r.port;
            ev.flags |= flag::BUCKET_PRESENT;
            if r.flags & snapflag::OWNERS_TRUNCATED != 0 {
                ev.flags |= flag::OWNERS_TRUNCATED;
            }
        }
        Lookup::Absent => {}
        Lookup::Unknown => ev.flags |= flag::LOOKUP_TRUNCATED,
    }
    Ok(())
}
