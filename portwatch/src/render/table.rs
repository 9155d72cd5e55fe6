//! Plain (borderless, grep/awk friendly) tables with comfy-table, and the `dump` table
//! (like the article's drgn script `dump_bhash.py`: `TCP-PORT  FASTREUSE  #OWNERS`, plus
//! FASTREUSEPORT).

use std::io::{self, Write};

use comfy_table::{presets, Cell, CellAlignment, ContentArrangement, Table};

use super::columns::{Column, Shown};
use crate::model::{BucketRow, Snapshot};

/// Printed instead of rows when the snapshot holds no bucket.
pub const EMPTY_MESSAGE: &str = "no TCP bind buckets";
/// Printed under the table when the walk hit a bound.
pub const TRUNCATED_FOOTER: &str = "walk truncated: counts are lower bounds";
/// Under a table whose walk did not cover its whole scope.
pub const INCOMPLETE_FOOTER: &str = "walk incomplete: buckets may be missing";

/// A borderless table with two spaces between columns; the columns at `right_aligned`
/// are right-aligned.
pub fn plain_table(titles: &[&str], right_aligned: &[usize]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(titles.iter().map(|h| Cell::new(*h)));
    for i in 0..titles.len() {
        if let Some(col) = table.column_mut(i) {
            col.set_padding((0, 2));
            if right_aligned.contains(&i) {
                col.set_cell_alignment(CellAlignment::Right);
            }
        }
    }
    table
}

/// A plain table of bucket `columns` followed by `extra` titles (left-aligned).
pub fn bucket_table(columns: &[Column], extra: &[&str]) -> Table {
    let titles: Vec<&str> = columns
        .iter()
        .map(|c| c.title())
        .chain(extra.iter().copied())
        .collect();
    let right: Vec<usize> = columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.numeric())
        .map(|(i, _)| i)
        .collect();
    plain_table(&titles, &right)
}

/// Renders a comfy table without trailing blanks on each line.
pub fn table_to_string(table: &Table) -> String {
    let mut out = String::new();
    for line in table.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The lines under a table: the empty message, the truncation footers (owner counts
/// that are lower bounds; a walk that did not cover its whole scope).
pub fn footer(out: &mut String, empty: bool, owners_truncated: bool, complete: bool) {
    if empty {
        out.push_str(EMPTY_MESSAGE);
        out.push('\n');
    }
    if owners_truncated {
        out.push_str(TRUNCATED_FOOTER);
        out.push('\n');
    }
    if !complete {
        out.push_str(INCOMPLETE_FOOTER);
        out.push('\n');
    }
}

/// Buckets sorted by (netns, port, l3mdev): the order of `dump`'s table and JSON.
pub fn sorted_buckets(snap: &Snapshot) -> Vec<&BucketRow> {
    let mut rows: Vec<&BucketRow> = snap.buckets.iter().collect();
    rows.sort_by_key(|b| (b.key.netns, b.key.port, b.key.l3mdev));
    rows
}

/// The `dump` table, written to `out`. `show_netns` adds a first NETNS column (several
/// namespaces shown); `verbose` adds, under each bucket, its per-address buckets and their
/// owner sockets as indented rows. An L3MDEV column appears when any bucket belongs to a
/// VRF.
///
/// Laid out like [`plain_table`] (two spaces after each column, the value columns
/// right-aligned, no trailing blanks), but without a comfy table, which holds every cell
/// as a `String` and took 4x the time and memory of the whole walk for 50,000 buckets:
/// the cells are formatted once into one string (the column widths need all of them
/// before the first line), then each line is built in one reused buffer.
pub fn write_dump<W: Write>(
    mut out: W,
    snap: &Snapshot,
    show_netns: bool,
    verbose: bool,
) -> io::Result<()> {
    let rows = sorted_buckets(snap);
    let shown = Shown {
        netns: show_netns,
        l3mdev: Shown::for_keys(rows.iter().map(|b| b.key), false).l3mdev,
    };
    let columns = Column::shown(shown);
    let mut cells = Cells::new(&columns);
    for b in &rows {
        cells.push_row(|c, s| c.write_cell(&b.key, &b.info, s));
        for a in b.addresses.iter().filter(|_| verbose) {
            cells.push_row(|c, s| s.push_str(&c.addr_cell(a)));
        }
    }
    let mut line = String::new();
    cells.write_line(&mut out, &mut line, columns.iter().map(|c| c.title()))?;
    let mut row = 0;
    for b in &rows {
        cells.write_row(&mut out, &mut line, row)?;
        row += 1;
        for a in b.addresses.iter().filter(|_| verbose) {
            cells.write_row(&mut out, &mut line, row)?;
            row += 1;
            // Owner sockets are lines of their own under their address's row, outside
            // the table's columns (a socket with its peer and processes is wider than a
            // port).
            for o in &a.owners {
                writeln!(out, "{}", Column::Port.owner_cell(o))?;
            }
        }
    }
    let mut tail = String::new();
    footer(
        &mut tail,
        rows.is_empty(),
        snap.owners_truncated,
        snap.complete,
    );
    out.write_all(tail.as_bytes())
}

/// The cells of [`write_dump`]'s rows, row after row, in one string; and the width of
/// each column (its widest cell or title).
struct Cells<'a> {
    columns: &'a [Column],
    widths: Vec<usize>,
    text: String,
    /// Where each cell ends in `text`.
    ends: Vec<usize>,
}

impl<'a> Cells<'a> {
    fn new(columns: &'a [Column]) -> Self {
        Cells {
            columns,
            widths: columns.iter().map(|c| width(c.title())).collect(),
            text: String::new(),
            ends: Vec::new(),
        }
    }

    /// Adds a row, its cells made by `cell` (which appends a column's cell to the string).
    fn push_row(&mut self, mut cell: impl FnMut(Column, &mut String)) {
        for (c, w) in self.columns.iter().zip(self.widths.iter_mut()) {
            let start = self.text.len();
            cell(*c, &mut self.text);
            *w = (*w).max(width(&self.text[start..]));
            self.ends.push(self.text.len());
        }
    }

    /// Writes the `row`th row added.
    fn write_row<W: Write>(&self, out: &mut W, line: &mut String, row: usize) -> io::Result<()> {
        let n = self.columns.len();
        let cells = (row * n..(row + 1) * n).map(|i| {
            let start = i.checked_sub(1).map_or(0, |p| self.ends[p]);
            &self.text[start..self.ends[i]]
        });
        self.write_line(out, line, cells)
    }

    /// Writes one line of `cells`, each padded to its column's width.
    fn write_line<'c, W: Write>(
        &self,
        out: &mut W,
        line: &mut String,
        cells: impl Iterator<Item = &'c str>,
    ) -> io::Result<()> {
        line.clear();
        for ((c, w), cell) in self.columns.iter().zip(&self.widths).zip(cells) {
            let fill = w.saturating_sub(width(cell));
            if c.numeric() {
                pad(line, fill);
                line.push_str(cell);
            } else {
                line.push_str(cell);
                pad(line, fill);
            }
            line.push_str("  ");
        }
        line.truncate(line.trim_end().len());
        line.push('\n');
        out.write_all(line.as_bytes())
    }
}

