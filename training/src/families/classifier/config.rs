//! The settings of a CNN classifier run: what `tandem train` and `tandem distill` build, what
//! provenance records, and the fingerprint a resume must match.

use std::collections::BTreeMap;
use std::path::PathBuf;

use tandem_runtime::models::cnn::CnnConfig;

use crate::data::{Augment, Dataset, DatasetName};
use crate::methods::Method;
use crate::optim::AdamWConfig;
use crate::trainer::LoopSettings;
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
    /// Rescale each step's gradients to this global L2 norm when they exceed it.
    pub clip_grad_norm: Option<f64>,
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
        crate::trainer::sibling(&self.out, suffix)
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
        // Only when set, so that runs without clipping keep their fingerprint.
        if let Some(c) = self.clip_grad_norm {
            h.insert("clip_grad_norm".into(), c.into());
        }
        for (k, v) in self.method.hyperparameters() {
            h.insert(k, v);
        }
        h
    }

    /// What the shared loop needs of the run.
    pub fn loop_settings(&self) -> LoopSettings {
        LoopSettings {
            name: self.name.clone(),
            seed: self.seed,
            optim: self.optim,
            warmup_fraction: self.warmup_fraction,
            clip_grad_norm: self.clip_grad_norm,
            out: self.out.clone(),
            checkpoint: self.checkpoint_path(),
            summary: self.summary_path(),
            curve: self.curve_path(),
            resume: self.resume,
            progress: self.progress,
            fingerprint: self.fingerprint(),
            weights_dtype: candle_core::DType::F32,
        }
    }

    /// Identifies the settings that must not change across a resume.
    pub(crate) fn fingerprint(&self) -> String {
        let arch = serde_json::to_string(&self.student_arch()).expect("configs serialise. This is a bug.");
        let text =
            format!("{arch}|{:?}|{}|{:?}|{:?}", self.hyperparameters(), self.dataset, self.teacher, self.method.name());
        tandem_runtime::bundle::sha256_hex(text.as_bytes())
    }

    /// Refuses settings that cannot train.
    pub fn validate(&self) -> Result<()> {
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
        if let Some(c) = self.clip_grad_norm.filter(|c| !(c.is_finite() && *c > 0.0)) {
            return Err(Error::InvalidArgument(format!("the gradient clipping norm must be positive, found {c}")));
        }
        if !(self.optim.lr.is_finite() && self.optim.lr > 0.0) {
            return Err(Error::InvalidArgument(format!("the learning rate must be positive, found {}", self.optim.lr)));
        }
        self.method.validate()
    }
}

/// Refuses an architecture whose input or classes differ from the dataset's.
pub(crate) fn check_fits(arch: &CnnConfig, ds: &Dataset) -> Result<()> {
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
            clip_grad_norm: None,
        }
    }

    #[test]
    fn label_budgets_give_supervised_runs_the_split_of_dho() {
        let mut sup = config(Method::Supervised);
        sup.labeled_fraction = Some(0.2);
        let dho = config(Method::Dho { temperature: 2.0, labeled_fraction: 0.2, weights: Default::default() });
        // The sampler sees only the fraction and the seed, so both runs take the same steps.
        assert_eq!(sup.labeled_fraction(), dho.labeled_fraction());
        assert_eq!(sup.hyperparameters()["labeled_fraction"], 0.2);
        sup.method = dho.method.clone();
        assert!(sup.validate().is_err(), "dho carries its own fraction");
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
        cfg.subset_fraction = Some(0.5);
        cfg.ghost_batch = Some(2);
        let h = cfg.hyperparameters();
        assert_eq!(h["subset_fraction"], 0.5);
        assert_eq!(h["ghost_batch"], 2);
        assert_ne!(cfg.fingerprint(), config(Method::Supervised).fingerprint());
        for bad in [0.0, -1.0, f64::NAN] {
            let cfg = TrainConfig { clip_grad_norm: Some(bad), ..config(Method::Supervised) };
            assert!(cfg.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn clipping_enters_the_fingerprint_only_when_set() {
        let plain = config(Method::Supervised);
        assert!(!plain.hyperparameters().contains_key("clip_grad_norm"));
        let clipped = TrainConfig { clip_grad_norm: Some(1.0), ..plain.clone() };
        clipped.validate().unwrap();
        assert_eq!(clipped.hyperparameters()["clip_grad_norm"], 1.0);
        assert_ne!(clipped.fingerprint(), plain.fingerprint());
        assert_eq!(plain.loop_settings().fingerprint, plain.fingerprint());
        assert_eq!(plain.loop_settings().checkpoint, PathBuf::from("runs/x.checkpoint.safetensors"));
    }
}
