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
    #[command(flatten)]
    pub target: super::bundle_args::BundleTarget,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: AverageArgs) -> anyhow::Result<()> {
    let target = &args.target;
    let summary = average_bundles(&args.models, &target.out, &target.bundle_name(), &target.version)
        .with_context(|| format!("cannot write the average in {}", target.out.display()))?;
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
