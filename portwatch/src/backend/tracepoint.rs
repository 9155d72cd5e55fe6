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

/// When a tracepoint is attached.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    Required,
    /// Attached where the kernel has it; its absence is a warning.
    Optional,
    /// Only where bind()'s arguments cannot be read at `sys_exit_bind` (kernels before
    /// 5.15, see `Resolved::syscall_args_at_exit`): there `sys_enter_bind` keeps them.
    UnlessArgsAtExit,
}

/// (tracepoint and program name, category, when).
const TRACEPOINTS: [(&str, &str, Need); 12] = [
    ("sys_enter_bind", "syscalls", Need::UnlessArgsAtExit),
    ("sys_exit_bind", "syscalls", Need::Required),
    ("sys_enter_connect", "syscalls", Need::Required),
    ("sys_exit_connect", "syscalls", Need::Required),
    ("sys_enter_listen", "syscalls", Need::Required),
    ("sys_exit_listen", "syscalls", Need::Required),
    ("sys_enter_close", "syscalls", Need::Required),
    ("sys_exit_close", "syscalls", Need::Required),
    ("sys_exit_accept", "syscalls", Need::Optional),
    ("sys_exit_accept4", "syscalls", Need::Required),
    ("inet_sock_set_state", "sock", Need::Required),
    ("tcp_destroy_sock", "tcp", Need::Required),
];

fn programs() -> Vec<&'static str> {
    TRACEPOINTS.iter().map(|t| t.0).collect()
}

fn attach(ebpf: &mut Ebpf, resolved: &Resolved, warnings: &mut Vec<String>) -> Result<(), Refusal> {
    for (prog, category, need) in TRACEPOINTS {
        if need == Need::UnlessArgsAtExit && resolved.syscall_args_at_exit() {
            continue;
        }
        let result = (|| -> Result<(), Refusal> {
            let p: &mut TracePoint = bpf::program(ebpf, prog)?;
            p.load().map_err(|e| Refusal::from_load(prog, &e))?;
            p.attach(category, prog).map_err(|e| Refusal::Attach {
                program: prog.to_string(),
                target: format!("{category}:{prog}"),
                reason: error_chain(&e),
            })?;
            Ok(())
        })();
        match result {
            Ok(()) => {}
            Err(e) if need == Need::Optional => {
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
