//! JSON outputs: one object per transition (`trace --json`) and the `dump --json`
//! document. Key names and order are fixed (scripts and xtask read them); values are
//! plain numbers (fastreuse -1/0/1) and the address strings of [`std::net::SocketAddr`].

use std::net::SocketAddr;

use serde::Serialize;
use serde_json::json;

use super::{table::sorted_buckets, time::Clock};
use crate::model::{
    AddrRow, BucketInfo, BucketKey, BucketRow, Explanation, Family, Holder, OwnerRow, PortRange,
    Reread, Resync, Snapshot, TcpState, Transition,
};

/// The JSON object of one transition; keys in this order, names fixed.
#[derive(Serialize)]
struct TransitionLine<'a> {
    ts_ns: u64,
    time: String,
    netns: u32,
    port: u16,
    l3mdev: i32,
    kind: &'static str,
    op: &'static str,
    fastreuse: Option<i8>,
    fastreuseport: Option<i8>,
    owners: u32,
    owners_truncated: bool,
    from: Option<i8>,
    to: Option<i8>,
    pid: u32,
    comm: &'a str,
    errno: i32,
    errno_name: Option<&'static str>,
    local: Option<SocketAddr>,
    remote: Option<SocketAddr>,
    reuseaddr: bool,
    reuseport: bool,
    bind_address_no_port: bool,
    port_from_range: bool,
    /// For failures: why (see `model::Explanation`), null when not explained.
    explanation: Option<&'a Explanation>,
    /// null where the kernel does not record it (before 6.18).
    connect_bound: Option<bool>,
    /// The socket's IP_LOCAL_PORT_RANGE, null when it set none.
    local_port_range: Option<PortRange>,
    /// The socket's per-address bucket (6.18+), null elsewhere.
    addr_fastreuse: Option<i8>,
    addr_fastreuseport: Option<i8>,
}

/// One JSON object (one line, no trailing newline) for a transition. `time` is RFC 3339
/// UTC with milliseconds; `from`/`to` are set for `*_changed`; `pid` 0 and `comm` ""
/// when no task caused it; `errno` 0 and `errno_name` null on success (`errno_name` is
/// also null for a number without a name).
pub fn transition_line(t: &Transition, clock: &Clock) -> serde_json::Result<String> {
    let change = t.change();
    let j = TransitionLine {
        ts_ns: t.ts_ns,
        time: clock.rfc3339(t.ts_ns),
        netns: t.key.netns,
        port: t.key.port,
        l3mdev: t.key.l3mdev,
        kind: t.kind.as_str(),
        op: t.op.as_str(),
        fastreuse: t.after.map(|a| a.fastreuse.get()),
        fastreuseport: t.after.map(|a| a.fastreuseport.get()),
        owners: t.after.map_or(0, |a| a.owners.n),
        owners_truncated: t.after.is_some_and(|a| a.owners.truncated),
        from: change.map(|(f, _)| f.get()),
        to: change.map(|(_, to)| to.get()),
        pid: t.task.pid().unwrap_or(0),
        comm: t.task.comm().unwrap_or(""),
        errno: t.errno.map_or(0, |e| e.number()),
        errno_name: t.errno.and_then(|e| e.name()),
        local: t.local,
        remote: t.remote,
        reuseaddr: t.opts.reuseaddr,
        reuseport: t.opts.reuseport,
        bind_address_no_port: t.opts.bind_address_no_port,
        port_from_range: t.port_from_range,
        explanation: t.explanation.as_ref(),
        connect_bound: t.opts.connect_bound,
        local_port_range: t.opts.local_port_range,
        addr_fastreuse: t.addr.map(|a| a.fastreuse.get()),
        addr_fastreuseport: t.addr.map(|a| a.fastreuseport.get()),
    };
    serde_json::to_string(&j)
}

