//! Server settings, kept apart from the runtime's so that the runtime stays free of HTTP concerns.

use std::path::PathBuf;
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
    /// How long in-flight requests may run after shutdown starts before they are abandoned: a
    /// hard bound on the time from the end of the grace period to exit.
    pub drain_timeout: Duration,
    /// After a shutdown signal, how long the server keeps accepting while `/health/ready` answers
    /// 503, so that a load balancer sees the pod leave before its connections are refused.
    pub drain_grace: Duration,
    /// Most pixels one image may declare in its header; larger ones get 413 `image_too_large`
    /// before any decoding.
    pub max_image_pixels: u64,
    /// Most decoded pixels of all images of one request together (each costs 4 bytes as floats).
    pub max_request_pixels: u64,
    /// How long a request body may take to arrive. Bodies are read before a concurrency permit is
    /// taken, so slow uploads cannot hold the API's permits; past this they get 408.
    pub body_read_timeout: Duration,
    /// How long a request head may take to arrive, from its first byte.
    pub header_read_timeout: Duration,
    /// How long a keep-alive connection may sit idle between requests before it is closed.
    pub idle_timeout: Duration,
    /// Connections open at once; past it new ones wait in the kernel's backlog. Lowered at start to
    /// fit the open-file limit.
    pub max_connections: usize,
    /// Longest request target accepted; longer ones get 414 `uri_too_long`.
    pub max_uri_bytes: usize,
    /// Largest total size of the request headers accepted; larger ones get 431 `headers_too_large`.
    pub max_header_bytes: usize,
    /// A file of API keys, one per line (`#` starts a comment), re-read on SIGHUP; keys in it are
    /// accepted next to `api_key`. Keeps keys out of the process's command line.
    pub api_keys_file: Option<PathBuf>,
    /// Most sampler steps (network evaluations per image) one generate request may ask for; more
    /// get 422. Sampling holds a model's worker for every step of every image.
    pub max_generate_steps: usize,
    /// Most images one generate request may ask for; more get 422.
    pub max_generate_images: usize,
    /// Serve `/metrics` without the API key. Off by default, because metrics name the models and
    /// their traffic; health probes stay open either way.
    pub public_metrics: bool,
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
            drain_grace: Duration::ZERO,
            max_image_pixels: 2048 * 2048,
            max_request_pixels: 16 * 1024 * 1024,
            body_read_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            max_connections: 4096,
            max_uri_bytes: 8 * 1024,
            max_header_bytes: 32 * 1024,
            api_keys_file: None,
            public_metrics: false,
            max_generate_steps: 100,
            max_generate_images: 16,
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
        for (name, value) in [
            ("max_image_pixels", self.max_image_pixels as usize),
            ("max_request_pixels", self.max_request_pixels as usize),
            ("max_connections", self.max_connections),
            ("max_uri_bytes", self.max_uri_bytes),
            ("max_header_bytes", self.max_header_bytes),
            ("max_generate_steps", self.max_generate_steps),
            ("max_generate_images", self.max_generate_images),
        ] {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        for (name, value) in [
            ("body_read_timeout", self.body_read_timeout),
            ("header_read_timeout", self.header_read_timeout),
            ("idle_timeout", self.idle_timeout),
        ] {
            if value.is_zero() {
                return Err(format!("{name} must be positive"));
            }
        }
        if let Some(path) = &self.api_keys_file {
            crate::auth::read_keys_file(path).map_err(|e| format!("api_keys_file {}: {e}", path.display()))?;
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
