//! The metrics of `portwatch export`: their names (fixed, dashboards and alerts rely on
//! them), the values of one scrape ([`Sample`]), the choice between the Prometheus text
//! format and OpenMetrics from the request's `Accept` header ([`Format::negotiate`]), and
//! the encoding, done by the `prometheus-client` crate.
//!
//! A sample is gathered by the collector at scrape time and encoded here without I/O.

use std::{sync::Arc, time::Duration};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, info::Info, MetricType},
    registry::Registry,
};

/// Metric family names as registered (counters get `_total` and infos `_info` appended by
/// the encoder, so the series are e.g. `portwatch_bind_errors_total`, `portwatch_build_info`).
pub mod names {
    pub const EPHEMERAL_RANGE_PORTS: &str = "portwatch_ephemeral_range_ports";
    pub const EPHEMERAL_PORTS: &str = "portwatch_ephemeral_ports";
    pub const BIND_BUCKETS: &str = "portwatch_bind_buckets";
    pub const BIND_ERRORS: &str = "portwatch_bind_errors";
    pub const CONNECT_ERRORS: &str = "portwatch_connect_errors";
    pub const ERRORS_OVERFLOW: &str = "portwatch_errors_overflow";
    pub const EVENTS_LOST: &str = "portwatch_events_lost";
    pub const SCRAPE_DURATION: &str = "portwatch_scrape_duration_seconds";
    pub const BUILD: &str = "portwatch_build";
    pub const NETNS_NAME: &str = "portwatch_netns_name";
}

/// `portwatch_build_info` labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildInfo {
    pub version: String,
    /// The probe backend in use (`fentry`, `kprobe`, `tracepoint`).
    pub backend: String,
    /// The running kernel's release (`uname -r`).
    pub kernel: String,
}

/// Ports of a namespace's ephemeral range by what connect() can still do with them (the
/// numbers of `top`'s header).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStates {
    /// No bucket: connect() may take it.
    pub free: u32,
    /// Buckets at fastreuse -1 only: connect() may share it with a unique 4-tuple.
    pub shared: u32,
    /// A bucket at fastreuse 0/+1: connect() skips it.
    pub blocked: u32,
}

/// Bind buckets of a namespace by `fastreuse` value, keyed by the renderer's spelling of
/// it (`-1`, `0`, `+1`).
pub type BucketCounts = Vec<(String, u64)>;

/// Failed syscalls of a namespace by the renderer's spelling of the errno (`EADDRINUSE`,
/// ...), counted in the kernel.
pub type ErrnoCounts = Vec<(String, u64)>;

/// A human name for a network namespace and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetnsLabel {
    pub name: String,
    /// `host`, `netns` (/run/netns), `docker`, `kubernetes`, `containerd`, `crio`,
    /// `podman`, `systemd`, `comm`.
    pub source: &'static str,
}

/// The values of one network namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetnsSample {
    /// The namespace's inode (`ls -Li /proc/PID/ns/net`).
    pub netns: u32,
    pub name: Option<NetnsLabel>,
    /// `ip_local_port_range` minus `ip_local_reserved_ports`, when it could be read.
    pub range_ports: Option<u32>,
    pub ports: Option<PortStates>,
    pub buckets: BucketCounts,
    pub bind_errors: ErrnoCounts,
    pub connect_errors: ErrnoCounts,
}

/// Everything one scrape reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    pub build: BuildInfo,
    /// Events the kernel could not hand to user space (ring buffer full), since start.
    pub events_lost: u64,
    /// Failed bind()/connect() calls in no namespace's counts: the kernel's counter map
    /// was full.
    pub errors_unslotted: u64,
    /// How long gathering this sample took.
    pub duration: Duration,
    /// Sorted by inode.
    pub namespaces: Vec<NetnsSample>,
}

/// The two exposition formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The classic Prometheus text format 0.0.4 (`text/plain; version=0.0.4`).
    PrometheusText,
    /// OpenMetrics 1.0.0 text (`application/openmetrics-text; version=1.0.0`).
    OpenMetrics,
}

/// `Content-Type` of the OpenMetrics text format as served.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::PrometheusText => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }

    /// The format to serve for an `Accept` header: OpenMetrics when the client ranks
    /// `application/openmetrics-text` (version 1.0.0 or unversioned) above the Prometheus
    /// text format, the text format otherwise, including without a header, for `*/*`,
    /// and when nothing listed is served here (as the Go client library does).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::PrometheusText;
        };
        let mut best_om: f32 = 0.0;
        let mut best_text: f32 = 0.0;
        for range in accept.split(',') {
            let Ok(m) = range.trim().parse::<mime::Mime>() else {
                continue;
            };
            let q = m
                .get_param("q")
                .and_then(|q| q.as_str().parse::<f32>().ok())
                .filter(|q| (0.0..=1.0).contains(q))
                .unwrap_or(1.0);
            let version = m.get_param("version").map(|v| v.as_str().to_owned());
            match (m.type_().as_str(), m.subtype().as_str()) {
                ("application", "openmetrics-text")
                    if version.as_deref().is_none_or(|v| v == "1.0.0") =>
                {
                    best_om = best_om.max(q);
                }
                ("text", "plain") if version.as_deref().is_none_or(|v| v == "0.0.4") => {
                    best_text = best_text.max(q);
                }
                _ => {}
            }
        }
        if best_om > 0.0 && best_om > best_text {
            Format::OpenMetrics
        } else {
            Format::PrometheusText
        }
    }
}

