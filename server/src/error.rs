//! The error shapes failures answer with, and the single table mapping errors to statuses.
//!
//! Handlers, extractor rejections, fallbacks and tower layers all end up here, so a client of
//! Tandem's own routes only ever has to parse `{"error":{"type":"...","message":"..."}}`. Routes of
//! the Open Inference Protocol (`/v2`) answer `{"error":"...","type":"..."}` instead, because the
//! protocol makes `error` a string and Triton's and KServe's clients read it as one; the status and
//! the type come from the same table either way (see [`ErrorShape`]). The OpenAPI document reads
//! the same [`ErrorType::status`] table, which keeps the documented codes honest.

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use std::time::Duration;

use crate::log_limit::LogLimiter;
use crate::wire::kserve::InferenceErrorBody;
use crate::wire::{ErrorBody, ErrorDetail};

/// Seconds a client is asked to wait after a 429, short because load is usually bursty.
pub const RETRY_AFTER_SECS: u64 = 1;

/// Machine-readable kind of an error; the `type` field of the error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    /// The request could not be read (bad path encoding, broken body stream).
    BadRequest,
    /// The body is not syntactically valid JSON.
    InvalidJson,
    /// Image bytes (or their base64) could not be decoded.
    InvalidImage,
    /// An API key is configured and the request did not carry it.
    Unauthorized,
    /// No such route or model.
    NotFound,
    /// The route exists but not for this method.
    MethodNotAllowed,
    /// The body is larger than the configured limit.
    PayloadTooLarge,
    /// More inputs in one request than the configured limit.
    TooManyInputs,
    /// An image declares more pixels than `max_image_pixels`, or a request's images together more
    /// than `max_request_pixels`; refused from the headers, before decoding.
    ImageTooLarge,
    /// The body did not arrive within the body-read timeout.
    RequestTimeout,
    /// The request target is longer than the server accepts.
    UriTooLong,
    /// The request headers are larger than the server accepts.
    HeadersTooLarge,
    /// The body's content type is not one the route accepts.
    UnsupportedMediaType,
    /// Well-formed JSON of the wrong shape, or values the model cannot use.
    InvalidInput,
    /// A bundle in the models directory failed verification or warm-up; what served keeps serving.
    InvalidBundle,
    /// The request conflicts with how the server runs: the admin API without a models directory,
    /// or a model that was not loaded from it.
    Conflict,
    /// Too much work in flight; retry after `Retry-After` seconds.
    Overloaded,
    /// The request did not finish within its deadline.
    Timeout,
    /// The server is warming up, draining, or a model cannot take requests.
    Unavailable,
    /// An unexpected failure; details are in the server log, not the response.
    Internal,
}

impl ErrorType {
    /// Every error type, so that documentation and tests can walk the whole table.
    pub const ALL: [ErrorType; 20] = [
        ErrorType::BadRequest,
        ErrorType::InvalidJson,
        ErrorType::InvalidImage,
        ErrorType::Unauthorized,
        ErrorType::NotFound,
        ErrorType::MethodNotAllowed,
        ErrorType::PayloadTooLarge,
        ErrorType::TooManyInputs,
        ErrorType::ImageTooLarge,
        ErrorType::RequestTimeout,
        ErrorType::UriTooLong,
        ErrorType::HeadersTooLarge,
        ErrorType::UnsupportedMediaType,
        ErrorType::InvalidInput,
        ErrorType::InvalidBundle,
        ErrorType::Conflict,
        ErrorType::Overloaded,
        ErrorType::Timeout,
        ErrorType::Unavailable,
        ErrorType::Internal,
    ];

