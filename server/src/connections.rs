//! Connection handling below the router: the accept loop, a connection limit, header-read and
//! keep-alive idle timeouts, and the stop signal of the drain.
//!
//! `axum::serve` sets no hyper timer, so its header-read timeout never fires, and it has no idle
//! timeout or connection limit: idle and half-sent connections stayed open forever and exhausted
//! the file descriptors, after which health checks failed. Here every connection gets a watchdog
//! that knows whether a request is in flight (from the service) and when bytes last arrived (from
//! the socket), which tells an idle keep-alive connection from one that is slowly sending headers.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

use crate::config::ServerConfig;
use crate::log_limit::LogLimiter;

/// File descriptors kept free for everything that is not a client connection: the listener, model
/// files, logs, and the sockets of a reload.
const RESERVED_FDS: u64 = 64;

/// Pause after an accept error such as "too many open files", so that the loop does not spin while
/// descriptors are exhausted.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The connection limits of one server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
}

impl ConnectionLimits {
    /// The configured limits, with the connection limit lowered to what the file limit allows.
    pub(crate) fn from_config(config: &ServerConfig) -> ConnectionLimits {
        let fd_limit = raise_file_limit();
        let mut max_connections = config.max_connections.max(1);
        if let Some(limit) = fd_limit {
            let allowed = limit.saturating_sub(RESERVED_FDS).max(1);
            if (max_connections as u64) > allowed {
                tracing::warn!(
                    configured = max_connections,
                    allowed,
                    file_limit = limit,
                    "lowering max_connections to fit the open-file limit"
                );
                max_connections = allowed as usize;
            }
        }
        ConnectionLimits {
            max_connections,
            header_read_timeout: config.header_read_timeout,
            idle_timeout: config.idle_timeout,
        }
    }
}

/// Raises the soft open-file limit to the hard one, as containers often start with a soft limit
/// of 256 or 1024; returns the limit in force afterwards (`None` where it cannot be read).
fn raise_file_limit() -> Option<u64> {
    static LIMIT: OnceLock<Option<u64>> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        #[cfg(unix)]
        {
            match rlimit::increase_nofile_limit(u64::MAX) {
                Ok(limit) => {
                    tracing::debug!(limit, "open-file limit");
                    Some(limit)
                }
                Err(err) => {
                    tracing::warn!(%err, "cannot raise the open-file limit");
                    rlimit::getrlimit(rlimit::Resource::NOFILE).ok().map(|(soft, _)| soft)
                }
            }
        }
        #[cfg(not(unix))]
        {
            None
        }
    })
}

/// Accepts connections and serves them until told to stop; owns the connections' stop signal.
pub(crate) struct Connections {
    app: Router,
    limits: ConnectionLimits,
    permits: Arc<Semaphore>,
    open: Arc<AtomicUsize>,
    stop: watch::Sender<bool>,
    accept_errors: LogLimiter,
}

impl Connections {
    pub(crate) fn new(app: Router, limits: ConnectionLimits) -> Connections {
        Connections {
            app,
            limits,
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            open: Arc::new(AtomicUsize::new(0)),
            stop: watch::Sender::new(false),
            accept_errors: LogLimiter::new(Duration::from_secs(10)),
        }
    }

    /// Connections currently open.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Accepts on `listener` until `until` resolves, then returns its output. At the connection
    /// limit it stops accepting (new clients wait in the kernel's backlog) rather than failing.
    pub(crate) async fn accept_until<T>(
        &self,
        listener: &TcpListener,
        until: impl std::future::Future<Output = T>,
    ) -> T {
        let mut until = std::pin::pin!(until);
        loop {
            let permit = tokio::select! {
                biased;
                out = &mut until => return out,
                permit = self.permits.clone().acquire_owned() => permit.expect("the semaphore is never closed. This is a bug."),
            };
            let accepted = tokio::select! {
                biased;
                out = &mut until => return out,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let open = OpenGuard::new(self.open.clone());
                    let task = serve_connection(stream, self.app.clone(), self.limits, self.stop.subscribe());
                    tokio::spawn(async move {
                        task.await;
                        drop(open);
                        drop(permit);
                    });
                }
                Err(err) => {
                    if let Some(suppressed) = self.accept_errors.allow() {
                        tracing::warn!(%err, suppressed, "accept error (logged at most once per 10 s)");
                    }
                    metrics::counter!("tandem_accept_errors_total").increment(1);
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            }
        }
    }

    /// Tells every connection to finish its in-flight requests and close, then waits up to
    /// `timeout` for them; returns how many were still open when it gave up.
    pub(crate) async fn shut_down(&self, timeout: Duration) -> usize {
        self.stop.send_replace(true);
        let deadline = tokio::time::Instant::now() + timeout;
        while self.open() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.open()
    }
}

