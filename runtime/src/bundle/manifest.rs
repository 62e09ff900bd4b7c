//! The bundle manifest: a versioned, typed description of what a bundle holds and where it came from.
//!
//! Schema 2 keeps what every bundle has at the top (identity, files, provenance, metrics) and puts
//! what only one family has into one section tagged by `kind`, so a kind and its architecture can
//! never disagree. Schema-1 manifests (classifiers only) are migrated in memory by [`super::migrate`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::diffusion::BetaSchedule;
use crate::models::cnn::CnnConfig;
use crate::models::image_text::ImageTextConfig;
use crate::models::image_tokenizer::ImageTokenizerConfig;
use crate::models::sentence_encoder::{BertConfig, Pooling};
use crate::models::unet::UNetConfig;

/// The manifest schema this runtime writes; older ones are migrated on load.
pub const SCHEMA_VERSION: u32 = 2;

/// The contents of `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Schema of this file; loading refuses versions it does not know.
    pub schema_version: u32,
    /// Model name, the first half of the `name@version` id.
    pub name: String,
    /// Model version, the second half of the `name@version` id.
    pub version: String,
    /// The family section: which family serves this bundle, with its architecture and settings.
    pub family: FamilySpec,
    /// Every file of the bundle besides the manifest, with its digest; the bundle id hashes them all.
    pub files: Vec<FileEntry>,
    /// Where the weights came from.
    pub provenance: Provenance,
    /// Metrics measured at export, e.g. `val_accuracy`, `test_accuracy`, `params`.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// Export time, RFC 3339.
    pub created_at: String,
}

impl Manifest {
    /// The family's wire name, e.g. `classifier`.
    pub fn kind(&self) -> &'static str {
        self.family.kind()
    }

    /// The classifier section, if this bundle is a classifier.
    pub fn classifier(&self) -> Option<&ClassifierSpec> {
        match &self.family {
            FamilySpec::Classifier(spec) => Some(spec),
            _ => None,
        }
    }

    /// The embedder section, if this bundle is an embedder.
    pub fn embedder(&self) -> Option<&EmbedderSpec> {
        match &self.family {
            FamilySpec::Embedder(spec) => Some(spec),
            _ => None,
        }
    }

    /// The cross-encoder section, if this bundle is a cross-encoder.
    pub fn cross_encoder(&self) -> Option<&CrossEncoderSpec> {
        match &self.family {
            FamilySpec::CrossEncoder(spec) => Some(spec),
            _ => None,
        }
    }

    /// The image–text section, if this bundle is an image–text dual encoder.
    pub fn image_text(&self) -> Option<&ImageTextSpec> {
        match &self.family {
            FamilySpec::ImageText(spec) => Some(spec),
            _ => None,
        }
    }
}

/// One family section, tagged by `kind`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FamilySpec {
    /// An image classifier.
    Classifier(ClassifierSpec),
    /// A text embedder (sentence encoder).
    Embedder(EmbedderSpec),
    /// A DDPM teacher: an ε-predicting UNet sampled by ODE solvers.
    Diffusion(DiffusionSpec),
    /// A consistency model: a UNet that maps a noisy image to its clean end point in one call.
    Consistency(ConsistencySpec),
    /// An image tokenizer: images to discrete codes and back (DualToken and its baselines).
    ImageTokenizer(ImageTokenizerSpec),
    /// A cross-encoder: a (query, document) pair read jointly to one relevance score, for reranking.
    CrossEncoder(CrossEncoderSpec),
    /// An image–text dual encoder: images and texts into one space, zero-shot classification.
    ImageText(ImageTextSpec),
}

impl FamilySpec {
    /// Every kind this runtime serves, in a fixed order; docs and tidy tests walk it.
    pub const KINDS: [&'static str; 7] =
        ["classifier", "embedder", "diffusion", "consistency", "image_tokenizer", "cross_encoder", "image_text"];

    /// The wire name of the kind.
    pub fn kind(&self) -> &'static str {
        match self {
            FamilySpec::Classifier(_) => "classifier",
            FamilySpec::Embedder(_) => "embedder",
            FamilySpec::Diffusion(_) => "diffusion",
            FamilySpec::Consistency(_) => "consistency",
            FamilySpec::ImageTokenizer(_) => "image_tokenizer",
            FamilySpec::CrossEncoder(_) => "cross_encoder",
            FamilySpec::ImageText(_) => "image_text",
        }
    }
}

/// A file of the bundle and its digest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Path relative to the bundle directory, `/`-separated, never leaving it.
    pub path: String,
    /// Lowercase hex sha256 of the file's bytes.
    pub sha256: String,
}

/// An image classifier: a CNN, its input contract, its labels and how probabilities are formed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClassifierSpec {
    /// The network and its full config; weights must match it exactly.
    pub architecture: CnnConfig,
    /// What the model expects as input.
    pub input: InputSpec,
    /// Class labels, in logit order.
    pub labels: Vec<String>,
    /// How the head outputs become probabilities at inference.
    #[serde(default)]
    pub inference: InferenceSpec,
}