/// The JSON object (one line) of a gap in the stream and its repair:
/// `{"kind":"resync","ts_ns":..,"time":..,"dropped":N,"skipped":M,"reread":..,
/// "complete":bool,"corrections":K}`. `reread` is `{"ports":[{"netns":..,"port":..},..]}`
/// (the buckets of the lost events) or `{"scope":{"netns":N|null,"ports":[..]}}` (every
/// bucket the stream covers; `ports` empty: all). The `corrections` transitions (op
/// `rescan`) follow it.
pub fn resync_line(r: &Resync, clock: &Clock) -> serde_json::Result<String> {
    let reread = match &r.reread {
        Reread::Ports(ports) => json!({
            "ports": ports.iter().map(|(netns, port)| json!({"netns": netns, "port": port})).collect::<Vec<_>>(),
        }),
        Reread::Scope { netns, ports } => json!({"scope": {"netns": netns, "ports": ports}}),
    };
    serde_json::to_string(&json!({
        "kind": "resync",
        "ts_ns": r.ts_ns,
        "time": clock.rfc3339(r.ts_ns),
        "dropped": r.dropped,
        "skipped": r.skipped,
        "reread": reread,
        "complete": r.complete,
        "corrections": r.corrections,
    }))
}

/// One bucket object of `dump --json` (and of the `state` line), in the document's key
/// order (alphabetical): `addresses` (verbose dumps only), `fastreuse`, `fastreuseport`,
/// `l3mdev`, `netns`, `owners`, `owners_truncated`, `port`. The seven scalars are written
/// by hand (a 50,000-bucket dump spends a third of the time serde's per-field machinery
/// takes); the addresses and their owners go through serde.
struct BucketJson<'a> {
    key: &'a BucketKey,
    info: &'a BucketInfo,
    addresses: Option<&'a [AddrRow]>,
}

impl<'a> BucketJson<'a> {
    fn new(key: &'a BucketKey, info: &'a BucketInfo, addresses: Option<&'a [AddrRow]>) -> Self {
        BucketJson {
            key,
            info,
            addresses,
        }
    }

    /// Appends the object (one line) to `out`.
    fn write(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        let mut n = itoa::Buffer::new();
        out.push(b'{');
        if let Some(a) = self.addresses {
            out.extend_from_slice(b"\"addresses\":");
            serde_json::to_writer(&mut *out, &Addresses(a))?;
            out.push(b',');
        }
        let (k, i) = (self.key, self.info);
        out.extend_from_slice(b"\"fastreuse\":");
        out.extend_from_slice(n.format(i.fastreuse.get()).as_bytes());
        out.extend_from_slice(b",\"fastreuseport\":");
        out.extend_from_slice(n.format(i.fastreuseport.get()).as_bytes());
        out.extend_from_slice(b",\"l3mdev\":");
        out.extend_from_slice(n.format(k.l3mdev).as_bytes());
        out.extend_from_slice(b",\"netns\":");
        out.extend_from_slice(n.format(k.netns).as_bytes());
        out.extend_from_slice(b",\"owners\":");
        out.extend_from_slice(n.format(i.owners.n).as_bytes());
        out.extend_from_slice(match i.owners.truncated {
            true => b",\"owners_truncated\":true",
            false => b",\"owners_truncated\":false",
        });
        out.extend_from_slice(b",\"port\":");
        out.extend_from_slice(n.format(k.port).as_bytes());
        out.push(b'}');
        Ok(())
    }
}

/// A bucket's per-address rows, serialised one by one.
struct Addresses<'a>(&'a [AddrRow]);

impl Serialize for Addresses<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(AddrJson))
    }
}

/// One per-address object: `address`, `family`, `fastreuse`, `fastreuseport`, `owners`.
struct AddrJson<'a>(&'a AddrRow);

impl Serialize for AddrJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let a = self.0;
        let mut st = s.serialize_struct("AddrJson", 5)?;
        st.serialize_field("address", &a.address)?;
        st.serialize_field("family", &a.family)?;
        st.serialize_field("fastreuse", &a.fastreuse)?;
        st.serialize_field("fastreuseport", &a.fastreuseport)?;
        st.serialize_field("owners", &Owners(&a.owners))?;
        st.end()
    }
}

/// An address's owner sockets, serialised one by one.
struct Owners<'a>(&'a [OwnerRow]);

