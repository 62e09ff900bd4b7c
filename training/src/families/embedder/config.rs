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
    /// A bi-encoder whose in-batch scores are distilled next to the contrastive loss.
    pub teacher: Option<ScoreTeacher>,
}

/// In-batch score distillation from a bi-encoder: the student's softmax over each query's row of
/// the batch's score matrix is pulled towards the teacher's over the same row
/// (`weight · T² · KL(teacher ‖ student)` at temperature `T`). The teacher's cosines are cheap
/// (the serving path, no gradients), and each row carries its order of every gloss in the batch,
/// which a label alone does not: what a student with fewer layers cannot learn from the pairs.
#[derive(Debug, Clone)]
pub struct ScoreTeacher {
    /// The teacher's embedder bundle.
    pub bundle: PathBuf,
    /// Weight of the distillation term next to the contrastive loss.
    pub weight: f64,
    /// Temperature of both softmaxes (over the scaled cosines).
    pub temperature: f64,
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
            teacher: None,
        }
    }

    /// Refuses settings that cannot train.
    pub fn validate(&self) -> Result<()> {
        self.run.validate(2)?;
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(Error::InvalidArgument(format!("--scale must be finite and positive, got {}", self.scale)));
        }
        if let Some(t) = &self.teacher {
            if !(t.weight.is_finite() && t.weight >= 0.0 && t.temperature.is_finite() && t.temperature > 0.0) {
                return Err(Error::InvalidArgument(format!(
                    "--teacher-weight must be finite and ≥ 0 and --teacher-temperature finite and positive, got {} and {}",
                    t.weight, t.temperature
                )));
            }
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
        if let Some(t) = &self.teacher {
            all.extend([
                ("teacher_weight".into(), json!(t.weight)),
                ("teacher_temperature".into(), json!(t.temperature)),
            ]);
        }
        all
    }

    /// What the shared loop needs.
    pub fn loop_settings(&self) -> LoopSettings {
        let mut inputs: Vec<&dyn std::fmt::Debug> = vec![&self.init];
        if let Some(t) = &self.teacher {
            inputs.push(&t.bundle);
        }
        self.run.loop_settings(self.run.fingerprint("embedder", &self.hyperparameters(), &inputs))
    }
}
