//! `tandem data fetch`: download and verify datasets, text corpora and pretrained models into the
//! cache.

use std::path::PathBuf;

use anyhow::bail;
use clap::Subcommand;
use tandem_training::data::{default_data_dir, fetch, AssetName};

/// Dataset and model management.
#[derive(Subcommand)]
pub enum DataCommand {
    /// Fetch datasets (`mnist`, `fashion-mnist`), corpora (`wordnet`) and models (`minilm`), or
    /// `all` of them, and verify their checksums.
    ///
    /// Each one is installed in its own directory under the cache directory, and the path is
    /// printed; for a model it is the directory to load the model from. Files already present
    /// and verified are not downloaded again.
    Fetch {
        /// Datasets, corpora and models to fetch.
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
    let mut wanted: Vec<AssetName> = Vec::new();
    let mut push = |name: AssetName| {
        if !wanted.contains(&name) {
            wanted.push(name);
        }
    };
    for name in &names {
        if name == "all" {
            AssetName::ALL.into_iter().filter(|a| !a.is_embedded()).for_each(&mut push);
            continue;
        }
        let parsed: AssetName = name.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
        if parsed.is_embedded() {
            eprintln!("{parsed} is embedded in the binary; nothing to fetch");
            continue;
        }
        push(parsed);
    }
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
