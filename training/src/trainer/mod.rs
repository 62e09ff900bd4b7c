//! The training loop shared by every model family.
//!
//! It owns what is the same whatever is trained: the epoch's seeded generator, AdamW with warm-up
//! and cosine decay, gradient clipping, the progress bar, an atomic checkpoint per epoch and
//! `--resume`, the history and its learning curve, export, the test measured on the exported
//! bundle, and the JSON summary. A [`Family`] supplies the data, the model and the loss of a batch;
//! this module names no family and no method.
//!
//! Everything a resumed run needs lives in one checkpoint: the family's trainable variables under
//! their prefixed names and its untrained state, next to the optimiser state and the history.

mod family;

use std::path::PathBuf;
use std::time::Instant;

use candle_core::DType;
use candle_nn::VarMap;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tandem_runtime::bundle::{serialize_varmap_as, write_bundle_files, WEIGHTS_FILE};

use crate::checkpoint::{self, CheckpointState};
use crate::optim::{cosine_lr, AdamW, AdamWConfig};
use crate::plot::learning_curve;
use crate::report::{EpochRecord, TrainSummary};
use crate::{Error, Result};

pub use family::{EpochPlan, Export, Family, Plan, StepOutput, TestReport, Validation};

/// The settings of a run that the loop itself uses, whatever the family.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopSettings {
    /// The run's name, for progress output.
    pub name: String,
    /// Seeds each epoch's generator (with the epoch).
    pub seed: u64,
    /// Optimiser settings; `lr` is the schedule's peak.
    pub optim: AdamWConfig,
    /// Warm-up length as a fraction of the cosine schedule's steps.
    pub warmup_fraction: f64,
    /// Rescale the gradients of a step whose global L2 norm exceeds this.
    pub clip_grad_norm: Option<f64>,
    /// The bundle directory to write.
    pub out: PathBuf,
    /// The checkpoint file.
    pub checkpoint: PathBuf,
    /// The JSON summary written after export.
    pub summary: PathBuf,
    /// The learning-curve PNG.
    pub curve: PathBuf,
    /// Continue from the checkpoint if one exists.
    pub resume: bool,
    /// Show a progress bar and a line per epoch.
    pub progress: bool,
    /// Identifies the settings that must not change across a resume.
    pub fingerprint: String,
    /// The dtype the exported weights are stored in (training always computes in F32).
    pub weights_dtype: DType,
}

impl LoopSettings {
    /// Settings whose checkpoint, summary and learning curve sit beside the bundle directory
    /// `out` (`<out>.checkpoint.safetensors`, `<out>.summary.json`, `<out>.curve.png`), with no
    /// warm-up, no clipping, seed 0, a fresh start, progress shown and F32 weights: a family's
    /// config sets the rest.
    pub fn beside(out: &std::path::Path, name: &str, optim: AdamWConfig, fingerprint: String) -> LoopSettings {
        LoopSettings {
            name: name.to_owned(),
            seed: 0,
            optim,
            warmup_fraction: 0.0,
            clip_grad_norm: None,
            out: out.to_path_buf(),
            checkpoint: sibling(out, "checkpoint.safetensors"),
            summary: sibling(out, "summary.json"),
            curve: sibling(out, "curve.png"),
            resume: false,
            progress: true,
            fingerprint,
            weights_dtype: DType::F32,
        }
    }
}

/// A file beside the bundle directory `out` that belongs to its run: `<out>.<suffix>`, e.g. the
/// checkpoint `runs/mnist.checkpoint.safetensors` of `runs/mnist`.
pub fn sibling(out: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    let name = out.file_name().map_or_else(|| "run".into(), |n| n.to_string_lossy().into_owned());
    out.with_file_name(format!("{name}.{suffix}"))
}

/// Trains `family` for its planned epochs, checkpointing after each, then exports the bundle and
/// measures it.
pub fn run<F: Family>(family: F, settings: &LoopSettings) -> Result<TrainSummary> {
    let mut trainer = Trainer::new(family, settings)?;
    trainer.start_or_resume()?;
    for epoch in trainer.state.epochs_done..trainer.plan.epochs {
        trainer.epoch(epoch)?;
    }
    trainer.export()
}

/// The floor of the cosine decay, as a fraction of the peak learning rate.
const COSINE_FLOOR: f64 = 0.01;

