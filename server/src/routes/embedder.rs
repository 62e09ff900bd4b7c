//! Routes of text embedders: Tandem's own `embed`, `rerank` and `similarity` under
//! `/v1/models/{id}`, and the compatible `POST /v1/embeddings` (OpenAI) and `POST /v1/rerank`
//! (Cohere, Jina), which name the model in the body. The two rerank routes serve cross-encoders
//! too (see `cross_encoder.rs`).

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;

use crate::error::{ApiError, ErrorType};
use crate::extract::{Json as ApiJson, Path};
use crate::state::AppState;
use crate::wire::embedder::{
    CompatRerankRequest, CompatRerankResponse, CompatRerankResult, DocumentText, EmbedInput, EmbedRequest,
    EmbedResponse, EmbeddingData, EmbeddingVector, EncodingFormat, OpenAiEmbeddingsRequest, OpenAiEmbeddingsResponse,
    RerankRequest, RerankResponse, RerankResult, SimilarityRequest, SimilarityResponse,
};

/// The routes that serve embedders, as named in 422 answers to other kinds' models.
pub(crate) const ROUTES: &[&str] = &[
    "POST /v1/embeddings",
    "POST /v1/rerank",
    "POST /v1/models/{id}/embed",
    "POST /v1/models/{id}/rerank",
    "POST /v1/models/{id}/similarity",
    super::kserve::INFER_ROUTE,
];

const KIND: &str = "embedder";

/// The kinds the embed route serves: texts for both, images too for `image_text` models.
const EMBED_KINDS: &[&str] = &[KIND, super::image_text::KIND];

/// The kinds the rerank routes serve: the runtime scores by the kind it finds.
const RERANK_KINDS: &[&str] = &[KIND, super::cross_encoder::KIND];

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/embeddings", post(openai_embeddings))
        .route("/v1/rerank", post(compat_rerank))
        .route("/v1/models/{id}/embed", post(embed))
        .route("/v1/models/{id}/rerank", post(rerank))
        .route("/v1/models/{id}/similarity", post(similarity))
}

/// Embeds texts, OpenAI-compatible: the official `openai` clients work unchanged.
///
/// `input` is one string or a list of strings. Texts longer than the model's `max_seq_length`
/// are truncated and counted in `usage.truncated_inputs`.
#[utoipa::path(
    post,
    path = "/v1/embeddings",
    tag = "inference",
    request_body = OpenAiEmbeddingsRequest,
    responses((status = 200, description = "one embedding per input, in order", body = OpenAiEmbeddingsResponse))
)]
pub(crate) async fn openai_embeddings(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<OpenAiEmbeddingsRequest>,
) -> Result<Json<OpenAiEmbeddingsResponse>, ApiError> {
    let texts = body.input.into_texts();
    validate_texts("input", &texts, &state)?;
    let request = tandem_runtime::EmbedRequest { texts, truncate: true, normalize: None, dimensions: body.dimensions };
    let format = body.encoding_format;
    let state = &state;
    super::on_model(state, &body.model, KIND, |model| async move {
        let res = state.runtime.embed(&model, request).await?;
        let data = res
            .embeddings
            .into_iter()
            .enumerate()
            .map(|(index, v)| EmbeddingData { object: "embedding".into(), index, embedding: encode(v, format) })
            .collect();
        Ok(Json(OpenAiEmbeddingsResponse { object: "list".into(), data, model: res.model, usage: res.usage.into() }))
    })
    .await
}

