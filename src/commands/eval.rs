//! `tandem eval`: accuracy of a classifier bundle on a dataset split, or the retrieval figures of
//! an embedder bundle (or BM25) on the WordNet benchmark, through the serving path.

use std::path::PathBuf;

use anyhow::bail;
use tandem_training::data::wordnet::WordNet;
use tandem_training::data::{default_data_dir, load, DatasetName, Split};
use tandem_training::eval::evaluate_bundle;
use tandem_training::retrieval::{self, Benchmark, EvalOptions, FirstStage, Rerank};

use crate::bench::Machine;

/// What `tandem eval` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Task {
    /// A classifier's accuracy on a dataset split.
    Classification,
    /// nDCG@10, recall@1, recall@10 and MRR@10 on the WordNet retrieval benchmark.
    Retrieval,
    /// An image tokenizer's reconstructions (PSNR, SSIM, FID-CNN), semantics (head accuracy,
    /// linear probes) and codebook usage on a dataset split.
    Tokenizer,
    /// An image-text dual encoder's image-to-text and text-to-image recall at 1 and 5 over its
    /// dataset's caption set, and its zero-shot accuracy against the class names, on a split.
    ImageText,
}

/// Arguments of `tandem eval`.
#[derive(clap::Args)]
pub struct Args {
    /// What to measure.
    #[arg(long, value_enum, default_value = "classification")]
    task: Task,
    /// Bundle directory; for `--task retrieval`, an embedder bundle or `bm25` for the BM25
    /// baseline (a bundle in a directory named `bm25` is `./bm25`).
    #[arg(long)]
    model: PathBuf,
    /// Dataset of `--task classification`: digits, mnist or fashion-mnist [default: digits]; for
    /// `--task image-text`, the images [default: the bundle's training dataset].
    #[arg(long)]
    dataset: Option<DatasetName>,
    /// Split: train, val or test.
    #[arg(long, default_value = "test")]
    split: Split,
    /// Dataset cache directory.
    #[arg(long, env = "TANDEM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Retrieval: rerank the first candidates with this bundle: an embedder (by cosine) or a
    /// cross_encoder (by its logit on each (query, document) pair).
    #[arg(long)]
    reranker: Option<PathBuf>,
    /// Retrieval: how many first-stage candidates the reranker reorders.
    #[arg(long, requires = "reranker", default_value_t = 100)]
    rerank_top: usize,
    /// Retrieval: ask only the first N queries of the split (in its fixed order).
    #[arg(long, value_name = "N")]
    limit_queries: Option<usize>,
    /// Retrieval: search at most N documents, always keeping every document judged for the asked
    /// queries (the others follow in a fixed order).
    #[arg(long, value_name = "N")]
    corpus_limit: Option<usize>,
    /// Retrieval and image-text: read WordNet's data.{noun,verb,adj,adv} from this directory as
    /// they are, without checksums, instead of the copy `tandem data fetch wordnet` verified.
    #[arg(long, value_name = "DIR")]
    wordnet_dir: Option<PathBuf>,
    /// Tokenizer: the classifier bundle whose penultimate features FID-CNN uses
    /// [default: models/fashion-teacher, or models/mnist-teacher for mnist].
    #[arg(long)]
    fid_classifier: Option<PathBuf>,
    /// Tokenizer: training images the linear probes are fitted on.
    #[arg(long, default_value_t = 10_000)]
    probe_train: usize,
    /// Tokenizer and image-text: measure only the first N images of the split.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Print one JSON object: `{"accuracy", "n", ...}` for classification; `{"ndcg@10",
    /// "recall@1", "recall@10", "mrr@10", "queries_per_s", "n", ...}` for retrieval;
    /// `{"i2t_r@1", "i2t_r@5", "t2i_r@1", "t2i_r@5", "zero_shot_accuracy", "n"}` for image-text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.task {
        Task::Classification => run_classification(args),
        Task::Retrieval => run_retrieval(args),
        Task::Tokenizer => run_tokenizer(args),
        Task::ImageText => run_image_text(args),
    }
}

