//! The kernel variants portwatch knows: one row per change in the kernel's bind table, in
//! its port-sharing rules or in the functions portwatch hooks, with the release and commit
//! that introduced it and how the running kernel's BTF shows it. The layout builder
//! (`layout.rs`), the eBPF helpers (`portwatch-ebpf/src/compat.rs`), the hook table of the
//! fentry and kprobe backends, the rules of `explain` (`explain/variant.rs`) and the
//! report of `portwatch probes` all decide by these rows.
//!
//! A commit list is empty where no commit could be confirmed (version only).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    btf::KernelBtf,
    version::{release, KernelVersion},
    LayoutError,
};

/// Names a row of [`VARIANTS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Id {
    SkProtocolU16,
    TcpSysctlsU8,
    TaskPtRegs,
    BpfLoop,
    Bhash2,
    Tb2Deathrow,
    SocketPortRange,
    InetFlags,
    PackedPortRange,
    OwnersOnTb2,
    Tb2AddrType,
    V6onlyOwnerOnTb2,
    HashdanceSchedule,
    HashConnectPort0,
    Tb2Fastreuse,
    ConnectBind,
    UpdateFastreuseTb2,
    NsCommonType,
}

/// How a variant shows in BTF.
#[derive(Clone, Copy, Debug)]
pub enum Detect {
    /// The struct exists.
    Struct(&'static str),
    /// The struct has this member (a dotted path through embedded structs).
    Member(&'static str, &'static str),
    /// The member exists and is an integer of this many bytes.
    IntMember(&'static str, &'static str, usize),
    /// The function exists (as a BTF FUNC).
    Func(&'static str),
    /// The function has a parameter of this name.
    Param(&'static str, &'static str),
    /// Nothing in BTF (a change in a function's logic only): present by release, to the
    /// stable patch level, and checked by experiment by `explain selftest`.
    Release,
}

/// One kernel variant.
#[derive(Clone, Copy, Debug)]
pub struct Variant {
    pub id: Id,
    /// What changed, in a few words.
    pub change: &'static str,
    /// The mainline release that introduced it.
    pub since: KernelVersion,
    /// The commits that introduced it (empty: version only).
    pub commits: &'static [&'static str],
    /// Stable series that carry it as a backport (from release `patch` of the series;
    /// 0 where that release is not known).
    pub backports: &'static [KernelVersion],
    /// The mainline release that removed it again.
    pub until: Option<KernelVersion>,
    pub detect: Detect,
    /// What portwatch does on a kernel with it.
    pub with: &'static str,
    /// What portwatch does without it, and what is lost then.
    pub without: &'static str,
}

impl Variant {
    /// Whether release `v` carries the change (mainline or a listed stable backport),
    /// whatever a later release did with it (`until` is not applied).
    pub fn introduced_in(&self, v: KernelVersion) -> bool {
        self.since.reached(self.backports, v)
    }

    /// Whether the latest releases of stable series `series` have this variant.
    pub fn in_series(&self, series: impl Into<KernelVersion>) -> bool {
        let s = series.into().series();
        let added = self.since.series() <= s || self.backports.iter().any(|b| b.series() == s);
        added && self.until.is_none_or(|until| s < until.series())
    }