/// A DDPM teacher. Images live on [−1, 1] inside the model (0 is −1, 255 is 1); the UNet predicts
/// the noise ε of x_t = √ᾱ_t·x₀ + √(1 − ᾱ_t)·ε, conditioned on the integer timestep t and a class.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DiffusionSpec {
    /// The network and its full config; weights must match it exactly.
    pub architecture: UNetConfig,
    /// The β schedule the model was trained on.
    pub schedule: BetaSchedule,
    /// Training timesteps T (1000 for DDPM).
    pub train_steps: usize,
    /// Class labels, by class index; empty for an unconditional model.
    pub labels: Vec<String>,
    /// The classifier-free guidance scale used when a request names none (1 is plain conditional).
    pub guidance: f64,
}

/// A consistency model (Song et al.): f(x, σ) = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x, c_noise(σ)) on
/// the variance-exploding σ range of Karras et al., images on [−1, 1] as for [`DiffusionSpec`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConsistencySpec {
    /// The network F and its full config; weights must match it exactly.
    pub architecture: UNetConfig,
    /// The smallest σ, where f is the identity.
    pub sigma_min: f64,
    /// The largest σ, where sampling starts from σ_max·z.
    pub sigma_max: f64,
    /// The data's standard deviation in the parametrization (0.5 in the papers).
    pub sigma_data: f64,
    /// Class labels, by class index; empty for an unconditional model.
    pub labels: Vec<String>,
    /// The σ to sample at for each supported step count, chosen on validation: `"2": [80, 0.8]`
    /// starts at 80 and re-noises to 0.8 once. A request may give its own.
    pub sigmas: BTreeMap<String, Vec<f64>>,
    /// What the UNet predicts and how the model's output is made from it (`edm` when absent).
    #[serde(default)]
    pub parametrization: crate::models::consistency::Parametrization,
}

/// An image tokenizer: a ViT encoder whose features are quantised into one or two streams of
/// residual codes, a decoder from the pixel stream back to an image, and (with a semantic stream)
/// the encoder's remaining layers and head run on the de-quantised semantic codes. Images are
/// scaled from 0–255 to [−1, 1].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ImageTokenizerSpec {
    /// The network and its full config; weights must match it exactly.
    pub architecture: ImageTokenizerConfig,
    /// Class labels of the head, by class index.
    pub labels: Vec<String>,
}

/// A text embedder: a BERT-family encoder, its tokenizer file and its pooling.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmbedderSpec {
    /// The encoder's config, as read from the source model's `config.json`.
    pub architecture: BertConfig,
    /// The tokenizer file inside the bundle (HF `tokenizer.json` format); it must be listed in `files`.
    pub tokenizer: String,
    /// How token states become one vector.
    pub pooling: Pooling,
    /// Whether embeddings are L2-normalised unless a request says otherwise.
    pub normalize: bool,
    /// Longest input in tokens, special tokens included; longer inputs are truncated or refused.
    pub max_seq_length: usize,
}

/// A cross-encoder: a BERT-family encoder reading `[CLS] query [SEP] document [SEP]` (token types
/// 0 then 1), pooled, then a linear head (`score.weight` `[1, hidden]`, `score.bias` `[1]`) to one
/// relevance logit per pair.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CrossEncoderSpec {
    /// The encoder's config; `type_vocab_size` must be at least 2, for the document's segment.
    pub architecture: BertConfig,
    /// The tokenizer file inside the bundle (HF `tokenizer.json` format, with a pair template); it
    /// must be listed in `files`.
    pub tokenizer: String,
    /// How token states become the vector the head reads: `mean` when absent, since the embedders
    /// a cross-encoder starts from (all-MiniLM-L6-v2) were trained with mean pooling.
    #[serde(default = "mean_pooling")]
    pub pooling: Pooling,
    /// Longest pair in tokens, special tokens included; longer pairs are truncated (the longer
    /// text first) or refused.
    pub max_seq_length: usize,
}

fn mean_pooling() -> Pooling {
    Pooling::Mean
}

/// An image–text dual encoder: an image tower and a text tower projecting into one space of unit
/// vectors, scored by cosine times a learned scale (CLIP). Images are read as a classifier reads
/// them; texts as an embedder reads them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ImageTextSpec {
    /// Both towers and their full config; weights must match it exactly.
    pub architecture: ImageTextConfig,
    /// What the image tower expects; `shape` must be the architecture's input shape.
    pub input: InputSpec,
    /// The tokenizer file inside the bundle (HF `tokenizer.json` format); it must be listed in
    /// `files`.
    pub tokenizer: String,
    /// Longest text in tokens, special tokens included; longer texts are truncated or refused.
    pub max_seq_length: usize,
    /// The class names zero-shot classification scores images against when a request names no
    /// labels of its own: the classes the captions of training described.
    pub labels: Vec<String>,
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
