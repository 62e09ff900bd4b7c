//! `tandem distill-embedder`: a smaller embedder cut from a teacher embedder (some of its layers,
//! optionally a cut vocabulary) and trained to reproduce the teacher's vectors of the WordNet
//! benchmark's training texts, exported as an `embedder` bundle.

use std::path::PathBuf;

use tandem_training::families::embedder::distill::{self, DistillConfig, DistillLoss};
use tandem_training::families::embedder::rank_distill::{self, RankDistillConfig, RankMethod, Validity};
use tandem_training::families::embedder::student::StudentShape;
use tandem_training::retrieval::MiningOptions;

/// The distillation loss on the command line.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum LossArg {
    /// 1 − cosine similarity to the teacher's vector.
    Cosine,
    /// Mean squared error to the teacher's raw pooled vector.
    Mse,
}

/// What the student learns from.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MethodArg {
    /// The teacher bi-encoder's vectors of the training texts (`--loss`).
    Embedding,
    /// The contrastive loss plus KL to the cross-encoder's softmax over each query's candidates.
    ScoreKl,
    /// The contrastive loss plus CPRD: the cross-encoder's order of the student's own hard
    /// negatives, cut at the first invalid one (`--validity`).
    Cprd,
}

/// CPRD's rule for the first invalid negative.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ValidityArg {
    /// The teacher scores the negative at or above the positive.
    AbovePositive,
    /// The teacher's logit of the negative is below `--cprd-threshold`.
    Threshold,
}

/// Arguments of `tandem distill-embedder`.
#[derive(clap::Args)]
pub struct DistillEmbedderArgs {
    /// The embedder bundle to distil; the student is cut from it.
    #[arg(long)]
    pub teacher: PathBuf,
    /// The teacher's layers the student keeps, in order (e.g. `0,5`); needed unless `--init`.
    #[arg(long, value_delimiter = ',', required_unless_present = "init")]
    pub layers: Vec<usize>,
    #[arg(long, value_enum, default_value = "embedding")]
    pub method: MethodArg,
    /// score-kl and cprd: the cross-encoder bundle whose scores are distilled.
    #[arg(long, required_if_eq_any = [("method", "score-kl"), ("method", "cprd")])]
    pub cross_encoder: Option<PathBuf>,
    /// Continue this embedder bundle (a student trained before) instead of cutting one from the
    /// teacher.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// cprd: which negative cuts the teacher's order.
    #[arg(long, value_enum, default_value = "above-positive")]
    pub validity: ValidityArg,
    /// cprd with `--validity threshold`: the smallest teacher logit a kept negative may have.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub cprd_threshold: f32,
    /// score-kl and cprd: weight of the distillation term next to the contrastive loss.
    #[arg(long, default_value_t = 1.0)]
    pub beta: f64,
    /// score-kl and cprd: the student's own hard negatives per query that the teacher scores.
    #[arg(long, default_value_t = 7)]
    pub negatives: usize,
    /// score-kl and cprd: candidates searched per query when mining.
    #[arg(long, default_value_t = 30)]
    pub mine_depth: usize,
    /// score-kl and cprd: mine among this many training glosses [default: all].
    #[arg(long)]
    pub mine_corpus: Option<usize>,
    /// score-kl and cprd: train on a seeded sample of this many pairs.
    #[arg(long)]
    pub max_pairs: Option<usize>,
    /// score-kl: temperature of the cross-encoder's logits.
    #[arg(long, default_value_t = 1.0)]
    pub teacher_temperature: f64,
    /// Keep this many vocabulary entries: the special and single-character tokens and the
    /// training texts' most used ones [default: all].
    #[arg(long)]
    pub vocab: Option<usize>,
    /// Keep this many feed-forward units per layer, those with the largest weights (the
    /// teacher's intermediate size by default): fewer multiply-adds per token.
    #[arg(long)]
    pub intermediate: Option<usize>,
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
    let shape = StudentShape { layers: args.layers.clone(), vocab: args.vocab, intermediate: args.intermediate };
    let mut cfg = DistillConfig::new(args.teacher.clone(), eval.wordnet(out), shape, out.target.out.clone());
    let run = &mut cfg.run;
    eval.apply(out, run);
    (run.common.epochs, run.common.batch_size, run.common.seed, run.common.optim.lr) =
        (args.epochs, args.batch_size, args.seed, args.lr);
    (run.max_seq_length, run.half) = (args.max_seq_length, args.half);
    cfg.loss = match args.loss {
        LossArg::Cosine => DistillLoss::Cosine,
        LossArg::Mse => DistillLoss::Mse,
    };
    (cfg.max_texts, cfg.init) = (args.max_texts, args.init.clone());
    let summary = match args.method {
        MethodArg::Embedding => distill::distill(&cfg)?,
        MethodArg::ScoreKl | MethodArg::Cprd => {
            let method = match (args.method, args.validity) {
                (MethodArg::ScoreKl, _) => RankMethod::ScoreKl,
                (_, ValidityArg::AbovePositive) => RankMethod::Cprd(Validity::AbovePositive),
                (_, ValidityArg::Threshold) => RankMethod::Cprd(Validity::Threshold(args.cprd_threshold)),
            };
            let cross_encoder =
                args.cross_encoder.clone().ok_or_else(|| anyhow::anyhow!("--cross-encoder is needed"))?;
            let rank = RankDistillConfig {
                base: cfg,
                cross_encoder,
                method,
                beta: args.beta,
                scale: 20.0,
                teacher_temperature: args.teacher_temperature,
                mining: MiningOptions {
                    per_query: args.negatives,
                    depth: args.mine_depth,
                    skip_top: 0,
                    corpus_limit: args.mine_corpus,
                },
                max_pairs: args.max_pairs,
            };
            rank_distill::rank_distill(&rank)?
        }
    };
    super::train::print_summary(&summary, out.json);
    Ok(())
}
