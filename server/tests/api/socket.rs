//! Tests over a real socket: startup readiness, load shedding, request timeouts and the drain.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tandem_server::{serve_on, serve_with_state, AppState, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::common::*;

/// Generous bound for things that should happen promptly, so that a slow machine does not fail a
/// test; nothing asserts on how long anything took.
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);

pub(crate) async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    (listener, addr)
}

pub(crate) struct Running {
    pub(crate) addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    pub(crate) async fn stopped(mut self) -> std::io::Result<()> {
        self.stop();
        tokio::time::timeout(PATIENCE, self.task).await.expect("server stops").expect("server task does not panic")
    }
}

fn shutdown_pair() -> (oneshot::Sender<()>, impl std::future::Future<Output = ()> + Send) {
    let (tx, rx) = oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
    })
}

pub(crate) async fn start_with_state(state: AppState) -> Running {
    let (listener, addr) = bind().await;
    let (tx, shutdown) = shutdown_pair();
    let task = tokio::spawn(serve_with_state(listener, state, shutdown));
    Running { addr, stop: Some(tx), task }
}

pub(crate) async fn wait_ready(client: &reqwest::Client, addr: SocketAddr) {
    let url = format!("http://{addr}/health/ready");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Ok(res) = client.get(&url).send().await {
            if res.status() == 200 {
                return;
            }
            assert_eq!(res.status(), 503);
        }
        assert!(tokio::time::Instant::now() < deadline, "never became ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Opens a classify request whose body is only partly sent, so that it stays in flight until
/// `finish` is called.
struct SlowRequest {
    stream: TcpStream,
    rest: Vec<u8>,
}

impl SlowRequest {
    async fn open(addr: SocketAddr, path: &str, body: &[u8]) -> SlowRequest {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.expect("write head");
        let half = body.len() / 2;
        stream.write_all(&body[..half]).await.expect("write half");
        stream.flush().await.expect("flush");
        SlowRequest { stream, rest: body[half..].to_vec() }
    }

    async fn finish(mut self) -> (u16, Value) {
        self.stream.write_all(&self.rest).await.expect("write rest");
        read_response(&mut self.stream).await
    }

    async fn response(mut self) -> (u16, Value) {
        read_response(&mut self.stream).await
    }
}

/// Reads one HTTP/1.1 response with a `content-length` body.
async fn read_response(stream: &mut TcpStream) -> (u16, Value) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut chunk)).await.expect("response arrives").expect("read");
        assert!(n > 0, "connection closed before a response");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head[9..12].parse().expect("status code");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().expect("length"))
        .expect("content-length header");
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.expect("read body");
        assert!(n > 0, "connection closed mid-body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = serde_json::from_slice(&buf[head_end..head_end + length]).expect("json body");
    (status, body)
}

