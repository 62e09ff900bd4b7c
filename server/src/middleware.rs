//! Request-level middleware that is not about metrics: API-key auth, request spans, and the last
//! line of defence for the error shape.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Span;

use crate::error::{ApiError, ErrorShape, ErrorType};
use crate::state::AppState;

/// Name of the request-id header, set when absent and echoed on the response.
pub(crate) const REQUEST_ID_HEADER: &str = "x-request-id";

/// Rejects `/v1` requests without the configured bearer token; a no-op when no key is set.
pub(crate) async fn require_api_key(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(expected) = state.config.api_key.as_deref() else {
        return Ok(next.run(req).await);
    };
    let Some(token) = bearer_token(req.headers()) else {
        return Err(ApiError::of(ErrorType::Unauthorized));
    };
    if !constant_time_eq(token.as_bytes(), expected.as_bytes()) {
        return Err(ApiError::of(ErrorType::Unauthorized));
    }
    Ok(next.run(req).await)
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is case-insensitive.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    Some(token.trim())
}

/// Compares without an early exit on the first differing byte, so that response timing does not
/// reveal how much of a guessed key was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_tokens_are_parsed_case_insensitively() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer abc"));
        assert_eq!(bearer_token(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer_token(&headers), None);
    }

    #[test]
    fn keys_compare_exactly() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
