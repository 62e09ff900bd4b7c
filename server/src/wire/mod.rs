//! JSON shapes on the wire. They live here, not in the runtime, so that the HTTP contract can
//! evolve (and be documented) independently of the library's Rust types.

pub mod embedder;
pub mod generator;
pub mod image_tokenizer;
pub mod kserve;

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use tandem_runtime::image::MAX_SIDE;
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
};
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, PartialSchema, ToSchema};

use crate::error::ErrorType;
use crate::top_k;

/// Body of every failed request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"error": {"type": "not_found", "message": "no model named \"mnist\""}}))]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The error itself: a stable machine-readable type and a human-readable message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable kind of the error; the status code follows from it.
    #[serde(rename = "type")]
    pub kind: ErrorType,
    /// Human-readable detail; generic for 5xx responses.
    pub message: String,
}

/// Answer of the health probes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"status": "ready"}))]
pub struct HealthStatus {
    /// `live` or `ready`.
    pub status: String,
}

/// One model, as listed: a loaded one, or a bundle of the models directory that is loading or
/// failed to load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelSummary {
    /// `name@version`; any route taking a model id also accepts the bare name (highest version).
    pub id: String,
    /// Model name.
    pub name: String,
    /// Model version; empty for a bundle that failed to load before its version was known.
    pub version: String,
    /// Content hash of the bundle that serves, `sha256:<hex>`; empty while nothing of it serves.
    pub bundle_id: String,
    /// Model family, e.g. `classifier`; empty when a failed bundle's manifest cannot be read.
    pub kind: String,
    /// Whether the model serves: `ready` (also during a reload, and after a refused one),
    /// `loading` (its first load is running) or `failed` (its load failed; nothing serves).
    pub state: ModelState,
    /// Why the last load or reload from the models directory was refused; `null` after a success.
    /// A `ready` model with an error still serves the version it had.
    pub error: Option<String>,
}

/// Where a model stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelState {
    /// Its first load from the models directory is running; requests to it get 404 until it ends.
    Loading,
    /// It serves requests.
    Ready,
    /// Its load failed and it does not serve; `error` says why.
    Failed,
}

/// All models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelList {
    /// Ordered by id.
    pub models: Vec<ModelSummary>,
}

/// Body of `POST /v1/models`: which bundle of the models directory to load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "digits-student", "version": "1"}))]
pub struct LoadModelRequest {
    /// The bundle's directory under the models directory, and its manifest's name.
    // The attributes take only literals; a contract test holds them to the runtime's rule.
    #[schema(pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]*$", min_length = 1, max_length = 128)]
    pub name: String,
    /// The version to load; default the highest one present (the versioned layout) or the one
    /// `<name>/` holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]*$", min_length = 1, max_length = 128)]
    pub version: Option<String>,
}

/// What a model expects as input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InputSpec {
    /// `[channels, height, width]`; other image sizes are resized to it.
    pub shape: Vec<usize>,
    /// Element type the model computes in.
    pub dtype: String,
    /// Scale that pixel values arrive on, e.g. `[0, 255]`.
    pub pixel_range: Vec<f32>,
    /// Mean subtracted after scaling pixels to 0..1.
    pub mean: f32,
    /// Standard deviation divided by after subtracting the mean.
    pub std: f32,
    /// Filter used when an image's size differs from `shape`.
    pub resize_filter: String,
}

/// What an embedder produces and reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EmbeddingSpec {
    /// Width of the embeddings.
    pub dimensions: usize,
    /// Longest input in tokens, special tokens included; longer inputs are truncated or refused.
    pub max_seq_length: usize,
    /// How token vectors become one: `mean`, `cls` or `max`.
    pub pooling: String,
    /// Whether embeddings are scaled to unit length unless a request says otherwise.
    pub normalize: bool,
}

