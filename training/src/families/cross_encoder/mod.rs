//! The cross-encoder family: BERT reading a (query, document) pair jointly, trained on the WordNet
//! retrieval benchmark's training pairs against hard negatives, exported as a `cross_encoder`
//! bundle that reranks a bi-encoder's candidates.
//!
//! No cross-encoder ships for this benchmark, so one is made here: the BERT of an embedder bundle
//! (`--init`, all-MiniLM-L6-v2 as `tandem import hf` writes it) starts the model and the head
//! (`Linear(hidden, 1)`) starts at zero, so every pair first scores alike and the first steps
//! shape the head before BERT moves. A bi-encoder (`--miner`) mines each pair's hard negatives
//! once, before training ([`retrieval::mine_hard_negatives`]: never an answer to the query, never
//! the positive's text, never held-out text), because the documents a cross-encoder must learn
//! to push down are the ones the first stage confuses with the answer.
//!
//! `--random-negatives` adds glosses drawn at random after the hard ones: with hard negatives
//! alone, each list holds the positive and glosses the miner finds closer to the query than most,
//! often closer than the positive, and a model can fit that by preferring the least similar gloss,
//! which reranks the miner's candidates worse than chance.
//!
//! The loss is listwise, per query: softmax cross-entropy over the logits of its positive and its
//! negatives, the positive as the target (a pair whose miner found fewer negatives has fewer
//! columns, the rest masked out). Validation and the test are the benchmark's own evaluation with
//! the miner as the first stage and the current weights, written as a bundle beside the run
//! (`<out>.val-bundle`), reranking its best candidates, exactly as `tandem eval --task retrieval
//! --reranker` runs it.

mod config;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::SeedableRng;
use tandem_runtime::bundle::{now_rfc3339, Bundle, CrossEncoderSpec, FamilySpec, Manifest, Provenance};
use tandem_runtime::models::cross_encoder::{TrainableCrossEncoder, SCORE_PREFIX};
use tandem_runtime::models::sentence_encoder::{bert_root, SegmentedIds};
use tandem_runtime::models::trainable_bert::padded_pair_batch;
use tandem_runtime::text::{EncodedPair, TextTokenizer};

use crate::data::Split;
use crate::families::embedder::load_benchmark;
use crate::losses::cross_entropy;
use crate::optim::AdamW;
use crate::report::{EpochRecord, TrainSummary};
use crate::retrieval::mining::Answers;
use crate::retrieval::{self, Benchmark, EvalOptions, FirstStage, Rerank, RetrievalReport, TrainingPair};
use crate::trainer::{self, Export, Family, Plan, StepOutput, TestReport, Validation};
use crate::{Error, Result};

pub use config::CrossEncoderConfig;

/// Trains a cross-encoder: mines the hard negatives, checkpoints every epoch, exports the bundle
/// and measures it as the miner's reranker.
pub fn train(cfg: &CrossEncoderConfig) -> Result<TrainSummary> {
    cfg.validate()?;
    trainer::run(CrossEncoderRun::new(cfg)?, &cfg.loop_settings())
}

/// One run of the family.
pub struct CrossEncoderRun<'a> {
    cfg: &'a CrossEncoderConfig,
    /// The embedder the model started from: its manifest is the base of the exported one.
    init: Bundle,
    miner_id: String,
    spec: CrossEncoderSpec,
    tokenizer: TextTokenizer,
    tokenizer_bytes: Vec<u8>,
    benchmark: Benchmark,
    /// The training pairs that have at least one hard negative.
    pairs: Vec<TrainingPair>,
    /// Per pair, its hard negatives as indices into `benchmark.docs`, best first, then its random
    /// ones.
    negatives: Vec<Vec<usize>>,
    vars: VarMap,
    model: TrainableCrossEncoder,
    device: Device,
}

