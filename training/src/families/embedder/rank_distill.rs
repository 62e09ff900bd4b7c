//! Distilling a cross-encoder's scores into a bi-encoder student: in-batch score KL, or CPRD
//! (contrastive partial ranking distillation, METHODS.md section 1).
//!
//! Both train on the benchmark's (query, gloss) pairs with the fine-tuning loss (in-batch
//! negatives plus the hard negatives the student mines itself at the start of every epoch) and
//! add `beta` times a distillation term over each query's own candidates, its positive and its
//! mined negatives, which the cross-encoder scores once per epoch (through the serving path):
//!
//! - **score KL**: KL(teacher ‖ student) between the softmax of the cross-encoder's logits (over
//!   `teacher_temperature`) and the softmax of the student's scaled cosines, over the same list.
//!   The teacher's logits of every (query, candidate) of a batch would cost a cross-encoder call
//!   per cell, so the list is each query's own candidates rather than the whole batch; both
//!   methods then see the same candidates and teacher calls, which is what "equal budget" means.
//! - **CPRD**: the negatives in the teacher's order, cut at the first invalid one, and a
//!   Plackett–Luce contrastive term: each kept negative against every negative the teacher ranks
//!   below it (kept or not), `−Σ_j log softmax(s_j, s_{j+1}, …, s_K)[0]`. The validity rule is an
//!   option ([`Validity`]).
//!
//! The positive enters the distillation term only through KL (CPRD leaves it to the contrastive
//! loss, as the method's notes do).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use candle_core::{Tensor, D};
use candle_nn::VarMap;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::json;
use tandem_runtime::bundle::{Bundle, Manifest, Provenance};

use super::distill::DistillConfig;
use super::encoder::{self, TrainingEncoder};
use super::load_benchmark;
use super::pairs;
use super::student::ParamCount;
use crate::losses::{correct, cross_entropy, partial_ranking_loss};
use crate::optim::AdamW;
use crate::report::{EpochRecord, TrainSummary};
use crate::retrieval::{Benchmark, Encoder, MiningOptions, TrainingPair};
use crate::trainer::{self, Export, Family, Plan, StepOutput, TestReport, Validation};
use crate::{Error, Result};

/// Which negatives of the teacher's order CPRD distils: the list is cut at the first invalid one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Validity {
    /// A negative the teacher scores at or above the positive is invalid (a likely unjudged
    /// answer), so a query whose teacher doubts its label distils nothing.
    AbovePositive,
    /// A negative whose teacher logit is below this is invalid: the order of negatives the
    /// teacher finds plainly irrelevant carries no signal.
    Threshold(f32),
}

/// The distillation term.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RankMethod {
    /// KL between the teacher's and the student's softmax over each query's candidates.
    ScoreKl,
    /// Contrastive partial ranking distillation.
    Cprd(Validity),
}

impl RankMethod {
    fn recipe(&self) -> String {
        match self {
            RankMethod::ScoreKl => "distill-score-kl".into(),
            RankMethod::Cprd(Validity::AbovePositive) => "distill-cprd-above-positive".into(),
            RankMethod::Cprd(Validity::Threshold(_)) => "distill-cprd-threshold".into(),
        }
    }
}

/// A rank-distillation run: the shared distillation settings plus the cross-encoder and its term.
#[derive(Debug, Clone)]
pub struct RankDistillConfig {
    /// Student shape, optimiser, epochs, data and output (the teacher there is the bi-encoder the
    /// student is cut from, unless `base.init` names a student to continue).
    pub base: DistillConfig,
    /// The cross-encoder bundle whose scores are distilled.
    pub cross_encoder: PathBuf,
    /// The distillation term.
    pub method: RankMethod,
    /// Weight of the distillation term next to the contrastive loss.
    pub beta: f64,
    /// Scale of the student's cosines (the contrastive loss's, sentence-transformers' 20).
    pub scale: f64,
    /// Temperature of the teacher's logits in score KL.
    pub teacher_temperature: f64,
    /// The student's own hard negatives per query (the candidates the teacher orders).
    pub mining: MiningOptions,
    /// Train on a seeded sample of this many pairs.
    pub max_pairs: Option<usize>,
}

impl RankDistillConfig {
    fn hyperparameters(&self) -> BTreeMap<String, serde_json::Value> {
        let mut h = self.base.hyperparameters();
        let threshold = match self.method {
            RankMethod::Cprd(Validity::Threshold(t)) => Some(t),
            _ => None,
        };
        h.insert("method".into(), json!(self.method.recipe()));
        h.insert("cprd_threshold".into(), json!(threshold));
        h.insert("beta".into(), json!(self.beta));
        h.insert("scale".into(), json!(self.scale));
        h.insert("teacher_temperature".into(), json!(self.teacher_temperature));
        h.insert("negatives".into(), json!(self.mining.per_query));
        h.insert("mine_depth".into(), json!(self.mining.depth));
        h.insert("mine_corpus".into(), json!(self.mining.corpus_limit));
        h.insert("max_pairs".into(), json!(self.max_pairs));
        h
    }

