//! What a classifier method works with: the run's data, student and teacher ([`ClassifierRun`]),
//! and the trait each method implements ([`ClassifierMethod`]).
//!
//! The classifier family owns one `ClassifierRun` and one boxed method and forwards the shared
//! loop's calls to the method, so each method keeps its loss and its state in its own module.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use rand::rngs::StdRng;
use tandem_runtime::bundle::InferenceSpec;
use tandem_runtime::models::cnn::{Cnn, CnnConfig, CnnOutput};

use crate::data::{labels_to_tensor, pixels_to_tensor, Augment, Dataset, Normalization};
use crate::losses::correct;
use crate::optim::AdamW;
use crate::report::{DualIoReport, EpochRecord, HeadMixtureReport};
use crate::sampling::StepBatch;
use crate::trainer::{EpochPlan, Plan, StepOutput, Validation};
use crate::Result;

use super::Teacher;

/// The parts of a classifier run that methods read: data, student, teacher and settings.
pub struct ClassifierRun {
    /// The training split (after `--train-limit`).
    pub train_set: Dataset,
    /// The validation split.
    pub val_set: Dataset,
    /// Input normalisation, fitted on the training split.
    pub norm: Normalization,
    /// Where the networks live.
    pub device: Device,
    /// The frozen teacher, for methods that distil.
    pub teacher: Option<Teacher>,
    /// The student's architecture, auxiliary head included when the method trains one.
    pub arch: CnnConfig,
    /// The student's variables, which the bundle exports.
    pub vars: VarMap,
    /// The student.
    pub net: Cnn,
    /// The ordinary augmentation.
    pub augment: Augment,
    /// Ghost batch norm's chunk size.
    pub ghost_batch: Option<usize>,
    /// The run's seed.
    pub seed: u64,
    /// The epochs asked for (for dual-io: of the branch stage).
    pub epochs: usize,
    /// The peak learning rate.
    pub peak_lr: f64,
}

/// One classifier method: its loss, and whatever state it keeps beside the student.
///
/// The defaults describe a method that trains the student alone on the plain schedule and
/// serves its main head; a method overrides what it changes.
pub trait ClassifierMethod {
    /// Networks trained beside the student, each with its checkpoint prefix.
    fn trainable(&self) -> Vec<(String, VarMap)> {
        Vec::new()
    }

    /// State checkpointed beside the weights but not trained, by name.
    fn state(&self) -> Vec<(String, Var)> {
        Vec::new()
    }

    /// The run's epochs and the span of its cosine schedule.
    fn plan(&self, run: &ClassifierRun, steps_per_epoch: usize) -> Plan {
        Plan { epochs: run.epochs, steps_per_epoch, cosine_epochs: run.epochs, cosine_from: 0 }
    }

    /// What epoch `epoch` runs, when the method has stages.
    fn epoch_plan(&self, _epoch: usize) -> EpochPlan {
        EpochPlan::default()
    }

    /// Reads [`ClassifierMethod::state`] back after a resume.
    fn restored(&mut self) -> Result<()> {
        Ok(())
    }

    /// Prepares an epoch; returns measurements to record for it.
    fn begin_epoch(
        &mut self,
        _run: &ClassifierRun,
        _epoch: usize,
        _optimizer: &mut AdamW,
    ) -> Result<BTreeMap<String, f64>> {
        Ok(BTreeMap::new())
    }

    /// The loss of one batch.
    fn step(&mut self, run: &ClassifierRun, epoch: usize, batch: &StepBatch, rng: &mut StdRng) -> Result<StepOutput>;

    /// The epoch's validation, when it is not the student's (see [`ClassifierRun::validate`]).
    fn validate(&self, _run: &ClassifierRun, _epoch: usize) -> Result<Option<Validation>> {
        Ok(None)
    }

    /// Writes [`ClassifierMethod::state`] before a checkpoint.
    fn save_state(&mut self, _run: &ClassifierRun) -> Result<()> {
        Ok(())
    }

