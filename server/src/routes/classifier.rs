//! Classification: JSON (base64 images or pixel arrays, many per request) or one raw PNG/JPEG body.
//!
//! The route serves classifiers, and image tokenizers too, which classify by the head run on an
//! image's semantic tokens; both answer in the same shape.

use axum::extract::{Request, State};
use axum::routing::post;
use axum::{Json, Router};

use crate::error::{ApiError, ErrorType};
use crate::extract::{Path, Query};
use crate::images::{read_images, ImageInputs};
use crate::state::AppState;
use crate::wire::{ClassifyInput, ClassifyQuery, ClassifyRequest, ClassifyResponse};

/// Predictions per input when the request does not say.
pub const DEFAULT_TOP_K: usize = 5;

/// Errors the classify route answers with besides the global and `/v1` ones.
pub(crate) const CLASSIFY_ERRORS: &[ErrorType] = &[
    ErrorType::BadRequest,
    ErrorType::InvalidJson,
    ErrorType::InvalidImage,
    ErrorType::NotFound,
    ErrorType::PayloadTooLarge,
    ErrorType::TooManyInputs,
    ErrorType::ImageTooLarge,
    ErrorType::UnsupportedMediaType,
    ErrorType::InvalidInput,
    ErrorType::Overloaded,
    ErrorType::Unavailable,
];

/// The kinds the classify route serves.
pub(crate) const KINDS: &[&str] = &["classifier", super::image_tokenizer::KIND, super::image_text::KIND];

/// The routes that serve classifiers, as named in 422 answers to other kinds' models.
pub(crate) const ROUTES: &[&str] = &["POST /v1/models/{id}/classify", super::kserve::INFER_ROUTE];

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/models/{id}/classify", post(classify))
}

/// Classifies one or more grayscale images.
///
/// Send either a JSON body (`application/json`) with up to `max_inputs` inputs, each a base64
/// PNG/JPEG (`image`) or a pixel array (`pixels`), or a single raw `image/png` / `image/jpeg` body
/// with `top_k` in the query string. Images of another size than the model's input are resized.
/// Serves `classifier` models, `image_tokenizer` models, which classify by the head run on each
/// image's semantic tokens (a tokenizer without a semantic stream answers 422), and `image_text`
/// models, which classify zero-shot: against the JSON body's `labels` (free texts, embedded by
/// the model's text tower), or the model's class names without them. Only `image_text` models
/// take `labels`.
#[utoipa::path(
    post,
    path = "/v1/models/{id}/classify",
    tag = "inference",
    params(
        ("id" = String, Path, description = "`name@version`, or `name` for its highest version"),
        ClassifyQuery
    ),
    request_body(
        description = "a JSON batch, or one raw PNG or JPEG image",
        content(
            (ClassifyRequest = "application/json"),
            ("image/png"),
            ("image/jpeg")
        )
    ),
    responses((status = 200, description = "predictions per input, best first", body = ClassifyResponse))
)]
pub(crate) async fn classify(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<ClassifyQuery>,
    request: Request,
) -> Result<Json<ClassifyResponse>, ApiError> {
    let (state, id) = (&state, id.as_str());
    super::on_model_of(state, id, KINDS, |info| async move {
        let (images, body) = read_images::<ClassifyRequest>(state, request).await?;
        let (body_top_k, labels) = body.map_or((None, None), |body| (body.top_k, body.labels));
        let top_k = body_top_k.or(query.top_k).unwrap_or(DEFAULT_TOP_K);
        // By the id as requested, like `on_model`: a hot reload may have swapped `name@1` for
        // `name@2` since `info` was read.
        if info.kind == super::image_text::KIND {
            return super::image_text::classify(state, id, images, labels, top_k).await;
        }
        if labels.is_some() {
            return Err(ApiError::new(
                ErrorType::InvalidInput,
                format!("model {} has fixed classes: labels are for image_text models only", info.id),
            ));
        }
        let response = if info.kind == super::image_tokenizer::KIND {
            state.runtime.classify_by_tokens(id, images, top_k).await?
        } else {
            state.runtime.classify(id, tandem_runtime::ClassifyRequest { images, top_k }).await?
        };
        Ok(Json(ClassifyResponse::from(response)))
    })
    .await
}

impl ImageInputs for ClassifyRequest {
    fn inputs(&self) -> &[ClassifyInput] {
        &self.inputs
    }
}
