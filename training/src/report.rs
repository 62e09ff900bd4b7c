//! What a run reports: per-epoch records and the final summary written next to the bundle.

use serde::{Deserialize, Serialize};

/// One epoch's measurements.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochRecord {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Training accuracy on the (augmented) batches seen.
    pub train_accuracy: f64,
    /// Validation loss (cross-entropy).
    pub val_loss: f64,
    /// Validation accuracy.
    pub val_accuracy: f64,
    /// Training throughput.
    pub images_per_second: f64,
    /// Learning rate at the end of the epoch.
    pub lr: f64,
}

/// The outcome of a training run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainSummary {
    /// Where the bundle was written.
    pub bundle_dir: String,
    /// Its id.
    pub bundle_id: String,
    /// `name@version`.
    pub model: String,
    /// Training recipe.
    pub method: String,
    /// Dataset name.
    pub dataset: String,
    /// Trainable parameters.
    pub params: usize,
    /// Final validation accuracy.
    pub val_accuracy: f64,
    /// Test accuracy of the exported bundle, measured through the serving path.
    pub test_accuracy: f64,
    /// Test images.
    pub test_n: usize,
    /// Wall time of the training loop, in seconds, across resumes.
    pub train_seconds: f64,
    /// Per-epoch records.
    pub history: Vec<EpochRecord>,
}
