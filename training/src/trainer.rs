//! The training loop shared by every method: data, schedule, checkpoints, export.
//!
//! A method decides the loss of a step (see [`crate::methods`]); everything else — epochs or RS2
//! rounds, augmentation, ghost batch norm, AdamW with warm-up and cosine decay, validation, atomic
//! checkpoints, resume, and the exported bundle with its summary and learning curve — is here, once.
//!
//! Everything a resumed run needs lives in one checkpoint: the student's tensors under their own
//! names, dual-io's branches under `branch_a.` and `branch_b.`, and PS-KD's prediction table as
//! `pskd.predictions`, next to the optimiser state.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::ops::softmax;
use candle_nn::{VarBuilder, VarMap};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::SeedableRng;
use sha2::{Digest, Sha256};
use tandem_runtime::bundle::{
    now_rfc3339, write_bundle, ClassifierSpec, FamilySpec, InferenceSpec, InputSpec, Manifest, Provenance,
    SCHEMA_VERSION,
};
use tandem_runtime::image::RESIZE_FILTER;
use tandem_runtime::models::cnn::{Cnn, CnnConfig, CnnOutput};

use crate::augment::StrongAugment;
use crate::checkpoint::{self, CheckpointState};
use crate::data::{self, labels_to_tensor, pixels_to_tensor, Augment, Dataset, DatasetName, Normalization, Split};
use crate::eval::evaluate_bundle;
use crate::init::seeded_init;
use crate::losses::{correct, cross_entropy, kd_kl, soft_cross_entropy};
use crate::methods::dho::{labeled_split, search_mixture};
use crate::methods::dual_io::{self, in_stage, stage_lr, unfreeze_stages};
use crate::methods::pskd::{alpha_at, PredictionTable};
use crate::methods::{MergeRule, Method, Teacher};
use crate::optim::{cosine_lr, AdamW, AdamWConfig};
use crate::plot::learning_curve;
use crate::report::{DualIoReport, EpochRecord, HeadMixtureReport, TrainSummary};
use crate::sampling::{stream_window, Rounds};
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
    /// The network. Its `aux_head` is decided by the method (see [`TrainConfig::student_arch`]).
    pub arch: CnnConfig,
    /// The loss recipe.
    pub method: Method,
    /// Teacher bundle, for distillation methods.
    pub teacher: Option<PathBuf>,
    /// Passes over the training split (for dual-io: of the branch stage; the unfreezing stages
    /// follow).
    pub epochs: usize,
    /// Images per optimiser step (DHO: labeled images, plus as many unlabeled ones).
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
    /// RS2 without replacement: each epoch ("round") trains on a fresh `round(R · N)` subset
    /// taken in order from seeded permutations; `None` trains on everything every epoch.
    pub subset_fraction: Option<f64>,
    /// Ghost batch norm: training-mode batch statistics over chunks of this many images.
    pub ghost_batch: Option<usize>,
    /// Semi-supervised runs of `supervised`, `kd` and `dhkd`: only this fraction of the training
    /// split keeps its labels, chosen per class by the seed (DHO carries its own fraction).
    pub labeled_fraction: Option<f64>,
}

impl TrainConfig {
    /// The checkpoint file that belongs to this run: a sibling of the bundle directory.
    pub fn checkpoint_path(&self) -> PathBuf {
        self.sibling("checkpoint.safetensors")
    }

    /// The JSON summary written next to the bundle.
    pub fn summary_path(&self) -> PathBuf {
        self.sibling("summary.json")
    }

    /// The learning-curve PNG written next to the bundle.
    pub fn curve_path(&self) -> PathBuf {
        self.sibling("curve.png")
    }

    fn sibling(&self, suffix: &str) -> PathBuf {
        let name = self.out.file_name().map_or_else(|| "run".into(), |n| n.to_string_lossy().into_owned());
        self.out.with_file_name(format!("{name}.{suffix}"))
    }

    /// The fraction of the training split that keeps its labels, if not all of it.
    pub fn labeled_fraction(&self) -> Option<f64> {
        match self.method {
            Method::Dho { labeled_fraction, .. } => Some(labeled_fraction),
            _ => self.labeled_fraction,
        }
    }

    /// The architecture actually trained and exported: `arch` with the auxiliary head exactly
    /// when the method trains one.
    pub fn student_arch(&self) -> CnnConfig {
        let mut arch = self.arch.clone();
        arch.aux_head = self.method.uses_aux_head();
        arch
    }

