//! What a run reports: per-epoch records and the final summary written next to the bundle.

use std::collections::BTreeMap;

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
    /// Validation loss (cross-entropy of the main head).
    pub val_loss: f64,
    /// Validation accuracy of the main head.
    pub val_accuracy: f64,
    /// Training throughput.
    pub images_per_second: f64,
    /// Learning rate at the end of the epoch.
    pub lr: f64,
    /// The phase of a multi-stage method, e.g. `branches` or `unfreeze-2` for dual-io.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// Method-specific measurements, e.g. `val_aux_accuracy` of a dual-head network or
    /// `branch_b_val_accuracy` of dual-io; curves plot the accuracies among them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, f64>,
}

/// The head mixture DHO chose on the validation split, and what the pure heads reach there.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HeadMixtureReport {
    /// Weight of the main head's softmax.
    pub alpha: f64,
    /// Temperature of the auxiliary head.
    pub beta: f64,
    /// Validation accuracy of the mixture (what is served).
    pub val_accuracy: f64,
    /// Mean negative log-likelihood of the mixture on validation, the tie-breaker of the search.
    pub val_nll: f64,
    /// Validation accuracy of the main (cross-entropy) head alone.
    pub main_head_val_accuracy: f64,
    /// Validation accuracy of the auxiliary (distillation) head alone.
    pub aux_head_val_accuracy: f64,
}

/// How the two branches of dual-io training compared, and what merging them gave.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DualIoReport {
    /// The merge rule.
    pub merge: String,
    /// Validation accuracy of branch A (plain images) at the end of the branch stage.
    pub branch_a_val_accuracy: f64,
    /// Validation accuracy of branch B (distorted images) at the end of the branch stage.
    pub branch_b_val_accuracy: f64,
    /// Validation accuracy of the merged network before any fine-tuning.
    pub merged_val_accuracy: f64,
    /// Progressive-unfreezing stages run after the merge.
    pub unfreeze_stages: usize,
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
    /// Final validation accuracy of the model as served (for DHO, of the chosen head mixture).
    pub val_accuracy: f64,
    /// Test accuracy of the exported bundle, measured through the serving path.
    pub test_accuracy: f64,
    /// Test images.
    pub test_n: usize,
    /// Wall time of the training loop, in seconds, across resumes.
    pub train_seconds: f64,
    /// Per-epoch records.
    pub history: Vec<EpochRecord>,
    /// All hyperparameters, as recorded in the bundle's provenance.
    #[serde(default)]
    pub hyperparameters: BTreeMap<String, serde_json::Value>,
    /// DHO's chosen head mixture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_mixture: Option<HeadMixtureReport>,
    /// Dual-io's branch and merge measurements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dual_io: Option<DualIoReport>,
    /// The learning-curve PNG written next to the bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub curve: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_without_the_newer_fields_still_load() {
        let old = r#"{"epoch":1,"train_loss":0.5,"train_accuracy":0.8,"val_loss":0.6,"val_accuracy":0.7,"images_per_second":100.0,"lr":0.001}"#;
        let record: EpochRecord = serde_json::from_str(old).unwrap();
        assert!(record.stage.is_none() && record.extra.is_empty());
        assert_eq!(serde_json::to_string(&record).unwrap(), old);
    }
}