/// Embeds texts with the model `id`, or texts and images with an `image_text` model.
///
/// Serves `embedder` models (texts only; an image among the inputs is a 422) and `image_text`
/// models, whose text and image towers embed into one space: a text and an image are compared by
/// the dot product of their vectors, which are unit length.
#[utoipa::path(
    post,
    path = "/v1/models/{id}/embed",
    tag = "inference",
    params(("id" = String, Path, description = "`name@version`, or `name` for its highest version")),
    request_body = EmbedRequest,
    responses((status = 200, description = "one embedding per input, in order", body = EmbedResponse))
)]
pub(crate) async fn embed(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<EmbedRequest>,
) -> Result<Json<EmbedResponse>, ApiError> {
    validate_inputs(&body.inputs, &state)?;
    let (state, id) = (&state, id.as_str());
    // By the id as requested, like `on_model`: a hot reload may swap `name@1` for `name@2`.
    super::on_model_of(state, id, EMBED_KINDS, |info| async move {
        if info.kind == super::image_text::KIND {
            return super::image_text::embed(state, id, body).await;
        }
        let texts = body
            .inputs
            .into_iter()
            .enumerate()
            .map(|(i, input)| match input {
                EmbedInput::Text(text) => Ok(text),
                EmbedInput::Image(_) => Err(ApiError::new(
                    ErrorType::InvalidInput,
                    format!(
                        "inputs[{i}] is an image: model {} embeds texts only (images need an image_text model)",
                        info.id
                    ),
                )),
            })
            .collect::<Result<_, _>>()?;
        let request = tandem_runtime::EmbedRequest {
            texts,
            truncate: body.truncate.unwrap_or(true),
            normalize: body.normalize,
            dimensions: body.dimensions,
        };
        let res = state.runtime.embed(id, request).await?;
        Ok(Json(EmbedResponse { model: res.model, embeddings: res.embeddings, usage: res.usage.into() }))
    })
    .await
}

/// Orders documents by relevance to a query, best first.
///
/// Serves `embedder` and `cross_encoder` models. An embedder (a dual encoder) scores by the
/// cosine of the query's and the document's embeddings, in -1..=1. A cross-encoder reads each
/// (query, document) pair jointly and scores it by its head's raw logit: unbounded, comparable
/// between the documents of one query (a sigmoid turns it into a probability-like relevance).
/// With `truncate` false, a text (or, for a cross-encoder, a pair) past the model's
/// `max_seq_length` is refused; by default it is cut, a pair's longer text first.
#[utoipa::path(
    post,
    path = "/v1/models/{id}/rerank",
    tag = "inference",
    params(("id" = String, Path, description = "`name@version`, or `name` for its highest version")),
    request_body = RerankRequest,
    responses((status = 200, description = "documents by falling score", body = RerankResponse))
)]
pub(crate) async fn rerank(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RerankRequest>,
) -> Result<Json<RerankResponse>, ApiError> {
    let documents = body.documents;
    let return_documents = body.return_documents.unwrap_or(false);
    let query = body.query;
    let (top_n, truncate) = (body.top_n, body.truncate.unwrap_or(true));
    let (state, id) = (&state, id.as_str());
    // By the id as requested, like `on_model`: a hot reload may swap `name@1` for `name@2`.
    super::on_model_of(state, id, RERANK_KINDS, |_| async move {
        let ranked = run_rerank(state, id, query, &documents, top_n, truncate).await?;
        let results = ranked
            .results
            .iter()
            .map(|r| RerankResult {
                index: r.index,
                score: r.score,
                document: return_documents.then(|| documents[r.index].clone()),
            })
            .collect();
        Ok(Json(RerankResponse { model: ranked.model, results, usage: ranked.usage.into() }))
    })
    .await
}

/// Orders documents by relevance to a query, in the Cohere and Jina shape.
///
/// Serves `embedder` models (`relevance_score` is a cosine, in -1..=1) and `cross_encoder`
/// models (`relevance_score` is the head's raw logit for the pair, unbounded). Texts past the
/// model's `max_seq_length` are truncated, a pair's longer text first.
#[utoipa::path(
    post,
    path = "/v1/rerank",
    tag = "inference",
    request_body = CompatRerankRequest,
    responses((status = 200, description = "documents by falling relevance", body = CompatRerankResponse))
)]
pub(crate) async fn compat_rerank(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CompatRerankRequest>,
) -> Result<Json<CompatRerankResponse>, ApiError> {
    let documents = body.documents;
    let return_documents = body.return_documents.unwrap_or(false);
    let (query, top_n) = (body.query, body.top_n);
    let (state, id) = (&state, body.model.as_str());
    super::on_model_of(state, id, RERANK_KINDS, |_| async move {
        let ranked = run_rerank(state, id, query, &documents, top_n, true).await?;
        let results = ranked
            .results
            .iter()
            .map(|r| CompatRerankResult {
                index: r.index,
                relevance_score: r.score,
                document: return_documents.then(|| DocumentText { text: documents[r.index].clone() }),
            })
            .collect();
        Ok(Json(CompatRerankResponse { model: ranked.model, results, usage: ranked.usage.into() }))
    })
    .await
}

