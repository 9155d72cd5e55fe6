//! Kernel layout discovery from BTF.
//!
//! The eBPF programs cannot use CO-RE relocations (see docs/toolchain.md), so user space
//! reads every offset they need from the running kernel's BTF at start-up and hands them
//! over as the global `LAYOUT` ([`portwatch_common::Layout`]). Nothing here is hard-coded
//! per kernel version: each field is looked up by name, its type is checked, and a
//! missing or unexpected field is an error that names it.
//!
//! Parsing uses the `btfparse` crate for the type table; the member lookup (including
//! anonymous struct/union members and bit fields) is done here, with depth limits, so
//! malformed BTF yields an error rather than a hang or a panic.

use std::{
    collections::{BTreeMap, HashMap},
    io,
    panic::{catch_unwind, AssertUnwindSafe},
    path::{Path, PathBuf},
};

use btfparse::{Offset, Readable, TypeInformation, TypeVariant};
use portwatch_common::{BitField, Layout, NO_FIELD, OWNERS_ON_TB, OWNERS_ON_TB2};

/// Where the running kernel exposes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
/// The running kernel's release string.
pub const OSRELEASE: &str = "/proc/sys/kernel/osrelease";

/// Kernel functions whose presence (as BTF FUNC) and parameters are reported in
/// [`Resolved::functions`]: the places where bind buckets change.
pub const TRACKED_FUNCTIONS: [&str; 8] = [
    "inet_csk_get_port",
    "__inet_hash_connect",
    "inet_csk_update_fastreuse",
    "inet_put_port",
    "__inet_inherit_port",
    "inet_twsk_hashdance_schedule",
    "inet_twsk_hashdance",
    "inet_twsk_bind_unhash",
];

/// Bound on type indirections and anonymous-member nesting (real kernels need < 10).
const MAX_DEPTH: usize = 32;
/// Bound on structs visited while looking up one member through anonymous members.
const MEMBER_SEARCH_BUDGET: usize = 4096;

/// Why the layout could not be resolved.
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
    #[error("cannot read the kernel release from {}: {source} (is /proc mounted?)", path.display())]
    KernelRelease {
        path: PathBuf,
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

/// Which member of `struct inet_bind2_bucket` tells its address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Tb2Family {
    /// `unsigned short family` (AF_INET / AF_INET6), 6.1 to 6.x.
    Family,
    /// `unsigned short addr_type` (an `ipv6_addr_type()` value, IPV6_ADDR_MAPPED for
    /// IPv4), later kernels.
    AddrType,
    /// Neither member (or no `inet_bind2_bucket` at all).
    Absent,
}

/// Where `IP_BIND_ADDRESS_NO_PORT` lives in `struct inet_sock`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum NoPortSource {
    /// The `bind_address_no_port` bit field (before 6.6).
    BitField,
    /// Bit `INET_FLAGS_BIND_ADDRESS_NO_PORT` of `inet_flags` (6.6+).
    InetFlags,
}

/// The BTF signature of `inet_csk_update_fastreuse`: `(tb, sk)` before 6.18,
/// `(sk, tb, tb2)` from 6.18.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UpdateFastreuse {
    /// Parameter names in order ("" for an unnamed parameter).
    pub params: Vec<String>,
    /// Zero-based position of the `sk` parameter, if present.
    pub sk: Option<usize>,
    /// Zero-based position of the `tb` parameter, if present.
    pub tb: Option<usize>,
    /// Zero-based position of the `tb2` parameter, if present.
    pub tb2: Option<usize>,
}

impl UpdateFastreuse {
    fn from_params(params: Vec<String>) -> UpdateFastreuse {
        let pos = |name: &str| params.iter().position(|p| p == name);
        UpdateFastreuse {
            sk: pos("sk"),
            tb: pos("tb"),
            tb2: pos("tb2"),
            params,
        }
    }
}

/// The layout plus the facts user space needs to pick probes and explain output.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resolved {
    pub layout: Layout,
    pub kernel_release: String,
    /// How owners of a port are counted on this kernel and why (human readable).
    pub owners_mode: String,
    /// Which member of `inet_bind2_bucket` gives its family (`layout.tb2_family`).
    pub tb2_family: Tb2Family,
    /// Where `IP_BIND_ADDRESS_NO_PORT` is read from (`layout.inet_bind_address_no_port`).
    pub bind_address_no_port: NoPortSource,
    /// `inet_csk_update_fastreuse` as a BTF FUNC, `None` when absent.
    pub update_fastreuse: Option<UpdateFastreuse>,
    /// Each of [`TRACKED_FUNCTIONS`]: `Some(parameter names)` when present as a BTF FUNC.
    pub functions: BTreeMap<String, Option<Vec<String>>>,
}

impl Resolved {
    /// Whether `name` exists as a BTF FUNC (only for [`TRACKED_FUNCTIONS`]).
    pub fn has_function(&self, name: &str) -> bool {
        matches!(self.functions.get(name), Some(Some(_)))
    }

    /// Parameter names of a tracked function, when present.
    pub fn function_params(&self, name: &str) -> Option<&[String]> {
        self.functions.get(name).and_then(|p| p.as_deref())
    }

    /// One line per fact, for a `--info` style feature report.
    pub fn describe(&self) -> Vec<String> {
        let mut out = vec![
            format!("kernel {}", self.kernel_release),
            format!("owners: {}", self.owners_mode),
        ];
        out.push(match self.tb2_family {
            Tb2Family::Family => "inet_bind2_bucket family: `family` (AF_*)".to_string(),
            Tb2Family::AddrType => {
                "inet_bind2_bucket family: `addr_type` (ipv6_addr_type)".to_string()
            }
            Tb2Family::Absent => "inet_bind2_bucket family: not available".to_string(),
        });
        out.push(match self.bind_address_no_port {
            NoPortSource::BitField => {
                "IP_BIND_ADDRESS_NO_PORT: inet_sock.bind_address_no_port".to_string()
            }
            NoPortSource::InetFlags => format!(
                "IP_BIND_ADDRESS_NO_PORT: bit {} of inet_sock.inet_flags",
                self.layout.inet_bind_address_no_port.shift
            ),
        });
        for (name, params) in &self.functions {
            out.push(match params {
                Some(p) => format!("function {name}({})", p.join(", ")),
                None => format!("function {name}: absent"),
            });
        }
        out
    }
}

/// Resolves the layout from the running kernel (reads [`VMLINUX_BTF`] and [`OSRELEASE`]).
pub fn host_layout() -> Result<Resolved, LayoutError> {
    let bytes = read_btf(Path::new(VMLINUX_BTF))?;
    let release = read_release()?;
    layout_from_btf_bytes(&bytes, &release)
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
    let origin = format!("the BTF of kernel {kernel_release}");
    check_header(bytes).map_err(|reason| LayoutError::InvalidBtf {
        origin: origin.clone(),
        reason,
    })?;
    let source = ByteSource(bytes);
    // btfparse returns errors for the malformed inputs we tried, and the header check above
    // excludes the arithmetic overflows it does not guard; catching a panic is a last line
    // of defence so that garbage input is an error, never a crash.
    let parsed = catch_unwind(AssertUnwindSafe(|| TypeInformation::new(&source)));
    let info = match parsed {
        Ok(Ok(info)) => info,
        Ok(Err(e)) => {
            return Err(LayoutError::InvalidBtf {
                origin,
                reason: format!("{:?}: {}", e.kind(), e.message()),
            })
        }
        Err(_) => {
            return Err(LayoutError::InvalidBtf {
                origin,
                reason: "the BTF parser failed".to_string(),
            })
        }
    };
    let btf = Btf::new(info.get(), kernel_release);
    btf.resolve()
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
        .map_err(|source| LayoutError::KernelRelease {
            path: PathBuf::from(OSRELEASE),
            source,
        })
}