/// One model in full: identity, provenance, quality and input contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelDetail {
    /// `name@version`.
    pub id: String,
    /// Model name.
    pub name: String,
    /// Model version.
    pub version: String,
    /// Content hash of the bundle, `sha256:<hex>`.
    pub bundle_id: String,
    /// Model family, e.g. `classifier`.
    pub kind: String,
    /// Training recipe that produced the weights, e.g. `supervised` or `kd`.
    pub method: String,
    /// Bundle id of the teacher, for distilled models.
    pub teacher: Option<String>,
    /// Training dataset name.
    pub dataset: String,
    /// Trainable parameters.
    pub params: usize,
    /// Metrics measured at export, e.g. `test_accuracy`.
    pub metrics: BTreeMap<String, f64>,
    /// Class labels, in score order of the model's output (classifiers), or the class names an
    /// `image_text` model classifies against by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    /// What the model expects as an image (classifiers and `image_text` models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<InputSpec>,
    /// What an embedder produces (embedders and `image_text` models: the width of the shared
    /// space, and the text tower's length limit and pooling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<EmbeddingSpec>,
    /// The routes that serve this model, e.g. `POST /v1/models/{id}/classify`.
    pub routes: Vec<String>,
    /// Export time, RFC 3339.
    pub created_at: String,
}

/// One image to classify or tokenize: a base64 file or a pixel array, never both and never neither.
///
/// On the wire this is `{"image": "..."}` or `{"pixels": [[...]]}`; an enum makes the "exactly
/// one" rule a property of the type, so nothing after deserialization has to re-check it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "InputFields")]
pub enum ClassifyInput {
    /// Base64 (standard alphabet) of a PNG or JPEG file; colour is converted to grayscale.
    Image(String),
    /// Rows of grayscale pixel values on the 0..=255 scale; all rows the same length.
    Pixels(Vec<Vec<f64>>),
}

/// The fields of [`ClassifyInput`] as sent, before the "exactly one" rule is applied. Reading
/// them as a struct (rather than as serde's externally tagged enum) gives clients errors that say
/// which rule they broke; a `null` is a type error, not an absent field.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputFields {
    #[serde(default, deserialize_with = "present")]
    image: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pixels: Option<Vec<Vec<f64>>>,
}

/// A field that is present must hold a `T`: `null` is refused instead of read as absent.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

impl ClassifyInput {
    /// How much decoding it asks for: the pixels sent, or the characters of the encoded image.
    pub fn size(&self) -> usize {
        match self {
            ClassifyInput::Image(encoded) => encoded.len(),
            ClassifyInput::Pixels(rows) => rows.iter().map(Vec::len).sum(),
        }
    }
}

impl TryFrom<InputFields> for ClassifyInput {
    type Error = &'static str;

    fn try_from(fields: InputFields) -> Result<Self, Self::Error> {
        match (fields.image, fields.pixels) {
            (Some(image), None) => Ok(ClassifyInput::Image(image)),
            (None, Some(pixels)) => Ok(ClassifyInput::Pixels(pixels)),
            (Some(_), Some(_)) => Err("set either image or pixels, not both"),
            (None, None) => Err("set one of image or pixels"),
        }
    }
}

/// Written by hand because the derive cannot say "exactly one of two properties": each branch is
/// a closed object with its one property required, so a client generator or validator refuses
/// the same bodies the server does.
impl PartialSchema for ClassifyInput {
    fn schema() -> RefOr<Schema> {
        let image = ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("Base64 (standard alphabet) of a PNG or JPEG file; colour is converted to grayscale."));
        let value = ObjectBuilder::new()
            .schema_type(Type::Number)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Double)))
            .minimum(Some(0))
            .maximum(Some(255));
        // The side limit stays out of `maxItems` on purpose: generators build arrays at a stated
        // bound in both dimensions, megabytes that the body-size limit refuses with 413 before
        // the side limit is ever checked, so the bound would test the wrong limit.
        let row = ArrayBuilder::new().items(value).min_items(Some(1));
        let pixels = ArrayBuilder::new().items(row).min_items(Some(1)).description(Some(format!(
            "Rows of grayscale pixel values on the 0..=255 scale; all rows the same length, at most \
             {MAX_SIDE} rows of at most {MAX_SIDE} values (422 beyond)."
        )));
        let branch = |name: &str, schema: RefOr<Schema>| {
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property(name, schema)
                .required(name)
                .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)))
        };
        OneOfBuilder::new()
            .item(branch("image", image.into()))
            .item(branch("pixels", pixels.into()))
            .description(Some("One image: exactly one of `image` or `pixels`."))
            .into()
    }
}

