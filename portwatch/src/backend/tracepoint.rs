//! The tracepoint backend: syscall enter/exit tracepoints and `sock:inet_sock_set_state`
//! (programs in `portwatch-ebpf/src/tracepoint.rs`), and its fix-up: close() events are
//! re-read after the fact.
use aya::{programs::TracePoint, Ebpf};
use portwatch_common::{flag, op, snapflag, Event};

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
    fix_up: Some(reread_closes),
};

/// (program, category, tracepoint, required).
const TRACEPOINTS: [(&str, &str, &str, bool); 11] = [
    ("sys_enter_bind", "syscalls", "sys_enter_bind", true),
    ("sys_exit_bind", "syscalls", "sys_exit_bind", true),
    ("sys_enter_connect", "syscalls", "sys_enter_connect", true),
    ("sys_exit_connect", "syscalls", "sys_exit_connect", true),
    ("sys_enter_listen", "syscalls", "sys_enter_listen", true),
    ("sys_exit_listen", "syscalls", "sys_exit_listen", true),
    ("sys_enter_close", "syscalls", "sys_enter_close", true),
    ("sys_exit_close", "syscalls", "sys_exit_close", true),
    ("sys_exit_accept", "syscalls", "sys_exit_accept", false),
    ("sys_exit_accept4", "syscalls", "sys_exit_accept4", true),
    ("inet_sock_set_state", "sock", "inet_sock_set_state", true),
];

fn programs() -> Vec<&'static str> {
    TRACEPOINTS.iter().map(|t| t.0).collect()
}

fn attach(
    ebpf: &mut Ebpf,
    _resolved: &Resolved,
    warnings: &mut Vec<String>,
) -> Result<(), Refusal> {
    for (prog, category, name, required) in TRACEPOINTS {
        let result = (|| -> Result<(), Refusal> {
            let p: &mut TracePoint = bpf::program(ebpf, prog)?;
            p.load().map_err(|e| Refusal::from_load(prog, &e))?;
            p.attach(category, name).map_err(|e| Refusal::Attach {
                program: prog.to_string(),
                target: format!("{category}:{name}"),
                reason: error_chain(&e),
            })?;
            Ok(())
        })();
        match result {
            Ok(()) => {}
            Err(e) if !required => warnings.push(format!("optional tracepoint skipped: {e}")),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// close() is reported at the syscall's exit; kernels before 6.15 release the socket
/// after that (the final fput runs on the way back to user space), so a close event
/// whose bucket still shows the port is followed by a re-read of that bucket, sent as a
/// second close event when it changed.
fn reread_closes(cx: &mut FixUp<'_>, events: Vec<Event>) -> Result<Vec<Event>, BackendError> {
    if !events.iter().any(needs_reread) {
        return Ok(events);
    }
    let mut merged = Vec::with_capacity(events.len() + 1);
    for ev in events {
        let again = if needs_reread(&ev) {
            reread(cx, &ev)?
        } else {
            None
        };
        merged.push(ev);
        merged.extend(again);
    }
    Ok(merged)
}

fn needs_reread(ev: &Event) -> bool {
    ev.op == op::CLOSE && ev.errno == 0 && ev.flags & flag::BUCKET_PRESENT != 0 && ev.net != 0
}

/// The event `ev` with its bucket read again now, if that differs.
fn reread(cx: &mut FixUp<'_>, ev: &Event) -> Result<Option<Event>, BackendError> {
    let now = cx
        .snapshots
        .lookup(cx.ebpf, ev.net, ev.port, cx.max_owners)?;
    let mut again = *ev;
    again.flags &= !flag::LOOKUP_TRUNCATED;
    match now {
        Lookup::Bucket(r) => {
            if r.addr == ev.bucket.tb
                && r.owners == ev.bucket.owners
                && r.fastreuse == ev.bucket.fastreuse
                && r.fastreuseport == ev.bucket.fastreuseport
            {
                return Ok(None);
            }
            again.bucket.tb = r.addr;
            again.bucket.owners = r.owners;
            again.bucket.fastreuse = r.fastreuse;
            again.bucket.fastreuseport = r.fastreuseport;
            again.bucket.l3mdev = r.l3mdev;
            again.flags |= flag::BUCKET_PRESENT;
            if r.flags & snapflag::OWNERS_TRUNCATED != 0 {
                again.flags |= flag::OWNERS_TRUNCATED;
            } else {
                again.flags &= !flag::OWNERS_TRUNCATED;
            }
        }
        Lookup::Absent => {
            again.bucket = Default::default();
            again.flags &= !flag::BUCKET_PRESENT;
        }
        Lookup::Unknown => {
            again.bucket = Default::default();
            again.flags &= !flag::BUCKET_PRESENT;
            again.flags |= flag::LOOKUP_TRUNCATED;
        }
    }
    Ok(Some(again))
}
