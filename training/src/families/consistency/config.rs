//! The settings of a consistency-model run: iCT from scratch or consistency distillation (CD)
//! from a DDPM teacher bundle.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::json;
use sha2::{Digest, Sha256};
use tandem_runtime::models::unet::UNetConfig;

use crate::data::DatasetName;
use crate::optim::AdamWConfig;
use crate::trainer::LoopSettings;
use crate::{Error, Result};

/// How the student learns.
#[derive(Debug, Clone, PartialEq)]
pub enum ConsistencyMethod {
    /// Improved consistency training (Song & Dhariwal 2024): no teacher; pairs of noise levels on
    /// iCT's doubling curriculum, the target being the student itself without gradient.
    Ict {
        /// The curriculum's first grid size minus one (10 in iCT).
        s0: usize,
        /// Its last (1280 in iCT).
        s1: usize,
    },
    /// Consistency distillation: the target is the student at the point one DDIM step of the
    /// (guided) teacher reaches from the noisier point.
    Cd {
        /// The `diffusion` bundle to distill.
        teacher: PathBuf,
        /// Points of the fixed Karras σ grid the teacher steps between.
        grid: usize,
        /// The teacher's classifier-free guidance scale, baked into the student.
        guidance: f64,
    },
}

impl ConsistencyMethod {
    /// The recipe name in provenance.
    pub fn name(&self) -> &'static str {
        match self {
            ConsistencyMethod::Ict { .. } => "ict",
            ConsistencyMethod::Cd { .. } => "cd",
        }
    }
}

/// Everything a consistency run is made of.
#[derive(Debug, Clone)]
pub struct ConsistencyConfig {
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
    /// The network F.
    pub arch: UNetConfig,
    /// iCT or CD.
    pub method: ConsistencyMethod,
    /// The σ range and the data scale of the parametrization.
    pub sigma_min: f64,
    /// Largest σ.
    pub sigma_max: f64,
    /// σ_data of the parametrization.
    pub sigma_data: f64,
    /// iCT's lognormal noise-level distribution: mean and deviation of ln σ.
    pub p_mean: f64,
    /// See `p_mean`.
    pub p_std: f64,
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
    /// Decay of the weights' moving average, which is sampled and exported.
    pub ema_decay: f64,
    /// Probability of training on the null class, so unconditional requests work.
    pub class_dropout: f64,
    /// A classifier bundle that judges whether samples show their class.
    pub judge: PathBuf,
    /// Samples per class judged after each epoch and for each σ candidate at export.
    pub val_samples_per_class: usize,
    /// Samples per class judged on the exported bundle.
    pub test_samples_per_class: usize,
    /// Candidate intermediate σ for two-step sampling, chosen at export by validation.
    pub sigma_mid_candidates: Vec<f64>,
    /// Start from the teacher's weights (CD only; the architectures must match).
    pub init_from_teacher: bool,
    /// Bundle directory to write.
    pub out: PathBuf,
    /// Continue from the checkpoint.
    pub resume: bool,
    /// Progress output.
    pub progress: bool,
}

impl ConsistencyConfig {
    /// Refuses settings that cannot train.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 || self.batch_size == 0 {
            return Err(Error::InvalidArgument("epochs and batch size must be positive".into()));
        }
        let (lo, hi, sd) = (self.sigma_min, self.sigma_max, self.sigma_data);
        if !(lo > 0.0 && lo < hi && hi.is_finite() && sd > 0.0 && sd.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "need 0 < sigma_min < sigma_max and sigma_data > 0, got {lo}, {hi}, {sd}"
            )));
        }
        if !(0.0..1.0).contains(&self.ema_decay) || !(0.0..1.0).contains(&self.class_dropout) {
            return Err(Error::InvalidArgument("--ema-decay and --class-dropout must be in [0, 1)".into()));
        }
        if self.sigma_mid_candidates.iter().any(|s| !(*s > lo && *s < hi)) || self.sigma_mid_candidates.is_empty() {
            return Err(Error::InvalidArgument(format!("sigma-mid candidates must lie in ({lo}, {hi})")));
        }
        match &self.method {
            ConsistencyMethod::Ict { s0, s1 } if *s0 == 0 || s1 < s0 => {
                Err(Error::InvalidArgument(format!("iCT needs 0 < s0 <= s1, got {s0} and {s1}")))
            }
            ConsistencyMethod::Cd { grid, guidance, .. }
                if *grid < 2 || !(guidance.is_finite() && *guidance >= 0.0) =>
            {
                Err(Error::InvalidArgument(format!(
                    "CD needs a grid of at least 2 points and guidance >= 0, got {grid}, {guidance}"
                )))
            }
            _ => self.arch.validate().map_err(|e| Error::InvalidArgument(e.to_string())),
        }
    }

    /// The hyperparameters recorded in the bundle's provenance.
    pub fn hyperparameters(&self) -> BTreeMap<String, serde_json::Value> {
        let mut h = BTreeMap::from([
            ("arch".into(), json!(self.arch_name)),
            ("sigma_min".into(), json!(self.sigma_min)),
            ("sigma_max".into(), json!(self.sigma_max)),
            ("sigma_data".into(), json!(self.sigma_data)),
            ("p_mean".into(), json!(self.p_mean)),
            ("p_std".into(), json!(self.p_std)),
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
            ("sigma_mid_candidates".into(), json!(self.sigma_mid_candidates)),
            ("init_from_teacher".into(), json!(self.init_from_teacher)),
        ]);
        match &self.method {
            ConsistencyMethod::Ict { s0, s1 } => {
                h.insert("s0".into(), json!(s0));
                h.insert("s1".into(), json!(s1));
            }
            ConsistencyMethod::Cd { grid, guidance, .. } => {
                h.insert("cd_grid".into(), json!(grid));
                h.insert("teacher_guidance".into(), json!(guidance));
            }
        }
        h
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

    fn fingerprint(&self) -> String {
        let arch = serde_json::to_string(&self.arch).expect("configs serialise. This is a bug.");
        let text = format!("consistency|{arch}|{:?}|{}|{:?}", self.hyperparameters(), self.dataset, self.method);
        Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    }
}