impl<'a> CrossEncoderRun<'a> {
    /// Loads WordNet, the starting embedder and its tokenizer, the training pairs, and mines their
    /// hard negatives with the miner.
    pub fn new(cfg: &'a CrossEncoderConfig) -> Result<CrossEncoderRun<'a>> {
        let init = Bundle::load(&cfg.init)?;
        // An embedder starts the BERT with a zero head; a cross-encoder continues, head and all
        // (each round of an AR2 loop continues the last round's ranker).
        let mut spec = match &init.manifest.family {
            FamilySpec::Embedder(embedder) => CrossEncoderSpec {
                architecture: embedder.architecture.clone(),
                tokenizer: embedder.tokenizer.clone(),
                pooling: embedder.pooling,
                max_seq_length: embedder.max_seq_length,
            },
            FamilySpec::CrossEncoder(spec) => spec.clone(),
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "--init {} is a {} bundle, not an embedder or a cross_encoder",
                    cfg.init.display(),
                    init.manifest.kind()
                )))
            }
        };
        if let Some(limit) = cfg.run.max_seq_length {
            spec.max_seq_length = spec.max_seq_length.min(limit);
        }
        let continues = matches!(init.manifest.family, FamilySpec::CrossEncoder(_));
        if spec.architecture.type_vocab_size < 2 {
            return Err(Error::InvalidArgument(format!(
                "--init {}: its BERT has {} token type, a cross-encoder needs 2 (one per text)",
                cfg.init.display(),
                spec.architecture.type_vocab_size
            )));
        }
        let miner = Bundle::load(&cfg.miner)?;
        if miner.manifest.kind() != "embedder" {
            return Err(Error::InvalidArgument(format!(
                "--miner {} is a {} bundle, not an embedder",
                cfg.miner.display(),
                miner.manifest.kind()
            )));
        }
        let tokenizer_bytes = init.file(&spec.tokenizer)?.to_vec();
        let tokenizer = TextTokenizer::from_bytes(&tokenizer_bytes, spec.max_seq_length)?;

        let benchmark = load_benchmark(&cfg.run.wordnet)?;
        let mut pairs = benchmark.training_pairs();
        if let Some(n) = cfg.max_pairs {
            // A seeded sample, so that a limited run still covers the whole vocabulary.
            pairs.shuffle(&mut StdRng::seed_from_u64(cfg.run.common.seed ^ 0x5eed));
            pairs.truncate(n);
        }
        let started = std::time::Instant::now();
        let mined = retrieval::mine_hard_negatives(&benchmark, &cfg.miner, &pairs, &cfg.mining)?;
        tracing::info!(pairs = pairs.len(), seconds = started.elapsed().as_secs_f64(), "hard negatives mined");
        // A pair without a negative has nothing to be ranked against.
        let (pairs, mut negatives): (Vec<TrainingPair>, Vec<Vec<usize>>) =
            pairs.into_iter().zip(mined).filter(|(_, negatives)| !negatives.is_empty()).unzip();
        add_random_negatives(&benchmark, &pairs, &mut negatives, cfg.random_negatives, cfg.run.common.seed);
        if pairs.is_empty() {
            return Err(Error::InvalidArgument("no training pair has a hard negative to be ranked against".into()));
        }

        let device = tandem_runtime::device::default_device();
        let vars = VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DType::F32, &device);
        let model = TrainableCrossEncoder::new(&spec.architecture, spec.pooling, vb)?;
        let source = bert_root(init.var_builder(&device));
        for (name, var) in vars.data().lock().expect("varmap lock poisoned. This is a bug.").iter() {
            let value = if name.starts_with(&format!("{SCORE_PREFIX}.")) && !continues {
                Tensor::zeros(var.dims(), DType::F32, &device)?
            } else {
                source.get(var.dims(), name)?
            };
            var.set(&value)?;
        }
        Ok(CrossEncoderRun {
            cfg,
            init,
            miner_id: miner.id,
            spec,
            tokenizer,
            tokenizer_bytes,
            benchmark,
            pairs,
            negatives,
            vars,
            model,
            device,
        })
    }

    /// The bundle of the current weights.
    fn manifest(&self, metrics: BTreeMap<String, f64>) -> Manifest {
        let mut hyperparameters = self.cfg.hyperparameters();
        hyperparameters.insert("miner".into(), self.miner_id.clone().into());
        let mut manifest = self.init.manifest.clone();
        manifest.family = FamilySpec::CrossEncoder(self.spec.clone());
        manifest.name = self.cfg.run.common.name.clone();
        manifest.version = self.cfg.run.common.version.clone();
        manifest.provenance = Provenance {
            dataset: "wordnet".into(),
            dataset_sha256: String::new(),
            recipe: "cross-encoder-listwise-hard-negatives".into(),
            hyperparameters,
            teacher: Some(self.init.id.clone()),
        };
        manifest.metrics = metrics;
        manifest.created_at = now_rfc3339();
        manifest
    }

    fn tokenizer_files(&self) -> Vec<(String, Vec<u8>)> {
        vec![(self.spec.tokenizer.clone(), self.tokenizer_bytes.clone())]
    }

    /// Measures the cross-encoder bundle in `dir` reranking the miner's candidates.
    fn evaluate(
        &self,
        dir: &Path,
        split: Split,
        queries: Option<usize>,
        corpus: Option<usize>,
    ) -> Result<RetrievalReport> {
        let rerank = Some(Rerank { bundle: dir.to_path_buf(), top: self.cfg.rerank_top });
        let options = EvalOptions { split, limit_queries: queries, corpus_limit: corpus, rerank };
        retrieval::evaluate(&self.benchmark, &FirstStage::Embedder(self.cfg.miner.clone()), &options)
    }

    /// Tokenizes each query of `batch` with its positive and then its negatives; returns the
    /// pairs and, per query, the range of its pairs.
    fn encode(&self, batch: &[usize]) -> Result<(Vec<EncodedPair>, Vec<Range<usize>>)> {
        let mut encoded = Vec::new();
        let mut groups = Vec::with_capacity(batch.len());
        for &i in batch {
            let pair = &self.pairs[i];
            let negatives = self.negatives[i].iter().map(|&d| self.benchmark.docs[d].as_str());
            let start = encoded.len();
            for document in std::iter::once(pair.positive.as_str()).chain(negatives) {
                encoded.push(self.tokenizer.encode_pair(&pair.query, document, true)?);
            }
            groups.push(start..encoded.len());
        }
        Ok((encoded, groups))
    }
}

