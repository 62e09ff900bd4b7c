//! Measuring a retriever on the benchmark: index the corpus, answer the queries with an exact
//! top-k, optionally rerank the first candidates, and score the rankings.
//!
//! The first stage is BM25 or an embedder bundle; the second, optional one is a reranker bundle.
//! Bundles run through the runtime exactly as they are served (`embed` for the first stage,
//! `rerank` for the second), so the figures are those users get.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::Serialize;
use tandem_runtime::{BatchConfig, EmbedRequest, RerankRequest, Runtime, RuntimeConfig};

use super::benchmark::{Benchmark, Query, QueryKind};
use super::bm25::{Bm25, Bm25Params};
use super::metrics::Metrics;
use super::search::DenseIndex;
use crate::data::Split;
use crate::{Error, Result};

/// The deepest cut-off of the metrics: every first stage retrieves at least this many documents.
pub const CUTOFF: usize = 10;

/// Texts handed to the runtime per call: enough for its batcher to form full batches by length.
const EMBED_CHUNK: usize = 1024;

/// The name that selects the BM25 baseline instead of a bundle directory.
pub const BM25: &str = "bm25";

/// What retrieves the first candidates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstStage {
    /// Okapi BM25 (k1 = 1.2, b = 0.75) over the definitions.
    Bm25,
    /// An embedder bundle: cosine similarity of unit-length embeddings.
    Embedder(PathBuf),
}

impl FirstStage {
    /// `bm25` is the baseline; anything else is a bundle directory (a directory that happens to be
    /// called `bm25` is reached as `./bm25`).
    pub fn from_model_arg(model: &Path) -> FirstStage {
        if model.as_os_str() == BM25 {
            FirstStage::Bm25
        } else {
            FirstStage::Embedder(model.to_path_buf())
        }
    }
}

/// Reordering of the first stage's best candidates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rerank {
    /// The reranker bundle.
    pub bundle: PathBuf,
    /// How many first-stage candidates it reorders.
    pub top: usize,
}

/// What to evaluate on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalOptions {
    /// The split whose queries are asked: normally `test`, `val` for tuning.
    pub split: Split,
    /// Ask only the first queries of the split's fixed order.
    pub limit_queries: Option<usize>,
    /// Search a corpus of at most this many documents, always including every document judged
    /// for the asked queries (see [`Benchmark::corpus_for`]).
    pub corpus_limit: Option<usize>,
    /// An optional second stage.
    pub rerank: Option<Rerank>,
}

/// The figures of one evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct RetrievalReport {
    /// `bm25`, or the first stage's `name@version`.
    pub model: String,
    /// The first stage's parameters; none for BM25.
    pub params: Option<usize>,
    /// The reranker's `name@version`, when there is one.
    pub reranker: Option<String>,
    /// First-stage candidates the reranker reordered.
    pub rerank_top: Option<usize>,
    /// Which queries were asked.
    pub split: Split,
    /// Mean nDCG@10 with grades 2 (own synset) and 1 (direct hypernyms and hyponyms).
    #[serde(rename = "ndcg@10")]
    pub ndcg_at_10: f64,
    /// Fraction of queries whose own synset is ranked first.
    #[serde(rename = "recall@1")]
    pub recall_at_1: f64,
    /// Fraction of queries whose own synset is in the top 10.
    #[serde(rename = "recall@10")]
    pub recall_at_10: f64,
    /// Mean reciprocal rank of the own synset within the top 10.
    #[serde(rename = "mrr@10")]
    pub mrr_at_10: f64,
    /// Queries answered per second: embedding or tokenizing the queries, the exact search and the
    /// reranking, after the corpus is indexed.
    pub queries_per_s: f64,
    /// Queries asked.
    pub n: usize,
    /// Documents searched.
    pub n_docs: usize,
    /// Seconds spent indexing the corpus (embedding every document, or building BM25's index).
    pub index_s: f64,
    /// Documents indexed per second.
    pub docs_per_s: f64,
    /// The same figures over the lemma queries alone and over the example sentences alone.
    pub by_kind: ByKind,
}