    fn validate(&self) -> Result<()> {
        self.base.validate()?;
        if self.mining.per_query < 2 {
            return Err(Error::InvalidArgument("rank distillation needs at least 2 negatives per query".into()));
        }
        if !(self.beta.is_finite() && self.beta >= 0.0 && self.teacher_temperature > 0.0 && self.scale > 0.0) {
            return Err(Error::InvalidArgument("--beta must be ≥ 0, the scale and the temperature > 0".into()));
        }
        Ok(())
    }
}

/// Trains a student with the contrastive loss plus the cross-encoder's distillation term.
pub fn rank_distill(cfg: &RankDistillConfig) -> Result<TrainSummary> {
    cfg.validate()?;
    let run = &cfg.base.run;
    let settings = run.loop_settings(run.fingerprint(
        "rank-distill",
        &cfg.hyperparameters(),
        &[&cfg.base.teacher, &cfg.cross_encoder],
    ));
    trainer::run(RankDistillRun::new(cfg)?, &settings)
}

/// One query's candidates as the teacher scored them.
#[derive(Debug, Clone, Default)]
struct Scored {
    /// The teacher's logit of the positive.
    positive: f32,
    /// Mined negatives (document indices) by falling teacher logit, with their logits.
    negatives: Vec<(usize, f32)>,
}

/// One rank-distillation run.
pub struct RankDistillRun<'a> {
    cfg: &'a RankDistillConfig,
    teacher_id: String,
    params: ParamCount,
    student: TrainingEncoder,
    benchmark: Benchmark,
    pairs: Vec<TrainingPair>,
    cross_encoder: Encoder,
    /// Per pair, this epoch's candidates in the teacher's order.
    scored: Vec<Scored>,
    /// Per pair, the same negatives (document indices) alone.
    mined: Vec<Vec<usize>>,
}

impl<'a> RankDistillRun<'a> {
    /// Loads WordNet, the student (cut or given), the training pairs and the cross-encoder.
    pub fn new(cfg: &'a RankDistillConfig) -> Result<RankDistillRun<'a>> {
        let base = &cfg.base;
        let benchmark = load_benchmark(&base.run.wordnet)?;
        let mut pairs = benchmark.training_pairs();
        pairs.shuffle(&mut StdRng::seed_from_u64(base.run.common.seed ^ 0x5eed));
        if let Some(n) = cfg.max_pairs {
            pairs.truncate(n);
        }
        if pairs.is_empty() {
            return Err(Error::InvalidArgument("the benchmark has no training pairs".into()));
        }
        let teacher = Bundle::load(&base.teacher)?;
        let corpus: Vec<&str> = pairs.iter().flat_map(|p| [p.query.as_str(), p.positive.as_str()]).collect();
        let (student, params) = base.student(&teacher, &corpus)?;
        let (cross_encoder, kind) = Encoder::load_any(&cfg.cross_encoder, 50_000)?;
        if kind != "cross_encoder" {
            return Err(Error::InvalidArgument(format!(
                "--cross-encoder {} is a {kind} bundle, not a cross_encoder",
                cfg.cross_encoder.display()
            )));
        }
        Ok(RankDistillRun {
            cfg,
            teacher_id: cross_encoder.id.clone(),
            params,
            student,
            benchmark,
            pairs,
            cross_encoder,
            scored: Vec::new(),
            mined: Vec::new(),
        })
    }

    fn manifest(&self, metrics: BTreeMap<String, f64>) -> Manifest {
        let provenance = Provenance {
            dataset: "wordnet".into(),
            dataset_sha256: String::new(),
            recipe: self.cfg.method.recipe(),
            hyperparameters: self.cfg.hyperparameters(),
            teacher: Some(self.teacher_id.clone()),
        };
        self.student.manifest(&self.cfg.base.run.common.name, &self.cfg.base.run.common.version, provenance, metrics)
    }
}

/// The distillation term of one query: `student` holds the student's scaled cosines of its
/// candidates (positive first, then `scored.negatives` in the teacher's order); `None` when the
/// query distils nothing.
fn distill_term(method: RankMethod, temperature: f64, student: &Tensor, scored: &Scored) -> Result<Option<Tensor>> {
    let device = student.device();
    let m = student.dim(0)?;
    match method {
        RankMethod::ScoreKl => {
            let logits: Vec<f32> = std::iter::once(scored.positive)
                .chain(scored.negatives.iter().map(|&(_, s)| s))
                .take(m)
                .map(|s| s / temperature as f32)
                .collect();
            let target = candle_nn::ops::softmax_last_dim(&Tensor::new(logits.as_slice(), device)?)?;
            let log_student = candle_nn::ops::log_softmax(student, D::Minus1)?;
            let log_target = target.clamp(1e-12, 1.0)?.log()?;
            Ok(Some((target * (log_target - log_student)?)?.sum_all()?))
        }
        RankMethod::Cprd(validity) => {
            let kept = scored
                .negatives
                .iter()
                .take_while(|&&(_, s)| match validity {
                    Validity::AbovePositive => s < scored.positive,
                    Validity::Threshold(t) => s >= t,
                })
                .count();
            // Negatives sit at 1.. in the teacher's order; the last has nothing below it.
            let kept = kept.min(m.saturating_sub(2));
            if kept == 0 {
                return Ok(None);
            }
            let negatives = student.narrow(0, 1, m - 1)?.unsqueeze(0)?;
            Ok(Some(partial_ranking_loss(&negatives, &[kept])?))
        }
    }
}

impl Family for RankDistillRun<'_> {
    type Batch = Vec<usize>;

