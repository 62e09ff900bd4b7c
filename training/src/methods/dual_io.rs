//! Dual-input-output training: two branches trained on plain and distorted images, merged into
//! one network, then fine-tuned with progressive unfreezing.
//!
//! Both branches start from the same initial weights. They then see the same images in the same
//! order, branch A the original images and branch B strongly distorted copies
//! ([`crate::augment::StrongAugment`]), so their units stay in correspondence and averaging
//! matching weights is meaningful; from independent starts it would mix unrelated units. The merge
//! rule of the paper is not known; [`MergeRule`] names the two candidates. Fine-tuning the merged
//! network uses the run's ordinary augmentation, with constant learning rates that halve per stage.

use std::collections::BTreeMap;
use std::str::FromStr;

use candle_nn::VarMap;
use rand::rngs::StdRng;
use tandem_runtime::models::cnn::{Cnn, CnnConfig, LayerSpec};

use crate::augment::StrongAugment;
use crate::data::{labels_to_tensor, pixels_to_tensor, Augment};
use crate::eval::evaluate;
use crate::init::seeded_init;
use crate::losses::{correct, cross_entropy};
use crate::methods::{ClassifierMethod, ClassifierRun, Finish};
use crate::optim::AdamW;
use crate::report::{DualIoReport, EpochRecord};
use crate::sampling::StepBatch;
use crate::trainer::{EpochPlan, Plan, StepOutput, Validation};
use crate::{arch, Error, Result};

/// Learning-rate factor from one fine-tuning stage to the next; the first stage runs at the peak
/// learning rate times this factor.
pub const STAGE_LR_FACTOR: f64 = 0.5;

/// How the two trained branches become one network of the same architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeRule {
    /// The mean of every pair of matching tensors, batch-norm running statistics included.
    Average,
    /// Branch A (trained on plain images) alone: the baseline that shows what averaging adds.
    A,
}

impl MergeRule {
    /// The names `--merge` accepts.
    pub const NAMES: [&'static str; 2] = ["average", "a"];

    /// The name as the CLI and provenance spell it.
    pub fn name(&self) -> &'static str {
        match self {
            MergeRule::Average => "average",
            MergeRule::A => "a",
        }
    }
}

impl FromStr for MergeRule {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "average" => Ok(MergeRule::Average),
            "a" => Ok(MergeRule::A),
            other => Err(Error::InvalidArgument(format!(
                "unknown merge rule {other:?}; known: {}",
                MergeRule::NAMES.join(", ")
            ))),
        }
    }
}

/// Writes the merge of branches `a` and `b` into every variable of `into`; all three hold the
/// same architecture under the same names.
pub fn merge(a: &VarMap, b: &VarMap, into: &VarMap, rule: MergeRule) -> Result<()> {
    let a = a.data().lock().expect("varmap lock poisoned. This is a bug.");
    let b = b.data().lock().expect("varmap lock poisoned. This is a bug.");
    let into = into.data().lock().expect("varmap lock poisoned. This is a bug.");
    for (name, dst) in into.iter() {
        let (Some(va), Some(vb)) = (a.get(name), b.get(name)) else {
            return Err(Error::InvalidArgument(format!("branch tensor {name} is missing")));
        };
        let merged = match rule {
            MergeRule::Average => ((va.as_tensor() + vb.as_tensor())? * 0.5)?,
            MergeRule::A => va.as_tensor().clone(),
        };
        dst.set(&merged)?;
    }
    Ok(())
}

/// Variable-name prefixes trained in each fine-tuning stage: stage 0 trains the heads only, and
/// each later stage adds the next block with parameters, from the top of the body down, until
/// the last stage trains everything.
pub fn unfreeze_stages(cfg: &CnnConfig) -> Vec<Vec<String>> {
    let blocks: Vec<usize> = cfg
        .layers
        .iter()
        .enumerate()
        .filter(|(_, l)| matches!(l, LayerSpec::Conv { .. } | LayerSpec::Separable { .. } | LayerSpec::Linear { .. }))
        .map(|(i, _)| i)
        .collect();
    let mut prefixes = vec!["head.".to_owned(), "head_aux.".to_owned()];
    let mut stages = vec![prefixes.clone()];
    for i in blocks.into_iter().rev() {
        prefixes.push(format!("layers.{i}."));
        stages.push(prefixes.clone());
    }
    stages
}

