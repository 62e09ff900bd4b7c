//! `tandem train-ar2`: an AR2-style loop, a retriever (embedder) and a ranker (cross-encoder)
//! trained in alternation on the WordNet benchmark, each round's bundles in `--out`.

use std::path::PathBuf;

use tandem_training::families::cross_encoder::CrossEncoderConfig;
use tandem_training::families::embedder::ar2::{self, Ar2Config};
use tandem_training::families::embedder::distill::DistillConfig;
use tandem_training::families::embedder::rank_distill::{RankDistillConfig, RankMethod};
use tandem_training::families::embedder::student::StudentShape;
use tandem_training::retrieval::MiningOptions;

/// Arguments of `tandem train-ar2`.
#[derive(clap::Args)]
pub struct TrainAr2Args {
    /// The embedder bundle the retriever starts from.
    #[arg(long)]
    pub retriever: PathBuf,
    /// The ranker's first start: an embedder (its BERT, a zero head) or a cross_encoder bundle.
    #[arg(long)]
    pub ranker_init: PathBuf,
    /// Rounds of ranker-then-retriever.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Training pairs per run (a seeded sample of 232,129).
    #[arg(long)]
    pub max_pairs: Option<usize>,
    /// Hard negatives per query, for both runs.
    #[arg(long, default_value_t = 7)]
    pub negatives: usize,
    /// Mine among this many training glosses [default: all].
    #[arg(long)]
    pub mine_corpus: Option<usize>,
    /// Peak learning rate of the ranker.
    #[arg(long, default_value_t = 2e-5)]
    pub ranker_lr: f64,
    /// Peak learning rate of the retriever.
    #[arg(long, default_value_t = 2e-5)]
    pub retriever_lr: f64,
    /// Queries per ranker step.
    #[arg(long, default_value_t = 16)]
    pub ranker_batch_size: usize,
    /// Pairs per retriever step.
    #[arg(long, default_value_t = 32)]
    pub retriever_batch_size: usize,
    /// Weight of the ranker's score KL next to the retriever's contrastive loss.
    #[arg(long, default_value_t = 1.0)]
    pub beta: f64,
    /// First-stage candidates the ranker reorders at its validation and test.
    #[arg(long, default_value_t = 50)]
    pub rerank_top: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub retrieval: super::retrieval_args::RetrievalRunArgs,
    #[command(flatten)]
    pub bundle: super::bundle_args::BundleArgs,
}

pub fn run(args: TrainAr2Args) -> anyhow::Result<()> {
    let out = &args.bundle;
    let eval = &args.retrieval;
    let wordnet = eval.wordnet(out);
    let mining = MiningOptions {
        per_query: args.negatives,
        depth: (args.negatives * 4).max(30),
        skip_top: 0,
        corpus_limit: args.mine_corpus,
    };
    let name = out.bundle_name();

    let mut ranker = CrossEncoderConfig::new(
        args.ranker_init.clone(),
        args.retriever.clone(),
        wordnet.clone(),
        out.target.out.clone(),
    );
    eval.apply(out, &mut ranker.run);
    ranker.run.common.name = format!("{name}-ranker");
    (ranker.run.common.batch_size, ranker.run.common.seed, ranker.run.common.optim.lr) =
        (args.ranker_batch_size, args.seed, args.ranker_lr);
    (ranker.max_pairs, ranker.mining, ranker.rerank_top) = (args.max_pairs, mining.clone(), args.rerank_top);

    let shape = StudentShape { layers: Vec::new(), vocab: None, intermediate: None };
    let mut base = DistillConfig::new(args.retriever.clone(), wordnet, shape, out.target.out.clone());
    eval.apply(out, &mut base.run);
    base.run.common.name = format!("{name}-retriever");
    (base.run.common.batch_size, base.run.common.seed, base.run.common.optim.lr) =
        (args.retriever_batch_size, args.seed, args.retriever_lr);
    base.init = Some(args.retriever.clone());
    let retriever_run = RankDistillConfig {
        base,
        cross_encoder: PathBuf::new(),
        method: RankMethod::ScoreKl,
        beta: args.beta,
        scale: 20.0,
        teacher_temperature: 1.0,
        mining,
        max_pairs: args.max_pairs,
    };
    let cfg = Ar2Config {
        retriever: args.retriever.clone(),
        ranker,
        retriever_run,
        rounds: args.rounds,
        out: out.target.out.clone(),
    };
    let rounds = ar2::ar2(&cfg)?;
    let report: Vec<serde_json::Value> = rounds
        .iter()
        .map(|r| {
            serde_json::json!({
                "round": r.round,
                "ranker": r.ranker.bundle_dir,
                "ranker_test_ndcg@10": r.ranker.test_accuracy,
                "retriever": r.retriever.bundle_dir,
                "retriever_test_ndcg@10": r.retriever.test_accuracy,
            })
        })
        .collect();
    if out.json {
        println!("{}", serde_json::json!({ "rounds": report }));
    } else {
        for r in &rounds {
            println!(
                "round {}: ranker {} reranks to nDCG@10 {:.4}; retriever {} nDCG@10 {:.4}",
                r.round, r.ranker.bundle_dir, r.ranker.test_accuracy, r.retriever.bundle_dir, r.retriever.test_accuracy
            );
        }
    }
    Ok(())
}
