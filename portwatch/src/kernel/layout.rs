//! The layout builder: [`portwatch_common::Layout`] from the kernel's BTF and the
//! variants of [`super::compat`] it has. Nothing here is hard-coded per kernel version:
//! each field is looked up by name, its type is checked, and a missing or unexpected
//! field the programs need is an error that names it. Fields the tool can do without
//! are optional; the report says what is lost without them.
use std::collections::BTreeMap;

use portwatch_common::{BitField, Layout, NO_FIELD, OWNERS_ON_TB, OWNERS_ON_TB2};
use serde::{Deserialize, Serialize};

use super::{
    btf::{optional, IntShape, KernelBtf},
    compat::{self, Detected, Id},
    symbols::HookSite,
    LayoutError,
};

/// Kernel functions whose presence (as BTF FUNC) and parameters are recorded in
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

/// What portwatch knows about the running kernel: the layout handed to the programs,
/// the variants it has and the functions it can hook. Cached in /run between runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    pub layout: Layout,
    pub kernel_release: String,
    /// Every row of the compatibility table: whether this kernel has it.
    pub variants: Detected,
    /// Each of [`TRACKED_FUNCTIONS`]: `Some(parameter names)` when present as a BTF FUNC.
    pub functions: BTreeMap<String, Option<Vec<String>>>,
    /// Each of [`TRACKED_FUNCTIONS`] in the running kernel's text (inlined, cloned...);
    /// `None` when not read (BTF from a file, or /proc/kallsyms unreadable).
    pub sites: Option<BTreeMap<String, HookSite>>,
}

/// Which member of `struct inet_bind2_bucket` tells its address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tb2Family {
    /// `unsigned short family` (AF_INET / AF_INET6).
    Family,
    /// `unsigned short addr_type` (an `ipv6_addr_type()` value).
    AddrType,
    /// Neither member (or no `inet_bind2_bucket` at all).
    Absent,
}

/// Where `IP_BIND_ADDRESS_NO_PORT` lives in `struct inet_sock`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoPortSource {
    /// The `bind_address_no_port` bit field.
    BitField,
    /// Bit `INET_FLAGS_BIND_ADDRESS_NO_PORT` of `inet_flags`.
    InetFlags,
}

/// The BTF signature of `inet_csk_update_fastreuse`.
#[derive(Clone, Debug, PartialEq, Eq)]
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

impl Resolved {
    /// Whether this kernel has variant `id`.
    pub fn has(&self, id: Id) -> bool {
        self.variants.get(&id).copied().unwrap_or(false)
    }

    /// Whether the programs read a syscall's first two arguments at its exit (row
    /// [`Id::TaskPtRegs`] on an architecture whose registers for them are known).
    pub fn syscall_args_at_exit(&self) -> bool {
        self.layout.regs_arg0 != NO_FIELD && self.layout.regs_arg1 != NO_FIELD
    }

    /// Whether `name` exists as a BTF FUNC (only for [`TRACKED_FUNCTIONS`]).
    pub fn has_function(&self, name: &str) -> bool {
        matches!(self.functions.get(name), Some(Some(_)))
    }

    /// Where a tracked function is in the kernel's text, when that was read.
    pub fn site(&self, name: &str) -> Option<&HookSite> {
        self.sites.as_ref()?.get(name)
    }

    /// Parameter names of a tracked function, when present.
    pub fn function_params(&self, name: &str) -> Option<&[String]> {
        self.functions.get(name).and_then(|p| p.as_deref())
    }

    /// `inet_csk_update_fastreuse` as a BTF FUNC, `None` when absent.
    pub fn update_fastreuse(&self) -> Option<UpdateFastreuse> {
        let params = self.function_params("inet_csk_update_fastreuse")?.to_vec();
        let pos = |name: &str| params.iter().position(|p| p == name);
        Some(UpdateFastreuse {
            sk: pos("sk"),
            tb: pos("tb"),
            tb2: pos("tb2"),
            params,
        })
    }