    const ITEM: &'static str = "pair";

    fn trainable(&self) -> Vec<(String, VarMap)> {
        vec![(String::new(), self.student.vars.clone())]
    }

    fn plan(&self) -> Plan {
        let steps_per_epoch = self.batches(0).len();
        let epochs = self.cfg.base.run.common.epochs;
        Plan { epochs, steps_per_epoch, cosine_epochs: epochs, cosine_from: 0 }
    }

    fn batches(&self, epoch: usize) -> Vec<Vec<usize>> {
        pairs::batches(&self.pairs, self.cfg.base.run.common.batch_size, self.cfg.base.run.common.seed, epoch)
    }

    fn begin_epoch(&mut self, epoch: usize, _optimizer: &mut AdamW) -> Result<BTreeMap<String, f64>> {
        let manifest = self.manifest(BTreeMap::new());
        let (negatives, mut measured) = pairs::mine_own(
            &self.student,
            &manifest,
            &self.cfg.base.run.common.out,
            &self.benchmark,
            &self.pairs,
            &self.cfg.mining,
        )?;
        let started = std::time::Instant::now();
        let mut scored = Vec::with_capacity(self.pairs.len());
        let mut above_positive = 0usize;
        for (pair, negatives) in self.pairs.iter().zip(negatives) {
            let docs: Vec<String> = std::iter::once(pair.positive.clone())
                .chain(negatives.iter().map(|&d| self.benchmark.docs[d].clone()))
                .collect();
            let logits = self.cross_encoder.rerank_scores(&pair.query, &docs)?;
            let mut ordered: Vec<(usize, f32)> = negatives.into_iter().zip(logits[1..].iter().copied()).collect();
            ordered.sort_by(|a, b| b.1.total_cmp(&a.1));
            above_positive += ordered.iter().filter(|&&(_, s)| s >= logits[0]).count();
            scored.push(Scored { positive: logits[0], negatives: ordered });
        }
        self.mined = scored.iter().map(|s| s.negatives.iter().map(|&(d, _)| d).collect()).collect();
        self.scored = scored;
        let n_negatives = self.scored.iter().map(|s| s.negatives.len()).sum::<usize>().max(1);
        measured.insert("teacher_scoring_s".into(), started.elapsed().as_secs_f64());
        measured.insert("negatives_above_positive".into(), above_positive as f64 / n_negatives as f64);
        tracing::info!(epoch, ?measured, "student negatives mined and scored by the cross-encoder");
        Ok(measured)
    }

    fn step(&mut self, _epoch: usize, batch: &Vec<usize>, _rng: &mut StdRng) -> Result<StepOutput> {
        let queries: Vec<&str> = batch.iter().map(|&i| self.pairs[i].query.as_str()).collect();
        let mut docs: Vec<usize> = batch.iter().map(|&i| self.pairs[i].synset).collect();
        docs.extend(pairs::batch_negatives(&self.pairs, &self.mined, &self.benchmark, batch));
        let column: HashMap<usize, u32> = docs.iter().enumerate().map(|(c, &d)| (d, c as u32)).collect();
        let texts: Vec<&str> = docs.iter().map(|&d| self.benchmark.docs[d].as_str()).collect();
        let (q, d) = (self.student.embed(&queries)?, self.student.embed(&texts)?);
        let scores = (q.matmul(&d.t()?.contiguous()?)? * self.cfg.scale)?;
        let n = batch.len();
        let own = Tensor::arange(0u32, n as u32, &self.student.device)?;
        let contrastive = cross_entropy(&scores, &own)?;

        let mut terms = Vec::new();
        for (row, &i) in batch.iter().enumerate() {
            // The candidates the batch embedded, positive first, in the teacher's order; a mined
            // negative with a batch positive's text was left out of the columns, and of the list.
            let mut scored = Scored { positive: self.scored[i].positive, negatives: Vec::new() };
            let mut columns = vec![row as u32];
            for &(d, s) in &self.scored[i].negatives {
                if let Some(&c) = column.get(&d).filter(|&&c| c as usize >= n) {
                    columns.push(c);
                    scored.negatives.push((d, s));
                }
            }
            let student = scores.get(row)?.index_select(&Tensor::new(columns.as_slice(), scores.device())?, 0)?;
            if let Some(term) = distill_term(self.cfg.method, self.cfg.teacher_temperature, &student, &scored)? {
                terms.push(term);
            }
        }
        let loss = if terms.is_empty() {
            contrastive
        } else {
            let distill = (Tensor::stack(&terms, 0)?.sum_all()? / n as f64)?;
            (contrastive + (distill * self.cfg.beta)?)?
        };
        Ok(StepOutput { loss, hits: correct(&scores, &own)?, n, items: n + texts.len() })
    }

