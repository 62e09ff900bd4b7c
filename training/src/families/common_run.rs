//! The settings every family's run hands the shared loop, whatever it trains: the bundle it
//! writes, how many epochs of what batch, the optimiser and its schedule, the seed, and whether
//! it resumes and shows progress. Each family's config holds one in a field named `common`, so a
//! setting every run shares is declared, validated, recorded and handed to the loop once.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::json;

use crate::optim::AdamWConfig;
use crate::trainer::LoopSettings;
use crate::{Error, Result};

/// The settings shared by every family's run.
#[derive(Debug, Clone)]
pub struct CommonRun {
    /// Bundle name.
    pub name: String,
    /// Bundle version.
    pub version: String,
    /// Epochs over the family's training items.
    pub epochs: usize,
    /// Items per step (images, pairs, texts or queries, as the family defines them).
    pub batch_size: usize,
    /// AdamW settings; `lr` is the peak.
    pub optim: AdamWConfig,
    /// Warm-up as a fraction of the schedule's steps.
    pub warmup_fraction: f64,
    /// Gradient clipping by global norm.
    pub clip_grad_norm: Option<f64>,
    /// Seeds initialisation, the items' order and whatever the family draws at random.
    pub seed: u64,
    /// Bundle directory to write.
    pub out: PathBuf,
    /// Continue from the checkpoint.
    pub resume: bool,
    /// Progress output.
    pub progress: bool,
}

impl CommonRun {
    /// A run writing `out`, named after its last component (else `fallback_name`), at version 1
    /// and seed 0, clipping at 1, from scratch with progress shown.
    pub fn new(out: PathBuf, fallback_name: &str, epochs: usize, batch_size: usize, optim: AdamWConfig) -> CommonRun {
        let name = out.file_name().map_or_else(|| fallback_name.into(), |n| n.to_string_lossy().into_owned());
        CommonRun {
            name,
            version: "1".into(),
            epochs,
            batch_size,
            optim,
            warmup_fraction: 0.0,
            clip_grad_norm: Some(1.0),
            seed: 0,
            out,
            resume: false,
            progress: true,
        }
    }

    /// Refuses a run with no epochs or a batch below `min_batch` (a loss over in-batch negatives
    /// needs two).
    pub fn validate(&self, min_batch: usize) -> Result<()> {
        if self.epochs == 0 {
            return Err(Error::InvalidArgument("--epochs must be positive".into()));
        }
        if self.batch_size < min_batch.max(1) {
            return Err(Error::InvalidArgument(format!(
                "--batch-size must be at least {}, got {}",
                min_batch.max(1),
                self.batch_size
            )));
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
        ])
    }

    /// What the shared loop needs; `fingerprint` is the family's (it knows its own settings).
    pub fn loop_settings(&self, fingerprint: String) -> LoopSettings {
        LoopSettings {
            seed: self.seed,
            warmup_fraction: self.warmup_fraction,
            clip_grad_norm: self.clip_grad_norm,
            resume: self.resume,
            progress: self.progress,
            ..LoopSettings::beside(&self.out, &self.name, self.optim, fingerprint)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> CommonRun {
        CommonRun::new("runs/x".into(), "fallback", 3, 4, AdamWConfig { lr: 1e-3, ..AdamWConfig::default() })
    }

    #[test]
    fn a_run_is_named_after_its_directory_and_refuses_what_cannot_train() {
        assert_eq!(run().name, "x");
        assert_eq!(CommonRun::new("/".into(), "fallback", 1, 1, AdamWConfig::default()).name, "fallback");
        run().validate(2).unwrap();
        assert!(run().validate(8).is_err(), "a loss that needs 8 items per batch refuses 4");
        assert!(CommonRun { epochs: 0, ..run() }.validate(1).is_err());
        assert!(CommonRun { batch_size: 0, ..run() }.validate(0).is_err(), "a batch is never empty");
    }

    #[test]
    fn the_loop_gets_every_shared_setting() {
        let common = CommonRun { seed: 7, warmup_fraction: 0.1, resume: true, progress: false, ..run() };
        let settings = common.loop_settings("f".into());
        assert_eq!((settings.seed, settings.warmup_fraction, settings.clip_grad_norm), (7, 0.1, Some(1.0)));
        assert_eq!((settings.resume, settings.progress, settings.optim.lr), (true, false, 1e-3));
        assert_eq!((settings.name.as_str(), settings.fingerprint.as_str()), ("x", "f"));
        assert_eq!(common.hyperparameters()["seed"], 7);
    }
}