/// A run in progress.
struct Trainer<'a, F: Family> {
    family: F,
    settings: &'a LoopSettings,
    plan: Plan,
    /// Steps the warm-up plus cosine schedule spans, and its warm-up.
    cosine_steps: usize,
    warmup: usize,
    /// Everything checkpointed: the trainable variables and the family's state.
    ckpt_vars: VarMap,
    optimizer: AdamW,
    state: CheckpointState,
}

/// Adds every variable of `from` to `into` under `prefix` (sharing storage, not copying).
fn insert_all(into: &VarMap, from: &VarMap, prefix: &str) {
    let from = from.data().lock().expect("varmap lock poisoned. This is a bug.");
    let mut into = into.data().lock().expect("varmap lock poisoned. This is a bug.");
    for (name, var) in from.iter() {
        into.insert(format!("{prefix}{name}"), var.clone());
    }
}

impl<'a, F: Family> Trainer<'a, F> {
    fn new(family: F, settings: &'a LoopSettings) -> Result<Trainer<'a, F>> {
        let opt_vars = VarMap::new();
        for (prefix, vars) in family.trainable() {
            insert_all(&opt_vars, &vars, &prefix);
        }
        let optimizer = AdamW::new(&opt_vars, settings.optim)?;
        let ckpt_vars = VarMap::new();
        insert_all(&ckpt_vars, &opt_vars, "");
        {
            let mut data = ckpt_vars.data().lock().expect("varmap lock poisoned. This is a bug.");
            for (name, var) in family.state() {
                data.insert(name, var);
            }
        }
        let plan = family.plan();
        let cosine_steps = plan.steps_per_epoch * plan.cosine_epochs;
        let warmup = ((cosine_steps as f64) * settings.warmup_fraction).round() as usize;
        let state = CheckpointState {
            epochs_done: 0,
            steps: 0,
            fingerprint: settings.fingerprint.clone(),
            history: Vec::new(),
            train_seconds: 0.0,
        };
        Ok(Trainer { family, settings, plan, cosine_steps, warmup, ckpt_vars, optimizer, state })
    }

    fn start_or_resume(&mut self) -> Result<()> {
        let path = &self.settings.checkpoint;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        if !(self.settings.resume && path.exists()) {
            return Ok(());
        }
        let restored = checkpoint::restore(path, &self.ckpt_vars, &mut self.optimizer)?;
        if restored.fingerprint != self.state.fingerprint {
            return Err(Error::InvalidArgument(format!(
                "{} was written by a run with other settings (fingerprint {}, this run {}); remove it or drop --resume",
                path.display(),
                restored.fingerprint,
                self.state.fingerprint
            )));
        }
        self.family.restored()?;
        tracing::info!(epochs_done = restored.epochs_done, "resuming from {}", path.display());
        self.state = restored;
        Ok(())
    }

    /// The learning rate of the step after `steps` steps, in an epoch that runs `epoch`.
    fn lr(&self, epoch: &EpochPlan, steps: usize) -> f64 {
        let peak = self.settings.optim.lr;
        let into_schedule = steps.saturating_sub(self.plan.cosine_from * self.plan.steps_per_epoch);
        epoch
            .constant_lr
            .unwrap_or_else(|| cosine_lr(into_schedule, self.cosine_steps, self.warmup, peak, COSINE_FLOOR))
    }

    fn progress_bar(&self, epoch: usize, steps: usize) -> ProgressBar {
        if !self.settings.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(steps as u64);
        let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
            .expect("template is valid. This is a bug.")
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(format!("{} epoch {}/{}", self.settings.name, epoch + 1, self.plan.epochs));
        bar
    }

    fn epoch(&mut self, epoch: usize) -> Result<()> {
        let epoch_plan = self.family.epoch_plan(epoch);
        let mut extra = self.family.begin_epoch(epoch, &mut self.optimizer)?;
        let started = Instant::now();
        let batches = self.family.batches(epoch);
        let mut rng = StdRng::seed_from_u64(self.settings.seed.wrapping_mul(31).wrapping_add(epoch as u64));
        let bar = self.progress_bar(epoch, batches.len());
        let (mut loss_sum, mut seen, mut hits, mut items) = (0.0, 0usize, 0usize, 0usize);
        let mut lr = 0.0;
        for batch in &batches {
            lr = self.lr(&epoch_plan, self.state.steps);
            let step = self.family.step(epoch, batch, &mut rng)?;
            let mut grads = step.loss.backward()?;
            if let Some(max_norm) = self.settings.clip_grad_norm {
                self.optimizer.clip_grad_norm(&mut grads, max_norm)?;
            }
            self.optimizer.step(&grads, lr)?;
            self.family.after_step()?;
            self.state.steps += 1;
            loss_sum += f64::from(step.loss.to_scalar::<f32>()?) * step.n as f64;
            hits += step.hits;
            seen += step.n;
            items += step.items;
            bar.inc(1);
            let rate = items as f64 / started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "loss {:.4} acc {:.4} {rate:.0} {}/s",
                loss_sum / seen.max(1) as f64,
                hits as f64 / seen.max(1) as f64,
                F::ITEM
            ));
        }
        let elapsed = started.elapsed().as_secs_f64();
        let val = self.family.validate(epoch)?;
        extra.extend(val.extra);
        bar.finish_and_clear();
        let record = EpochRecord {
            epoch: epoch + 1,
            train_loss: loss_sum / seen.max(1) as f64,
            train_accuracy: hits as f64 / seen.max(1) as f64,
            val_loss: val.loss,
            val_accuracy: val.accuracy,
            images_per_second: items as f64 / elapsed.max(1e-9),
            lr,
            stage: epoch_plan.stage,
            extra,
        };
        if self.settings.progress {
            self.print_epoch(&record, elapsed);
        }
        self.state.history.push(record);
        self.state.epochs_done = epoch + 1;
        self.state.train_seconds += elapsed;
        self.family.save_state()?;
        checkpoint::save(&self.settings.checkpoint, &self.ckpt_vars, &self.optimizer, &self.state)
    }

    fn print_epoch(&self, record: &EpochRecord, elapsed: f64) {
        let stage = record.stage.as_ref().map_or(String::new(), |s| format!(" [{s}]"));
        let accuracies: String = record
            .extra
            .iter()
            .filter(|(name, _)| name.ends_with("accuracy"))
            .map(|(name, value)| format!(" {name} {value:.4}"))
            .collect();
        eprintln!(
            "{} epoch {}/{}{stage}: loss {:.4} acc {:.4} | val loss {:.4} acc {:.4}{accuracies} | {:.0} {}/s, {elapsed:.1}s",
            self.settings.name,
            record.epoch,
            self.plan.epochs,
            record.train_loss,
            record.train_accuracy,
            record.val_loss,
            record.val_accuracy,
            record.images_per_second,
            F::ITEM,
        );
    }

    fn export(self) -> Result<TrainSummary> {
        let settings = self.settings;
        let history = self.state.history;
        let Export { mut manifest, vars, params, val_accuracy, head_mixture, dual_io, files } =
            self.family.export(&history)?;
        let weights = serialize_varmap_as(&vars, settings.weights_dtype)?;
        let mut listed: Vec<(&str, &[u8])> = vec![(WEIGHTS_FILE, &weights)];
        listed.extend(files.iter().map(|(path, bytes)| (path.as_str(), bytes.as_slice())));
        let metrics = &mut manifest.metrics;
        metrics.insert("train_seconds".into(), self.state.train_seconds);
        metrics.insert("epochs".into(), self.state.epochs_done as f64);
        write_bundle_files(&settings.out, &manifest, &listed)?;
        // Measure the test split on the exported bundle itself, through the serving path.
        let test = self.family.test(&settings.out)?;
        manifest.metrics.insert("test_accuracy".into(), test.accuracy);
        manifest.metrics.insert("test_n".into(), test.n as f64);
        for (name, value) in &test.extra {
            manifest.metrics.insert(format!("test_{name}"), *value);
        }
        let bundle_id = write_bundle_files(&settings.out, &manifest, &listed)?;
        let model = format!("{}@{}", manifest.name, manifest.version);
        let method = manifest.provenance.recipe.clone();
        learning_curve(&history, &format!("{model} ({method})"), &settings.curve)?;
        let summary = TrainSummary {
            bundle_dir: settings.out.display().to_string(),
            bundle_id,
            model,
            method,
            dataset: manifest.provenance.dataset.clone(),
            params,
            val_accuracy,
            test_accuracy: test.accuracy,
            test_n: test.n,
            train_seconds: self.state.train_seconds,
            history,
            hyperparameters: manifest.provenance.hyperparameters.clone(),
            head_mixture,
            dual_io,
            curve: Some(settings.curve.display().to_string()),
        };
        let bytes = serde_json::to_vec_pretty(&summary).expect("summaries serialise. This is a bug.");
        tandem_runtime::fs::atomic_write(&settings.summary, &bytes).map_err(|e| Error::io(&settings.summary, e))?;
        Ok(summary)
    }
}

#[cfg(test)]
mod tests;
