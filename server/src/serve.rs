//! Running the app on a socket: warm-up, readiness, and a graceful drain on shutdown.

use std::future::{Future, IntoFuture};
use std::io;
use std::sync::{Arc, Mutex};

use tandem_runtime::Runtime;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::app::app;
use crate::config::ServerConfig;
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
/// warm-up batch (off the async workers). When `shutdown` resolves, readiness flips to 503, the
/// listener closes, and in-flight requests get up to `drain_timeout` to finish before they are
/// abandoned. A failed warm-up shuts the server down the same way and returns the error.
pub async fn serve_with_state(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    state.config.validate().map_err(|msg| io::Error::new(io::ErrorKind::InvalidInput, msg))?;
    let drain_timeout = state.config.drain_timeout;
    let draining = Arc::new(Mutex::new(false));
    let warmup_failed = spawn_warmup(state.clone(), draining.clone());

    let (drain_tx, drain_rx) = oneshot::channel::<Option<String>>();
    let signal_state = state.clone();
    let signal = async move {
        let failure = async move {
            match warmup_failed.await {
                Ok(msg) => msg,
                Err(_) => std::future::pending().await,
            }
        };
        let reason = tokio::select! {
            () = shutdown => None,
            msg = failure => Some(msg),
        };
        *draining.lock().expect("drain flag lock poisoned. This is a bug.") = true;
        signal_state.set_ready(false);
        tracing::info!(in_flight = signal_state.in_flight(), "shutting down, draining in-flight requests");
        // The receiver only disappears once the server has stopped on its own.
        let _ = drain_tx.send(reason);
    };

    tracing::info!(addr = %listener.local_addr()?, "listening");
    let server = axum::serve(listener, app(state.clone())).with_graceful_shutdown(signal);
    let mut server = std::pin::pin!(server.into_future());
    let reason = tokio::select! {
        res = &mut server => return res,
        reason = drain_rx => reason.ok().flatten(),
    };
    match tokio::time::timeout(drain_timeout, &mut server).await {
        Ok(res) => res?,
        Err(_) => tracing::warn!(
            in_flight = state.in_flight(),
            timeout = ?drain_timeout,
            "drain timeout passed, abandoning in-flight requests"
        ),
    }
    tracing::info!("stopped");
    match reason {
        Some(msg) => Err(io::Error::other(format!("warm-up failed: {msg}"))),
        None => Ok(()),
    }
}

/// Warms every model up on the blocking pool, then marks the server ready unless it is already
/// draining. The returned channel carries the error if warm-up fails.
fn spawn_warmup(state: AppState, draining: Arc<Mutex<bool>>) -> oneshot::Receiver<String> {
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let runtime = state.runtime.clone();
        let result = tokio::task::spawn_blocking(move || runtime.warmup()).await;
        let err = match result {
            Ok(Ok(())) => {
                let draining = draining.lock().expect("drain flag lock poisoned. This is a bug.");
                if !*draining {
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
