//! Running the app on a socket: warm-up, readiness, key reloads, and a bounded, observable drain.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tandem_runtime::Runtime;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::app::app;
use crate::config::ServerConfig;
use crate::connections::{ConnectionLimits, Connections};
use crate::state::AppState;

/// Binds `config.host:config.port` and serves until `shutdown` resolves; see [`serve_on`].
pub async fn serve(
    runtime: Arc<Runtime>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    config.validate().map_err(|msg| io::Error::new(io::ErrorKind::InvalidInput, msg))?;
    let listener = TcpListener::bind((config.host.as_str(), config.port)).await?;
    serve_on(listener, runtime, config, shutdown).await
}

/// Serves on an already bound listener (tests bind `127.0.0.1:0`); see [`serve_with_state`].
pub async fn serve_on(
    listener: TcpListener,
    runtime: Arc<Runtime>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let state = AppState::new(runtime, &config);
    serve_with_state(listener, state, shutdown).await
}

/// Serves `state`'s app on `listener`.
///
/// Requests are accepted at once, but `/health/ready` answers 503 until every model has run a
/// warm-up batch (off the async workers). When `shutdown` resolves:
/// 1. readiness flips to 503 and the server keeps accepting for `drain_grace`, so that a load
///    balancer sees the pod leave before any connection is refused;
/// 2. the listener closes, and every connection finishes its in-flight requests and closes;
/// 3. after `drain_timeout` at most, whatever is still running is abandoned and this returns.
///
/// A failed warm-up shuts the server down the same way (without the grace) and returns the error.
pub async fn serve_with_state(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let config = state.config.clone();
    config.validate().map_err(|msg| io::Error::new(io::ErrorKind::InvalidInput, msg))?;
    let draining = Arc::new(AtomicBool::new(false));
    let warmup_failed = spawn_warmup(state.clone(), draining.clone());
    let reload_keys = spawn_key_reloads(state.clone());
    let connections = Connections::new(app(state.clone()), ConnectionLimits::from_config(&config));

    tracing::info!(addr = %listener.local_addr()?, "listening");
    let failure = async move { warmup_failed.await.ok() };
    let stop = async {
        tokio::select! {
            () = shutdown => None,
            Some(msg) = failure => Some(msg),
        }
    };
    let failure = connections.accept_until(&listener, stop).await;
    draining.store(true, Ordering::SeqCst);
    state.set_ready(false);
    if failure.is_none() && !config.drain_grace.is_zero() {
        tracing::info!(grace = ?config.drain_grace, "shutting down: not ready, still accepting during the grace period");
        connections.accept_until(&listener, tokio::time::sleep(config.drain_grace)).await;
    }
    drop(listener);
    tracing::info!(
        in_flight = state.in_flight(),
        connections = connections.open(),
        "listener closed, draining in-flight requests"
    );
    let left = connections.shut_down(config.drain_timeout).await;
    if left > 0 {
        tracing::warn!(
            in_flight = state.in_flight(),
            connections = left,
            timeout = ?config.drain_timeout,
            "drain timeout passed, abandoning in-flight requests"
        );
    }
    if let Some(task) = reload_keys {
        task.abort();
    }
    tracing::info!("stopped");
    match failure {
        Some(msg) => Err(io::Error::other(format!("warm-up failed: {msg}"))),
        None => Ok(()),
    }
}

/// Warms every model up on the blocking pool, then marks the server ready unless it is already
/// draining. The returned channel carries the error if warm-up fails.
fn spawn_warmup(state: AppState, draining: Arc<AtomicBool>) -> oneshot::Receiver<String> {
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let runtime = state.runtime.clone();
        let result = tokio::task::spawn_blocking(move || runtime.warmup()).await;
        let err = match result {
            Ok(Ok(())) => {
                if !draining.load(Ordering::SeqCst) {
                    state.set_ready(true);
                    tracing::info!(models = state.runtime.models().len(), "warmed up, ready");
                }
                return;
            }
            Ok(Err(err)) => err.to_string(),
            Err(err) => format!("warm-up task failed: {err}"),
        };
        tracing::error!(error = %err, "warm-up failed");
        let _ = tx.send(err);
    });
    rx
}

/// Re-reads the API keys file on every SIGHUP, the usual signal for "reload your configuration".
fn spawn_key_reloads(state: AppState) -> Option<tokio::task::JoinHandle<()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGHUP; the API keys file will not be reloaded");
                return None;
            }
        };
        Some(tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the API keys");
                state.keys.reload();
            }
        }))
    }
    #[cfg(not(unix))]
    {
        let _ = state;
        None
    }
}
