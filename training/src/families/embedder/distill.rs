//! Embedding distillation: a student cut from a teacher embedder ([`super::student`]) learns to
//! reproduce the teacher's vectors of the benchmark's training texts (queries and definitions),
//! so it can replace the teacher in the same index.
//!
//! The teacher runs once, through the serving path, before training; its vectors are kept beside
//! the run (`<out>.teacher-<digest>.safetensors`), so a resumed run does not embed them again.
//! The loss is an option: `cosine` (1 − cos between the student's and the teacher's vector: only
//! the direction matters, which is all a normalised embedder serves) or `mse` (sentence-
//! transformers' `MSELoss` on the raw pooled vectors, which also fixes their length).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor, D};
use candle_nn::VarMap;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::json;
use tandem_runtime::bundle::{Bundle, Provenance};
use tandem_runtime::layers::differentiable::l2_normalize;

use super::encoder::{self, TrainingEncoder};
use super::load_benchmark;
use super::student::{count_params, cut_student, ParamCount, StudentShape};
use crate::families::text_run::{TextRun, WordNetSource};
use crate::losses::correct;
use crate::report::{EpochRecord, TrainSummary};
use crate::retrieval::{Benchmark, Encoder};
use crate::trainer::{self, Export, Family, LoopSettings, Plan, StepOutput, TestReport, Validation};
use crate::{Error, Result};

/// What the student is trained to match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DistillLoss {
    /// 1 − cosine similarity to the teacher's vector.
    Cosine,
    /// Mean squared error to the teacher's raw pooled vector.
    Mse,
}

impl DistillLoss {
    fn name(self) -> &'static str {
        match self {
            DistillLoss::Cosine => "cosine",
            DistillLoss::Mse => "mse",
        }
    }
}

/// Everything an embedding-distillation run is made of.
#[derive(Debug, Clone)]
pub struct DistillConfig {
    /// The settings every retrieval run shares; `batch_size` counts texts, `max_seq_length` is at
    /// most the teacher's limit, and `half` stores the student in F16.
    pub run: TextRun,
    /// The embedder bundle to distil (and cut the student from).
    pub teacher: PathBuf,
    /// Which layers and how much vocabulary the student keeps.
    pub shape: StudentShape,
    /// Continue this embedder bundle (a student trained before) instead of cutting one.
    pub init: Option<PathBuf>,
    /// The distillation loss.
    pub loss: DistillLoss,
    /// Distil on a seeded sample of this many texts.
    pub max_texts: Option<usize>,
}

impl DistillConfig {
    /// A run with defaults: two layers (the teacher's first and last are chosen by the caller),
    /// cosine loss, batch 64, AdamW at 1e-4 with 10% warm-up, one epoch.
    pub fn new(teacher: PathBuf, wordnet: WordNetSource, shape: StudentShape, out: PathBuf) -> DistillConfig {
        DistillConfig {
            run: TextRun::new(wordnet, out, "student", 64, 1e-4),
            teacher,
            shape,
            init: None,
            loss: DistillLoss::Cosine,
            max_texts: None,
        }
    }

    /// Refuses settings that cannot train.
    pub fn validate(&self) -> Result<()> {
        self.run.validate(2)?;
        if self.max_texts == Some(0) {
            return Err(Error::InvalidArgument("--max-texts must be positive".into()));
        }
        Ok(())
    }

    /// The hyperparameters recorded in the bundle's provenance (and fingerprinted).
    pub fn hyperparameters(&self) -> BTreeMap<String, serde_json::Value> {
        let mut all = self.run.hyperparameters();
        all.extend([
            ("layers".into(), json!(self.shape.layers)),
            ("vocab".into(), json!(self.shape.vocab)),
            ("intermediate".into(), json!(self.shape.intermediate)),
            ("init".into(), json!(self.init.as_ref().map(|p| p.display().to_string()))),
            ("loss".into(), json!(self.loss.name())),
            ("max_texts".into(), json!(self.max_texts)),
        ]);
        all
    }

    fn loop_settings(&self) -> LoopSettings {
        self.run.loop_settings(self.run.fingerprint("distill-embedder", &self.hyperparameters(), &[&self.teacher]))
    }