/// Whether the variable `name` trains under `prefixes` (one stage of [`unfreeze_stages`]).
pub fn in_stage(name: &str, prefixes: &[String]) -> bool {
    prefixes.iter().any(|p| name.starts_with(p.as_str()))
}

/// The constant learning rate of fine-tuning stage `stage`.
pub fn stage_lr(peak: f64, stage: usize) -> f64 {
    peak * STAGE_LR_FACTOR.powi(i32::try_from(stage + 1).unwrap_or(i32::MAX))
}

/// Prefixes of the branches' variables in the optimiser and the checkpoint.
const BRANCH_A: &str = "branch_a.";
const BRANCH_B: &str = "branch_b.";

/// Which part of dual-io an epoch runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The two branches.
    Branches,
    /// Fine-tuning of the merged network, at an unfreezing stage.
    Finetune(usize),
}

/// Dual-io's epochs: the branch stage, then one run of `stage_epochs` per unfreezing stage.
#[derive(Debug, Clone, PartialEq)]
struct Stages {
    branch_epochs: usize,
    stage_epochs: usize,
    /// Trainable name prefixes of each unfreezing stage.
    prefixes: Vec<Vec<String>>,
    peak_lr: f64,
}

impl Stages {
    fn new(arch: &CnnConfig, branch_epochs: usize, stage_epochs: usize, peak_lr: f64) -> Stages {
        Stages { branch_epochs, stage_epochs, prefixes: unfreeze_stages(arch), peak_lr }
    }

    /// The cosine schedule covers the branch stage; the fine-tuning stages have constant rates.
    fn plan(&self, steps_per_epoch: usize) -> Plan {
        let epochs = self.branch_epochs + self.prefixes.len() * self.stage_epochs;
        Plan { epochs, steps_per_epoch, cosine_epochs: self.branch_epochs, cosine_from: 0 }
    }

    fn phase(&self, epoch: usize) -> Phase {
        if epoch < self.branch_epochs {
            return Phase::Branches;
        }
        let stage = (epoch - self.branch_epochs) / self.stage_epochs.max(1);
        Phase::Finetune(stage.min(self.prefixes.len().saturating_sub(1)))
    }

    fn epoch_plan(&self, epoch: usize) -> EpochPlan {
        match self.phase(epoch) {
            Phase::Branches => EpochPlan { stage: Some("branches".into()), constant_lr: None },
            Phase::Finetune(stage) => EpochPlan {
                stage: Some(if stage == 0 { "head".into() } else { format!("unfreeze-{stage}") }),
                constant_lr: Some(stage_lr(self.peak_lr, stage)),
            },
        }
    }
}

/// The method: two branches beside the student, which receives their merge.
pub(crate) struct DualIo {
    merge: MergeRule,
    stages: Stages,
    a_vars: VarMap,
    a: Cnn,
    b_vars: VarMap,
    b: Cnn,
    augment: StrongAugment,
}

impl DualIo {
    /// Builds both branches from the same seeded start.
    pub(crate) fn new(merge: MergeRule, stage_epochs: usize, run: &ClassifierRun) -> Result<DualIo> {
        let (a_vars, a) = arch::build(&run.arch, &run.device)?;
        let (b_vars, b) = arch::build(&run.arch, &run.device)?;
        // The same start for both branches keeps their units in correspondence (see above).
        seeded_init(&a_vars, run.seed)?;
        copy_all(&a_vars, &b_vars)?;
        let stages = Stages::new(&run.arch, run.epochs, stage_epochs, run.peak_lr);
        Ok(DualIo { merge, stages, a_vars, a, b_vars, b, augment: StrongAugment::default() })
    }

