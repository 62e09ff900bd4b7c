//! The settings of an image–text run: the data, both towers, the optimiser and the measurements,
//! with their validation, provenance and fingerprint.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::json;
use tandem_runtime::models::cnn::CnnConfig;

use crate::data::{Augment, DatasetName};
use crate::families::common_run::CommonRun;
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
    /// What every family's run shares: epochs over the training images, each step's images with
    /// a random caption of its class; the seed also draws the augmentation and the captions.
    pub common: CommonRun,
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
        let augment = Augment { max_shift: 2, max_rotation_deg: 0.0, flip: dataset.mirror_invariant() };
        let optim = AdamWConfig { lr: 2e-3, weight_decay: 1e-4, ..AdamWConfig::default() };
        ImageTextTrainConfig {
            common: CommonRun { warmup_fraction: 0.05, ..CommonRun::new(out, "image-text", 6, 256, optim) },
            dataset,
            data_dir,
            wordnet_dir: None,
            tokenizer,
            image_arch,
            text: TextTower::default(),
            max_seq_length: 64,
            train_limit: None,
            val_images: 1000,
            test_images: None,
            augment,
            cprd: None,
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
        self.common.validate(2)?;
        if self.val_images == 0 || self.max_seq_length < 3 {
            return Err(Error::InvalidArgument(
                "validation images must be positive and max_seq_length at least 3".into(),
            ));
        }
        Ok(())
    }

    /// The hyperparameters recorded in the bundle's provenance (and fingerprinted).
    pub fn hyperparameters(&self) -> BTreeMap<String, serde_json::Value> {
        let own = BTreeMap::from([
            ("train_limit".into(), json!(self.train_limit)),
            ("text_hidden".into(), json!(self.text.hidden)),
            ("text_layers".into(), json!(self.text.layers)),
            ("text_heads".into(), json!(self.text.heads)),
            ("text_intermediate".into(), json!(self.text.intermediate)),
            ("max_seq_length".into(), json!(self.max_seq_length)),
            ("augment".into(), json!(self.augment)),
            ("loss".into(), json!("symmetric InfoNCE, every same-class pair of the batch a positive")),
        ]);
        self.common
            .hyperparameters()
            .into_iter()
            .chain(own)
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
        crate::trainer::sibling(&self.common.out, "teacher.safetensors")
    }

    /// What the shared loop needs.
    pub fn loop_settings(&self, tokenizer_sha256: &str) -> LoopSettings {
        self.common.loop_settings(self.fingerprint(tokenizer_sha256))
    }

    fn fingerprint(&self, tokenizer_sha256: &str) -> String {
        let arch = serde_json::to_string(&self.image_arch).expect("configs serialise. This is a bug.");
        let text =
            format!("image-text|{arch}|{:?}|{}|{tokenizer_sha256}", self.hyperparameters(), self.dataset.as_str());
        tandem_runtime::bundle::sha256_hex(text.as_bytes())
    }
}
