//! What every run on the WordNet retrieval benchmark (fine-tuning an embedder, distilling a
//! student, training a cross-encoder) is made of besides its method: the bundle it writes, where
//! WordNet comes from, the optimiser and loop, how long texts may be, how much of the benchmark
//! validation and the test ask, and the stored precision. The families keep only their own
//! settings and read these through one field, so a new shared setting is added once.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::PathBuf;

use candle_core::DType;
use serde_json::json;

use crate::optim::AdamWConfig;
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

/// The settings shared by the retrieval families.
#[derive(Debug, Clone)]
pub struct TextRun {
    /// Bundle name.
    pub name: String,
    /// Bundle version.
    pub version: String,
    /// The benchmark's WordNet.
    pub wordnet: WordNetSource,
    /// Epochs over the family's training items.
    pub epochs: usize,
    /// Items per step (pairs, texts or queries, as the family defines them).
    pub batch_size: usize,
    /// AdamW settings; `lr` is the peak.
    pub optim: AdamWConfig,
    /// Warm-up as a fraction of all steps.
    pub warmup_fraction: f64,
    /// Gradient clipping by global norm.
    pub clip_grad_norm: Option<f64>,
    /// Seeds the items' order and any sample of them.
    pub seed: u64,
    /// Truncate texts to this many tokens (at most the starting bundle's limit).
    pub max_seq_length: Option<usize>,
    /// Validation queries asked after each epoch.
    pub val_queries: usize,
    /// Documents searched at validation (every judged one included).
    pub val_corpus: usize,
    /// Test queries asked of the exported bundle (all 2,000 when `None`).
    pub test_queries: Option<usize>,
    /// Documents searched at the test (the whole corpus when `None`).
    pub test_corpus: Option<usize>,
    /// Store the exported weights as F16 (half the bytes; served in F32), so that a student
    /// stays within its size budget through every stage it is trained in.
    pub half: bool,
    /// Bundle directory to write.
    pub out: PathBuf,
    /// Continue from the checkpoint.
    pub resume: bool,
    /// Progress output.
    pub progress: bool,
}

impl TextRun {
    /// A run writing `out` (named after it, else `fallback_name`) with the fine-tuning defaults
    /// of sentence-transformers: AdamW at `lr` (weight decay 0.01) with 10% warm-up, clipping at
    /// 1, one epoch of `batch_size`; validation asks 500 queries over 10,000 glosses and the test
    /// the whole benchmark.
    pub fn new(wordnet: WordNetSource, out: PathBuf, fallback_name: &str, batch_size: usize, lr: f64) -> TextRun {
        let name = out.file_name().map_or_else(|| fallback_name.into(), |n| n.to_string_lossy().into_owned());
        TextRun {
            name,
            version: "1".into(),
            wordnet,
            epochs: 1,
            batch_size,
            optim: AdamWConfig { lr, weight_decay: 0.01, ..AdamWConfig::default() },
            warmup_fraction: 0.1,
            clip_grad_norm: Some(1.0),
            seed: 0,
            max_seq_length: None,
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

    /// Refuses shared settings that cannot train or measure; a family whose loss needs several
    /// items per batch (in-batch negatives) asks for `min_batch` of them.
    pub fn validate(&self, min_batch: usize) -> Result<()> {
        if self.epochs == 0 || self.val_queries == 0 || self.val_corpus == 0 {
            return Err(Error::InvalidArgument("epochs and validation sizes must be positive".into()));
        }
        if self.batch_size < min_batch.max(1) {
            return Err(Error::InvalidArgument(format!(
                "--batch-size must be at least {}, got {}",
                min_batch.max(1),
                self.batch_size
            )));
        }
        if self.max_seq_length == Some(0) {
            return Err(Error::InvalidArgument("--max-seq-length must be positive".into()));
        }
        Ok(())
    }

    /// The shared hyperparameters recorded in the bundle's provenance (and fingerprinted); a
    /// family adds its own to these.
    pub fn hyperparameters(&self) -> BTreeMap<String, serde_json::Value> {
        BTreeMap::from([
            ("epochs".into(), json!(self.epochs)),
            ("batch_size".into(), json!(self.batch_size)),
            ("lr".into(), json!(self.optim.lr)),
            ("weight_decay".into(), json!(self.optim.weight_decay)),
            ("warmup_fraction".into(), json!(self.warmup_fraction)),
            ("clip_grad_norm".into(), json!(self.clip_grad_norm)),
            ("seed".into(), json!(self.seed)),
            ("max_seq_length".into(), json!(self.max_seq_length)),
            ("half".into(), json!(self.half)),
        ])
    }

    /// What identifies a run of `family` across a resume: its hyperparameters, WordNet's source
    /// and the bundles it reads (`sources`).
    pub fn fingerprint(
        &self,
        family: &str,
        hyperparameters: &BTreeMap<String, serde_json::Value>,
        sources: &[&dyn Debug],
    ) -> String {
        let text = format!("{family}|{hyperparameters:?}|{sources:?}|{:?}", self.wordnet);
        tandem_runtime::bundle::sha256_hex(text.as_bytes())
    }

    /// What the shared loop needs; `fingerprint` is the family's (it knows its own settings).
    pub fn loop_settings(&self, fingerprint: String) -> LoopSettings {
        LoopSettings {
            seed: self.seed,
            warmup_fraction: self.warmup_fraction,
            clip_grad_norm: self.clip_grad_norm,
            resume: self.resume,
            progress: self.progress,
            weights_dtype: if self.half { DType::F16 } else { DType::F32 },
            ..LoopSettings::beside(&self.out, &self.name, self.optim, fingerprint)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> TextRun {
        TextRun::new(WordNetSource::Dir("wn".into()), "runs/x".into(), "fallback", 4, 1e-3)
    }

    #[test]
    fn a_run_is_named_after_its_directory_and_refuses_settings_that_cannot_train() {
        assert_eq!(run().name, "x");
        assert_eq!(TextRun::new(WordNetSource::Dir("wn".into()), "/".into(), "fallback", 4, 1e-3).name, "fallback");
        run().validate(2).unwrap();
        assert!(run().validate(8).is_err(), "a loss that needs 8 items per batch refuses 4");
        for broken in [
            TextRun { epochs: 0, ..run() },
            TextRun { val_queries: 0, ..run() },
            TextRun { max_seq_length: Some(0), ..run() },
        ] {
            assert!(broken.validate(1).is_err(), "{broken:?}");
        }
    }

    #[test]
    fn the_fingerprint_follows_every_setting_a_resume_depends_on() {
        let a = run();
        let base = a.fingerprint("f", &a.hyperparameters(), &[&"teacher"]);
        assert_eq!(base, a.fingerprint("f", &a.hyperparameters(), &[&"teacher"]));
        assert_ne!(base, a.fingerprint("g", &a.hyperparameters(), &[&"teacher"]), "the family");
        assert_ne!(base, a.fingerprint("f", &a.hyperparameters(), &[&"other"]), "the bundles read");
        let half = TextRun { half: true, ..run() };
        assert_ne!(base, half.fingerprint("f", &half.hyperparameters(), &[&"teacher"]), "the settings");
        let moved = TextRun { wordnet: WordNetSource::Dir("other".into()), ..run() };
        assert_ne!(base, moved.fingerprint("f", &moved.hyperparameters(), &[&"teacher"]), "WordNet's source");
        assert_eq!(half.loop_settings(base).weights_dtype, DType::F16);
    }
}
