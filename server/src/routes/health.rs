//! Liveness and readiness probes.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use crate::error::{ApiError, ErrorType};
use crate::state::AppState;
use crate::wire::HealthStatus;

/// Errors `/health/ready` answers with besides the global ones.
pub(crate) const READY_ERRORS: &[ErrorType] = &[ErrorType::Unavailable];

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/health/live", get(live)).route("/health/ready", get(ready))
}

/// Liveness: the process is up and answering.
#[utoipa::path(
    get,
    path = "/health/live",
    tag = "health",
    responses((status = 200, description = "the process is up", body = HealthStatus))
)]
pub(crate) async fn live() -> Json<HealthStatus> {
    Json(HealthStatus { status: "live".to_owned() })
}

/// Readiness: models are warmed up and the server is not draining.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "health",
    responses((status = 200, description = "models are warmed up; send traffic", body = HealthStatus))
)]
pub(crate) async fn ready(State(state): State<AppState>) -> Result<Json<HealthStatus>, ApiError> {
    if !state.is_ready() {
        return Err(ApiError::new(ErrorType::Unavailable, "not ready: warming up or draining".to_owned()));
    }
    Ok(Json(HealthStatus { status: "ready".to_owned() }))
}