    /// "6.8 (822fb91fc724, b2cb9f9ef240)", "6.15 (version only)", with backports and
    /// removal.
    pub fn provenance(&self) -> String {
        let mut s = self.since.mainline();
        if self.commits.is_empty() {
            s.push_str(" (version only)");
        } else {
            s.push_str(&format!(" ({})", self.commits.join(", ")));
        }
        for b in self.backports {
            s.push_str(&format!(", backported to {}", b.stable()));
        }
        if let Some(until) = self.until {
            s.push_str(&format!(", gone in {}", until.mainline()));
        }
        s
    }
}

/// Every kernel variant portwatch knows, oldest first.
pub const VARIANTS: &[Variant] = &[
    Variant {
        id: Id::SkProtocolU16,
        change: "sock.sk_protocol is a u16 instead of an 8-bit bit field",
        since: release(5, 6),
        commits: &["bf9765145b85"],
        backports: &[],
        until: None,
        detect: Detect::IntMember("sock", "sk_protocol", 2),
        with: "sk_protocol read as a u16",
        without: "sk_protocol read as a byte when it is one; a bit field is refused",
    },
    Variant {
        id: Id::TcpSysctlsU8,
        change: "the tcp sysctls of struct netns_ipv4 narrowed to u8 (sysctl_tcp_tw_reuse among them)",
        since: release(5, 13),
        commits: &["4ecc1baf362c"],
        backports: &[KernelVersion::new(5, 10, 178)],
        until: None,
        detect: Detect::IntMember("net", "ipv4.sysctl_tcp_tw_reuse", 1),
        with: "explain connect reads tcp_tw_reuse as a byte",
        without: "explain connect reads tcp_tw_reuse as an int",
    },
    Variant {
        id: Id::TaskPtRegs,
        change: "the bpf_task_pt_regs helper: a task's user registers, so a syscall's arguments, readable at the syscall's exit",
        since: release(5, 15),
        commits: &["dd6e10fbd9fb"],
        backports: &[],
        until: None,
        detect: Detect::Func("bpf_task_pt_regs"),
        with: "tracepoint backend: bind() is read at sys_exit_bind alone (program bind_from_regs), its fd and address taken from the registers; sys_enter_bind is not attached",
        without: "tracepoint backend: sys_enter_bind keeps bind()'s fd and address for sys_exit_bind in a hash map (two program runs and a map entry per call)",
    },
    Variant {
        id: Id::BpfLoop,
        change: "the bpf_loop helper (and callbacks as subprograms in the verifier)",
        since: release(5, 17),
        commits: &["e6f2dd0f8067"],
        backports: &[],
        until: None,
        detect: Detect::Func("bpf_loop"),
        with: "walks driven by bpf_loop: one program run per walk, owner counts exact up to --max-owners (the object's probe_bpf_loop program confirms it at load)",
        without: "walks driven by bounded loops (5.3+): owner counts per event stop at the step budget (shown as ≥N), a bucket lookup deeper than the budget in its hash chain is reported as lookup_truncated, the snapshot resumes over several program runs",
    },
    Variant {
        id: Id::Bhash2,
        change: "per-address bind buckets (struct inet_bind2_bucket, the bhash2 table)",
        since: release(6, 1),
        commits: &["28044fc1d495"],
        backports: &[],
        until: None,
        detect: Detect::Struct("inet_bind2_bucket"),
        with: "dump -v lists the per-address buckets of a port",
        without: "no per-address buckets: dump -v groups owners by their own address",
    },
    Variant {
        id: Id::Tb2Deathrow,
        change: "TIME-WAIT sockets of a per-address bucket on tb2->deathrow",
        since: release(6, 2),
        commits: &["936a192f9740"],
        backports: &[KernelVersion::new(6, 1, 176)],
        until: Some(release(6, 8)),
        detect: Detect::Member("inet_bind2_bucket", "deathrow"),
        with: "not read: these kernels also keep every owner, TIME-WAIT included, on tb->owners",
        without: "nothing to do",
    },
    Variant {
        id: Id::SocketPortRange,
        change: "IP_LOCAL_PORT_RANGE: an ephemeral port range per socket (inet_sock.local_port_range)",
        since: release(6, 3),
        commits: &["91d0b78c5177"],
        backports: &[KernelVersion::new(6, 1, 31)],
        until: None,
        detect: Detect::Member("inet_sock", "local_port_range"),
        with: "each socket's own range shown in dump -v and trace (events also show the netns's range)",
        without: "no per-socket range: connect() searches the netns's",
    },
    Variant {
        id: Id::InetFlags,
        change: "inet_sock bit fields moved into inet_flags (bind_address_no_port among them)",
        since: release(6, 6),
        commits: &["ca571e2eb7eb"],
        backports: &[],
        until: None,
        detect: Detect::Member("inet_sock", "inet_flags"),
        with: "IP_BIND_ADDRESS_NO_PORT read as bit INET_FLAGS_BIND_ADDRESS_NO_PORT of inet_flags",
        without: "IP_BIND_ADDRESS_NO_PORT read from the inet_sock.bind_address_no_port bit field",
    },
    Variant {
        id: Id::PackedPortRange,
        change: "ip_local_ports.range packed into one u32 (hi << 16 | lo)",
        since: release(6, 8),
        commits: &["d9f28735af87"],
        backports: &[],
        until: None,
        detect: Detect::IntMember("net", "ipv4.ip_local_ports.range", 4),
        with: "the ephemeral range read as one u32",
        without: "the ephemeral range read as int[2]",
    },
    Variant {
        id: Id::OwnersOnTb2,
        change: "owners moved from tb->owners to the owners of each tb2 on tb->bhash2",
        since: release(6, 8),
        commits: &["822fb91fc724", "8002d44fe84d", "b2cb9f9ef240", "770041d337a8"],
        backports: &[],
        until: None,
        detect: Detect::Member("inet_bind_bucket", "bhash2"),
        with: "owners of a port are the sum of inet_bind2_bucket.owners over inet_bind_bucket.bhash2",
        without: "owners of a port are counted on inet_bind_bucket.owners",
    },
    Variant {
        id: Id::Tb2AddrType,
        change: "tb2 keeps addr_type instead of family and stores IPv4 addresses v4-mapped",
        since: release(6, 8),
        commits: &["5a22bba13d01", "06a8c04f8994"],
        backports: &[],
        until: None,
        detect: Detect::Member("inet_bind2_bucket", "addr_type"),
        with: "per-address buckets read as IPv6 addresses (v4-mapped shown as IPv4)",
        without: "per-address buckets read by their family (AF_INET or AF_INET6)",
    },
    Variant {
        id: Id::V6onlyOwnerOnTb2,
        change: "bind() to an IPv4 or v4-mapped address no longer conflicts with an IPV6_V6ONLY owner on the per-address path (__inet_bhash2_conflict)",
        since: release(6, 9),
        commits: &["ea111449501e"],
        backports: &[KernelVersion::new(6, 1, 168)],
        until: None,
        detect: Detect::Release,
        with: "explain: a v6-only owner does not block an IPv4 or v4-mapped bind() that checks per-address buckets",
        without: "explain: a v6-only wildcard owner blocks an IPv4 or v4-mapped bind() that checks per-address buckets",
    },
    Variant {
        id: Id::HashdanceSchedule,
        change: "inet_twsk_hashdance became inet_twsk_hashdance_schedule",
        since: release(6, 11),
        commits: &["b334b924c9b7"],
        backports: &[],
        until: None,
        detect: Detect::Func("inet_twsk_hashdance_schedule"),
        with: "fentry/kprobe hook inet_twsk_hashdance_schedule for TIME-WAIT take-overs",
        without: "fentry/kprobe hook inet_twsk_hashdance for TIME-WAIT take-overs",
    },
    Variant {
        id: Id::HashConnectPort0,
        change: "__inet_hash_connect gained a hash_port0 parameter",
        since: release(6, 15),
        commits: &[],
        backports: &[],
        until: None,
        detect: Detect::Param("__inet_hash_connect", "hash_port0"),
        with: "nothing to do: the hooks find `sk` by its name",
        without: "nothing to do",
    },
    Variant {
        id: Id::Tb2Fastreuse,
        change: "each per-address bucket (tb2) has its own fastreuse/fastreuseport",
        since: release(6, 18),
        commits: &["d57f4b874946"],
        backports: &[],
        until: None,
        detect: Detect::Member("inet_bind2_bucket", "fastreuse"),
        with: "dump -v shows fastreuse/fastreuseport per address, trace the state of each socket's own address",
        without: "fastreuse only per port",
    },
    Variant {
        id: Id::ConnectBind,
        change: "connect()-bound owners are marked (SOCK_CONNECT_BIND in sk_userlocks, tw_connect_bind); releasing a port resets a bucket to -1/-1 when only connect()-bound owners remain (inet_bind{,2}_bucket_destroy() then runs on a bucket that keeps its owners)",
        since: release(6, 18),
        commits: &["d57f4b874946"],
        backports: &[],
        until: None,
        detect: Detect::Member("inet_timewait_sock", "tw_connect_bind"),
        with: "dump -v and trace show each owner as connect()-bound or bound; a release that leaves only connect()-bound owners shows fastreuse/fastreuseport back at -1, the bucket not destroyed",
        without: "the kernel does not record how an owner got its port; a bucket keeps its state until it is destroyed",
    },
    Variant {
        id: Id::UpdateFastreuseTb2,
        change: "inet_csk_update_fastreuse(tb, sk) became inet_csk_update_fastreuse(sk, tb, tb2)",
        since: release(6, 18),
        commits: &["d57f4b874946"],
        backports: &[],
        until: None,
        detect: Detect::Param("inet_csk_update_fastreuse", "tb2"),
        with: "not hooked (inet_csk_get_port's return reports the state after it); signature shown by probes",
        without: "not hooked; signature shown by probes",
    },
    Variant {
        id: Id::NsCommonType,
        change: "ns_common gained ns_type before inum (inum moved from offset 16 to 24)",
        since: release(6, 18),
        commits: &[],
        backports: &[],
        until: None,
        detect: Detect::Member("ns_common", "ns_type"),
        with: "nothing to do: ns.inum is read at its BTF offset",
        without: "nothing to do",
    },
];

/// The row of `id`.
pub fn variant(id: Id) -> &'static Variant {
    VARIANTS
        .iter()
        .find(|v| v.id == id)
        .unwrap_or_else(|| unreachable!("every Id has a row (tested)"))
}

