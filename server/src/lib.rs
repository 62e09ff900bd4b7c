//! Tandem's HTTP server: thin axum handlers that decode and validate a request, call the runtime,
//! and encode its answer.
//!
//! Next to Tandem's own `/v1` routes it speaks the Open Inference Protocol (KServe v2) under `/v2`,
//! so that Triton's, KServe's and Seldon's clients work unchanged.
//!
//! Everything that can fail answers with one JSON error shape per protocol, from one table of
//! types and statuses (see [`ApiError`]), and the OpenAPI document ([`openapi`]) is generated from
//! the same handlers and status mapping that serve requests, so the two cannot drift apart
//! silently.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::sync::Arc;
//! use tandem_runtime::{Runtime, RuntimeConfig};
//! use tandem_server::{serve, shutdown_signal, ServerConfig};
//!
//! let runtime = Arc::new(Runtime::new(RuntimeConfig::default()));
//! runtime.load("models/mnist-student".as_ref()).expect("bundle loads");
//! serve(runtime, ServerConfig::default(), shutdown_signal()).await
//! # }
//! ```
#![deny(missing_docs)]

mod app;
mod auth;
mod config;
mod connections;
mod error;
mod extract;
mod images;
mod log_limit;
mod metrics;
mod middleware;
mod openapi;
mod routes;
mod serve;
mod shutdown;
mod state;
mod top_k;
mod whole;
pub mod wire;

pub use app::{app, app_without, Layer};
pub use auth::{read_keys_file, ApiKeys};
pub use config::ServerConfig;
pub use error::{ApiError, ErrorType};
pub use metrics::install_metrics;
pub use openapi::{openapi, openapi_json};
pub use serve::{serve, serve_on, serve_with_state};
pub use shutdown::shutdown_signal;
pub use state::AppState;
pub use top_k::MAX_TOP_K;