impl RetrievalReport {
    /// The figures beyond nDCG@10 by name (`recall_at_1`, `recall_at_10`, `mrr_at_10`), as a
    /// training run records them in its history and, prefixed `test_`, in a bundle's metrics.
    pub fn figures(&self) -> BTreeMap<String, f64> {
        BTreeMap::from([
            ("recall_at_1".into(), self.recall_at_1),
            ("recall_at_10".into(), self.recall_at_10),
            ("mrr_at_10".into(), self.mrr_at_10),
        ])
    }
}

/// Figures per kind of query: one or two words, or a whole sentence.
#[derive(Debug, Clone, Serialize)]
pub struct ByKind {
    /// Over the lemma queries.
    pub lemma: KindFigures,
    /// Over the example-sentence queries.
    pub example: KindFigures,
}

/// The four figures over one kind of query.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct KindFigures {
    /// Mean nDCG@10.
    #[serde(rename = "ndcg@10")]
    pub ndcg_at_10: f64,
    /// Mean recall@1.
    #[serde(rename = "recall@1")]
    pub recall_at_1: f64,
    /// Mean recall@10.
    #[serde(rename = "recall@10")]
    pub recall_at_10: f64,
    /// Mean MRR@10.
    #[serde(rename = "mrr@10")]
    pub mrr_at_10: f64,
    /// Queries of this kind.
    pub n: usize,
}

impl From<Metrics> for KindFigures {
    fn from(m: Metrics) -> Self {
        KindFigures {
            ndcg_at_10: m.ndcg_at_10,
            recall_at_1: m.recall_at_1,
            recall_at_10: m.recall_at_10,
            mrr_at_10: m.mrr_at_10,
            n: m.n,
        }
    }
}

/// Evaluates `first_stage` (and the reranker of `options`) on the benchmark.
pub fn evaluate(benchmark: &Benchmark, first_stage: &FirstStage, options: &EvalOptions) -> Result<RetrievalReport> {
    let mut queries: Vec<&Query> = benchmark.queries(options.split);
    if let Some(limit) = options.limit_queries {
        queries.truncate(limit);
    }
    if queries.is_empty() {
        return Err(Error::InvalidArgument(format!("the {} split has no queries to ask", options.split)));
    }
    if options.rerank.as_ref().is_some_and(|r| r.top == 0) {
        return Err(Error::InvalidArgument("the reranker needs at least one candidate to reorder".into()));
    }
    let corpus = benchmark.corpus_for(&queries, options.corpus_limit)?;
    let docs: Vec<String> = corpus.iter().map(|&d| benchmark.docs[d].clone()).collect();
    let reranker = options.rerank.as_ref().map(|r| load_reranker(&r.bundle)).transpose()?;
    let depth = options.rerank.as_ref().map_or(CUTOFF, |r| r.top.max(CUTOFF));

    // The model loads before the clock starts: indexing time is embedding (or BM25) time only.
    let encoder = match first_stage {
        FirstStage::Bm25 => None,
        FirstStage::Embedder(dir) => Some(Encoder::load(dir, 0)?),
    };
    let (model, params) = match &encoder {
        None => (BM25.to_string(), None),
        Some(encoder) => (encoder.id.clone(), Some(encoder.params)),
    };
    let started = Instant::now();
    let index = match encoder {
        None => Index::Bm25(Bm25::new(docs.iter().map(String::as_str), Bm25Params::default())),
        Some(encoder) => {
            let vectors = encoder.embed(&docs, "documents")?;
            Index::Dense { index: DenseIndex::new(&vectors)?, encoder: Box::new(encoder) }
        }
    };
    let index_s = started.elapsed().as_secs_f64();
    tracing::info!(docs = docs.len(), seconds = index_s, "corpus indexed");

    let started = Instant::now();
    let texts: Vec<String> = queries.iter().map(|q| q.text.clone()).collect();
    let mut rankings = index.search(&texts, depth)?;
    if let (Some(reranker), Some(rerank)) = (&reranker, &options.rerank) {
        for (text, ranking) in texts.iter().zip(rankings.iter_mut()) {
            let top = rerank.top.min(ranking.len());
            if top == 0 {
                // BM25 found nothing for this query: nothing to reorder.
                continue;
            }
            let candidates: Vec<String> = ranking[..top].iter().map(|&p| docs[p].clone()).collect();
            let scores = reranker.rerank_scores(text, &candidates)?;
            let mut order: Vec<usize> = (0..top).collect();
            // Stable: equal scores keep the first stage's order.
            order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
            let reordered: Vec<usize> = order.iter().map(|&i| ranking[i]).collect();
            ranking[..top].copy_from_slice(&reordered);
        }
    }
    let query_s = started.elapsed().as_secs_f64();
    tracing::info!(queries = queries.len(), seconds = query_s, "queries answered");

    let rankings: Vec<Vec<usize>> =
        rankings.into_iter().map(|r| r.into_iter().map(|position| corpus[position]).collect()).collect();
    let judgments: Vec<Vec<(usize, u8)>> = queries.iter().map(|q| benchmark.judgments(q.synset)).collect();
    let metrics_of = |kind: Option<QueryKind>| {
        let runs = (rankings.iter().zip(&judgments)).zip(&queries).filter(|(_, q)| kind.is_none_or(|k| q.kind == k));
        Metrics::of(runs.map(|((r, j), _)| (r.as_slice(), j.as_slice())))
    };
    let metrics = metrics_of(None);
    let by_kind = ByKind {
        lemma: metrics_of(Some(QueryKind::Lemma)).into(),
        example: metrics_of(Some(QueryKind::Example)).into(),
    };
    Ok(RetrievalReport {
        model,
        params,
        reranker: reranker.as_ref().map(|r| r.id.clone()),
        rerank_top: options.rerank.as_ref().map(|r| r.top),
        split: options.split,
        ndcg_at_10: metrics.ndcg_at_10,
        recall_at_1: metrics.recall_at_1,
        recall_at_10: metrics.recall_at_10,
        mrr_at_10: metrics.mrr_at_10,
        queries_per_s: rate(queries.len(), query_s),
        n: metrics.n,
        n_docs: docs.len(),
        index_s,
        docs_per_s: rate(docs.len(), index_s),
        by_kind,
    })
}