    /// The HTTP status for this type: the single source of truth for responses and the spec.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorType::BadRequest | ErrorType::InvalidJson | ErrorType::InvalidImage => StatusCode::BAD_REQUEST,
            ErrorType::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorType::NotFound => StatusCode::NOT_FOUND,
            ErrorType::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorType::PayloadTooLarge | ErrorType::TooManyInputs | ErrorType::ImageTooLarge => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ErrorType::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorType::UriTooLong => StatusCode::URI_TOO_LONG,
            ErrorType::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorType::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorType::InvalidInput | ErrorType::InvalidBundle => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorType::Conflict => StatusCode::CONFLICT,
            ErrorType::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            ErrorType::Timeout | ErrorType::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorType::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `type` string on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::BadRequest => "bad_request",
            ErrorType::InvalidJson => "invalid_json",
            ErrorType::InvalidImage => "invalid_image",
            ErrorType::Unauthorized => "unauthorized",
            ErrorType::NotFound => "not_found",
            ErrorType::MethodNotAllowed => "method_not_allowed",
            ErrorType::PayloadTooLarge => "payload_too_large",
            ErrorType::TooManyInputs => "too_many_inputs",
            ErrorType::ImageTooLarge => "image_too_large",
            ErrorType::RequestTimeout => "request_timeout",
            ErrorType::UriTooLong => "uri_too_long",
            ErrorType::HeadersTooLarge => "headers_too_large",
            ErrorType::UnsupportedMediaType => "unsupported_media_type",
            ErrorType::InvalidInput => "invalid_input",
            ErrorType::InvalidBundle => "invalid_bundle",
            ErrorType::Conflict => "conflict",
            ErrorType::Overloaded => "overloaded",
            ErrorType::Timeout => "timeout",
            ErrorType::Unavailable => "unavailable",
            ErrorType::Internal => "internal",
        }
    }

    /// When the type applies, in words; used for the spec's response descriptions.
    pub fn description(self) -> &'static str {
        match self {
            ErrorType::BadRequest => "the request could not be read",
            ErrorType::InvalidJson => "the body is not valid JSON",
            ErrorType::InvalidImage => "an image or its base64 encoding could not be decoded",
            ErrorType::Unauthorized => "an API key is configured and the bearer token is missing or wrong",
            ErrorType::NotFound => "no such route or model",
            ErrorType::MethodNotAllowed => "the path exists but not for this method",
            ErrorType::PayloadTooLarge => "the body exceeds the configured size limit",
            ErrorType::TooManyInputs => "more inputs than the configured `max_inputs`",
            ErrorType::ImageTooLarge => {
                "an image declares more pixels than `max_image_pixels`, or the request's images more than `max_request_pixels`"
            }
            ErrorType::RequestTimeout => "the body did not arrive within the server's body-read timeout",
            ErrorType::UriTooLong => "the request target exceeds the server's length limit",
            ErrorType::HeadersTooLarge => "the request headers exceed the server's size limit",
            ErrorType::UnsupportedMediaType => "the content type is not accepted by this route",
            ErrorType::InvalidInput => "well-formed JSON of the wrong shape, or unusable values",
            ErrorType::InvalidBundle => {
                "the bundle in the models directory failed verification or warm-up; what was serving keeps serving"
            }
            ErrorType::Conflict => {
                "the admin API needs a models directory (`--models-dir`), and manages only the models loaded from it"
            }
            ErrorType::Overloaded => "too many requests in flight; retry after `Retry-After` seconds",
            ErrorType::Timeout => "the request did not finish within the server's deadline",
            ErrorType::Unavailable => "the server is warming up or draining, or the model cannot take requests",
            ErrorType::Internal => "an unexpected failure; details are in the server log",
        }
    }

    /// What 5xx bodies say instead of the underlying detail, which may leak internals.
    fn public_message(self) -> Option<&'static str> {
        match self {
            ErrorType::Timeout => Some("the request timed out"),
            ErrorType::Unavailable => Some("the service is unavailable, retry later"),
            ErrorType::Internal => Some("internal server error"),
            _ => None,
        }
    }
}

/// Which body an error answers with, decided by the request's path.
///
/// One error value renders either way, so handlers, extractors and layers never need to know which
/// protocol a path speaks: [`crate::middleware::enforce_error_shape`] re-renders errors of `/v2`
/// paths on their way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorShape {
    /// `{"error":{"type":"...","message":"..."}}`, Tandem's own.
    Tandem,
    /// `{"error":"...","type":"..."}`: the Open Inference Protocol's `{"error": string}` plus the
    /// type, which its clients ignore.
    OpenInference,
}

impl ErrorShape {
    /// The shape of errors answered on `path`: the protocol's own under `/v2`.
    pub(crate) fn for_path(path: &str) -> ErrorShape {
        if path == "/v2" || path.starts_with("/v2/") {
            ErrorShape::OpenInference
        } else {
            ErrorShape::Tandem
        }
    }
}

