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
    #[arg(long, default_value_t = 3)]
    pub negatives: usize,
    /// Negatives per query drawn at random from the training glosses, besides the hard ones: with
    /// hard negatives alone the model can learn to prefer the gloss least like the query.
    #[arg(long, default_value_t = 4)]
    pub random_negatives: usize,
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
    #[arg(long, default_value_t = 5e-5)]
    pub lr: f64,
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// First-stage candidates the cross-encoder reorders at validation and test.
    #[arg(long, default_value_t = 50)]
    pub rerank_top: usize,
    /// The score head's learning rate as a multiple of `--lr` (the head starts at zero).
    #[arg(long, default_value_t = 100.0)]
    pub head_lr_scale: f64,
    /// Truncate each (query, document) pair to this many tokens (at most the bundle's limit).
    #[arg(long)]
    pub max_seq_length: Option<usize>,
    /// Store the exported weights as F16 (half the bytes; served in F32).
    #[arg(long)]
    pub half: bool,
    #[command(flatten)]
    pub retrieval: super::retrieval_args::RetrievalRunArgs,
    #[command(flatten)]
    pub bundle: super::bundle_args::BundleArgs,
}

pub fn run(args: TrainCrossEncoderArgs) -> anyhow::Result<()> {
    let out = &args.bundle;
    let eval = &args.retrieval;
    let mut cfg =
        CrossEncoderConfig::new(args.init.clone(), args.miner.clone(), eval.wordnet(out), out.target.out.clone());
    let run = &mut cfg.run;
    eval.apply(out, run);
    (run.common.epochs, run.common.batch_size, run.common.seed, run.common.optim.lr) =
        (args.epochs, args.batch_size, args.seed, args.lr);
    (run.max_seq_length, run.half) = (args.max_seq_length, args.half);
    (cfg.max_pairs, cfg.rerank_top, cfg.head_lr_scale) = (args.max_pairs, args.rerank_top, args.head_lr_scale);
    cfg.random_negatives = args.random_negatives;
    cfg.mining = MiningOptions {
        per_query: args.negatives,
        depth: args.mine_depth,
        corpus_limit: args.mine_corpus,
        ..MiningOptions::default()
    };
    let summary = cross_encoder::train(&cfg)?;
    super::train::print_summary(&summary, out.json);
    Ok(())
}
