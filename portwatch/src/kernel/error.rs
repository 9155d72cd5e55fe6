//! Why the running kernel's layout could not be resolved.
use std::{io, path::PathBuf};

use super::{OSRELEASE, VMLINUX_BTF};

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error(
        "cannot read the kernel's BTF from {}: {source}. portwatch reads kernel struct layouts \
         from BTF; it needs a kernel built with CONFIG_DEBUG_INFO_BTF=y, which provides {VMLINUX_BTF}",
        path.display()
    )]
    NoBtf {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the kernel release from {OSRELEASE}: {source} (is /proc mounted?)")]
    KernelRelease {
        #[source]
        source: io::Error,
    },
    #[error(
        "{origin} is not usable BTF: {reason}; expected the raw BTF of a kernel such as {VMLINUX_BTF}"
    )]
    InvalidBtf { origin: String, reason: String },
    #[error(
        "struct {strukt} is missing from the BTF of kernel {kernel}: portwatch does not know this \
         kernel's bind table layout; please report it"
    )]
    MissingStruct { strukt: String, kernel: String },
    #[error(
        "struct {strukt} has no field `{field}` in the BTF of kernel {kernel}: portwatch does not \
         know this kernel's bind table layout; please report it"
    )]
    MissingField {
        strukt: String,
        field: String,
        kernel: String,
    },
    #[error(
        "`{strukt}.{field}` in the BTF of kernel {kernel} is {found}, expected {expected}: \
         portwatch does not know this kernel's bind table layout; please report it"
    )]
    UnexpectedType {
        strukt: String,
        field: String,
        kernel: String,
        expected: String,
        found: String,
    },
    #[error(
        "enumerator {name} is missing from the BTF of kernel {kernel}: portwatch does not know \
         this kernel's bind table layout; please report it"
    )]
    MissingEnumerator { name: String, kernel: String },
    #[error(
        "no owner list found in the BTF of kernel {kernel}: {detail}; portwatch does not know how \
         to count the owners of a port on this kernel; please report it"
    )]
    NoOwnerList { kernel: String, detail: String },
}
