//! The settings of an image-tokenizer run: the architecture, the teacher stage, the loss weights
//! and the codebooks' updates, with their validation, provenance and fingerprint.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::json;
use tandem_runtime::models::image_tokenizer::ImageTokenizerConfig;

use crate::data::DatasetName;
use crate::families::common_run::CommonRun;
use crate::optim::AdamWConfig;
use crate::trainer::{self, LoopSettings};
use crate::{Error, Result};

/// The weights of the tokenizer's loss terms. DualToken's code uses 5 for the pixel MSE, 1 for
/// its perceptual term (LPIPS there; here the squared distance in the frozen teacher's features
/// after the pixel layer), 5 for each stream's commitment, and 1 for the semantic alignment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossWeights {
    /// Pixel MSE of the reconstruction.
    pub reconstruction: f64,
    /// Distance of the reconstruction's teacher features from the image's.
    pub perceptual: f64,
    /// Residual-VQ commitment, per stream.
    pub commitment: f64,
    /// Semantic alignment (features and pooled output, each MSE + 1 − cos).
    pub semantic: f64,
}

impl Default for LossWeights {
    fn default() -> LossWeights {
        LossWeights { reconstruction: 5.0, perceptual: 1.0, commitment: 5.0, semantic: 1.0 }
    }
}

/// Everything a tokenizer run is made of.
#[derive(Debug, Clone)]
pub struct TokenizerConfig {
    /// What every family's run shares; the epochs are the tokenizer's (after the teacher's) and
    /// the batch counts images.
    pub common: CommonRun,
    /// Dataset to tokenize.
    pub dataset: DatasetName,
    /// Dataset cache directory.
    pub data_dir: PathBuf,
    /// The network (its layout picks DualToken or a single-codebook baseline).
    pub arch: ImageTokenizerConfig,
    /// Epochs that train the encoder as a classifier first: the semantic teacher, frozen after.
    pub teacher_epochs: usize,
    /// A teacher saved by an earlier run (`<out>.teacher.safetensors`) to use instead.
    pub teacher: Option<PathBuf>,
    /// Only the first N training images.
    pub train_limit: Option<usize>,
    /// Validation images measured after each epoch.
    pub val_images: usize,
    /// Test images measured on the exported bundle (all when `None`).
    pub test_images: Option<usize>,
    /// The loss terms' weights.
    pub losses: LossWeights,
    /// Decay of the codebooks' moving averages (DualToken: 0.99).
    pub codebook_decay: f64,
    /// A code whose moving-average count falls below this is restarted on a vector of the batch.
    pub dead_code_threshold: f64,
}

impl TokenizerConfig {
    /// A run of `arch` on `dataset` with the defaults of the reproduction notes: batch 128, AdamW
    /// at 1e-3 with 2% warm-up, clipping at 1, 3 teacher epochs and 5 tokenizer epochs.
    pub fn new(arch: ImageTokenizerConfig, dataset: DatasetName, data_dir: PathBuf, out: PathBuf) -> TokenizerConfig {
        let optim = AdamWConfig { lr: 1e-3, weight_decay: 1e-4, ..AdamWConfig::default() };
        TokenizerConfig {
            common: CommonRun { warmup_fraction: 0.02, ..CommonRun::new(out, "tokenizer", 5, 128, optim) },
            dataset,
            data_dir,
            arch,
            teacher_epochs: 3,
            teacher: None,
            train_limit: None,
            val_images: 1000,
            test_images: None,
            losses: LossWeights::default(),
            codebook_decay: 0.99,
            dead_code_threshold: 0.5,
        }
    }

    /// Refuses settings that cannot train.
    pub fn validate(&self) -> Result<()> {
        self.arch.validate().map_err(Error::InvalidArgument)?;
        self.common.validate(1)?;
        if self.val_images == 0 {
            return Err(Error::InvalidArgument("validation images must be positive".into()));
        }
        if self.teacher.is_none() && self.teacher_epochs == 0 && self.arch.layout.has_semantic_stream() {
            return Err(Error::InvalidArgument(
                "a semantic stream needs a teacher: give --teacher-epochs > 0 or --teacher FILE".into(),
            ));
        }
        let threshold_ok = self.dead_code_threshold.is_finite() && self.dead_code_threshold >= 0.0;
        if !((0.0..1.0).contains(&self.codebook_decay) && threshold_ok) {
            return Err(Error::InvalidArgument(
                "--codebook-decay must be in [0, 1) and the dead-code threshold >= 0".into(),
            ));
        }
        let w = self.losses;
        if [w.reconstruction, w.perceptual, w.commitment, w.semantic].iter().any(|v| !(v.is_finite() && *v >= 0.0)) {
            return Err(Error::InvalidArgument("loss weights must be finite and non-negative".into()));
        }
        Ok(())
    }

    /// Epochs of the teacher stage this run trains (none when it loads a teacher).
    pub fn teacher_stage_epochs(&self) -> usize {
        if self.teacher.is_some() {
            0
        } else {
            self.teacher_epochs
        }
    }

    /// The hyperparameters recorded in the bundle's provenance (and fingerprinted).
    pub fn hyperparameters(&self) -> BTreeMap<String, serde_json::Value> {
        let w = self.losses;
        let mut all = self.common.hyperparameters();
        all.extend([
            ("layout".into(), json!(self.arch.layout.name())),
            ("teacher_epochs".into(), json!(self.teacher_stage_epochs())),
            ("train_limit".into(), json!(self.train_limit)),
            ("loss_reconstruction".into(), json!(w.reconstruction)),
            ("loss_perceptual".into(), json!(w.perceptual)),
            ("loss_commitment".into(), json!(w.commitment)),
            ("loss_semantic".into(), json!(w.semantic)),
            ("codebook_decay".into(), json!(self.codebook_decay)),
            ("dead_code_threshold".into(), json!(self.dead_code_threshold)),
        ]);
        all
    }

    /// What the shared loop needs.
    pub fn loop_settings(&self) -> LoopSettings {
        self.common.loop_settings(self.fingerprint())
    }

    /// Where the teacher stage saves the frozen teacher, for other runs' `--teacher`.
    pub fn teacher_path(&self) -> PathBuf {
        trainer::sibling(&self.common.out, "teacher.safetensors")
    }

    /// The reconstruction grid written after each epoch (1-based).
    pub fn grid_path(&self, epoch: usize) -> PathBuf {
        trainer::sibling(&self.common.out, &format!("reconstructions-epoch-{epoch:03}.png"))
    }

    fn fingerprint(&self) -> String {
        let arch = serde_json::to_string(&self.arch).expect("configs serialise. This is a bug.");
        let text = format!("tokenizer|{arch}|{:?}|{}|{:?}", self.hyperparameters(), self.dataset, self.teacher);
        tandem_runtime::bundle::sha256_hex(text.as_bytes())
    }
}