impl ToSchema for ClassifyInput {}

/// JSON body of a classify request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"inputs": [{"pixels": [[0, 255], [255, 0]]}], "top_k": 3}))]
pub struct ClassifyRequest {
    /// Images to classify, answered in the same order; at least one, at most the server's
    /// `max_inputs` (413 beyond it).
    #[schema(min_items = 1)]
    pub inputs: Vec<ClassifyInput>,
    /// Predictions per input, best first; default 5, capped at the number of labels. Takes
    /// precedence over the query's `top_k`.
    // The attribute takes only a literal; the contract test holds it equal to `MAX_TOP_K`.
    #[serde(default, deserialize_with = "top_k::from_json", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub top_k: Option<usize>,
    /// Zero-shot labels, for `image_text` models only: free texts that the model's text tower
    /// embeds and each image is scored against (a softmax over the labels of the model's scaled
    /// cosine similarities). Default: the model's class names. At least one, at most the server's
    /// `max_inputs`, none blank.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = labels_schema)]
    pub labels: Option<Vec<String>>,
}

/// [`ClassifyRequest::labels`], written by hand so that the schema states the "not blank" rule as
/// a pattern (a character other than whitespace), which the derive cannot put on the items.
fn labels_schema() -> ArrayBuilder {
    let label = ObjectBuilder::new().schema_type(Type::String).pattern(Some(r"\S"));
    ArrayBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([Type::Array, Type::Null]))
        .items(label)
        .min_items(Some(1))
        .description(Some(
            "Zero-shot labels, for `image_text` models only: free texts that the model's text tower embeds and \
             each image is scored against (a softmax over the labels of the model's scaled cosine similarities). \
             Default: the model's class names. At least one, at most the server's `max_inputs`, none blank.",
        ))
}

/// Query of a classify request whose body is a raw image.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ClassifyQuery {
    /// Predictions per input, best first; default 5, capped at the number of labels. Meant for raw
    /// image bodies; a JSON body's own `top_k` takes precedence, but this one is validated even
    /// then.
    #[serde(default, deserialize_with = "top_k::from_query", skip_serializing_if = "Option::is_none")]
    #[param(minimum = 1, maximum = 1000)]
    pub top_k: Option<usize>,
}

/// One class and its probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Prediction {
    /// Class label.
    pub label: String,
    /// Probability in 0..=1.
    pub score: f32,
}

/// Answer of a classify request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"model": "mnist@1.0.0", "predictions": [[{"label": "7", "score": 0.98}, {"label": "1", "score": 0.01}]]}))]
pub struct ClassifyResponse {
    /// `name@version` of the model that answered.
    pub model: String,
    /// One list per input, in request order, best first.
    pub predictions: Vec<Vec<Prediction>>,
}

impl From<&tandem_runtime::ModelInfo> for ModelSummary {
    fn from(info: &tandem_runtime::ModelInfo) -> Self {
        ModelSummary {
            id: info.id.clone(),
            name: info.name.clone(),
            version: info.version.clone(),
            bundle_id: info.bundle_id.clone(),
            kind: info.kind.clone(),
            state: ModelState::Ready,
            error: None,
        }
    }
}

impl From<&tandem_runtime::repository::ModelStatus> for ModelSummary {
    fn from(status: &tandem_runtime::repository::ModelStatus) -> Self {
        use tandem_runtime::repository::ModelState as S;
        let state = match status.state {
            S::Loading => ModelState::Loading,
            S::Ready => ModelState::Ready,
            S::Failed => ModelState::Failed,
        };
        let summary = status.model.as_ref().map(ModelSummary::from);
        ModelSummary {
            state,
            error: status.error.clone(),
            ..summary.unwrap_or_else(|| ModelSummary {
                id: status.id.clone(),
                name: status.name.clone(),
                version: status.version.clone(),
                bundle_id: String::new(),
                kind: status.kind.clone(),
                state,
                error: None,
            })
        }
    }
}