/// Appends `count` seeded random training glosses to each pair's negatives: never an answer to
/// the query (judged relevant, or the positive's text), never held-out text, never a negative
/// the pair already has.
fn add_random_negatives(
    benchmark: &Benchmark,
    pairs: &[TrainingPair],
    negatives: &mut [Vec<usize>],
    count: usize,
    seed: u64,
) {
    if count == 0 {
        return;
    }
    let pool = benchmark.training_docs(&[], None);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x7a4d_0b5e);
    for (pair, negatives) in pairs.iter().zip(negatives.iter_mut()) {
        let answers = Answers::of(benchmark, pair);
        let mut added = 0;
        // A bounded number of draws: the pool is about 110,000 glosses and a query's answers a few.
        for _ in 0..count * 20 {
            if added == count {
                break;
            }
            let Some(&doc) = pool.choose(&mut rng) else { return };
            if !answers.contains(benchmark, doc) && !negatives.contains(&doc) {
                negatives.push(doc);
                added += 1;
            }
        }
    }
}

/// The flat logits of every query's pairs as a `[queries, width]` matrix, the positive first and
/// the columns a query lacks at a large negative value, so that its softmax gives them no weight
/// and no gradient.
fn listwise(logits: &Tensor, groups: &[Range<usize>], width: usize) -> Result<Tensor> {
    let n = groups.len();
    let mut index = Vec::with_capacity(n * width);
    let mut penalty = Vec::with_capacity(n * width);
    for group in groups {
        for column in 0..width {
            let present = column < group.len();
            index.push(if present { (group.start + column) as u32 } else { group.start as u32 });
            penalty.push(if present { 0f32 } else { -1e9 });
        }
    }
    let device = logits.device();
    let index = Tensor::from_vec(index, n * width, device)?;
    let penalty = Tensor::from_vec(penalty, (n, width), device)?;
    Ok((logits.index_select(&index, 0)?.reshape((n, width))? + penalty)?)
}

