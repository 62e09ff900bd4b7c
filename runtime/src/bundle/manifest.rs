//! The bundle manifest: a versioned, typed description of what a bundle holds and where it came from.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::models::cnn::CnnConfig;

/// The manifest schema this runtime reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// The contents of `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Schema of this file; loading refuses any other value.
    pub schema_version: u32,
    /// Model name, the first half of the `name@version` id.
    pub name: String,
    /// Model version, the second half of the `name@version` id.
    pub version: String,
    /// Which model family serves this bundle.
    pub kind: ModelKind,
    /// The architecture and its full config; weights must match it exactly.
    pub architecture: Architecture,
    /// What the model expects as input.
    pub input: InputSpec,
    /// Class labels, in logit order.
    pub labels: Vec<String>,
    /// How the head outputs become probabilities at inference.
    #[serde(default)]
    pub inference: InferenceSpec,
    /// Where the weights came from.
    pub provenance: Provenance,
    /// Metrics measured at export, e.g. `val_accuracy`, `test_accuracy`, `params`.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// Export time, RFC 3339.
    pub created_at: String,
}

/// The model families a bundle can hold.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Image classifier.
    Classifier,
}

impl ModelKind {
    /// The wire name of the kind.
    pub fn as_str(&self) -> &'static str {
        match self {
            ModelKind::Classifier => "classifier",
        }
    }
}

/// An architecture with its config, tagged by `type`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Architecture {
    /// A config-driven convolutional classifier.
    Cnn(CnnConfig),
}

/// What the model expects: an image of `channels × height × width` on the 8-bit scale, normalised as
/// `(pixel / 255 - mean) / std` before the first layer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// `[channels, height, width]`.
    pub shape: [usize; 3],
    /// Element type that the model computes in.
    pub dtype: String,
    /// The scale that requests arrive on.
    pub pixel_range: [f32; 2],
    /// Mean subtracted after scaling to 0..1.
    pub mean: f32,
    /// Standard deviation divided by after subtracting the mean.
    pub std: f32,
    /// Filter used when a request image has another size.
    pub resize_filter: String,
}

/// How to turn the network's heads into class probabilities.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InferenceSpec {
    /// Softmax of the main head.
    #[default]
    MainHead,
    /// Dual-head optimisation: `p = alpha * softmax(z_main) + (1 - alpha) * softmax(z_aux / beta)`.
    HeadMixture {
        /// Weight of the main (cross-entropy) head.
        alpha: f32,
        /// Temperature applied to the auxiliary (distillation) head.
        beta: f32,
    },
}

/// Where a bundle's weights came from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// Training dataset name.
    pub dataset: String,
    /// Checksum of the dataset's source files.
    pub dataset_sha256: String,
    /// Training recipe, e.g. `supervised` or `kd`.
    pub recipe: String,
    /// All hyperparameters of the run.
    #[serde(default)]
    pub hyperparameters: BTreeMap<String, serde_json::Value>,
    /// Bundle id of the teacher, for distilled models.
    #[serde(default)]
    pub teacher: Option<String>,
}
