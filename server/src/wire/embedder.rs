//! JSON shapes of the embedder routes: Tandem's own (`embed`, `rerank`, `similarity`) and the
//! compatible ones (OpenAI's `/v1/embeddings`, Cohere's and Jina's `/v1/rerank`).

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use super::ClassifyInput;

/// `input` of an OpenAI embeddings request: one text or a list of texts.
///
/// OpenAI also accepts token-id arrays; Tandem tokenizes itself, so those are refused with a
/// message saying so rather than with a generic shape error.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum EmbeddingsInput {
    /// One text.
    One(String),
    /// Several texts, answered in order.
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for EmbeddingsInput {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(text) => Ok(EmbeddingsInput::One(text)),
            serde_json::Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| match item {
                    serde_json::Value::String(text) => Ok(text),
                    serde_json::Value::Number(_) | serde_json::Value::Array(_) => Err(D::Error::custom(format!(
                        "input[{i}]: token arrays are not accepted, send the text itself"
                    ))),
                    other => Err(D::Error::custom(format!("input[{i}]: expected a string, found {other}"))),
                })
                .collect::<Result<_, _>>()
                .map(EmbeddingsInput::Many),
            other => Err(D::Error::custom(format!("input: expected a string or a list of strings, found {other}"))),
        }
    }
}

/// Written by hand so that the list form states its `minItems`, which the server enforces.
impl PartialSchema for EmbeddingsInput {
    fn schema() -> RefOr<Schema> {
        let text = || ObjectBuilder::new().schema_type(Type::String);
        OneOfBuilder::new()
            .item(text().description(Some("One text.")))
            .item(ArrayBuilder::new().items(text()).min_items(Some(1)).description(Some("Texts, answered in order.")))
            .description(Some("One text or a non-empty list of texts."))
            .into()
    }
}

impl ToSchema for EmbeddingsInput {}

impl EmbeddingsInput {
    /// The texts, whichever form they came in.
    pub fn into_texts(self) -> Vec<String> {
        match self {
            EmbeddingsInput::One(text) => vec![text],
            EmbeddingsInput::Many(texts) => texts,
        }
    }
}

/// How OpenAI-style embeddings are encoded in the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    /// A JSON array of numbers.
    #[default]
    Float,
    /// Base64 of the little-endian f32 bytes, as OpenAI sends it.
    Base64,
}

/// Body of `POST /v1/embeddings`, OpenAI's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"model": "all-minilm-l6-v2", "input": ["a cat sat on the mat"]}))]
pub struct OpenAiEmbeddingsRequest {
    /// Model id: `name@version`, or `name` for its highest version.
    pub model: String,
    /// One text or a list of texts (at most the server's `max_inputs`).
    pub input: EmbeddingsInput,
    /// `float` (default) or `base64`.
    #[serde(default)]
    pub encoding_format: EncodingFormat,
    /// Keep only the first `dimensions` values, then re-normalise.
    #[serde(default, deserialize_with = "crate::whole::optional_count", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub dimensions: Option<usize>,
    /// An end-user id, accepted for compatibility and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// One embedding as OpenAI encodes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingVector {
    /// `encoding_format: float`.
    Float(Vec<f32>),
    /// `encoding_format: base64`: little-endian f32 bytes.
    Base64(String),
}

/// One entry of [`OpenAiEmbeddingsResponse::data`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EmbeddingData {
    /// Always `embedding`.
    pub object: String,
    /// Position of the text in the request.
    pub index: usize,
    /// The vector.
    pub embedding: EmbeddingVector,
}

/// Token accounting of a text request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TextUsage {
    /// Tokens the model read, special tokens included, after truncation (a cross-encoder reads
    /// the query again with every document).
    pub prompt_tokens: usize,
    /// The same as `prompt_tokens`: embedding and reranking models generate nothing.
    pub total_tokens: usize,
    /// Inputs (for a cross-encoder, (query, document) pairs) cut to the model's `max_seq_length`.
    pub truncated_inputs: usize,
}

impl From<tandem_runtime::TextUsage> for TextUsage {
    fn from(usage: tandem_runtime::TextUsage) -> Self {
        TextUsage { prompt_tokens: usage.n_tokens, total_tokens: usage.n_tokens, truncated_inputs: usage.n_truncated }
    }
}

