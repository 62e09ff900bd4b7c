//! Server settings, kept apart from the runtime's so that the runtime stays free of HTTP concerns.

use std::time::Duration;

/// How the HTTP server listens, limits and protects itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Interface to bind, e.g. `127.0.0.1` or `0.0.0.0`.
    pub host: String,
    /// Port to bind; 0 picks a free one.
    pub port: u16,
    /// Largest accepted request body; bigger bodies get 413.
    pub body_limit_bytes: usize,
    /// Deadline for a whole request; past it the client gets 503 with type `timeout`.
    pub request_timeout: Duration,
    /// API requests handled at once; the next one is shed with 429 rather than queued, so that
    /// overload shows up at the client instead of as growing latency.
    pub concurrency_limit: usize,
    /// Most inputs (images or texts) in one request; more get 413 with type `too_many_inputs`.
    pub max_inputs: usize,
    /// Most characters in one text input; longer ones get 422 before any tokenizing.
    pub max_input_chars: usize,
    /// Origins allowed by CORS; empty sends no CORS headers at all, `*` allows any origin.
    pub cors_origins: Vec<String>,
    /// When set, `/v1` routes need `Authorization: Bearer <key>`; health, metrics and docs stay
    /// open so that probes and scrapers need no secret.
    pub api_key: Option<String>,
    /// How long in-flight requests may run after shutdown starts before they are abandoned.
    pub drain_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".to_owned(),
            port: 8080,
            body_limit_bytes: 4 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            concurrency_limit: 256,
            max_inputs: 256,
            max_input_chars: 32_768,
            cors_origins: Vec::new(),
            api_key: None,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

impl ServerConfig {
    /// Checks values that would otherwise turn every request into an error at serve time.
    pub fn validate(&self) -> Result<(), String> {
        if self.concurrency_limit == 0 {
            return Err("concurrency_limit must be at least 1".to_owned());
        }
        if self.max_inputs == 0 {
            return Err("max_inputs must be at least 1".to_owned());
        }
        if self.max_input_chars == 0 {
            return Err("max_input_chars must be at least 1".to_owned());
        }
        if self.body_limit_bytes == 0 {
            return Err("body_limit_bytes must be at least 1".to_owned());
        }
        if self.request_timeout.is_zero() {
            return Err("request_timeout must be positive".to_owned());
        }
        if self.api_key.as_deref().is_some_and(str::is_empty) {
            return Err("api_key must not be empty when set".to_owned());
        }
        for origin in &self.cors_origins {
            if origin != "*" && axum::http::HeaderValue::from_str(origin).is_err() {
                return Err(format!("cors origin {origin:?} is not a valid header value"));
            }
        }
        Ok(())
    }
}
