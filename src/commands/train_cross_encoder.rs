//! `tandem train-cross-encoder`: a cross-encoder started from an embedder bundle's BERT, trained
//! on the WordNet retrieval benchmark's training pairs against hard negatives a bi-encoder mines,
//! exported as a `cross_encoder` bundle that reranks that bi-encoder's candidates.

use std::path::PathBuf;

use tandem_training::families::cross_encoder::{self, CrossEncoderConfig};
use tandem_training::retrieval::MiningOptions;

/// Arguments of `tandem train-cross-encoder`.
#[derive(clap::Args)]
pub struct TrainCrossEncoderArgs {
    /// The embedder bundle whose BERT starts the cross-encoder (e.g. all-MiniLM-L6-v2 after
    /// `tandem import hf`); the scoring head starts at zero.
    #[arg(long)]
    pub init: PathBuf,
    /// The embedder bundle that mines the hard negatives and is the first stage at validation and
    /// test.
    #[arg(long)]
    pub miner: PathBuf,
    /// Hard negatives per query: the loss ranks the positive against them.
    #[arg(long, default_value_t = 7)]
    pub negatives: usize,
    /// Candidates the miner searches per query for its negatives.
    #[arg(long, default_value_t = 30)]
    pub mine_depth: usize,
    /// Mine among this many training glosses (the pairs' own included) [default: all].
    #[arg(long)]
    pub mine_corpus: Option<usize>,
    /// Train on a seeded sample of this many pairs (of 232,129).
    #[arg(long)]
    pub max_pairs: Option<usize>,
    /// Queries per step, each with its positive and its negatives.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Peak learning rate of AdamW.
    #[arg(long, default_value_t = 2e-5)]
    pub lr: f64,
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// First-stage candidates the cross-encoder reorders at validation and test.
    #[arg(long, default_value_t = 50)]
    pub rerank_top: usize,
    #[command(flatten)]
    pub retrieval: super::retrieval_args::RetrievalRunArgs,
    #[command(flatten)]
    pub bundle: super::bundle_args::BundleArgs,
}

pub fn run(args: TrainCrossEncoderArgs) -> anyhow::Result<()> {
    let out = &args.bundle;
    let eval = &args.retrieval;
    let mut cfg = CrossEncoderConfig::new(args.init.clone(), args.miner.clone(), eval.wordnet(out), out.out.clone());
    (cfg.name, cfg.version) = (out.bundle_name(), out.version.clone());
    (cfg.epochs, cfg.batch_size, cfg.seed, cfg.max_pairs) = (args.epochs, args.batch_size, args.seed, args.max_pairs);
    cfg.mining = MiningOptions {
        per_query: args.negatives,
        depth: args.mine_depth,
        corpus_limit: args.mine_corpus,
        ..MiningOptions::default()
    };
    (cfg.val_queries, cfg.val_corpus, cfg.rerank_top) = (eval.val_queries, eval.val_corpus, args.rerank_top);
    (cfg.test_queries, cfg.test_corpus) = (eval.test_queries, eval.test_corpus);
    cfg.optim.lr = args.lr;
    (cfg.resume, cfg.progress) = (out.resume, !out.quiet);
    let summary = cross_encoder::train(&cfg)?;
    super::train::print_summary(&summary, out.json);
    Ok(())
}