    /// Which member of `inet_bind2_bucket` gives its family.
    pub fn tb2_family(&self) -> Tb2Family {
        if self.has(Id::Tb2AddrType) {
            Tb2Family::AddrType
        } else if self.layout.tb2_family != NO_FIELD {
            Tb2Family::Family
        } else {
            Tb2Family::Absent
        }
    }

    /// Where `IP_BIND_ADDRESS_NO_PORT` is read from.
    pub fn bind_address_no_port(&self) -> NoPortSource {
        if self.has(Id::InetFlags) {
            NoPortSource::InetFlags
        } else {
            NoPortSource::BitField
        }
    }

    /// How owners of a port are counted on this kernel and why.
    pub fn owners_mode(&self) -> &'static str {
        if self.layout.owners_mode == OWNERS_ON_TB2 {
            "inet_bind_bucket has no owner list (removed in 6.8): owners of a port are the sum of \
             inet_bind2_bucket.owners over inet_bind_bucket.bhash2"
        } else {
            "each bind bucket has its own owner list (inet_bind_bucket.owners, kernels up to 6.7)"
        }
    }
}

/// Builds the layout of the kernel described by `btf`.
pub fn build(btf: &KernelBtf) -> Result<Resolved, LayoutError> {
    let variants = compat::detect(btf)?;
    let has = |id: Id| variants.get(&id).copied().unwrap_or(false);
    let mut l = Layout::UNSET;

    // fd -> socket -> sock
    l.task_files = btf.ptr_offset("task_struct", "files")?;
    l.files_fdt = btf.ptr_offset("files_struct", "fdt")?;
    l.fdt_max_fds = btf.int_offset("fdtable", "max_fds", &[4])?.0;
    l.fdt_fd = btf.ptr_offset("fdtable", "fd")?;
    l.file_private_data = btf.ptr_offset("file", "private_data")?;
    l.socket_sk = btf.ptr_offset("socket", "sk")?;
    l.socket_file = btf.ptr_offset("socket", "file")?;
    l.task_nsproxy = btf.ptr_offset("task_struct", "nsproxy")?;
    l.nsproxy_net_ns = btf.ptr_offset("nsproxy", "net_ns")?;

    // struct net
    l.net_ns_inum = btf.int_offset("net", "ns.inum", &[4])?.0;
    l.net_hash_mix = btf.int_offset("net", "hash_mix", &[4])?.0;
    l.net_hashinfo = btf.ptr_offset("net", "ipv4.tcp_death_row.hashinfo")?;
    const RANGE: &str = "ipv4.ip_local_ports.range";
    if has(Id::PackedPortRange) {
        l.net_port_range = btf.int_offset("net", RANGE, &[4])?.0;
        l.port_range_packed = 1;
    } else {
        let range = btf.field("net", RANGE)?;
        match btf.int_shape(range.tid) {
            Some(IntShape::Array { elem: 4, count: 2 }) => {
                l.net_port_range = btf.byte_offset("net", RANGE, range)?;
                l.port_range_packed = 0;
            }
            _ => {
                return Err(btf.unexpected(
                    "net",
                    RANGE,
                    "a 4-byte integer (lo | hi << 16) or int[2]",
                    btf.describe(range.tid),
                ))
            }
        }
    }

    // struct inet_hashinfo / inet_bind_hashbucket
    l.hashinfo_bhash = btf.ptr_offset("inet_hashinfo", "bhash")?;
    l.hashinfo_bhash_size = btf.int_offset("inet_hashinfo", "bhash_size", &[4])?.0;
    l.bind_hashbucket_size = u32::try_from(btf.struct_size("inet_bind_hashbucket")?).unwrap_or(0);
    if l.bind_hashbucket_size == 0 {
        return Err(btf.unexpected(
            "inet_bind_hashbucket",
            "(size)",
            "a non-zero size",
            "size 0".to_string(),
        ));
    }
    l.bind_hashbucket_chain = btf.struct_offset("inet_bind_hashbucket", "chain")?;

    // struct sock (sock_common is its first member)
    l.sk_family = btf.int_offset("sock", "__sk_common.skc_family", &[2])?.0;
    l.sk_state = btf.int_offset("sock", "__sk_common.skc_state", &[1])?.0;
    l.sk_num = btf.int_offset("sock", "__sk_common.skc_num", &[2])?.0;
    l.sk_dport = btf.int_offset("sock", "__sk_common.skc_dport", &[2])?.0;
    l.sk_rcv_saddr = btf.int_offset("sock", "__sk_common.skc_rcv_saddr", &[4])?.0;
    l.sk_daddr = btf.int_offset("sock", "__sk_common.skc_daddr", &[4])?.0;
    l.sk_v6_rcv_saddr = btf.struct_offset("sock", "__sk_common.skc_v6_rcv_saddr")?;
    l.sk_v6_daddr = btf.struct_offset("sock", "__sk_common.skc_v6_daddr")?;
    l.sk_net = btf.ptr_offset("sock", "__sk_common.skc_net.net")?;
    l.sk_bind_node = btf.struct_offset("sock", "__sk_common.skc_bind_node")?;
    let (proto_off, proto_size) = btf.int_offset("sock", "sk_protocol", &[1, 2, 4])?;
    l.sk_protocol = proto_off;
    l.sk_protocol_size = proto_size as u32;
    l.sk_type = btf.int_offset("sock", "sk_type", &[2])?.0;
    l.sk_socket = btf.ptr_offset("sock", "sk_socket")?;
    // inet_connection_sock starts with inet_sock, which starts with sock.
    l.sk_bind_hash = btf.ptr_offset("inet_connection_sock", "icsk_bind_hash")?;
    l.sk_reuse = btf.bitfield("sock", "__sk_common.skc_reuse")?;
    l.sk_reuseport = btf.bitfield("sock", "__sk_common.skc_reuseport")?;
    l.inet_bind_address_no_port = bind_address_no_port(btf, has(Id::InetFlags))?;
    l.sk_userlocks = btf.bitfield("sock", "sk_userlocks")?;
    if has(Id::ConnectBind) {
        l.connect_bind_mask = SOCK_CONNECT_BIND;
        l.tw_connect_bind = btf.bitfield("inet_timewait_sock", "tw_connect_bind")?;
        if u32::from(l.sk_userlocks.width) <= SOCK_CONNECT_BIND.trailing_zeros() {
            return Err(btf.unexpected(
                "sock",
                "sk_userlocks",
                "room for SOCK_CONNECT_BIND (bit 4)",
                format!("a {}-bit field", l.sk_userlocks.width),
            ));
        }
    } else {
        l.connect_bind_mask = 0;
    }
    if has(Id::SocketPortRange) {
        l.inet_local_port_range = socket_port_range(btf)?;
    }
    l.icsk_bind2_hash =
        optional(btf.ptr_offset("inet_connection_sock", "icsk_bind2_hash"))?.unwrap_or(NO_FIELD);

    // struct inet_bind_bucket
    const TB: &str = "inet_bind_bucket";
    l.tb_net = btf.ptr_offset(TB, "ib_net.net")?;
    l.tb_l3mdev = btf.int_offset(TB, "l3mdev", &[4])?.0;
    l.tb_port = btf.int_offset(TB, "port", &[2])?.0;
    l.tb_fastreuse = btf.int_offset(TB, "fastreuse", &[1])?.0;
    l.tb_fastreuseport = btf.int_offset(TB, "fastreuseport", &[1])?.0;
    l.tb_node = btf.struct_offset(TB, "node")?;
    l.tb_owners = optional(btf.struct_offset(TB, "owners"))?.unwrap_or(NO_FIELD);
    l.tb_bhash2 = optional(btf.struct_offset(TB, "bhash2"))?.unwrap_or(NO_FIELD);

    // struct inet_bind2_bucket
    const TB2: &str = "inet_bind2_bucket";
    l.tb2_addr_mapped = 0;
    if has(Id::Bhash2) {
        l.tb2_bhash_node = optional(btf.struct_offset(TB2, "bhash_node"))?.unwrap_or(NO_FIELD);
        l.tb2_owners = optional(btf.struct_offset(TB2, "owners"))?.unwrap_or(NO_FIELD);
        if has(Id::Tb2Fastreuse) {
            l.tb2_fastreuse = btf.int_offset(TB2, "fastreuse", &[1])?.0;
            l.tb2_fastreuseport = btf.int_offset(TB2, "fastreuseport", &[1])?.0;
        }
        if has(Id::Tb2AddrType) {
            l.tb2_addr_mapped = 1;
        } else {
            l.tb2_family = optional(btf.int_offset(TB2, "family", &[2]))?.map_or(NO_FIELD, |x| x.0);
            l.tb2_rcv_saddr =
                optional(btf.int_offset(TB2, "rcv_saddr", &[4]))?.map_or(NO_FIELD, |x| x.0);
        }
        l.tb2_v6_rcv_saddr = optional(btf.struct_offset(TB2, "v6_rcv_saddr"))?.unwrap_or(NO_FIELD);
    }

    explain_fields(btf, &mut l)?;
    if has(Id::TaskPtRegs) {
        if let Some([a0, a1]) = SYSCALL_ARG_REGS {
            l.regs_arg0 = btf.int_offset("pt_regs", a0, &[8])?.0;
            l.regs_arg1 = btf.int_offset("pt_regs", a1, &[8])?.0;
        }
    }

    l.owners_mode = owners_mode(btf, &l)?;
    l.valid = 1;

    let functions = TRACKED_FUNCTIONS
        .iter()
        .map(|&name| (name.to_string(), btf.func_params(name)))
        .collect();
    Ok(Resolved {
        layout: l,
        kernel_release: btf.kernel().to_string(),
        variants,
        functions,
        sites: None,
    })
}

