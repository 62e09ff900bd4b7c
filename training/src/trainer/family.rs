//! What a model family supplies to the shared loop: its data, its model and the loss of a batch.
//!
//! The loop owns everything that is the same for every family (order, schedule, optimiser,
//! checkpoints, progress, export and test); a family owns what differs between an image
//! classifier, a text embedder, a diffusion UNet or an image tokenizer. A family's methods
//! (distillation recipes and the like) live behind the family, so the loop never names one.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Tensor, Var};
use candle_nn::VarMap;
use rand::rngs::StdRng;
use tandem_runtime::bundle::Manifest;

use crate::optim::AdamW;
use crate::report::{DualIoReport, EpochRecord, HeadMixtureReport};
use crate::Result;

/// A model family as the training loop sees it, for one run.
///
/// The loop calls, in order: [`Family::trainable`] and [`Family::state`] once, to build the
/// optimiser and the checkpoint; [`Family::restored`] after a resume; then per epoch
/// [`Family::epoch_plan`], [`Family::begin_epoch`], [`Family::batches`], [`Family::step`] per batch,
/// [`Family::validate`] and [`Family::save_state`] before the checkpoint; and finally
/// [`Family::export`] and [`Family::test`].
pub trait Family {
    /// What one optimiser step trains on: indices of images, pairs of texts, noised latents, ...
    type Batch;

    /// What an item of a batch is called in progress output (`img`, `text`, ...).
    const ITEM: &'static str;

    /// Variable maps the optimiser trains, each under a name prefix (`""` for the model itself).
    /// They are also checkpointed, under the same prefixed names.
    fn trainable(&self) -> Vec<(String, VarMap)>;

    /// State checkpointed beside the weights but never trained, by name (e.g. a method's table of
    /// past predictions). [`Family::save_state`] writes it into these variables.
    fn state(&self) -> Vec<(String, Var)> {
        Vec::new()
    }

    /// How many epochs the run has and how the learning rate is scheduled over them.
    fn plan(&self) -> Plan;

    /// What epoch `epoch` (0-based) runs: its stage name and any constant learning rate.
    fn epoch_plan(&self, _epoch: usize) -> EpochPlan {
        EpochPlan::default()
    }

    /// Called after a resume restored [`Family::trainable`] and [`Family::state`].
    fn restored(&mut self) -> Result<()> {
        Ok(())
    }

    /// Prepares epoch `epoch` (e.g. changes which variables `optimizer` trains) and returns
    /// measurements to record for it.
    fn begin_epoch(&mut self, _epoch: usize, _optimizer: &mut AdamW) -> Result<BTreeMap<String, f64>> {
        Ok(BTreeMap::new())
    }

    /// The batches of epoch `epoch`, in order: a pure function of the run's seed and the epoch, so
    /// that a resumed run visits what the interrupted one would have.
    fn batches(&self, epoch: usize) -> Vec<Self::Batch>;

    /// The loss of one batch, with `rng` the epoch's generator (for augmentation and the like).
    fn step(&mut self, epoch: usize, batch: &Self::Batch, rng: &mut StdRng) -> Result<StepOutput>;

    /// Called after each optimiser step, e.g. to update a moving average of the weights.
    fn after_step(&mut self) -> Result<()> {
        Ok(())
    }

    /// Validation after epoch `epoch`.
    fn validate(&mut self, epoch: usize) -> Result<Validation>;

    /// Writes the [`Family::state`] variables before a checkpoint.
    fn save_state(&mut self) -> Result<()> {
        Ok(())
    }

    /// The bundle to write after the last epoch, with what the summary reports of it.
    fn export(&self, history: &[EpochRecord]) -> Result<Export>;

    /// Measures the exported bundle in `dir` on the test split, through the serving path.
    fn test(&self, dir: &Path) -> Result<TestReport>;
}

/// The length of a run and the shape of its learning-rate schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Epochs in all.
    pub epochs: usize,
    /// Optimiser steps per epoch.
    pub steps_per_epoch: usize,
    /// Epochs the warm-up plus cosine schedule spans; epochs after them need a constant rate
    /// ([`EpochPlan::constant_lr`]).
    pub cosine_epochs: usize,
    /// The epoch the schedule starts at; a family whose first stage trains something else on a
    /// constant rate (a teacher, say) starts the schedule of its main stage after it.
    pub cosine_from: usize,
}

/// What one epoch runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EpochPlan {
    /// The stage of a multi-stage method, recorded in the epoch's history.
    pub stage: Option<String>,
    /// A learning rate that replaces the cosine schedule for the whole epoch.
    pub constant_lr: Option<f64>,
}

/// One step's loss and what it scored.
pub struct StepOutput {
    /// The scalar to back-propagate.
    pub loss: Tensor,
    /// Correct predictions among the `n` scored items.
    pub hits: usize,
    /// Items the loss and accuracy average over.
    pub n: usize,
    /// Items run through the model, for the throughput.
    pub items: usize,
}

/// Validation measurements of one epoch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Validation {
    /// Mean loss.
    pub loss: f64,
    /// Accuracy (or the family's headline score).
    pub accuracy: f64,
    /// Further measurements, recorded in the epoch's `extra`.
    pub extra: BTreeMap<String, f64>,
}

/// The bundle a run exports, and what its summary reports beyond the manifest.
pub struct Export {
    /// The manifest; the loop adds `train_seconds`, `epochs` and the test metrics.
    pub manifest: Manifest,
    /// The weights to write.
    pub vars: VarMap,
    /// Trainable parameters.
    pub params: usize,
    /// Validation accuracy of the model as served.
    pub val_accuracy: f64,
    /// A dual-head method's chosen head mixture.
    pub head_mixture: Option<HeadMixtureReport>,
    /// Dual-io's branch and merge measurements.
    pub dual_io: Option<DualIoReport>,
    /// Files the bundle holds besides the weights (a text model's tokenizer), by path.
    pub files: Vec<(String, Vec<u8>)>,
}

/// The test measurement of an exported bundle.
#[derive(Debug, Clone, PartialEq)]
pub struct TestReport {
    /// Accuracy (or the family's headline score).
    pub accuracy: f64,
    /// Items measured.
    pub n: usize,
    /// Further figures, recorded in the bundle's metrics as `test_<name>`.
    pub extra: BTreeMap<String, f64>,
}
