//! The options every command that trains on the WordNet retrieval benchmark shares: where WordNet
//! comes from, and how much of the benchmark validation and the final test ask.

use std::path::PathBuf;

use tandem_training::families::text_run::{TextRun, WordNetSource};

use super::bundle_args::BundleArgs;

/// Validation, test and data options of a retrieval training command.
#[derive(clap::Args)]
pub struct RetrievalRunArgs {
    /// Validation queries asked after each epoch.
    #[arg(long, default_value_t = 500)]
    pub val_queries: usize,
    /// Glosses searched at validation (every judged one included).
    #[arg(long, default_value_t = 10_000)]
    pub val_corpus: usize,
    /// Test queries asked of the exported bundle [default: all 2,000].
    #[arg(long)]
    pub test_queries: Option<usize>,
    /// Glosses searched at the test [default: all 117,659].
    #[arg(long)]
    pub test_corpus: Option<usize>,
    /// Read WordNet's data.* files from this directory unverified, instead of the fetched copy.
    #[arg(long, value_name = "DIR")]
    pub wordnet_dir: Option<PathBuf>,
}

impl RetrievalRunArgs {
    /// The WordNet to read: the given directory, or the copy `tandem data fetch wordnet` verified.
    pub fn wordnet(&self, bundle: &BundleArgs) -> WordNetSource {
        match &self.wordnet_dir {
            Some(dir) => WordNetSource::Dir(dir.clone()),
            None => WordNetSource::Fetched(bundle.data_dir()),
        }
    }

    /// Sets what these flags and the bundle's flags decide of a run: its name and version,
    /// validation and test sizes, resuming and progress output.
    pub fn apply(&self, bundle: &BundleArgs, run: &mut TextRun) {
        (run.common.name, run.common.version) = (bundle.bundle_name(), bundle.target.version.clone());
        (run.val_queries, run.val_corpus) = (self.val_queries, self.val_corpus);
        (run.test_queries, run.test_corpus) = (self.test_queries, self.test_corpus);
        (run.common.resume, run.common.progress) = (bundle.resume, !bundle.quiet);
    }
}