/// Counts an open connection until dropped.
struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    fn new(open: Arc<AtomicUsize>) -> OpenGuard {
        open.fetch_add(1, Ordering::SeqCst);
        OpenGuard(open)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What the watchdog of one connection knows: requests in flight, when the connection last went
/// idle, and when the first byte of the next request head arrived. Times are milliseconds since
/// the connection opened.
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    idle_since_ms: AtomicU64,
    head_started_ms: AtomicU64,
}

/// `head_started_ms` while no byte of a next request has arrived.
const NEVER: u64 = u64::MAX;

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            head_started_ms: AtomicU64::new(NEVER),
        })
    }

    fn now_ms(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.head_started_ms.store(NEVER, Ordering::SeqCst);
    }

    fn request_finished(&self) {
        self.idle_since_ms.store(self.now_ms(), Ordering::SeqCst);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    /// The first bytes on an idle connection start the next request's head, and its clock.
    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::SeqCst) == 0 {
            let _ = self.head_started_ms.compare_exchange(NEVER, self.now_ms(), Ordering::SeqCst, Ordering::SeqCst);
        }
    }

    /// When the connection must close unless something changes, or `None` while a request is in
    /// flight (its own deadlines apply then). A request head that has started arriving gets the
    /// header-read timeout from its first byte; a quiet connection, the idle timeout.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let (from, limit) = match self.head_started_ms.load(Ordering::SeqCst) {
            NEVER => (self.idle_since_ms.load(Ordering::SeqCst), limits.idle_timeout),
            started => (started, limits.header_read_timeout),
        };
        Some(self.opened + Duration::from_millis(from) + limit)
    }
}

/// Serves one connection (HTTP/1.1, or HTTP/2 with prior knowledge) until it closes, the watchdog
/// closes it, or the drain tells it to finish.
async fn serve_connection(stream: TcpStream, app: Router, limits: ConnectionLimits, mut stop: watch::Receiver<bool>) {
    let activity = Activity::new();
    let io = TokioIo::new(WatchedIo { inner: stream, activity: activity.clone() });
    let counted = activity.clone();
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let app = app.clone();
        let activity = counted.clone();
        activity.request_started();
        let guard = FinishGuard(activity);
        async move {
            let response = app.oneshot(req.map(Body::new)).await;
            drop(guard);
            response
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Our watchdog enforces header-read and idle timeouts for both protocols; hyper's own would
    // close idle keep-alive connections after the (short) header timeout.
    builder.http1().header_read_timeout(None);
    let conn = builder.serve_connection_with_upgrades(io, service);
    let mut conn = std::pin::pin!(conn);
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        let deadline = activity.deadline(&limits);
        let wake = deadline.map_or(Duration::from_secs(1), |d| d.saturating_duration_since(Instant::now()));
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(%err, "connection ended with an error");
                }
                return;
            }
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
            () = tokio::time::sleep(wake.min(Duration::from_secs(1))) => {
                if activity.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                    tracing::debug!("closing an idle or stalled connection");
                    return;
                }
            }
        }
    }
}

/// Marks a request finished when its future completes or is dropped.
struct FinishGuard(Arc<Activity>);

impl Drop for FinishGuard {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// The socket, noting when bytes arrive.
struct WatchedIo {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for WatchedIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        poll
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            max_connections: 4,
            header_read_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_quiet_connection_gets_the_idle_timeout_and_a_talking_one_the_header_timeout() {
        let activity = Activity::new();
        let idle = activity.deadline(&limits()).expect("idle");
        assert_eq!(idle, activity.opened + Duration::from_secs(60));
        activity.bytes_read();
        let heading = activity.deadline(&limits()).expect("reading a head");
        assert!(heading <= activity.opened + Duration::from_secs(3), "{heading:?}");
        activity.request_started();
        assert_eq!(activity.deadline(&limits()), None, "no deadline while a request is in flight");
        std::thread::sleep(Duration::from_millis(5));
        activity.request_finished();
        let after = activity.deadline(&limits()).expect("idle again");
        assert!(after >= activity.opened + Duration::from_secs(60), "idle again after the response: {after:?}");
    }

    #[test]
    fn the_open_file_limit_is_raised_or_reported() {
        if let Some(limit) = raise_file_limit() {
            assert!(limit > 0);
        }
        let config = ServerConfig { max_connections: usize::MAX, ..ServerConfig::default() };
        let limits = ConnectionLimits::from_config(&config);
        assert!(limits.max_connections >= 1);
        if let Some(limit) = raise_file_limit() {
            assert!(limits.max_connections as u64 <= limit.saturating_sub(RESERVED_FDS).max(1));
        }
    }
}