    /// One step of the branch stage: branch A on the original images, B on distorted copies.
    fn branch_step(&self, run: &ClassifierRun, batch: &StepBatch, rng: &mut StdRng) -> Result<StepOutput> {
        let (ds, idx) = (&run.train_set, &batch.labeled);
        let plain = Augment::shift(0).apply(ds, idx, rng);
        let strong = self.augment.apply(ds, idx, rng);
        let to_x = |p: &[u8]| pixels_to_tensor(p, idx.len(), ds.height, ds.width, run.norm, &run.device);
        let out_a = run.forward_train(&self.a, &to_x(&plain)?)?;
        let out_b = run.forward_train(&self.b, &to_x(&strong)?)?;
        let y = labels_to_tensor(ds, idx, &run.device)?;
        let loss = (cross_entropy(&out_a.logits, &y)? + cross_entropy(&out_b.logits, &y)?)?;
        Ok(StepOutput { loss, hits: correct(&out_a.logits, &y)?, n: idx.len(), items: idx.len() })
    }
}

impl ClassifierMethod for DualIo {
    fn trainable(&self) -> Vec<(String, VarMap)> {
        vec![(BRANCH_A.to_owned(), self.a_vars.clone()), (BRANCH_B.to_owned(), self.b_vars.clone())]
    }

    fn plan(&self, _run: &ClassifierRun, steps_per_epoch: usize) -> Plan {
        self.stages.plan(steps_per_epoch)
    }

    fn epoch_plan(&self, epoch: usize) -> EpochPlan {
        self.stages.epoch_plan(epoch)
    }

    /// Merges the branches into the student before the first fine-tuning epoch, and trains only
    /// the stage's variables of the student from then on.
    fn begin_epoch(
        &mut self,
        run: &ClassifierRun,
        epoch: usize,
        optimizer: &mut AdamW,
    ) -> Result<BTreeMap<String, f64>> {
        let mut extra = BTreeMap::new();
        let Phase::Finetune(stage) = self.stages.phase(epoch) else { return Ok(extra) };
        if epoch == self.stages.branch_epochs {
            merge(&self.a_vars, &self.b_vars, &run.vars, self.merge)?;
            let (_, merged) = evaluate(&run.net, &run.val_set, run.norm, &run.device)?;
            extra.insert("merged_val_accuracy".to_owned(), merged);
        }
        let prefixes = &self.stages.prefixes[stage];
        optimizer.set_trainable(|n| !n.starts_with("branch_") && in_stage(n, prefixes));
        Ok(extra)
    }

    fn step(&mut self, run: &ClassifierRun, epoch: usize, batch: &StepBatch, rng: &mut StdRng) -> Result<StepOutput> {
        if self.stages.phase(epoch) == Phase::Branches {
            return self.branch_step(run, batch, rng);
        }
        let forward = run.forward(batch, false, rng)?;
        let loss = cross_entropy(&forward.out.logits, &forward.labels)?;
        forward.output(loss)
    }

    /// Branch epochs report branch A, with branch B's measurements beside it.
    fn validate(&self, run: &ClassifierRun, epoch: usize) -> Result<Option<Validation>> {
        if self.stages.phase(epoch) != Phase::Branches {
            return Ok(None);
        }
        let (b_loss, b_accuracy) = evaluate(&self.b, &run.val_set, run.norm, &run.device)?;
        let (loss, accuracy) = evaluate(&self.a, &run.val_set, run.norm, &run.device)?;
        let extra = BTreeMap::from([
            ("branch_b_val_accuracy".to_owned(), b_accuracy),
            ("branch_b_val_loss".to_owned(), b_loss),
        ]);
        Ok(Some(Validation { loss, accuracy, extra }))
    }

    fn finish(&self, _run: &ClassifierRun, history: &[EpochRecord]) -> Result<Finish> {
        let report = report(history, self.merge, self.stages.prefixes.len());
        let mut metrics = BTreeMap::new();
        if let Some(d) = &report {
            metrics.insert("branch_a_val_accuracy".into(), d.branch_a_val_accuracy);
            metrics.insert("branch_b_val_accuracy".into(), d.branch_b_val_accuracy);
            metrics.insert("merged_val_accuracy".into(), d.merged_val_accuracy);
        }
        Ok(Finish { metrics, dual_io: report, ..Finish::default() })
    }
}