/// Answer of `POST /v1/embeddings`, OpenAI's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OpenAiEmbeddingsResponse {
    /// Always `list`.
    pub object: String,
    /// One entry per input, in order.
    pub data: Vec<EmbeddingData>,
    /// `name@version` of the model that answered.
    pub model: String,
    /// Token accounting.
    pub usage: TextUsage,
}

/// One input of `POST /v1/models/{id}/embed`: a text, or, for an `image_text` model, an image.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum EmbedInput {
    /// A text.
    Text(String),
    /// An image as the classify route takes one, `{"image": "<base64 PNG or JPEG>"}` or
    /// `{"pixels": [[...]]}`; only `image_text` models embed images.
    Image(ClassifyInput),
}

/// Read by hand so that an image object's errors are [`ClassifyInput`]'s own (serde's untagged
/// enums only say that no variant matched).
impl<'de> Deserialize<'de> for EmbedInput {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(text) => Ok(EmbedInput::Text(text)),
            value @ serde_json::Value::Object(_) => {
                ClassifyInput::deserialize(value).map(EmbedInput::Image).map_err(D::Error::custom)
            }
            other => {
                Err(D::Error::custom(format!("expected a text or an object with `image` or `pixels`, found {other}")))
            }
        }
    }
}

impl PartialSchema for EmbedInput {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::String).description(Some("A text.")))
            .item(ClassifyInput::schema())
            .description(Some("A text, or an image (`image_text` models only)."))
            .into()
    }
}

impl ToSchema for EmbedInput {}

impl EmbedInput {
    /// The text, if this input is one.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            EmbedInput::Text(text) => Some(text),
            EmbedInput::Image(_) => None,
        }
    }
}

/// Body of `POST /v1/models/{id}/embed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"inputs": ["a cat sat on the mat", "stocks fell"], "normalize": true}))]
pub struct EmbedRequest {
    /// Inputs to embed, answered in order; at least one, at most the server's `max_inputs`. Texts
    /// for every model; an `image_text` model also takes images (`{"image": "<base64 PNG or
    /// JPEG>"}` or `{"pixels": [[...]]}`), embedded into the same space as its texts.
    #[schema(min_items = 1)]
    pub inputs: Vec<EmbedInput>,
    /// Scale embeddings to unit length; default: as the model was trained (see its details).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<bool>,
    /// Cut texts longer than the model's `max_seq_length` (default true); false refuses them with 422.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate: Option<bool>,
    /// Keep only the first `dimensions` values, then re-normalise when normalising.
    #[serde(default, deserialize_with = "crate::whole::optional_count", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub dimensions: Option<usize>,
}

/// Answer of `POST /v1/models/{id}/embed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EmbedResponse {
    /// `name@version` of the model that answered.
    pub model: String,
    /// One vector per input, in order.
    pub embeddings: Vec<Vec<f32>>,
    /// Token accounting.
    pub usage: TextUsage,
}

/// Body of `POST /v1/models/{id}/rerank`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"query": "what do cats eat", "documents": ["cats eat fish", "stocks fell"], "top_n": 1}))]
pub struct RerankRequest {
    /// The query.
    pub query: String,
    /// Documents to order; at least one, at most the server's `max_inputs` less one.
    #[schema(min_items = 1)]
    pub documents: Vec<String>,
    /// Return only the best `top_n`; default all.
    #[serde(default, deserialize_with = "crate::whole::optional_count", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub top_n: Option<usize>,
    /// Echo each document's text in its result (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_documents: Option<bool>,
    /// Cut texts longer than the model's `max_seq_length` (default true); for a cross-encoder,
    /// a (query, document) pair longer than it, the longer text first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate: Option<bool>,
}

/// One document of a rerank answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RerankResult {
    /// Position of the document in the request.
    pub index: usize,
    /// Relevance, higher is better: for an embedder (a dual encoder) the cosine similarity, in
    /// -1..=1; for a cross-encoder the head's raw logit for the pair, unbounded.
    pub score: f32,
    /// The document's text, when `return_documents` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
}

