//! The Prometheus scrape endpoint.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::error::ErrorType;
use crate::state::AppState;

/// Where Prometheus scrapes.
pub(crate) const PATH: &str = "/metrics";

/// `/metrics` needs the API key unless the server runs with `public_metrics`.
pub(crate) const METRICS_ERRORS: &[ErrorType] = &[ErrorType::Unauthorized];

/// Content type of the Prometheus text exposition format.
pub(crate) const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

pub(crate) fn router() -> Router<AppState> {
    Router::new().route(PATH, get(metrics))
}

/// Server and runtime metrics in the Prometheus text format. Needs the API key when one is set,
/// unless the server runs with `public_metrics`: metrics name the models and their traffic.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((
        status = 200,
        description = "Prometheus text exposition format 0.0.4",
        body = String,
        content_type = "text/plain; version=0.0.4"
    ))
)]
pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)], crate::metrics::render(&state.metrics))
}