/// Scores sentences by cosine similarity to a source sentence.
#[utoipa::path(
    post,
    path = "/v1/models/{id}/similarity",
    tag = "inference",
    params(("id" = String, Path, description = "`name@version`, or `name` for its highest version")),
    request_body = SimilarityRequest,
    responses((status = 200, description = "one score per sentence, in order", body = SimilarityResponse))
)]
pub(crate) async fn similarity(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SimilarityRequest>,
) -> Result<Json<SimilarityResponse>, ApiError> {
    validate_texts("sentences", &body.sentences, &state)?;
    check_length("source", &body.source, &state)?;
    let state = &state;
    super::on_model(state, &id, KIND, |model| async move {
        let res = state.runtime.similarity(&model, body.source, body.sentences).await?;
        Ok(Json(SimilarityResponse { model: res.model, scores: res.scores, usage: res.usage.into() }))
    })
    .await
}

/// The rerank both shapes share: limits, then the runtime.
async fn run_rerank(
    state: &AppState,
    model: &str,
    query: String,
    documents: &[String],
    top_n: Option<usize>,
    truncate: bool,
) -> Result<tandem_runtime::RerankResponse, ApiError> {
    validate_texts("documents", documents, state)?;
    check_length("query", &query, state)?;
    let request = tandem_runtime::RerankRequest { query, documents: documents.to_vec(), top_n, truncate };
    Ok(state.runtime.rerank(model, request).await?)
}

/// The limits every text route shares, checked before any tokenizing: at least one text, at most
/// `max_inputs` (413), each at most `max_input_chars` characters (422).
pub(crate) fn validate_texts(field: &str, texts: &[String], state: &AppState) -> Result<(), ApiError> {
    if texts.is_empty() {
        return Err(ApiError::new(ErrorType::InvalidInput, format!("{field} must hold at least one text")));
    }
    let max_inputs = state.config.max_inputs;
    if texts.len() > max_inputs {
        return Err(ApiError::new(
            ErrorType::TooManyInputs,
            format!("{} texts sent in {field}, at most {max_inputs} are accepted per request", texts.len()),
        ));
    }
    for (i, text) in texts.iter().enumerate() {
        check_length(&format!("{field}[{i}]"), text, state)?;
    }
    Ok(())
}

/// [`validate_texts`] for the embed route's inputs, which may hold images: their count, and the
/// length of the texts among them (images are checked as they are decoded).
fn validate_inputs(inputs: &[EmbedInput], state: &AppState) -> Result<(), ApiError> {
    if inputs.is_empty() {
        return Err(ApiError::new(ErrorType::InvalidInput, "inputs must hold at least one input".to_owned()));
    }
    let max_inputs = state.config.max_inputs;
    if inputs.len() > max_inputs {
        return Err(ApiError::new(
            ErrorType::TooManyInputs,
            format!("{} inputs sent, at most {max_inputs} are accepted per request", inputs.len()),
        ));
    }
    for (i, input) in inputs.iter().enumerate() {
        if let Some(text) = input.as_text() {
            check_length(&format!("inputs[{i}]"), text, state)?;
        }
    }
    Ok(())
}

/// A text of at most `max_input_chars` characters (422 beyond).
pub(crate) fn check_length(field: &str, text: &str, state: &AppState) -> Result<(), ApiError> {
    let max = state.config.max_input_chars;
    // Counting stops one past the limit, so a huge text costs no more than a long one.
    if text.chars().take(max + 1).count() > max {
        return Err(ApiError::new(
            ErrorType::InvalidInput,
            format!("{field} is longer than {max} characters, the server's max_input_chars"),
        ));
    }
    Ok(())
}

/// An embedding as OpenAI encodes it; base64 is of the little-endian f32 bytes.
fn encode(vector: Vec<f32>, format: EncodingFormat) -> EmbeddingVector {
    match format {
        EncodingFormat::Float => EmbeddingVector::Float(vector),
        EncodingFormat::Base64 => {
            let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
            EmbeddingVector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;

    use super::*;

    #[test]
    fn base64_is_little_endian_f32() {
        let EmbeddingVector::Base64(text) = encode(vec![1.0, -0.5], EncodingFormat::Base64) else {
            panic!("base64 was asked for");
        };
        let bytes = base64::engine::general_purpose::STANDARD.decode(text).unwrap();
        let back: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        assert_eq!(back, vec![1.0, -0.5]);
    }
}