/// What `explain` reads about owners (uid, `IPV6_V6ONLY`, bound device, inode), about a
/// bucket's fast path and about a namespace (reached from an nsfs file: reserved ports,
/// `tcp_tw_reuse`). Each is optional: without one, `explain` says what it could not read.
fn explain_fields(btf: &KernelBtf, l: &mut Layout) -> Result<(), LayoutError> {
    // A missing struct is as good as a missing member here: nothing else needs these.
    fn absent<T>(r: Result<T, LayoutError>) -> Result<Option<T>, LayoutError> {
        match r {
            Err(LayoutError::MissingStruct { .. }) => Ok(None),
            other => optional(other),
        }
    }
    let int = |strukt: &str, path: &str, sizes: &[usize]| -> Result<u32, LayoutError> {
        Ok(absent(btf.int_offset(strukt, path, sizes))?.map_or(NO_FIELD, |x| x.0))
    };
    let ptr = |strukt: &str, path: &str| -> Result<u32, LayoutError> {
        Ok(absent(btf.ptr_offset(strukt, path))?.unwrap_or(NO_FIELD))
    };
    let embedded = |strukt: &str, path: &str| absent(btf.struct_offset(strukt, path));
    l.sk_uid = int("sock", "sk_uid.val", &[4])?;
    l.sk_ipv6only =
        absent(btf.bitfield("sock", "__sk_common.skc_ipv6only"))?.unwrap_or(BitField::NONE);
    l.sk_bound_dev_if = int("sock", "__sk_common.skc_bound_dev_if", &[4])?;
    l.inode_ino = int("inode", "i_ino", &[8])?;
    l.inode_private = ptr("inode", "i_private")?;
    l.file_inode = ptr("file", "f_inode")?;
    // SOCK_INODE(): the inode that follows the socket in struct socket_alloc.
    l.socket_ino = match (
        embedded("socket_alloc", "socket")?,
        embedded("socket_alloc", "vfs_inode")?,
    ) {
        (Some(s), Some(i)) if i > s && l.inode_ino != NO_FIELD => i - s + l.inode_ino,
        _ => NO_FIELD,
    };
    l.net_ns = embedded("net", "ns")?.unwrap_or(NO_FIELD);
    l.net_reserved_ports = ptr("net", "ipv4.sysctl_local_reserved_ports")?;
    // A u8 since the tcp sysctls were narrowed (row TcpSysctlsU8), an int before.
    if let Some((o, size)) = absent(btf.int_offset("net", "ipv4.sysctl_tcp_tw_reuse", &[1, 4]))? {
        l.net_tw_reuse = o;
        l.net_tw_reuse_size = size as u32;
    }
    const TB: &str = "inet_bind_bucket";
    l.tb_fastuid = int(TB, "fastuid.val", &[4])?;
    l.tb_fast_v6_rcv_saddr = embedded(TB, "fast_v6_rcv_saddr")?.unwrap_or(NO_FIELD);
    l.tb_fast_rcv_saddr = int(TB, "fast_rcv_saddr", &[4])?;
    l.tb_fast_sk_family = int(TB, "fast_sk_family", &[2])?;
    l.tb_fast_ipv6_only = int(TB, "fast_ipv6_only", &[1])?;
    l.tw_tb2 = ptr("inet_timewait_sock", "tw_tb2")?;
    Ok(())
}