    /// Every setting of the run that shapes the weights, as recorded in provenance.
    pub fn hyperparameters(&self) -> BTreeMap<String, serde_json::Value> {
        let mut h = BTreeMap::new();
        h.insert("epochs".into(), self.epochs.into());
        h.insert("batch_size".into(), self.batch_size.into());
        h.insert("lr".into(), self.optim.lr.into());
        h.insert("weight_decay".into(), self.optim.weight_decay.into());
        h.insert("warmup_fraction".into(), self.warmup_fraction.into());
        h.insert("seed".into(), self.seed.into());
        h.insert("augment_max_shift".into(), self.augment.max_shift.into());
        if self.augment.max_rotation_deg > 0.0 {
            h.insert("augment_max_rotation_deg".into(), self.augment.max_rotation_deg.into());
        }
        if self.augment.flip {
            h.insert("augment_flip".into(), true.into());
        }
        h.insert("optimizer".into(), "adamw-cosine".into());
        if let Some(n) = self.train_limit {
            h.insert("train_limit".into(), n.into());
        }
        if let Some(r) = self.subset_fraction {
            h.insert("subset_fraction".into(), r.into());
            h.insert("subset_sampling".into(), "rs2-without-replacement".into());
        }
        if let Some(g) = self.ghost_batch {
            h.insert("ghost_batch".into(), g.into());
        }
        if let Some(f) = self.labeled_fraction {
            h.insert("labeled_fraction".into(), f.into());
        }
        for (k, v) in self.method.hyperparameters() {
            h.insert(k, v);
        }
        h
    }

    /// Identifies the settings that must not change across a resume.
    fn fingerprint(&self) -> String {
        let arch = serde_json::to_string(&self.student_arch()).expect("configs serialise. This is a bug.");
        let text =
            format!("{arch}|{:?}|{}|{:?}|{:?}", self.hyperparameters(), self.dataset, self.teacher, self.method.name());
        Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    }

    fn validate(&self) -> Result<()> {
        if self.epochs == 0 || self.batch_size == 0 {
            return Err(Error::InvalidArgument("epochs and batch size must be positive".into()));
        }
        let rot = self.augment.max_rotation_deg;
        if !(rot.is_finite() && (0.0..=180.0).contains(&rot)) {
            return Err(Error::InvalidArgument(format!(
                "the augmentation rotation must be 0..=180 degrees, found {rot}"
            )));
        }
        if let Some(f) = self.labeled_fraction {
            if matches!(self.method, Method::Dho { .. }) || !self.method.accepts_labeled_fraction() {
                return Err(Error::InvalidArgument(format!(
                    "method {} does not take a separate labeled fraction",
                    self.method.name()
                )));
            }
            if !(f > 0.0 && f <= 1.0) {
                return Err(Error::InvalidArgument(format!("the labeled fraction must be in (0, 1], found {f}")));
            }
        }
        if self.ghost_batch == Some(0) {
            return Err(Error::InvalidArgument("the ghost batch size must be positive".into()));
        }
        if !(self.optim.lr.is_finite() && self.optim.lr > 0.0) {
            return Err(Error::InvalidArgument(format!("the learning rate must be positive, found {}", self.optim.lr)));
        }
        self.method.validate()
    }
}

/// Trains, checkpoints every epoch, exports the bundle and measures it.
pub fn train(cfg: &TrainConfig) -> Result<TrainSummary> {
    cfg.validate()?;
    let device = tandem_runtime::device::default_device();
    let mut train_set = data::load(cfg.dataset, Split::Train, &cfg.data_dir)?;
    if let Some(n) = cfg.train_limit {
        let n = n.min(train_set.len());
        train_set = train_set.subset(&(0..n).collect::<Vec<_>>());
    }
    if train_set.is_empty() {
        return Err(Error::InvalidArgument("the training split is empty".into()));
    }
    let val_set = data::load(cfg.dataset, Split::Val, &cfg.data_dir)?;
    check_fits(&cfg.arch, &train_set)?;
    let norm = Normalization::fit(&train_set);
    let teacher = match (&cfg.teacher, cfg.method.needs_teacher()) {
        (Some(path), true) => Some(Teacher::load(path, &train_set, &device)?),
        (None, true) => return Err(Error::InvalidArgument(format!("method {} needs --teacher", cfg.method.name()))),
        (_, false) => None,
    };
    let mut run = Run::new(cfg, &train_set, &val_set, norm, teacher.as_ref(), device)?;
    run.start_or_resume()?;
    for epoch in run.state.epochs_done..run.plan.epochs {
        run.epoch(epoch)?;
    }
    run.export()
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

/// Which part of a method an epoch runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// One network, the method's own loss.
    Single,
    /// Dual-io's two branches.
    Branches,
    /// Dual-io's fine-tuning of the merged network, at an unfreezing stage.
    Finetune(usize),
}

/// How many epochs there are, what each runs, and at which learning rate.
#[derive(Debug, Clone)]
struct Plan {
    epochs: usize,
    /// Dual-io's branch epochs; 0 for other methods.
    branch_epochs: usize,
    /// Dual-io's unfreezing stages (trainable name prefixes).
    stages: Vec<Vec<String>>,
    stage_epochs: usize,
    peak_lr: f64,
    warmup: usize,
    /// Steps the warm-up plus cosine schedule spans.
    cosine_steps: usize,
}

impl Plan {
    fn new(cfg: &TrainConfig, arch: &CnnConfig, steps_per_epoch: usize) -> Plan {
        let (branch_epochs, stages, stage_epochs) = match cfg.method {
            Method::DualIo { stage_epochs, .. } => (cfg.epochs, unfreeze_stages(arch), stage_epochs),
            _ => (0, Vec::new(), 0),
        };
        let epochs = if branch_epochs > 0 { branch_epochs + stages.len() * stage_epochs } else { cfg.epochs };
        // Dual-io's cosine covers the branch stage; the fine-tuning stages have constant rates.
        let cosine_steps = steps_per_epoch * if branch_epochs > 0 { branch_epochs } else { epochs };
        let warmup = ((cosine_steps as f64) * cfg.warmup_fraction).round() as usize;
        Plan { epochs, branch_epochs, stages, stage_epochs, peak_lr: cfg.optim.lr, warmup, cosine_steps }
    }

