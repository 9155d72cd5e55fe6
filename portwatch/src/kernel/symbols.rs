//! Where the hooked functions really are in the running kernel's text. BTF names a
//! function even when the build inlined it into its callers or split it into compiler
//! clones, and a kprobe or fentry on the name then misses the calls that go elsewhere:
//!
//! - `F.part.N` (partial inlining): callers run the head of `F` inlined and call the
//!   outlined rest, never `F`;
//! - `F.isra.N`, `F.constprop.N` (changed signature, propagated constants): callers call
//!   the clone instead of `F`;
//! - `F.cold` (or `F.cold.N`): the unlikely paths of `F` moved out of line; every call
//!   still enters `F`, so it is only noted;
//! - no text symbol `F` at all: inlined everywhere.
//!
//! The text symbols come from /proc/kallsyms; tracefs `available_filter_functions` says
//! what ftrace (hence fentry/fexit) can attach to. Both are read once per boot (the
//! result is part of the cached [`super::Resolved`]).
use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};

/// Where `/proc/kallsyms` is.
pub const KALLSYMS: &str = "/proc/kallsyms";

/// Suffixes of the clones callers may call instead of the function.
const CALLER_CLONES: [&str; 3] = [".part.", ".isra.", ".constprop."];

/// What the running kernel's text has of one function.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookSite {
    /// `F` itself is a text symbol.
    pub symbol: bool,
    /// Clones callers may call instead of `F` (`F.part.N`, `F.isra.N`, `F.constprop.N`).
    pub clones: Vec<String>,
    /// Out-of-line cold parts (`F.cold`): noted only.
    pub cold: Vec<String>,
    /// `F` is in `available_filter_functions`; `None` when that list could not be read.
    pub ftrace: Option<bool>,
}

/// Whether a hook on a function can see every call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Usable,
    /// It cannot: why (names what the kernel has instead).
    Unusable(String),
}

impl HookSite {
    /// Whether a kprobe (`ftrace_needed` false) or fentry (true) on the function sees every
    /// call.
    pub fn verdict(&self, func: &str, ftrace_needed: bool) -> Verdict {
        if !self.clones.is_empty() {
            return Verdict::Unusable(format!(
                "callers may call its compiler clones {} instead of {func} (a hook on {func} \
                 misses those calls)",
                self.clones.join(", ")
            ));
        }
        if !self.symbol {
            return Verdict::Unusable(format!(
                "{func} is in BTF but not a text symbol in {KALLSYMS}: inlined into its callers"
            ));
        }
        if ftrace_needed && self.ftrace == Some(false) {
            return Verdict::Unusable(format!(
                "{func} is not in available_filter_functions: ftrace (fentry/fexit) cannot \
                 attach to it"
            ));
        }
        Verdict::Usable
    }

    /// One line for `portwatch probes`: `text symbol, ftrace-able`, `inlined`, ...
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.symbol {
            parts.push("text symbol".to_owned());
        } else {
            parts.push("no text symbol (inlined)".to_owned());
        }
        if !self.clones.is_empty() {
            parts.push(format!("clones {}", self.clones.join(", ")));
        }
        if !self.cold.is_empty() {
            parts.push(format!("cold part {}", self.cold.join(", ")));
        }
        parts.push(match self.ftrace {
            Some(true) => "ftrace-able".to_owned(),
            Some(false) => "not in available_filter_functions".to_owned(),
            None => "available_filter_functions unreadable".to_owned(),
        });
        parts.join(", ")
    }
}

/// The sites of `funcs` in a kallsyms text and, when readable, an
/// `available_filter_functions` text. Only text symbols of vmlinux count (modules are
/// named in brackets; TCP is built in).
pub fn sites(
    funcs: &[&str],
    kallsyms: &str,
    filter_functions: Option<&str>,
) -> BTreeMap<String, HookSite> {
    let mut out: BTreeMap<String, HookSite> = funcs
        .iter()
        .map(|f| {
            (
                (*f).to_owned(),
                HookSite {
                    ftrace: filter_functions.map(|_| false),
                    ..HookSite::default()
                },
            )
        })
        .collect();
    for line in kallsyms.lines() {
        let mut w = line.split_whitespace();
        let (Some(_addr), Some(kind), Some(name)) = (w.next(), w.next(), w.next()) else {
            continue;
        };
        if w.next().is_some() || !matches!(kind, "t" | "T") {
            continue;
        }
        let base = name.split('.').next().unwrap_or(name);
        let Some(site) = out.get_mut(base) else {
            continue;
        };
        if name == base {
            site.symbol = true;
        } else if CALLER_CLONES
            .iter()
            .any(|c| name[base.len()..].starts_with(c))
        {
            site.clones.push(name.to_owned());
        } else if name[base.len()..].starts_with(".cold") {
            site.cold.push(name.to_owned());
        }
    }
    if let Some(ff) = filter_functions {
        for line in ff.lines() {
            // "name" or "name [module]".
            let Some(name) = line.split_whitespace().next() else {
                continue;
            };
            if let Some(site) = out.get_mut(name) {
                site.ftrace = Some(true);
            }
        }
    }
    for site in out.values_mut() {
        site.clones.sort();
        site.clones.dedup();
        site.cold.sort();
        site.cold.dedup();
    }
    out
}

