//! `portwatch dump`: one walk of the bind hash table as a table (like the article's drgn
//! script `dump_bhash.py`: `TCP-PORT  FASTREUSE  #OWNERS`, plus FASTREUSEPORT) or JSON.

use comfy_table::{presets, Cell, CellAlignment, ContentArrangement, Table};
use serde_json::{json, Value};

use super::{fmt_owners, fmt_reuse, needs_columns};
use crate::model::{AddrRow, BucketRow, OwnerRow, Snapshot};

/// Printed instead of rows when the snapshot holds no bucket.
pub const EMPTY_MESSAGE: &str = "no TCP bind buckets";
/// Printed under the table when the walk hit a bound.
pub const TRUNCATED_FOOTER: &str = "walk truncated: counts are lower bounds";

/// Buckets sorted by (netns, port, l3mdev): the order of both outputs.
pub fn sorted_buckets(snap: &Snapshot) -> Vec<&BucketRow> {
    let mut rows: Vec<&BucketRow> = snap.buckets.iter().collect();
    rows.sort_by_key(|b| (b.key.netns, b.key.port, b.key.l3mdev));
    rows
}

/// A borderless table (grep/awk friendly) with two spaces between columns.
pub(crate) fn plain_table(header: &[&str], right_aligned: &[usize]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().map(|h| Cell::new(*h)));
    for i in 0..header.len() {
        if let Some(col) = table.column_mut(i) {
            col.set_padding((0, 2));
            if right_aligned.contains(&i) {
                col.set_cell_alignment(CellAlignment::Right);
            }
        }
    }
    table
}