fn rate(n: usize, seconds: f64) -> f64 {
    if seconds > 0.0 {
        n as f64 / seconds
    } else {
        0.0
    }
}

/// An indexed first stage.
enum Index {
    Bm25(Bm25),
    // Boxed: a loaded encoder (two runtimes) is three times the size of the BM25 variant.
    Dense { encoder: Box<Encoder>, index: DenseIndex },
}

impl Index {
    /// The best `depth` corpus positions for each query, best first.
    fn search(&self, queries: &[String], depth: usize) -> Result<Vec<Vec<usize>>> {
        let positions = |found: Vec<(usize, f32)>| found.into_iter().map(|(p, _)| p).collect::<Vec<usize>>();
        match self {
            Index::Bm25(bm25) => Ok(queries.iter().map(|q| positions(bm25.search(q, depth))).collect()),
            Index::Dense { encoder, index } => {
                let vectors = encoder.embed(queries, "queries")?;
                Ok(index.search(&vectors, depth)?.into_iter().map(positions).collect())
            }
        }
    }
}

/// An embedder bundle loaded into its own runtime, driven from synchronous code.
pub(crate) struct Encoder {
    tokio: tokio::runtime::Runtime,
    runtime: Runtime,
    /// `name@version` of the loaded bundle.
    pub(crate) id: String,
    /// `sha256:<hex>` over the bundle's files, for provenance.
    pub(crate) bundle_id: String,
    params: usize,
}

impl Encoder {
    /// Loads the bundle in `dir`, which must be an embedder; `cache_capacity` 0 turns the
    /// result cache off (a corpus is embedded once, so caching it only costs memory).
    pub(crate) fn load(dir: &Path, cache_capacity: u64) -> Result<Encoder> {
        let (encoder, kind) = Encoder::load_any(dir, cache_capacity)?;
        if kind != "embedder" {
            return Err(Error::InvalidArgument(format!(
                "{} is a {kind} bundle: retrieval needs an embedder bundle, or `{BM25}`",
                dir.display()
            )));
        }
        Ok(encoder)
    }

