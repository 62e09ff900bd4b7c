//! The settings of a DDPM teacher run, its UNet presets, and the paths and fingerprint of the run.

use std::collections::BTreeMap;

use tandem_runtime::diffusion::{BetaSchedule, Solver};
use tandem_runtime::models::unet::UNetConfig;

use crate::families::image_generation::GenerationRun;
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
    /// The settings every image-generation run shares.
    pub run: GenerationRun,
    /// The β schedule.
    pub schedule: BetaSchedule,
    /// Training timesteps T.
    pub train_steps: usize,
    /// The guidance scale written into the bundle as its default, and used for validation samples.
    pub guidance: f64,
    /// Sampler and steps of validation and test samples.
    pub eval_sampler: Solver,
    /// Model evaluations per validation and test sample.
    pub eval_steps: usize,
}

impl DiffusionConfig {
    /// Refuses settings that cannot train.
    pub fn validate(&self) -> Result<()> {
        if self.train_steps == 0 || self.eval_steps == 0 {
            return Err(Error::InvalidArgument("training steps and evaluation steps must be positive".into()));
        }
        if !(self.guidance.is_finite() && self.guidance >= 0.0) {
            return Err(Error::InvalidArgument(format!("--guidance must be finite and >= 0, got {}", self.guidance)));
        }
        self.run.validate()
    }

    /// The hyperparameters recorded in the bundle's provenance.
    pub fn hyperparameters(&self) -> BTreeMap<String, serde_json::Value> {
        use serde_json::json;
        let mut h = self.run.hyperparameters();
        h.extend([
            ("schedule".into(), json!(self.schedule)),
            ("train_steps".into(), json!(self.train_steps)),
            ("guidance".into(), json!(self.guidance)),
        ]);
        h
    }

    /// What the shared loop needs.
    pub fn loop_settings(&self) -> LoopSettings {
        self.run.loop_settings(self.fingerprint())
    }

    /// Identifies the settings a resume must match: those that shape the weights. The guidance
    /// scale only changes how validation and test sample and which default the bundle records, so
    /// a finished run can be resumed to export and test again under another one.
    fn fingerprint(&self) -> String {
        let mut weights_settings = self.hyperparameters();
        weights_settings.remove("guidance");
        let text = format!("diffusion|{}|{weights_settings:?}|{}", self.run.arch_json(), self.run.dataset);
        tandem_runtime::bundle::sha256_hex(text.as_bytes())
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