/// `IP_BIND_ADDRESS_NO_PORT`: a bit of `inet_flags` (variant [`Id::InetFlags`]) or the
/// `bind_address_no_port` bit field.
fn bind_address_no_port(btf: &KernelBtf, inet_flags: bool) -> Result<BitField, LayoutError> {
    if !inet_flags {
        return btf
            .bitfield("inet_sock", "bind_address_no_port")
            .map_err(|e| match e {
                LayoutError::MissingField { .. } => {
                    btf.missing("inet_sock", "bind_address_no_port` or `inet_flags")
                }
                other => other,
            });
    }
    let flags = btf.field("inet_sock", "inet_flags")?;
    let word = btf.byte_offset("inet_sock", "inet_flags", flags)?;
    let width = btf.int_size(flags.tid).ok_or_else(|| {
        btf.unexpected(
            "inet_sock",
            "inet_flags",
            "an integer",
            btf.describe(flags.tid),
        )
    })?;
    const BIT: &str = "INET_FLAGS_BIND_ADDRESS_NO_PORT";
    let bit = btf
        .enumerator(BIT)
        .ok_or_else(|| LayoutError::MissingEnumerator {
            name: BIT.to_string(),
            kernel: btf.kernel().to_string(),
        })?;
    if bit < 0 || bit >= (width as i128) * 8 || bit >= 64 {
        return Err(btf.unexpected(
            "inet_sock",
            "inet_flags",
            &format!("an integer with a bit {bit} ({BIT})"),
            btf.describe(flags.tid),
        ));
    }
    Ok(BitField {
        byte_off: word,
        shift: bit as u8,
        width: 1,
        _pad: [0; 2],
    })
}