impl From<&tandem_runtime::bundle::InputSpec> for InputSpec {
    fn from(spec: &tandem_runtime::bundle::InputSpec) -> Self {
        InputSpec {
            shape: spec.shape.to_vec(),
            dtype: spec.dtype.clone(),
            pixel_range: spec.pixel_range.to_vec(),
            mean: spec.mean,
            std: spec.std,
            resize_filter: spec.resize_filter.clone(),
        }
    }
}

impl From<&tandem_runtime::ModelInfo> for ModelDetail {
    fn from(info: &tandem_runtime::ModelInfo) -> Self {
        let manifest = &info.manifest;
        ModelDetail {
            id: info.id.clone(),
            name: info.name.clone(),
            version: info.version.clone(),
            bundle_id: info.bundle_id.clone(),
            kind: info.kind.clone(),
            method: manifest.provenance.recipe.clone(),
            teacher: manifest.provenance.teacher.clone(),
            dataset: manifest.provenance.dataset.clone(),
            params: info.params,
            metrics: manifest.metrics.clone(),
            labels: manifest
                .classifier()
                .map(|spec| spec.labels.clone())
                .or_else(|| manifest.image_text().map(|spec| spec.labels.clone())),
            input: manifest
                .classifier()
                .map(|spec| &spec.input)
                .or_else(|| manifest.image_text().map(|spec| &spec.input))
                .map(InputSpec::from),
            embedding: manifest
                .embedder()
                .map(|spec| EmbeddingSpec {
                    dimensions: spec.architecture.hidden_size,
                    max_seq_length: spec.max_seq_length,
                    pooling: pooling_name(spec.pooling),
                    normalize: spec.normalize,
                })
                .or_else(|| {
                    manifest.image_text().map(|spec| EmbeddingSpec {
                        dimensions: spec.architecture.embed_dim(),
                        max_seq_length: spec.max_seq_length,
                        pooling: pooling_name(spec.architecture.pooling),
                        normalize: true,
                    })
                }),
            routes: crate::routes::routes_for_kind(&info.kind).iter().map(|r| (*r).to_owned()).collect(),
            created_at: manifest.created_at.clone(),
        }
    }
}

/// The wire name of a pooling, e.g. `mean`.
fn pooling_name(pooling: tandem_runtime::models::sentence_encoder::Pooling) -> String {
    serde_json::to_value(pooling).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

impl From<tandem_runtime::ClassifyResponse> for ClassifyResponse {
    fn from(res: tandem_runtime::ClassifyResponse) -> Self {
        ClassifyResponse {
            model: res.model,
            predictions: res
                .predictions
                .into_iter()
                .map(|preds| preds.into_iter().map(|p| Prediction { label: p.label, score: p.score }).collect())
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn input(value: serde_json::Value) -> Result<ClassifyInput, String> {
        serde_json::from_value(value).map_err(|e| e.to_string())
    }

    #[test]
    fn inputs_round_trip_through_their_one_field() {
        for value in [json!({"image": "aGk="}), json!({"pixels": [[0.0, 255.0]]})] {
            let parsed = input(value.clone()).expect("valid input");
            assert_eq!(serde_json::to_value(&parsed).expect("serializes"), value);
        }
    }

    #[test]
    fn inputs_need_exactly_one_non_null_field() {
        let both = input(json!({"image": "aGk=", "pixels": [[1.0]]})).expect_err("both");
        assert!(both.contains("not both"), "{both}");
        let neither = input(json!({})).expect_err("neither");
        assert!(neither.contains("set one of image or pixels"), "{neither}");
        for value in [json!({"image": null}), json!({"image": null, "pixels": [[1.0]]}), json!({"pixels": null})] {
            let err = input(value.clone()).expect_err(&value.to_string());
            assert!(err.contains("invalid type: null"), "{value}: {err}");
        }
        let extra = input(json!({"pixels": [[1.0]], "size": 2})).expect_err("unknown field");
        assert!(extra.contains("unknown field"), "{extra}");
    }
}
