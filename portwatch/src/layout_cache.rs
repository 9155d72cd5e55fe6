//! A cache of the BTF-derived layout in /run (tmpfs, root-only): parsing the kernel's BTF
//! costs ~140 ms per start, more than the whole `dump` walk. The kernel's BTF cannot
//! change without a reboot, so the cache is keyed by the boot id, the kernel release and
//! the BTF file's size, and by what this binary reads (the size of `Layout` and the rows
//! of the compatibility table, so a binary of another version never takes another's
//! cache); anything unreadable or mismatched is ignored and rebuilt.
use std::{
    fs,
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::kernel::{compat::VARIANTS, host_layout, LayoutError, Resolved, OSRELEASE, VMLINUX_BTF};

const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";
/// Bump when `Resolved` or `Layout` change shape.
const FORMAT: u32 = 6;

#[derive(Serialize, Deserialize, PartialEq, Eq, Debug, Clone)]
struct Key {
    format: u32,
    /// What this binary reads: the size of `Layout` and the ids of the table's rows.
    schema: String,
    boot_id: String,
    release: String,
    btf_size: u64,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    key: Key,
    resolved: Resolved,
}

fn current_key() -> Option<Key> {
    Some(Key {
        format: FORMAT,
        schema: schema(),
        boot_id: fs::read_to_string(BOOT_ID).ok()?.trim().to_string(),
        release: fs::read_to_string(OSRELEASE).ok()?.trim().to_string(),
        btf_size: fs::metadata(VMLINUX_BTF).ok()?.len(),
    })
}

fn schema() -> String {
    let ids: Vec<String> = VARIANTS
        .iter()
        .map(|v| serde_json::to_string(&v.id).unwrap_or_default())
        .collect();
    format!(
        "layout {} bytes; {}",
        std::mem::size_of::<portwatch_common::Layout>(),
        ids.join(",")
    )
}

/// Where the cache lives: one file per schema (see [`Key::schema`]), so binaries of
/// different versions on one host (a CLI beside an exporter) do not overwrite each
/// other's cache at every start.
pub fn cache_path() -> PathBuf {
    PathBuf::from(format!(
        "/run/portwatch/layout-{:016x}.json",
        fnv1a(schema().as_bytes())
    ))
}

/// FNV-1a, 64 bits: a name for the schema that stays the same across builds and Rust
/// versions (unlike `std`'s hasher); the file's key is still checked in full.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn read(path: &Path, key: &Key) -> Option<Resolved> {
    let text = fs::read_to_string(path).ok()?;
    let entry: Entry = serde_json::from_str(&text).ok()?;
    (entry.key == *key && entry.resolved.layout.valid == 1).then_some(entry.resolved)
}

fn write(path: &Path, key: Key, resolved: &Resolved) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let entry = Entry {
        key,
        resolved: resolved.clone(),
    };
    let text = serde_json::to_string(&entry).map_err(std::io::Error::other)?;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    drop(f);
    fs::rename(&tmp, path)
}

/// The running kernel's layout, from the cache when it matches, else from BTF (and the
/// cache is refreshed; failing to write it is not an error).
pub fn host_layout_cached() -> Result<Resolved, LayoutError> {
    host_layout_cached_at(&cache_path())
}

pub fn host_layout_cached_at(path: &Path) -> Result<Resolved, LayoutError> {
    let key = current_key();
    if let Some(k) = &key {
        if let Some(r) = read(path, k) {
            return Ok(r);
        }
    }
    let resolved = host_layout()?;
    if let Some(k) = key {
        let _ = write(path, k, &resolved);
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_round_trips_and_rejects_other_keys() {
        if !Path::new(VMLINUX_BTF).exists() {
            eprintln!("SKIPPED cache_round_trips_and_rejects_other_keys: no {VMLINUX_BTF}");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("layout.json");
        let fresh = host_layout_cached_at(&path).expect("layout");
        assert!(path.exists(), "the cache is written");
        let again = host_layout_cached_at(&path).expect("cached layout");
        assert_eq!(fresh, again);
        let key = current_key().expect("key");
        assert_eq!(read(&path, &key), Some(fresh.clone()));
        let other = Key {
            boot_id: "another boot".into(),
            ..key.clone()
        };
        assert_eq!(
            read(&path, &other),
            None,
            "another boot's cache is not used"
        );
        let other = Key {
            format: FORMAT + 1,
            ..key.clone()
        };
        assert_eq!(read(&path, &other), None);
        let other = Key {
            schema: format!("{} and one more row", key.schema),
            ..key.clone()
        };
        assert_eq!(
            read(&path, &other),
            None,
            "another binary's cache is not used"
        );
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert!(cache_path()
            .to_string_lossy()
            .starts_with("/run/portwatch/layout-"));
        fs::write(&path, "garbage").expect("write");
        assert_eq!(read(&path, &key), None, "garbage is ignored");
        assert_eq!(host_layout_cached_at(&path).expect("rebuilt"), fresh);
    }
}
