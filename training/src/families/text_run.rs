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

use super::common_run::CommonRun;
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
    /// What every family's run shares; `batch_size` counts pairs, texts or queries, as the
    /// family defines them.
    pub common: CommonRun,
    /// The benchmark's WordNet.
    pub wordnet: WordNetSource,
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
}

impl TextRun {
    /// A run writing `out` (named after it, else `fallback_name`) with the fine-tuning defaults
    /// of sentence-transformers: AdamW at `lr` (weight decay 0.01) with 10% warm-up, clipping at
    /// 1, one epoch of `batch_size`; validation asks 500 queries over 10,000 glosses and the test
    /// the whole benchmark.
    pub fn new(wordnet: WordNetSource, out: PathBuf, fallback_name: &str, batch_size: usize, lr: f64) -> TextRun {
        let optim = AdamWConfig { lr, weight_decay: 0.01, ..AdamWConfig::default() };
        TextRun {
            common: CommonRun { warmup_fraction: 0.1, ..CommonRun::new(out, fallback_name, 1, batch_size, optim) },
            wordnet,
            max_seq_length: None,
            val_queries: 500,
            val_corpus: 10_000,
            test_queries: None,
            test_corpus: None,
            half: false,
        }
    }

    /// Refuses shared settings that cannot train or measure; a family whose loss needs several
    /// items per batch (in-batch negatives) asks for `min_batch` of them.
    pub fn validate(&self, min_batch: usize) -> Result<()> {
        self.common.validate(min_batch)?;
        if self.val_queries == 0 || self.val_corpus == 0 {
            return Err(Error::InvalidArgument("validation sizes must be positive".into()));
        }
        if self.max_seq_length == Some(0) {
            return Err(Error::InvalidArgument("--max-seq-length must be positive".into()));
        }
        Ok(())
    }

    /// The shared hyperparameters recorded in the bundle's provenance (and fingerprinted); a
    /// family adds its own to these.
    pub fn hyperparameters(&self) -> BTreeMap<String, serde_json::Value> {
        let mut all = self.common.hyperparameters();
        all.extend([("max_seq_length".into(), json!(self.max_seq_length)), ("half".into(), json!(self.half))]);
        all
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
            weights_dtype: if self.half { DType::F16 } else { DType::F32 },
            ..self.common.loop_settings(fingerprint)
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
        assert_eq!(run().common.name, "x");
        assert_eq!(run().common.warmup_fraction, 0.1);
        run().validate(2).unwrap();
        assert!(run().validate(8).is_err(), "a loss that needs 8 items per batch refuses 4");
        for broken in [
            TextRun { common: CommonRun { epochs: 0, ..run().common }, ..run() },
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