    fn validate(&mut self, _epoch: usize) -> Result<Validation> {
        let manifest = self.manifest(BTreeMap::new());
        let run = &self.cfg.base.run;
        self.student.validate(&manifest, &run.common.out, &self.benchmark, run.val_queries, run.val_corpus)
    }

    fn export(&self, history: &[EpochRecord]) -> Result<Export> {
        Ok(self.student.export(self.manifest(self.params.metrics()), self.params.total(), history))
    }

    fn test(&self, dir: &std::path::Path) -> Result<TestReport> {
        encoder::test(&self.benchmark, dir, self.cfg.base.run.test_queries, self.cfg.base.run.test_corpus)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn value(t: Option<Tensor>) -> f64 {
        f64::from(t.unwrap().to_scalar::<f32>().unwrap())
    }

    fn log_sum_exp(xs: &[f64]) -> f64 {
        xs.iter().map(|x| x.exp()).sum::<f64>().ln()
    }

    #[test]
    fn cprd_is_a_plackett_luce_chain_over_the_teachers_order_cut_at_the_first_invalid_negative() {
        let student = Tensor::new(&[4.0f32, 1.0, 3.0, 2.0, 0.5], &Device::Cpu).unwrap();
        let s = [1.0, 3.0, 2.0, 0.5];
        let scored = Scored { positive: 5.0, negatives: vec![(10, 3.0), (11, 2.0), (12, -1.0), (13, -2.0)] };
        // Everything valid: three links (the last negative has nothing below it).
        let all = Validity::Threshold(f32::NEG_INFINITY);
        let expect: f64 = (0..3).map(|j| log_sum_exp(&s[j..]) - s[j]).sum();
        let got = value(distill_term(RankMethod::Cprd(all), 1.0, &student, &scored).unwrap());
        assert!((got - expect).abs() < 1e-5, "{got} {expect}");
        // A threshold of 0 keeps the two negatives the teacher scores at or above it.
        let expect: f64 = (0..2).map(|j| log_sum_exp(&s[j..]) - s[j]).sum();
        let got = value(distill_term(RankMethod::Cprd(Validity::Threshold(0.0)), 1.0, &student, &scored).unwrap());
        assert!((got - expect).abs() < 1e-5, "{got} {expect}");
        // A negative above the positive cuts the list before anything is kept.
        let doubtful = Scored { positive: 2.5, ..scored.clone() };
        assert!(distill_term(RankMethod::Cprd(Validity::AbovePositive), 1.0, &student, &doubtful).unwrap().is_none());
        assert!(distill_term(RankMethod::Cprd(Validity::AbovePositive), 1.0, &student, &scored).unwrap().is_some());
    }

    #[test]
    fn score_kl_is_the_kl_of_the_teachers_softmax_to_the_students() {
        let student = Tensor::new(&[2.0f32, 0.0, -1.0], &Device::Cpu).unwrap();
        let scored = Scored { positive: 1.0, negatives: vec![(1, 2.0), (2, 0.0)] };
        let t = [0.5f64, 1.0, 0.0];
        let (zt, zs) = (log_sum_exp(&t), log_sum_exp(&[2.0, 0.0, -1.0]));
        let expect: f64 =
            t.iter().zip([2.0, 0.0, -1.0]).map(|(ti, si)| (ti - zt).exp() * ((ti - zt) - (si - zs))).sum();
        let got = value(distill_term(RankMethod::ScoreKl, 2.0, &student, &scored).unwrap());
        assert!((got - expect).abs() < 1e-5, "{got} {expect}");
        // The same lists give zero.
        let same = Tensor::new(&[0.5f32, 1.0, 0.0], &Device::Cpu).unwrap();
        assert!(value(distill_term(RankMethod::ScoreKl, 2.0, &same, &scored).unwrap()).abs() < 1e-6);
    }
}
