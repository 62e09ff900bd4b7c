//! What every image-generation run (a DDPM teacher, a consistency student) is made of besides its
//! method: the bundle it writes, the data, the UNet, the optimiser and loop, the weights' moving
//! average, classifier-free guidance's class dropout, and the judge that scores samples. The
//! families keep only their own settings and read these through one field.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::json;
use tandem_runtime::models::unet::UNetConfig;

use crate::data::DatasetName;
use crate::optim::AdamWConfig;
use crate::trainer::{self, LoopSettings};
use crate::{Error, Result};

/// The settings shared by the image-generation families.
#[derive(Debug, Clone)]
pub struct GenerationRun {
    /// Bundle name.
    pub name: String,
    /// Bundle version.
    pub version: String,
    /// Dataset to model.
    pub dataset: DatasetName,
    /// Dataset cache directory.
    pub data_dir: PathBuf,
    /// The preset's name, for provenance.
    pub arch_name: String,
    /// The network.
    pub arch: UNetConfig,
    /// Epochs over the training split.
    pub epochs: usize,
    /// Images per step.
    pub batch_size: usize,
    /// AdamW settings; `lr` is the peak.
    pub optim: AdamWConfig,
    /// Warm-up as a fraction of all steps.
    pub warmup_fraction: f64,
    /// Gradient clipping by global norm.
    pub clip_grad_norm: Option<f64>,
    /// Seed of initialisation, order, noise levels and noise.
    pub seed: u64,
    /// Only the first N training images.
    pub train_limit: Option<usize>,
    /// Decay of the weights' moving average, which is what is sampled and exported.
    pub ema_decay: f64,
    /// Probability of training an image on the null class: classifier-free guidance, and
    /// unconditional requests.
    pub class_dropout: f64,
    /// A classifier bundle that judges whether samples show their class: the run's accuracy.
    pub judge: PathBuf,
    /// Samples per class judged after each epoch (and drawn in its grid).
    pub val_samples_per_class: usize,
    /// Samples per class judged on the exported bundle.
    pub test_samples_per_class: usize,
    /// Bundle directory to write.
    pub out: PathBuf,
    /// Continue from the checkpoint.
    pub resume: bool,
    /// Progress output.
    pub progress: bool,
}

impl GenerationRun {
    /// Refuses shared settings that cannot train.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 || self.batch_size == 0 {
            return Err(Error::InvalidArgument("epochs and batch size must be positive".into()));
        }
        for (flag, value) in [("--ema-decay", self.ema_decay), ("--class-dropout", self.class_dropout)] {
            if !(0.0..1.0).contains(&value) {
                return Err(Error::InvalidArgument(format!("{flag} must be in [0, 1), got {value}")));
            }
        }
        if self.val_samples_per_class == 0 || self.test_samples_per_class == 0 {
            return Err(Error::InvalidArgument("validation and test samples must be positive".into()));
        }
        self.arch.validate().map_err(|e| Error::InvalidArgument(e.to_string()))
    }

    /// The shared hyperparameters recorded in the bundle's provenance (and fingerprinted).
    pub fn hyperparameters(&self) -> BTreeMap<String, serde_json::Value> {
        BTreeMap::from([
            ("arch".into(), json!(self.arch_name)),
            ("epochs".into(), json!(self.epochs)),
            ("batch_size".into(), json!(self.batch_size)),
            ("lr".into(), json!(self.optim.lr)),
            ("weight_decay".into(), json!(self.optim.weight_decay)),
            ("warmup_fraction".into(), json!(self.warmup_fraction)),
            ("clip_grad_norm".into(), json!(self.clip_grad_norm)),
            ("seed".into(), json!(self.seed)),
            ("train_limit".into(), json!(self.train_limit)),
            ("ema_decay".into(), json!(self.ema_decay)),
            ("class_dropout".into(), json!(self.class_dropout)),
        ])
    }

    /// What the shared loop needs; `fingerprint` is the family's (it knows its own settings).
    pub fn loop_settings(&self, fingerprint: String) -> LoopSettings {
        LoopSettings {
            seed: self.seed,
            warmup_fraction: self.warmup_fraction,
            clip_grad_norm: self.clip_grad_norm,
            resume: self.resume,
            progress: self.progress,
            ..LoopSettings::beside(&self.out, &self.name, self.optim, fingerprint)
        }
    }

    /// The sample grid written after epoch `epoch` (1-based), next to the bundle.
    pub fn grid_path(&self, epoch: usize) -> PathBuf {
        trainer::sibling(&self.out, &format!("samples-epoch-{epoch:03}.png"))
    }

    /// The UNet's serialised form, part of every fingerprint.
    pub fn arch_json(&self) -> String {
        serde_json::to_string(&self.arch).expect("configs serialise. This is a bug.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> GenerationRun {
        GenerationRun {
            name: "x".into(),
            version: "1".into(),
            dataset: DatasetName::Digits,
            data_dir: "data".into(),
            arch_name: "unet-tiny".into(),
            arch: crate::families::diffusion::unet_preset("unet-tiny", 8, 10).unwrap(),
            epochs: 1,
            batch_size: 8,
            optim: AdamWConfig::default(),
            warmup_fraction: 0.0,
            clip_grad_norm: None,
            seed: 0,
            train_limit: None,
            ema_decay: 0.99,
            class_dropout: 0.1,
            judge: "judge".into(),
            val_samples_per_class: 1,
            test_samples_per_class: 1,
            out: "runs/x".into(),
            resume: false,
            progress: false,
        }
    }

    #[test]
    fn run_files_sit_beside_the_bundle() {
        let settings = run().loop_settings("f".into());
        assert_eq!(settings.checkpoint, PathBuf::from("runs/x.checkpoint.safetensors"));
        assert_eq!(settings.curve, PathBuf::from("runs/x.curve.png"));
        assert_eq!(run().grid_path(3), PathBuf::from("runs/x.samples-epoch-003.png"));
    }

    #[test]
    fn out_of_range_shared_settings_are_refused() {
        assert!(run().validate().is_ok());
        assert!(GenerationRun { ema_decay: 1.0, ..run() }.validate().is_err());
        assert!(GenerationRun { class_dropout: -0.1, ..run() }.validate().is_err());
        assert!(GenerationRun { epochs: 0, ..run() }.validate().is_err());
        assert!(GenerationRun { test_samples_per_class: 0, ..run() }.validate().is_err());
    }
}
