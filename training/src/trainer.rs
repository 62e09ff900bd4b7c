//! The training loop shared by every method: data, schedule, checkpoints, export.
//!
//! A method only decides the loss of a batch (see [`crate::methods`]); everything else — epochs,
//! augmentation, AdamW with warm-up and cosine decay, validation, atomic checkpoints, resume, and the
//! exported bundle — is here, once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::SeedableRng;
use sha2::{Digest, Sha256};
use tandem_runtime::bundle::{
    now_rfc3339, write_bundle, Architecture, InferenceSpec, InputSpec, Manifest, ModelKind, Provenance, SCHEMA_VERSION,
};
use tandem_runtime::image::RESIZE_FILTER;
use tandem_runtime::models::cnn::{Cnn, CnnConfig};

use crate::checkpoint::{self, CheckpointState};
use crate::data::{
    self, epoch_order, labels_to_tensor, pixels_to_tensor, Augment, Dataset, DatasetName, Normalization, Split,
};
use crate::eval::evaluate_bundle;
use crate::init::seeded_init;
use crate::losses::{correct, cross_entropy};
use crate::methods::{Method, Teacher};
use crate::optim::{cosine_lr, AdamW, AdamWConfig};
use crate::report::{EpochRecord, TrainSummary};
use crate::{Error, Result};

/// Everything that defines a run.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Bundle name.
    pub name: String,
    /// Bundle version.
    pub version: String,
    /// Dataset to train on.
    pub dataset: DatasetName,
    /// Where fetched datasets live.
    pub data_dir: PathBuf,
    /// The network.
    pub arch: CnnConfig,
    /// The loss recipe.
    pub method: Method,
    /// Teacher bundle, for distillation methods.
    pub teacher: Option<PathBuf>,
    /// Passes over the training split.
    pub epochs: usize,
    /// Images per optimiser step.
    pub batch_size: usize,
    /// Optimiser settings.
    pub optim: AdamWConfig,
    /// Warm-up length as a fraction of all steps.
    pub warmup_fraction: f64,
    /// Seed for initialisation, shuffling and augmentation.
    pub seed: u64,
    /// Random-shift augmentation.
    pub augment: Augment,
    /// Only use the first N training images (quick runs and tests).
    pub train_limit: Option<usize>,
    /// The bundle directory to write.
    pub out: PathBuf,
    /// Continue from the checkpoint if one exists.
    pub resume: bool,
    /// Show progress bars.
    pub progress: bool,
}

impl TrainConfig {
    /// The checkpoint file that belongs to this run: a sibling of the bundle directory.
    pub fn checkpoint_path(&self) -> PathBuf {
        let name = self.out.file_name().map_or_else(|| "run".into(), |n| n.to_string_lossy().into_owned());
        self.out.with_file_name(format!("{name}.checkpoint.safetensors"))
    }

    fn hyperparameters(&self) -> BTreeMap<String, serde_json::Value> {
        let mut h = BTreeMap::new();
        h.insert("epochs".into(), self.epochs.into());
        h.insert("batch_size".into(), self.batch_size.into());
        h.insert("lr".into(), self.optim.lr.into());
        h.insert("weight_decay".into(), self.optim.weight_decay.into());
        h.insert("warmup_fraction".into(), self.warmup_fraction.into());
        h.insert("seed".into(), self.seed.into());
        h.insert("augment_max_shift".into(), self.augment.max_shift.into());
        h.insert("optimizer".into(), "adamw-cosine".into());
        if let Some(n) = self.train_limit {
            h.insert("train_limit".into(), n.into());
        }
        for (k, v) in self.method.hyperparameters() {
            h.insert(k, v);
        }
        h
    }