/// `SOCK_CONNECT_BIND`: a `#define` in include/net/sock.h (d57f4b874946), so not in BTF;
/// its presence is told by `tw_connect_bind` (row [`Id::ConnectBind`]).
pub const SOCK_CONNECT_BIND: u32 = 16;

/// The `struct pt_regs` members that hold a syscall's first two arguments on this
/// architecture (the x86_64 syscall convention: rdi, rsi), `None` where not known.
#[cfg(target_arch = "x86_64")]
const SYSCALL_ARG_REGS: Option<[&str; 2]> = Some(["di", "si"]);
#[cfg(not(target_arch = "x86_64"))]
const SYSCALL_ARG_REGS: Option<[&str; 2]> = None;

/// `inet_sock.local_port_range`: a u32 (lo | hi << 16) since 6.8, a `{ u16 lo, hi }`
/// struct before; both are the same four bytes.
fn socket_port_range(btf: &KernelBtf) -> Result<u32, LayoutError> {
    const S: &str = "inet_sock";
    const M: &str = "local_port_range";
    let f = btf.field(S, M)?;
    let lo_hi = btf
        .int_offset(S, "local_port_range.lo", &[2])
        .ok()
        .zip(btf.int_offset(S, "local_port_range.hi", &[2]).ok());
    match (btf.int_size(f.tid), lo_hi) {
        (Some(4), _) => btf.byte_offset(S, M, f),
        (_, Some(((lo, _), (hi, _)))) if hi == lo + 2 => Ok(lo),
        _ => Err(btf.unexpected(
            S,
            M,
            "a 4-byte integer or a { u16 lo; u16 hi; } struct",
            btf.describe(f.tid),
        )),
    }
}

