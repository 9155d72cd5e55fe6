//! What portwatch knows about kernels: a reader of the running kernel's BTF ([`btf`]),
//! the table of kernel variants ([`compat`]), the layout handed to the eBPF programs
//! built from both ([`layout`]), where the hooked functions really are in the kernel's
//! text ([`symbols`]), the report of all of it ([`report`]), and the release numbers
//! both tables of per-kernel decisions are keyed by ([`version`]).
pub mod btf;
pub mod compat;
mod error;
pub mod layout;
pub mod report;
pub mod symbols;
pub mod version;

use std::path::Path;

pub use error::LayoutError;
pub use layout::{NoPortSource, Resolved, Tb2Family, UpdateFastreuse, TRACKED_FUNCTIONS};
pub use version::KernelVersion;

/// Where the running kernel exposes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
/// The running kernel's release string.
pub const OSRELEASE: &str = "/proc/sys/kernel/osrelease";

/// Resolves the layout from the running kernel (reads [`VMLINUX_BTF`] and [`OSRELEASE`]),
/// and where the tracked functions are in its text ([`symbols`]).
pub fn host_layout() -> Result<Resolved, LayoutError> {
    let bytes = read_btf(Path::new(VMLINUX_BTF))?;
    let release = read_release()?;
    let mut r = layout_from_btf_bytes(&bytes, &release)?;
    r.sites = symbols::host_sites(&TRACKED_FUNCTIONS, &crate::backend::tracefs::CANDIDATES);
    Ok(r)
}

/// Resolves the layout from a raw BTF file. The kernel release is the running kernel's
/// when `path` is [`VMLINUX_BTF`], else it names the file.
pub fn layout_from_btf_file(path: &Path) -> Result<Resolved, LayoutError> {
    let bytes = read_btf(path)?;
    let release = if path == Path::new(VMLINUX_BTF) {
        read_release()?
    } else {
        format!("unknown (BTF from {})", path.display())
    };
    layout_from_btf_bytes(&bytes, &release)
}

/// Resolves the layout from raw BTF bytes; `kernel_release` is only used in messages and
/// copied into [`Resolved::kernel_release`].
pub fn layout_from_btf_bytes(bytes: &[u8], kernel_release: &str) -> Result<Resolved, LayoutError> {
    layout::build(&btf::KernelBtf::parse(bytes, kernel_release)?)
}

fn read_btf(path: &Path) -> Result<Vec<u8>, LayoutError> {
    std::fs::read(path).map_err(|source| LayoutError::NoBtf {
        path: path.to_path_buf(),
        source,
    })
}

fn read_release() -> Result<String, LayoutError> {
    std::fs::read_to_string(OSRELEASE)
        .map(|s| s.trim().to_string())
        .map_err(|source| LayoutError::KernelRelease { source })
}

#[cfg(test)]
#[path = "../../tests/fixtures/btf/fake_kernel.rs"]
pub(crate) mod fake_kernel;