/// Checks the fixed header and that both sections lie inside `bytes`.
fn check_header(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 24 {
        return Err(format!(
            "{} bytes is shorter than the 24-byte BTF header",
            bytes.len()
        ));
    }
    let magic = [bytes[0], bytes[1]];
    let le = match magic {
        [0x9f, 0xeb] => true,
        [0xeb, 0x9f] => false,
        _ => {
            return Err(format!(
                "bad magic {:02x}{:02x} (expected 0xeb9f)",
                bytes[1], bytes[0]
            ))
        }
    };
    if bytes[2] != 1 {
        return Err(format!("unsupported BTF version {}", bytes[2]));
    }
    let word = |at: usize| {
        let w = [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
        u64::from(if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        })
    };
    let (hdr_len, type_off, type_len, str_off, str_len) =
        (word(4), word(8), word(12), word(16), word(20));
    let len = bytes.len() as u64;
    if hdr_len < 24 || hdr_len > len {
        return Err(format!("header length {hdr_len} is out of range"));
    }
    if hdr_len + type_off + type_len > len {
        return Err(format!(
            "type section ({type_len} bytes at {}) runs past the end of the data ({len} bytes)",
            hdr_len + type_off
        ));
    }
    if hdr_len + str_off + str_len > len {
        return Err(format!(
            "string section ({str_len} bytes at {}) runs past the end of the data ({len} bytes)",
            hdr_len + str_off
        ));
    }
    Ok(())
}

/// `btfparse::Readable` over a byte slice, with bounds checks.
struct ByteSource<'a>(&'a [u8]);

impl Readable for ByteSource<'_> {
    fn read(&self, offset: u64, buffer: &mut [u8]) -> btfparse::Result<()> {
        let range = usize::try_from(offset)
            .ok()
            .and_then(|start| start.checked_add(buffer.len()).map(|end| start..end));
        match range.and_then(|r| self.0.get(r)) {
            Some(src) => {
                buffer.copy_from_slice(src);
                Ok(())
            }
            None => Err(btfparse::Error::new(
                btfparse::ErrorKind::EOF,
                "read past the end of the BTF data",
            )),
        }
    }
}

/// A resolved member: where it is and what it is.
#[derive(Clone, Copy, Debug)]
struct Field {
    /// Type id of the member.
    tid: u32,
    /// Offset from the start of the root struct, in bits.
    bit_off: u64,
    /// Bit-field width; 0 for an ordinary member.
    bits: u32,
}

/// Result of stripping typedef/const/volatile/restrict/type tags.
enum Stripped<'a> {
    Void,
    Type(&'a TypeVariant),
    /// Unknown type id or an indirection loop (malformed BTF).
    Broken,
}

struct Btf<'a> {
    types: &'a BTreeMap<u32, TypeVariant>,
    structs: HashMap<&'a str, u32>,
    funcs: HashMap<&'a str, u32>,
    kernel: &'a str,
}