    /// Identifies the settings that must not change across a resume.
    fn fingerprint(&self) -> String {
        let arch = serde_json::to_string(&self.arch).expect("configs serialise. This is a bug.");
        let text =
            format!("{arch}|{:?}|{}|{:?}|{:?}", self.hyperparameters(), self.dataset, self.teacher, self.method.name());
        Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Trains, checkpoints every epoch, exports the bundle and measures it.
pub fn train(cfg: &TrainConfig) -> Result<TrainSummary> {
    if cfg.epochs == 0 || cfg.batch_size == 0 {
        return Err(Error::InvalidArgument("epochs and batch size must be positive".into()));
    }
    let device = tandem_runtime::device::default_device();
    let mut train_set = data::load(cfg.dataset, Split::Train, &cfg.data_dir)?;
    if let Some(n) = cfg.train_limit {
        let n = n.min(train_set.len());
        train_set = train_set.subset(&(0..n).collect::<Vec<_>>());
    }
    let val_set = data::load(cfg.dataset, Split::Val, &cfg.data_dir)?;
    check_fits(&cfg.arch, &train_set)?;
    let norm = Normalization::fit(&train_set);
    let teacher = match (&cfg.teacher, cfg.method.needs_teacher()) {
        (Some(path), true) => Some(Teacher::load(path, &train_set, &device)?),
        (None, true) => return Err(Error::InvalidArgument(format!("method {} needs --teacher", cfg.method.name()))),
        (_, false) => None,
    };

    let varmap = VarMap::new();
    let net = Cnn::new(&cfg.arch, VarBuilder::from_varmap(&varmap, DType::F32, &device))?;
    seeded_init(&varmap, cfg.seed)?;
    let mut optimizer = AdamW::new(&varmap, cfg.optim)?;

    let ckpt_path = cfg.checkpoint_path();
    if let Some(parent) = ckpt_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let fingerprint = cfg.fingerprint();
    let mut state = CheckpointState {
        epochs_done: 0,
        steps: 0,
        fingerprint: fingerprint.clone(),
        history: Vec::new(),
        train_seconds: 0.0,
    };
    if cfg.resume && ckpt_path.exists() {
        let restored = checkpoint::restore(&ckpt_path, &varmap, &mut optimizer)?;
        if restored.fingerprint != fingerprint {
            return Err(Error::InvalidArgument(format!(
                "{} was written by a run with other settings; remove it or drop --resume",
                ckpt_path.display()
            )));
        }
        tracing::info!(epochs_done = restored.epochs_done, "resuming from {}", ckpt_path.display());
        state = restored;
    }

    let steps_per_epoch = train_set.len().div_ceil(cfg.batch_size);
    let total_steps = steps_per_epoch * cfg.epochs;
    let warmup = ((total_steps as f64) * cfg.warmup_fraction).round() as usize;
    for epoch in state.epochs_done..cfg.epochs {
        let started = Instant::now();
        let order = epoch_order(train_set.len(), cfg.seed, epoch);
        let mut rng = StdRng::seed_from_u64(cfg.seed.wrapping_mul(31).wrapping_add(epoch as u64));
        let bar = progress_bar(cfg, epoch, steps_per_epoch);
        let (mut loss_sum, mut seen, mut hits) = (0.0, 0usize, 0usize);
        let mut lr = 0.0;
        for idx in order.chunks(cfg.batch_size) {
            let pixels = cfg.augment.apply(&train_set, idx, &mut rng);
            let x = pixels_to_tensor(&pixels, idx.len(), train_set.height, train_set.width, norm, &device)?;
            let y = labels_to_tensor(&train_set, idx, &device)?;
            let out = net.forward_t(&x, true)?;
            let teacher_logits = teacher.as_ref().map(|t| t.logits(&pixels, idx.len())).transpose()?;
            let loss = cfg.method.loss(&out, &y, teacher_logits.as_ref())?;
            lr = cosine_lr(state.steps, total_steps, warmup, cfg.optim.lr, 0.01);
            optimizer.step(&loss.backward()?, lr)?;
            state.steps += 1;
            loss_sum += f64::from(loss.to_scalar::<f32>()?) * idx.len() as f64;
            hits += correct(&out.logits, &y)?;
            seen += idx.len();
            bar.inc(1);
            let rate = seen as f64 / started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "loss {:.4} acc {:.4} {:.0} img/s",
                loss_sum / seen as f64,
                hits as f64 / seen as f64,
                rate
            ));
        }
        let elapsed = started.elapsed().as_secs_f64();
        let (val_loss, val_accuracy) = evaluate(&net, &val_set, norm, &device)?;
        bar.finish_and_clear();
        let record = EpochRecord {
            epoch: epoch + 1,
            train_loss: loss_sum / seen.max(1) as f64,
            train_accuracy: hits as f64 / seen.max(1) as f64,
            val_loss,
            val_accuracy,
            images_per_second: seen as f64 / elapsed.max(1e-9),
            lr,
        };
        if cfg.progress {
            eprintln!(
                "{} epoch {}/{}: loss {:.4} acc {:.4} | val loss {:.4} acc {:.4} | {:.0} img/s, {:.1}s",
                cfg.name,
                record.epoch,
                cfg.epochs,
                record.train_loss,
                record.train_accuracy,
                val_loss,
                val_accuracy,
                record.images_per_second,
                elapsed
            );
        }
        state.history.push(record);
        state.epochs_done = epoch + 1;
        state.train_seconds += elapsed;
        checkpoint::save(&ckpt_path, &varmap, &optimizer, &state)?;
    }

    export(cfg, &varmap, norm, teacher.as_ref(), &state, &train_set)
}

fn check_fits(arch: &CnnConfig, ds: &Dataset) -> Result<()> {
    if arch.input_shape != [1, ds.height, ds.width] || arch.num_classes != ds.num_classes() {
        return Err(Error::InvalidArgument(format!(
            "the architecture takes {:?} with {} classes; the dataset has [1, {}, {}] with {}",
            arch.input_shape,
            arch.num_classes,
            ds.height,
            ds.width,
            ds.num_classes()
        )));
    }
    Ok(())
}

