//! Access to the loaded eBPF object shared by the snapshot engine and the backends: its
//! maps and programs by name and type, and error text for what aya reports.
use aya::{
    maps::{Map, MapError as AyaMapError},
    programs::{Program, ProgramError},
    Ebpf,
};

/// A map of the object could not be used.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error("the eBPF object has no map `{0}` (build mismatch; rebuild portwatch)")]
    Missing(&'static str),
    #[error("map `{map}`: {source}")]
    Access {
        map: &'static str,
        #[source]
        source: AyaMapError,
    },
}

/// A program of the object could not be found or used.
#[derive(Debug, thiserror::Error)]
pub enum ProgramLookupError {
    #[error("the eBPF object has no program `{0}` (build mismatch; rebuild portwatch)")]
    Missing(String),
    #[error("program `{name}`: {source}")]
    Type {
        name: String,
        #[source]
        source: ProgramError,
    },
}

/// Map `name` of the object as `T` (e.g. `Array<_, Config>`), borrowed.
pub fn map<'a, T>(ebpf: &'a Ebpf, name: &'static str) -> Result<T, MapError>
where
    T: TryFrom<&'a Map, Error = AyaMapError>,
{
    let m = ebpf.map(name).ok_or(MapError::Missing(name))?;
    T::try_from(m).map_err(access(name))
}

/// Map `name` of the object as `T`, borrowed mutably.
pub fn map_mut<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<T, MapError>
where
    T: TryFrom<&'a mut Map, Error = AyaMapError>,
{
    let m = ebpf.map_mut(name).ok_or(MapError::Missing(name))?;
    T::try_from(m).map_err(access(name))
}

/// Map `name` taken out of the object as `T` (for maps kept beside it, e.g. ring buffers).
pub fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, MapError>
where
    T: TryFrom<Map, Error = AyaMapError>,
{
    let m = ebpf.take_map(name).ok_or(MapError::Missing(name))?;
    T::try_from(m).map_err(access(name))
}

/// Wraps an error of an operation on map `name` (`set`, `get`, `insert`).
pub fn access(name: &'static str) -> impl FnOnce(AyaMapError) -> MapError {
    move |source| MapError::Access { map: name, source }
}

/// Program `name` of the object as program type `T` (e.g. `KProbe`).
pub fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, ProgramLookupError>
where
    &'a mut T: TryFrom<&'a mut Program, Error = ProgramError>,
{
    let p = ebpf
        .program_mut(name)
        .ok_or_else(|| ProgramLookupError::Missing(name.to_string()))?;
    p.try_into().map_err(|source| ProgramLookupError::Type {
        name: name.to_string(),
        source,
    })
}

/// Detaches and unloads program `name` if it is loaded (a no-op otherwise).
pub fn unload(ebpf: &mut Ebpf, name: &str) {
    // Errors are ignored: a program that is not loaded has nothing to undo.
    let _ = match ebpf.program_mut(name) {
        Some(Program::KProbe(p)) => p.unload(),
        Some(Program::FEntry(p)) => p.unload(),
        Some(Program::FExit(p)) => p.unload(),
        Some(Program::TracePoint(p)) => p.unload(),
        _ => Ok(()),
    };
}

/// "a: b: c" from an error and its sources.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let t = src.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = src.source();
    }
    // aya appends the verifier log even when the kernel gave none.
    let trimmed = s.trim_end();
    let trimmed = trimmed
        .strip_suffix("Verifier output:")
        .unwrap_or(trimmed)
        .trim_end();
    let trimmed = trimmed.strip_suffix('.').unwrap_or(trimmed);
    trimmed.to_string()
}

/// Runs of the loaded programs that the kernel skipped because another tracing program
/// was running on the same CPU (`recursion_misses` of `bpf_prog_info`, 5.12+; 0 where the
/// kernel does not count them), summed over every loaded program of the object.
pub fn recursion_misses(ebpf: &Ebpf) -> u64 {
    use std::os::fd::{AsFd as _, AsRawFd as _};

    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    /// `bpf_attr.info` of BPF_OBJ_GET_INFO_BY_FD.
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut total = 0u64;
    for (_, prog) in ebpf.programs() {
        let Ok(fd) = prog.fd() else { continue };
        // SAFETY: bpf_prog_info is a plain C struct of integers; all-zero is valid.
        let mut info: aya_obj::generated::bpf_prog_info = unsafe { std::mem::zeroed() };
        let mut attr = InfoAttr {
            bpf_fd: fd.as_fd().as_raw_fd() as u32,
            info_len: std::mem::size_of_val(&info) as u32,
            info: std::ptr::addr_of_mut!(info) as u64,
        };
        // SAFETY: BPF_OBJ_GET_INFO_BY_FD writes at most `info_len` bytes to `info`, which
        // points at a live bpf_prog_info of that size; `attr` lives across the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_OBJ_GET_INFO_BY_FD,
                std::ptr::addr_of_mut!(attr),
                std::mem::size_of::<InfoAttr>() as u32,
            )
        };
        if rc == 0 {
            total += info.recursion_misses;
        }
    }
    total
}
