//! The Prometheus recorder and the HTTP-level metrics the server records itself.
//!
//! The runtime records its own metrics through the `metrics` facade; installing the recorder here
//! makes them show up on `/metrics` next to ours. A process can install only one global recorder,
//! so installation happens once and every app shares the handle.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::state::AppState;

/// Latency buckets in seconds: sub-millisecond cache hits up to the default request timeout.
const SECONDS_BUCKETS: [f64; 15] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Batch-size buckets: powers of two up to well past any sensible batch.
const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Route label for requests that matched no route, so that random paths cannot blow up the
/// number of series.
const UNMATCHED_ROUTE: &str = "unmatched";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder on first call and returns its handle on every call.
///
/// Call it before loading models when their load-time metrics matter; [`crate::AppState::new`]
/// calls it too. If another recorder was installed first, the handle renders only what reaches it
/// (nothing), and a warning is logged.
pub fn install_metrics() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&SECONDS_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full("tandem_batch_size".to_owned()), &BATCH_BUCKETS))
                .expect("bucket lists are non-empty constants. This is a bug.");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if let Err(err) = metrics::set_global_recorder(recorder) {
                tracing::warn!(%err, "a metrics recorder is already installed; /metrics will be empty");
            }
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!("tandem_http_requests_total", "HTTP requests by matched route, method and status");
    metrics::describe_histogram!(
        "tandem_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "HTTP request latency by matched route and method"
    );
    metrics::describe_counter!("tandem_model_requests_total", "inference requests by resolved model and status");
    metrics::describe_counter!(
        "tandem_shed_requests_total",
        "requests refused under load: `overloaded` (429, concurrency limit or a full model queue) or `timeout` (503, past the deadline)"
    );
    metrics::describe_counter!(
        "tandem_accept_errors_total",
        "errors accepting connections, such as running out of file descriptors"
    );
    tandem_runtime::describe_metrics();
    tandem_runtime::repository::describe_metrics();
}

/// Renders the text exposition; runs upkeep first because no background task does it for us.
pub(crate) fn render(handle: &PrometheusHandle) -> String {
    handle.run_upkeep();
    handle.render()
}

/// Middleware: counts and times every request by its route template, and tracks in-flight
/// requests for the drain log.
pub(crate) async fn track_http(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let _guard = state.track_in_flight();
    let route = req.extensions().get::<MatchedPath>().map_or(UNMATCHED_ROUTE, MatchedPath::as_str).to_owned();
    let method = method_label(req.method());
    let start = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!(
        "tandem_http_request_duration_seconds",
        "route" => route.clone(),
        "method" => method
    )
    .record(start.elapsed().as_secs_f64());
    metrics::counter!(
        "tandem_http_requests_total",
        "route" => route,
        "method" => method,
        "status" => status
    )
    .increment(1);
    response
}

/// Known methods keep their name; anything else is `other`, again to bound the series count. A
/// static name is a label without an allocation.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Counts one inference request against the model that answered it (or `unknown`).
pub(crate) fn record_model_request(model: &str, status: u16) {
    metrics::counter!(
        "tandem_model_requests_total",
        "model" => model.to_owned(),
        "status" => status.to_string()
    )
    .increment(1);
}
