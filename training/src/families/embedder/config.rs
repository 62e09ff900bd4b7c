//! The settings of an embedder fine-tuning run, with their validation, provenance and fingerprint.

use std::collections::BTreeMap;
use std::path::PathBuf;

use candle_core::DType;
use serde_json::json;

use crate::optim::AdamWConfig;
use crate::retrieval::MiningOptions;
use crate::trainer::LoopSettings;
use crate::{Error, Result};

/// Where WordNet comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WordNetSource {
    /// The copy `tandem data fetch wordnet` verified, under this data directory.
    Fetched(PathBuf),
    /// `data.*` files read as they are from this directory (tests use a tiny one).
    Dir(PathBuf),
}

/// Everything an embedder fine-tuning run is made of.
#[derive(Debug, Clone)]
pub struct EmbedderConfig {
    /// Bundle name.
    pub name: String,
    /// Bundle version.
    pub version: String,
    /// The embedder bundle to start from.
    pub init: PathBuf,
    /// The benchmark's WordNet.
    pub wordnet: WordNetSource,
    /// Epochs over the training pairs.
    pub epochs: usize,
    /// Pairs per step; each query's negatives are the other pairs' glosses.
    pub batch_size: usize,
    /// AdamW settings; `lr` is the peak.
    pub optim: AdamWConfig,
    /// Warm-up as a fraction of all steps.
    pub warmup_fraction: f64,
    /// Gradient clipping by global norm.
    pub clip_grad_norm: Option<f64>,
    /// Seeds the pairs' order (and the sample of `max_pairs`).
    pub seed: u64,
    /// Train on a seeded sample of this many pairs.
    pub max_pairs: Option<usize>,
    /// Cosine similarities are multiplied by this before the softmax (sentence-transformers: 20).
    pub scale: f64,
    /// Truncate texts to this many tokens (at most the bundle's limit).
    pub max_seq_length: Option<usize>,
    /// Hard negatives per pair, mined by the model being trained at the start of every epoch
    /// (`per_query` 0: in-batch negatives only). Every query of a batch is scored against every
    /// gloss of the batch, positives and mined negatives alike.
    pub mining: MiningOptions,
    /// Validation queries asked after each epoch.
    pub val_queries: usize,
    /// Documents searched at validation (every judged one included).
    pub val_corpus: usize,
    /// Test queries asked of the exported bundle (all 2,000 when `None`).
    pub test_queries: Option<usize>,
    /// Documents searched at the test (the whole corpus when `None`).
    pub test_corpus: Option<usize>,
    /// Store the exported weights as F16 (half the bytes; served in F32): how a student cut
    /// and distilled with `--half` stays within its size budget when fine-tuned further.
    pub half: bool,
    /// Bundle directory to write.
    pub out: PathBuf,
    /// Continue from the checkpoint.
    pub resume: bool,
    /// Progress output.
    pub progress: bool,
}

impl EmbedderConfig {
    /// A run from `init` with sentence-transformers' fine-tuning defaults: batch 32, AdamW at
    /// 2e-5 with 10% warm-up, scale 20, one epoch; validation on 500 queries over 10,000 glosses.
    pub fn new(init: PathBuf, wordnet: WordNetSource, out: PathBuf) -> EmbedderConfig {
        let name = out.file_name().map_or_else(|| "embedder".into(), |n| n.to_string_lossy().into_owned());
        EmbedderConfig {
            name,
            version: "1".into(),
            init,
            wordnet,
            epochs: 1,
            batch_size: 32,
            optim: AdamWConfig { lr: 2e-5, weight_decay: 0.01, ..AdamWConfig::default() },
            warmup_fraction: 0.1,
            clip_grad_norm: Some(1.0),
            seed: 0,
            max_pairs: None,
            scale: 20.0,
            max_seq_length: None,
            mining: MiningOptions { per_query: 0, ..MiningOptions::default() },
            val_queries: 500,
            val_corpus: 10_000,
            test_queries: None,
            test_corpus: None,
            half: false,
            out,
            resume: false,
            progress: true,
        }
    }

    /// Refuses settings that cannot train.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 || self.batch_size < 2 || self.val_queries == 0 || self.val_corpus == 0 {
            return Err(Error::InvalidArgument(
                "epochs and validation sizes must be positive, and a batch needs 2 pairs for a negative".into(),
            ));
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(Error::InvalidArgument(format!("--scale must be finite and positive, got {}", self.scale)));
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
            ("max_pairs".into(), json!(self.max_pairs)),
            ("scale".into(), json!(self.scale)),
            ("max_seq_length".into(), json!(self.max_seq_length)),
            ("hard_negatives".into(), json!(self.mining.per_query)),
            ("mine_depth".into(), json!(self.mining.depth)),
            ("mine_skip_top".into(), json!(self.mining.skip_top)),
            ("mine_corpus".into(), json!(self.mining.corpus_limit)),
            ("half".into(), json!(self.half)),
        ])
    }

    /// What the shared loop needs.
    pub fn loop_settings(&self) -> LoopSettings {
        LoopSettings {
            seed: self.seed,
            warmup_fraction: self.warmup_fraction,
            clip_grad_norm: self.clip_grad_norm,
            resume: self.resume,
            progress: self.progress,
            weights_dtype: if self.half { DType::F16 } else { DType::F32 },
            ..LoopSettings::beside(&self.out, &self.name, self.optim, self.fingerprint())
        }
    }

    fn fingerprint(&self) -> String {
        let text = format!("embedder|{:?}|{:?}|{:?}", self.hyperparameters(), self.init, self.wordnet);
        tandem_runtime::bundle::sha256_hex(text.as_bytes())
    }
}