/// Dual-io's measurements, read back from the history so that a resumed run reports them too.
fn report(history: &[EpochRecord], merge: MergeRule, stages: usize) -> Option<DualIoReport> {
    let branches = history.iter().rev().find(|r| r.stage.as_deref() == Some("branches"))?;
    let merged = history.iter().find_map(|r| r.extra.get("merged_val_accuracy").copied())?;
    Some(DualIoReport {
        merge: merge.name().into(),
        branch_a_val_accuracy: branches.val_accuracy,
        branch_b_val_accuracy: branches.extra.get("branch_b_val_accuracy").copied().unwrap_or(0.0),
        merged_val_accuracy: merged,
        unfreeze_stages: stages,
    })
}

/// Copies every variable of `from` into the variable of the same name in `to`.
fn copy_all(from: &VarMap, to: &VarMap) -> Result<()> {
    let from = from.data().lock().expect("varmap lock poisoned. This is a bug.");
    let to = to.data().lock().expect("varmap lock poisoned. This is a bug.");
    for (name, var) in to.iter() {
        let src = from.get(name).expect("both maps hold one architecture. This is a bug.");
        var.set(src.as_tensor())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn stages_unfreeze_from_the_head_down() {
        let cfg = crate::arch::preset("student-shallow", 28, 10).unwrap();
        let stages = unfreeze_stages(&cfg);
        // student-shallow: conv, pool, conv, pool, conv, gap — three blocks with parameters.
        assert_eq!(stages.len(), 4);
        assert!(in_stage("head.weight", &stages[0]));
        assert!(!in_stage("layers.4.conv.weight", &stages[0]));
        assert!(in_stage("layers.4.conv_bn.bias", &stages[1]));
        assert!(!in_stage("layers.2.conv.weight", &stages[1]));
        assert!(in_stage("layers.0.conv.weight", &stages[3]));
        assert!(!in_stage("layers.1.conv.weight", &stages[3]));
        assert!((stage_lr(1.0, 0) - 0.5).abs() < 1e-12);
        assert!((stage_lr(1.0, 2) - 0.125).abs() < 1e-12);
    }

    #[test]
    fn plans_branches_then_unfreezing_stages() {
        let arch = crate::arch::preset("student", 8, 10).unwrap();
        let stages = Stages::new(&arch, 3, 2, 1e-3);
        let plan = stages.plan(10);
        // student on 8x8: conv, sep, pool, sep, gap — three blocks, so four stages of two epochs.
        assert_eq!(plan.epochs, 3 + 4 * 2);
        assert_eq!(plan.cosine_epochs, 3);
        assert_eq!(stages.phase(2), Phase::Branches);
        assert_eq!(stages.phase(3), Phase::Finetune(0));
        assert_eq!(stages.phase(4), Phase::Finetune(0));
        assert_eq!(stages.phase(5), Phase::Finetune(1));
        assert_eq!(stages.phase(10), Phase::Finetune(3));
        assert_eq!(stages.epoch_plan(2), EpochPlan { stage: Some("branches".into()), constant_lr: None });
        assert_eq!(stages.epoch_plan(3).stage.as_deref(), Some("head"));
        assert!((stages.epoch_plan(5).constant_lr.unwrap() - 1e-3 * 0.25).abs() < 1e-15);
        assert_eq!(stages.epoch_plan(7).stage.as_deref(), Some("unfreeze-2"));
    }

    #[test]
    fn merges_average_or_keep_branch_a() {
        let make = |v: f32| {
            let m = VarMap::new();
            m.get((2, 2), "w", candle_nn::Init::Const(f64::from(v)), DType::F32, &Device::Cpu).unwrap();
            m
        };
        let (a, b, into) = (make(1.0), make(3.0), make(0.0));
        let read =
            |m: &VarMap| m.data().lock().unwrap()["w"].as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        merge(&a, &b, &into, MergeRule::Average).unwrap();
        assert_eq!(read(&into), vec![2.0; 4]);
        merge(&a, &b, &into, MergeRule::A).unwrap();
        assert_eq!(read(&into), vec![1.0; 4]);
        let other = VarMap::new();
        other.get(1, "v", candle_nn::Init::Const(0.0), DType::F32, &Device::Cpu).unwrap();
        assert!(merge(&a, &b, &other, MergeRule::A).is_err());
        assert_eq!("average".parse::<MergeRule>().unwrap(), MergeRule::Average);
        assert!("concat".parse::<MergeRule>().is_err());
    }
}