/// Answer of `POST /v1/models/{id}/rerank`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RerankResponse {
    /// `name@version` of the model that answered.
    pub model: String,
    /// Best first.
    pub results: Vec<RerankResult>,
    /// Token accounting.
    pub usage: TextUsage,
}

/// Body of `POST /v1/rerank`, the Cohere and Jina shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"model": "all-minilm-l6-v2", "query": "what do cats eat", "documents": ["cats eat fish", "stocks fell"]}))]
pub struct CompatRerankRequest {
    /// Model id: `name@version`, or `name` for its highest version.
    pub model: String,
    /// The query.
    pub query: String,
    /// Documents to order; at least one.
    #[schema(min_items = 1)]
    pub documents: Vec<String>,
    /// Return only the best `top_n`; default all.
    #[serde(default, deserialize_with = "crate::whole::optional_count", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub top_n: Option<usize>,
    /// Echo each document as `{"text": ...}` in its result (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_documents: Option<bool>,
}

/// A document echoed in a Cohere-style answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DocumentText {
    /// The document's text.
    pub text: String,
}

/// One document of a Cohere-style rerank answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CompatRerankResult {
    /// Position of the document in the request.
    pub index: usize,
    /// Relevance, higher is better: for an embedder (a dual encoder) the cosine similarity, in
    /// -1..=1; for a cross-encoder the head's raw logit for the pair, unbounded.
    pub relevance_score: f32,
    /// The document, when `return_documents` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<DocumentText>,
}

/// Answer of `POST /v1/rerank`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CompatRerankResponse {
    /// `name@version` of the model that answered.
    pub model: String,
    /// Best first.
    pub results: Vec<CompatRerankResult>,
    /// Token accounting.
    pub usage: TextUsage,
}

/// Body of `POST /v1/models/{id}/similarity`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"source": "a cat sat on the mat", "sentences": ["a kitten rested on the rug", "stocks fell"]}))]
pub struct SimilarityRequest {
    /// The sentence the others are compared with.
    pub source: String,
    /// Sentences to score; at least one.
    #[schema(min_items = 1)]
    pub sentences: Vec<String>,
}

/// Answer of `POST /v1/models/{id}/similarity`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SimilarityResponse {
    /// `name@version` of the model that answered.
    pub model: String,
    /// Cosine similarity of each sentence to `source`, in request order.
    pub scores: Vec<f32>,
    /// Token accounting.
    pub usage: TextUsage,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn embed_inputs_are_texts_or_images_with_the_image_errors() {
        let inputs: Vec<EmbedInput> = serde_json::from_value(json!(["a bag", {"image": "aGk="}])).unwrap();
        assert_eq!(inputs[0], EmbedInput::Text("a bag".into()));
        assert_eq!(inputs[1], EmbedInput::Image(ClassifyInput::Image("aGk=".into())));
        let both = serde_json::from_value::<EmbedInput>(json!({"image": "aGk=", "pixels": [[1.0]]})).unwrap_err();
        assert!(both.to_string().contains("not both"), "{both}");
        let number = serde_json::from_value::<EmbedInput>(json!(3)).unwrap_err();
        assert!(number.to_string().contains("expected a text or an object"), "{number}");
        assert_eq!(serde_json::to_value(&inputs).unwrap(), json!(["a bag", {"image": "aGk="}]));
    }

    #[test]
    fn input_is_a_string_or_strings_and_never_tokens() {
        let one: EmbeddingsInput = serde_json::from_value(json!("hi")).unwrap();
        assert_eq!(one.into_texts(), vec!["hi"]);
        let many: EmbeddingsInput = serde_json::from_value(json!(["a", "b"])).unwrap();
        assert_eq!(many.into_texts(), vec!["a", "b"]);
        let tokens = serde_json::from_value::<EmbeddingsInput>(json!([101, 102])).unwrap_err().to_string();
        assert!(tokens.contains("token arrays are not accepted"), "{tokens}");
        let null = serde_json::from_value::<EmbeddingsInput>(json!(null)).unwrap_err().to_string();
        assert!(null.contains("expected a string or a list of strings"), "{null}");
    }
}
