//! `tandem distill-embedder`: a smaller embedder cut from a teacher embedder (some of its layers,
//! optionally a cut vocabulary) and trained to reproduce the teacher's vectors of the WordNet
//! benchmark's training texts, exported as an `embedder` bundle.

use std::path::PathBuf;

use tandem_training::families::embedder::distill::{self, DistillConfig, DistillLoss};
use tandem_training::families::embedder::student::StudentShape;

/// The distillation loss on the command line.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum LossArg {
    /// 1 − cosine similarity to the teacher's vector.
    Cosine,
    /// Mean squared error to the teacher's raw pooled vector.
    Mse,
}

/// Arguments of `tandem distill-embedder`.
#[derive(clap::Args)]
pub struct DistillEmbedderArgs {
    /// The embedder bundle to distil; the student is cut from it.
    #[arg(long)]
    pub teacher: PathBuf,
    /// The teacher's layers the student keeps, in order (e.g. `0,5`).
    #[arg(long, value_delimiter = ',', required = true)]
    pub layers: Vec<usize>,
    /// Keep this many vocabulary entries: the special and single-character tokens and the
    /// training texts' most used ones [default: all].
    #[arg(long)]
    pub vocab: Option<usize>,
    #[arg(long, value_enum, default_value = "cosine")]
    pub loss: LossArg,
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Texts per step.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Peak learning rate of AdamW.
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Distil on a seeded sample of this many training texts (queries and definitions).
    #[arg(long)]
    pub max_texts: Option<usize>,
    /// Truncate texts to this many tokens (at most the teacher's limit).
    #[arg(long)]
    pub max_seq_length: Option<usize>,
    /// Store the weights as F16: half the bytes, served in F32.
    #[arg(long)]
    pub half: bool,
    #[command(flatten)]
    pub retrieval: super::retrieval_args::RetrievalRunArgs,
    #[command(flatten)]
    pub bundle: super::bundle_args::BundleArgs,
}

pub fn run(args: DistillEmbedderArgs) -> anyhow::Result<()> {
    let out = &args.bundle;
    let eval = &args.retrieval;
    let shape = StudentShape { layers: args.layers.clone(), vocab: args.vocab };
    let mut cfg = DistillConfig::new(args.teacher.clone(), eval.wordnet(out), shape, out.out.clone());
    (cfg.name, cfg.version) = (out.bundle_name(), out.version.clone());
    cfg.loss = match args.loss {
        LossArg::Cosine => DistillLoss::Cosine,
        LossArg::Mse => DistillLoss::Mse,
    };
    (cfg.epochs, cfg.batch_size, cfg.seed, cfg.max_texts) = (args.epochs, args.batch_size, args.seed, args.max_texts);
    (cfg.max_seq_length, cfg.half) = (args.max_seq_length, args.half);
    (cfg.val_queries, cfg.val_corpus) = (eval.val_queries, eval.val_corpus);
    (cfg.test_queries, cfg.test_corpus) = (eval.test_queries, eval.test_corpus);
    cfg.optim.lr = args.lr;
    (cfg.resume, cfg.progress) = (out.resume, !out.quiet);
    let summary = distill::distill(&cfg)?;
    super::train::print_summary(&summary, out.json);
    Ok(())
}
