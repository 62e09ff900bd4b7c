//! Assembles the router: routes, fallbacks, and the tower layers every request passes through.

use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::{middleware, BoxError, Router};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::auth::require_api_key;
use crate::error::{self, ApiError, ErrorType};
use crate::middleware::{
    enforce_error_shape, limit_request_size, read_body_first, request_span, server_timing, REQUEST_ID_HEADER,
    SERVER_TIMING,
};
use crate::routes;
use crate::state::AppState;

/// The whole HTTP application, without a socket; serve it with [`crate::serve_on`] or drive it
/// with `tower::ServiceExt::oneshot` in tests.
///
/// Layers, outermost first: request id, trace span, error-shape guard, CORS, HTTP metrics,
/// request size limits (414, 431), `Server-Timing`, request timeout (503 `timeout`), body limit (413). `/v1` and
/// `/v2/models` routes add API-key auth (401), then read the whole body under the body-read
/// timeout (408), then a concurrency limit that sheds load (429) instead of queueing it: in that
/// order, so that neither unauthenticated nor slow clients hold a permit. `/metrics` needs the API
/// key unless `public_metrics` is set.
pub fn app(state: AppState) -> Router {
    let config = state.config.clone();

    let api = Router::new()
        .merge(routes::models::router())
        .merge(routes::admin::router())
        .merge(routes::classifier::router())
        .merge(routes::embedder::router())
        .merge(routes::generator::router())
        .merge(routes::image_tokenizer::router())
        .merge(routes::kserve::router())
        .method_not_allowed_fallback(error::method_not_allowed)
        .route_layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(shed_error))
                .load_shed()
                .layer(GlobalConcurrencyLimitLayer::new(config.concurrency_limit.max(1))),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), read_body_first))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_api_key));

    let mut metrics = routes::metrics::router();
    if !config.public_metrics {
        metrics = metrics.route_layer(middleware::from_fn_with_state(state.clone(), require_api_key));
    }

    let open = Router::new()
        .merge(routes::health::router())
        .merge(routes::kserve::open_router())
        .merge(metrics)
        .merge(routes::docs::router());

    let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    let cors = cors_layer(&config.cors_origins, &request_id);

    Router::new()
        .merge(api)
        .merge(open)
        .method_not_allowed_fallback(error::method_not_allowed)
        .fallback(error::not_found)
        .layer(DefaultBodyLimit::max(config.body_limit_bytes))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                .layer(PropagateRequestIdLayer::new(request_id))
                .layer(TraceLayer::new_for_http().make_span_with(request_span))
                .layer(middleware::from_fn(enforce_error_shape))
                .option_layer(cors)
                .layer(middleware::from_fn_with_state(state.clone(), crate::metrics::track_http))
                .layer(middleware::from_fn_with_state(state.clone(), limit_request_size))
                .layer(middleware::from_fn(server_timing))
                .layer(HandleErrorLayer::new(timeout_error))
                .timeout(config.request_timeout),
        )
        .with_state(state)
}

/// CORS for the configured origins; none configured means no CORS headers at all, so browsers
/// keep their same-origin default.
fn cors_layer(origins: &[String], request_id: &HeaderName) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let list: Vec<HeaderValue> = origins
            .iter()
            .filter_map(|o| match HeaderValue::from_str(o) {
                Ok(v) => Some(v),
                Err(_) => {
                    tracing::warn!(origin = %o, "ignoring invalid cors origin");
                    None
                }
            })
            .collect();
        AllowOrigin::list(list)
    };
    // The binary tensor data extension's header, which browser clients must be allowed to send and read.
    let inference_header = HeaderName::from_static(routes::kserve::HEADER_LENGTH);
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION, request_id.clone(), inference_header.clone()])
            .expose_headers([
                request_id.clone(),
                header::RETRY_AFTER,
                inference_header,
                HeaderName::from_static(SERVER_TIMING),
            ]),
    )
}

/// Maps the load-shedding layer's error: a full concurrency limit is 429.
async fn shed_error(err: BoxError) -> ApiError {
    if err.is::<tower::load_shed::error::Overloaded>() {
        return ApiError::of(ErrorType::Overloaded);
    }
    ApiError::new(ErrorType::Internal, format!("unhandled middleware error: {err}"))
}

/// Maps the timeout layer's error: a request past its deadline is 503 `timeout`.
async fn timeout_error(err: BoxError) -> ApiError {
    if err.is::<tower::timeout::error::Elapsed>() {
        return ApiError::of(ErrorType::Timeout);
    }
    ApiError::new(ErrorType::Internal, format!("unhandled middleware error: {err}"))
}