fn classify_body() -> Vec<u8> {
    serde_json::json!({"inputs": [{"pixels": pixel_rows(8, 11.0)}], "top_k": 2}).to_string().into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_warms_up_serves_and_stops() {
    let fx = fixture();
    let (listener, addr) = bind().await;
    let (tx, shutdown) = shutdown_pair();
    let task = tokio::spawn(serve_on(listener, fx.runtime.clone(), ServerConfig::default(), shutdown));
    let client = reqwest::Client::new();
    wait_ready(&client, addr).await;

    let res = client
        .post(format!("http://{addr}/v1/models/{}/classify?top_k=4", fx.model_id))
        .header("content-type", "image/png")
        .header("x-request-id", "socket-test")
        .body(png(8, 8, 9))
        .send()
        .await
        .expect("classify");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-request-id"], "socket-test");
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["predictions"][0].as_array().expect("list").len(), 4);

    let res = client.get(format!("http://{addr}/nowhere")).send().await.expect("404");
    assert_eq!(res.status(), 404);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["type"], "not_found");

    let _ = tx.send(());
    let result = tokio::time::timeout(PATIENCE, task).await.expect("server stops").expect("no panic");
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_is_refused_before_serving() {
    let fx = fixture();
    let (listener, _) = bind().await;
    let config = ServerConfig { concurrency_limit: 0, ..ServerConfig::default() };
    let err = serve_on(listener, fx.runtime.clone(), config, async {}).await.expect_err("zero concurrency is refused");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

/// A fixture whose model waits `delay` for its batch to fill, so that each inference request
/// holds its concurrency permit that long.
fn slow_batching_fixture(delay: Duration) -> Fixture {
    let mut config = tandem_runtime::RuntimeConfig::default();
    config.batch.max_batch_delay = delay;
    config.batch.delay_policy = tandem_runtime::DelayPolicy::Fixed;
    config.batch.max_batch_size = 1024;
    config.cache_capacity = 0;
    fixture_with(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_concurrency_sheds_load_with_429() {
    let fx = slow_batching_fixture(Duration::from_secs(2));
    let config = ServerConfig { concurrency_limit: 1, ..ServerConfig::default() };
    let state = AppState::new(fx.runtime.clone(), &config);
    let server = start_with_state(state.clone()).await;
    let client = reqwest::Client::new();
    wait_ready(&client, server.addr).await;

    // Each classify request waits for its batch to fill and holds the only permit meanwhile.
    let classify = format!("http://{}{}", server.addr, classify_uri(&fx));
    let url = format!("http://{}/v1/models", server.addr);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let shed = 'outer: loop {
        let busy = tokio::spawn(
            client.post(&classify).body(classify_body()).header("content-type", "application/json").send(),
        );
        while !busy.is_finished() {
            let res = client.get(&url).send().await.expect("request");
            if res.status() == 429 {
                let done = busy.await.expect("no panic").expect("classify answers");
                assert_eq!(done.status(), 200);
                break 'outer res;
            }
            assert_eq!(res.status(), 200);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(tokio::time::Instant::now() < deadline, "never shed load");
    };
    assert_eq!(shed.headers()["retry-after"], "1");
    assert_documented("/v1/models", "GET", shed.status());
    let body: Value = shed.json().await.expect("json");
    assert_eq!(body["error"]["type"], "overloaded");
    // Shedding is counted, not logged line by line.
    let scrape = client.get(format!("http://{}/metrics", server.addr)).send().await.expect("metrics");
    let text = scrape.text().await.expect("text");
    assert!(text.lines().any(|l| l.starts_with("tandem_shed_requests_total{reason=\"overloaded\"}")), "{text}");

    // Probes are not behind the limit.
    let live = client.get(format!("http://{}/health/live", server.addr)).send().await.expect("live");
    assert_eq!(live.status(), 200);
    let after = client.get(&url).send().await.expect("request");
    assert_eq!(after.status(), 200);
    server.stopped().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_uploads_hold_no_permit_and_time_out_with_408() {
    let fx = fixture();
    let config =
        ServerConfig { concurrency_limit: 1, body_read_timeout: Duration::from_secs(2), ..ServerConfig::default() };
    let state = AppState::new(fx.runtime.clone(), &config);
    let server = start_with_state(state.clone()).await;
    let client = reqwest::Client::new();
    wait_ready(&client, server.addr).await;

    // Many half-sent uploads, as clients at a byte a second would leave them.
    let mut uploads = Vec::new();
    for _ in 0..8 {
        uploads.push(SlowRequest::open(server.addr, &classify_uri(&fx), &classify_body()).await);
    }
    wait_until("the uploads to be in flight", || state.in_flight() == 8).await;
    for _ in 0..5 {
        let res = client.get(format!("http://{}/v1/models", server.addr)).send().await.expect("request");
        assert_eq!(res.status(), 200, "slow uploads must not hold the API's permits");
    }
    for upload in uploads {
        let (status, body) = upload.response().await;
        assert_eq!(status, 408, "{body}");
        assert_eq!(body["error"]["type"], "request_timeout");
    }
    assert_documented("/v1/models/{id}/classify", "POST", axum::http::StatusCode::REQUEST_TIMEOUT);
    server.stopped().await.expect("clean stop");
}

/// Whether the server closes `stream` (reads end of file) before `PATIENCE` runs out.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_connections_are_closed_and_keep_alive_still_works() {
    let fx = fixture();
    let config = ServerConfig {
        header_read_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(600),
        ..ServerConfig::default()
    };
    let state = AppState::new(fx.runtime.clone(), &config);
    let server = start_with_state(state).await;
    wait_ready(&reqwest::Client::new(), server.addr).await;

    let mut idle = TcpStream::connect(server.addr).await.expect("connect");
    let mut half = TcpStream::connect(server.addr).await.expect("connect");
    half.write_all(b"GET /health/live HTTP/1.1\r\nhost: x\r\n").await.expect("write part of a head");
    assert!(closed_by_server(&mut half).await, "a head that never completes must not keep its connection");
    assert!(closed_by_server(&mut idle).await, "an idle connection must be closed");

    // Two requests on one connection: keep-alive works within the idle timeout.
    let mut kept = TcpStream::connect(server.addr).await.expect("connect");
    for _ in 0..2 {
        kept.write_all(b"GET /health/live HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("write");
        let (status, body) = read_response(&mut kept).await;
        assert_eq!(status, 200, "{body}");
    }
    assert!(closed_by_server(&mut kept).await, "closed once idle");
    server.stopped().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limit_queues_new_connections_until_one_closes() {
    let fx = fixture();
    let config = ServerConfig { max_connections: 2, ..ServerConfig::default() };
    let state = AppState::new(fx.runtime.clone(), &config);
    let server = start_with_state(state).await;
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
    wait_ready(&client, server.addr).await;

    let first = TcpStream::connect(server.addr).await.expect("connect");
    let _second = TcpStream::connect(server.addr).await.expect("connect");
    let waiting = tokio::spawn(client.get(format!("http://{}/health/live", server.addr)).send());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "a third connection must wait while two are open");
    drop(first);
    let res = tokio::time::timeout(PATIENCE, waiting).await.expect("answered").expect("no panic").expect("ok");
    assert_eq!(res.status(), 200);
    server.stopped().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_targets_and_headers_get_the_json_error_shape() {
    let fx = fixture();
    let config = ServerConfig { max_header_bytes: 1024, ..ServerConfig::default() };
    let state = AppState::new(fx.runtime.clone(), &config);
    let server = start_with_state(state).await;
    let client = reqwest::Client::new();
    wait_ready(&client, server.addr).await;

    let long = format!("http://{}/v1/models/{}", server.addr, "a".repeat(9000));
    let res = client.get(&long).send().await.expect("request");
    assert_eq!(res.status(), 414);
    assert_documented("/v1/models/{id}", "GET", res.status());
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["type"], "uri_too_long");

    let res = client
        .get(format!("http://{}/health/live", server.addr))
        .header("x-big", "b".repeat(2000))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 431);
    assert_documented("/health/live", "GET", res.status());
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["type"], "headers_too_large");
    server.stopped().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_requests_time_out_with_503() {
    let fx = fixture();
    let config = ServerConfig { request_timeout: Duration::from_millis(200), ..ServerConfig::default() };
    let state = AppState::new(fx.runtime.clone(), &config);
    let server = start_with_state(state).await;
    wait_ready(&reqwest::Client::new(), server.addr).await;

    let slow = SlowRequest::open(server.addr, &classify_uri(&fx), &classify_body()).await;
    let (status, body) = slow.response().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["type"], "timeout");
    assert_documented("/v1/models/{id}/classify", "POST", axum::http::StatusCode::SERVICE_UNAVAILABLE);
    server.stopped().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flips_readiness_and_drains_in_flight_requests() {
    let fx = fixture();
    let config = ServerConfig { drain_timeout: Duration::from_secs(60), ..ServerConfig::default() };
    let state = AppState::new(fx.runtime.clone(), &config);
    let mut server = start_with_state(state.clone()).await;
    wait_ready(&reqwest::Client::new(), server.addr).await;
    assert!(state.is_ready());

    let slow = SlowRequest::open(server.addr, &classify_uri(&fx), &classify_body()).await;
    wait_until("the slow request to be in flight", || state.in_flight() == 1).await;

    server.stop();
    wait_until("readiness to drop", || !state.is_ready()).await;
    assert!(!server.task.is_finished(), "stopped before draining");

    let (status, body) = slow.finish().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["predictions"][0].as_array().expect("list").len(), 2);
    server.stopped().await.expect("clean stop");
    assert!(!state.is_ready());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_grace_keeps_accepting_while_readiness_says_503() {
    let fx = fixture();
    let config = ServerConfig { drain_grace: Duration::from_secs(2), ..ServerConfig::default() };
    let state = AppState::new(fx.runtime.clone(), &config);
    let mut server = start_with_state(state.clone()).await;
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
    wait_ready(&client, server.addr).await;

    server.stop();
    wait_until("readiness to drop", || !state.is_ready()).await;
    let res = client.get(format!("http://{}/health/ready", server.addr)).send().await.expect("still accepting");
    assert_eq!(res.status(), 503, "a load balancer must see the drain");
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["type"], "unavailable");
    let addr = server.addr;
    server.stopped().await.expect("clean stop");
    assert!(TcpStream::connect(addr).await.is_err(), "the listener is closed after the grace period");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_gives_up_after_its_timeout() {
    let fx = fixture();
    // The stuck request could run for a minute; the drain timeout must bound the exit anyway.
    let config = ServerConfig {
        drain_timeout: Duration::from_millis(100),
        body_read_timeout: Duration::from_secs(60),
        request_timeout: Duration::from_secs(60),
        ..ServerConfig::default()
    };
    let state = AppState::new(fx.runtime.clone(), &config);
    let server = start_with_state(state.clone()).await;
    wait_ready(&reqwest::Client::new(), server.addr).await;

    let _stuck = SlowRequest::open(server.addr, &classify_uri(&fx), &classify_body()).await;
    wait_until("the stuck request to be in flight", || state.in_flight() == 1).await;
    server.stopped().await.expect("stops despite the stuck request");
}
