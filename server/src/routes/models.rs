//! Model listing and details.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use crate::error::{ApiError, ErrorType};
use crate::extract::Path;
use crate::state::AppState;
use crate::wire::{ModelDetail, ModelList, ModelSummary};

/// Errors `GET /v1/models/{id}` answers with besides the global and `/v1` ones.
pub(crate) const GET_MODEL_ERRORS: &[ErrorType] = &[ErrorType::BadRequest, ErrorType::NotFound];

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/models", get(list_models)).route("/v1/models/{id}", get(get_model))
}

/// Lists the loaded models.
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "models",
    responses((status = 200, description = "the loaded models, ordered by id", body = ModelList))
)]
pub(crate) async fn list_models(State(state): State<AppState>) -> Json<ModelList> {
    let models = state.runtime.models().iter().map(ModelSummary::from).collect();
    Json(ModelList { models })
}

/// One model's details: provenance (training method, teacher), metrics, labels and input spec.
#[utoipa::path(
    get,
    path = "/v1/models/{id}",
    tag = "models",
    params(("id" = String, Path, description = "`name@version`, or `name` for its highest version")),
    responses((status = 200, description = "the model", body = ModelDetail))
)]
pub(crate) async fn get_model(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ModelDetail>, ApiError> {
    let info = state.runtime.model(&id)?;
    Ok(Json(ModelDetail::from(&info)))
}