    /// Loads a bundle of any kind, returning its kind.
    pub(crate) fn load_any(dir: &Path, cache_capacity: u64) -> Result<(Encoder, String)> {
        let batch = BatchConfig {
            max_batch_delay: std::time::Duration::ZERO,
            queue_capacity: EMBED_CHUNK,
            // A chunk waits behind nothing else, but a slow machine may take minutes over it.
            request_timeout: std::time::Duration::from_secs(3600),
            ..BatchConfig::default()
        };
        let runtime = Runtime::new(RuntimeConfig { batch, cache_capacity });
        let info = runtime.load(dir)?;
        let tokio = tokio::runtime::Builder::new_current_thread().enable_time().build().map_err(|e| {
            Error::Runtime(tandem_runtime::Error::Internal(format!("cannot start an async runtime: {e}")))
        })?;
        Ok((Encoder { tokio, runtime, id: info.id, bundle_id: info.bundle_id, params: info.params }, info.kind))
    }

    /// Unit-length embeddings of `texts`, in order; long texts are truncated to the model's limit.
    pub(crate) fn embed(&self, texts: &[String], what: &str) -> Result<Vec<Vec<f32>>> {
        self.embed_as(texts, what, true)
    }

    /// Embeddings of `texts`, in order, scaled to unit length only when `normalize`.
    pub(crate) fn embed_as(&self, texts: &[String], what: &str, normalize: bool) -> Result<Vec<Vec<f32>>> {
        let mut vectors = Vec::with_capacity(texts.len());
        let started = Instant::now();
        let mut logged = 0;
        for chunk in texts.chunks(EMBED_CHUNK) {
            let request =
                EmbedRequest { texts: chunk.to_vec(), truncate: true, normalize: Some(normalize), dimensions: None };
            let response = self.tokio.block_on(self.runtime.embed(&self.id, request))?;
            vectors.extend(response.embeddings);
            // Progress of long jobs only: a training step's few texts would flood the log.
            let long = texts.len() > EMBED_CHUNK;
            if long && (vectors.len() - logged >= 10 * EMBED_CHUNK || vectors.len() == texts.len()) {
                logged = vectors.len();
                let per_s = rate(vectors.len(), started.elapsed().as_secs_f64());
                tracing::info!(model = %self.id, what, done = vectors.len(), of = texts.len(), per_s = per_s.round(), "embedding");
            }
        }
        Ok(vectors)
    }

    /// [`Encoder::embed_as`] as one `(texts, dim)` tensor on `device`, for losses that use the vectors.
    pub(crate) fn embed_tensor(
        &self,
        texts: &[String],
        what: &str,
        normalize: bool,
        device: &Device,
    ) -> Result<Tensor> {
        let vectors = self.embed_as(texts, what, normalize)?;
        let dim = vectors.first().map_or(0, Vec::len);
        Ok(Tensor::from_vec(vectors.into_iter().flatten().collect::<Vec<f32>>(), (texts.len(), dim), device)?)
    }
}

/// Loads a second stage: a bundle whose kind the runtime's `rerank` serves, so an embedder scores
/// by the cosine of the query's and each candidate's embedding and a cross-encoder by its logit on
/// each (query, candidate) pair (long pairs truncated, the longer text first), exactly as served.
fn load_reranker(dir: &Path) -> Result<Encoder> {
    // Candidates recur across queries, so the result cache saves re-embedding them.
    let (encoder, kind) = Encoder::load_any(dir, 50_000)?;
    match kind.as_str() {
        "embedder" | "cross_encoder" => Ok(encoder),
        other => Err(Error::InvalidArgument(format!(
            "{} is a {other} bundle: a reranker must be an embedder or a cross_encoder bundle",
            dir.display()
        ))),
    }
}