/// Appends `n` spaces.
fn pad(line: &mut String, mut n: usize) {
    const SPACES: &str = "                                ";
    while n > 0 {
        let k = n.min(SPACES.len());
        line.push_str(&SPACES[..k]);
        n -= k;
    }
}

/// The width of a cell in columns: its characters (cells hold ASCII and `≥`, each one
/// column wide).
fn width(cell: &str) -> usize {
    if cell.is_ascii() {
        cell.len()
    } else {
        cell.chars().count()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};

    use super::*;
    use crate::model::{
        AddrRow, BucketInfo, BucketKey, Family, Fastreuse, Holder, OwnerCount, OwnerRow, TcpState,
    };

    pub(crate) fn bucket(netns: u32, port: u16, fr: i8, frp: i8, owners: u32) -> BucketRow {
        BucketRow {
            key: BucketKey {
                netns,
                l3mdev: 0,
                port,
            },
            info: BucketInfo {
                fastreuse: Fastreuse(fr),
                fastreuseport: Fastreuse(frp),
                owners: OwnerCount::exact(owners),
            },
            addresses: vec![],
            fast: None,
        }
    }

    pub(crate) fn snap(buckets: Vec<BucketRow>) -> Snapshot {
        Snapshot {
            buckets,
            complete: true,
            owners_truncated: false,
            slots: 65536,
            ..Default::default()
        }
    }

    fn dump(snap: &Snapshot, show_netns: bool, verbose: bool) -> String {
        let mut out = Vec::new();
        write_dump(&mut out, snap, show_netns, verbose).expect("writes");
        String::from_utf8(out).expect("UTF-8")
    }

    /// `dump`'s streamed table is laid out exactly as a [`plain_table`] of the same rows
    /// (the look of every other table, `top`'s included): widths from the widest cell
    /// or title, value columns right-aligned, header included, no trailing blanks.
    #[test]
    fn streamed_table_is_laid_out_like_a_plain_table() {
        let mut wide = bucket(4026531840, 60000, 1, -1, 1_234_567);
        wide.info.owners.truncated = true;
        wide.key.l3mdev = 12;
        let mut verbose = verbose_bucket();
        verbose.key.netns = 3;
        let rows = vec![
            wide,
            bucket(3, 22, 0, -1, 1),
            bucket(3, 443, -1, 0, 65536),
            verbose,
        ];
        for (show_netns, verbose) in [(false, false), (true, false), (true, true)] {
            let s = snap(rows.clone());
            let columns = Column::shown(Shown {
                netns: show_netns,
                l3mdev: true,
            });
            let mut table = bucket_table(&columns, &[]);
            let mut owners = Vec::new();
            for b in sorted_buckets(&s) {
                table.add_row(columns.iter().map(|c| c.cell(&b.key, &b.info)));
                for a in b.addresses.iter().filter(|_| verbose) {
                    table.add_row(columns.iter().map(|c| c.addr_cell(a)));
                    owners.extend(a.owners.iter().map(|o| Column::Port.owner_cell(o)));
                }
            }
            let want = table_to_string(&table);
            let got = dump(&s, show_netns, verbose);
            // The owner lines are not table rows: compare the table's lines alone.
            let got: String = got
                .lines()
                .filter(|l| !owners.iter().any(|o| o == l))
                .map(|l| format!("{l}\n"))
                .collect();
            assert_eq!(got, want, "netns {show_netns} verbose {verbose}");
            assert!(got.contains("≥1234567"), "{got}");
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
        let out = dump(&s, false, false);
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
        let out = dump(&s, true, false);
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
        b.info.owners.truncated = true;
        let mut s = snap(vec![b]);
        s.owners_truncated = true;
        let out = dump(&s, false, false);
        assert!(out.contains("≥64"), "{out}");
        assert_eq!(out.lines().last(), Some(TRUNCATED_FOOTER));
    }

    #[test]
    fn incomplete_walk_says_buckets_may_be_missing() {
        let mut s = snap(vec![bucket(1, 5000, 0, -1, 1)]);
        s.complete = false;
        let out = dump(&s, false, false);
        assert_eq!(out.lines().last(), Some(INCOMPLETE_FOOTER));
        assert!(!out.contains(TRUNCATED_FOOTER), "{out}");
    }

    #[test]
    fn empty_snapshot_prints_header_and_message() {
        let out = dump(&snap(vec![]), false, false);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(lines[0].starts_with("TCP-PORT"));
        assert_eq!(lines[1], EMPTY_MESSAGE);
    }

    pub(crate) fn verbose_bucket() -> BucketRow {
        let lo: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 60000));
        let mut b = bucket(1, 60000, -1, -1, 2);
        b.addresses = vec![
            AddrRow {
                address: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                family: None,
                fastreuse: Some(Fastreuse(-1)),
                fastreuseport: Some(Fastreuse(-1)),
                owners: vec![
                    OwnerRow {
                        local: Some(lo),
                        family: Some(Family::Inet),
                        state: TcpState::Established,
                        reuseaddr: true,
                        reuseport: false,
                        v6only: false,
                        uid: Some(0),
                        bound_dev: 0,
                        inode: Some(4711),
                        remote: Some(SocketAddr::from(([127, 9, 9, 9], 1234))),
                        bucket_family: None,
                        holders: vec![
                            Holder {
                                pid: 4242,
                                comm: "python3".into(),
                                fd: 3,
                            },
                            Holder {
                                pid: 4243,
                                comm: "python3".into(),
                                fd: 3,
                            },
                        ],
                        connect_bound: Some(false),
                        local_port_range: Some(crate::model::PortRange {
                            lo: 40000,
                            hi: 40009,
                        }),
                    },
                    OwnerRow {
                        local: Some(lo),
                        family: Some(Family::Inet),
                        state: TcpState::TimeWait,
                        reuseaddr: false,
                        reuseport: true,
                        v6only: false,
                        uid: None,
                        bound_dev: 0,
                        inode: None,
                        remote: Some(SocketAddr::from(([127, 8, 8, 8], 1234))),
                        bucket_family: None,
                        holders: vec![],
                        connect_bound: Some(true),
                        local_port_range: None,
                    },
                ],
            },
            AddrRow {
                address: Some(IpAddr::V4(Ipv4Addr::new(127, 2, 2, 2))),
                family: None,
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
        let out = dump(&s, false, true);
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
        assert!(
            lines[3].ends_with(
                "REUSEADDR bind()-bound range 40000-40009 -> 127.9.9.9:1234 \
                 users:((\"python3\",pid=4242,fd=3),(\"python3\",pid=4243,fd=3))"
            ),
            "{out}"
        );
        // Like ss -p: the processes holding each owner; TIME-WAIT has none.
        assert!(
            lines[4].ends_with(
                "TIME_WAIT REUSEPORT connect()-bound -> 127.8.8.8:1234 (TIME-WAIT: no process)"
            ),
            "{out}"
        );
        // No per-address state on this kernel: blank cells, only the owner count.
        assert_eq!(words(lines[5])[0], ["addr", "127.2.2.2", "0"]);
        // Not verbose: the bucket line only.
        assert_eq!(dump(&s, false, false).lines().count(), 2);
    }

    #[test]
    fn l3mdev_column_appears_for_vrf_buckets() {
        let mut b = bucket(1, 80, 0, -1, 1);
        b.key.l3mdev = 12;
        let out = dump(&snap(vec![b, bucket(1, 80, 0, -1, 1)]), false, false);
        let w = words(&out);
        assert_eq!(w[0][1], "L3MDEV");
        assert_eq!(w[1], vec!["80", "0", "0", "-1", "1"]);
        assert_eq!(w[2], vec!["80", "12", "0", "-1", "1"]);
    }
}
