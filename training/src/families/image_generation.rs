//! What every image-generation run (a DDPM teacher, a consistency student) is made of besides its
//! method: the bundle it writes, the data, the UNet, the optimiser and loop, the weights' moving
//! average, classifier-free guidance's class dropout, and the judge that scores samples. The
//! families keep only their own settings and read these through one field.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::json;
use tandem_runtime::models::unet::UNetConfig;

use super::common_run::CommonRun;
use crate::data::DatasetName;
use crate::trainer::{self, LoopSettings};
use crate::{Error, Result};

/// The settings shared by the image-generation families.
#[derive(Debug, Clone)]
pub struct GenerationRun {
    /// What every family's run shares; the batch counts images.
    pub common: CommonRun,
    /// Dataset to model.
    pub dataset: DatasetName,
    /// Dataset cache directory.
    pub data_dir: PathBuf,
    /// The preset's name, for provenance.
    pub arch_name: String,
    /// The network.
    pub arch: UNetConfig,
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
}

impl GenerationRun {
    /// Refuses shared settings that cannot train.
    pub fn validate(&self) -> Result<()> {
        self.common.validate(1)?;
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
        let mut all = self.common.hyperparameters();
        all.extend([
            ("arch".into(), json!(self.arch_name)),
            ("train_limit".into(), json!(self.train_limit)),
            ("ema_decay".into(), json!(self.ema_decay)),
            ("class_dropout".into(), json!(self.class_dropout)),
        ]);
        all
    }

    /// What the shared loop needs; `fingerprint` is the family's (it knows its own settings).
    pub fn loop_settings(&self, fingerprint: String) -> LoopSettings {
        self.common.loop_settings(fingerprint)
    }

    /// The sample grid written after epoch `epoch` (1-based), next to the bundle.
    pub fn grid_path(&self, epoch: usize) -> PathBuf {
        trainer::sibling(&self.common.out, &format!("samples-epoch-{epoch:03}.png"))
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
            common: CommonRun::new("runs/x".into(), "x", 1, 8, crate::optim::AdamWConfig::default()),
            dataset: DatasetName::Digits,
            data_dir: "data".into(),
            arch_name: "unet-tiny".into(),
            arch: crate::families::diffusion::unet_preset("unet-tiny", 8, 10).unwrap(),
            train_limit: None,
            ema_decay: 0.99,
            class_dropout: 0.1,
            judge: "judge".into(),
            val_samples_per_class: 1,
            test_samples_per_class: 1,
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
        assert!(GenerationRun { common: CommonRun { epochs: 0, ..run().common }, ..run() }.validate().is_err());
        assert!(GenerationRun { test_samples_per_class: 0, ..run() }.validate().is_err());
    }
}
