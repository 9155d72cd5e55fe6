//! `portwatch generate --out DIR` (hidden): the man pages and the shell completions,
//! generated from the same clap definitions as `--help`, so they cannot disagree.
//! `cargo xtask dist` runs it to fill the tarball and the Debian package.

use std::{fs, path::PathBuf, process::ExitCode};

use anyhow::{Context as _, Result};
use clap::Args;
use clap_complete::Shell;

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Directory to write into (created if missing): man/portwatch.1 and one page per
    /// subcommand, completions/portwatch.bash, completions/_portwatch (zsh),
    /// completions/portwatch.fish.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// The shells completions are written for, with the file name each expects.
pub const SHELLS: [(Shell, &str); 3] = [
    (Shell::Bash, "portwatch.bash"),
    (Shell::Zsh, "_portwatch"),
    (Shell::Fish, "portwatch.fish"),
];

pub fn run(a: GenerateArgs, cli: clap::Command) -> Result<ExitCode> {
    let man = a.out.join("man");
    let completions = a.out.join("completions");
    for d in [&man, &completions] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    clap_mangen::generate_to(cli.clone(), &man)
        .with_context(|| format!("writing man pages into {}", man.display()))?;
    for (shell, file) in SHELLS {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cli.clone(), "portwatch", &mut buf);
        let path = completions.join(file);
        fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