/// Every way a request can fail, as seen by an HTTP client: a type from the table above and a message.
///
/// One struct rather than a second enum mirroring [`ErrorType`]: the type alone decides the status,
/// the headers and whether the message may be shown, so nothing else needs a variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    kind: ErrorType,
    message: String,
}

impl ApiError {
    /// An error of `kind` with a message for the client (or, for 5xx types, for the log only).
    pub fn new(kind: ErrorType, message: impl Into<String>) -> ApiError {
        ApiError { kind, message: message.into() }
    }

    /// An error of `kind` with the type's standard message, for types whose message adds nothing.
    pub fn of(kind: ErrorType) -> ApiError {
        let message = match kind {
            ErrorType::Unauthorized => "a valid bearer token is required",
            ErrorType::Overloaded => "too many requests in flight, retry later",
            ErrorType::Timeout => "the request timed out",
            other => other.description(),
        };
        ApiError::new(kind, message)
    }

    /// The wire type, which decides the status.
    pub fn error_type(&self) -> ErrorType {
        self.kind
    }

    /// The message as written, before 5xx messages are replaced for the client.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The HTTP status, from [`ErrorType::status`].
    pub fn status(&self) -> StatusCode {
        self.error_type().status()
    }

    /// Maps a bare status (from a rejection or a layer we do not control) onto the error table.
    pub fn from_status(status: StatusCode, message: impl Into<String>) -> ApiError {
        let kind = match status {
            StatusCode::UNAUTHORIZED => return ApiError::of(ErrorType::Unauthorized),
            StatusCode::TOO_MANY_REQUESTS => return ApiError::of(ErrorType::Overloaded),
            StatusCode::GATEWAY_TIMEOUT => return ApiError::of(ErrorType::Timeout),
            StatusCode::REQUEST_TIMEOUT => ErrorType::RequestTimeout,
            StatusCode::URI_TOO_LONG => ErrorType::UriTooLong,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => ErrorType::HeadersTooLarge,
            StatusCode::NOT_FOUND => ErrorType::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => ErrorType::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => ErrorType::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorType::UnsupportedMediaType,
            StatusCode::UNPROCESSABLE_ENTITY => ErrorType::InvalidInput,
            StatusCode::CONFLICT => ErrorType::Conflict,
            StatusCode::SERVICE_UNAVAILABLE => ErrorType::Unavailable,
            s if s.is_server_error() => ErrorType::Internal,
            _ => ErrorType::BadRequest,
        };
        ApiError::new(kind, message)
    }

    /// The message a client may see: 5xx details are replaced by a generic message.
    fn public(&self) -> String {
        self.kind.public_message().map_or_else(|| client_message(&self.message), str::to_owned)
    }

    /// The JSON body a client of Tandem's own routes sees.
    pub fn body(&self) -> ErrorBody {
        ErrorBody { error: ErrorDetail { kind: self.error_type(), message: self.public() } }
    }

    /// The JSON body a client of the Open Inference Protocol sees.
    pub fn inference_body(&self) -> InferenceErrorBody {
        InferenceErrorBody { error: self.public(), kind: self.error_type() }
    }

    /// A response in `shape`, with the headers the type calls for, without logging: used to
    /// re-render an error that was logged when it first became a response.
    pub(crate) fn render(&self, shape: ErrorShape) -> Response {
        let kind = self.error_type();
        let mut response = match shape {
            ErrorShape::Tandem => (kind.status(), axum::Json(self.body())).into_response(),
            ErrorShape::OpenInference => (kind.status(), axum::Json(self.inference_body())).into_response(),
        };
        let headers = response.headers_mut();
        match kind {
            ErrorType::Overloaded => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            }
            ErrorType::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        // Carried along so that the shape guard can re-render it for paths of another protocol.
        response.extensions_mut().insert(self.clone());
        response
    }

    /// The 422 for a model whose kind a route does not serve, naming the routes that serve it.
    pub(crate) fn wrong_kind(model: &str, kind: &str, expected: &[&str]) -> ApiError {
        let expected = match expected {
            [one] => format!("kind `{one}`"),
            many => format!("kinds {}", many.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(" and ")),
        };
        ApiError::new(
            ErrorType::InvalidInput,
            format!(
                "model {model} is of kind `{kind}`, and this route serves {expected}; {model} is served by {}",
                crate::routes::routes_for_kind(kind).join(", ")
            ),
        )
    }
}