    fn phase(&self, epoch: usize) -> Phase {
        if self.branch_epochs == 0 {
            return Phase::Single;
        }
        if epoch < self.branch_epochs {
            return Phase::Branches;
        }
        let stage = (epoch - self.branch_epochs) / self.stage_epochs.max(1);
        Phase::Finetune(stage.min(self.stages.len().saturating_sub(1)))
    }

    fn lr(&self, phase: Phase, step: usize) -> f64 {
        match phase {
            Phase::Finetune(stage) => stage_lr(self.peak_lr, stage),
            _ => cosine_lr(step, self.cosine_steps, self.warmup, self.peak_lr, 0.01),
        }
    }

    fn stage_name(&self, phase: Phase) -> Option<String> {
        match phase {
            Phase::Single => None,
            Phase::Branches => Some("branches".into()),
            Phase::Finetune(0) => Some("head".into()),
            Phase::Finetune(s) => Some(format!("unfreeze-{s}")),
        }
    }
}

/// The images of one optimiser step, as indices into the training split.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StepBatch {
    labeled: Vec<usize>,
    unlabeled: Vec<usize>,
}

/// Which images each epoch visits. One pool drives the epoch (RS2 rounds over it); DHO's other
/// pool is cycled alongside, a batch of the same size per step.
#[derive(Debug, Clone)]
struct Sampler {
    driving: Vec<usize>,
    other: Vec<usize>,
    driving_is_labeled: bool,
    rounds: Rounds,
    other_seed: u64,
    batch_size: usize,
}

/// Salt of DHO's cycled pool, so it is not shuffled in step with the driving pool.
const OTHER_POOL_SALT: u64 = 0x7374_7265_616d_2121;

impl Sampler {
    fn new(cfg: &TrainConfig, train_set: &Dataset) -> Result<Sampler> {
        let (labeled, unlabeled) = match cfg.labeled_fraction() {
            Some(fraction) => labeled_split(&train_set.labels, train_set.num_classes(), fraction, cfg.seed),
            None => ((0..train_set.len()).collect(), Vec::new()),
        };
        let driving_is_labeled = labeled.len() >= unlabeled.len();
        let (driving, other) = if driving_is_labeled { (labeled, unlabeled) } else { (unlabeled, labeled) };
        let rounds = Rounds::new(driving.len(), cfg.subset_fraction, cfg.seed)?;
        Ok(Sampler {
            driving,
            other,
            driving_is_labeled,
            rounds,
            other_seed: cfg.seed ^ OTHER_POOL_SALT,
            batch_size: cfg.batch_size,
        })
    }

    fn steps_per_epoch(&self) -> usize {
        self.rounds.size().div_ceil(self.batch_size)
    }

    fn batches(&self, epoch: usize) -> Vec<StepBatch> {
        let size = self.rounds.size();
        let round: Vec<usize> = self.rounds.round(epoch).into_iter().map(|p| self.driving[p]).collect();
        let others: Vec<usize> = stream_window(self.other.len(), self.other_seed, epoch.saturating_mul(size), size)
            .into_iter()
            .map(|p| self.other[p])
            .collect();
        round
            .chunks(self.batch_size)
            .enumerate()
            .map(|(i, main)| {
                let start = (i * self.batch_size).min(others.len());
                let end = (start + main.len()).min(others.len());
                let other = others[start..end].to_vec();
                if self.driving_is_labeled {
                    StepBatch { labeled: main.to_vec(), unlabeled: other }
                } else {
                    StepBatch { labeled: other, unlabeled: main.to_vec() }
                }
            })
            .collect()
    }
}

/// Dual-io's two branches, with their own variables.
struct Branches {
    a_vars: VarMap,
    a: Cnn,
    b_vars: VarMap,
    b: Cnn,
    augment: StrongAugment,
    merge: MergeRule,
}

/// One step's loss and what it scored on the labeled images.
struct StepOut {
    loss: Tensor,
    hits: usize,
    /// Labeled images, the denominator of the loss and accuracy averages.
    n: usize,
    /// Images run through the network, for the throughput.
    images: usize,
}

/// Prefix of dual-io's branch variables in the optimiser and the checkpoint.
const BRANCH_A: &str = "branch_a.";
const BRANCH_B: &str = "branch_b.";
/// Name of PS-KD's prediction table in the checkpoint.
const PSKD_TABLE: &str = "pskd.predictions";

/// A run in progress.
struct Run<'a> {
    cfg: &'a TrainConfig,
    train_set: &'a Dataset,
    val_set: &'a Dataset,
    norm: Normalization,
    teacher: Option<&'a Teacher>,
    device: Device,
    arch: CnnConfig,
    student_vars: VarMap,
    student: Cnn,
    branches: Option<Branches>,
    pskd: Option<(PredictionTable, Var)>,
    /// Everything checkpointed: student, branches, method state.
    ckpt_vars: VarMap,
    optimizer: AdamW,
    sampler: Sampler,
    plan: Plan,
    state: CheckpointState,
}

