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
//!
//! With a [`ScoreTeacher`], a bi-encoder's cosines over the same score matrix are distilled
//! next to the labels (in-batch score distillation).

pub mod ar2;
mod config;
pub mod distill;
mod encoder;
mod pairs;
pub mod rank_distill;
pub mod student;

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Tensor;
use candle_nn::VarMap;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use tandem_runtime::bundle::{Bundle, Manifest, Provenance};

use crate::data::wordnet::WordNet;
use crate::losses::{correct, cross_entropy, kd_kl};
use crate::optim::AdamW;
use crate::report::{EpochRecord, TrainSummary};
use crate::retrieval::{Benchmark, Encoder, TrainingPair};
use crate::trainer::{self, Export, Family, Plan, StepOutput, TestReport, Validation};
use crate::{Error, Result};
use encoder::TrainingEncoder;

pub use crate::families::text_run::WordNetSource;
pub use config::{EmbedderConfig, ScoreTeacher};

/// Fine-tunes an embedder: checkpoints every epoch, exports the bundle and measures it.
pub fn train(cfg: &EmbedderConfig) -> Result<TrainSummary> {
    cfg.validate()?;
    trainer::run(EmbedderRun::new(cfg)?, &cfg.loop_settings())
}

/// One run of the family.
pub struct EmbedderRun<'a> {
    cfg: &'a EmbedderConfig,
    /// The bundle id the provenance names as the teacher: the score teacher's, or the start's.
    teacher_id: String,
    encoder: TrainingEncoder,
    benchmark: Benchmark,
    pairs: Vec<TrainingPair>,
    /// Per pair, the hard negatives mined at the start of the current epoch (empty without mining).
    negatives: Vec<Vec<usize>>,
    /// The score teacher, loaded for serving.
    teacher: Option<Encoder>,
}

impl<'a> EmbedderRun<'a> {
    /// Loads WordNet, the starting bundle and its tokenizer, and the training pairs.
    pub fn new(cfg: &'a EmbedderConfig) -> Result<EmbedderRun<'a>> {
        let init = Bundle::load(&cfg.init)?;
        let encoder = TrainingEncoder::from_bundle(&init, "--init", cfg.run.max_seq_length)?;
        let benchmark = load_benchmark(&cfg.run.wordnet)?;
        let mut pairs = benchmark.training_pairs();
        if let Some(n) = cfg.max_pairs {
            // A seeded sample, so that a limited run still covers the whole vocabulary.
            pairs.shuffle(&mut StdRng::seed_from_u64(cfg.run.common.seed ^ 0x5eed));
            pairs.truncate(n);
        }
        if pairs.is_empty() {
            return Err(Error::InvalidArgument("the benchmark has no training pairs".into()));
        }
        // Glosses recur across batches and epochs, so the teacher's cache saves re-embedding them.
        let teacher = cfg.teacher.as_ref().map(|t| Encoder::load(&t.bundle, 100_000)).transpose()?;
        let teacher_id = teacher.as_ref().map_or_else(|| init.id.clone(), |t| t.bundle_id.clone());
        Ok(EmbedderRun { cfg, teacher_id, encoder, benchmark, pairs, negatives: Vec::new(), teacher })
    }

    /// The bundle of the current weights.
    fn manifest(&self, metrics: BTreeMap<String, f64>) -> Manifest {
        let provenance = Provenance {
            dataset: "wordnet".into(),
            dataset_sha256: String::new(),
            recipe: match self.teacher {
                Some(_) => "finetune-in-batch-negatives-score-distill".into(),
                None => "finetune-in-batch-negatives".into(),
            },
            hyperparameters: self.cfg.hyperparameters(),
            teacher: Some(self.teacher_id.clone()),
        };
        self.encoder.manifest(&self.cfg.run.common.name, &self.cfg.run.common.version, provenance, metrics)
    }

    /// The teacher's scaled cosines of every (query, gloss) of a batch, the student's score matrix.
    fn teacher_scores(&self, teacher: &Encoder, queries: &[&str], glosses: &[&str]) -> Result<Tensor> {
        let embed = |texts: &[&str], what: &str| -> Result<Tensor> {
            let owned: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
            teacher.embed_tensor(&owned, what, true, &self.encoder.device)
        };
        let (q, d) = (embed(queries, "teacher queries")?, embed(glosses, "teacher glosses")?);
        Ok((q.matmul(&d.t()?.contiguous()?)? * self.cfg.scale)?)
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
        Plan {
            epochs: self.cfg.run.common.epochs,
            steps_per_epoch,
            cosine_epochs: self.cfg.run.common.epochs,
            cosine_from: 0,
        }
    }

    fn batches(&self, epoch: usize) -> Vec<Vec<usize>> {
        pairs::batches(&self.pairs, self.cfg.run.common.batch_size, self.cfg.run.common.seed, epoch)
    }

    fn begin_epoch(&mut self, epoch: usize, _optimizer: &mut AdamW) -> Result<BTreeMap<String, f64>> {
        if self.cfg.mining.per_query == 0 {
            return Ok(BTreeMap::new());
        }
        let manifest = self.manifest(BTreeMap::new());
        let (negatives, measured) = pairs::mine_own(
            &self.encoder,
            &manifest,
            &self.cfg.run.common.out,
            &self.benchmark,
            &self.pairs,
            &self.cfg.mining,
        )?;
        self.negatives = negatives;
        tracing::info!(epoch, ?measured, "hard negatives mined");
        Ok(measured)
    }

    fn step(&mut self, _epoch: usize, batch: &Vec<usize>, _rng: &mut StdRng) -> Result<StepOutput> {
        let queries: Vec<&str> = batch.iter().map(|&i| self.pairs[i].query.as_str()).collect();
        let mut glosses: Vec<&str> = batch.iter().map(|&i| self.pairs[i].positive.as_str()).collect();
        let negatives = pairs::batch_negatives(&self.pairs, &self.negatives, &self.benchmark, batch);
        glosses.extend(negatives.into_iter().map(|d| self.benchmark.docs[d].as_str()));
        let (q, d) = (self.encoder.embed(&queries)?, self.encoder.embed(&glosses)?);
        let scores = (q.matmul(&d.t()?.contiguous()?)? * self.cfg.scale)?;
        let n = batch.len();
        let own = Tensor::arange(0u32, n as u32, &self.encoder.device)?;
        let items = n + glosses.len();
        let mut loss = cross_entropy(&scores, &own)?;
        if let (Some(teacher), Some(t)) = (&self.teacher, &self.cfg.teacher) {
            let target = self.teacher_scores(teacher, &queries, &glosses)?;
            loss = (loss + (kd_kl(&scores, &target, t.temperature)? * t.weight)?)?;
        }
        Ok(StepOutput { loss, hits: correct(&scores, &own)?, n, items })
    }

    fn validate(&mut self, _epoch: usize) -> Result<Validation> {
        let manifest = self.manifest(BTreeMap::new());
        let run = &self.cfg.run;
        self.encoder.validate(&manifest, &run.common.out, &self.benchmark, run.val_queries, run.val_corpus)
    }

    fn export(&self, history: &[EpochRecord]) -> Result<Export> {
        let params = student::count_params(&self.encoder.spec);
        Ok(self.encoder.export(self.manifest(params.metrics()), params.total(), history))
    }

    fn test(&self, dir: &Path) -> Result<TestReport> {
        encoder::test(&self.benchmark, dir, self.cfg.run.test_queries, self.cfg.run.test_corpus)
    }
}
