//! `tandem data fetch`: download and verify datasets into the cache.

use std::path::PathBuf;

use anyhow::bail;
use clap::Subcommand;
use tandem_training::data::{default_data_dir, fetch, DatasetName};

/// Dataset management.
#[derive(Subcommand)]
pub enum DataCommand {
    /// Fetch datasets (`mnist`, `fashion-mnist`, or `all`) and verify their checksums.
    Fetch {
        /// Datasets to fetch.
        #[arg(required = true)]
        names: Vec<String>,
        /// Cache directory (default: $TANDEM_DATA_DIR, else the user cache dir).
        #[arg(long, env = "TANDEM_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
}

pub fn run(cmd: DataCommand) -> anyhow::Result<()> {
    let DataCommand::Fetch { names, data_dir } = cmd;
    let dir = data_dir.unwrap_or_else(default_data_dir);
    let mut wanted = Vec::new();
    for name in &names {
        if name == "all" {
            wanted.extend(DatasetName::ALL.into_iter().filter(|d| !d.is_embedded()));
            continue;
        }
        let parsed: DatasetName = name.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
        if parsed.is_embedded() {
            eprintln!("{parsed} is embedded in the binary; nothing to fetch");
            continue;
        }
        wanted.push(parsed);
    }
    wanted.dedup();
    if wanted.is_empty() && names.iter().all(|n| n != "digits") {
        bail!("nothing to fetch");
    }
    for name in wanted {
        let report = fetch(name, &dir)?;
        let state = if report.already_present { "already present" } else { "fetched" };
        println!("{name}: {state} in {} ({} files verified)", report.dir.display(), report.files.len());
        for (file, sha) in &report.files {
            println!("  {sha}  {file}");
        }
    }
    Ok(())
}
