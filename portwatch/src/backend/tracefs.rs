//! Tracefs: where it is mounted, and field offsets from tracepoint `format` files.
use std::{
    fs,
    path::{Path, PathBuf},
};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted at /sys/kernel/tracing or /sys/kernel/debug/tracing and mounting it failed ({0}); \
         mount it with `mount -t tracefs nodev /sys/kernel/tracing`"
    )]
    NotMounted(String),
    #[error("cannot read tracepoint format {path}: {source}; does this kernel have the tracepoint {tp}?")]
    Format {
        path: PathBuf,
        tp: String,
        source: std::io::Error,
    },
    #[error("tracepoint {tp} has no field `{field}` in {path}")]
    MissingField {
        tp: String,
        field: String,
        path: PathBuf,
    },
}

/// Where tracefs is mounted, the usual place first.
pub const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The tracefs mount point, mounting it at /sys/kernel/tracing when no mount exists
/// (tracepoint attachment needs it). Returns the path and whether we mounted it.
pub fn ensure_mounted() -> Result<(PathBuf, bool), TracefsError> {
    for c in CANDIDATES {
        if Path::new(c).join("events").is_dir() {
            return Ok((PathBuf::from(c), false));
        }
    }
    let target = Path::new(CANDIDATES[0]);
    nix::mount::mount(
        Some("nodev"),
        target,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| TracefsError::NotMounted(e.to_string()))?;
    if target.join("events").is_dir() {
        Ok((target.to_path_buf(), true))
    } else {
        Err(TracefsError::NotMounted(
            "mounted, but no events directory".into(),
        ))
    }
}

/// Offset of `field` in the record of tracepoint `category/name`.
pub fn field_offset(
    root: &Path,
    category: &str,
    name: &str,
    field: &str,
) -> Result<u32, TracefsError> {
    let path = root.join("events").join(category).join(name).join("format");
    let tp = format!("{category}:{name}");
    let text = fs::read_to_string(&path).map_err(|source| TracefsError::Format {
        path: path.clone(),
        tp: tp.clone(),
        source,
    })?;
    parse_offset(&text, field).ok_or(TracefsError::MissingField {
        tp,
        field: field.into(),
        path,
    })
}

/// Finds `offset:N` on the `field:` line whose declaration ends with the field name.
pub fn parse_offset(format: &str, field: &str) -> Option<u32> {
    for line in format.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let mut parts = rest.split(';');
        let decl = parts.next()?.trim();
        // The declaration's last token is the name, possibly with an array suffix.
        let last = decl.rsplit([' ', '*']).next()?;
        let name = last.split('[').next()?;
        if name != field {
            continue;
        }
        for p in parts {
            if let Some(v) = p.trim().strip_prefix("offset:") {
                return v.trim().parse().ok();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SET_STATE: &str = "name: inet_sock_set_state\nID: 2287\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;\n\
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;\n\
\tfield:int newstate;\toffset:20;\tsize:4;\tsigned:1;\n\
\tfield:__u16 protocol;\toffset:30;\tsize:2;\tsigned:0;\n\
\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;\n";

    #[test]
    fn parses_offsets() {
        assert_eq!(parse_offset(SET_STATE, "skaddr"), Some(8));
        assert_eq!(parse_offset(SET_STATE, "newstate"), Some(20));
        assert_eq!(parse_offset(SET_STATE, "protocol"), Some(30));
        assert_eq!(parse_offset(SET_STATE, "saddr"), Some(32));
        assert_eq!(parse_offset(SET_STATE, "state"), None);
        assert_eq!(parse_offset("garbage", "x"), None);
    }
}
