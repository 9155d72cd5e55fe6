//! A reader of kernel BTF: struct members by name (through anonymous structs and unions,
//! with bit fields in both encodings), enumerators and function signatures.
//!
//! `btfparse` parses the type table; the member lookup is done here, bounded in depth
//! and in work, so malformed BTF yields an error rather than a hang or a panic. Every
//! lookup that fails names the struct and member it wanted.
use std::{
    collections::{BTreeMap, HashMap},
    panic::{catch_unwind, AssertUnwindSafe},
};

use btfparse::{Offset, Readable, TypeInformation, TypeVariant};
use portwatch_common::{BitField, NO_FIELD};

use super::LayoutError;

/// Bound on type indirections and anonymous-member nesting (real kernels need < 10).
const MAX_DEPTH: usize = 32;
/// Bound on structs visited while looking up one member through anonymous members.
const MEMBER_SEARCH_BUDGET: usize = 4096;

/// A resolved member: where it is and what it is.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    /// Type id of the member.
    pub tid: u32,
    /// Offset from the start of the root struct, in bits.
    pub bit_off: u64,
    /// Bit-field width; 0 for an ordinary member.
    pub bits: u32,
}

/// An integer-like member's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntShape {
    /// An integer or enum of this many bytes.
    Int(usize),
    /// An array of `count` integers of `elem` bytes.
    Array { elem: usize, count: u32 },
}

/// Result of stripping typedef/const/volatile/restrict/type tags.
enum Stripped<'a> {
    Void,
    Type(&'a TypeVariant),
    /// Unknown type id or an indirection loop (malformed BTF).
    Broken,
}

/// The parsed BTF of one kernel, indexed by struct and function name.
pub struct KernelBtf {
    info: TypeInformation,
    structs: HashMap<String, u32>,
    funcs: HashMap<String, u32>,
    kernel: String,
}

