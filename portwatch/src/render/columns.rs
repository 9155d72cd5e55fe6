//! The columns of the bucket table, defined once for `dump` and `top` (text table, TUI):
//! each column has a title, an alignment, a width for the TUI, and one conversion from a
//! model row to its cell. A new column is one variant here (plus its JSON key in
//! [`super::json`] when `dump --json` should carry it).

use crate::model::{AddrRow, BucketInfo, BucketKey, OwnerRow};

/// A column of the bucket table, in display order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Column {
    /// Shown when several namespaces are (or `--netns all`).
    Netns,
    Port,
    /// Shown when a bucket belongs to a VRF.
    L3mdev,
    Fastreuse,
    Fastreuseport,
    Owners,
}

/// Which optional columns a table shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shown {
    pub netns: bool,
    pub l3mdev: bool,
}

impl Shown {
    /// NETNS when `force_netns` or when the keys span several namespaces; L3MDEV when any
    /// key belongs to a VRF.
    pub fn for_keys(keys: impl IntoIterator<Item = BucketKey>, force_netns: bool) -> Shown {
        let mut first_ns = None;
        let mut several_ns = false;
        let mut any_l3 = false;
        for k in keys {
            match first_ns {
                None => first_ns = Some(k.netns),
                Some(ns) if ns != k.netns => several_ns = true,
                Some(_) => {}
            }
            any_l3 |= k.l3mdev != 0;
        }
        Shown {
            netns: force_netns || several_ns,
            l3mdev: any_l3,
        }
    }
}

impl Column {
    pub const ALL: [Column; 6] = [
        Column::Netns,
        Column::Port,
        Column::L3mdev,
        Column::Fastreuse,
        Column::Fastreuseport,
        Column::Owners,
    ];

    /// The columns a table shows, in order.
    pub fn shown(shown: Shown) -> Vec<Column> {
        Column::ALL
            .into_iter()
            .filter(|c| match c {
                Column::Netns => shown.netns,
                Column::L3mdev => shown.l3mdev,
                _ => true,
            })
            .collect()
    }

    /// The header, as the article's `dump_bhash.py` names it where it has the column.
    pub fn title(self) -> &'static str {
        match self {
            Column::Netns => "NETNS",
            Column::Port => "TCP-PORT",
            Column::L3mdev => "L3MDEV",
            Column::Fastreuse => "FASTREUSE",
            Column::Fastreuseport => "FASTREUSEPORT",
            Column::Owners => "#OWNERS",
        }
    }

    /// Right-aligned (the bucket's values) rather than left-aligned (its identity).
    pub fn numeric(self) -> bool {
        matches!(
            self,
            Column::Fastreuse | Column::Fastreuseport | Column::Owners
        )
    }

    /// Part of the bucket's identity (highlighted as a whole when a bucket is new).
    pub fn identifies(self) -> bool {
        !self.numeric()
    }

    /// Width in the TUI.
    pub fn width(self) -> u16 {
        match self {
            Column::Netns => 10,
            Column::Port => 8,
            Column::L3mdev => 6,
            other => other.title().len() as u16,
        }
    }

    /// The cell of a bucket.
    pub fn cell(self, key: &BucketKey, info: &BucketInfo) -> String {
        let mut s = String::new();
        self.write_cell(key, info, &mut s);
        s
    }

    /// Appends the cell of a bucket to `out` (the text [`Column::cell`] returns, without
    /// a `String` per cell: `dump` writes tens of thousands of rows).
    pub fn write_cell(self, key: &BucketKey, info: &BucketInfo, out: &mut String) {
        use std::fmt::Write as _;
        // Writing into a String cannot fail.
        let _ = match self {
            Column::Fastreuse => write!(out, "{}", info.fastreuse),
            Column::Fastreuseport => write!(out, "{}", info.fastreuseport),
            Column::Owners => write!(out, "{}", info.owners),
            Column::Netns | Column::Port | Column::L3mdev => {
                self.write_key_cell(key, out);
                Ok(())
            }
        };
    }

    /// The cell of an identity column, from the key alone (a bucket `top` saw go away);
    /// `None` for the value columns.
    pub fn key_cell(self, key: &BucketKey) -> Option<String> {
        let mut s = String::new();
        self.write_key_cell(key, &mut s).then_some(s)
    }

    /// Appends the cell of an identity column to `out`; false (nothing written) for the
    /// value columns.
    fn write_key_cell(self, key: &BucketKey, out: &mut String) -> bool {
        use std::fmt::Write as _;
        // Writing into a String cannot fail.
        let _ = match self {
            Column::Netns => write!(out, "{}", key.netns),
            Column::Port => write!(out, "{}", key.port),
            Column::L3mdev => write!(out, "{}", key.l3mdev),
            Column::Fastreuse | Column::Fastreuseport | Column::Owners => return false,
        };
        true
    }

    /// Whether this column's value differs between two states of a bucket (the cells
    /// `top` highlights after a change). The identity columns never differ.
    pub fn differs(self, old: &BucketInfo, new: &BucketInfo) -> bool {
        match self {
            Column::Netns | Column::Port | Column::L3mdev => false,
            Column::Fastreuse => old.fastreuse != new.fastreuse,
            Column::Fastreuseport => old.fastreuseport != new.fastreuseport,
            Column::Owners => old.owners != new.owners,
        }
    }

    /// The cell of a per-address bucket, in the indented rows under its port (verbose
    /// `dump`): its address in the port column, its own state where the kernel keeps one.
    pub fn addr_cell(self, a: &AddrRow) -> String {
        let opt = |v: Option<crate::model::Fastreuse>| v.map(|v| v.to_string()).unwrap_or_default();
        match self {
            Column::Port => match a.address {
                Some(ip) => format!("  addr {ip}"),
                None => "  addr ?".to_owned(),
            },
            Column::Fastreuse => opt(a.fastreuse),
            Column::Fastreuseport => opt(a.fastreuseport),
            Column::Owners => a.owners.len().to_string(),
            Column::Netns | Column::L3mdev => String::new(),
        }
    }

    /// The cell of an owner socket, in the rows under its address (verbose `dump`): the
    /// socket in the port column, nothing elsewhere.
    pub fn owner_cell(self, o: &OwnerRow) -> String {
        if self != Column::Port {
            return String::new();
        }
        let mut s = match o.local {
            Some(a) => format!("    {a} {}", o.state),
            None => format!("    ? {}", o.state),
        };
        if o.reuseaddr {
            s.push_str(" REUSEADDR");
        }
        if o.reuseport {
            s.push_str(" REUSEPORT");
        }
        if o.v6only {
            s.push_str(" V6ONLY");
        }
        if let Some(how) = super::transition::bound_by(o.connect_bound) {
            s.push(' ');
            s.push_str(how);
        }
        if let Some(r) = o.local_port_range {
            s.push_str(&format!(" range {r}"));
        }
        if let Some(r) = o.remote {
            s.push_str(&format!(" -> {r}"));
        }
        s.push(' ');
        s.push_str(&users(o));
        s
    }
}

