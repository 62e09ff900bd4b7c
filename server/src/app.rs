//! Assembles the router: routes, fallbacks, and the tower layers every request passes through.

use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, HeaderValue, Method, Response};
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
    app_without(state, &[])
}

/// A middleware layer of [`app`], by name, so that a benchmark can build the app without it and
/// measure what the layer costs a request. CORS is not among them: it is off unless origins are
/// configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Layer {
    /// Sets `x-request-id` when absent and echoes it on the response.
    RequestId,
    /// `TraceLayer` and its span per request.
    Trace,
    /// The error-shape guard.
    ErrorShape,
    /// Request counts and latencies by route.
    Metrics,
    /// The 414 and 431 checks.
    RequestSize,
    /// The `Server-Timing` header.
    ServerTiming,
    /// The request deadline.
    Timeout,
    /// The body limit the extractors read.
    BodyLimit,
    /// API-key auth (absent anyway when no key is configured).
    ApiKey,
    /// Reading the whole body before the concurrency limit.
    ReadBodyFirst,
    /// The concurrency limit and its load shedding.
    ConcurrencyLimit,
}

impl Layer {
    /// Every layer, outermost first.
    pub const ALL: [Layer; 11] = [
        Layer::RequestId,
        Layer::Trace,
        Layer::ErrorShape,
        Layer::Metrics,
        Layer::RequestSize,
        Layer::ServerTiming,
        Layer::Timeout,
        Layer::BodyLimit,
        Layer::ApiKey,
        Layer::ReadBodyFirst,
        Layer::ConcurrencyLimit,
    ];

    /// A short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Layer::RequestId => "request id",
            Layer::Trace => "trace span",
            Layer::ErrorShape => "error-shape guard",
            Layer::Metrics => "HTTP metrics",
            Layer::RequestSize => "request size limits",
            Layer::ServerTiming => "Server-Timing",
            Layer::Timeout => "request timeout",
            Layer::BodyLimit => "body limit",
            Layer::ApiKey => "API-key auth",
            Layer::ReadBodyFirst => "read body first",
            Layer::ConcurrencyLimit => "concurrency limit",
        }
    }
}

/// [`app`] without the `omitted` layers: for measuring what each layer costs, never for serving,
/// since the layers carry the server's limits, auth and error shape.
pub fn app_without(state: AppState, omitted: &[Layer]) -> Router {
    let config = state.config.clone();
    let keep = |layer: Layer| !omitted.contains(&layer);

    let mut api = Router::new()
        .merge(routes::models::router())
        .merge(routes::admin::router())
        .merge(routes::classifier::router())
        .merge(routes::embedder::router())
        .merge(routes::generator::router())
        .merge(routes::image_tokenizer::router())
        .merge(routes::kserve::router())
        .method_not_allowed_fallback(error::method_not_allowed);
    if keep(Layer::ConcurrencyLimit) {
        api = api.route_layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(shed_error))
                .load_shed()
                .layer(GlobalConcurrencyLimitLayer::new(config.concurrency_limit.max(1))),
        );
    }
    if keep(Layer::ReadBodyFirst) {
        api = api.route_layer(middleware::from_fn_with_state(state.clone(), read_body_first));
    }
    // Without a configured key the check passes every request, and no key can appear later (the
    // keys file is re-read only when one is configured), so the layer would cost and do nothing.
    let auth = state.keys.required();
    if keep(Layer::ApiKey) && auth {
        api = api.route_layer(middleware::from_fn_with_state(state.clone(), require_api_key));
    }

    let mut metrics = routes::metrics::router();
    if auth && !config.public_metrics {
        metrics = metrics.route_layer(middleware::from_fn_with_state(state.clone(), require_api_key));
    }

    let open = Router::new()
        .merge(routes::health::router())
        .merge(routes::kserve::open_router())
        .merge(metrics)
        .merge(routes::docs::router());

    let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    let cors = cors_layer(&config.cors_origins, &request_id);

    let mut app = Router::new()
        .merge(api)
        .merge(open)
        .method_not_allowed_fallback(error::method_not_allowed)
        .fallback(error::not_found);
    if keep(Layer::BodyLimit) {
        app = app.layer(DefaultBodyLimit::max(config.body_limit_bytes));
    }
    // `TraceLayer` answers its own body type; back in axum's `Body` its presence does not change
    // the stack's type, and the router would box the body into `Body` anyway.
    let trace = ServiceBuilder::new()
        .map_response(|response: Response<_>| response.map(Body::new))
        .layer(TraceLayer::new_for_http().make_span_with(request_span));
    let timeout = ServiceBuilder::new().layer(HandleErrorLayer::new(timeout_error)).timeout(config.request_timeout);
    app.layer(
        ServiceBuilder::new()
            .option_layer(keep(Layer::RequestId).then(|| {
                ServiceBuilder::new()
                    .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                    .layer(PropagateRequestIdLayer::new(request_id))
            }))
            .option_layer(keep(Layer::Trace).then_some(trace))
            .option_layer(keep(Layer::ErrorShape).then(|| middleware::from_fn(enforce_error_shape)))
            .option_layer(cors)
            .option_layer(
                keep(Layer::Metrics).then(|| middleware::from_fn_with_state(state.clone(), crate::metrics::track_http)),
            )
            .option_layer(
                keep(Layer::RequestSize).then(|| middleware::from_fn_with_state(state.clone(), limit_request_size)),
            )
            .option_layer(keep(Layer::ServerTiming).then(|| middleware::from_fn(server_timing)))
            .option_layer(keep(Layer::Timeout).then_some(timeout)),
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