impl KernelBtf {
    /// Parses raw BTF; `kernel` names the kernel in error messages.
    pub fn parse(bytes: &[u8], kernel: &str) -> Result<KernelBtf, LayoutError> {
        let origin = format!("the BTF of kernel {kernel}");
        check_header(bytes).map_err(|reason| LayoutError::InvalidBtf {
            origin: origin.clone(),
            reason,
        })?;
        let source = ByteSource(bytes);
        // btfparse returns errors for the malformed inputs we tried, and the header check
        // above excludes the arithmetic overflows it does not guard; catching a panic is a
        // last line of defence so that garbage input is an error, never a crash.
        let info = match catch_unwind(AssertUnwindSafe(|| TypeInformation::new(&source))) {
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
        let mut structs = HashMap::new();
        let mut funcs = HashMap::new();
        for (&tid, t) in info.get() {
            match t {
                TypeVariant::Struct(s) => {
                    if let Some(name) = s.name() {
                        structs.entry(name.clone()).or_insert(tid);
                    }
                }
                TypeVariant::Func(f) => {
                    if let Some(name) = f.name() {
                        funcs.entry(name.clone()).or_insert(tid);
                    }
                }
                _ => {}
            }
        }
        Ok(KernelBtf {
            info,
            structs,
            funcs,
            kernel: kernel.to_string(),
        })
    }

    /// The kernel this BTF describes, as given to [`KernelBtf::parse`].
    pub fn kernel(&self) -> &str {
        &self.kernel
    }

    fn types(&self) -> &BTreeMap<u32, TypeVariant> {
        self.info.get()
    }

    fn strip(&self, mut tid: u32) -> Stripped<'_> {
        for _ in 0..MAX_DEPTH {
            if tid == 0 {
                return Stripped::Void;
            }
            let Some(t) = self.types().get(&tid) else {
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
    pub fn describe(&self, tid: u32) -> String {
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
                kernel: self.kernel.clone(),
            })
    }

    /// Whether a struct of that name exists.
    pub fn has_struct(&self, strukt: &str) -> bool {
        self.structs.contains_key(strukt)
    }

    /// Size of a struct in bytes.
    pub fn struct_size(&self, strukt: &str) -> Result<u64, LayoutError> {
        match self.strip(self.struct_id(strukt)?) {
            Stripped::Type(TypeVariant::Struct(s)) => Ok(*s.size() as u64),
            _ => Ok(0),
        }
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

    pub fn missing(&self, strukt: &str, field: &str) -> LayoutError {
        LayoutError::MissingField {
            strukt: strukt.to_string(),
            field: field.to_string(),
            kernel: self.kernel.clone(),
        }
    }

    pub fn unexpected(
        &self,
        strukt: &str,
        field: &str,
        expected: &str,
        found: String,
    ) -> LayoutError {
        LayoutError::UnexpectedType {
            strukt: strukt.to_string(),
            field: field.to_string(),
            kernel: self.kernel.clone(),
            expected: expected.to_string(),
            found,
        }
    }

    /// Resolves a dotted member path (`ipv4.tcp_death_row.hashinfo`) inside `strukt`.
    /// Every intermediate member must be an embedded struct/union (not a pointer).
    pub fn field(&self, strukt: &str, path: &str) -> Result<Field, LayoutError> {
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

    /// Whether `strukt` has the member `path` (false when the struct itself is missing);
    /// errors other than "missing" are kept.
    pub fn has_member(&self, strukt: &str, path: &str) -> Result<bool, LayoutError> {
        match self.field(strukt, path) {
            Ok(_) => Ok(true),
            Err(LayoutError::MissingField { .. } | LayoutError::MissingStruct { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub fn byte_offset(&self, strukt: &str, path: &str, f: Field) -> Result<u32, LayoutError> {
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
    pub fn ptr_offset(&self, strukt: &str, path: &str) -> Result<u32, LayoutError> {
        let f = self.field(strukt, path)?;
        match self.strip(f.tid) {
            Stripped::Type(TypeVariant::Ptr(_)) => self.byte_offset(strukt, path, f),
            _ => Err(self.unexpected(strukt, path, "a pointer", self.describe(f.tid))),
        }
    }

    /// Byte offset of an integer member of the given sizes; returns (offset, size).
    pub fn int_offset(
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
    pub fn struct_offset(&self, strukt: &str, path: &str) -> Result<u32, LayoutError> {
        let f = self.field(strukt, path)?;
        match self.strip(f.tid) {
            Stripped::Type(TypeVariant::Struct(_) | TypeVariant::Union(_)) => {
                self.byte_offset(strukt, path, f)
            }
            _ => Err(self.unexpected(strukt, path, "an embedded struct", self.describe(f.tid))),
        }
    }

    /// A bit field, or a plain integer member read as one (width = its size in bits).
    pub fn bitfield(&self, strukt: &str, path: &str) -> Result<BitField, LayoutError> {
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

    /// The shape of an integer-like type: an integer (or enum) or an array of them.
    pub fn int_shape(&self, tid: u32) -> Option<IntShape> {
        match self.strip(tid) {
            Stripped::Type(TypeVariant::Array(a)) => Some(IntShape::Array {
                elem: self.int_size(*a.element_tid())?,
                count: *a.element_count(),
            }),
            _ => self.int_size(tid).map(IntShape::Int),
        }
    }

    /// Size in bytes of an integer (or enum) type.
    pub fn int_size(&self, tid: u32) -> Option<usize> {
        match self.strip(tid) {
            Stripped::Type(TypeVariant::Int(i)) => Some(*i.size()),
            Stripped::Type(TypeVariant::Enum(e)) => Some(*e.size()),
            Stripped::Type(TypeVariant::Enum64(e)) => Some(*e.size()),
            _ => None,
        }
    }

    /// Value of a named enumerator (ENUM or ENUM64).
    pub fn enumerator(&self, name: &str) -> Option<i128> {
        self.types().values().find_map(|t| match t {
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

    /// Parameter names of a BTF FUNC ("" for an unnamed one), `None` when absent (or
    /// without a usable prototype).
    pub fn func_params(&self, name: &str) -> Option<Vec<String>> {
        let tid = *self.funcs.get(name)?;
        let TypeVariant::Func(f) = self.types().get(&tid)? else {
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
}

/// `Ok(None)` when the member is absent; other errors are kept.
pub fn optional<T>(r: Result<T, LayoutError>) -> Result<Option<T>, LayoutError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(LayoutError::MissingField { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Checks the fixed header and that both sections lie inside `bytes`.
fn check_header(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 24 {
        return Err(format!(
            "{} bytes is shorter than the 24-byte BTF header",
            bytes.len()
        ));
    }
    let le = match [bytes[0], bytes[1]] {
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use portwatch_common::BitField;

    use super::*;
    use crate::kernel::{
        fake_kernel::{bf, m, FakeKernel, Ty},
        layout_from_btf_bytes, layout_from_btf_file, VMLINUX_BTF,
    };

    fn bit(byte_off: u32, shift: u8, width: u8) -> BitField {
        BitField {
            byte_off,
            shift,
            width,
            _pad: [0; 2],
        }
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
        use crate::kernel::fake_kernel::{BtfEncoder, RawMember};
        let mut enc = BtfEncoder::new();
        let a = enc.reserve();
        let b = enc.typedef("b", a);
        let name = enc.str("a");
        let mut raw = Vec::new();
        raw.extend_from_slice(&name.to_le_bytes());
        raw.extend_from_slice(&(crate::kernel::fake_kernel::KIND_TYPEDEF << 24).to_le_bytes());
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
        use crate::kernel::fake_kernel::{BtfEncoder, RawMember};
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

    /// `sock.sk_userlocks` as the reader sees it.
    fn userlocks(k: &FakeKernel) -> Result<BitField, LayoutError> {
        KernelBtf::parse(&k.encode(), "x")?.bitfield("sock", "sk_userlocks")
    }

    #[test]
    fn sk_userlocks_plain_or_bit_field_or_old_int_encoding() {
        // 6.18 preset: plain u8. A `u8 sk_userlocks:8` bit field reads the same.
        let mut k = FakeKernel::linux_6_18();
        *k.member_mut("sock", "sk_userlocks") = bf("sk_userlocks", Ty::U8, 291 * 8, 8);
        assert_eq!(userlocks(&k).unwrap(), bit(291, 0, 8));
        // A bit field straddling a byte boundary keeps its containing byte and shift.
        *k.member_mut("sock", "sk_userlocks") = bf("sk_userlocks", Ty::U32, 288 * 8 + 29, 6);
        assert_eq!(userlocks(&k).unwrap(), bit(291, 5, 6));
        // The pre-kind_flag encoding: the INT itself carries bit offset and size.
        *k.member_mut("sock", "sk_userlocks") = m("sk_userlocks", Ty::OldBitInt(1, 4, 4), 560);
        assert_eq!(userlocks(&k).unwrap(), bit(560, 4, 4));
        // A pointer is not a bit field.
        *k.member_mut("sock", "sk_userlocks") = m("sk_userlocks", Ty::Ptr(String::new()), 560);
        assert!(
            matches!(userlocks(&k).unwrap_err(), LayoutError::UnexpectedType { field, .. } if field == "sk_userlocks")
        );
    }
}