impl Serialize for Owners<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|o| OwnerJson {
            bound_dev: o.bound_dev,
            bucket_family: o.bucket_family,
            connect_bound: o.connect_bound,
            family: o.family,
            holders: &o.holders,
            inode: o.inode,
            local: o.local,
            local_port_range: o.local_port_range,
            remote: o.remote,
            reuseaddr: o.reuseaddr,
            reuseport: o.reuseport,
            state: o.state,
            uid: o.uid,
            v6only: o.v6only,
        }))
    }
}

/// One owner socket object, keys in the document's (alphabetical) order.
#[derive(Serialize)]
struct OwnerJson<'a> {
    bound_dev: i32,
    bucket_family: Option<Family>,
    connect_bound: Option<bool>,
    family: Option<Family>,
    holders: &'a [Holder],
    inode: Option<u64>,
    local: Option<SocketAddr>,
    local_port_range: Option<PortRange>,
    remote: Option<SocketAddr>,
    reuseaddr: bool,
    reuseport: bool,
    #[serde(serialize_with = "display")]
    state: TcpState,
    uid: Option<u32>,
    v6only: bool,
}

fn display<T: std::fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// The JSON object (one line) of the state a stream ended with (`trace --state-at-exit`):
/// `{"buckets":[..],"kind":"state"}`, each bucket an object of `dump --json`, in its order.
pub fn state_line<'a>(
    buckets: impl Iterator<Item = (&'a BucketKey, &'a BucketInfo)>,
) -> serde_json::Result<String> {
    let mut rows: Vec<(&BucketKey, &BucketInfo)> = buckets.collect();
    rows.sort_by_key(|(k, _)| (k.netns, k.port, k.l3mdev));
    let mut out = b"{\"buckets\":[".to_vec();
    for (n, (k, i)) in rows.into_iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        BucketJson::new(k, i, None).write(&mut out)?;
    }
    out.extend_from_slice(b"],\"kind\":\"state\"}");
    String::from_utf8(out).map_err(serde::ser::Error::custom)
}

/// The `dump --json` document: ONE array of bucket objects, sorted like the table, with
/// the stable keys `netns`, `port`, `l3mdev`, `fastreuse`, `fastreuseport`, `owners`,
/// `owners_truncated`, and (verbose only) `addresses`. Written row by row by
/// [`DumpJson::write_lines`]: a table of many thousand buckets is never held as a JSON
/// tree or string in memory.
pub fn dump(snap: &Snapshot, verbose: bool) -> DumpJson<'_> {
    DumpJson {
        rows: sorted_buckets(snap),
        verbose,
    }
}

/// See [`dump`].
pub struct DumpJson<'a> {
    rows: Vec<&'a BucketRow>,
    verbose: bool,
}