fn build(arch: &CnnConfig, device: &Device) -> Result<(VarMap, Cnn)> {
    let vars = VarMap::new();
    let net = Cnn::new(arch, VarBuilder::from_varmap(&vars, DType::F32, device))?;
    Ok((vars, net))
}

/// Adds every variable of `from` to `into` under `prefix` (sharing storage, not copying).
fn insert_all(into: &VarMap, from: &VarMap, prefix: &str) {
    let from = from.data().lock().expect("varmap lock poisoned. This is a bug.");
    let mut into = into.data().lock().expect("varmap lock poisoned. This is a bug.");
    for (name, var) in from.iter() {
        into.insert(format!("{prefix}{name}"), var.clone());
    }
}

fn copy_all(from: &VarMap, to: &VarMap) -> Result<()> {
    let from = from.data().lock().expect("varmap lock poisoned. This is a bug.");
    let to = to.data().lock().expect("varmap lock poisoned. This is a bug.");
    for (name, var) in to.iter() {
        let src = from.get(name).expect("both maps hold one architecture. This is a bug.");
        var.set(src.as_tensor())?;
    }
    Ok(())
}

fn forward_train(net: &Cnn, x: &Tensor, ghost_batch: Option<usize>) -> Result<CnnOutput> {
    Ok(match ghost_batch {
        Some(g) => net.forward_ghost(x, g)?,
        None => net.forward_t(x, true)?,
    })
}

