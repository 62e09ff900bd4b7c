//! `tandem eval`: accuracy of a bundle on a dataset split, through the serving path.

use std::path::PathBuf;

use tandem_training::data::{default_data_dir, load, DatasetName, Split};
use tandem_training::eval::evaluate_bundle;

/// Arguments of `tandem eval`.
#[derive(clap::Args)]
pub struct Args {
    /// Bundle directory.
    #[arg(long)]
    model: PathBuf,
    /// Dataset: digits, mnist or fashion-mnist.
    #[arg(long, default_value = "digits")]
    dataset: DatasetName,
    /// Split: train, val or test.
    #[arg(long, default_value = "test")]
    split: Split,
    /// Dataset cache directory.
    #[arg(long, env = "TANDEM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Print `{"accuracy":..., "n":...}` as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let dir = args.data_dir.unwrap_or_else(default_data_dir);
    let ds = load(args.dataset, args.split, &dir)?;
    let report = evaluate_bundle(&args.model, &ds)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"accuracy": report.accuracy, "n": report.n, "params": report.params, "model": report.model})
        );
    } else {
        println!(
            "{}: {} {} accuracy {:.4} on {} images ({} parameters)",
            report.model, args.dataset, args.split, report.accuracy, report.n, report.params
        );
    }
    Ok(())
}
