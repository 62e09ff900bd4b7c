//! The flags every training command that writes one bundle shares: where it goes, what it is
//! called, resuming, the data cache and how the run reports.

use std::path::PathBuf;

use tandem_training::data::default_data_dir;

/// Where a written bundle goes and what it is called: `--out`, `--name`, `--version`, the same
/// flags for every command that writes a bundle.
#[derive(clap::Args, Clone)]
pub struct BundleTarget {
    /// Bundle directory to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Bundle name (default: the output directory's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Bundle version.
    #[arg(long, default_value = "1")]
    pub version: String,
}

impl BundleTarget {
    /// The bundle's name: `--name`, else the output directory's.
    pub fn bundle_name(&self) -> String {
        super::train::bundle_name(self.name.as_deref(), &self.out)
    }
}

/// Output, identity and reporting of a training run.
#[derive(clap::Args)]
pub struct BundleArgs {
    #[command(flatten)]
    pub target: BundleTarget,
    /// Continue from the checkpoint next to the output directory.
    #[arg(long)]
    pub resume: bool,
    /// Dataset cache directory.
    #[arg(long, env = "TANDEM_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Hide progress output.
    #[arg(long)]
    pub quiet: bool,
}

impl BundleArgs {
    /// The bundle's name: `--name`, else the output directory's.
    pub fn bundle_name(&self) -> String {
        self.target.bundle_name()
    }

    /// `--data-dir`, else the default cache.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(default_data_dir)
    }
}
