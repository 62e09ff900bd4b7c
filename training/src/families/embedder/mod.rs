//! The text embedder family: a bi-encoder fine-tuned on the WordNet retrieval benchmark's
//! training pairs with in-batch negatives (the multiple-negatives ranking loss of
//! sentence-transformers: each query's own gloss against every other gloss of the batch, cosine
//! similarities times a scale, cross-entropy), exported as an `embedder` bundle.
//!
//! The encoder is [`TrainableBert`], started from an embedder bundle (all-MiniLM-L6-v2 as
//! `tandem import hf` writes it, or a smaller student); its exported weights keep the tensor names,
//! so the runtime serves them on its fast inference path. Validation and the test are the
//! benchmark's own evaluation of the bundle, exactly as `tandem eval --task retrieval` runs it:
//! validation writes the current weights as a bundle beside the run (`<out>.val-bundle`).
//!
//! A batch never holds two pairs of one synset, whose glosses would count as each other's
//! negatives. With mining on, the model mines hard negatives for every pair at the start of each
//! epoch ([`retrieval::mine_hard_negatives`], on its current weights through the serving path),
//! and a batch's mined glosses join its positives as columns of the score matrix.

mod config;
pub mod distill;
mod encoder;
pub mod student;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use candle_core::Tensor;
use candle_nn::VarMap;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use tandem_runtime::bundle::{Bundle, Manifest, Provenance};

use crate::data::wordnet::WordNet;
use crate::data::Split;
use crate::losses::{correct, cross_entropy};
use crate::optim::AdamW;
use crate::report::{EpochRecord, TrainSummary};
use crate::retrieval::{self, Benchmark, TrainingPair};
use crate::trainer::{self, Export, Family, Plan, StepOutput, TestReport, Validation};
use crate::{Error, Result};
use encoder::{evaluate, TrainingEncoder};

pub use config::{EmbedderConfig, WordNetSource};

/// Fine-tunes an embedder: checkpoints every epoch, exports the bundle and measures it.
pub fn train(cfg: &EmbedderConfig) -> Result<TrainSummary> {
    cfg.validate()?;
    trainer::run(EmbedderRun::new(cfg)?, &cfg.loop_settings())
}

/// One run of the family.
pub struct EmbedderRun<'a> {
    cfg: &'a EmbedderConfig,
    init_id: String,
    encoder: TrainingEncoder,
    benchmark: Benchmark,
    pairs: Vec<TrainingPair>,
    /// Per pair, the hard negatives mined at the start of the current epoch (empty without mining).
    negatives: Vec<Vec<usize>>,
}

impl<'a> EmbedderRun<'a> {
    /// Loads WordNet, the starting bundle and its tokenizer, and the training pairs.
    pub fn new(cfg: &'a EmbedderConfig) -> Result<EmbedderRun<'a>> {
        let init = Bundle::load(&cfg.init)?;
        let encoder = TrainingEncoder::from_bundle(&init, "--init", cfg.max_seq_length)?;
        let benchmark = load_benchmark(&cfg.wordnet)?;
        let mut pairs = benchmark.training_pairs();
        if let Some(n) = cfg.max_pairs {
            // A seeded sample, so that a limited run still covers the whole vocabulary.
            pairs.shuffle(&mut StdRng::seed_from_u64(cfg.seed ^ 0x5eed));
            pairs.truncate(n);
        }
        if pairs.is_empty() {
            return Err(Error::InvalidArgument("the benchmark has no training pairs".into()));
        }
        Ok(EmbedderRun { cfg, init_id: init.id, encoder, benchmark, pairs, negatives: Vec::new() })
    }

    /// The bundle of the current weights.
    fn manifest(&self, metrics: BTreeMap<String, f64>) -> Manifest {
        let provenance = Provenance {
            dataset: "wordnet".into(),
            dataset_sha256: String::new(),
            recipe: "finetune-in-batch-negatives".into(),
            hyperparameters: self.cfg.hyperparameters(),
            teacher: Some(self.init_id.clone()),
        };
        self.encoder.manifest(&self.cfg.name, &self.cfg.version, provenance, metrics)
    }

    /// The mined negatives of a batch's pairs, each once, without any document that is a batch
    /// pair's own synset or has its text (it would be another query's positive).
    fn batch_negatives(&self, batch: &[usize]) -> Vec<usize> {
        if self.negatives.is_empty() {
            return Vec::new();
        }
        let synsets: HashSet<usize> = batch.iter().map(|&i| self.pairs[i].synset).collect();
        let texts: HashSet<&str> = batch.iter().map(|&i| self.pairs[i].positive.as_str()).collect();
        let mut seen = HashSet::new();
        batch
            .iter()
            .flat_map(|&i| self.negatives[i].iter().copied())
            .filter(|d| !synsets.contains(d) && !texts.contains(self.benchmark.docs[*d].as_str()) && seen.insert(*d))
            .collect()
    }
}

/// The benchmark over the configured copy of WordNet.
pub(crate) fn load_benchmark(source: &WordNetSource) -> Result<Benchmark> {
    let wordnet = match source {
        WordNetSource::Fetched(data_dir) => WordNet::load(data_dir)?,
        WordNetSource::Dir(dir) => WordNet::read_dir(dir)?,
    };
    Ok(Benchmark::new(&wordnet))
}

impl Family for EmbedderRun<'_> {
    type Batch = Vec<usize>;