/// Queries whose positive scores strictly above every negative (a tie is not a hit: at the
/// start, with the head at zero, everything ties).
fn strictly_first(scores: &Tensor) -> Result<usize> {
    let width = scores.dim(1)?;
    let positive = scores.narrow(1, 0, 1)?.squeeze(1)?;
    let best_negative = scores.narrow(1, 1, width - 1)?.max(1)?;
    Ok(positive.gt(&best_negative)?.to_dtype(DType::U32)?.sum_all()?.to_scalar::<u32>()? as usize)
}

impl Family for CrossEncoderRun<'_> {
    type Batch = Vec<usize>;

    const ITEM: &'static str = "query";

    fn trainable(&self) -> Vec<(String, VarMap)> {
        vec![(String::new(), self.vars.clone())]
    }

    fn begin_epoch(&mut self, _epoch: usize, optimizer: &mut AdamW) -> Result<BTreeMap<String, f64>> {
        let (head, scale) = (format!("{SCORE_PREFIX}."), self.cfg.head_lr_scale);
        optimizer.set_lr_scale(|name| if name.starts_with(&head) { scale } else { 1.0 });
        Ok(BTreeMap::new())
    }

    fn plan(&self) -> Plan {
        let steps_per_epoch = self.pairs.len().div_ceil(self.cfg.run.common.batch_size);
        Plan {
            epochs: self.cfg.run.common.epochs,
            steps_per_epoch,
            cosine_epochs: self.cfg.run.common.epochs,
            cosine_from: 0,
        }
    }

    fn batches(&self, epoch: usize) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..self.pairs.len()).collect();
        order.shuffle(&mut StdRng::seed_from_u64(
            self.cfg.run.common.seed.wrapping_mul(0x9e37_79b9).wrapping_add(epoch as u64),
        ));
        order.chunks(self.cfg.run.common.batch_size).map(<[usize]>::to_vec).collect()
    }

    fn step(&mut self, _epoch: usize, batch: &Vec<usize>, _rng: &mut StdRng) -> Result<StepOutput> {
        let (encoded, groups) = self.encode(batch)?;
        let segmented: Vec<SegmentedIds> =
            encoded.iter().map(|pair| SegmentedIds { ids: &pair.ids, second: pair.second }).collect();
        let pad = u32::try_from(self.spec.architecture.pad_token_id).unwrap_or(0);
        let (ids, types, mask) = padded_pair_batch(&segmented, pad, &self.device)?;
        let logits = self.model.forward(&ids, &types, &mask)?;
        let width = groups.iter().map(Range::len).max().unwrap_or(1);
        let scores = listwise(&logits, &groups, width)?;
        let n = batch.len();
        let positives = Tensor::zeros(n, DType::U32, &self.device)?;
        let loss = cross_entropy(&scores, &positives)?;
        Ok(StepOutput { loss, hits: strictly_first(&scores)?, n, items: encoded.len() })
    }

    fn validate(&mut self, _epoch: usize) -> Result<Validation> {
        let dir = trainer::sibling(&self.cfg.run.common.out, "val-bundle");
        let weights = tandem_runtime::bundle::serialize_varmap(&self.vars)?;
        let mut files: Vec<(&str, &[u8])> = vec![(tandem_runtime::bundle::WEIGHTS_FILE, &weights)];
        let tokenizer = self.tokenizer_files();
        files.extend(tokenizer.iter().map(|(p, b)| (p.as_str(), b.as_slice())));
        tandem_runtime::bundle::write_bundle_files(&dir, &self.manifest(BTreeMap::new()), &files)?;
        let report = self.evaluate(&dir, Split::Val, Some(self.cfg.run.val_queries), Some(self.cfg.run.val_corpus))?;
        Ok(Validation { loss: 1.0 - report.ndcg_at_10, accuracy: report.ndcg_at_10, extra: report.figures() })
    }

    fn export(&self, history: &[EpochRecord]) -> Result<Export> {
        // BERT and the head's weight and bias.
        let params = self.spec.architecture.num_params() + self.spec.architecture.hidden_size + 1;
        let mut metrics = BTreeMap::from([("params".into(), params as f64)]);
        if let Some(last) = history.last() {
            metrics.insert("val_ndcg_at_10".into(), last.val_accuracy);
        }
        Ok(Export {
            manifest: self.manifest(metrics),
            vars: self.vars.clone(),
            params,
            val_accuracy: history.last().map_or(0.0, |r| r.val_accuracy),
            head_mixture: None,
            dual_io: None,
            files: self.tokenizer_files(),
        })
    }

    fn test(&self, dir: &Path) -> Result<TestReport> {
        let report = self.evaluate(dir, Split::Test, self.cfg.run.test_queries, self.cfg.run.test_corpus)?;
        Ok(TestReport { accuracy: report.ndcg_at_10, n: report.n, extra: report.figures() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(logits: &[f32], groups: &[Range<usize>], expect_hits: usize) {
        let logits = Tensor::new(logits, &Device::Cpu).unwrap();
        let width = groups.iter().map(Range::len).max().unwrap();
        let scores = listwise(&logits, groups, width).unwrap();
        assert_eq!(strictly_first(&scores).unwrap(), expect_hits);
        // Each query's loss is its own softmax over its own columns: a missing column weighs nothing.
        let loss = cross_entropy(&scores, &Tensor::zeros(groups.len(), DType::U32, &Device::Cpu).unwrap()).unwrap();
        let values = logits.to_vec1::<f32>().unwrap();
        let expected: f32 = groups
            .iter()
            .map(|g| {
                let row = &values[g.clone()];
                row.iter().map(|v| v.exp()).sum::<f32>().ln() - row[0]
            })
            .sum::<f32>()
            / groups.len() as f32;
        assert!((loss.to_scalar::<f32>().unwrap() - expected).abs() < 1e-5);
    }

    #[test]
    fn random_negatives_follow_the_hard_ones_and_are_never_answers_nor_held_out() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wordnet");
        let benchmark = Benchmark::new(&crate::data::wordnet::WordNet::read_dir(&dir).unwrap());
        let pairs = benchmark.training_pairs();
        let hard: Vec<Vec<usize>> = pairs.iter().map(|p| vec![(p.synset + 1) % benchmark.len()]).collect();
        let with = |count, seed| {
            let mut negatives = hard.clone();
            add_random_negatives(&benchmark, &pairs, &mut negatives, count, seed);
            negatives
        };
        assert_eq!(with(0, 0), hard);
        let drawn = with(2, 0);
        assert_eq!(drawn, with(2, 0), "seeded");
        assert_ne!(drawn, with(2, 1), "another seed draws other glosses");
        let mut added = 0;
        for ((pair, hard), negatives) in pairs.iter().zip(&hard).zip(&drawn) {
            assert_eq!(&negatives[..1], hard.as_slice(), "the hard negatives come first");
            assert!(negatives.len() <= 3);
            added += negatives.len() - 1;
            for &d in &negatives[1..] {
                assert!(benchmark.judgments(pair.synset).iter().all(|&(j, _)| j != d), "{pair:?} got an answer {d}");
                assert_eq!(benchmark.split_of(d), Split::Train);
                assert_ne!(benchmark.docs[d], pair.positive);
                assert_eq!(negatives.iter().filter(|&&n| n == d).count(), 1, "{d} twice");
            }
        }
        assert!(added > pairs.len(), "most pairs get both: {added} for {} pairs", pairs.len());
    }

    #[test]
    fn the_listwise_loss_ranks_each_positive_against_its_own_negatives() {
        check(&[2.0, 1.0, 0.5, 0.0, 3.0, -1.0], &[0..3, 3..6], 1);
        // The second query has one negative only; the first ties, which is no hit.
        check(&[1.0, 1.0, 1.0, 5.0, 4.0], &[0..3, 3..5], 1);
    }
}