impl<'a> Btf<'a> {
    fn new(types: &'a BTreeMap<u32, TypeVariant>, kernel: &'a str) -> Btf<'a> {
        let mut structs = HashMap::new();
        let mut funcs = HashMap::new();
        for (&tid, t) in types {
            match t {
                TypeVariant::Struct(s) => {
                    if let Some(name) = s.name().as_deref() {
                        structs.entry(name).or_insert(tid);
                    }
                }
                TypeVariant::Func(f) => {
                    if let Some(name) = f.name().as_deref() {
                        funcs.entry(name).or_insert(tid);
                    }
                }
                _ => {}
            }
        }
        Btf {
            types,
            structs,
            funcs,
            kernel,
        }
    }

    fn strip(&self, mut tid: u32) -> Stripped<'a> {
        for _ in 0..MAX_DEPTH {
            if tid == 0 {
                return Stripped::Void;
            }
            let Some(t) = self.types.get(&tid) else {
                return Stripped::Broken;
            };
            tid = match t {
                TypeVariant::Typedef(x) => *x.tid(),
                TypeVariant::Const(x) => *x.tid(),
                TypeVariant::Volatile(x) => *x.tid(),
                TypeVariant::Restrict(x) => *x.tid(),
                TypeVariant::TypeTag(x) => *x.tid(),
                _ => return Stripped::Type(t),
            };
        }
        Stripped::Broken
    }

    /// A short description of a type for error messages.
    fn describe(&self, tid: u32) -> String {
        match self.strip(tid) {
            Stripped::Void => "void".to_string(),
            Stripped::Broken => format!("an invalid type (id {tid})"),
            Stripped::Type(t) => match t {
                TypeVariant::Int(i) => format!("a {}-byte integer", i.size()),
                TypeVariant::Ptr(_) => "a pointer".to_string(),
                TypeVariant::Array(a) => format!("an array of {} elements", a.element_count()),
                TypeVariant::Struct(s) => {
                    format!("struct {}", s.name().as_deref().unwrap_or("(anonymous)"))
                }
                TypeVariant::Union(u) => {
                    format!("union {}", u.name().as_deref().unwrap_or("(anonymous)"))
                }
                TypeVariant::Enum(e) => format!("a {}-byte enum", e.size()),
                TypeVariant::Enum64(e) => format!("a {}-byte enum", e.size()),
                TypeVariant::Fwd(_) => "an incomplete (forward-declared) type".to_string(),
                other => format!("{other:?}")
                    .split('(')
                    .next()
                    .unwrap_or("another kind of type")
                    .to_string(),
            },
        }
    }

    fn struct_id(&self, strukt: &str) -> Result<u32, LayoutError> {
        self.structs
            .get(strukt)
            .copied()
            .ok_or_else(|| LayoutError::MissingStruct {
                strukt: strukt.to_string(),
                kernel: self.kernel.to_string(),
            })
    }

    fn has_struct(&self, strukt: &str) -> bool {
        self.structs.contains_key(strukt)
    }

    /// Finds member `name` in struct/union `tid`, looking into anonymous members too.
    /// Returns (member type id, bit offset from `tid`'s start, bit-field width).
    /// `budget` bounds the number of structs visited (malformed BTF can nest a struct in
    /// itself several times over).
    fn find_member(
        &self,
        tid: u32,
        name: &str,
        depth: usize,
        budget: &mut usize,
    ) -> Option<(u32, u64, u32)> {
        if depth > MAX_DEPTH || *budget == 0 {
            return None;
        }
        *budget -= 1;
        let members = match self.strip(tid) {
            Stripped::Type(TypeVariant::Struct(s)) => s.member_list(),
            Stripped::Type(TypeVariant::Union(u)) => u.member_list(),
            _ => return None,
        };
        let split = |off: Offset| match off {
            Offset::ByteOffset(b) => (u64::from(b) * 8, 0),
            Offset::BitOffsetAndSize(bit, size) => (u64::from(bit), size),
        };
        for mem in members {
            if mem.name().as_deref() == Some(name) {
                let (bit, size) = split(mem.offset());
                return Some((mem.tid(), bit, size));
            }
        }
        for mem in members
            .iter()
            .filter(|mem| mem.name().is_none_or(|n| n.is_empty()))
        {
            let (bit, _) = split(mem.offset());
            if let Some((t, inner, size)) = self.find_member(mem.tid(), name, depth + 1, budget) {
                return Some((t, bit + inner, size));
            }
        }
        None
    }

    fn missing(&self, strukt: &str, field: &str) -> LayoutError {
        LayoutError::MissingField {
            strukt: strukt.to_string(),
            field: field.to_string(),
            kernel: self.kernel.to_string(),
        }
    }

    fn unexpected(&self, strukt: &str, field: &str, expected: &str, found: String) -> LayoutError {
        LayoutError::UnexpectedType {
            strukt: strukt.to_string(),
            field: field.to_string(),
            kernel: self.kernel.to_string(),
            expected: expected.to_string(),
            found,
        }
    }

    /// Resolves a dotted member path (`ipv4.tcp_death_row.hashinfo`) inside `strukt`.
    /// Every intermediate member must be an embedded struct/union (not a pointer).
    fn field(&self, strukt: &str, path: &str) -> Result<Field, LayoutError> {
        let mut tid = self.struct_id(strukt)?;
        let mut bit_off = 0u64;
        let mut bits = 0u32;
        let parts: Vec<&str> = path.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                let so_far = parts[..i].join(".");
                if bits != 0 {
                    return Err(self.unexpected(
                        strukt,
                        &so_far,
                        "an embedded struct",
                        format!("a {bits}-bit bit field"),
                    ));
                }
                match self.strip(tid) {
                    Stripped::Type(TypeVariant::Struct(_) | TypeVariant::Union(_)) => {}
                    _ => {
                        return Err(self.unexpected(
                            strukt,
                            &so_far,
                            "an embedded struct",
                            self.describe(tid),
                        ))
                    }
                }
            }
            let mut budget = MEMBER_SEARCH_BUDGET;
            let (t, off, size) = self
                .find_member(tid, part, 0, &mut budget)
                .ok_or_else(|| self.missing(strukt, &parts[..=i].join(".")))?;
            tid = t;
            bit_off += off;
            bits = size;
        }
        // The old bit-field encoding: an INT whose own offset/bits narrow the member.
        if bits == 0 {
            if let Stripped::Type(TypeVariant::Int(int)) = self.strip(tid) {
                if *int.offset() != 0 || *int.bits() != int.size() * 8 {
                    bit_off += *int.offset() as u64;
                    bits = *int.bits() as u32;
                }
            }
        }
        Ok(Field { tid, bit_off, bits })
    }

    fn byte_offset(&self, strukt: &str, path: &str, f: Field) -> Result<u32, LayoutError> {
        if f.bits != 0 || !f.bit_off.is_multiple_of(8) {
            return Err(self.unexpected(
                strukt,
                path,
                "a byte-aligned member",
                format!("a {}-bit bit field", f.bits),
            ));
        }
        match u32::try_from(f.bit_off / 8) {
            Ok(off) if off != NO_FIELD => Ok(off),
            _ => Err(self.unexpected(
                strukt,
                path,
                "an offset below 4 GiB",
                format!("at byte {}", f.bit_off / 8),
            )),
        }
    }

    /// Byte offset of a member that must be a pointer.
    fn ptr_offset(&self, strukt: &str, path: &str) -> Result<u32, LayoutError> {
        let f = self.field(strukt, path)?;
        match self.strip(f.tid) {
            Stripped::Type(TypeVariant::Ptr(_)) => self.byte_offset(strukt, path, f),
            _ => Err(self.unexpected(strukt, path, "a pointer", self.describe(f.tid))),
        }
    }

    /// Byte offset of an integer member of the given sizes; returns (offset, size).
    fn int_offset(
        &self,
        strukt: &str,
        path: &str,
        sizes: &[usize],
    ) -> Result<(u32, usize), LayoutError> {
        let f = self.field(strukt, path)?;
        let want = || {
            let list: Vec<String> = sizes.iter().map(|s| s.to_string()).collect();
            format!("a {}-byte integer", list.join(" or "))
        };
        let size = match self.strip(f.tid) {
            Stripped::Type(TypeVariant::Int(i)) => *i.size(),
            Stripped::Type(TypeVariant::Enum(e)) => *e.size(),
            _ => return Err(self.unexpected(strukt, path, &want(), self.describe(f.tid))),
        };
        if f.bits != 0 {
            return Err(self.unexpected(
                strukt,
                path,
                &want(),
                format!("a {}-bit bit field", f.bits),
            ));
        }
        if !sizes.contains(&size) {
            return Err(self.unexpected(strukt, path, &want(), self.describe(f.tid)));
        }
        Ok((self.byte_offset(strukt, path, f)?, size))
    }

    /// Byte offset of an embedded struct member (a list head, an address...).
    fn struct_offset(&self, strukt: &str, path: &str) -> Result<u32, LayoutError> {
        let f = self.field(strukt, path)?;
        match self.strip(f.tid) {
            Stripped::Type(TypeVariant::Struct(_) | TypeVariant::Union(_)) => {
                self.byte_offset(strukt, path, f)
            }
            _ => Err(self.unexpected(strukt, path, "an embedded struct", self.describe(f.tid))),
        }
    }

    /// `Ok(None)` when the member is absent; other errors are kept.
    fn optional<T>(&self, r: Result<T, LayoutError>) -> Result<Option<T>, LayoutError> {
        match r {
            Ok(v) => Ok(Some(v)),
            Err(LayoutError::MissingField { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A bit field, or a plain integer member read as one (width = its size in bits).
    fn bitfield(&self, strukt: &str, path: &str) -> Result<BitField, LayoutError> {
        let f = self.field(strukt, path)?;
        let (bit_off, width) = if f.bits != 0 {
            (f.bit_off, u64::from(f.bits))
        } else {
            let size = match self.strip(f.tid) {
                Stripped::Type(TypeVariant::Int(i)) => *i.size(),
                Stripped::Type(TypeVariant::Enum(e)) => *e.size(),
                _ => {
                    return Err(self.unexpected(
                        strukt,
                        path,
                        "an integer or a bit field",
                        self.describe(f.tid),
                    ))
                }
            };
            (f.bit_off, (size as u64) * 8)
        };
        let shift = bit_off % 8;
        if width == 0 || shift + width > 64 {
            return Err(self.unexpected(
                strukt,
                path,
                "a field of at most 64 bits",
                format!("{width} bits at bit {shift}"),
            ));
        }
        let byte_off = u32::try_from(bit_off / 8)
            .ok()
            .filter(|&b| b != NO_FIELD)
            .ok_or_else(|| {
                self.unexpected(
                    strukt,
                    path,
                    "an offset below 4 GiB",
                    format!("at byte {}", bit_off / 8),
                )
            })?;
        Ok(BitField {
            byte_off,
            shift: shift as u8,
            width: width as u8,
            _pad: [0; 2],
        })
    }

    /// Value of a named enumerator (ENUM or ENUM64).
    fn enumerator(&self, name: &str) -> Option<i128> {
        self.types.values().find_map(|t| match t {
            TypeVariant::Enum(e) => e
                .named_value_list()
                .iter()
                .find(|v| v.name == name)
                .map(|v| match v.value {
                    btfparse::Integer32Value::Signed(x) => i128::from(x),
                    btfparse::Integer32Value::Unsigned(x) => i128::from(x),
                }),
            TypeVariant::Enum64(e) => {
                e.named_value_list()
                    .iter()
                    .find(|v| v.name == name)
                    .map(|v| match v.value {
                        btfparse::Integer64Value::Signed(x) => i128::from(x),
                        btfparse::Integer64Value::Unsigned(x) => i128::from(x),
                    })
            }
            _ => None,
        })
    }

    /// Parameter names of a BTF FUNC, `None` when absent (or without a usable prototype).
    fn func_params(&self, name: &str) -> Option<Vec<String>> {
        let tid = *self.funcs.get(name)?;
        let TypeVariant::Func(f) = self.types.get(&tid)? else {
            return None;
        };
        match self.strip(*f.prototype_tid()) {
            Stripped::Type(TypeVariant::FuncProto(p)) => Some(
                p.parameter_list()
                    .iter()
                    .map(|param| param.name().unwrap_or_default())
                    .collect(),
            ),
            _ => None,
        }
    }

    fn resolve(&self) -> Result<Resolved, LayoutError> {
        let mut l = Layout::UNSET;

        // fd -> socket -> sock
        l.task_files = self.ptr_offset("task_struct", "files")?;
        l.files_fdt = self.ptr_offset("files_struct", "fdt")?;
        l.fdt_max_fds = self.int_offset("fdtable", "max_fds", &[4])?.0;
        l.fdt_fd = self.ptr_offset("fdtable", "fd")?;
        l.file_private_data = self.ptr_offset("file", "private_data")?;
        l.socket_sk = self.ptr_offset("socket", "sk")?;
        l.socket_file = self.ptr_offset("socket", "file")?;
        l.task_nsproxy = self.ptr_offset("task_struct", "nsproxy")?;
        l.nsproxy_net_ns = self.ptr_offset("nsproxy", "net_ns")?;

        // struct net
        l.net_ns_inum = self.int_offset("net", "ns.inum", &[4])?.0;
        l.net_hash_mix = self.int_offset("net", "hash_mix", &[4])?.0;
        l.net_hashinfo = self.ptr_offset("net", "ipv4.tcp_death_row.hashinfo")?;
        let range = self.field("net", "ipv4.ip_local_ports.range")?;
        l.net_port_range = self.byte_offset("net", "ipv4.ip_local_ports.range", range)?;
        l.port_range_packed = match self.strip(range.tid) {
            Stripped::Type(TypeVariant::Int(i)) if *i.size() == 4 => 1,
            Stripped::Type(TypeVariant::Array(a))
                if *a.element_count() == 2 && self.int_size(*a.element_tid()) == Some(4) =>
            {
                0
            }
            _ => {
                return Err(self.unexpected(
                    "net",
                    "ipv4.ip_local_ports.range",
                    "a 4-byte integer (lo | hi << 16) or int[2]",
                    self.describe(range.tid),
                ))
            }
        };

        // struct inet_hashinfo / inet_bind_hashbucket
        l.hashinfo_bhash = self.ptr_offset("inet_hashinfo", "bhash")?;
        l.hashinfo_bhash_size = self.int_offset("inet_hashinfo", "bhash_size", &[4])?.0;
        let hb = self.struct_id("inet_bind_hashbucket")?;
        l.bind_hashbucket_size = match self.strip(hb) {
            Stripped::Type(TypeVariant::Struct(s)) => u32::try_from(*s.size()).unwrap_or(0),
            _ => 0,
        };
        if l.bind_hashbucket_size == 0 {
            return Err(self.unexpected(
                "inet_bind_hashbucket",
                "(size)",
                "a non-zero size",
                "size 0".to_string(),
            ));
        }
        l.bind_hashbucket_chain = self.struct_offset("inet_bind_hashbucket", "chain")?;

        // struct sock (sock_common is its first member)
        l.sk_family = self.int_offset("sock", "__sk_common.skc_family", &[2])?.0;
        l.sk_state = self.int_offset("sock", "__sk_common.skc_state", &[1])?.0;
        l.sk_num = self.int_offset("sock", "__sk_common.skc_num", &[2])?.0;
        l.sk_dport = self.int_offset("sock", "__sk_common.skc_dport", &[2])?.0;
        l.sk_rcv_saddr = self
            .int_offset("sock", "__sk_common.skc_rcv_saddr", &[4])?
            .0;
        l.sk_daddr = self.int_offset("sock", "__sk_common.skc_daddr", &[4])?.0;
        l.sk_v6_rcv_saddr = self.struct_offset("sock", "__sk_common.skc_v6_rcv_saddr")?;
        l.sk_v6_daddr = self.struct_offset("sock", "__sk_common.skc_v6_daddr")?;
        l.sk_net = self.ptr_offset("sock", "__sk_common.skc_net.net")?;
        l.sk_bind_node = self.struct_offset("sock", "__sk_common.skc_bind_node")?;
        let (proto_off, proto_size) = self.int_offset("sock", "sk_protocol", &[1, 2, 4])?;
        l.sk_protocol = proto_off;
        l.sk_protocol_size = proto_size as u32;
        l.sk_type = self.int_offset("sock", "sk_type", &[2])?.0;
        l.sk_socket = self.ptr_offset("sock", "sk_socket")?;
        l.sk_userlocks = self.bitfield("sock", "sk_userlocks")?;
        l.sk_reuse = self.bitfield("sock", "__sk_common.skc_reuse")?;
        l.sk_reuseport = self.bitfield("sock", "__sk_common.skc_reuseport")?;

        // struct inet_sock: bind_address_no_port bit field, or a bit of inet_flags.
        let bind_address_no_port =
            match self.optional(self.bitfield("inet_sock", "bind_address_no_port"))? {
                Some(b) => {
                    l.inet_bind_address_no_port = b;
                    NoPortSource::BitField
                }
                None => {
                    let flags = self.field("inet_sock", "inet_flags").map_err(|e| match e {
                        LayoutError::MissingField { .. } => {
                            self.missing("inet_sock", "bind_address_no_port` or `inet_flags")
                        }
                        other => other,
                    })?;
                    let word = self.byte_offset("inet_sock", "inet_flags", flags)?;
                    let width = self.int_size(flags.tid).ok_or_else(|| {
                        self.unexpected(
                            "inet_sock",
                            "inet_flags",
                            "an integer",
                            self.describe(flags.tid),
                        )
                    })?;
                    const BIT: &str = "INET_FLAGS_BIND_ADDRESS_NO_PORT";
                    let bit =
                        self.enumerator(BIT)
                            .ok_or_else(|| LayoutError::MissingEnumerator {
                                name: BIT.to_string(),
                                kernel: self.kernel.to_string(),
                            })?;
                    if bit < 0 || bit >= (width as i128) * 8 || bit >= 64 {
                        return Err(self.unexpected(
                            "inet_sock",
                            "inet_flags",
                            &format!("an integer with a bit {bit} ({BIT})"),
                            self.describe(flags.tid),
                        ));
                    }
                    l.inet_bind_address_no_port = BitField {
                        byte_off: word,
                        shift: bit as u8,
                        width: 1,
                        _pad: [0; 2],
                    };
                    NoPortSource::InetFlags
                }
            };

        // struct inet_connection_sock
        l.icsk_bind_hash = self.ptr_offset("inet_connection_sock", "icsk_bind_hash")?;
        l.icsk_bind2_hash = self
            .optional(self.ptr_offset("inet_connection_sock", "icsk_bind2_hash"))?
            .unwrap_or(NO_FIELD);

        // struct inet_bind_bucket
        const TB: &str = "inet_bind_bucket";
        l.tb_net = self.ptr_offset(TB, "ib_net.net")?;
        l.tb_l3mdev = self.int_offset(TB, "l3mdev", &[4])?.0;
        l.tb_port = self.int_offset(TB, "port", &[2])?.0;
        l.tb_fastreuse = self.int_offset(TB, "fastreuse", &[1])?.0;
        l.tb_fastreuseport = self.int_offset(TB, "fastreuseport", &[1])?.0;
        l.tb_node = self.struct_offset(TB, "node")?;
        l.tb_owners = self
            .optional(self.struct_offset(TB, "owners"))?
            .unwrap_or(NO_FIELD);
        l.tb_bhash2 = self
            .optional(self.struct_offset(TB, "bhash2"))?
            .unwrap_or(NO_FIELD);

        // struct inet_bind2_bucket (absent before 6.1)
        const TB2: &str = "inet_bind2_bucket";
        let mut tb2_family = Tb2Family::Absent;
        if self.has_struct(TB2) {
            l.tb2_bhash_node = self
                .optional(self.struct_offset(TB2, "bhash_node"))?
                .unwrap_or(NO_FIELD);
            l.tb2_owners = self
                .optional(self.struct_offset(TB2, "owners"))?
                .unwrap_or(NO_FIELD);
            l.tb2_deathrow = self
                .optional(self.struct_offset(TB2, "deathrow"))?
                .unwrap_or(NO_FIELD);
            l.tb2_fastreuse = self
                .optional(self.int_offset(TB2, "fastreuse", &[1]))?
                .map_or(NO_FIELD, |x| x.0);
            l.tb2_fastreuseport = self
                .optional(self.int_offset(TB2, "fastreuseport", &[1]))?
                .map_or(NO_FIELD, |x| x.0);
            if let Some((off, _)) = self.optional(self.int_offset(TB2, "family", &[2]))? {
                l.tb2_family = off;
                tb2_family = Tb2Family::Family;
            } else if let Some((off, _)) = self.optional(self.int_offset(TB2, "addr_type", &[2]))? {
                l.tb2_family = off;
                tb2_family = Tb2Family::AddrType;
            }
            l.tb2_v6_rcv_saddr = self
                .optional(self.struct_offset(TB2, "v6_rcv_saddr"))?
                .unwrap_or(NO_FIELD);
            l.tb2_rcv_saddr = self
                .optional(self.int_offset(TB2, "rcv_saddr", &[4]))?
                .map_or(NO_FIELD, |x| x.0);
        }

        let owners_mode = if l.tb_owners != NO_FIELD {
            l.owners_mode = OWNERS_ON_TB;
            "each bind bucket has its own owner list (inet_bind_bucket.owners, kernels up to 6.7)"
                .to_string()
        } else if l.tb_bhash2 != NO_FIELD
            && l.tb2_owners != NO_FIELD
            && l.tb2_bhash_node != NO_FIELD
        {
            l.owners_mode = OWNERS_ON_TB2;
            "inet_bind_bucket has no owner list (removed in 6.8): owners of a port are the sum of \
             inet_bind2_bucket.owners over inet_bind_bucket.bhash2"
                .to_string()
        } else {
            let detail = if l.tb_bhash2 == NO_FIELD {
                "struct inet_bind_bucket has neither `owners` nor `bhash2`".to_string()
            } else if l.tb2_owners == NO_FIELD {
                "struct inet_bind_bucket has `bhash2` but no `owners`, and struct inet_bind2_bucket has no `owners`".to_string()
            } else {
                "struct inet_bind_bucket has `bhash2` but struct inet_bind2_bucket has no `bhash_node` to walk it".to_string()
            };
            return Err(LayoutError::NoOwnerList {
                kernel: self.kernel.to_string(),
                detail,
            });
        };
        l.valid = 1;

        let functions: BTreeMap<String, Option<Vec<String>>> = TRACKED_FUNCTIONS
            .iter()
            .map(|&name| (name.to_string(), self.func_params(name)))
            .collect();
        let update_fastreuse = functions
            .get("inet_csk_update_fastreuse")
            .and_then(|p| p.clone())
            .map(UpdateFastreuse::from_params);

        Ok(Resolved {
            layout: l,
            kernel_release: self.kernel.to_string(),
            owners_mode,
            tb2_family,
            bind_address_no_port,
            update_fastreuse,
            functions,
        })
    }

    /// Size in bytes of an integer (or enum) type.
    fn int_size(&self, tid: u32) -> Option<usize> {
        match self.strip(tid) {
            Stripped::Type(TypeVariant::Int(i)) => Some(*i.size()),
            Stripped::Type(TypeVariant::Enum(e)) => Some(*e.size()),
            Stripped::Type(TypeVariant::Enum64(e)) => Some(*e.size()),
            _ => None,
        }
    }
}

#[cfg(test)]
#[path = "../tests/fixtures/btf/fake_kernel.rs"]
mod fake_kernel;

#[cfg(test)]
mod tests {
    use super::{
        fake_kernel::{bf, m, FakeKernel, Ty},
        *,
    };

    fn resolve(k: &FakeKernel, release: &str) -> Result<Resolved, LayoutError> {
        layout_from_btf_bytes(&k.encode(), release)
    }

    fn bit(byte_off: u32, shift: u8, width: u8) -> BitField {
        BitField {
            byte_off,
            shift,
            width,
            _pad: [0; 2],
        }
    }

    /// The layout the 6.18-like fake kernel must resolve to (offsets summed by hand from
    /// the preset in tests/fixtures/btf/fake_kernel.rs).
    fn expected_6_18() -> Layout {
        Layout {
            task_files: 2496,
            files_fdt: 32,
            fdt_max_fds: 0,
            fdt_fd: 8,
            file_private_data: 32,
            socket_sk: 24,
            socket_file: 16,
            task_nsproxy: 2512,
            nsproxy_net_ns: 40,
            net_ns_inum: 88 + 24,
            net_hash_mix: 200,
            net_hashinfo: 320 + 64 + 64,
            net_port_range: 320 + 680,
            port_range_packed: 1,
            hashinfo_bhash: 32,
            hashinfo_bhash_size: 56,
            bind_hashbucket_size: 16,
            bind_hashbucket_chain: 8,
            sk_family: 16,
            sk_state: 18,
            sk_num: 14,
            sk_dport: 12,
            sk_rcv_saddr: 4,
            sk_daddr: 0,
            sk_v6_rcv_saddr: 72,
            sk_v6_daddr: 56,
            sk_net: 48,
            sk_bind_node: 24,
            sk_protocol: 524,
            sk_protocol_size: 2,
            sk_type: 526,
            sk_socket: 280,
            sk_userlocks: bit(291, 0, 8),
            sk_reuse: bit(19, 0, 4),
            sk_reuseport: bit(19, 4, 1),
            inet_bind_address_no_port: bit(776, 18, 1),
            icsk_bind_hash: 1032,
            icsk_bind2_hash: 1040,
            tb_net: 0,
            tb_l3mdev: 8,
            tb_port: 12,
            tb_fastreuse: 14,
            tb_fastreuseport: 15,
            tb_node: 48,
            tb_owners: NO_FIELD,
            tb_bhash2: 64,
            tb2_bhash_node: 48,
            tb2_owners: 64,
            tb2_deathrow: NO_FIELD,
            tb2_fastreuse: 72,
            tb2_fastreuseport: 73,
            tb2_family: 14,
            tb2_v6_rcv_saddr: 16,
            tb2_rcv_saddr: NO_FIELD,
            owners_mode: OWNERS_ON_TB2,
            valid: 1,
        }
    }

    fn expected_6_1() -> Layout {
        Layout {
            task_files: 2840,
            task_nsproxy: 2848,
            file_private_data: 200,
            net_ns_inum: 120 + 16,
            net_hash_mix: 148,
            net_hashinfo: 384 + 128 + 64,
            net_port_range: 384 + 520 + 8,
            port_range_packed: 0,
            sk_protocol: 564,
            sk_type: 562,
            sk_socket: 608,
            sk_userlocks: bit(560, 4, 4),
            inet_bind_address_no_port: bit(828, 0, 1),
            icsk_bind_hash: 1000,
            icsk_bind2_hash: 1008,
            tb_owners: 64,
            tb_bhash2: NO_FIELD,
            tb2_bhash_node: NO_FIELD,
            tb2_owners: 48,
            tb2_deathrow: 56,
            tb2_fastreuse: NO_FIELD,
            tb2_fastreuseport: NO_FIELD,
            tb2_family: 14,
            tb2_v6_rcv_saddr: 16,
            tb2_rcv_saddr: 16,
            owners_mode: OWNERS_ON_TB,
            ..expected_6_18()
        }
    }

    #[test]
    fn fake_6_18_resolves_to_the_expected_layout() {
        let r = resolve(&FakeKernel::linux_6_18(), "6.18.0-fake").unwrap();
        assert_eq!(r.layout, expected_6_18());
        assert_eq!(r.kernel_release, "6.18.0-fake");
        assert_eq!(r.tb2_family, Tb2Family::AddrType);
        assert_eq!(r.bind_address_no_port, NoPortSource::InetFlags);
        assert!(
            r.owners_mode.contains("inet_bind2_bucket.owners"),
            "{}",
            r.owners_mode
        );
    }

    #[test]
    fn fake_6_1_resolves_to_the_expected_layout() {
        let r = resolve(&FakeKernel::linux_6_1(), "6.1.0-fake").unwrap();
        assert_eq!(r.layout, expected_6_1());
        assert_eq!(r.tb2_family, Tb2Family::Family);
        assert_eq!(r.bind_address_no_port, NoPortSource::BitField);
        assert!(
            r.owners_mode.contains("inet_bind_bucket.owners"),
            "{}",
            r.owners_mode
        );
    }

    #[test]
    fn functions_and_update_fastreuse_signature() {
        let new = resolve(&FakeKernel::linux_6_18(), "6.18").unwrap();
        let uf = new.update_fastreuse.clone().unwrap();
        assert_eq!(uf.params, ["sk", "tb", "tb2"]);
        assert_eq!((uf.sk, uf.tb, uf.tb2), (Some(0), Some(1), Some(2)));
        assert_eq!(new.functions.len(), TRACKED_FUNCTIONS.len());
        assert!(new.has_function("inet_twsk_hashdance_schedule"));
        assert!(!new.has_function("inet_twsk_hashdance"));
        assert_eq!(new.functions["inet_twsk_hashdance"], None);
        assert_eq!(
            new.function_params("inet_csk_get_port"),
            Some(&["sk".to_string(), "snum".to_string()][..])
        );
        assert_eq!(
            new.function_params("__inet_inherit_port").map(|p| p.len()),
            Some(2)
        );
        // Untracked functions are not reported.
        assert!(!new.functions.contains_key("tcp_v4_connect"));

        let old = resolve(&FakeKernel::linux_6_1(), "6.1").unwrap();
        let uf = old.update_fastreuse.clone().unwrap();
        assert_eq!(uf.params, ["tb", "sk"]);
        assert_eq!((uf.sk, uf.tb, uf.tb2), (Some(1), Some(0), None));
        assert!(old.has_function("inet_twsk_hashdance"));
        assert!(!old.has_function("inet_twsk_hashdance_schedule"));
        assert_eq!(
            old.function_params("__inet_hash_connect").map(|p| p.len()),
            Some(4)
        );

        let mut k = FakeKernel::linux_6_18();
        k.funcs.retain(|f| f.name != "inet_csk_update_fastreuse");
        let r = resolve(&k, "6.18").unwrap();
        assert_eq!(r.update_fastreuse, None);
        assert!(!r.has_function("inet_csk_update_fastreuse"));
        assert!(r
            .describe()
            .iter()
            .any(|l| l == "function inet_csk_update_fastreuse: absent"));
    }

    #[test]
    fn renamed_field_is_a_missing_field_naming_it() {
        let mut k = FakeKernel::linux_6_18();
        k.rename_member("inet_bind_bucket", "port", "portnum");
        let err = resolve(&k, "6.18.44").unwrap_err();
        match &err {
            LayoutError::MissingField {
                strukt,
                field,
                kernel,
            } => {
                assert_eq!(
                    (strukt.as_str(), field.as_str(), kernel.as_str()),
                    ("inet_bind_bucket", "port", "6.18.44")
                );
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "struct inet_bind_bucket has no field `port` in the BTF of kernel 6.18.44: portwatch does \
             not know this kernel's bind table layout; please report it"
        );
    }

    #[test]
    fn renamed_nested_and_anonymous_fields_name_the_full_path() {
        // A member inside an anonymous struct inside an anonymous union of sock_common.
        let mut k = FakeKernel::linux_6_1();
        k.rename_member("sock_common", "skc_num", "skc_number");
        assert!(matches!(resolve(&k, "x").unwrap_err(),
            LayoutError::MissingField { strukt, field, .. } if strukt == "sock" && field == "__sk_common.skc_num"));

        let mut k = FakeKernel::linux_6_18();
        k.rename_member("ns_common", "inum", "ino");
        assert!(matches!(resolve(&k, "x").unwrap_err(),
            LayoutError::MissingField { strukt, field, .. } if strukt == "net" && field == "ns.inum"));

        let mut k = FakeKernel::linux_6_18();
        k.remove_member("inet_timewait_death_row", "hashinfo");
        assert!(matches!(resolve(&k, "x").unwrap_err(),
            LayoutError::MissingField { strukt, field, .. } if strukt == "net" && field == "ipv4.tcp_death_row.hashinfo"));

        let mut k = FakeKernel::linux_6_18();
        k.remove_member("net", "ipv4");
        assert!(matches!(resolve(&k, "x").unwrap_err(),
            LayoutError::MissingField { strukt, field, .. } if strukt == "net" && field == "ipv4"));
    }

    #[test]
    fn tcp_death_row_as_a_pointer_is_a_clear_error() {
        let mut k = FakeKernel::linux_6_18();
        k.member_mut("netns_ipv4", "tcp_death_row").ty = Ty::Ptr("inet_timewait_death_row".into());
        let err = resolve(&k, "5.19.0").unwrap_err();
        match &err {
            LayoutError::UnexpectedType {
                strukt,
                field,
                found,
                ..
            } => {
                assert_eq!(strukt, "net");
                assert_eq!(field, "ipv4.tcp_death_row");
                assert_eq!(found, "a pointer");
            }
            other => panic!("unexpected error {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("`net.ipv4.tcp_death_row`")
                && msg.contains("5.19.0")
                && msg.contains("embedded struct"),
            "{msg}"
        );
    }

    #[test]
    fn missing_struct_is_named() {
        let mut k = FakeKernel::linux_6_18();
        k.remove_struct("inet_bind_hashbucket");
        assert!(matches!(resolve(&k, "x").unwrap_err(),
            LayoutError::MissingStruct { strukt, .. } if strukt == "inet_bind_hashbucket"));
    }

    #[test]
    fn no_owner_list_is_an_error() {
        let mut k = FakeKernel::linux_6_18();
        k.remove_member("inet_bind2_bucket", "owners");
        let err = resolve(&k, "6.18").unwrap_err();
        assert!(
            matches!(&err, LayoutError::NoOwnerList { detail, .. } if detail.contains("inet_bind2_bucket has no `owners`")),
            "{err}"
        );

        let mut k = FakeKernel::linux_6_1();
        k.remove_member("inet_bind_bucket", "owners");
        let err = resolve(&k, "6.1").unwrap_err();
        assert!(
            matches!(&err, LayoutError::NoOwnerList { detail, .. } if detail.contains("neither")),
            "{err}"
        );

        let mut k = FakeKernel::linux_6_18();
        k.remove_member("inet_bind2_bucket", "bhash_node");
        assert!(matches!(
            resolve(&k, "6.18").unwrap_err(),
            LayoutError::NoOwnerList { .. }
        ));
    }

    #[test]
    fn kernel_without_bhash2_has_no_tb2_fields() {
        // Before 6.1: no inet_bind2_bucket, no icsk_bind2_hash.
        let mut k = FakeKernel::linux_6_1();
        k.remove_struct("inet_bind2_bucket");
        k.remove_member("inet_connection_sock", "icsk_bind2_hash");
        let r = resolve(&k, "5.15").unwrap();
        let l = r.layout;
        assert_eq!(r.tb2_family, Tb2Family::Absent);
        assert_eq!(l.icsk_bind2_hash, NO_FIELD);
        for off in [
            l.tb2_bhash_node,
            l.tb2_owners,
            l.tb2_deathrow,
            l.tb2_fastreuse,
            l.tb2_fastreuseport,
            l.tb2_family,
            l.tb2_v6_rcv_saddr,
            l.tb2_rcv_saddr,
        ] {
            assert_eq!(off, NO_FIELD);
        }
        assert_eq!(l.owners_mode, OWNERS_ON_TB);
        assert_eq!(l.tb_owners, 64);
    }

    #[test]
    fn sk_protocol_bit_field_is_rejected() {
        // Long ago: `unsigned int sk_protocol:8` inside a bit-field word.
        let mut k = FakeKernel::linux_6_18();
        *k.member_mut("sock", "sk_protocol") = bf("sk_protocol", Ty::U32, 524 * 8 + 8, 8);
        let err = resolve(&k, "4.4").unwrap_err();
        assert!(
            matches!(&err, LayoutError::UnexpectedType { field, found, .. }
            if field == "sk_protocol" && found == "a 8-bit bit field"),
            "{err}"
        );
    }

    #[test]
    fn sk_userlocks_plain_or_bit_field_or_old_int_encoding() {
        // 6.18 preset: plain u8. A `u8 sk_userlocks:8` bit field reads the same.
        let mut k = FakeKernel::linux_6_18();
        *k.member_mut("sock", "sk_userlocks") = bf("sk_userlocks", Ty::U8, 291 * 8, 8);
        assert_eq!(
            resolve(&k, "x").unwrap().layout.sk_userlocks,
            bit(291, 0, 8)
        );
        // A bit field straddling a byte boundary keeps its containing byte and shift.
        *k.member_mut("sock", "sk_userlocks") = bf("sk_userlocks", Ty::U32, 288 * 8 + 29, 6);
        assert_eq!(
            resolve(&k, "x").unwrap().layout.sk_userlocks,
            bit(291, 5, 6)
        );
        // The pre-kind_flag encoding: the INT itself carries bit offset and size.
        *k.member_mut("sock", "sk_userlocks") = m("sk_userlocks", Ty::OldBitInt(1, 4, 4), 560);
        assert_eq!(
            resolve(&k, "x").unwrap().layout.sk_userlocks,
            bit(560, 4, 4)
        );
        // A pointer is not a bit field.
        *k.member_mut("sock", "sk_userlocks") = m("sk_userlocks", Ty::Ptr(String::new()), 560);
        assert!(
            matches!(resolve(&k, "x").unwrap_err(), LayoutError::UnexpectedType { field, .. } if field == "sk_userlocks")
        );
    }

    #[test]
    fn inet_flags_needs_its_enumerator() {
        let mut k = FakeKernel::linux_6_18();
        k.enums[0]
            .values
            .retain(|(n, _)| n != "INET_FLAGS_BIND_ADDRESS_NO_PORT");
        assert!(matches!(resolve(&k, "x").unwrap_err(),
            LayoutError::MissingEnumerator { name, .. } if name == "INET_FLAGS_BIND_ADDRESS_NO_PORT"));

        let mut k = FakeKernel::linux_6_18();
        k.enums[0]
            .values
            .iter_mut()
            .filter(|(n, _)| n == "INET_FLAGS_BIND_ADDRESS_NO_PORT")
            .for_each(|v| v.1 = 3);
        assert_eq!(
            resolve(&k, "x").unwrap().layout.inet_bind_address_no_port,
            bit(776, 3, 1)
        );

        let mut k = FakeKernel::linux_6_18();
        k.enums[0]
            .values
            .iter_mut()
            .filter(|(n, _)| n == "INET_FLAGS_BIND_ADDRESS_NO_PORT")
            .for_each(|v| v.1 = 64);
        assert!(
            matches!(resolve(&k, "x").unwrap_err(), LayoutError::UnexpectedType { field, .. } if field == "inet_flags")
        );

        let mut k = FakeKernel::linux_6_18();
        k.remove_member("inet_sock", "inet_flags");
        let err = resolve(&k, "x").unwrap_err();
        assert!(
            err.to_string()
                .contains("bind_address_no_port` or `inet_flags"),
            "{err}"
        );
    }

    #[test]
    fn port_range_of_unknown_shape_is_rejected() {
        let mut k = FakeKernel::linux_6_18();
        k.member_mut("local_ports", "range").ty = Ty::U64;
        assert!(matches!(resolve(&k, "x").unwrap_err(),
            LayoutError::UnexpectedType { field, found, .. } if field == "ipv4.ip_local_ports.range" && found == "a 8-byte integer"));
        k.member_mut("local_ports", "range").ty = Ty::Array(Box::new(Ty::Int), 3);
        assert!(matches!(
            resolve(&k, "x").unwrap_err(),
            LayoutError::UnexpectedType { .. }
        ));
    }

    #[test]
    fn truncated_btf_is_an_error_never_a_panic() {
        let bytes = FakeKernel::linux_6_18().encode();
        assert!(layout_from_btf_bytes(&bytes, "x").is_ok());
        for len in 0..bytes.len() {
            let r = layout_from_btf_bytes(&bytes[..len], "x");
            assert!(
                matches!(r, Err(LayoutError::InvalidBtf { .. })),
                "prefix of {len} bytes: {r:?}"
            );
        }
    }

    #[test]
    fn corrupted_headers_are_errors() {
        let good = FakeKernel::linux_6_1().encode();
        let mut bad_magic = good.clone();
        bad_magic[0] = 0;
        let mut bad_version = good.clone();
        bad_version[2] = 7;
        let mut huge_type_len = good.clone();
        huge_type_len[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut huge_str_off = good.clone();
        huge_str_off[16..20].copy_from_slice(&(u32::MAX - 3).to_le_bytes());
        let mut huge_hdr = good.clone();
        huge_hdr[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        for (what, b) in [
            ("magic", bad_magic),
            ("version", bad_version),
            ("type_len", huge_type_len),
            ("str_off", huge_str_off),
            ("hdr_len", huge_hdr),
        ] {
            let err = layout_from_btf_bytes(&b, "x").unwrap_err();
            assert!(
                matches!(err, LayoutError::InvalidBtf { .. }),
                "{what}: {err:?}"
            );
            assert!(err.to_string().contains(VMLINUX_BTF), "{err}");
        }
        // A bad kind in the first type header.
        let mut bad_kind = good.clone();
        bad_kind[24 + 7] = 0x1f;
        assert!(matches!(
            layout_from_btf_bytes(&bad_kind, "x"),
            Err(LayoutError::InvalidBtf { .. })
        ));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Random byte changes anywhere (header, types, strings): Ok or Err, never a
        /// panic or hang (type loops and deep nesting are bounded).
        #[test]
        fn random_corruption_never_panics(
            edits in proptest::collection::vec((0usize..100_000, proptest::prelude::any::<u8>()), 1..8),
            old in proptest::prelude::any::<bool>(),
        ) {
            let mut bytes = if old { FakeKernel::linux_6_1().encode() } else { FakeKernel::linux_6_18().encode() };
            for (at, v) in edits {
                let i = at % bytes.len();
                bytes[i] = v;
            }
            let _ = layout_from_btf_bytes(&bytes, "x");
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let mut with_magic = bytes.clone();
            if with_magic.len() >= 3 {
                with_magic[0] = 0x9f;
                with_magic[1] = 0xeb;
                with_magic[2] = 1;
            }
            proptest::prop_assert!(layout_from_btf_bytes(&bytes, "x").is_err() || bytes.len() >= 24);
            let _ = layout_from_btf_bytes(&with_magic, "x");
        }
    }

    #[test]
    fn type_loops_are_errors_not_hangs() {
        // typedef a -> typedef b -> typedef a, used as the type of task_struct.files.
        use super::fake_kernel::{BtfEncoder, RawMember};
        let mut enc = BtfEncoder::new();
        let a = enc.reserve();
        let b = enc.typedef("b", a);
        let name = enc.str("a");
        let mut raw = Vec::new();
        raw.extend_from_slice(&name.to_le_bytes());
        raw.extend_from_slice(&(super::fake_kernel::KIND_TYPEDEF << 24).to_le_bytes());
        raw.extend_from_slice(&b.to_le_bytes());
        enc.fill(a, raw);
        enc.struct_(
            "task_struct",
            8,
            &[RawMember {
                name: "files".into(),
                tid: a,
                bit_off: 0,
                bitfield: 0,
            }],
        );
        let err = layout_from_btf_bytes(&enc.finish(), "loop").unwrap_err();
        assert!(
            matches!(&err, LayoutError::UnexpectedType { field, found, .. }
            if field == "files" && found.contains("invalid type")),
            "{err:?}"
        );
    }

    #[test]
    fn self_containing_anonymous_members_are_bounded() {
        // An anonymous member whose type is its own struct: lookups must stop.
        use super::fake_kernel::{BtfEncoder, RawMember};
        let mut enc = BtfEncoder::new();
        let id = enc.reserve();
        let anon = |bit_off| RawMember {
            name: String::new(),
            tid: id,
            bit_off,
            bitfield: 0,
        };
        // Two self-references: a naive search would visit 2^depth structs.
        let bytes = enc.struct_bytes("task_struct", 8, &[anon(0), anon(32)], false);
        enc.fill(id, bytes);
        let err = layout_from_btf_bytes(&enc.finish(), "cycle").unwrap_err();
        assert!(
            matches!(&err, LayoutError::MissingField { strukt, field, .. } if strukt == "task_struct" && field == "files"),
            "{err:?}"
        );
    }

    #[test]
    fn missing_file_names_the_path_and_the_config_option() {
        let err = layout_from_btf_file(Path::new("/nonexistent/portwatch/vmlinux")).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, LayoutError::NoBtf { .. }));
        assert!(msg.contains("/nonexistent/portwatch/vmlinux"), "{msg}");
        assert!(msg.contains("CONFIG_DEBUG_INFO_BTF=y"), "{msg}");
        assert!(msg.contains(VMLINUX_BTF), "{msg}");
    }

    #[test]
    fn layout_from_a_btf_file() {
        let dir = std::env::temp_dir().join(format!("portwatch-btf-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("fake-6.18.btf");
        std::fs::write(&path, FakeKernel::linux_6_18().encode()).unwrap();
        let r = layout_from_btf_file(&path);
        std::fs::remove_dir_all(&dir).unwrap();
        let r = r.unwrap();
        assert_eq!(r.layout, expected_6_18());
        assert!(
            r.kernel_release.contains("fake-6.18.btf"),
            "{}",
            r.kernel_release
        );
    }

    // ---- the running kernel ------------------------------------------------------------

    /// Members of the first STRUCT/UNION of each name and enumerator values, parsed from
    /// `bpftool btf dump ... format raw` (an independent BTF reader).
    /// member name -> (bit offset, bit-field size)
    type Members = HashMap<String, (u64, u64)>;

    struct BpftoolDump {
        /// struct name -> (size, members)
        structs: HashMap<String, (u64, Members)>,
        enumerators: HashMap<String, i64>,
    }

    fn bpftool_dump() -> Option<BpftoolDump> {
        let out = match std::process::Command::new("bpftool")
            .args(["btf", "dump", "file", VMLINUX_BTF, "format", "raw"])
            .output()
        {
            Ok(o) if o.status.success() => o,
            Ok(o) => {
                eprintln!(
                    "skipping the bpftool comparison: bpftool failed: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                return None;
            }
            Err(e) => {
                eprintln!("skipping the bpftool comparison: bpftool is not available ({e}); install it with `apt-get install bpftool`");
                return None;
            }
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let mut structs = HashMap::new();
        let mut enumerators = HashMap::new();
        let mut current: Option<(String, u64, Members)> = None;
        let quoted = |s: &str| s.split('\'').nth(1).map(str::to_string);
        let num = |line: &str, key: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|v| v.parse::<i64>().ok())
        };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix('\t') {
                let name = quoted(rest).unwrap_or_default();
                if let Some((_, _, members)) = current.as_mut() {
                    if let Some(bits) = num(rest, "bits_offset=") {
                        let size = num(rest, "bitfield_size=").unwrap_or(0);
                        members.insert(name, (bits as u64, size as u64));
                    }
                } else if let Some(v) = num(rest, "val=") {
                    enumerators.entry(name).or_insert(v);
                }
                continue;
            }
            if let Some((name, size, members)) = current.take() {
                structs.entry(name).or_insert((size, members));
            }
            if line.contains("] STRUCT '") || line.contains("] UNION '") {
                let name = quoted(line).unwrap_or_default();
                let size = num(line, "size=").unwrap_or(0) as u64;
                current = Some((name, size, HashMap::new()));
            }
        }
        if let Some((name, size, members)) = current.take() {
            structs.entry(name).or_insert((size, members));
        }
        Some(BpftoolDump {
            structs,
            enumerators,
        })
    }

    impl BpftoolDump {
        fn bits(&self, strukt: &str, member: &str) -> (u64, u64) {
            *self
                .structs
                .get(strukt)
                .and_then(|(_, ms)| ms.get(member))
                .unwrap_or_else(|| panic!("bpftool: no {strukt}.{member}"))
        }
        fn byte(&self, strukt: &str, member: &str) -> u32 {
            let (bits, size) = self.bits(strukt, member);
            assert_eq!((bits % 8, size), (0, 0), "{strukt}.{member} is a bit field");
            (bits / 8) as u32
        }
    }

    #[test]
    fn host_layout_resolves_and_matches_bpftool() {
        if !Path::new(VMLINUX_BTF).exists() {
            eprintln!("skipping: {VMLINUX_BTF} is absent (kernel without CONFIG_DEBUG_INFO_BTF)");
            return;
        }
        let r = host_layout().unwrap();
        let l = r.layout;
        let release = std::fs::read_to_string(OSRELEASE).unwrap();
        assert_eq!(r.kernel_release, release.trim());
        assert_eq!(l.valid, 1);

        // Sanity that holds on any kernel.
        let distinct = |name: &str, offs: &[u32]| {
            let mut v = offs.to_vec();
            v.sort_unstable();
            v.dedup();
            assert_eq!(v.len(), offs.len(), "{name} offsets collide: {offs:?}");
            assert!(!offs.contains(&NO_FIELD), "{name}: {offs:?}");
        };
        distinct(
            "tb",
            &[
                l.tb_net,
                l.tb_l3mdev,
                l.tb_port,
                l.tb_fastreuse,
                l.tb_fastreuseport,
                l.tb_node,
            ],
        );
        distinct(
            "sk",
            &[
                l.sk_family,
                l.sk_state,
                l.sk_num,
                l.sk_dport,
                l.sk_rcv_saddr,
                l.sk_daddr,
                l.sk_v6_rcv_saddr,
                l.sk_v6_daddr,
                l.sk_net,
                l.sk_bind_node,
                l.sk_protocol,
                l.sk_type,
                l.sk_socket,
            ],
        );
        distinct("task", &[l.task_files, l.task_nsproxy]);
        distinct("socket", &[l.socket_sk, l.socket_file]);
        distinct(
            "net",
            &[
                l.net_ns_inum,
                l.net_hash_mix,
                l.net_hashinfo,
                l.net_port_range,
            ],
        );
        distinct("fdtable", &[l.fdt_max_fds, l.fdt_fd]);
        assert_eq!(l.tb_fastreuseport, l.tb_fastreuse + 1);
        assert_eq!(l.sk_protocol_size, 2);
        assert!(l.bind_hashbucket_size > l.bind_hashbucket_chain);
        assert!(l.icsk_bind_hash != NO_FIELD);
        for b in [
            l.sk_userlocks,
            l.sk_reuse,
            l.sk_reuseport,
            l.inet_bind_address_no_port,
        ] {
            assert!(
                b.byte_off != NO_FIELD
                    && b.width > 0
                    && u32::from(b.shift) + u32::from(b.width) <= 64,
                "{b:?}"
            );
        }
        assert_eq!((l.sk_reuse.width, l.sk_reuseport.width), (4, 1));
        assert!(r.has_function("inet_csk_get_port"));

        // What this project's 6.18 machines have (docs/kernel.md).
        if r.kernel_release.starts_with("6.18") {
            assert_eq!(l.owners_mode, OWNERS_ON_TB2);
            assert_eq!(l.tb_owners, NO_FIELD);
            assert_eq!(l.port_range_packed, 1);
            assert_ne!(l.tb2_fastreuse, NO_FIELD);
            assert_ne!(l.tb2_fastreuseport, NO_FIELD);
            assert_eq!(r.tb2_family, Tb2Family::AddrType);
            assert_eq!(r.bind_address_no_port, NoPortSource::InetFlags);
            let uf = r.update_fastreuse.clone().unwrap();
            assert_eq!(
                (uf.sk, uf.tb, uf.tb2),
                (Some(0), Some(1), Some(2)),
                "{uf:?}"
            );
        } else {
            eprintln!(
                "kernel {} is not 6.18: skipping the 6.18-specific expectations",
                r.kernel_release
            );
        }

        // Independent check: bpftool's own BTF reader.
        let Some(d) = bpftool_dump() else { return };
        assert_eq!(l.tb_port, d.byte("inet_bind_bucket", "port"));
        assert_eq!(l.tb_fastreuse, d.byte("inet_bind_bucket", "fastreuse"));
        assert_eq!(
            l.tb_fastreuseport,
            d.byte("inet_bind_bucket", "fastreuseport")
        );
        assert_eq!(l.tb_node, d.byte("inet_bind_bucket", "node"));
        assert_eq!(
            l.icsk_bind_hash,
            d.byte("inet_connection_sock", "icsk_bind_hash")
        );
        assert_eq!(l.hashinfo_bhash, d.byte("inet_hashinfo", "bhash"));
        assert_eq!(l.hashinfo_bhash_size, d.byte("inet_hashinfo", "bhash_size"));
        assert_eq!(
            u64::from(l.bind_hashbucket_size),
            d.structs["inet_bind_hashbucket"].0
        );
        assert_eq!(
            l.bind_hashbucket_chain,
            d.byte("inet_bind_hashbucket", "chain")
        );
        assert_eq!(l.task_files, d.byte("task_struct", "files"));
        assert_eq!(l.nsproxy_net_ns, d.byte("nsproxy", "net_ns"));
        assert_eq!(
            l.net_ns_inum,
            d.byte("net", "ns") + d.byte("ns_common", "inum")
        );
        assert_eq!(
            l.net_hashinfo,
            d.byte("net", "ipv4")
                + d.byte("netns_ipv4", "tcp_death_row")
                + d.byte("inet_timewait_death_row", "hashinfo")
        );
        assert_eq!(
            l.net_port_range,
            d.byte("net", "ipv4")
                + d.byte("netns_ipv4", "ip_local_ports")
                + d.byte("local_ports", "range")
        );
        let sk_common = d.byte("sock", "__sk_common");
        assert_eq!(l.sk_family, sk_common + d.byte("sock_common", "skc_family"));
        assert_eq!(l.sk_protocol, d.byte("sock", "sk_protocol"));
        assert_eq!(l.sk_socket, d.byte("sock", "sk_socket"));
        let (reuse_bits, reuse_width) = d.bits("sock_common", "skc_reuse");
        let reuse_bits = reuse_bits + u64::from(sk_common) * 8;
        assert_eq!(
            l.sk_reuse,
            bit(
                (reuse_bits / 8) as u32,
                (reuse_bits % 8) as u8,
                reuse_width as u8
            )
        );
        if l.tb_bhash2 != NO_FIELD {
            assert_eq!(l.tb_bhash2, d.byte("inet_bind_bucket", "bhash2"));
        }
        if l.tb2_owners != NO_FIELD {
            assert_eq!(l.tb2_owners, d.byte("inet_bind2_bucket", "owners"));
        }
        if l.tb2_fastreuse != NO_FIELD {
            assert_eq!(l.tb2_fastreuse, d.byte("inet_bind2_bucket", "fastreuse"));
        }
        if r.bind_address_no_port == NoPortSource::InetFlags {
            assert_eq!(
                l.inet_bind_address_no_port.byte_off,
                d.byte("inet_sock", "inet_flags")
            );
            assert_eq!(
                i64::from(l.inet_bind_address_no_port.shift),
                d.enumerators["INET_FLAGS_BIND_ADDRESS_NO_PORT"]
            );
        }
        if let Some(uf) = &r.update_fastreuse {
            assert!(!uf.params.is_empty());
        }
    }
}