    const ITEM: &'static str = "pair";

    fn trainable(&self) -> Vec<(String, VarMap)> {
        vec![(String::new(), self.encoder.vars.clone())]
    }

    fn plan(&self) -> Plan {
        let steps_per_epoch = self.batches(0).len();
        Plan { epochs: self.cfg.epochs, steps_per_epoch, cosine_epochs: self.cfg.epochs, cosine_from: 0 }
    }

    fn batches(&self, epoch: usize) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..self.pairs.len()).collect();
        order.shuffle(&mut StdRng::seed_from_u64(self.cfg.seed.wrapping_mul(0x9e37_79b9).wrapping_add(epoch as u64)));
        let mut batches = Vec::new();
        let (mut batch, mut synsets) = (Vec::new(), HashSet::new());
        let mut deferred = Vec::new();
        for i in order.into_iter().chain(std::iter::once(usize::MAX)) {
            if i != usize::MAX && !synsets.insert(self.pairs[i].synset) {
                deferred.push(i);
                continue;
            }
            if i != usize::MAX {
                batch.push(i);
            }
            if batch.len() == self.cfg.batch_size || (i == usize::MAX && !batch.is_empty()) {
                batches.push(std::mem::take(&mut batch));
                synsets.clear();
            }
        }
        // Pairs that met their synset in a batch train in batches of their own at the end.
        for chunk in deferred.chunks(self.cfg.batch_size) {
            let mut seen = HashSet::new();
            let unique: Vec<usize> = chunk.iter().copied().filter(|&i| seen.insert(self.pairs[i].synset)).collect();
            if unique.len() > 1 {
                batches.push(unique);
            }
        }
        batches
    }

    fn begin_epoch(&mut self, epoch: usize, _optimizer: &mut AdamW) -> Result<BTreeMap<String, f64>> {
        if self.cfg.mining.per_query == 0 {
            return Ok(BTreeMap::new());
        }
        // The model mines with its weights as they are now, through the serving path.
        let dir = trainer::sibling(&self.cfg.out, "miner-bundle");
        self.encoder.write_bundle(&dir, &self.manifest(BTreeMap::new()))?;
        let started = std::time::Instant::now();
        self.negatives = retrieval::mine_hard_negatives(&self.benchmark, &dir, &self.pairs, &self.cfg.mining)?;
        let mined = self.negatives.iter().map(Vec::len).sum::<usize>();
        tracing::info!(epoch, mined, seconds = started.elapsed().as_secs_f64(), "hard negatives mined");
        Ok(BTreeMap::from([
            ("hard_negatives_per_pair".into(), mined as f64 / self.pairs.len() as f64),
            ("mining_s".into(), started.elapsed().as_secs_f64()),
        ]))
    }

    fn step(&mut self, _epoch: usize, batch: &Vec<usize>, _rng: &mut StdRng) -> Result<StepOutput> {
        let queries: Vec<&str> = batch.iter().map(|&i| self.pairs[i].query.as_str()).collect();
        let mut glosses: Vec<&str> = batch.iter().map(|&i| self.pairs[i].positive.as_str()).collect();
        glosses.extend(self.batch_negatives(batch).into_iter().map(|d| self.benchmark.docs[d].as_str()));
        let (q, d) = (self.encoder.embed(&queries)?, self.encoder.embed(&glosses)?);
        let scores = (q.matmul(&d.t()?.contiguous()?)? * self.cfg.scale)?;
        let n = batch.len();
        let own = Tensor::arange(0u32, n as u32, &self.encoder.device)?;
        let items = n + glosses.len();
        Ok(StepOutput { loss: cross_entropy(&scores, &own)?, hits: correct(&scores, &own)?, n, items })
    }

    fn validate(&mut self, _epoch: usize) -> Result<Validation> {
        let dir = trainer::sibling(&self.cfg.out, "val-bundle");
        self.encoder.write_bundle(&dir, &self.manifest(BTreeMap::new()))?;
        let (queries, corpus) = (Some(self.cfg.val_queries), Some(self.cfg.val_corpus));
        let report = evaluate(&self.benchmark, &dir, Split::Val, queries, corpus)?;
        Ok(Validation { loss: 1.0 - report.ndcg_at_10, accuracy: report.ndcg_at_10, extra: report.figures() })
    }

    fn export(&self, history: &[EpochRecord]) -> Result<Export> {
        let params = self.encoder.spec.architecture.num_params();
        let mut metrics = BTreeMap::from([("params".into(), params as f64)]);
        if let Some(last) = history.last() {
            metrics.insert("val_ndcg_at_10".into(), last.val_accuracy);
        }
        Ok(Export {
            manifest: self.manifest(metrics),
            vars: self.encoder.vars.clone(),
            params,
            val_accuracy: history.last().map_or(0.0, |r| r.val_accuracy),
            head_mixture: None,
            dual_io: None,
            files: self.encoder.tokenizer_files(),
        })
    }

    fn test(&self, dir: &Path) -> Result<TestReport> {
        let report = evaluate(&self.benchmark, dir, Split::Test, self.cfg.test_queries, self.cfg.test_corpus)?;
        Ok(TestReport { accuracy: report.ndcg_at_10, n: report.n, extra: report.figures() })
    }
}
