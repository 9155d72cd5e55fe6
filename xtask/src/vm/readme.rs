//! `--update-readme`: replaces the README section between the vm-matrix markers (and
//! adds it, under a "Kernel matrix" heading at the end, when the markers are absent).

use anyhow::{bail, Result};

pub const BEGIN: &str = "<!-- vm-matrix:begin -->";
pub const END: &str = "<!-- vm-matrix:end -->";

/// `readme` with the text between the markers replaced by `body`. Nothing outside the
/// markers changes. Markers that are missing, repeated or out of order are an error
/// naming the fix.
pub fn replace_section(readme: &str, body: &str) -> Result<String> {
    let body = body.trim_end();
    let (nb, ne) = (readme.matches(BEGIN).count(), readme.matches(END).count());
    match (nb, ne) {
        (0, 0) => {
            let mut out = readme.trim_end().to_owned();
            out.push_str(&format!("\n\n## Kernel matrix\n\n{BEGIN}\n{body}\n{END}\n"));
            Ok(out)
        }
        (1, 1) => {
            let (Some(b), Some(e)) = (readme.find(BEGIN), readme.find(END)) else {
                bail!("README markers vanished while reading");
            };
            if e < b {
                bail!("README.md has {END} before {BEGIN}; put the begin marker first");
            }
            let head = &readme[..b + BEGIN.len()];
            let tail = &readme[e..];
            Ok(format!("{head}\n{body}\n{tail}"))
        }
        _ => bail!(
            "README.md has {nb} `{BEGIN}` and {ne} `{END}` markers; keep exactly one of each \
             (or none, and --update-readme adds a Kernel matrix section)"
        ),
    }
}

/// Today's date (UTC) as YYYY-MM-DD.
pub fn today_utc() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_between_markers() {
        let r = format!(
            "# t\n\nintro\n\n## Kernel matrix\n\n{BEGIN}\nold\ntable\n{END}\n\n## After\nkeep\n"
        );
        let out = replace_section(&r, "new\n").unwrap();
        assert_eq!(
            out,
            format!("# t\n\nintro\n\n## Kernel matrix\n\n{BEGIN}\nnew\n{END}\n\n## After\nkeep\n")
        );
        // Idempotent.
        assert_eq!(replace_section(&out, "new").unwrap(), out);
    }

    #[test]
    fn adds_a_section_when_markers_are_absent() {
        let out = replace_section("# t\nbody\n\n", "tbl").unwrap();
        assert_eq!(
            out,
            format!("# t\nbody\n\n## Kernel matrix\n\n{BEGIN}\ntbl\n{END}\n")
        );
        // The second update replaces instead of appending again.
        assert_eq!(
            replace_section(&out, "tbl2")
                .unwrap()
                .matches("## Kernel matrix")
                .count(),
            1
        );
    }

    #[test]
    fn broken_markers_are_errors() {
        assert!(replace_section(&format!("{END}\n{BEGIN}\n"), "x").is_err());
        assert!(replace_section(&format!("{BEGIN}\n"), "x").is_err());
        let e = replace_section(&format!("{BEGIN}{BEGIN}{END}"), "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("exactly one"), "{e}");
    }

    #[test]
    fn today_is_a_date() {
        let d = today_utc();
        assert!(
            chrono::NaiveDate::parse_from_str(&d, "%Y-%m-%d").is_ok(),
            "{d}"
        );
    }
}