fn run_image_text(args: Args) -> anyhow::Result<()> {
    eprintln!("{}", Machine::detect().describe());
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    let report = tandem_training::families::image_text::evaluate::evaluate_split(
        &args.model,
        args.dataset,
        args.split,
        &data_dir,
        args.wordnet_dir.as_deref(),
        args.limit,
    )?;
    if args.json {
        let figures = serde_json::json!({
            "i2t_r@1": report.i2t_r1,
            "i2t_r@5": report.i2t_r5,
            "t2i_r@1": report.t2i_r1,
            "t2i_r@5": report.t2i_r5,
            "zero_shot_accuracy": report.zero_shot_accuracy,
            "n": report.n,
        });
        println!("{figures}");
        return Ok(());
    }
    println!(
        "{}: {} images of {}: image->text R@1 {:.4}, R@5 {:.4} over {} captions; text->image R@1 {:.4}, R@5 {:.4}; zero-shot accuracy {:.4}",
        args.model.display(),
        report.n,
        args.split,
        report.i2t_r1,
        report.i2t_r5,
        report.captions,
        report.t2i_r1,
        report.t2i_r5,
        report.zero_shot_accuracy
    );
    Ok(())
}

fn run_tokenizer(args: Args) -> anyhow::Result<()> {
    let dataset = args.dataset.unwrap_or(DatasetName::FashionMnist);
    let classifier = args.fid_classifier.clone().unwrap_or_else(|| {
        PathBuf::from(if dataset == DatasetName::Mnist { "models/mnist-teacher" } else { "models/fashion-teacher" })
    });
    eprintln!("{}", Machine::detect().describe());
    let report = tandem_training::families::tokenizer::evaluate::evaluate(
        &args.model,
        dataset,
        &args.data_dir.clone().unwrap_or_else(default_data_dir),
        args.split,
        args.limit,
        &classifier,
        args.probe_train,
    )?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let optional = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    println!(
        "{} ({}): {} {} on {} images: PSNR {:.2} dB, SSIM {:.4}, FID-CNN {:.2}; head on semantic tokens {}, probe semantic {}, probe pixel {:.4}",
        report.model,
        report.layout,
        dataset,
        args.split,
        report.n,
        report.psnr,
        report.ssim,
        report.fid_cnn,
        optional(report.semantic_head_accuracy),
        optional(report.probe_semantic),
        report.probe_pixel
    );
    Ok(())
}

fn run_classification(args: Args) -> anyhow::Result<()> {
    let retrieval_only = [
        ("--reranker", args.reranker.is_some()),
        ("--limit-queries", args.limit_queries.is_some()),
        ("--corpus-limit", args.corpus_limit.is_some()),
        ("--wordnet-dir", args.wordnet_dir.is_some()),
    ];
    if let Some((flag, _)) = retrieval_only.iter().find(|(_, given)| *given) {
        bail!("{flag} applies to --task retrieval only");
    }
    let dataset = args.dataset.unwrap_or(DatasetName::Digits);
    let dir = args.data_dir.unwrap_or_else(default_data_dir);
    let ds = load(dataset, args.split, &dir)?;
    let report = evaluate_bundle(&args.model, &ds)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"accuracy": report.accuracy, "n": report.n, "params": report.params, "model": report.model})
        );
    } else {
        println!(
            "{}: {} {} accuracy {:.4} on {} images ({} parameters)",
            report.model, dataset, args.split, report.accuracy, report.n, report.params
        );
    }
    Ok(())
}

fn run_retrieval(args: Args) -> anyhow::Result<()> {
    if let Some(dataset) = args.dataset {
        bail!("--dataset {dataset} applies to --task classification; retrieval runs on WordNet");
    }
    let options = EvalOptions {
        split: args.split,
        limit_queries: args.limit_queries,
        corpus_limit: args.corpus_limit,
        rerank: args.reranker.map(|bundle| Rerank { bundle, top: args.rerank_top }),
    };
    let first_stage = FirstStage::from_model_arg(&args.model);
    // Figures are only comparable with the machine stated; stdout stays one JSON object.
    eprintln!("{}", Machine::detect().describe());
    let wordnet = match &args.wordnet_dir {
        Some(dir) => WordNet::read_dir(dir)?,
        None => WordNet::load(&args.data_dir.unwrap_or_else(default_data_dir))?,
    };
    let benchmark = Benchmark::new(&wordnet);
    let report = retrieval::evaluate(&benchmark, &first_stage, &options)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let reranked = match (&report.reranker, report.rerank_top) {
        (Some(reranker), Some(top)) => format!(", top {top} reranked by {reranker}"),
        _ => String::new(),
    };
    println!(
        "{}{reranked}: WordNet {} nDCG@10 {:.4}, R@1 {:.4}, R@10 {:.4}, MRR@10 {:.4} on {} queries over {} documents",
        report.model,
        report.split,
        report.ndcg_at_10,
        report.recall_at_1,
        report.recall_at_10,
        report.mrr_at_10,
        report.n,
        report.n_docs
    );
    println!(
        "indexed {:.0} documents/s ({:.1} s), answered {:.1} queries/s",
        report.docs_per_s, report.index_s, report.queries_per_s
    );
    Ok(())
}
