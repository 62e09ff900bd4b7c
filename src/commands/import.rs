//! `tandem import hf`: turn a model from another format into a bundle that `tandem serve` loads.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use tandem_runtime::import::{import_sentence_transformers, ImportOptions};

/// Formats that can be imported.
#[derive(Subcommand)]
pub enum ImportCommand {
    /// Import a sentence-transformers directory (BERT encoder, pooling, optional normalisation) as
    /// an `embedder` bundle, e.g. the one `tandem data fetch minilm` installs.
    Hf {
        /// The directory: config.json, model.safetensors, tokenizer.json, modules.json,
        /// 1_Pooling/config.json and sentence_bert_config.json.
        dir: PathBuf,
        /// Where to write the bundle.
        #[arg(long)]
        out: PathBuf,
        /// Model name [default: the directory's name].
        #[arg(long)]
        name: Option<String>,
        /// Model version.
        #[arg(long, default_value = "1")]
        version: String,
    },
}

pub fn run(cmd: ImportCommand) -> anyhow::Result<()> {
    let ImportCommand::Hf { dir, out, name, version } = cmd;
    let name = name.unwrap_or_else(|| default_name(&dir));
    let options = ImportOptions { name, version };
    let bundle = import_sentence_transformers(&dir, &out, &options)
        .with_context(|| format!("cannot import {}", dir.display()))?;
    let spec = bundle.manifest.embedder().context("an import writes an embedder bundle")?;
    println!(
        "{}: embedder bundle in {} ({} layers, width {}, {:?} pooling, normalize {}, max_seq_length {})",
        bundle.model_id(),
        out.display(),
        spec.architecture.num_hidden_layers,
        spec.architecture.hidden_size,
        spec.pooling,
        spec.normalize,
        spec.max_seq_length
    );
    println!("  bundle id {}", bundle.id);
    Ok(())
}

/// The directory's name reduced to the characters a model name may hold.
fn default_name(dir: &Path) -> String {
    let raw = dir.canonicalize().ok().and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()));
    let name: String = raw
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c.to_ascii_lowercase() } else { '-' })
        .collect();
    if name.trim_matches('-').is_empty() {
        "embedder".to_owned()
    } else {
        name
    }
}
