//! Shared state of the handlers: the runtime, the settings, the readiness flag, and the models
//! directory when there is one.

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use tandem_runtime::repository::Repository;
use tandem_runtime::Runtime;

use crate::auth::ApiKeys;
use crate::config::ServerConfig;

/// Everything a handler needs, behind one `Arc`: every middleware layer and the handler clone the
/// state for each request, and one shared count is cheaper to bump from every core than one per
/// field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The fields of [`AppState`]; handlers reach them through `Deref`.
#[derive(Clone)]
pub struct Shared {
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) metrics: PrometheusHandle,
    pub(crate) keys: Arc<ApiKeys>,
    ready: Arc<AtomicBool>,
    in_flight: Arc<AtomicUsize>,
    /// The models directory behind the admin API; without one the admin routes answer 409.
    pub(crate) repository: Option<Arc<Repository>>,
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// State for `runtime` under `config`. Starts not ready: readiness is earned by warming up, so
    /// that a load balancer does not send traffic to a model that still pays its first-call cost.
    /// Installs the Prometheus recorder if this process has none yet.
    pub fn new(runtime: Arc<Runtime>, config: &ServerConfig) -> AppState {
        AppState(Arc::new(Shared {
            runtime,
            config: Arc::new(config.clone()),
            metrics: crate::metrics::install_metrics(),
            keys: Arc::new(ApiKeys::new(config)),
            ready: Arc::new(AtomicBool::new(false)),
            in_flight: Arc::new(AtomicUsize::new(0)),
            repository: None,
        }))
    }

    /// Turns the admin API on over `repository`, which must serve into this state's runtime.
    pub fn with_repository(mut self, repository: Arc<Repository>) -> AppState {
        assert!(
            Arc::ptr_eq(repository.runtime(), &self.runtime),
            "the models directory serves into another runtime than the handlers read"
        );
        // Clones made before share the readiness flag and the counts, as they did field by field.
        Arc::make_mut(&mut self.0).repository = Some(repository);
        self
    }

    /// Flips `/health/ready` between 200 and 503.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Whether `/health/ready` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Requests currently being handled, so that shutdown can report what it is waiting for.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// The accepted API keys; [`ApiKeys::reload`] re-reads the keys file (the server does on SIGHUP).
    pub fn keys(&self) -> &Arc<ApiKeys> {
        &self.keys
    }

    /// The runtime behind the handlers.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Counts a request as in flight until the returned guard drops.
    pub(crate) fn track_in_flight(&self) -> InFlightGuard {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(self.in_flight.clone())
    }
}

/// Decrements the in-flight count on drop, also when the request future is cancelled.
pub(crate) struct InFlightGuard(Arc<AtomicUsize>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