/// The exposition of `sample` in `format`.
pub fn encode(sample: &Sample, format: Format) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SampleCollector(Arc::new(sample.clone()))));
    let mut out = String::with_capacity(4096);
    match format {
        Format::PrometheusText => {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?
        }
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry)?,
    }
    Ok(out)
}

#[derive(Debug)]
struct SampleCollector(Arc<Sample>);

fn netns_label(ns: &NetnsSample) -> (&'static str, String) {
    ("netns", ns.netns.to_string())
}

impl Collector for SampleCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &*self.0;

        let info = Info::new([
            ("version", s.build.version.clone()),
            ("backend", s.build.backend.clone()),
            ("kernel", s.build.kernel.clone()),
        ]);
        info.encode(enc.encode_descriptor(
            names::BUILD,
            "portwatch's version, the probe backend in use and the running kernel",
            None,
            info.metric_type(),
        )?)?;

        {
            let mut m = enc.encode_descriptor(
                names::NETNS_NAME,
                "A human name for a network namespace inode: /run/netns/NAME, the container or pod of its cgroup, or the comm of a process inside",
                None,
                MetricType::Info,
            )?;
            for ns in s.namespaces.iter() {
                if let Some(label) = &ns.name {
                    let labels = [
                        netns_label(ns),
                        ("name", label.name.clone()),
                        ("source", label.source.to_owned()),
                    ];
                    m.encode_info(&labels)?;
                }
            }
        }

        {
            let mut m = enc.encode_descriptor(
                names::EPHEMERAL_RANGE_PORTS,
                "Ports of ip_local_port_range minus ip_local_reserved_ports in the namespace",
                None,
                MetricType::Gauge,
            )?;
            for ns in s.namespaces.iter() {
                if let Some(n) = ns.range_ports {
                    ConstGauge::new(i64::from(n)).encode(m.encode_family(&[netns_label(ns)])?)?;
                }
            }
        }

        {
            let mut m = enc.encode_descriptor(
                names::EPHEMERAL_PORTS,
                "Ports of the ephemeral range by state: free (no bind bucket), shared (buckets at fastreuse -1 only: connect() can reuse the port with a unique 4-tuple), blocked (a bucket at 0 or +1: connect() skips it)",
                None,
                MetricType::Gauge,
            )?;
            for ns in s.namespaces.iter() {
                if let Some(p) = ns.ports {
                    for (state, v) in [
                        ("free", p.free),
                        ("shared", p.shared),
                        ("blocked", p.blocked),
                    ] {
                        let labels = [netns_label(ns), ("state", state.to_owned())];
                        ConstGauge::new(i64::from(v)).encode(m.encode_family(&labels)?)?;
                    }
                }
            }
        }

        {
            let mut m = enc.encode_descriptor(
                names::BIND_BUCKETS,
                "TCP bind buckets (bhash) of the namespace by fastreuse state",
                None,
                MetricType::Gauge,
            )?;
            for ns in s.namespaces.iter() {
                for (fastreuse, n) in &ns.buckets {
                    let labels = [netns_label(ns), ("fastreuse", fastreuse.clone())];
                    ConstGauge::new(saturating_i64(*n)).encode(m.encode_family(&labels)?)?;
                }
            }
        }

        for (name, help, pick) in [
            (
                names::BIND_ERRORS,
                "Failed TCP bind() calls by errno, counted in the kernel since the exporter started (backend tracepoint: every failed bind(); fentry, kprobe: every bind() the kernel's port choice refused, EADDRINUSE)",
                (|ns: &NetnsSample| &ns.bind_errors) as fn(&NetnsSample) -> &ErrnoCounts,
            ),
            (
                names::CONNECT_ERRORS,
                "Failed TCP connect() calls by errno, counted in the kernel since the exporter started (backend tracepoint: every failed connect(); fentry, kprobe: every connect() the kernel's port choice refused, EADDRNOTAVAIL)",
                |ns: &NetnsSample| &ns.connect_errors,
            ),
        ] {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for ns in s.namespaces.iter() {
                for (errno, n) in pick(ns) {
                    let labels = [netns_label(ns), ("errno", errno.clone())];
                    ConstCounter::new(*n).encode(m.encode_family(&labels)?)?;
                }
            }
        }

        let overflow = ConstCounter::new(s.errors_unslotted);
        overflow.encode(enc.encode_descriptor(
            names::ERRORS_OVERFLOW,
            "Failed TCP bind()/connect() calls in no portwatch_bind_errors_total or portwatch_connect_errors_total series: the kernel's counter map was full",
            None,
            overflow.metric_type(),
        )?)?;

        let lost = ConstCounter::new(s.events_lost);
        lost.encode(enc.encode_descriptor(
            names::EVENTS_LOST,
            "Events the kernel dropped because the ring buffer to user space was full",
            None,
            lost.metric_type(),
        )?)?;

        let took = ConstGauge::new(s.duration.as_secs_f64());
        took.encode(enc.encode_descriptor(
            names::SCRAPE_DURATION,
            "Seconds spent gathering the values of this scrape",
            None,
            took.metric_type(),
        )?)?;
        Ok(())
    }
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Sample {
        Sample {
            build: BuildInfo {
                version: "0.1.0".into(),
                backend: "tracepoint".into(),
                kernel: "6.18.44".into(),
            },
            events_lost: 3,
            errors_unslotted: 0,
            duration: Duration::from_millis(2),
            namespaces: vec![
                NetnsSample {
                    netns: 4026531840,
                    name: Some(NetnsLabel {
                        name: "host".into(),
                        source: "host",
                    }),
                    range_ports: Some(10),
                    ports: Some(PortStates {
                        free: 5,
                        shared: 2,
                        blocked: 3,
                    }),
                    buckets: vec![("-1".into(), 2), ("0".into(), 3), ("+1".into(), 0)],
                    bind_errors: vec![("EADDRINUSE".into(), 1)],
                    connect_errors: vec![],
                },
                NetnsSample {
                    netns: 4026532300,
                    name: None,
                    range_ports: None,
                    ports: None,
                    buckets: vec![],
                    bind_errors: vec![],
                    connect_errors: vec![("EADDRNOTAVAIL".into(), 1)],
                },
            ],
        }
    }

    #[test]
    fn negotiation_follows_the_accept_header() {
        use Format::*;
        assert_eq!(Format::negotiate(None), PrometheusText);
        assert_eq!(Format::negotiate(Some("*/*")), PrometheusText);
        assert_eq!(Format::negotiate(Some("text/plain")), PrometheusText);
        assert_eq!(Format::negotiate(Some("application/json")), PrometheusText);
        assert_eq!(Format::negotiate(Some("garbage;;;,")), PrometheusText);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text")),
            OpenMetrics
        );
        // What Prometheus 2.x sends.
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            )),
            OpenMetrics
        );
        // A client that prefers the text format, or asks for an OpenMetrics version not served.
        assert_eq!(
            Format::negotiate(Some(
                "text/plain;version=0.0.4;q=0.9,application/openmetrics-text;q=0.5"
            )),
            PrometheusText
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; version=0.0.1")),
            PrometheusText
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0")),
            PrometheusText
        );
    }

    #[test]
    fn text_format_has_the_fixed_names_and_values() {
        let text = encode(&sample(), Format::PrometheusText).unwrap();
        for line in [
            "# TYPE portwatch_build_info gauge",
            r#"portwatch_build_info{version="0.1.0",backend="tracepoint",kernel="6.18.44"} 1"#,
            r#"portwatch_netns_name_info{netns="4026531840",name="host",source="host"} 1"#,
            r#"portwatch_ephemeral_range_ports{netns="4026531840"} 10"#,
            r#"portwatch_ephemeral_ports{netns="4026531840",state="free"} 5"#,
            r#"portwatch_ephemeral_ports{netns="4026531840",state="shared"} 2"#,
            r#"portwatch_ephemeral_ports{netns="4026531840",state="blocked"} 3"#,
            r#"portwatch_bind_buckets{netns="4026531840",fastreuse="-1"} 2"#,
            r#"portwatch_bind_buckets{netns="4026531840",fastreuse="+1"} 0"#,
            "# TYPE portwatch_bind_errors_total counter",
            r#"portwatch_bind_errors_total{netns="4026531840",errno="EADDRINUSE"} 1"#,
            r#"portwatch_connect_errors_total{netns="4026532300",errno="EADDRNOTAVAIL"} 1"#,
            "portwatch_events_lost_total 3",
            "portwatch_errors_overflow_total 0",
            "portwatch_scrape_duration_seconds 0.002",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        assert!(!text.contains("# EOF"), "{text}");
        // A namespace without a name or a readable range has no such series.
        assert!(
            !text.contains(r#"portwatch_netns_name_info{netns="4026532300""#),
            "{text}"
        );
        assert!(
            !text.contains(r#"portwatch_ephemeral_range_ports{netns="4026532300"}"#),
            "{text}"
        );
    }

    #[test]
    fn openmetrics_has_types_and_eof() {
        let text = encode(&sample(), Format::OpenMetrics).unwrap();
        assert!(text.ends_with("# EOF\n"), "{text}");
        for line in [
            "# TYPE portwatch_build info",
            "# TYPE portwatch_netns_name info",
            "# TYPE portwatch_bind_errors counter",
            r#"portwatch_bind_errors_total{netns="4026531840",errno="EADDRINUSE"} 1"#,
            r#"portwatch_ephemeral_ports{netns="4026531840",state="shared"} 2"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let mut s = sample();
        s.namespaces[0].name = Some(NetnsLabel {
            name: "we\"ird\\name\n".into(),
            source: "comm",
        });
        let text = encode(&s, Format::PrometheusText).unwrap();
        assert!(text.contains(r#"name="we\"ird\\name\n""#), "{text}");
    }
}