/// Where owners are counted: `tb->owners` when the bucket has one, else the owners of
/// the per-address buckets on `tb->bhash2` (variant [`Id::OwnersOnTb2`]).
fn owners_mode(btf: &KernelBtf, l: &Layout) -> Result<u32, LayoutError> {
    if l.tb_owners != NO_FIELD {
        return Ok(OWNERS_ON_TB);
    }
    if l.tb_bhash2 != NO_FIELD && l.tb2_owners != NO_FIELD && l.tb2_bhash_node != NO_FIELD {
        return Ok(OWNERS_ON_TB2);
    }
    let detail = if l.tb_bhash2 == NO_FIELD {
        "struct inet_bind_bucket has neither `owners` nor `bhash2`"
    } else if l.tb2_owners == NO_FIELD {
        "struct inet_bind_bucket has `bhash2` but no `owners`, and struct inet_bind2_bucket has no `owners`"
    } else {
        "struct inet_bind_bucket has `bhash2` but struct inet_bind2_bucket has no `bhash_node` to walk it"
    };
    Err(LayoutError::NoOwnerList {
        kernel: btf.kernel().to_string(),
        detail: detail.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, path::Path};

    use super::*;
    use crate::kernel::{
        fake_kernel::{bf, FakeKernel, Ty},
        host_layout, layout_from_btf_bytes, layout_from_btf_file, OSRELEASE, VMLINUX_BTF,
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
    /// the description in tests/fixtures/btf/fake_kernel.rs).
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
            sk_reuse: bit(19, 0, 4),
            sk_reuseport: bit(19, 4, 1),
            inet_bind_address_no_port: bit(776, 18, 1),
            sk_userlocks: bit(291, 0, 8),
            connect_bind_mask: SOCK_CONNECT_BIND,
            tw_connect_bind: bit(146, 6, 1),
            inet_local_port_range: 792,
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
            tb2_fastreuse: 72,
            tb2_fastreuseport: 73,
            tb2_family: NO_FIELD,
            tb2_addr_mapped: 1,
            tb2_v6_rcv_saddr: 16,
            tb2_rcv_saddr: NO_FIELD,
            sk_uid: 560,
            sk_ipv6only: bit(19, 5, 1),
            sk_bound_dev_if: 20,
            socket_ino: 128 + 64,
            file_inode: 40,
            inode_private: 560,
            inode_ino: 64,
            net_ns: 88,
            net_reserved_ports: 320 + 1008,
            net_tw_reuse: 320 + 300,
            net_tw_reuse_size: 1,
            tb_fastuid: 16,
            tb_fast_v6_rcv_saddr: 20,
            tb_fast_rcv_saddr: 36,
            tb_fast_sk_family: 40,
            tb_fast_ipv6_only: 42,
            tw_tb2: NO_FIELD,
            owners_mode: OWNERS_ON_TB2,
            sk_bind_hash: 1032,
            // pt_regs.di and .si: bpf_task_pt_regs is there (5.15+).
            regs_arg0: 14 * 8,
            regs_arg1: 13 * 8,
            valid: 1,
        }
    }

    /// The 6.1-like kernel is the 6.18-like one with the table's variants applied
    /// backwards: only what those variants move differs.
    fn expected_6_1() -> Layout {
        Layout {
            // ns_common without ns_type: inum 8 bytes earlier.
            net_ns_inum: 88 + 16,
            // int range[2] after an 8-byte lock.
            net_port_range: 320 + 680 + 8,
            port_range_packed: 0,
            // The ninth bit field where inet_flags was.
            inet_bind_address_no_port: bit(777, 0, 1),
            tb_owners: 64,
            tb_bhash2: NO_FIELD,
            tb2_bhash_node: NO_FIELD,
            tb2_owners: 48,
            tb2_fastreuse: NO_FIELD,
            tb2_fastreuseport: NO_FIELD,
            tb2_family: 14,
            tb2_addr_mapped: 0,
            tb2_v6_rcv_saddr: 16,
            tb2_rcv_saddr: 16,
            owners_mode: OWNERS_ON_TB,
            // No connect()-bound mark before 6.18; the socket's own range is the same
            // four bytes as a { lo, hi } pair (6.1.31 backport).
            connect_bind_mask: 0,
            tw_connect_bind: BitField::NONE,
            ..expected_6_18()
        }
    }

    #[test]
    fn fake_6_18_resolves_to_the_expected_layout() {
        let r = resolve(&FakeKernel::linux_6_18(), "6.18.0-fake").unwrap();
        assert_eq!(r.layout, expected_6_18());
        assert_eq!(r.kernel_release, "6.18.0-fake");
        assert_eq!(r.tb2_family(), Tb2Family::AddrType);
        assert_eq!(r.bind_address_no_port(), NoPortSource::InetFlags);
        assert!(
            r.owners_mode().contains("inet_bind2_bucket.owners"),
            "{}",
            r.owners_mode()
        );
    }

    #[test]
    fn fake_6_1_resolves_to_the_expected_layout() {
        let r = resolve(&FakeKernel::linux_6_1(), "6.1.0-fake").unwrap();
        assert_eq!(r.layout, expected_6_1());
        assert_eq!(r.tb2_family(), Tb2Family::Family);
        assert_eq!(r.bind_address_no_port(), NoPortSource::BitField);
        assert!(
            r.owners_mode().contains("inet_bind_bucket.owners"),
            "{}",
            r.owners_mode()
        );
    }

    #[test]
    fn functions_and_update_fastreuse_signature() {
        let new = resolve(&FakeKernel::linux_6_18(), "6.18").unwrap();
        let uf = new.update_fastreuse().unwrap();
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
        let uf = old.update_fastreuse().unwrap();
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
        assert_eq!(r.update_fastreuse(), None);
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
        assert_eq!(r.tb2_family(), Tb2Family::Absent);
        assert!(!r.has(Id::Bhash2) && !r.has(Id::Tb2Deathrow));
        assert_eq!(l.tb2_addr_mapped, 0);
        for off in [
            l.tb2_bhash_node,
            l.tb2_owners,
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
        let btf = KernelBtf::parse(&std::fs::read(VMLINUX_BTF).unwrap(), "host").unwrap();
        let icsk_bind_hash = btf
            .ptr_offset("inet_connection_sock", "icsk_bind_hash")
            .unwrap();
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
        assert!(icsk_bind_hash != NO_FIELD);
        assert_eq!(l.sk_bind_hash, icsk_bind_hash);
        for b in [
            btf.bitfield("sock", "sk_userlocks").unwrap(),
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

        // What the project's build machines (kernel 6.18) have.
        if r.kernel_release.starts_with("6.18") {
            for id in [
                Id::Bhash2,
                Id::InetFlags,
                Id::PackedPortRange,
                Id::OwnersOnTb2,
                Id::Tb2Fastreuse,
            ] {
                assert!(r.has(id), "{id:?}");
            }
            assert!(!r.has(Id::Tb2Deathrow));
            assert_eq!(l.owners_mode, OWNERS_ON_TB2);
            assert_eq!(l.tb_owners, NO_FIELD);
            assert_eq!(l.port_range_packed, 1);
            assert_ne!(l.tb2_fastreuse, NO_FIELD);
            assert_ne!(l.tb2_fastreuseport, NO_FIELD);
            assert_eq!(r.tb2_family(), Tb2Family::AddrType);
            assert_eq!(r.bind_address_no_port(), NoPortSource::InetFlags);
            let uf = r.update_fastreuse().unwrap();
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
            icsk_bind_hash,
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
        if r.bind_address_no_port() == NoPortSource::InetFlags {
            assert_eq!(
                l.inet_bind_address_no_port.byte_off,
                d.byte("inet_sock", "inet_flags")
            );
            assert_eq!(
                i64::from(l.inet_bind_address_no_port.shift),
                d.enumerators["INET_FLAGS_BIND_ADDRESS_NO_PORT"]
            );
        }
        if let Some(uf) = &r.update_fastreuse() {
            assert!(!uf.params.is_empty());
        }
    }
}
