//! Request-level middleware that is not about metrics or auth: request spans, request size
//! limits, reading bodies before the concurrency limit, and the last line of defence for the error
//! shape.

use axum::body::Body;
use axum::extract::{Request, State};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Span;

use crate::error::{ApiError, ErrorShape, ErrorType};
use crate::state::AppState;

/// The `Server-Timing` response header.
pub(crate) const SERVER_TIMING: &str = "server-timing";

/// Name of the request-id header, set when absent and echoed on the response.
pub(crate) const REQUEST_ID_HEADER: &str = "x-request-id";

/// Answers 414 or 431 in the JSON error shape for request targets and headers past the configured
/// limits. hyper's own bounds (100 headers, a head of about 400 KiB) sit well above these and answer
/// with an empty body, which the HTTP library does not let a server change.
pub(crate) async fn limit_request_size(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let config = &state.config;
    let target = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target > config.max_uri_bytes {
        return Err(ApiError::new(
            ErrorType::UriTooLong,
            format!("the request target is {target} bytes, more than the {} accepted", config.max_uri_bytes),
        ));
    }
    let headers: usize = req.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    if headers > config.max_header_bytes {
        return Err(ApiError::new(
            ErrorType::HeadersTooLarge,
            format!("the request headers are {headers} bytes, more than the {} accepted", config.max_header_bytes),
        ));
    }
    Ok(next.run(req).await)
}

/// Reads the whole body, under the body-read timeout and the body limit, before the request goes
/// on to the concurrency limit: otherwise clients uploading at a byte a second hold every permit
/// and the API answers 429 to everyone else.
pub(crate) async fn read_body_first(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let config = &state.config;
    let (parts, body) = req.into_parts();
    let declared =
        parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > config.body_limit_bytes as u64) {
        return Err(body_too_large());
    }
    let bytes =
        match tokio::time::timeout(config.body_read_timeout, axum::body::to_bytes(body, config.body_limit_bytes)).await
        {
            Err(_) => {
                return Err(ApiError::new(
                    ErrorType::RequestTimeout,
                    format!("the request body did not arrive within {} ms", config.body_read_timeout.as_millis()),
                ))
            }
            Ok(Err(err)) => {
                let err = err.into_inner();
                if err.is::<http_body_util::LengthLimitError>() {
                    return Err(body_too_large());
                }
                return Err(ApiError::new(ErrorType::BadRequest, format!("could not read the request body: {err}")));
            }
            Ok(Ok(bytes)) => bytes,
        };
    Ok(next.run(Request::from_parts(parts, Body::from(bytes))).await)
}

fn body_too_large() -> ApiError {
    ApiError::new(ErrorType::PayloadTooLarge, "the request body exceeds the server's size limit")
}

/// Adds `Server-Timing: queue;dur=…, inference;dur=…, total;dur=…` (milliseconds) to every
/// response: the longest queue wait and batch run of the request's items, and the time in the app.
/// Browsers' developer tools and many proxies show it, so a slow answer can be placed at a glance.
pub(crate) async fn server_timing(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let (mut response, timing) = tandem_runtime::timing::measured(next.run(req)).await;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let value = format!(
        "queue;dur={:.3}, inference;dur={:.3}, total;dur={:.3}",
        ms(timing.queue),
        ms(timing.inference),
        ms(start.elapsed())
    );
    if let Ok(value) = HeaderValue::from_str(&value) {
        response.headers_mut().insert(SERVER_TIMING, value);
    }
    response
}

/// One span per request carrying its id, so that every log line of a request can be correlated
/// with what the client saw in `x-request-id`.
pub(crate) fn request_span(req: &axum::http::Request<Body>) -> Span {
    let request_id = req.headers().get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("-");
    tracing::info_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
        request_id = %request_id,
    )
}

/// Gives every error response the shape of its path's protocol, keeping headers such as `Allow`
/// and `Retry-After`: errors of `/v2` paths are re-rendered in the Open Inference Protocol's shape
/// (wherever they arose: handler, extractor, fallback or layer), and any error that is not JSON
/// (from a layer or a nested service we do not control) is rewritten into the error table's shape.
pub(crate) async fn enforce_error_shape(req: Request, next: Next) -> Response {
    let shape = ErrorShape::for_path(req.uri().path());
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let mut shaped = match response.extensions().get::<ApiError>() {
        Some(_) if shape == ErrorShape::Tandem => return response,
        Some(error) => error.render(shape),
        None if is_json(response.headers()) => return response,
        None => {
            let reason = status.canonical_reason().unwrap_or("request failed").to_ascii_lowercase();
            let error = ApiError::from_status(status, reason);
            error.log();
            error.render(shape)
        }
    };
    let (parts, _) = response.into_parts();
    for (name, value) in &parts.headers {
        if name == header::CONTENT_TYPE || name == header::CONTENT_LENGTH {
            continue;
        }
        if !shaped.headers().contains_key(name) {
            shaped.headers_mut().insert(name.clone(), value.clone());
        }
    }
    shaped
}

fn is_json(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"))
}
