//! The settings of a cross-encoder training run, with their validation, provenance and fingerprint.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::json;

use crate::families::text_run::{TextRun, WordNetSource};
use crate::retrieval::MiningOptions;
use crate::trainer::LoopSettings;
use crate::{Error, Result};

/// Everything a cross-encoder training run is made of.
#[derive(Debug, Clone)]
pub struct CrossEncoderConfig {
    /// The settings every retrieval run shares; `batch_size` counts queries, each with its
    /// positive and its hard negatives.
    pub run: TextRun,
    /// The embedder bundle whose BERT starts the cross-encoder (its head starts at zero).
    pub init: PathBuf,
    /// The bi-encoder that mines the hard negatives and is the first stage at validation and test.
    pub miner: PathBuf,
    /// Train on a seeded sample of this many pairs.
    pub max_pairs: Option<usize>,
    /// Hard negatives per query (`per_query`) and how deep the miner searches for them (`depth`).
    pub mining: MiningOptions,
    /// First-stage candidates the cross-encoder reorders at validation and test.
    pub rerank_top: usize,
    /// The score head's learning rate as a multiple of the body's. The head starts at zero, so at
    /// the body's fine-tuning rate (2e-5) it could move only about that much per step and the
    /// listwise loss stayed at its uniform value, ln 8, through 128 steps; the head, a linear
    /// probe, takes a linear probe's rate.
    pub head_lr_scale: f64,
    /// Negatives per query drawn at random from the training glosses, after the hard ones. With
    /// hard negatives alone, every negative is a gloss the miner finds more like the query than
    /// most others, often more than the positive, so "the least similar gloss is the answer" fits
    /// the training lists; random ones rule that shortcut out.
    pub random_negatives: usize,
}

impl CrossEncoderConfig {
    /// A run from `init`, mining with `miner`, with the settings that ranked best at equal budget
    /// on WordNet (BENCHMARKS.md): 16 queries a step, each with 3 hard negatives from the miner's
    /// top 30 and 4 random ones, AdamW at 5e-5 (the head at 100 times that) with 10% warm-up, one
    /// epoch; validation reranks the miner's top 50 for 500 queries over 10,000 glosses.
    pub fn new(init: PathBuf, miner: PathBuf, wordnet: WordNetSource, out: PathBuf) -> CrossEncoderConfig {
        CrossEncoderConfig {
            run: TextRun::new(wordnet, out, "cross-encoder", 16, 5e-5),
            init,
            miner,
            max_pairs: None,
            mining: MiningOptions { per_query: 3, depth: 30, ..MiningOptions::default() },
            rerank_top: 50,
            head_lr_scale: 100.0,
            random_negatives: 4,
        }
    }

    /// Refuses settings that cannot train or measure.
    pub fn validate(&self) -> Result<()> {
        self.run.validate(1)?;
        if self.mining.per_query == 0 {
            return Err(Error::InvalidArgument(
                "--negatives must be at least 1: the loss ranks the positive against its negatives".into(),
            ));
        }
        if !(self.head_lr_scale.is_finite() && self.head_lr_scale > 0.0) {
            return Err(Error::InvalidArgument(format!(
                "--head-lr-scale must be finite and positive, got {}",
                self.head_lr_scale
            )));
        }
        if self.rerank_top == 0 {
            return Err(Error::InvalidArgument("--rerank-top must be at least 1".into()));
        }
        Ok(())
    }

    /// The hyperparameters recorded in the bundle's provenance (and fingerprinted).
    pub fn hyperparameters(&self) -> BTreeMap<String, serde_json::Value> {
        let mut all = self.run.hyperparameters();
        all.extend([
            ("max_pairs".into(), json!(self.max_pairs)),
            ("negatives".into(), json!(self.mining.per_query)),
            ("mine_depth".into(), json!(self.mining.depth)),
            ("mine_skip_top".into(), json!(self.mining.skip_top)),
            ("mine_corpus".into(), json!(self.mining.corpus_limit)),
            ("rerank_top".into(), json!(self.rerank_top)),
            ("head_lr_scale".into(), json!(self.head_lr_scale)),
            ("random_negatives".into(), json!(self.random_negatives)),
        ]);
        all
    }

    /// What the shared loop needs.
    pub fn loop_settings(&self) -> LoopSettings {
        let fingerprint = self.run.fingerprint("cross_encoder", &self.hyperparameters(), &[&self.init, &self.miner]);
        self.run.loop_settings(fingerprint)
    }
}