/// Which variants a kernel has.
pub type Detected = BTreeMap<Id, bool>;

/// Evaluates every row with a BTF signature against `btf` (rows detected by release are
/// left out). Only malformed BTF is an error; a missing struct, member or function means
/// the variant is absent.
pub fn detect(btf: &KernelBtf) -> Result<Detected, LayoutError> {
    VARIANTS
        .iter()
        .filter(|v| !matches!(v.detect, Detect::Release))
        .map(|v| Ok((v.id, detect_one(btf, v.detect)?)))
        .collect()
}

fn detect_one(btf: &KernelBtf, d: Detect) -> Result<bool, LayoutError> {
    Ok(match d {
        Detect::Struct(s) => btf.has_struct(s),
        Detect::Member(s, m) => btf.has_member(s, m)?,
        Detect::IntMember(s, m, size) => {
            btf.has_member(s, m)?
                && btf
                    .field(s, m)
                    .ok()
                    .filter(|f| f.bits == 0)
                    .and_then(|f| btf.int_size(f.tid))
                    == Some(size)
        }
        Detect::Func(f) => btf.func_params(f).is_some(),
        Detect::Param(f, p) => btf
            .func_params(f)
            .is_some_and(|ps| ps.iter().any(|x| x == p)),
        Detect::Release => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{fake_kernel::FakeKernel, layout_from_btf_bytes};

    /// The rows BTF shows.
    fn in_btf() -> impl Iterator<Item = &'static Variant> {
        VARIANTS
            .iter()
            .filter(|v| !matches!(v.detect, Detect::Release))
    }

    #[test]
    fn every_id_has_exactly_one_row_and_rows_are_oldest_first() {
        let mut ids: Vec<Id> = VARIANTS.iter().map(|v| v.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), VARIANTS.len(), "an Id has two rows");
        for v in VARIANTS {
            assert_eq!(variant(v.id).id, v.id);
        }
        assert!(
            VARIANTS.windows(2).all(|w| w[0].since <= w[1].since),
            "rows are ordered by release"
        );
    }

    #[test]
    fn rows_name_abbreviated_commits_and_consistent_releases() {
        for v in VARIANTS {
            for c in v.commits {
                assert!(
                    c.len() == 12 && c.chars().all(|x| x.is_ascii_hexdigit()),
                    "{:?}: commit {c}",
                    v.id
                );
            }
            for b in v.backports {
                assert!(
                    *b < v.since,
                    "{:?}: a backport goes to an older series",
                    v.id
                );
            }
            if let Some(until) = v.until {
                assert!(until > v.since, "{:?}", v.id);
            }
        }
        assert_eq!(
            variant(Id::OwnersOnTb2).provenance(),
            "6.8 (822fb91fc724, 8002d44fe84d, b2cb9f9ef240, 770041d337a8)"
        );
        assert_eq!(
            variant(Id::Tb2Deathrow).provenance(),
            "6.2 (936a192f9740), backported to 6.1.176, gone in 6.8"
        );
        assert_eq!(
            variant(Id::NsCommonType).provenance(),
            "6.18 (version only)"
        );
    }

    #[test]
    fn in_series_follows_releases_backports_and_removal() {
        let deathrow = variant(Id::Tb2Deathrow);
        assert!(!deathrow.in_series((5, 15)));
        assert!(deathrow.in_series((6, 1)));
        assert!(deathrow.in_series((6, 7)));
        assert!(!deathrow.in_series((6, 8)));
        let owners = variant(Id::OwnersOnTb2);
        assert!(!owners.in_series((6, 7)) && owners.in_series((6, 8)) && owners.in_series((7, 3)));
    }

    /// The fake kernels derived from the 6.18-like one have exactly the variants their
    /// series has, as the running kernel's BTF would show them, and each resolves.
    #[test]
    fn derived_kernels_have_the_variants_of_their_series() {
        for series in [(5, 10), (5, 15), (6, 1), (6, 6), (6, 8), (6, 12), (6, 18)] {
            let k = FakeKernel::linux_6_18().rewound_to(series);
            let detected = k.detected();
            for v in in_btf() {
                assert_eq!(
                    detected[&v.id],
                    v.in_series(series),
                    "{series:?}: {:?}",
                    v.id
                );
            }
            let r = layout_from_btf_bytes(&k.encode(), "derived")
                .unwrap_or_else(|e| panic!("{series:?}: {e}"));
            assert_eq!(r.variants, detected);
        }
        assert_eq!(
            FakeKernel::linux_6_18().rewound_to((6, 18)),
            FakeKernel::linux_6_18()
        );
    }

    /// Each variant, taken away from the 6.18-like kernel on its own (or given to it,
    /// for the one 6.8 removed), is what detection sees change.
    #[test]
    fn each_variant_is_detected_by_its_own_row() {
        let base = FakeKernel::linux_6_18().detected();
        for v in in_btf() {
            if v.id == Id::Bhash2 {
                continue; // every per-address variant goes with it
            }
            let mut k = FakeKernel::linux_6_18();
            k.set_variant(v.id, !base[&v.id]);
            let now = k.detected();
            for w in in_btf() {
                let expect = if w.id == v.id {
                    !base[&w.id]
                } else {
                    base[&w.id]
                };
                assert_eq!(now[&w.id], expect, "toggling {:?} changed {:?}", v.id, w.id);
            }
        }
    }
}
