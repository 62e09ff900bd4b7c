//! Model listing and details; loading and unloading are the admin API's (`admin.rs`).

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

/// Lists the loaded models, and the bundles of the models directory that are loading or failed
/// to load, each with its `state`.
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "models",
    responses((status = 200, description = "the models, ordered by id", body = ModelList))
)]
pub(crate) async fn list_models(State(state): State<AppState>) -> Json<ModelList> {
    let mut models: Vec<ModelSummary> = state.runtime.models().iter().map(ModelSummary::from).collect();
    let statuses = state.repository.as_ref().map(|repository| repository.statuses()).unwrap_or_default();
    for status in &statuses {
        let summary = ModelSummary::from(status);
        // The runtime and the directory are read one after the other: a model that began serving
        // in between is added, not listed twice. A bundle that does not serve is listed on its own,
        // even when its id is served from elsewhere (which is why it failed).
        let listed = status.model.as_ref().and_then(|_| models.iter_mut().find(|m| m.id == summary.id));
        match listed {
            Some(listed) => *listed = summary,
            None => models.push(summary),
        }
    }
    models.sort_by(|a, b| a.id.cmp(&b.id));
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
