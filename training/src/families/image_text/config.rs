//! The settings of an image–text run: the data, both towers, the optimiser and the measurements,
//! with their validation, provenance and fingerprint.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::json;
use tandem_runtime::models::cnn::CnnConfig;

use crate::data::{Augment, DatasetName};
use crate::optim::AdamWConfig;
use crate::trainer::LoopSettings;
use crate::{Error, Result};

/// The text tower's shape; its vocabulary is the starting tokenizer's, cut to the captions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextTower {
    /// Width of token vectors.
    pub hidden: usize,
    /// Transformer layers.
    pub layers: usize,
    /// Attention heads; must divide `hidden`.
    pub heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate: usize,
}

impl Default for TextTower {
    /// A tiny BERT: 2 layers of width 128 with 4 heads.
    fn default() -> TextTower {
        TextTower { hidden: 128, layers: 2, heads: 4, intermediate: 512 }
    }
}

/// CPRD (METHODS.md, section 1): the dual encoder also learns the rankings of an image–text
/// matcher, a cross-encoder trained first in the same run (or loaded).
#[derive(Debug, Clone, PartialEq)]
pub struct CprdSettings {
    /// The matcher's image tower; its `num_classes` is the width of both towers' features.
    pub teacher_arch: CnnConfig,
    /// Width of the matcher's MLP.
    pub teacher_hidden: usize,
    /// Epochs that train the matcher first, at the peak rate held constant (none when `teacher`
    /// is given).
    pub teacher_epochs: usize,
    /// A matcher saved by an earlier run of the same tokenizer and text tower
    /// (`<out>.teacher.safetensors`), instead of the matcher stage.
    pub teacher: Option<PathBuf>,
    /// Hard negatives per image: the batch's captions of other classes the student ranks highest,
    /// each text once.
    pub negatives: usize,
    /// Weight of the distillation term.
    pub beta: f64,
}

/// Everything an image–text run is made of.
#[derive(Debug, Clone)]
pub struct ImageTextTrainConfig {
    /// Bundle name.
    pub name: String,
    /// Bundle version.
    pub version: String,
    /// The images (Fashion-MNIST; the digits for tests).
    pub dataset: DatasetName,
    /// Dataset cache directory, where WordNet is fetched too.
    pub data_dir: PathBuf,
    /// WordNet's `data.*` files read from here instead of the fetched copy.
    pub wordnet_dir: Option<PathBuf>,
    /// The `tokenizer.json` (WordPiece) whose vocabulary is cut to the captions' tokens, the
    /// specials and the single characters.
    pub tokenizer: PathBuf,
    /// The image tower; its `num_classes` is the width of the shared space.
    pub image_arch: CnnConfig,
    /// The text tower.
    pub text: TextTower,
    /// Longest caption or label in tokens, special tokens included (the text tower's positions).
    pub max_seq_length: usize,
    /// Epochs over the training images.
    pub epochs: usize,
    /// Images per step, each with a random caption of its class.
    pub batch_size: usize,
    /// AdamW settings; `lr` is the peak.
    pub optim: AdamWConfig,
    /// Warm-up as a fraction of all steps.
    pub warmup_fraction: f64,
    /// Gradient clipping by global norm.
    pub clip_grad_norm: Option<f64>,
    /// Seeds initialisation, order, augmentation and the captions drawn.
    pub seed: u64,
    /// Only the first N training images.
    pub train_limit: Option<usize>,
    /// Validation images measured after each epoch.
    pub val_images: usize,
    /// Test images measured on the exported bundle (the whole split when `None`).
    pub test_images: Option<usize>,
    /// The training images' augmentation.
    pub augment: Augment,
    /// Distil a matcher's rankings (CPRD) on top of the contrastive loss.
    pub cprd: Option<CprdSettings>,
    /// Bundle directory to write.
    pub out: PathBuf,
    /// Continue from the checkpoint.
    pub resume: bool,
    /// Progress output.
    pub progress: bool,
}

impl ImageTextTrainConfig {
    /// A run on `dataset` with `image_arch` as the image tower and defaults sized for a 2-core
    /// machine: the tiny text tower, captions up to 64 tokens, batch 256, AdamW at 2e-3 with 5%
    /// warm-up, clipping at 1, 6 epochs, 1,000 validation images; Fashion-MNIST's training
    /// images shifted by up to 2 pixels and mirrored (its classes survive a mirror).
    pub fn new(
        dataset: DatasetName,
        data_dir: PathBuf,
        tokenizer: PathBuf,
        image_arch: CnnConfig,
        out: PathBuf,
    ) -> ImageTextTrainConfig {
        let name = out.file_name().map_or_else(|| "image-text".into(), |n| n.to_string_lossy().into_owned());
        let augment = Augment { max_shift: 2, max_rotation_deg: 0.0, flip: dataset.mirror_invariant() };
        ImageTextTrainConfig {
            name,
            version: "1".into(),
            dataset,
            data_dir,
            wordnet_dir: None,
            tokenizer,
            image_arch,
            text: TextTower::default(),
            max_seq_length: 64,
            epochs: 6,
            batch_size: 256,
            optim: AdamWConfig { lr: 2e-3, weight_decay: 1e-4, ..AdamWConfig::default() },
            warmup_fraction: 0.05,
            clip_grad_norm: Some(1.0),
            seed: 0,
            train_limit: None,
            val_images: 1000,
            test_images: None,
            augment,
            cprd: None,
            out,
            resume: false,
            progress: true,
        }
    }

