//! Builds the eBPF programs (crate `portwatch-ebpf`) with the nightly toolchain and
//! bpf-linker; the object is embedded into the binary (see `src/backend/object.rs`).
use std::path::Path;

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let root = Path::new(&manifest_dir).join("..").join("portwatch-ebpf");
    let root_dir = root
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path {}", root.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package { name: "portwatch-ebpf", root_dir, ..Default::default() }],
        aya_build::Toolchain::default(),
    )
}
