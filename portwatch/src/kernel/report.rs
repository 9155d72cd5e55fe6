//! What portwatch found out about the running kernel, as text lines and JSON (used by
//! `portwatch probes`): every row of the compatibility table with whether this kernel
//! has it and what portwatch does about it, the owner counting mode, and the hooked
//! functions' signatures and where they are in the kernel's text.
use serde_json::{json, Value};

use super::{
    compat::{Detect, Variant, VARIANTS},
    layout::{NoPortSource, Resolved, Tb2Family},
    KernelVersion,
};

impl Resolved {
    /// One line per fact, for a `--info` style feature report.
    pub fn describe(&self) -> Vec<String> {
        let mut out = vec![
            format!("kernel {}", self.kernel_release),
            format!("owners: {}", self.owners_mode()),
        ];
        out.push(match self.tb2_family() {
            Tb2Family::Family => "inet_bind2_bucket family: `family` (AF_*)".to_string(),
            Tb2Family::AddrType => {
                "inet_bind2_bucket family: `addr_type` (ipv6_addr_type)".to_string()
            }
            Tb2Family::Absent => "inet_bind2_bucket family: not available".to_string(),
        });
        out.push(match self.bind_address_no_port() {
            NoPortSource::BitField => {
                "IP_BIND_ADDRESS_NO_PORT: inet_sock.bind_address_no_port".to_string()
            }
            NoPortSource::InetFlags => format!(
                "IP_BIND_ADDRESS_NO_PORT: bit {} of inet_sock.inet_flags",
                self.layout.inet_bind_address_no_port.shift
            ),
        });
        out.extend(
            self.function_lines()
                .into_iter()
                .map(|l| format!("function {l}")),
        );
        out
    }

    /// Two lines per row of the compatibility table: whether this kernel has it, where it
    /// comes from and what it changed; then what portwatch does about it here.
    pub fn variant_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        let running = KernelVersion::running().ok();
        for v in VARIANTS {
            let has = present(self, v, running);
            let how = if matches!(v.detect, Detect::Release) {
                " (by release: BTF does not show it; explain selftest checks it by experiment)"
            } else {
                ""
            };
            out.push(format!(
                "[{}] {}: {}{how}",
                if has { "x" } else { " " },
                v.provenance(),
                v.change
            ));
            out.push(format!("    -> {}", if has { v.with } else { v.without }));
        }
        out
    }

    /// `name(params)` or `name: absent` for each tracked function, with where it is in
    /// the kernel's text when that was read (`; text symbol, ftrace-able`).
    pub fn function_lines(&self) -> Vec<String> {
        self.functions
            .iter()
            .map(|(name, params)| {
                let mut l = match params {
                    Some(p) => format!("{name}({})", p.join(", ")),
                    None => format!("{name}: absent"),
                };
                if let (Some(_), Some(site)) = (params, self.site(name)) {
                    l.push_str(&format!("; {}", site.describe()));
                }
                l
            })
            .collect()
    }

    /// The same facts as JSON.
    pub fn report_json(&self) -> Value {
        let running = KernelVersion::running().ok();
        let variants: Vec<Value> = VARIANTS
            .iter()
            .map(|v| variant_json(v, present(self, v, running)))
            .collect();
        json!({
            "kernel": self.kernel_release,
            "owners_mode": self.owners_mode(),
            "variants": variants,
            "functions": self.functions,
            // Sites of the functions this kernel has: a name BTF lacks is absent, not
            // inlined.
            "sites": self.sites.as_ref().map(|sites| {
                sites
                    .iter()
                    .filter(|(f, _)| self.has_function(f))
                    .collect::<std::collections::BTreeMap<_, _>>()
            }),
        })
    }
}

/// Whether the kernel has row `v`: by its BTF, or for a row BTF does not show, by the
/// running kernel's release (`/proc/version`, to the stable patch level).
fn present(r: &Resolved, v: &Variant, running: Option<KernelVersion>) -> bool {
    match v.detect {
        Detect::Release => running.is_some_and(|k| v.introduced_in(k)),
        _ => r.has(v.id),
    }
}

fn variant_json(v: &Variant, present: bool) -> Value {
    json!({
        "id": v.id,
        "present": present,
        "change": v.change,
        "since": v.since.mainline(),
        "commits": v.commits,
        "backports": v.backports.iter().map(|r| r.stable()).collect::<Vec<_>>(),
        "until": v.until.map(|r| r.mainline()),
        "effect": if present { v.with } else { v.without },
    })
}