    /// The student a run starts from: `init` when given, else cut from `teacher` by `shape`, with
    /// `corpus` deciding a cut vocabulary.
    pub(crate) fn student(&self, teacher: &Bundle, corpus: &[&str]) -> Result<(TrainingEncoder, ParamCount)> {
        if let Some(init) = &self.init {
            let student = TrainingEncoder::from_bundle(&Bundle::load(init)?, "--init", self.run.max_seq_length)?;
            let params = count_params(&student.spec);
            return Ok((student, params));
        }
        let cut = cut_student(teacher, &self.shape, corpus)?;
        let student = TrainingEncoder::from_tensors(
            cut.spec,
            teacher.manifest.clone(),
            cut.tokenizer,
            &cut.tensors,
            self.run.max_seq_length,
        )?;
        Ok((student, cut.params))
    }
}

/// Distils a student: checkpoints every epoch, exports the bundle and measures it.
pub fn distill(cfg: &DistillConfig) -> Result<TrainSummary> {
    cfg.validate()?;
    trainer::run(DistillRun::new(cfg)?, &cfg.loop_settings())
}

/// One distillation run.
pub struct DistillRun<'a> {
    cfg: &'a DistillConfig,
    teacher_id: String,
    params: ParamCount,
    student: TrainingEncoder,
    benchmark: Benchmark,
    texts: Vec<String>,
    /// The teacher's vectors of `texts`, `[n, hidden]`, on the student's device.
    targets: Tensor,
}

impl<'a> DistillRun<'a> {
    /// Loads the teacher and WordNet, cuts the student and embeds the texts with the teacher.
    pub fn new(cfg: &'a DistillConfig) -> Result<DistillRun<'a>> {
        let teacher = Bundle::load(&cfg.teacher)?;
        let benchmark = load_benchmark(&cfg.run.wordnet)?;
        let texts = training_texts(&benchmark, cfg.run.common.seed, cfg.max_texts);
        if texts.is_empty() {
            return Err(Error::InvalidArgument("the benchmark has no training texts".into()));
        }
        let corpus: Vec<&str> = texts.iter().map(String::as_str).collect();
        let (student, params) = cfg.student(&teacher, &corpus)?;
        let targets = teacher_targets(cfg, &teacher, &texts)?.to_device(&student.device)?;
        Ok(DistillRun { cfg, teacher_id: teacher.id, params, student, benchmark, texts, targets })
    }

    fn manifest(&self, metrics: BTreeMap<String, f64>) -> tandem_runtime::bundle::Manifest {
        let provenance = Provenance {
            dataset: "wordnet".into(),
            dataset_sha256: String::new(),
            recipe: format!("distill-embedding-{}", self.cfg.loss.name()),
            hyperparameters: self.cfg.hyperparameters(),
            teacher: Some(self.teacher_id.clone()),
        };
        self.student.manifest(&self.cfg.run.common.name, &self.cfg.run.common.version, provenance, metrics)
    }
}

/// The texts distilled on: every training query and every definition training may show, each
/// once, in a seeded order (a seeded sample with `limit`).
fn training_texts(benchmark: &Benchmark, seed: u64, limit: Option<usize>) -> Vec<String> {
    let pairs = benchmark.training_pairs();
    let positives: Vec<usize> = pairs.iter().map(|p| p.synset).collect();
    let docs = benchmark.training_docs(&positives, None);
    let mut seen = HashSet::new();
    let mut texts: Vec<String> = pairs
        .into_iter()
        .map(|p| p.query)
        .chain(docs.into_iter().map(|d| benchmark.docs[d].clone()))
        .filter(|t| seen.insert(t.clone()))
        .collect();
    texts.shuffle(&mut StdRng::seed_from_u64(seed ^ 0xd157));
    if let Some(n) = limit {
        texts.truncate(n);
    }
    texts
}

/// The teacher's vectors of `texts`, read from beside the run when an earlier start computed them.
fn teacher_targets(cfg: &DistillConfig, teacher: &Bundle, texts: &[String]) -> Result<Tensor> {
    let key = format!("{}|{}|{:?}|{}", teacher.id, cfg.loss.name(), cfg.run.max_seq_length, texts.join("\n"));
    let digest = tandem_runtime::bundle::sha256_hex(key.as_bytes());
    let path = trainer::sibling(&cfg.run.common.out, &format!("teacher-{}.safetensors", &digest[..12]));
    if let Ok(saved) = candle_core::safetensors::load(&path, &Device::Cpu) {
        if let Some(targets) = saved.get("targets").filter(|t| t.dim(0).ok() == Some(texts.len())) {
            return Ok(targets.clone());
        }
    }
    let encoder = Encoder::load(&cfg.teacher, 0)?;
    let targets = encoder.embed_tensor(texts, "teacher targets", cfg.loss == DistillLoss::Cosine, &Device::Cpu)?;
    let bytes = safetensors::serialize([("targets", &targets)], None)
        .map_err(|e| Error::InvalidData { file: path.display().to_string(), reason: e.to_string() })?;
    tandem_runtime::fs::atomic_write(&path, &bytes).map_err(|e| Error::io(&path, e))?;
    Ok(targets)
}

impl Family for DistillRun<'_> {
    type Batch = Vec<usize>;