/// Messages often end with a library's own text (base64, JSON and image decoders), which may close
/// with a period; stripping it here, where every client-facing message passes, keeps the house style
/// without patching each call site.
fn client_message(text: &str) -> String {
    text.trim_end().trim_end_matches('.').trim_end().to_owned()
}

impl ApiError {
    /// Logs the error at the level its type deserves: failures of the server louder than a
    /// client's mistakes.
    pub(crate) fn log(&self) {
        let kind = self.error_type();
        match kind {
            ErrorType::Internal => tracing::error!(error = %self, "request failed"),
            ErrorType::Unavailable => tracing::warn!(error = %self, "request failed"),
            ErrorType::Timeout | ErrorType::Overloaded => {
                // Overload makes these by the thousand a second: count every one, log a sample.
                static SAMPLE: LogLimiter = LogLimiter::new(Duration::from_secs(10));
                metrics::counter!("tandem_shed_requests_total", "reason" => kind.as_str()).increment(1);
                if let Some(suppressed) = SAMPLE.allow() {
                    tracing::warn!(error = %self, suppressed, "request rejected (sampled: one line per 10 s)");
                }
            }
            _ => tracing::debug!(error = %self, error_type = kind.as_str(), "request rejected"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log();
        self.render(ErrorShape::Tandem)
    }
}

impl From<tandem_runtime::Error> for ApiError {
    fn from(err: tandem_runtime::Error) -> Self {
        use tandem_runtime::Error as E;
        match err {
            E::InvalidInput(m) => ApiError::new(ErrorType::InvalidInput, m),
            E::InvalidImage(m) => ApiError::new(ErrorType::InvalidImage, m),
            E::ImageTooLarge(m) => ApiError::new(ErrorType::ImageTooLarge, m),
            E::NotFound(m) => ApiError::new(ErrorType::NotFound, m),
            E::WrongKind { model, kind, expected } => ApiError::wrong_kind(&model, &kind, &[expected]),
            E::Overloaded => ApiError::of(ErrorType::Overloaded),
            E::Timeout => ApiError::of(ErrorType::Timeout),
            E::Unavailable(m) => ApiError::new(ErrorType::Unavailable, m),
            E::Conflict(m) => ApiError::new(ErrorType::Conflict, m),
            E::Bundle(m) => ApiError::new(ErrorType::Internal, format!("bundle error: {m}")),
            other => ApiError::new(ErrorType::Internal, other.to_string()),
        }
    }
}

/// The innermost useful detail of an axum rejection, without its capitalised preamble.
fn detail(err: &dyn std::error::Error) -> String {
    err.source().map_or_else(|| err.to_string(), |source| source.to_string())
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(e) => {
                ApiError::new(ErrorType::InvalidInput, format!("invalid request body: {}", detail(&e)))
            }
            JsonRejection::JsonSyntaxError(e) => {
                ApiError::new(ErrorType::InvalidJson, format!("malformed json: {}", detail(&e)))
            }
            JsonRejection::MissingJsonContentType(_) => {
                ApiError::new(ErrorType::UnsupportedMediaType, "expected a request with content type application/json")
            }
            JsonRejection::BytesRejection(e) => e.into(),
            other => ApiError::from_status(other.status(), detail(&other)),
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::new(ErrorType::PayloadTooLarge, "the request body exceeds the server's size limit");
        }
        ApiError::from_status(rejection.status(), format!("could not read the request body: {}", detail(&rejection)))
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::from_status(rejection.status(), format!("invalid path: {}", detail(&rejection)))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::new(ErrorType::InvalidInput, format!("invalid query string: {}", detail(&rejection)))
    }
}

/// Router fallback: unknown routes get the error shape rather than an empty 404.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(ErrorType::NotFound, format!("no route for {}", uri.path()))
}