/// The processes holding an owner socket, as `ss -p` writes them:
/// `users:(("nginx",pid=10,fd=6),("nginx",pid=11,fd=6))`; a TIME-WAIT socket has none
/// (`TIME-WAIT: no process`), nor has a socket no file descriptor refers to.
pub fn users(o: &OwnerRow) -> String {
    if o.state == crate::model::TcpState::TimeWait {
        return "(TIME-WAIT: no process)".to_owned();
    }
    if o.holders.is_empty() {
        return "(no process)".to_owned();
    }
    let list: Vec<String> = o
        .holders
        .iter()
        .map(|h| format!("(\"{}\",pid={},fd={})", h.comm, h.pid, h.fd))
        .collect();
    format!("users:({})", list.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Fastreuse, OwnerCount};

    #[test]
    fn cells_and_differences_of_a_bucket() {
        let key = k(4026531840, 7, 60000);
        let old = BucketInfo {
            fastreuse: Fastreuse(-1),
            fastreuseport: Fastreuse(1),
            owners: OwnerCount::exact(3),
        };
        let cells: Vec<String> = Column::ALL.iter().map(|c| c.cell(&key, &old)).collect();
        assert_eq!(cells, ["4026531840", "60000", "7", "-1", "+1", "3"]);
        let new = BucketInfo {
            owners: OwnerCount::at_least(3),
            ..old
        };
        let differ: Vec<Column> = Column::ALL
            .into_iter()
            .filter(|c| c.differs(&old, &new))
            .collect();
        assert_eq!(differ, [Column::Owners], "a lower bound is another value");
        assert!(Column::ALL.iter().all(|c| !c.differs(&old, &old)));
        assert_eq!(
            Column::ALL.iter().filter(|c| c.numeric()).count(),
            3,
            "the bucket's values are right-aligned, its identity is not"
        );
    }

    fn k(netns: u32, l3mdev: i32, port: u16) -> BucketKey {
        BucketKey {
            netns,
            l3mdev,
            port,
        }
    }

    #[test]
    fn columns_needed_only_when_ambiguous() {
        let (a, b, c, d) = (k(1, 0, 80), k(1, 0, 81), k(2, 0, 80), k(1, 5, 80));
        let shown = |keys: &[BucketKey]| {
            let s = Shown::for_keys(keys.iter().copied(), false);
            (s.netns, s.l3mdev)
        };
        assert_eq!(shown(&[a, b]), (false, false));
        assert_eq!(shown(&[a, c]), (true, false));
        assert_eq!(shown(&[a, d]), (false, true));
        assert_eq!(shown(&[]), (false, false));
        assert!(Shown::for_keys([a], true).netns);
        assert_eq!(
            Column::shown(Shown {
                netns: true,
                l3mdev: false
            }),
            [
                Column::Netns,
                Column::Port,
                Column::Fastreuse,
                Column::Fastreuseport,
                Column::Owners
            ]
        );
    }
}