    const ITEM: &'static str = "text";

    fn trainable(&self) -> Vec<(String, VarMap)> {
        vec![(String::new(), self.student.vars.clone())]
    }

    fn plan(&self) -> Plan {
        let steps_per_epoch = self.texts.len().div_ceil(self.cfg.run.common.batch_size);
        Plan {
            epochs: self.cfg.run.common.epochs,
            steps_per_epoch,
            cosine_epochs: self.cfg.run.common.epochs,
            cosine_from: 0,
        }
    }

    fn batches(&self, epoch: usize) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..self.texts.len()).collect();
        order.shuffle(&mut StdRng::seed_from_u64(
            self.cfg.run.common.seed.wrapping_mul(0x9e37_79b9).wrapping_add(epoch as u64),
        ));
        order.chunks(self.cfg.run.common.batch_size).map(<[usize]>::to_vec).collect()
    }

    fn step(&mut self, _epoch: usize, batch: &Vec<usize>, _rng: &mut StdRng) -> Result<StepOutput> {
        let texts: Vec<&str> = batch.iter().map(|&i| self.texts[i].as_str()).collect();
        let rows = Tensor::new(batch.iter().map(|&i| i as u32).collect::<Vec<u32>>(), &self.student.device)?;
        let target = self.targets.index_select(&rows, 0)?;
        let pooled = self.student.pooled(&texts)?;
        let (student_unit, target_unit) = (l2_normalize(&pooled, 1e-12)?, l2_normalize(&target, 1e-12)?);
        let loss = match self.cfg.loss {
            DistillLoss::Cosine => (1.0 - (&student_unit * &target_unit)?.sum(D::Minus1)?.mean_all()?)?,
            DistillLoss::Mse => (&pooled - &target)?.sqr()?.mean_all()?,
        };
        // Accuracy: how often a student vector is nearest its own teacher vector within the batch.
        let scores = student_unit.matmul(&target_unit.t()?.contiguous()?)?;
        let own = Tensor::arange(0u32, batch.len() as u32, &self.student.device)?;
        Ok(StepOutput { loss, hits: correct(&scores, &own)?, n: batch.len(), items: batch.len() })
    }

    fn validate(&mut self, _epoch: usize) -> Result<Validation> {
        let manifest = self.manifest(BTreeMap::new());
        let run = &self.cfg.run;
        self.student.validate(&manifest, &run.common.out, &self.benchmark, run.val_queries, run.val_corpus)
    }

    fn export(&self, history: &[EpochRecord]) -> Result<Export> {
        Ok(self.student.export(self.manifest(self.params.metrics()), self.params.total(), history))
    }

    fn test(&self, dir: &Path) -> Result<TestReport> {
        encoder::test(&self.benchmark, dir, self.cfg.run.test_queries, self.cfg.run.test_corpus)
    }
}