impl<'a> Run<'a> {
    fn new(
        cfg: &'a TrainConfig,
        train_set: &'a Dataset,
        val_set: &'a Dataset,
        norm: Normalization,
        teacher: Option<&'a Teacher>,
        device: Device,
    ) -> Result<Run<'a>> {
        let arch = cfg.student_arch();
        let (student_vars, student) = build(&arch, &device)?;
        seeded_init(&student_vars, cfg.seed)?;
        let opt_vars = VarMap::new();
        insert_all(&opt_vars, &student_vars, "");
        let branches = match cfg.method {
            Method::DualIo { merge, .. } => {
                let (a_vars, a) = build(&arch, &device)?;
                let (b_vars, b) = build(&arch, &device)?;
                // The same start for both branches keeps their units in correspondence (see
                // `methods::dual_io`).
                seeded_init(&a_vars, cfg.seed)?;
                copy_all(&a_vars, &b_vars)?;
                insert_all(&opt_vars, &a_vars, BRANCH_A);
                insert_all(&opt_vars, &b_vars, BRANCH_B);
                Some(Branches { a_vars, a, b_vars, b, augment: StrongAugment::default(), merge })
            }
            _ => None,
        };
        let optimizer = AdamW::new(&opt_vars, cfg.optim)?;
        let ckpt_vars = VarMap::new();
        insert_all(&ckpt_vars, &opt_vars, "");
        let pskd = match cfg.method {
            Method::Pskd { .. } => {
                let table = PredictionTable::one_hot(&train_set.labels, train_set.num_classes())?;
                let shape = (train_set.len(), table.classes());
                let var = Var::from_tensor(&Tensor::from_slice(table.as_slice(), shape, &device)?)?;
                ckpt_vars
                    .data()
                    .lock()
                    .expect("varmap lock poisoned. This is a bug.")
                    .insert(PSKD_TABLE.into(), var.clone());
                Some((table, var))
            }
            _ => None,
        };
        let sampler = Sampler::new(cfg, train_set)?;
        let plan = Plan::new(cfg, &arch, sampler.steps_per_epoch());
        let state = CheckpointState {
            epochs_done: 0,
            steps: 0,
            fingerprint: cfg.fingerprint(),
            history: Vec::new(),
            train_seconds: 0.0,
        };
        Ok(Run {
            cfg,
            train_set,
            val_set,
            norm,
            teacher,
            device,
            arch,
            student_vars,
            student,
            branches,
            pskd,
            ckpt_vars,
            optimizer,
            sampler,
            plan,
            state,
        })
    }

    fn start_or_resume(&mut self) -> Result<()> {
        let path = self.cfg.checkpoint_path();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        if !(self.cfg.resume && path.exists()) {
            return Ok(());
        }
        let restored = checkpoint::restore(&path, &self.ckpt_vars, &mut self.optimizer)?;
        if restored.fingerprint != self.state.fingerprint {
            return Err(Error::InvalidArgument(format!(
                "{} was written by a run with other settings; remove it or drop --resume",
                path.display()
            )));
        }
        if let Some((table, var)) = &mut self.pskd {
            table.load(var.as_tensor().flatten_all()?.to_vec1::<f32>()?)?;
        }
        tracing::info!(epochs_done = restored.epochs_done, "resuming from {}", path.display());
        self.state = restored;
        Ok(())
    }

    fn progress_bar(&self, epoch: usize, steps: usize) -> ProgressBar {
        if !self.cfg.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(steps as u64);
        let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
            .expect("template is valid. This is a bug.")
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(format!("{} epoch {}/{}", self.cfg.name, epoch + 1, self.plan.epochs));
        bar
    }

    fn epoch(&mut self, epoch: usize) -> Result<()> {
        let phase = self.plan.phase(epoch);
        let mut extra = BTreeMap::new();
        if let Phase::Finetune(stage) = phase {
            if epoch == self.plan.branch_epochs {
                self.merge()?;
                let (_, merged) = evaluate(&self.student, self.val_set, self.norm, &self.device)?;
                extra.insert("merged_val_accuracy".to_owned(), merged);
            }
            let prefixes = &self.plan.stages[stage];
            self.optimizer.set_trainable(|n| !n.starts_with("branch_") && in_stage(n, prefixes));
        }
        let started = Instant::now();
        let batches = self.sampler.batches(epoch);
        let mut rng = StdRng::seed_from_u64(self.cfg.seed.wrapping_mul(31).wrapping_add(epoch as u64));
        let bar = self.progress_bar(epoch, batches.len());
        let (mut loss_sum, mut seen, mut hits, mut images) = (0.0, 0usize, 0usize, 0usize);
        let mut lr = 0.0;
        for batch in &batches {
            lr = self.plan.lr(phase, self.state.steps);
            let step = match phase {
                Phase::Branches => self.branch_step(batch, &mut rng)?,
                _ => self.single_step(epoch, batch, &mut rng)?,
            };
            self.optimizer.step(&step.loss.backward()?, lr)?;
            self.state.steps += 1;
            loss_sum += f64::from(step.loss.to_scalar::<f32>()?) * step.n as f64;
            hits += step.hits;
            seen += step.n;
            images += step.images;
            bar.inc(1);
            let rate = images as f64 / started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "loss {:.4} acc {:.4} {:.0} img/s",
                loss_sum / seen.max(1) as f64,
                hits as f64 / seen.max(1) as f64,
                rate
            ));
        }
        let elapsed = started.elapsed().as_secs_f64();
        let (val_loss, val_accuracy) = match (&self.branches, phase) {
            (Some(br), Phase::Branches) => {
                let (b_loss, b_acc) = evaluate(&br.b, self.val_set, self.norm, &self.device)?;
                extra.insert("branch_b_val_accuracy".to_owned(), b_acc);
                extra.insert("branch_b_val_loss".to_owned(), b_loss);
                evaluate(&br.a, self.val_set, self.norm, &self.device)?
            }
            _ => {
                let heads = evaluate_heads(&self.student, self.val_set, self.norm, &self.device)?;
                if let Some(aux) = heads.aux_accuracy {
                    extra.insert("val_aux_accuracy".to_owned(), aux);
                }
                (heads.loss, heads.accuracy)
            }
        };
        bar.finish_and_clear();
        let record = EpochRecord {
            epoch: epoch + 1,
            train_loss: loss_sum / seen.max(1) as f64,
            train_accuracy: hits as f64 / seen.max(1) as f64,
            val_loss,
            val_accuracy,
            images_per_second: images as f64 / elapsed.max(1e-9),
            lr,
            stage: self.plan.stage_name(phase),
            extra,
        };
        if self.cfg.progress {
            let stage = record.stage.as_ref().map_or(String::new(), |s| format!(" [{s}]"));
            let aux = record.extra.get("val_aux_accuracy").map_or(String::new(), |a| format!(" aux acc {a:.4}"));
            eprintln!(
                "{} epoch {}/{}{stage}: loss {:.4} acc {:.4} | val loss {:.4} acc {:.4}{aux} | {:.0} img/s, {:.1}s",
                self.cfg.name,
                record.epoch,
                self.plan.epochs,
                record.train_loss,
                record.train_accuracy,
                val_loss,
                val_accuracy,
                record.images_per_second,
                elapsed
            );
        }
        self.state.history.push(record);
        self.state.epochs_done = epoch + 1;
        self.state.train_seconds += elapsed;
        if let Some((table, var)) = &self.pskd {
            var.set(&Tensor::from_slice(table.as_slice(), var.shape(), &self.device)?)?;
        }
        checkpoint::save(&self.cfg.checkpoint_path(), &self.ckpt_vars, &self.optimizer, &self.state)
    }

    fn merge(&self) -> Result<()> {
        let br = self.branches.as_ref().expect("only dual-io plans fine-tuning epochs. This is a bug.");
        dual_io::merge(&br.a_vars, &br.b_vars, &self.student_vars, br.merge)
    }

    /// One step of a single-network method (and of dual-io's fine-tuning).
    fn single_step(&mut self, epoch: usize, batch: &StepBatch, rng: &mut StdRng) -> Result<StepOut> {
        let (ds, cfg) = (self.train_set, self.cfg);
        // Without a teacher, unlabeled images teach nothing: supervised runs on a label budget
        // take the same labeled batches as the distillation runs, and no more.
        let unlabeled: &[usize] = if cfg.method.needs_teacher() { &batch.unlabeled } else { &[] };
        let idx: Vec<usize> = batch.labeled.iter().chain(unlabeled).copied().collect();
        let pixels = cfg.augment.apply(ds, &idx, rng);
        let x = pixels_to_tensor(&pixels, idx.len(), ds.height, ds.width, self.norm, &self.device)?;
        let out = forward_train(&self.student, &x, cfg.ghost_batch)?;
        let teacher_logits = self.teacher.map(|t| t.logits(&pixels, idx.len())).transpose()?;
        let (n_l, n_u) = (batch.labeled.len(), unlabeled.len());
        let y = labels_to_tensor(ds, &batch.labeled, &self.device)?;
        let main_l = out.logits.narrow(0, 0, n_l)?;
        let loss = match &cfg.method {
            Method::Pskd { alpha } => {
                let (table, _) = self.pskd.as_mut().expect("pskd runs build the table. This is a bug.");
                let a = alpha_at(*alpha, epoch, self.plan.epochs);
                let targets = table.targets(&batch.labeled, &ds.labels, a);
                let targets = Tensor::from_vec(targets, (n_l, table.classes()), &self.device)?;
                let loss = soft_cross_entropy(&out.logits, &targets)?;
                let probs = softmax(&out.logits.detach(), D::Minus1)?.flatten_all()?.to_vec1::<f32>()?;
                table.update(&batch.labeled, &probs);
                loss
            }
            Method::Dho { temperature, weights, .. } => {
                let aux = out.aux_logits.as_ref().expect("dho builds the aux head. This is a bug.");
                let t = teacher_logits.as_ref().expect("dho loads a teacher. This is a bug.");
                let ce = cross_entropy(&main_l, &y)?;
                let mut kd = kd_kl(&aux.narrow(0, 0, n_l)?, &t.narrow(0, 0, n_l)?, *temperature)?;
                if n_u > 0 {
                    kd = (kd + kd_kl(&aux.narrow(0, n_l, n_u)?, &t.narrow(0, n_l, n_u)?, *temperature)?)?;
                }
                ((ce * weights.ce())? + (kd * weights.kd())?)?
            }
            Method::DualIo { .. } => cross_entropy(&out.logits, &y)?,
            method => method.loss(&out, &y, teacher_logits.as_ref())?,
        };
        let hits = correct(&main_l, &y)?;
        Ok(StepOut { loss, hits, n: n_l, images: idx.len() })
    }

    /// One step of dual-io's branch stage: branch A on the original images, B on distorted copies.
    fn branch_step(&self, batch: &StepBatch, rng: &mut StdRng) -> Result<StepOut> {
        let br = self.branches.as_ref().expect("dual-io runs build branches. This is a bug.");
        let (ds, idx) = (self.train_set, &batch.labeled);
        let plain = Augment::shift(0).apply(ds, idx, rng);
        let strong = br.augment.apply(ds, idx, rng);
        let to_x = |p: &[u8]| pixels_to_tensor(p, idx.len(), ds.height, ds.width, self.norm, &self.device);
        let out_a = forward_train(&br.a, &to_x(&plain)?, self.cfg.ghost_batch)?;
        let out_b = forward_train(&br.b, &to_x(&strong)?, self.cfg.ghost_batch)?;
        let y = labels_to_tensor(ds, idx, &self.device)?;
        let loss = (cross_entropy(&out_a.logits, &y)? + cross_entropy(&out_b.logits, &y)?)?;
        Ok(StepOut { loss, hits: correct(&out_a.logits, &y)?, n: idx.len(), images: idx.len() })
    }

    fn export(self) -> Result<TrainSummary> {
        let cfg = self.cfg;
        let params = self.arch.num_params().map_err(Error::InvalidArgument)?;
        let head_mixture = match cfg.method {
            Method::Dho { .. } => Some(choose_mixture(&self.student, self.val_set, self.norm, &self.device)?),
            _ => None,
        };
        let inference = head_mixture.as_ref().map_or(InferenceSpec::MainHead, |m| InferenceSpec::HeadMixture {
            alpha: m.alpha as f32,
            beta: m.beta as f32,
        });
        let last_val = self.state.history.last().map_or(0.0, |r| r.val_accuracy);
        let val_accuracy = head_mixture.as_ref().map_or(last_val, |m| m.val_accuracy);
        let dual_io = dual_io_report(cfg, &self.state.history, self.plan.stages.len());
        let mut metrics = BTreeMap::from([
            ("params".into(), params as f64),
            ("val_accuracy".into(), val_accuracy),
            ("train_seconds".into(), self.state.train_seconds),
            ("epochs".into(), self.state.epochs_done as f64),
        ]);
        if let Some(m) = &head_mixture {
            metrics.insert("val_accuracy_main_head".into(), m.main_head_val_accuracy);
            metrics.insert("val_accuracy_aux_head".into(), m.aux_head_val_accuracy);
        }
        if let Some(d) = &dual_io {
            metrics.insert("branch_a_val_accuracy".into(), d.branch_a_val_accuracy);
            metrics.insert("branch_b_val_accuracy".into(), d.branch_b_val_accuracy);
            metrics.insert("merged_val_accuracy".into(), d.merged_val_accuracy);
        }
        let mut manifest = Manifest {
            schema_version: SCHEMA_VERSION,
            name: cfg.name.clone(),
            version: cfg.version.clone(),
            family: FamilySpec::Classifier(ClassifierSpec {
                architecture: self.arch.clone(),
                input: InputSpec {
                    shape: self.arch.input_shape,
                    dtype: "f32".into(),
                    pixel_range: [0.0, 255.0],
                    mean: self.norm.mean,
                    std: self.norm.std,
                    resize_filter: RESIZE_FILTER.into(),
                },
                labels: self.train_set.classes.clone(),
                inference,
            }),
            files: Vec::new(),
            provenance: Provenance {
                dataset: cfg.dataset.to_string(),
                dataset_sha256: self.train_set.source_sha256.clone(),
                recipe: cfg.method.name().into(),
                hyperparameters: cfg.hyperparameters(),
                teacher: self.teacher.map(|t| t.bundle_id.clone()),
            },
            metrics,
            created_at: now_rfc3339(),
        };
        write_bundle(&cfg.out, &manifest, &self.student_vars)?;
        // Measure the test split on the exported bundle itself, through the serving path.
        let test_set = data::load(cfg.dataset, Split::Test, &cfg.data_dir)?;
        let report = evaluate_bundle(&cfg.out, &test_set)?;
        manifest.metrics.insert("test_accuracy".into(), report.accuracy);
        manifest.metrics.insert("test_n".into(), report.n as f64);
        let bundle_id = write_bundle(&cfg.out, &manifest, &self.student_vars)?;
        let curve = cfg.curve_path();
        learning_curve(&self.state.history, &format!("{}@{} ({})", cfg.name, cfg.version, cfg.method.name()), &curve)?;
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
            train_seconds: self.state.train_seconds,
            history: self.state.history,
            hyperparameters: cfg.hyperparameters(),
            head_mixture,
            dual_io,
            curve: Some(curve.display().to_string()),
        };
        let summary_path = cfg.summary_path();
        let bytes = serde_json::to_vec_pretty(&summary).expect("summaries serialise. This is a bug.");
        tandem_runtime::fs::atomic_write(&summary_path, &bytes).map_err(|e| Error::io(&summary_path, e))?;
        Ok(summary)
    }
}