    /// How the exported student is served and what the method reports of it.
    fn finish(&self, _run: &ClassifierRun, _history: &[EpochRecord]) -> Result<Finish> {
        Ok(Finish::default())
    }
}

/// A method's contribution to the exported bundle and the run's summary.
#[derive(Debug, Clone, Default)]
pub struct Finish {
    /// How the bundle combines the heads.
    pub inference: InferenceSpec,
    /// The validation accuracy of the model as served, when it is not the last epoch's.
    pub val_accuracy: Option<f64>,
    /// Measurements for the manifest.
    pub metrics: BTreeMap<String, f64>,
    /// A chosen head mixture.
    pub head_mixture: Option<HeadMixtureReport>,
    /// Dual-io's report.
    pub dual_io: Option<DualIoReport>,
}

/// A training-mode forward pass of the student over one batch, with the teacher's view of it.
pub struct Forward {
    /// The student's outputs, labeled images first.
    pub out: CnnOutput,
    /// The teacher's logits for the same images, when the run has a teacher.
    pub teacher: Option<Tensor>,
    /// Labels of the labeled images.
    pub labels: Tensor,
    /// Labeled images: the first rows of `out`.
    pub n_labeled: usize,
    /// Unlabeled images after them.
    pub n_unlabeled: usize,
}

impl Forward {
    /// The step's report: `loss`, and the main head's accuracy on the labeled images.
    pub fn output(&self, loss: Tensor) -> Result<StepOutput> {
        let main = self.out.logits.narrow(0, 0, self.n_labeled)?;
        let hits = correct(&main, &self.labels)?;
        Ok(StepOutput { loss, hits, n: self.n_labeled, items: self.n_labeled + self.n_unlabeled })
    }
}

impl ClassifierRun {
    /// Augments the batch's labeled images (then its unlabeled ones, if `with_unlabeled`) with
    /// `rng`, and runs the student in training mode and the teacher on them.
    pub fn forward(&self, batch: &StepBatch, with_unlabeled: bool, rng: &mut StdRng) -> Result<Forward> {
        let ds = &self.train_set;
        let unlabeled: &[usize] = if with_unlabeled { &batch.unlabeled } else { &[] };
        let idx: Vec<usize> = batch.labeled.iter().chain(unlabeled).copied().collect();
        let pixels = self.augment.apply(ds, &idx, rng);
        let x = pixels_to_tensor(&pixels, idx.len(), ds.height, ds.width, self.norm, &self.device)?;
        let out = forward_train(&self.net, &x, self.ghost_batch)?;
        let teacher = self.teacher.as_ref().map(|t| t.logits(&pixels, idx.len())).transpose()?;
        let labels = labels_to_tensor(ds, &batch.labeled, &self.device)?;
        Ok(Forward { out, teacher, labels, n_labeled: batch.labeled.len(), n_unlabeled: unlabeled.len() })
    }

    /// A training-mode forward pass of `net` (the student or a network like it).
    pub fn forward_train(&self, net: &Cnn, x: &Tensor) -> Result<CnnOutput> {
        forward_train(net, x, self.ghost_batch)
    }

    /// The student's validation: cross-entropy and accuracy of the main head, and the auxiliary
    /// head's accuracy as `val_aux_accuracy` when there is one.
    pub fn validate(&self) -> Result<Validation> {
        let heads = crate::eval::evaluate_heads(&self.net, &self.val_set, self.norm, &self.device)?;
        let mut extra = BTreeMap::new();
        if let Some(aux) = heads.aux_accuracy {
            extra.insert("val_aux_accuracy".to_owned(), aux);
        }
        Ok(Validation { loss: heads.loss, accuracy: heads.accuracy, extra })
    }
}

fn forward_train(net: &Cnn, x: &Tensor, ghost_batch: Option<usize>) -> Result<CnnOutput> {
    Ok(match ghost_batch {
        Some(g) => net.forward_ghost(x, g)?,
        None => net.forward_t(x, true)?,
    })
}
