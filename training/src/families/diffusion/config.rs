//! The settings of a DDPM teacher run, its UNet presets, and the paths and fingerprint of the run.

use std::collections::BTreeMap;
use std::path::PathBuf;

use sha2::{Digest, Sha256};
use tandem_runtime::diffusion::{BetaSchedule, Solver};
use tandem_runtime::models::unet::UNetConfig;

use crate::data::DatasetName;
use crate::optim::AdamWConfig;
use crate::trainer::LoopSettings;
use crate::{Error, Result};

/// The UNet presets, smallest first.
pub const UNET_PRESETS: [&str; 4] = ["unet-tiny", "unet-mini", "unet-small", "unet"];

/// A UNet preset for square `side`-pixel grayscale images with `classes` classes.
///
/// - `unet-tiny`: two levels of 8 and 16 channels, for tests.
/// - `unet-mini`: three levels of 16, 32 and 32 channels, one block each, attention at the
///   lowest resolution: what two CPU cores train on MNIST in about an hour.
/// - `unet-small`: three levels of 32, 64 and 64 channels, one block each, attention at the lowest
///   resolution: an epoch of MNIST takes about 50 minutes on two CPU cores.
/// - `unet`: the same levels at twice the width with two blocks each, for a GPU.
pub fn unet_preset(name: &str, side: usize, classes: usize) -> Result<UNetConfig> {
    let (base, mults, blocks, heads, groups, dropout) = match name {
        "unet-tiny" => (8, vec![1, 2], 1, 2, 4, 0.0),
        "unet-mini" => (16, vec![1, 2, 2], 1, 2, 8, 0.1),
        "unet-small" => (32, vec![1, 2, 2], 1, 4, 8, 0.1),
        "unet" => (64, vec![1, 2, 2], 2, 4, 8, 0.1),
        other => {
            return Err(Error::InvalidArgument(format!(
                "unknown UNet preset {other:?}: expected one of {}",
                UNET_PRESETS.join(", ")
            )))
        }
    };
    let levels = mults.len();
    let step = 1 << (levels - 1);
    let cfg = UNetConfig {
        image_shape: [1, side, side],
        // The smallest side every down-sampling halves exactly: 28 stays 28 for three levels.
        padded_size: side.div_ceil(step) * step,
        base_channels: base,
        channel_mults: mults,
        blocks_per_level: blocks,
        attention_levels: vec![levels - 1],
        attention_heads: heads,
        norm_groups: groups,
        num_classes: classes,
        dropout,
    };
    cfg.validate().map_err(|e| Error::InvalidArgument(e.to_string()))?;
    Ok(cfg)
}

/// Everything a DDPM teacher run is made of.
#[derive(Debug, Clone)]
pub struct DiffusionConfig {
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
    /// The β schedule.
    pub schedule: BetaSchedule,
    /// Training timesteps T.
    pub train_steps: usize,
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
    /// Seed of initialisation, order, timesteps and noise.
    pub seed: u64,
    /// Only the first N training images.
    pub train_limit: Option<usize>,
    /// Decay of the weights' moving average, which is what is sampled and exported.
    pub ema_decay: f64,
    /// Probability of training a step's image on the null class, for classifier-free guidance.
    pub class_dropout: f64,
    /// The guidance scale written into the bundle as its default, and used for validation samples.
    pub guidance: f64,
    /// A classifier bundle that judges whether samples show their class: the run's accuracy.
    pub judge: PathBuf,
    /// Samples per class for each epoch's validation (and its sample grid).
    pub val_samples_per_class: usize,
    /// Samples per class for the test of the exported bundle.
    pub test_samples_per_class: usize,
    /// Sampler and steps of validation and test samples.
    pub eval_sampler: Solver,
    /// Model evaluations per validation and test sample.
    pub eval_steps: usize,
    /// Bundle directory to write.
    pub out: PathBuf,
    /// Continue from the checkpoint.
    pub resume: bool,
    /// Progress output.
    pub progress: bool,
}

impl DiffusionConfig {
    /// Refuses settings that cannot train.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 || self.batch_size == 0 || self.train_steps == 0 {
            return Err(Error::InvalidArgument("epochs, batch size and training steps must be positive".into()));
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return Err(Error::InvalidArgument(format!("--ema-decay must be in [0, 1), got {}", self.ema_decay)));
        }
        if !(0.0..1.0).contains(&self.class_dropout) {
            return Err(Error::InvalidArgument(format!(
                "--class-dropout must be in [0, 1), got {}",
                self.class_dropout
            )));
        }
        if !(self.guidance.is_finite() && self.guidance >= 0.0) {
            return Err(Error::InvalidArgument(format!("--guidance must be finite and >= 0, got {}", self.guidance)));
        }
        if self.val_samples_per_class == 0 || self.test_samples_per_class == 0 || self.eval_steps == 0 {
            return Err(Error::InvalidArgument("validation and test samples and steps must be positive".into()));
        }
        self.arch.validate().map_err(|e| Error::InvalidArgument(e.to_string()))
    }

    /// The hyperparameters recorded in the bundle's provenance.
    pub fn hyperparameters(&self) -> BTreeMap<String, serde_json::Value> {
        use serde_json::json;
        BTreeMap::from([
            ("arch".into(), json!(self.arch_name)),
            ("schedule".into(), json!(self.schedule)),
            ("train_steps".into(), json!(self.train_steps)),
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
            ("guidance".into(), json!(self.guidance)),
        ])
    }

    /// What the shared loop needs.
    pub fn loop_settings(&self) -> LoopSettings {
        LoopSettings {
            name: self.name.clone(),
            seed: self.seed,
            optim: self.optim,
            warmup_fraction: self.warmup_fraction,
            clip_grad_norm: self.clip_grad_norm,
            out: self.out.clone(),
            checkpoint: self.sibling("checkpoint.safetensors"),
            summary: self.sibling("summary.json"),
            curve: self.sibling("curve.png"),
            resume: self.resume,
            progress: self.progress,
            fingerprint: self.fingerprint(),
        }
    }

    /// The sample grid written after epoch `epoch` (1-based), next to the bundle.
    pub fn grid_path(&self, epoch: usize) -> PathBuf {
        self.sibling(&format!("samples-epoch-{epoch:03}.png"))
    }

    fn sibling(&self, suffix: &str) -> PathBuf {
        crate::trainer::sibling(&self.out, suffix)
    }

    /// Identifies the settings a resume must match: those that shape the weights. The guidance
    /// scale only changes how validation and test sample and which default the bundle records, so
    /// a finished run can be resumed to export and test again under another one.
    fn fingerprint(&self) -> String {
        let arch = serde_json::to_string(&self.arch).expect("configs serialise. This is a bug.");
        let mut weights_settings = self.hyperparameters();
        weights_settings.remove("guidance");
        let text = format!("diffusion|{arch}|{weights_settings:?}|{}", self.dataset);
        Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_fit_mnist_and_the_digits() {
        for name in UNET_PRESETS {
            let cfg = unet_preset(name, 28, 10).unwrap();
            assert_eq!(cfg.padded_size, 28, "{name}");
            assert_eq!(unet_preset(name, 8, 10).unwrap().padded_size, 8, "{name}");
        }
        assert!(unet_preset("unet-huge", 28, 10).is_err());
    }
}
