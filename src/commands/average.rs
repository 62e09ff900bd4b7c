//! `tandem average`: one bundle whose weights are the mean of several bundles' ("model soup").

use std::path::PathBuf;

use anyhow::Context;
use tandem_training::average::average_bundles;

/// Average the weights of bundles of one architecture that were fine-tuned from one start.
#[derive(clap::Args)]
pub struct AverageArgs {
    /// The bundles to average, comma-separated (two or more; the first one's files and manifest
    /// are kept, and the weights are stored in its types).
    #[arg(long, value_delimiter = ',', required = true)]
    pub models: Vec<PathBuf>,
    /// Bundle directory to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Bundle name (default: the output directory's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Bundle version.
    #[arg(long, default_value = "1")]
    pub version: String,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: AverageArgs) -> anyhow::Result<()> {
    let name = super::train::bundle_name(args.name.as_deref(), &args.out);
    let summary = average_bundles(&args.models, &args.out, &name, &args.version)
        .with_context(|| format!("cannot write the average in {}", args.out.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "{}: the mean of {} bundles' {} tensors in {}\n  bundle id {}",
            summary.model,
            summary.ingredients.len(),
            summary.tensors,
            summary.bundle_dir.display(),
            summary.bundle_id
        );
    }
    Ok(())
}