/// Renders a comfy table without trailing blanks on each line.
pub(crate) fn table_to_string(table: &Table) -> String {
    let mut out = String::new();
    for line in table.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn owner_text(o: &OwnerRow) -> String {
    let mut s = format!("    {} {}", o.local, o.state);
    if o.reuseaddr {
        s.push_str(" REUSEADDR");
    }
    if o.reuseport {
        s.push_str(" REUSEPORT");
    }
    s
}

/// The `dump` table. `show_netns` adds a first NETNS column (several namespaces shown);
/// `verbose` adds, under each bucket, its per-address buckets and their owner sockets as
/// indented rows. An L3MDEV column appears when any bucket belongs to a VRF.
pub fn render_table(snap: &Snapshot, show_netns: bool, verbose: bool) -> String {
    let rows = sorted_buckets(snap);
    let (_, show_l3) = needs_columns(rows.iter().map(|b| &b.key));
    let mut header: Vec<&str> = Vec::with_capacity(6);
    if show_netns {
        header.push("NETNS");
    }
    let port_col = header.len();
    header.push("TCP-PORT");
    if show_l3 {
        header.push("L3MDEV");
    }
    let first_num = header.len();
    header.extend(["FASTREUSE", "FASTREUSEPORT", "#OWNERS"]);
    let right: Vec<usize> = (first_num..header.len()).collect();
    let mut table = plain_table(&header, &right);

    // Builds a row with `text` in the port column and the three numeric cells.
    let make_row = |netns: String, port_text: String, l3: String, nums: [String; 3]| {
        let mut cells: Vec<String> = Vec::with_capacity(6);
        if show_netns {
            cells.push(netns);
        }
        debug_assert_eq!(cells.len(), port_col);
        cells.push(port_text);
        if show_l3 {
            cells.push(l3);
        }
        cells.extend(nums);
        cells
    };

    for b in &rows {
        table.add_row(make_row(
            b.key.netns.to_string(),
            b.key.port.to_string(),
            b.key.l3mdev.to_string(),
            [
                fmt_reuse(b.info.fastreuse),
                fmt_reuse(b.info.fastreuseport),
                fmt_owners(&b.info),
            ],
        ));
        if verbose {
            for a in &b.addresses {
                table.add_row(make_row(
                    String::new(),
                    format!("  addr {}", a.address),
                    String::new(),
                    [
                        a.fastreuse.map(fmt_reuse).unwrap_or_default(),
                        a.fastreuseport.map(fmt_reuse).unwrap_or_default(),
                        a.owners.len().to_string(),
                    ],
                ));
                for o in &a.owners {
                    table.add_row(make_row(
                        String::new(),
                        owner_text(o),
                        String::new(),
                        [String::new(), String::new(), String::new()],
                    ));
                }
            }
        }
    }

    let mut out = table_to_string(&table);
    if rows.is_empty() {
        out.push_str(EMPTY_MESSAGE);
        out.push('\n');
    }
    if snap.truncated {
        out.push_str(TRUNCATED_FOOTER);
        out.push('\n');
    }
    out
}

fn addr_json(a: &AddrRow) -> Value {
    json!({
        "address": a.address,
        "fastreuse": a.fastreuse,
        "fastreuseport": a.fastreuseport,
        "owners": a.owners.iter().map(|o| json!({
            "local": o.local,
            "state": o.state,
            "reuseaddr": o.reuseaddr,
            "reuseport": o.reuseport,
        })).collect::<Vec<_>>(),
    })
}

/// The `dump --json` document: ONE array of bucket objects, sorted like the table, with
/// the stable keys `netns`, `port`, `l3mdev`, `fastreuse`, `fastreuseport`, `owners`,
/// `owners_truncated`, and (verbose only) `addresses`.
pub fn render_json(snap: &Snapshot, verbose: bool) -> Value {
    let items = sorted_buckets(snap)
        .into_iter()
        .map(|b| {
            let mut obj = json!({
                "netns": b.key.netns,
                "port": b.key.port,
                "l3mdev": b.key.l3mdev,
                "fastreuse": b.info.fastreuse,
                "fastreuseport": b.info.fastreuseport,
                "owners": b.info.owners,
                "owners_truncated": b.info.owners_truncated,
            });
            if verbose {
                obj["addresses"] = Value::Array(b.addresses.iter().map(addr_json).collect());
            }
            obj
        })
        .collect();
    Value::Array(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BucketInfo, BucketKey};

    fn bucket(netns: u32, port: u16, fr: i8, frp: i8, owners: u32) -> BucketRow {
        BucketRow {
            key: BucketKey {
                netns,
                l3mdev: 0,
                port,
            },
            info: BucketInfo {
                fastreuse: fr,
                fastreuseport: frp,
                owners,
                owners_truncated: false,
            },
            addresses: vec![],
        }
    }

    fn snap(buckets: Vec<BucketRow>) -> Snapshot {
        Snapshot {
            buckets,
            truncated: false,
            slots: 65536,
        }
    }

    /// Words of each non-empty line, to compare tables without caring about padding.
    fn words(s: &str) -> Vec<Vec<String>> {
        s.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.split_whitespace().map(str::to_owned).collect())
            .collect()
    }

    #[test]
    fn table_has_article_columns_sorted_by_port() {
        let s = snap(vec![bucket(7, 60000, -1, -1, 2), bucket(7, 1234, 0, -1, 1)]);
        let out = render_table(&s, false, false);
        assert_eq!(
            words(&out),
            vec![
                vec!["TCP-PORT", "FASTREUSE", "FASTREUSEPORT", "#OWNERS"],
                vec!["1234", "0", "-1", "1"],
                vec!["60000", "-1", "-1", "2"],
            ]
        );
        assert!(!out.contains(TRUNCATED_FOOTER));
        assert!(!out.contains(EMPTY_MESSAGE));
    }

    #[test]
    fn netns_column_first_and_sorted_by_netns_then_port() {
        let s = snap(vec![
            bucket(9, 80, 1, -1, 1),
            bucket(3, 443, 0, 0, 4),
            bucket(3, 22, 0, -1, 1),
        ]);
        let out = render_table(&s, true, false);
        let w = words(&out);
        assert_eq!(
            w[0],
            vec!["NETNS", "TCP-PORT", "FASTREUSE", "FASTREUSEPORT", "#OWNERS"]
        );
        assert_eq!(w[1], vec!["3", "22", "0", "-1", "1"]);
        assert_eq!(w[2], vec!["3", "443", "0", "0", "4"]);
        assert_eq!(w[3], vec!["9", "80", "+1", "-1", "1"]);
    }

    #[test]
    fn truncated_walk_shows_lower_bounds_and_footer() {
        let mut b = bucket(1, 5000, 0, -1, 64);
        b.info.owners_truncated = true;
        let mut s = snap(vec![b]);
        s.truncated = true;
        let out = render_table(&s, false, false);
        assert!(out.contains("≥64"), "{out}");
        assert_eq!(out.lines().last(), Some(TRUNCATED_FOOTER));
    }

    #[test]
    fn empty_snapshot_prints_header_and_message() {
        let out = render_table(&snap(vec![]), false, false);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(lines[0].starts_with("TCP-PORT"));
        assert_eq!(lines[1], EMPTY_MESSAGE);
    }

    fn verbose_bucket() -> BucketRow {
        let mut b = bucket(1, 60000, -1, -1, 2);
        b.addresses = vec![
            AddrRow {
                address: "127.0.0.1".into(),
                fastreuse: Some(-1),
                fastreuseport: Some(-1),
                owners: vec![
                    OwnerRow {
                        local: "127.0.0.1:60000".into(),
                        state: "ESTABLISHED".into(),
                        reuseaddr: true,
                        reuseport: false,
                    },
                    OwnerRow {
                        local: "127.0.0.1:60000".into(),
                        state: "TIME_WAIT".into(),
                        reuseaddr: false,
                        reuseport: true,
                    },
                ],
            },
            AddrRow {
                address: "127.2.2.2".into(),
                fastreuse: None,
                fastreuseport: None,
                owners: vec![],
            },
        ];
        b
    }

    #[test]
    fn verbose_table_indents_addresses_and_owners() {
        let s = snap(vec![verbose_bucket()]);
        let out = render_table(&s, false, true);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 6, "{out}");
        assert!(lines[1].starts_with("60000"));
        assert!(lines[2].starts_with("  addr 127.0.0.1"), "{out}");
        assert_eq!(words(lines[2])[0][2..], ["-1", "-1", "2"]);
        assert!(
            lines[3].starts_with("    127.0.0.1:60000 ESTABLISHED REUSEADDR"),
            "{out}"
        );
        assert!(!lines[3].contains("REUSEPORT"));
        assert!(lines[4].contains("TIME_WAIT REUSEPORT"), "{out}");
        // No per-address state on this kernel: blank cells, only the owner count.
        assert_eq!(words(lines[5])[0], ["addr", "127.2.2.2", "0"]);
        // Not verbose: the bucket line only.
        assert_eq!(render_table(&s, false, false).lines().count(), 2);
    }

    #[test]
    fn l3mdev_column_appears_for_vrf_buckets() {
        let mut b = bucket(1, 80, 0, -1, 1);
        b.key.l3mdev = 12;
        let out = render_table(&snap(vec![b, bucket(1, 80, 0, -1, 1)]), false, false);
        let w = words(&out);
        assert_eq!(w[0][1], "L3MDEV");
        assert_eq!(w[1], vec!["80", "0", "0", "-1", "1"]);
        assert_eq!(w[2], vec!["80", "12", "0", "-1", "1"]);
    }

    #[test]
    fn json_is_one_sorted_array_with_stable_keys() {
        let mut b = bucket(2, 443, 1, -1, 3);
        b.info.owners_truncated = true;
        let s = snap(vec![b, bucket(1, 80, 0, 0, 1)]);
        let v = render_json(&s, false);
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
    fn verbose_json_has_addresses_and_owners() {
        let v = render_json(&snap(vec![verbose_bucket()]), true);
        let addrs = &v[0]["addresses"];
        assert_eq!(addrs.as_array().map(Vec::len), Some(2));
        assert_eq!(addrs[0]["address"], json!("127.0.0.1"));
        assert_eq!(addrs[0]["fastreuse"], json!(-1));
        assert_eq!(
            addrs[0]["owners"][0],
            json!({"local":"127.0.0.1:60000","state":"ESTABLISHED","reuseaddr":true,"reuseport":false})
        );
        assert_eq!(addrs[1]["fastreuse"], Value::Null);
        assert_eq!(addrs[1]["owners"], json!([]));
        assert_eq!(render_json(&snap(vec![]), true), json!([]));
    }
}
