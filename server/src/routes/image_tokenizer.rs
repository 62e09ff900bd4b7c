//! Image tokenizers: `POST /v1/models/{id}/tokenize` (images to discrete tokens) and
//! `POST /v1/models/{id}/detokenize` (pixel tokens back to a PNG); the classify route serves them
//! too, by the head run on the semantic tokens.
//!
//! Tokenize takes images exactly as classify does (JSON inputs or one raw PNG/JPEG body); detokenize
//! answers a PNG in JSON (base64), or the PNG itself when the client asks for `image/png`, as the
//! generate route does.

use axum::extract::{FromRequest, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};

use crate::error::{ApiError, ErrorType};
use crate::extract::{Json as ApiJson, Path};
use crate::images::{png_base64, png_response, read_images, wants_png, ImageInputs};
use crate::state::AppState;
use crate::wire::image_tokenizer::{DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse};
use crate::wire::ClassifyInput;

/// The kind this module serves.
pub(crate) const KIND: &str = "image_tokenizer";

/// The routes that serve image tokenizers, as named in 422 answers to other kinds' models.
pub(crate) const ROUTES: &[&str] =
    &["POST /v1/models/{id}/tokenize", "POST /v1/models/{id}/detokenize", "POST /v1/models/{id}/classify"];

/// Errors the tokenize route answers with besides the global and `/v1` ones: the classify
/// route's, since it reads images the same way.
pub(crate) const TOKENIZE_ERRORS: &[ErrorType] = super::classifier::CLASSIFY_ERRORS;

/// Errors the detokenize route answers with besides the global and `/v1` ones.
pub(crate) const DETOKENIZE_ERRORS: &[ErrorType] = &[
    ErrorType::BadRequest,
    ErrorType::InvalidJson,
    ErrorType::NotFound,
    ErrorType::PayloadTooLarge,
    ErrorType::UnsupportedMediaType,
    ErrorType::InvalidInput,
    ErrorType::Overloaded,
    ErrorType::Unavailable,
];

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/models/{id}/tokenize", post(tokenize))
        .route("/v1/models/{id}/detokenize", post(detokenize))
}

/// Turns grayscale images into discrete tokens with an `image_tokenizer` model.
///
/// Send either a JSON body (`application/json`) with up to `max_inputs` inputs, each a base64
/// PNG/JPEG (`image`) or a pixel array (`pixels`), or a single raw `image/png` / `image/jpeg`
/// body. Images of another size than the model's input are resized. Each image answers its pixel
/// tokens (what detokenize reads), its semantic tokens (absent for a tokenizer without a semantic
/// stream) and the grid both cover, flat and row-major with the depth innermost.
#[utoipa::path(
    post,
    path = "/v1/models/{id}/tokenize",
    tag = "inference",
    params(("id" = String, Path, description = "`name@version`, or `name` for its highest version")),
    request_body(
        description = "a JSON batch, or one raw PNG or JPEG image",
        content(
            (TokenizeRequest = "application/json"),
            ("image/png"),
            ("image/jpeg")
        )
    ),
    responses((status = 200, description = "the tokens of each input, in order", body = TokenizeResponse))
)]
pub(crate) async fn tokenize(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Json<TokenizeResponse>, ApiError> {
    let state = &state;
    super::on_model(state, &id, KIND, |model| async move {
        let (images, _) = read_images::<TokenizeRequest>(state, request).await?;
        let res = state.runtime.tokenize(&model, images).await?;
        Ok(Json(TokenizeResponse::from(res)))
    })
    .await
}

/// Decodes pixel tokens into an image with an `image_tokenizer` model.
///
/// Send the `pixel_tokens` and `shape` of a tokenize answer (its entry as it is will do). Ids out
/// of the codebook's range, a shape other than the model's grid, and a token count other than the
/// shape's are refused with 422. The image is a PNG of the model's input size, in standard base64,
/// or the PNG itself when `Accept` asks for `image/png` (not preferring JSON).
#[utoipa::path(
    post,
    path = "/v1/models/{id}/detokenize",
    tag = "inference",
    params(("id" = String, Path, description = "`name@version`, or `name` for its highest version")),
    request_body = DetokenizeRequest,
    responses((
        status = 200,
        description = "the image, as JSON, or the raw PNG when `Accept` asks for `image/png`",
        content((DetokenizeResponse = "application/json"), ("image/png"))
    ))
)]
pub(crate) async fn detokenize(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let raw_png = wants_png(request.headers());
    let state = &state;
    super::on_model(state, &id, KIND, |model| async move {
        let ApiJson(body) = ApiJson::<DetokenizeRequest>::from_request(request, state).await?;
        let res = state.runtime.detokenize(&model, &body.pixel_tokens, body.shape.into()).await?;
        if raw_png {
            return Ok(png_response(res.image.png.clone()));
        }
        Ok(Json(DetokenizeResponse { model: res.model, png_base64: png_base64(&res.image.png) }).into_response())
    })
    .await
}

impl ImageInputs for TokenizeRequest {
    fn inputs(&self) -> &[ClassifyInput] {
        &self.inputs
    }
}
