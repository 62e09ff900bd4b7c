//! The OpenAPI document and the Swagger UI, both served from the binary with no network access.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::state::AppState;

/// Where the spec is served; the Swagger UI loads it from here.
pub(crate) const OPENAPI_PATH: &str = "/openapi.json";

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route(OPENAPI_PATH, get(openapi_spec))
        .merge(SwaggerUi::new("/docs").config(Config::from(OPENAPI_PATH)))
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "the OpenAPI 3.1 document of this API", content_type = "application/json"))
)]
pub(crate) async fn openapi_spec() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], crate::openapi::cached_json())
}

/// Interactive documentation (Swagger UI) for this document.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "operations",
    responses(
        (status = 303, description = "redirect to `/docs/`, which serves the Swagger UI",
            headers(("location" = String, description = "`/docs/`")))
    )
)]
#[allow(dead_code)] // Documents the route that SwaggerUi registers; never called.
pub(crate) fn swagger_ui() {}
