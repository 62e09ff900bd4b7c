//! The settings of a cross-encoder training run, with their validation, provenance and fingerprint.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::json;

use crate::families::embedder::WordNetSource;
use crate::optim::AdamWConfig;
use crate::retrieval::MiningOptions;
use crate::trainer::LoopSettings;
use crate::{Error, Result};

/// Everything a cross-encoder training run is made of.
#[derive(Debug, Clone)]
pub struct CrossEncoderConfig {
    /// Bundle name.
    pub name: String,
    /// Bundle version.
    pub version: String,
    /// The embedder bundle whose BERT starts the cross-encoder (its head starts at zero).
    pub init: PathBuf,
    /// The bi-encoder that mines the hard negatives and is the first stage at validation and test.
    pub miner: PathBuf,
    /// The benchmark's WordNet.
    pub wordnet: WordNetSource,
    /// Epochs over the training pairs.
    pub epochs: usize,
    /// Queries per step, each with its positive and its hard negatives.
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
    /// Hard negatives per query (`per_query`) and how deep the miner searches for them (`depth`).
    pub mining: MiningOptions,
    /// Validation queries asked after each epoch.
    pub val_queries: usize,
    /// Documents searched at validation (every judged one included).
    pub val_corpus: usize,
    /// First-stage candidates the cross-encoder reorders at validation and test.
    pub rerank_top: usize,
    /// Test queries asked of the exported bundle (all 2,000 when `None`).
    pub test_queries: Option<usize>,
    /// Documents searched at the test (the whole corpus when `None`).
    pub test_corpus: Option<usize>,
    /// Bundle directory to write.
    pub out: PathBuf,
    /// Continue from the checkpoint.
    pub resume: bool,
    /// Progress output.
    pub progress: bool,
}

impl CrossEncoderConfig {
    /// A run from `init`, mining with `miner`, with the usual cross-encoder fine-tuning settings:
    /// 16 queries a step, 7 hard negatives each from the miner's top 30, AdamW at 2e-5 with 10%
    /// warm-up, one epoch; validation reranks the miner's top 50 for 500 queries over 10,000
    /// glosses.
    pub fn new(init: PathBuf, miner: PathBuf, wordnet: WordNetSource, out: PathBuf) -> CrossEncoderConfig {
        let name = out.file_name().map_or_else(|| "cross-encoder".into(), |n| n.to_string_lossy().into_owned());
        CrossEncoderConfig {
            name,
            version: "1".into(),
            init,
            miner,
            wordnet,
            epochs: 1,
            batch_size: 16,
            optim: AdamWConfig { lr: 2e-5, weight_decay: 0.01, ..AdamWConfig::default() },
            warmup_fraction: 0.1,
            clip_grad_norm: Some(1.0),
            seed: 0,
            max_pairs: None,
            mining: MiningOptions { per_query: 7, depth: 30, ..MiningOptions::default() },
            val_queries: 500,
            val_corpus: 10_000,
            rerank_top: 50,
            test_queries: None,
            test_corpus: None,
            out,
            resume: false,
            progress: true,
        }
    }

    /// Refuses settings that cannot train or measure.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 || self.batch_size == 0 || self.val_queries == 0 || self.val_corpus == 0 {
            return Err(Error::InvalidArgument("epochs, the batch size and validation sizes must be positive".into()));
        }
        if self.mining.per_query == 0 {
            return Err(Error::InvalidArgument(
                "--negatives must be at least 1: the loss ranks the positive against its negatives".into(),
            ));
        }
        if self.rerank_top == 0 {
            return Err(Error::InvalidArgument("--rerank-top must be at least 1".into()));
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
            ("negatives".into(), json!(self.mining.per_query)),
            ("mine_depth".into(), json!(self.mining.depth)),
            ("mine_skip_top".into(), json!(self.mining.skip_top)),
            ("mine_corpus".into(), json!(self.mining.corpus_limit)),
            ("rerank_top".into(), json!(self.rerank_top)),
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
            ..LoopSettings::beside(&self.out, &self.name, self.optim, self.fingerprint())
        }
    }

    fn fingerprint(&self) -> String {
        let text =
            format!("cross_encoder|{:?}|{:?}|{:?}|{:?}", self.hyperparameters(), self.init, self.miner, self.wordnet);
        tandem_runtime::bundle::sha256_hex(text.as_bytes())
    }
}