/// Dual-io's measurements, read back from the history so that a resumed run reports them too.
fn dual_io_report(cfg: &TrainConfig, history: &[EpochRecord], stages: usize) -> Option<DualIoReport> {
    let Method::DualIo { merge, .. } = cfg.method else { return None };
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

/// Mean cross-entropy and accuracy of the training graph in eval mode.
pub fn evaluate(net: &Cnn, ds: &Dataset, norm: Normalization, device: &Device) -> Result<(f64, f64)> {
    let heads = evaluate_heads(net, ds, norm, device)?;
    Ok((heads.loss, heads.accuracy))
}

/// Validation measurements of both heads.
struct HeadsEval {
    loss: f64,
    accuracy: f64,
    aux_accuracy: Option<f64>,
}

fn evaluate_heads(net: &Cnn, ds: &Dataset, norm: Normalization, device: &Device) -> Result<HeadsEval> {
    let (mut loss_sum, mut hits, mut aux_hits) = (0.0, 0, 0);
    let all: Vec<usize> = (0..ds.len()).collect();
    for idx in all.chunks(512) {
        let x = data::images_to_tensor(ds, idx, norm, device)?;
        let y = labels_to_tensor(ds, idx, device)?;
        let out = net.forward_t(&x, false)?;
        loss_sum += f64::from(cross_entropy(&out.logits, &y)?.to_scalar::<f32>()?) * idx.len() as f64;
        hits += correct(&out.logits, &y)?;
        if let Some(aux) = &out.aux_logits {
            aux_hits += correct(aux, &y)?;
        }
    }
    let n = ds.len().max(1) as f64;
    Ok(HeadsEval {
        loss: loss_sum / n,
        accuracy: hits as f64 / n,
        aux_accuracy: net.config().aux_head.then_some(aux_hits as f64 / n),
    })
}

/// DHO's serving mixture, searched on the validation split with the network in eval mode.
fn choose_mixture(net: &Cnn, ds: &Dataset, norm: Normalization, device: &Device) -> Result<HeadMixtureReport> {
    let (mut main, mut aux) = (Vec::new(), Vec::new());
    let all: Vec<usize> = (0..ds.len()).collect();
    for idx in all.chunks(512) {
        let x = data::images_to_tensor(ds, idx, norm, device)?;
        let out = net.forward_t(&x, false)?;
        let aux_logits = out.aux_logits.as_ref().expect("dho builds the aux head. This is a bug.");
        main.extend(out.logits.flatten_all()?.to_vec1::<f32>()?);
        aux.extend(aux_logits.flatten_all()?.to_vec1::<f32>()?);
    }
    search_mixture(&main, &aux, &ds.labels, ds.num_classes())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(method: Method) -> TrainConfig {
        TrainConfig {
            name: "t".into(),
            version: "1".into(),
            dataset: DatasetName::Digits,
            data_dir: PathBuf::from("unused"),
            arch: crate::arch::preset("tiny", 8, 10).unwrap(),
            method,
            teacher: None,
            epochs: 3,
            batch_size: 4,
            optim: AdamWConfig::default(),
            warmup_fraction: 0.1,
            seed: 7,
            augment: Augment::shift(1),
            train_limit: None,
            out: PathBuf::from("runs/x"),
            resume: false,
            progress: false,
            subset_fraction: None,
            ghost_batch: None,
            labeled_fraction: None,
        }
    }

    fn digits(n: usize) -> Dataset {
        let ds = data::load(DatasetName::Digits, Split::Train, std::path::Path::new("")).unwrap();
        ds.subset(&(0..n).collect::<Vec<_>>())
    }

    #[test]
    fn plain_epochs_visit_every_image_once_in_the_old_order() {
        let cfg = config(Method::Supervised);
        let ds = digits(10);
        let sampler = Sampler::new(&cfg, &ds).unwrap();
        assert_eq!(sampler.steps_per_epoch(), 3);
        for epoch in 0..2 {
            let batches = sampler.batches(epoch);
            let flat: Vec<usize> = batches.iter().flat_map(|b| b.labeled.clone()).collect();
            assert_eq!(flat, data::epoch_order(10, 7, epoch));
            assert!(batches.iter().all(|b| b.unlabeled.is_empty()));
        }
    }

    #[test]
    fn dho_steps_pair_labeled_and_unlabeled_batches_of_one_size() {
        let cfg = config(Method::Dho { temperature: 2.0, labeled_fraction: 0.2, weights: Default::default() });
        let ds = digits(50);
        let sampler = Sampler::new(&cfg, &ds).unwrap();
        let (labeled, unlabeled) = labeled_split(&ds.labels, 10, 0.2, 7);
        assert!(!sampler.driving_is_labeled);
        // An epoch is one pass over the unlabeled pool; labeled batches cycle alongside.
        let batches = sampler.batches(0);
        assert_eq!(batches.len(), unlabeled.len().div_ceil(4));
        let mut seen_u: Vec<usize> = batches.iter().flat_map(|b| b.unlabeled.clone()).collect();
        seen_u.sort_unstable();
        assert_eq!(seen_u, unlabeled);
        for b in &batches {
            assert_eq!(b.labeled.len(), b.unlabeled.len());
            assert!(b.labeled.iter().all(|i| labeled.contains(i)));
        }
    }

    #[test]
    fn label_budgets_give_supervised_runs_the_steps_of_dho() {
        let ds = digits(50);
        let mut sup = config(Method::Supervised);
        sup.labeled_fraction = Some(0.2);
        let dho = config(Method::Dho { temperature: 2.0, labeled_fraction: 0.2, weights: Default::default() });
        let (a, b) = (Sampler::new(&sup, &ds).unwrap(), Sampler::new(&dho, &ds).unwrap());
        assert_eq!(a.batches(1), b.batches(1));
        assert_eq!(sup.hyperparameters()["labeled_fraction"], 0.2);
        sup.method = dho.method.clone();
        assert!(sup.validate().is_err(), "dho carries its own fraction");
    }

    #[test]
    fn dual_io_plans_branches_then_unfreezing_stages() {
        let mut cfg = config(Method::DualIo { merge: crate::methods::MergeRule::Average, stage_epochs: 2 });
        cfg.arch = crate::arch::preset("student", 8, 10).unwrap();
        let plan = Plan::new(&cfg, &cfg.student_arch(), 10);
        // student on 8x8: conv, sep, pool, sep, gap — three blocks, so four stages of two epochs.
        assert_eq!(plan.epochs, 3 + 4 * 2);
        assert_eq!(plan.phase(2), Phase::Branches);
        assert_eq!(plan.phase(3), Phase::Finetune(0));
        assert_eq!(plan.phase(4), Phase::Finetune(0));
        assert_eq!(plan.phase(5), Phase::Finetune(1));
        assert_eq!(plan.phase(10), Phase::Finetune(3));
        assert_eq!(plan.cosine_steps, 30);
        assert!((plan.lr(Phase::Finetune(1), 99) - cfg.optim.lr * 0.25).abs() < 1e-12);
        assert_eq!(plan.stage_name(Phase::Finetune(2)).as_deref(), Some("unfreeze-2"));
    }

    #[test]
    fn the_method_decides_the_aux_head_and_bad_settings_are_refused() {
        let mut arch_with_aux = config(Method::Supervised);
        arch_with_aux.arch.aux_head = true;
        assert!(!arch_with_aux.student_arch().aux_head);
        assert!(config(Method::with_defaults("dhkd").unwrap()).student_arch().aux_head);
        let mut cfg = config(Method::Supervised);
        cfg.ghost_batch = Some(0);
        assert!(cfg.validate().is_err());
        let mut cfg = config(Method::Supervised);
        cfg.subset_fraction = Some(2.0);
        assert!(Sampler::new(&cfg, &digits(5)).is_err());
        let mut cfg = config(Method::Supervised);
        cfg.subset_fraction = Some(0.5);
        cfg.ghost_batch = Some(2);
        let h = cfg.hyperparameters();
        assert_eq!(h["subset_fraction"], 0.5);
        assert_eq!(h["ghost_batch"], 2);
        assert_ne!(cfg.fingerprint(), config(Method::Supervised).fingerprint());
    }
}