fn progress_bar(cfg: &TrainConfig, epoch: usize, steps: usize) -> ProgressBar {
    if !cfg.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(steps as u64);
    let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
        .expect("template is valid. This is a bug.")
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(format!("{} epoch {}/{}", cfg.name, epoch + 1, cfg.epochs));
    bar
}

/// Mean cross-entropy and accuracy of the training graph in eval mode.
pub fn evaluate(net: &Cnn, ds: &Dataset, norm: Normalization, device: &Device) -> Result<(f64, f64)> {
    let (mut loss_sum, mut hits) = (0.0, 0);
    let all: Vec<usize> = (0..ds.len()).collect();
    for idx in all.chunks(512) {
        let x = data::images_to_tensor(ds, idx, norm, device)?;
        let y = labels_to_tensor(ds, idx, device)?;
        let logits = net.forward_t(&x, false)?.logits;
        loss_sum += f64::from(cross_entropy(&logits, &y)?.to_scalar::<f32>()?) * idx.len() as f64;
        hits += correct(&logits, &y)?;
    }
    let n = ds.len().max(1) as f64;
    Ok((loss_sum / n, hits as f64 / n))
}

fn export(
    cfg: &TrainConfig,
    varmap: &VarMap,
    norm: Normalization,
    teacher: Option<&Teacher>,
    state: &CheckpointState,
    train_set: &Dataset,
) -> Result<TrainSummary> {
    let val_accuracy = state.history.last().map_or(0.0, |r| r.val_accuracy);
    let params = cfg.arch.num_params().map_err(Error::InvalidArgument)?;
    let mut manifest = Manifest {
        schema_version: SCHEMA_VERSION,
        name: cfg.name.clone(),
        version: cfg.version.clone(),
        kind: ModelKind::Classifier,
        architecture: Architecture::Cnn(cfg.arch.clone()),
        input: InputSpec {
            shape: cfg.arch.input_shape,
            dtype: "f32".into(),
            pixel_range: [0.0, 255.0],
            mean: norm.mean,
            std: norm.std,
            resize_filter: RESIZE_FILTER.into(),
        },
        labels: train_set.classes.clone(),
        inference: InferenceSpec::MainHead,
        provenance: Provenance {
            dataset: cfg.dataset.to_string(),
            dataset_sha256: train_set.source_sha256.clone(),
            recipe: cfg.method.name().into(),
            hyperparameters: cfg.hyperparameters(),
            teacher: teacher.map(|t| t.bundle_id.clone()),
        },
        metrics: BTreeMap::from([
            ("params".into(), params as f64),
            ("val_accuracy".into(), val_accuracy),
            ("train_seconds".into(), state.train_seconds),
            ("epochs".into(), state.epochs_done as f64),
        ]),
        created_at: now_rfc3339(),
    };
    write_bundle(&cfg.out, &manifest, varmap)?;
    // Measure the test split on the exported bundle itself, through the serving path.
    let test_set = data::load(cfg.dataset, Split::Test, &cfg.data_dir)?;
    let report = evaluate_bundle(&cfg.out, &test_set)?;
    manifest.metrics.insert("test_accuracy".into(), report.accuracy);
    manifest.metrics.insert("test_n".into(), report.n as f64);
    let bundle_id = write_bundle(&cfg.out, &manifest, varmap)?;
    let summary = TrainSummary {
        bundle_dir: cfg.out.display().to_string(),
        bundle_id,
        model: format!("{}@{}", cfg.name, cfg.version),
        method: cfg.method.name().into(),
        dataset: cfg.dataset.to_string(),
        params,
        val_accuracy,
        test_accuracy: report.accuracy,
        test_n: report.n,
        train_seconds: state.train_seconds,
        history: state.history.clone(),
    };
    let summary_path = cfg
        .out
        .with_file_name(format!("{}.summary.json", cfg.out.file_name().map_or("run".into(), |n| n.to_string_lossy())));
    let bytes = serde_json::to_vec_pretty(&summary).expect("summaries serialise. This is a bug.");
    tandem_runtime::fs::atomic_write(&summary_path, &bytes).map_err(|e| Error::io(&summary_path, e))?;
    Ok(summary)
}

/// Normalised teacher input for a batch of raw pixels.
pub(crate) fn teacher_input(
    pixels: &[u8],
    b: usize,
    shape: [usize; 3],
    input: &InputSpec,
    device: &Device,
) -> Result<Tensor> {
    let norm = Normalization { mean: input.mean, std: input.std };
    Ok(pixels_to_tensor(pixels, b, shape[1], shape[2], norm, device)?)
}
