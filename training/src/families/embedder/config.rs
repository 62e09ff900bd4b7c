//! The settings of an embedder fine-tuning run, with their validation, provenance and fingerprint.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::json;

use crate::families::text_run::{TextRun, WordNetSource};
use crate::retrieval::MiningOptions;
use crate::trainer::LoopSettings;
use crate::{Error, Result};

/// Everything an embedder fine-tuning run is made of.
#[derive(Debug, Clone)]
pub struct EmbedderConfig {
    /// The settings every retrieval run shares; `batch_size` counts pairs, and each query's
    /// negatives are the other pairs' glosses.
    pub run: TextRun,
    /// The embedder bundle to start from.
    pub init: PathBuf,
    /// Train on a seeded sample of this many pairs.
    pub max_pairs: Option<usize>,
    /// Cosine similarities are multiplied by this before the softmax (sentence-transformers: 20).
    pub scale: f64,
    /// Hard negatives per pair, mined by the model being trained at the start of every epoch
    /// (`per_query` 0: in-batch negatives only). Every query of a batch is scored against every
    /// gloss of the batch, positives and mined negatives alike.
    pub mining: MiningOptions,
}

impl EmbedderConfig {
    /// A run from `init` with sentence-transformers' fine-tuning defaults: batch 32, AdamW at
    /// 2e-5 with 10% warm-up, scale 20, one epoch; validation on 500 queries over 10,000 glosses.
    pub fn new(init: PathBuf, wordnet: WordNetSource, out: PathBuf) -> EmbedderConfig {
        EmbedderConfig {
            run: TextRun::new(wordnet, out, "embedder", 32, 2e-5),
            init,
            max_pairs: None,
            scale: 20.0,
            mining: MiningOptions { per_query: 0, ..MiningOptions::default() },
        }
    }

    /// Refuses settings that cannot train.
    pub fn validate(&self) -> Result<()> {
        self.run.validate(2)?;
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(Error::InvalidArgument(format!("--scale must be finite and positive, got {}", self.scale)));
        }
        Ok(())
    }

    /// The hyperparameters recorded in the bundle's provenance (and fingerprinted).
    pub fn hyperparameters(&self) -> BTreeMap<String, serde_json::Value> {
        let mut all = self.run.hyperparameters();
        all.extend([
            ("max_pairs".into(), json!(self.max_pairs)),
            ("scale".into(), json!(self.scale)),
            ("hard_negatives".into(), json!(self.mining.per_query)),
            ("mine_depth".into(), json!(self.mining.depth)),
            ("mine_skip_top".into(), json!(self.mining.skip_top)),
            ("mine_corpus".into(), json!(self.mining.corpus_limit)),
        ]);
        all
    }

    /// What the shared loop needs.
    pub fn loop_settings(&self) -> LoopSettings {
        self.run.loop_settings(self.run.fingerprint("embedder", &self.hyperparameters(), &[&self.init]))
    }
}