/// The sites of `funcs` in the running kernel; `None` when /proc/kallsyms cannot be read.
pub fn host_sites(funcs: &[&str], tracefs_roots: &[&str]) -> Option<BTreeMap<String, HookSite>> {
    let kallsyms = std::fs::read_to_string(KALLSYMS).ok()?;
    let ff = tracefs_roots.iter().find_map(|r| {
        std::fs::read_to_string(Path::new(r).join("available_filter_functions")).ok()
    });
    Some(sites(funcs, &kallsyms, ff.as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KALLSYMS_TEXT: &str = "\
ffffffff82062160 T inet_bind_bucket_destroy
ffffffff82062440 T inet_put_port
ffffffff82063420 t __inet_inherit_port
ffffffff82067c80 T inet_csk_update_fastreuse
ffffffff82067c90 t inet_csk_update_fastreuse.cold
ffffffff82063f60 t __inet_hash_connect.part.0
ffffffff82064bd0 t inet_twsk_bind_unhash.isra.0
ffffffff82064bd0 T inet_twsk_bind_unhash
ffffffff82065250 d inet_csk_get_port
ffffffffc0001000 t inet_csk_get_port [some_module]
ffffffff82067e70 T inet_csk_get_portal
";

    const FILTER: &str =
        "inet_put_port\n__inet_inherit_port\ninet_csk_update_fastreuse\ninet_twsk_bind_unhash\n";

    fn all() -> BTreeMap<String, HookSite> {
        sites(
            &[
                "inet_put_port",
                "__inet_inherit_port",
                "inet_csk_update_fastreuse",
                "__inet_hash_connect",
                "inet_twsk_bind_unhash",
                "inet_csk_get_port",
            ],
            KALLSYMS_TEXT,
            Some(FILTER),
        )
    }

    #[test]
    fn whole_functions_are_usable_by_both_backends() {
        let s = all();
        let put = &s["inet_put_port"];
        assert_eq!(
            put,
            &HookSite {
                symbol: true,
                ftrace: Some(true),
                ..HookSite::default()
            }
        );
        assert_eq!(put.verdict("inet_put_port", true), Verdict::Usable);
        assert_eq!(put.describe(), "text symbol, ftrace-able");
        // A local (t) symbol counts as well.
        assert_eq!(
            s["__inet_inherit_port"].verdict("__inet_inherit_port", true),
            Verdict::Usable
        );
    }

    #[test]
    fn a_cold_part_is_only_noted() {
        let s = &all()["inet_csk_update_fastreuse"];
        assert_eq!(s.cold, ["inet_csk_update_fastreuse.cold"]);
        assert_eq!(
            s.verdict("inet_csk_update_fastreuse", true),
            Verdict::Usable
        );
        assert!(s
            .describe()
            .contains("cold part inet_csk_update_fastreuse.cold"));
    }

    #[test]
    fn clones_callers_may_call_make_the_hook_unusable() {
        let s = all();
        let hc = &s["__inet_hash_connect"];
        assert!(!hc.symbol);
        assert_eq!(hc.clones, ["__inet_hash_connect.part.0"]);
        let Verdict::Unusable(why) = hc.verdict("__inet_hash_connect", false) else {
            panic!("a .part clone must refuse the hook")
        };
        assert!(why.contains("__inet_hash_connect.part.0"), "{why}");
        // The function and an .isra clone: some callers call the clone.
        let tw = &s["inet_twsk_bind_unhash"];
        assert!(tw.symbol);
        assert!(matches!(
            tw.verdict("inet_twsk_bind_unhash", false),
            Verdict::Unusable(_)
        ));
    }

    #[test]
    fn no_text_symbol_is_inlined_and_modules_and_data_do_not_count() {
        let s = &all()["inet_csk_get_port"];
        assert!(!s.symbol && s.clones.is_empty(), "{s:?}");
        let Verdict::Unusable(why) = s.verdict("inet_csk_get_port", false) else {
            panic!("inlined")
        };
        assert!(why.contains("inlined"), "{why}");
    }

    #[test]
    fn ftrace_matters_for_fentry_only() {
        let s = sites(&["inet_put_port"], KALLSYMS_TEXT, Some("other\n"));
        let put = &s["inet_put_port"];
        assert_eq!(put.ftrace, Some(false));
        assert_eq!(put.verdict("inet_put_port", false), Verdict::Usable);
        assert!(matches!(
            put.verdict("inet_put_port", true),
            Verdict::Unusable(_)
        ));
        // An unreadable list (function tracing locked down) is not a refusal.
        let s = sites(&["inet_put_port"], KALLSYMS_TEXT, None);
        assert_eq!(s["inet_put_port"].ftrace, None);
        assert_eq!(
            s["inet_put_port"].verdict("inet_put_port", true),
            Verdict::Usable
        );
        assert!(s["inet_put_port"]
            .describe()
            .ends_with("available_filter_functions unreadable"));
    }

    #[test]
    fn the_running_kernel_has_every_hooked_function_whole() {
        // On the kernels checked (5.10 to 7.3 and this host), every hooked function is a
        // plain text symbol; a build that inlines or splits one shows here first.
        let Some(s) = host_sites(
            &crate::kernel::TRACKED_FUNCTIONS,
            &crate::backend::tracefs::CANDIDATES,
        ) else {
            eprintln!("skipping: {KALLSYMS} unreadable");
            return;
        };
        for f in [
            "inet_csk_get_port",
            "__inet_hash_connect",
            "inet_put_port",
            "__inet_inherit_port",
        ] {
            assert!(s[f].symbol && s[f].clones.is_empty(), "{f}: {:?}", s[f]);
        }
    }
}