impl Encoder {
    /// The runtime's `rerank` scores of `docs` for `query`, in document order, whatever the
    /// bundle's reranking kind; texts past the model's limit are truncated.
    pub(crate) fn rerank_scores(&self, query: &str, docs: &[String]) -> Result<Vec<f32>> {
        let request = RerankRequest { query: query.to_string(), documents: docs.to_vec(), top_n: None, truncate: true };
        let response = self.tokio.block_on(self.runtime.rerank(&self.id, request))?;
        let mut scores = vec![f32::NEG_INFINITY; docs.len()];
        for ranked in response.results {
            scores[ranked.index] = ranked.score;
        }
        Ok(scores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::wordnet::WordNet;
    use tandem_runtime::import::{import_sentence_transformers, ImportOptions};
    use tandem_runtime::models::sentence_encoder::Pooling;
    use tandem_runtime::testing_text::{write_tiny_cross_encoder_bundle, write_tiny_sentence_transformers_dir};

    fn fixture() -> Benchmark {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wordnet");
        Benchmark::new(&WordNet::read_dir(&dir).unwrap())
    }

    /// A tiny random embedder bundle under `dir`.
    fn tiny_embedder(dir: &Path) -> PathBuf {
        let hf = dir.join("hf");
        write_tiny_sentence_transformers_dir(&hf, 1, Pooling::Mean, true).unwrap();
        let out = dir.join("bundle");
        import_sentence_transformers(&hf, &out, &ImportOptions { name: "tiny".into(), version: "1".into() }).unwrap();
        out
    }

    fn options(rerank: Option<Rerank>) -> EvalOptions {
        EvalOptions { split: Split::Test, limit_queries: None, corpus_limit: None, rerank }
    }

    fn figures(r: &RetrievalReport) -> [f64; 4] {
        [r.ndcg_at_10, r.recall_at_1, r.recall_at_10, r.mrr_at_10]
    }

    #[test]
    fn bm25_figures_are_those_of_its_rankings() {
        let benchmark = fixture();
        let report = evaluate(&benchmark, &FirstStage::Bm25, &options(None)).unwrap();
        assert_eq!((report.model.as_str(), report.params, report.n, report.n_docs), ("bm25", None, 21, 16));
        // The same rankings scored query by query, outside `evaluate`.
        let bm25 = Bm25::new(benchmark.docs.iter().map(String::as_str), Bm25Params::default());
        let queries = benchmark.queries(Split::Test);
        let rankings: Vec<Vec<usize>> =
            queries.iter().map(|q| bm25.search(&q.text, CUTOFF).into_iter().map(|(d, _)| d).collect()).collect();
        let judgments: Vec<Vec<(usize, u8)>> = queries.iter().map(|q| benchmark.judgments(q.synset)).collect();
        let expect = Metrics::of(rankings.iter().map(Vec::as_slice).zip(judgments.iter().map(Vec::as_slice)));
        assert_eq!(figures(&report), [expect.ndcg_at_10, expect.recall_at_1, expect.recall_at_10, expect.mrr_at_10]);
        // "Canis familiaris" finds the dog's definition ("the genus Canis"), while "trot" shares no
        // token with any definition: the hit rate is strictly between 0 and 1.
        assert!(report.recall_at_10 > 0.0 && report.recall_at_10 < 1.0, "{report:?}");
        // 15 lemmas and 6 examples; the overall mean is their weighted mean.
        let ByKind { lemma, example } = report.by_kind;
        assert_eq!((lemma.n, example.n), (15, 6));
        let weighted = (15.0 * lemma.recall_at_10 + 6.0 * example.recall_at_10) / 21.0;
        assert!((weighted - report.recall_at_10).abs() < 1e-12, "{report:?}");
    }

    #[test]
    fn embedder_first_stage_with_a_limited_corpus_and_a_reranker() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = tiny_embedder(dir.path());
        let benchmark = fixture();
        let dense = FirstStage::Embedder(bundle.clone());
        let limited = EvalOptions { corpus_limit: Some(10), ..options(None) };
        let report = evaluate(&benchmark, &dense, &limited).unwrap();
        assert_eq!((report.model.as_str(), report.n, report.n_docs), ("tiny@1", 21, 10));
        assert!(report.params.is_some_and(|p| p > 0));
        // Ten documents, ten ranks: every own synset is in the top 10, whatever the model.
        assert_eq!(report.recall_at_10, 1.0);
        assert!(report.recall_at_1 <= report.mrr_at_10 && report.mrr_at_10 <= 1.0, "{report:?}");

        // Reordering one candidate changes nothing.
        let one = Rerank { bundle: bundle.clone(), top: 1 };
        let bm25 = evaluate(&benchmark, &FirstStage::Bm25, &options(None)).unwrap();
        let reranked = evaluate(&benchmark, &FirstStage::Bm25, &options(Some(one))).unwrap();
        assert_eq!(figures(&reranked), figures(&bm25));
        assert_eq!((reranked.reranker.as_deref(), reranked.rerank_top), (Some("tiny@1"), Some(1)));
        // Reranking the dense top 10 by the same model's cosine (through `rerank` instead of
        // `embed` and the exact search) keeps every ranking.
        let alone = evaluate(&benchmark, &dense, &options(None)).unwrap();
        let same = Rerank { bundle, top: 10 };
        let reranked = evaluate(&benchmark, &dense, &options(Some(same))).unwrap();
        assert_eq!(figures(&reranked), figures(&alone));
    }

    #[test]
    fn a_cross_encoder_reranks_the_first_stage() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = write_tiny_cross_encoder_bundle(dir.path(), "pairs", "1").unwrap();
        let benchmark = fixture();
        let bm25 = evaluate(&benchmark, &FirstStage::Bm25, &options(None)).unwrap();
        let one = Rerank { bundle: bundle.clone(), top: 1 };
        let reranked = evaluate(&benchmark, &FirstStage::Bm25, &options(Some(one))).unwrap();
        assert_eq!(figures(&reranked), figures(&bm25), "reordering one candidate changes nothing");
        assert_eq!((reranked.reranker.as_deref(), reranked.rerank_top), (Some("pairs@1"), Some(1)));
        // Reordering the top 10 changes the order within it, never what it holds.
        let ten = Rerank { bundle: bundle.clone(), top: 10 };
        let reranked = evaluate(&benchmark, &FirstStage::Bm25, &options(Some(ten))).unwrap();
        assert_eq!(reranked.recall_at_10, bm25.recall_at_10);
        assert_ne!(figures(&reranked), figures(&bm25), "the random head reorders: {reranked:?}");
        // A cross-encoder is no first stage.
        let err = evaluate(&benchmark, &FirstStage::Embedder(bundle), &options(None)).unwrap_err();
        assert!(err.to_string().contains("is a cross_encoder bundle: retrieval needs an embedder bundle"), "{err}");
    }

    #[test]
    fn bundles_of_other_kinds_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let classifier = tandem_runtime::testing::write_tiny_classifier_bundle(dir.path(), "cnn", "1").unwrap();
        let benchmark = fixture();
        let err = evaluate(&benchmark, &FirstStage::Embedder(classifier.clone()), &options(None)).unwrap_err();
        assert!(err.to_string().contains("is a classifier bundle: retrieval needs an embedder bundle"), "{err}");
        let rerank = Rerank { bundle: classifier, top: 5 };
        let err = evaluate(&benchmark, &FirstStage::Bm25, &options(Some(rerank))).unwrap_err();
        assert!(err.to_string().contains("a reranker must be an embedder or a cross_encoder bundle"), "{err}");
        let none = EvalOptions { limit_queries: Some(0), ..options(None) };
        let err = evaluate(&benchmark, &FirstStage::Bm25, &none).unwrap_err();
        assert!(err.to_string().contains("no queries"), "{err}");
        assert_eq!(FirstStage::from_model_arg(Path::new("bm25")), FirstStage::Bm25);
        assert_eq!(FirstStage::from_model_arg(Path::new("./bm25")), FirstStage::Embedder("./bm25".into()));
    }
}
