//! `tandem train-embedder`: an embedder bundle fine-tuned on the WordNet retrieval benchmark's
//! training pairs with in-batch negatives, exported as an `embedder` bundle.

use std::path::PathBuf;

use tandem_training::families::embedder::{self, EmbedderConfig, ScoreTeacher};
use tandem_training::retrieval::MiningOptions;

/// Arguments of `tandem train-embedder`.
#[derive(clap::Args)]
pub struct TrainEmbedderArgs {
    /// The embedder bundle to start from (e.g. all-MiniLM-L6-v2 after `tandem import hf`).
    #[arg(long)]
    pub init: PathBuf,
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Pairs per step; each query's negatives are the other pairs' glosses.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Peak learning rate of AdamW.
    #[arg(long, default_value_t = 2e-5)]
    pub lr: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Train on a seeded sample of this many pairs (of 232,129).
    #[arg(long)]
    pub max_pairs: Option<usize>,
    /// Scale of the cosine similarities before the softmax.
    #[arg(long, default_value_t = 20.0)]
    pub scale: f64,
    /// Truncate texts to this many tokens (at most the bundle's limit).
    #[arg(long)]
    pub max_seq_length: Option<usize>,
    /// Hard negatives per pair, mined by the model being trained at the start of every epoch
    /// [default: 0, in-batch negatives only].
    #[arg(long, default_value_t = 0)]
    pub hard_negatives: usize,
    /// Documents searched per query when mining.
    #[arg(long, default_value_t = 30)]
    pub mine_depth: usize,
    /// The miner's best non-answers passed over (likely unjudged answers).
    #[arg(long, default_value_t = 0)]
    pub mine_skip_top: usize,
    /// Mine among this many training glosses (the pairs' own included) [default: all].
    #[arg(long)]
    pub mine_corpus: Option<usize>,
    /// Distil this embedder bundle's in-batch scores next to the labels: KL from its softmax
    /// over each query's row of the batch's cosines to the model's (e.g. a student fine-tuned with
    /// the bi-encoder it was cut from as its teacher).
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Weight of the teacher's term next to the contrastive loss.
    #[arg(long, default_value_t = 1.0, requires = "teacher")]
    pub teacher_weight: f64,
    /// Temperature of both softmaxes in the teacher's term (its gradient is scaled by T²).
    #[arg(long, default_value_t = 1.0, requires = "teacher")]
    pub teacher_temperature: f64,
    /// Store the exported weights as F16 (half the bytes; served in F32).
    #[arg(long)]
    pub half: bool,
    #[command(flatten)]
    pub retrieval: super::retrieval_args::RetrievalRunArgs,
    #[command(flatten)]
    pub bundle: super::bundle_args::BundleArgs,
}

pub fn run(args: TrainEmbedderArgs) -> anyhow::Result<()> {
    let out = &args.bundle;
    let eval = &args.retrieval;
    let mut cfg = EmbedderConfig::new(args.init.clone(), eval.wordnet(out), out.target.out.clone());
    let run = &mut cfg.run;
    eval.apply(out, run);
    (run.common.epochs, run.common.batch_size, run.common.seed, run.common.optim.lr) =
        (args.epochs, args.batch_size, args.seed, args.lr);
    (run.max_seq_length, run.half) = (args.max_seq_length, args.half);
    (cfg.max_pairs, cfg.scale) = (args.max_pairs, args.scale);
    cfg.mining = MiningOptions {
        per_query: args.hard_negatives,
        depth: args.mine_depth,
        skip_top: args.mine_skip_top,
        corpus_limit: args.mine_corpus,
    };
    cfg.teacher = args.teacher.map(|bundle| ScoreTeacher {
        bundle,
        weight: args.teacher_weight,
        temperature: args.teacher_temperature,
    });
    let summary = embedder::train(&cfg)?;
    super::train::print_summary(&summary, out.json);
    Ok(())
}