impl<'a> DumpJson<'a> {
    fn row(&self, b: &'a BucketRow) -> BucketJson<'a> {
        BucketJson::new(
            &b.key,
            &b.info,
            self.verbose.then_some(b.addresses.as_slice()),
        )
    }

    /// Writes the document as one array with one compact bucket object per line:
    /// `[`, then `{...}` lines separated by `,`, then `]` and a newline. It stays one
    /// JSON value for parsers, a line per bucket for grep, and costs far less to format
    /// than indented JSON (a 50,000-bucket dump is 5.7 MB instead of 8). Rows are
    /// gathered in one reused buffer handed to `out` about every 64 KiB: no allocation per
    /// row, no call into `out` per field.
    pub fn write_lines<W: std::io::Write>(&self, mut out: W) -> std::io::Result<()> {
        const CHUNK: usize = 1 << 16;
        let mut buf = Vec::with_capacity(CHUNK + 1024);
        buf.push(b'[');
        for (i, b) in self.rows.iter().enumerate() {
            buf.extend_from_slice(if i == 0 { b"\n" } else { b",\n" });
            self.row(b).write(&mut buf)?;
            if buf.len() >= CHUNK {
                out.write_all(&buf)?;
                buf.clear();
            }
        }
        buf.extend_from_slice(b"\n]\n");
        out.write_all(&buf)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::{
        model::TransitionKind,
        render::{
            table::tests::{bucket, snap, verbose_bucket},
            time::tests::clock,
            transition::tests::{connect_failed, destroyed, fr_changed},
        },
    };

    fn parse(t: &Transition) -> serde_json::Map<String, Value> {
        let s = transition_line(t, &clock()).expect("serialises");
        assert!(!s.contains('\n'));
        match serde_json::from_str::<Value>(&s).expect("valid JSON") {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    const KEYS: [&str; 28] = [
        "ts_ns",
        "time",
        "netns",
        "port",
        "l3mdev",
        "kind",
        "op",
        "fastreuse",
        "fastreuseport",
        "owners",
        "owners_truncated",
        "from",
        "to",
        "pid",
        "comm",
        "errno",
        "errno_name",
        "local",
        "remote",
        "reuseaddr",
        "reuseport",
        "bind_address_no_port",
        "port_from_range",
        "explanation",
        "connect_bound",
        "local_port_range",
        "addr_fastreuse",
        "addr_fastreuseport",
    ];

    #[test]
    fn json_changed() {
        let m = parse(&fr_changed());
        let mut got: Vec<&str> = m.keys().map(String::as_str).collect();
        got.sort_unstable();
        let mut want = KEYS.to_vec();
        want.sort_unstable();
        assert_eq!(got, want);
        assert_eq!(m["ts_ns"], 5_347_000_000u64);
        assert_eq!(m["time"], "2024-05-01T14:02:11.347Z");
        assert_eq!(m["netns"], 4026532290u32);
        assert_eq!(m["port"], 60000);
        assert_eq!(m["l3mdev"], 0);
        assert_eq!(m["kind"], "fastreuse_changed");
        assert_eq!(m["op"], "bind");
        assert_eq!(m["fastreuse"], 0);
        assert_eq!(m["fastreuseport"], -1);
        assert_eq!(m["owners"], 2);
        assert_eq!(m["owners_truncated"], false);
        assert_eq!(m["from"], -1);
        assert_eq!(m["to"], 0);
        assert_eq!(m["pid"], 4242);
        assert_eq!(m["comm"], "python3");
        assert_eq!(m["errno"], 0);
        assert_eq!(m["errno_name"], Value::Null);
        assert_eq!(m["local"], "127.2.2.2:60000");
        assert_eq!(m["remote"], Value::Null);
        assert_eq!(m["reuseaddr"], true);
        assert_eq!(m["reuseport"], false);
        assert_eq!(m["bind_address_no_port"], false);
        assert_eq!(m["port_from_range"], false);
    }

    #[test]
    fn json_what_newer_kernels_record_per_socket() {
        let m = parse(&fr_changed());
        for k in [
            "connect_bound",
            "local_port_range",
            "addr_fastreuse",
            "addr_fastreuseport",
        ] {
            assert_eq!(m[k], Value::Null, "{k}: not recorded, not set");
        }
        let t = Transition {
            opts: crate::model::SockOpts {
                connect_bound: Some(false),
                local_port_range: Some(PortRange {
                    lo: 40000,
                    hi: 40009,
                }),
                ..Default::default()
            },
            addr: Some(crate::model::AddrState {
                fastreuse: crate::model::Fastreuse(0),
                fastreuseport: crate::model::Fastreuse(-1),
            }),
            ..fr_changed()
        };
        let m = parse(&t);
        assert_eq!(m["connect_bound"], false);
        assert_eq!(
            m["local_port_range"],
            serde_json::json!({"lo": 40000, "hi": 40009})
        );
        assert_eq!(
            (
                m["addr_fastreuse"].as_i64(),
                m["addr_fastreuseport"].as_i64()
            ),
            (Some(0), Some(-1))
        );
        let line = crate::render::transition::trace_line(&t, &clock());
        for part in [
            "bind()-bound",
            "range 40000-40009",
            "addr bucket fr 0 frp -1",
        ] {
            assert!(line.contains(part), "missing {part:?} in {line}");
        }
    }

    #[test]
    fn json_key_order_is_stable() {
        let s = transition_line(&fr_changed(), &clock()).expect("serialises");
        let mut last = 0;
        for k in KEYS {
            let at = s.find(&format!("\"{k}\":")).expect("key present");
            assert!(at >= last, "key {k} out of order in {s}");
            last = at;
        }
    }

    #[test]
    fn json_failure_and_destroyed() {
        let m = parse(&connect_failed());
        assert_eq!(m["kind"], "connect_failed");
        assert_eq!(m["errno"], 99);
        assert_eq!(m["errno_name"], "EADDRNOTAVAIL");
        assert_eq!(m["fastreuse"], 0);
        assert_eq!(m["owners"], 1);
        assert_eq!(m["from"], Value::Null);
        assert_eq!(m["to"], Value::Null);
        assert_eq!(m["remote"], "127.9.9.9:1234");
        assert_eq!(m["port_from_range"], true);

        let m = parse(&destroyed());
        assert_eq!(m["kind"], "bucket_destroyed");
        assert_eq!(m["op"], "close");
        assert_eq!(m["fastreuse"], Value::Null);
        assert_eq!(m["fastreuseport"], Value::Null);
        assert_eq!(m["owners"], 0);
        assert_eq!(m["local"], Value::Null);
        assert_eq!(m["errno_name"], Value::Null);
    }

    #[test]
    fn json_vrf_truncated_kernel_task_and_fastreuse_plus_one() {
        let mut t = fr_changed();
        t.key.l3mdev = 7;
        if let Some(a) = t.after.as_mut() {
            a.owners.truncated = true;
            a.fastreuse = crate::model::Fastreuse(1);
        }
        t.task = crate::model::Task::Kernel;
        let m = parse(&t);
        assert_eq!(m["l3mdev"], 7);
        assert_eq!(m["owners_truncated"], true);
        assert_eq!(m["fastreuse"], 1, "JSON keeps the number");
        assert_eq!(m["to"], 1);
        assert_eq!((m["pid"].as_u64(), m["comm"].as_str()), (Some(0), Some("")));
        let t = Transition {
            kind: TransitionKind::OwnerAdded,
            ..fr_changed()
        };
        assert_eq!(parse(&t)["from"], Value::Null, "from/to only for *_changed");
    }

    #[test]
    fn dump_json_is_one_sorted_array_with_stable_keys() {
        let mut b = bucket(2, 443, 1, -1, 3);
        b.info.owners.truncated = true;
        let s = snap(vec![b, bucket(1, 80, 0, 0, 1)]);
        let v = parsed(&s, false);
        let arr = v.as_array().expect("array");
        assert_eq!(arr.len(), 2);
        assert_eq!(
            arr[0],
            json!({"netns":1,"port":80,"l3mdev":0,"fastreuse":0,"fastreuseport":0,
                   "owners":1,"owners_truncated":false})
        );
        assert_eq!(arr[1]["owners_truncated"], json!(true));
        assert_eq!(arr[1]["fastreuse"], json!(1));
        assert!(arr[1].get("addresses").is_none());
    }

    #[test]
    fn verbose_dump_json_has_addresses_and_owners() {
        let v = parsed(&snap(vec![verbose_bucket()]), true);
        let addrs = &v[0]["addresses"];
        assert_eq!(addrs.as_array().map(Vec::len), Some(2));
        assert_eq!(addrs[0]["address"], json!("127.0.0.1"));
        assert_eq!(addrs[0]["fastreuse"], json!(-1));
        assert_eq!(
            addrs[0]["owners"][0],
            json!({"local":"127.0.0.1:60000","state":"ESTABLISHED","reuseaddr":true,"reuseport":false,
                   "family":"inet","v6only":false,"uid":0,"bound_dev":0,"inode":4711,
                   "remote":"127.9.9.9:1234","bucket_family":null,
                   "connect_bound":false,"local_port_range":{"lo":40000,"hi":40009},
                   "holders":[{"pid":4242,"comm":"python3","fd":3},{"pid":4243,"comm":"python3","fd":3}]})
        );
        // A TIME-WAIT owner has no uid, inode or process.
        let tw = &addrs[0]["owners"][1];
        assert_eq!(
            (tw["state"].as_str(), tw["uid"].is_null()),
            (Some("TIME_WAIT"), true)
        );
        assert_eq!(
            (tw["inode"].is_null(), tw["holders"].clone()),
            (true, json!([]))
        );
        assert_eq!(addrs[0]["owners"][1]["connect_bound"], json!(true));
        assert_eq!(addrs[0]["owners"][1]["local_port_range"], Value::Null);
        assert_eq!(addrs[1]["fastreuse"], Value::Null);
        assert_eq!(addrs[1]["owners"], json!([]));
        assert_eq!(parsed(&snap(vec![]), true), json!([]));
    }

    fn written(s: &Snapshot, verbose: bool) -> String {
        let mut out = Vec::new();
        dump(s, verbose).write_lines(&mut out).expect("writes");
        String::from_utf8(out).expect("UTF-8")
    }

    fn parsed(s: &Snapshot, verbose: bool) -> Value {
        let text = written(s, verbose);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not one JSON value: {e}: {text}"))
    }

    #[test]
    fn dump_json_is_written_one_bucket_object_per_line() {
        for verbose in [false, true] {
            let mut vrf = bucket(2, 443, 1, -1, 3);
            vrf.key.l3mdev = 7;
            vrf.info.owners.truncated = true;
            let s = snap(vec![vrf, verbose_bucket(), bucket(1, 80, 0, 0, 1)]);
            let text = written(&s, verbose);
            let whole: Value = serde_json::from_str(&text).expect("one JSON value");
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!((lines[0], lines[lines.len() - 1]), ("[", "]"), "{text}");
            let rows = &lines[1..lines.len() - 1];
            assert_eq!(rows.len(), 3, "{text}");
            for (i, line) in rows.iter().enumerate() {
                let obj = line.strip_suffix(',').unwrap_or(line);
                assert_eq!(obj.len() + 1 == line.len(), i + 1 < rows.len(), "{line}");
                let v: Value = serde_json::from_str(obj).expect("a row is one object");
                assert_eq!(v, whole[i]);
                assert_eq!(v.get("addresses").is_some(), verbose, "{line}");
            }
            // Keys in the document's (alphabetical) order, numbers as numbers.
            let last = rows[2].rsplit_once("\"fastreuse\"").map(|(_, r)| r);
            assert_eq!(
                last,
                Some(
                    ":1,\"fastreuseport\":-1,\"l3mdev\":7,\"netns\":2,\"owners\":3,\
                     \"owners_truncated\":true,\"port\":443}"
                ),
                "{text}"
            );
            assert!(text.ends_with("]\n"));
        }
        assert_eq!(parsed(&snap(vec![]), true), json!([]));
    }

    fn resync(reread: Reread) -> Resync {
        Resync {
            ts_ns: 1_000_000_000,
            dropped: 12,
            skipped: 1,
            reread,
            complete: true,
            corrections: 3,
        }
    }

    #[test]
    fn resync_line_names_the_gap_and_what_was_read_again() {
        let line = resync_line(&resync(Reread::Ports(vec![(7, 80), (7, 443)])), &clock())
            .expect("serialises");
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).expect("valid JSON");
        assert_eq!(v["kind"], "resync");
        assert_eq!(
            (v["dropped"].as_u64(), v["skipped"].as_u64()),
            (Some(12), Some(1))
        );
        assert_eq!(
            v["reread"],
            json!({"ports": [{"netns": 7, "port": 80}, {"netns": 7, "port": 443}]})
        );
        assert_eq!(
            (v["complete"].as_bool(), v["corrections"].as_u64()),
            (Some(true), Some(3))
        );
        assert!(v["time"].is_string());
        let line = resync_line(
            &resync(Reread::Scope {
                netns: None,
                ports: vec![],
            }),
            &clock(),
        )
        .expect("serialises");
        let v: Value = serde_json::from_str(&line).expect("valid JSON");
        assert_eq!(v["reread"], json!({"scope": {"netns": null, "ports": []}}));
    }

    #[test]
    fn state_line_holds_dump_rows_in_dump_order() {
        let a = bucket(2, 80, 0, -1, 1);
        let b = bucket(1, 443, 1, 1, 2);
        let line =
            state_line([(&a.key, &a.info), (&b.key, &b.info)].into_iter()).expect("serialises");
        let v: Value = serde_json::from_str(&line).expect("valid JSON");
        assert_eq!(v["kind"], "state");
        let rows = parsed(&snap(vec![a.clone(), b.clone()]), false);
        assert_eq!(v["buckets"], rows);
    }
}