    /// Refuses settings that cannot train.
    pub fn validate(&self) -> Result<()> {
        self.image_arch.feature_dim().map_err(|e| Error::InvalidArgument(format!("image tower: {e}")))?;
        if self.image_arch.aux_head || self.image_arch.num_classes == 0 {
            return Err(Error::InvalidArgument("the image tower needs one head of at least one output".into()));
        }
        let t = self.text;
        if t.hidden == 0 || t.layers == 0 || t.heads == 0 || t.intermediate == 0 || !t.hidden.is_multiple_of(t.heads) {
            return Err(Error::InvalidArgument(format!(
                "the text tower needs positive sizes and heads dividing its width, found {t:?}"
            )));
        }
        if let Some(cprd) = &self.cprd {
            cprd.teacher_arch.feature_dim().map_err(|e| Error::InvalidArgument(format!("teacher image tower: {e}")))?;
            if cprd.teacher_arch.input_shape != self.image_arch.input_shape || cprd.teacher_arch.aux_head {
                return Err(Error::InvalidArgument("the teacher reads the student's images with one head".into()));
            }
            if cprd.negatives < 2 || !(cprd.beta.is_finite() && cprd.beta >= 0.0) || cprd.teacher_hidden == 0 {
                return Err(Error::InvalidArgument(
                    "CPRD needs at least 2 negatives, a finite non-negative beta and a hidden layer".into(),
                ));
            }
            if cprd.teacher.is_none() && cprd.teacher_epochs == 0 {
                return Err(Error::InvalidArgument(
                    "CPRD needs a teacher: --teacher-epochs > 0 or --teacher FILE".into(),
                ));
            }
        }
        if self.epochs == 0 || self.batch_size < 2 || self.val_images == 0 || self.max_seq_length < 3 {
            return Err(Error::InvalidArgument(
                "epochs and validation images must be positive, the batch at least 2 and max_seq_length at least 3"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The hyperparameters recorded in the bundle's provenance (and fingerprinted).
    pub fn hyperparameters(&self) -> BTreeMap<String, serde_json::Value> {
        BTreeMap::from([
            ("epochs".into(), json!(self.epochs)),
            ("batch_size".into(), json!(self.batch_size)),
            ("lr".into(), json!(self.optim.lr)),
            ("weight_decay".into(), json!(self.optim.weight_decay)),
            ("warmup_fraction".into(), json!(self.warmup_fraction)),
            ("clip_grad_norm".into(), json!(self.clip_grad_norm)),
            ("seed".into(), json!(self.seed)),
            ("train_limit".into(), json!(self.train_limit)),
            ("text_hidden".into(), json!(self.text.hidden)),
            ("text_layers".into(), json!(self.text.layers)),
            ("text_heads".into(), json!(self.text.heads)),
            ("text_intermediate".into(), json!(self.text.intermediate)),
            ("max_seq_length".into(), json!(self.max_seq_length)),
            ("augment".into(), json!(self.augment)),
            ("loss".into(), json!("symmetric InfoNCE, every same-class pair of the batch a positive")),
        ])
        .into_iter()
        .chain(self.cprd.iter().flat_map(|c| {
            [
                ("cprd_beta".to_owned(), json!(c.beta)),
                ("cprd_negatives".to_owned(), json!(c.negatives)),
                (
                    "cprd_validity".to_owned(),
                    json!("a negative the teacher scores at or above the positive ends the list"),
                ),
                ("teacher_arch".to_owned(), json!(c.teacher_arch)),
                ("teacher_hidden".to_owned(), json!(c.teacher_hidden)),
                ("teacher_epochs".to_owned(), json!(self.teacher_stage_epochs())),
                ("teacher_file".to_owned(), json!(c.teacher)),
            ]
        }))
        .collect()
    }

    /// Epochs of the matcher stage this run trains: none without CPRD or with a loaded teacher.
    pub fn teacher_stage_epochs(&self) -> usize {
        match &self.cprd {
            Some(c) if c.teacher.is_none() => c.teacher_epochs,
            _ => 0,
        }
    }

    /// Where the matcher stage saves the matcher, for other runs' `--teacher`.
    pub fn teacher_path(&self) -> PathBuf {
        crate::trainer::sibling(&self.out, "teacher.safetensors")
    }

    /// What the shared loop needs.
    pub fn loop_settings(&self, tokenizer_sha256: &str) -> LoopSettings {
        LoopSettings {
            seed: self.seed,
            warmup_fraction: self.warmup_fraction,
            clip_grad_norm: self.clip_grad_norm,
            resume: self.resume,
            progress: self.progress,
            ..LoopSettings::beside(&self.out, &self.name, self.optim, self.fingerprint(tokenizer_sha256))
        }
    }

    fn fingerprint(&self, tokenizer_sha256: &str) -> String {
        let arch = serde_json::to_string(&self.image_arch).expect("configs serialise. This is a bug.");
        let text =
            format!("image-text|{arch}|{:?}|{}|{tokenizer_sha256}", self.hyperparameters(), self.dataset.as_str());
        tandem_runtime::bundle::sha256_hex(text.as_bytes())
    }
}
