//! Image–text dual encoders: served by `POST /v1/models/{id}/embed`, whose inputs may mix texts
//! and images (`{"image": ...}`), all embedded into one space, and by `POST
//! /v1/models/{id}/classify`, which classifies zero-shot against the request's `labels` (free
//! texts) or the model's class names, answering in the classifier's shape.
//!
//! The handlers are the embedder's and the classifier's (`embedder::embed`,
//! `classifier::classify`): each takes its own kinds and this one, so one route keeps one request
//! and one response shape. This module holds what only this kind does on them.

use axum::Json;
use tandem_runtime::image::GrayImage;
use tandem_runtime::{ImageTextEmbedRequest, ImageTextInput, ZeroShotRequest};

use crate::error::{ApiError, ErrorType};
use crate::state::AppState;
use crate::wire::embedder::{EmbedInput, EmbedRequest, EmbedResponse};
use crate::wire::ClassifyResponse;

/// The kind this module names.
pub(crate) const KIND: &str = "image_text";

/// The routes that serve image–text models, as named in 422 answers to other kinds' models.
pub(crate) const ROUTES: &[&str] = &["POST /v1/models/{id}/embed", "POST /v1/models/{id}/classify"];

/// Errors the embed route answers with besides the global and `/v1` ones: the text routes' and,
/// since an `image_text` model embeds images, the image ones.
pub(crate) const EMBED_ERRORS: &[ErrorType] = &[
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

/// Embeds an embed request's texts and images with the `image_text` model `id`; the caller has
/// checked the number of inputs and the texts' lengths.
pub(crate) async fn embed(state: &AppState, id: &str, body: EmbedRequest) -> Result<Json<EmbedResponse>, ApiError> {
    let EmbedRequest { inputs, normalize, truncate, dimensions } = body;
    // Texts stay in their slots; images leave theirs empty until decoded.
    let mut texts = Vec::with_capacity(inputs.len());
    let mut images = Vec::new();
    for (i, input) in inputs.into_iter().enumerate() {
        match input {
            EmbedInput::Text(text) => texts.push(Some(text)),
            EmbedInput::Image(image) => {
                images.push((i, image));
                texts.push(None);
            }
        }
    }
    let mut decoded = crate::images::decode_positioned(state, images).await?.into_iter();
    let inputs = texts
        .into_iter()
        .map(|slot| match slot {
            Some(text) => ImageTextInput::Text(text),
            None => ImageTextInput::Image(decoded.next().expect("one decoded image per image input. This is a bug.")),
        })
        .collect();
    let request = ImageTextEmbedRequest { inputs, truncate: truncate.unwrap_or(true), normalize, dimensions };
    let res = state.runtime.embed_image_text(id, request).await?;
    Ok(Json(EmbedResponse { model: res.model, embeddings: res.embeddings, usage: res.usage.into() }))
}

/// Classifies images zero-shot with the `image_text` model `id`, against `labels` or, without
/// them, the model's class names.
pub(crate) async fn classify(
    state: &AppState,
    id: &str,
    images: Vec<GrayImage>,
    labels: Option<Vec<String>>,
    top_k: usize,
) -> Result<Json<ClassifyResponse>, ApiError> {
    if let Some(labels) = &labels {
        check_labels(labels, state)?;
    }
    let response = state.runtime.classify_zero_shot(id, ZeroShotRequest { images, labels, top_k }).await?;
    Ok(Json(ClassifyResponse::from(response)))
}

/// The limits of a request's labels, the text routes' own: at most `max_inputs` (413), each at
/// most `max_input_chars` characters (422). The runtime refuses empty and blank ones.
fn check_labels(labels: &[String], state: &AppState) -> Result<(), ApiError> {
    let max_inputs = state.config.max_inputs;
    if labels.len() > max_inputs {
        return Err(ApiError::new(
            ErrorType::TooManyInputs,
            format!("{} labels sent, at most {max_inputs} are accepted per request", labels.len()),
        ));
    }
    for (i, label) in labels.iter().enumerate() {
        super::embedder::check_length(&format!("labels[{i}]"), label, state)?;
    }
    Ok(())
}
