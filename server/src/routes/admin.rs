//! The admin API: load, unload and reload the bundles of the models directory, behind the API key
//! like every `/v1` route.
//!
//! Handlers only translate: the models directory ([`Repository`]) checks names and paths, verifies
//! and warms a bundle up before it serves, and swaps it in atomically. Without a models directory
//! every admin route answers 409 `conflict`, and models given with `--model` are never touched.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::{Json, Router};
use tandem_runtime::repository::Repository;

use crate::error::{ApiError, ErrorType};
use crate::extract::{Json as ApiJson, Path};
use crate::state::AppState;
use crate::wire::{LoadModelRequest, ModelDetail};

/// Errors `POST /v1/models` answers with besides the global and `/v1` ones.
pub(crate) const LOAD_ERRORS: &[ErrorType] = &[
    ErrorType::BadRequest,
    ErrorType::InvalidJson,
    ErrorType::NotFound,
    ErrorType::PayloadTooLarge,
    ErrorType::UnsupportedMediaType,
    ErrorType::InvalidInput,
    ErrorType::InvalidBundle,
    ErrorType::Conflict,
];

/// Errors `DELETE /v1/models/{id}` answers with besides the global and `/v1` ones.
pub(crate) const UNLOAD_ERRORS: &[ErrorType] = &[ErrorType::BadRequest, ErrorType::NotFound, ErrorType::Conflict];

/// Errors `POST /v1/models/{id}/reload` answers with besides the global and `/v1` ones.
pub(crate) const RELOAD_ERRORS: &[ErrorType] = &[
    ErrorType::BadRequest,
    ErrorType::NotFound,
    ErrorType::InvalidInput,
    ErrorType::InvalidBundle,
    ErrorType::Conflict,
];

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/models", post(load_model))
        .route("/v1/models/{id}", delete(unload_model))
        .route("/v1/models/{id}/reload", post(reload_model))
}

/// Loads a bundle of the models directory; it serves once verified and warmed up.
///
/// `name` is the bundle's directory under the models directory (`<name>/`, or `<name>/<version>/`
/// in the versioned layout). A model that already serves is answered as it is, with 200; use
/// `reload` to read it from disk again.
#[utoipa::path(
    post,
    path = "/v1/models",
    tag = "models",
    request_body = LoadModelRequest,
    responses(
        (status = 201, description = "loaded, verified and warmed up: the model serves", body = ModelDetail),
        (status = 200, description = "the model already serves; nothing was read", body = ModelDetail)
    )
)]
pub(crate) async fn load_model(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<LoadModelRequest>,
) -> Result<(StatusCode, Json<ModelDetail>), ApiError> {
    let repository = repository(&state)?;
    let outcome = repository.load(body.name, body.version).await.map_err(refused)?;
    let status = if outcome.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(ModelDetail::from(&outcome.info))))
}

/// Unloads a model of the models directory, or forgets a bundle that failed to load.
///
/// Requests already running on it finish. A watched directory leaves the bundle alone until it
/// is loaded again with `POST /v1/models`.
#[utoipa::path(
    delete,
    path = "/v1/models/{id}",
    tag = "models",
    params(("id" = String, Path, description = "`name@version`, or `name` for its highest version")),
    responses((status = 204, description = "unloaded"))
)]
pub(crate) async fn unload_model(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let repository = repository(&state)?;
    repository.unload(id).await.map_err(refused)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Reads a model's bundle from the models directory again and swaps it in atomically.
///
/// The new bundle is verified (every file's sha256, every tensor) and runs a warm-up batch before
/// any request sees it; requests already running finish on the old one. A bundle that fails is
/// refused with 422 `invalid_bundle`, and the old version keeps serving.
#[utoipa::path(
    post,
    path = "/v1/models/{id}/reload",
    tag = "models",
    params(("id" = String, Path, description = "`name@version`, or `name` for its highest version")),
    responses((status = 200, description = "the bundle on disk now serves", body = ModelDetail))
)]
pub(crate) async fn reload_model(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ModelDetail>, ApiError> {
    let repository = repository(&state)?;
    let info = repository.reload(id).await.map_err(refused)?;
    Ok(Json(ModelDetail::from(&info)))
}

fn repository(state: &AppState) -> Result<&Arc<Repository>, ApiError> {
    state.repository.as_ref().ok_or_else(|| {
        ApiError::new(
            ErrorType::Conflict,
            "the admin API needs a models directory: start the server with --models-dir DIR",
        )
    })
}

/// A bundle that failed verification is the operator's to fix, so it answers 422 with the reason
/// here, where the operator asked for it, rather than the generic 500 of a request path.
fn refused(err: tandem_runtime::Error) -> ApiError {
    match err {
        tandem_runtime::Error::Bundle(msg) => ApiError::new(ErrorType::InvalidBundle, format!("bundle refused: {msg}")),
        other => ApiError::from(other),
    }
}