/// Method fallback: known path, wrong method, still the error shape (axum keeps the `Allow` header).
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(ErrorType::MethodNotAllowed, format!("method {method} is not allowed on {}", uri.path()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_match_serde() {
        for kind in ErrorType::ALL {
            let json = serde_json::to_value(kind).expect("serializes");
            assert_eq!(json, serde_json::Value::String(kind.as_str().to_owned()));
        }
    }

    #[test]
    fn every_status_maps_back_to_its_type_family() {
        for kind in ErrorType::ALL {
            let back = ApiError::from_status(kind.status(), "x").error_type();
            assert_eq!(back.status(), kind.status(), "{kind:?}");
        }
    }

    #[test]
    fn runtime_errors_map_to_the_documented_statuses() {
        use tandem_runtime::Error as E;
        let cases = [
            (E::InvalidInput("x".into()), 422),
            (E::InvalidImage("x".into()), 400),
            (E::ImageTooLarge("x".into()), 413),
            (E::NotFound("x".into()), 404),
            (E::Overloaded, 429),
            (E::Timeout, 503),
            (E::Unavailable("x".into()), 503),
            (E::Conflict("x".into()), 409),
            (E::Bundle("x".into()), 500),
            (E::Internal("x".into()), 500),
            (E::WrongKind { model: "m@1".into(), kind: "classifier".into(), expected: "embedder" }, 422),
        ];
        for (err, status) in cases {
            let api = ApiError::from(err);
            assert_eq!(api.status().as_u16(), status, "{api:?}");
        }
    }

    #[test]
    fn server_errors_hide_their_details() {
        let body = ApiError::new(ErrorType::Internal, "secret path /x/y").body();
        assert_eq!(body.error.kind, ErrorType::Internal);
        assert!(!body.error.message.contains("secret"));
        let body = ApiError::new(ErrorType::Unavailable, "worker gone").body();
        assert!(!body.error.message.contains("worker"));
        let body = ApiError::new(ErrorType::InvalidInput, "top_k must be at least 1").body();
        assert_eq!(body.error.message, "top_k must be at least 1");
    }

    #[test]
    fn library_periods_are_stripped_from_client_messages() {
        let body = ApiError::new(ErrorType::InvalidImage, "image is not valid base64: Invalid input length.").body();
        assert_eq!(body.error.message, "image is not valid base64: Invalid input length");
        assert_eq!(client_message("ends with dots... "), "ends with dots");
    }

    #[test]
    fn one_error_renders_in_either_shape_with_one_status() {
        let err = ApiError::new(ErrorType::InvalidInput, "input \"images\": shape [1] is not [-1, 1, 8, 8].");
        let body = serde_json::to_value(err.inference_body()).expect("serializes");
        assert_eq!(
            body,
            serde_json::json!({"error": "input \"images\": shape [1] is not [-1, 1, 8, 8]", "type": "invalid_input"})
        );
        let hidden = serde_json::to_value(ApiError::new(ErrorType::Internal, "secret").inference_body()).unwrap();
        assert_eq!(hidden["error"], "internal server error");
        for shape in [ErrorShape::Tandem, ErrorShape::OpenInference] {
            let res = ApiError::of(ErrorType::Overloaded).render(shape);
            assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(res.headers()[header::RETRY_AFTER], "1");
        }
        assert_eq!(ErrorShape::for_path("/v2"), ErrorShape::OpenInference);
        assert_eq!(ErrorShape::for_path("/v2/models/m/infer"), ErrorShape::OpenInference);
        assert_eq!(ErrorShape::for_path("/v1/models"), ErrorShape::Tandem);
        assert_eq!(ErrorShape::for_path("/v20"), ErrorShape::Tandem);
    }

    #[test]
    fn wrong_kind_names_one_or_several_kinds() {
        let one = ApiError::wrong_kind("m@1", "embedder", &["classifier"]).to_string();
        assert!(one.contains("this route serves kind `classifier`;"), "{one}");
        let two = ApiError::wrong_kind("m@1", "other", &["classifier", "embedder"]).to_string();
        assert!(two.contains("serves kinds `classifier` and `embedder`;"), "{two}");
    }

    #[test]
    fn overload_and_auth_carry_their_headers() {
        let res = ApiError::of(ErrorType::Overloaded).into_response();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(res.headers()[header::RETRY_AFTER], "1");
        let res = ApiError::of(ErrorType::Unauthorized).into_response();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(res.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let res = ApiError::new(ErrorType::Internal, "boom").into_response();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
