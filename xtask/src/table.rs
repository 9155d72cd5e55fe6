//! Plain-text tables for terminal reports (comfy-table): no borders, two spaces between
//! columns, a dashed line under the header, no trailing blanks.

use comfy_table::{Cell, CellAlignment, ContentArrangement, Table};

/// Only the line under the header is drawn (comfy-table preset order: borders, header
/// line, its intersections, inner lines...; a blank means "no line").
const HEADER_RULE: &str = "     -             ";

/// A table with `header`; the columns listed in `right` are right-aligned.
pub fn new(header: &[&str], right: &[usize]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(HEADER_RULE)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().map(|h| Cell::new(*h)));
    for i in 0..header.len() {
        if let Some(col) = table.column_mut(i) {
            col.set_padding((0, 2));
            if right.contains(&i) {
                col.set_cell_alignment(CellAlignment::Right);
            }
        }
    }
    table
}

/// The table's lines, each without trailing blanks, newline-terminated.
pub fn render(table: &Table) -> String {
    table.lines().fold(String::new(), |mut out, line| {
        out.push_str(line.trim_end());
        out.push('\n');
        out
    })
}

/// `rows[0]` is the header; every column left-aligned.
pub fn text(rows: &[Vec<String>]) -> String {
    let Some((header, body)) = rows.split_first() else {
        return String::new();
    };
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut t = new(&header, &[]);
    for r in body {
        t.add_row(r.clone());
    }
    render(&t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_under_a_dashed_rule() {
        let out = text(&[
            vec!["kernel".into(), "b".into()],
            vec!["6.1".into(), "ok 5.4s".into()],
            vec!["6.12".into(), "FAIL".into()],
        ]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert_eq!(lines[0], "kernel  b");
        assert!(
            lines[1].chars().all(|c| c == '-') && lines[1].len() >= 9,
            "{out}"
        );
        assert_eq!(lines[2], "6.1     ok 5.4s");
        assert_eq!(lines[3], "6.12    FAIL");
    }

    #[test]
    fn right_alignment() {
        let mut t = new(&["name", "n"], &[1]);
        t.add_row(vec!["a", "1000"]);
        t.add_row(vec!["b", "7"]);
        let out = render(&t);
        assert_eq!(out.lines().nth(2), Some("a     1000"));
        assert_eq!(out.lines().nth(3), Some("b        7"));
    }
}
