//! The model lifecycle: the admin API over a real socket, paths that must stay inside the models
//! directory, refused reloads while clients keep sending requests, and the watcher.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{json, Value};
use tandem_runtime::repository::Repository;
use tandem_runtime::testing::write_tiny_classifier_bundle_at;
use tandem_runtime::{Runtime, RuntimeConfig};
use tandem_server::{AppState, ServerConfig};
use tempfile::TempDir;
use tokio::task::JoinHandle;

use crate::common::*;
use crate::socket::{start_with_state, wait_ready, Running, PATIENCE};

/// A models directory in a temporary directory, beside a directory outside it.
struct ModelsDir {
    root: PathBuf,
    outside: PathBuf,
    _tmp: TempDir,
}

fn models_dir() -> ModelsDir {
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path().join("models");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&root).expect("models dir");
    std::fs::create_dir_all(&outside).expect("outside dir");
    ModelsDir { root, outside, _tmp: tmp }
}

/// A server over everything in `root`, ready for traffic.
struct Served {
    server: Running,
    repository: Arc<Repository>,
    client: reqwest::Client,
}

impl Served {
    async fn start(root: &Path) -> Served {
        let runtime = Arc::new(Runtime::new(RuntimeConfig::default()));
        let repository = Repository::open(runtime.clone(), root).expect("the models dir opens");
        let report = repository.poll().await.expect("the first pass runs");
        assert!(report.failed.is_empty(), "{report:?}");
        let state = AppState::new(runtime, &ServerConfig::default()).with_repository(repository.clone());
        let server = start_with_state(state).await;
        let client = reqwest::Client::builder().no_proxy().build().expect("client");
        wait_ready(&client, server.addr).await;
        Served { server, repository, client }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        call(&self.client, self.server.addr, method, path, body).await
    }

    /// `GET /v1/models`, by id.
    async fn listed(&self) -> Vec<Value> {
        let (status, body) = self.call(Method::GET, "/v1/models", None).await;
        assert_eq!(status, 200, "{body}");
        body["models"].as_array().expect("models").clone()
    }

    async fn entry(&self, id: &str) -> Option<Value> {
        self.listed().await.into_iter().find(|m| m["id"] == id)
    }

    /// Polls the model list until `cond` holds for it.
    async fn wait_for(&self, what: &str, cond: impl Fn(&[Value]) -> bool) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let models = self.listed().await;
            if cond(&models) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}: {models:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn call(
    client: &reqwest::Client,
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    try_call(client, addr, method, path, body).await.unwrap_or_else(|e| panic!("{e}"))
}

/// One exchange; a transport error or a body that is not JSON is an `Err` naming it.
async fn try_call(
    client: &reqwest::Client,
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value), String> {
    let mut req = client.request(method, format!("http://{addr}{path}"));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.map_err(|e| format!("no HTTP answer: {e}"))?;
    let status = res.status().as_u16();
    let bytes = res.bytes().await.map_err(|e| format!("{status} with a broken body: {e}"))?;
    if bytes.is_empty() {
        return Ok((status, Value::Null));
    }
    let body = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{status} with a body that is not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))?;
    Ok((status, body))
}

/// Checks the error shape and that the spec documents the status; returns the message.
#[track_caller]
fn check_error(answer: &(u16, Value), status: u16, kind: &str, route: (&str, &str)) -> String {
    let (got, body) = answer;
    assert_eq!(*got, status, "{body}");
    assert_eq!(body["error"]["type"], kind, "{body}");
    assert_eq!(body["error"].as_object().expect("error object").len(), 2, "{body}");
    assert_documented(route.1, route.0, StatusCode::from_u16(status).expect("status"));
    body["error"]["message"].as_str().expect("message").to_owned()
}

const LOAD: (&str, &str) = ("POST", "/v1/models");
const UNLOAD: (&str, &str) = ("DELETE", "/v1/models/{id}");
const RELOAD: (&str, &str) = ("POST", "/v1/models/{id}/reload");

fn classify_body() -> Value {
    json!({"inputs": [{"pixels": pixel_rows(8, 21.0)}], "top_k": 3})
}

/// Clients that classify against one model in a loop until stopped, recording every failure.
struct Traffic {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<(Vec<String>, BTreeSet<String>)>>,
}

impl Traffic {
    fn start(addr: SocketAddr, model: &str, clients: usize) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let path = format!("/v1/models/{model}/classify");
        let tasks = (0..clients)
            .map(|_| {
                let (stop, done, path) = (stop.clone(), done.clone(), path.clone());
                tokio::spawn(async move {
                    let client = reqwest::Client::builder().no_proxy().build().expect("client");
                    let (mut failures, mut models) = (Vec::new(), BTreeSet::new());
                    while !stop.load(Ordering::SeqCst) {
                        match try_call(&client, addr, Method::POST, &path, Some(classify_body())).await {
                            Ok((200, body)) => {
                                models.insert(body["model"].as_str().unwrap_or("<no model field>").to_owned());
                            }
                            Ok((status, body)) => failures.push(format!("{status}: {body}")),
                            Err(err) => failures.push(err),
                        }
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                    (failures, models)
                })
            })
            .collect();
        Traffic { stop, done, tasks }
    }

    /// Waits until every client could have finished two more requests, so that at least one
    /// request started after whatever happened last.
    async fn progress(&self) {
        let target = self.done.load(Ordering::SeqCst) + 2 * self.tasks.len();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.done.load(Ordering::SeqCst) < target {
            assert!(tokio::time::Instant::now() < deadline, "the clients stopped making progress");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops the clients; returns every failure and every model that answered.
    async fn finish(self) -> (Vec<String>, BTreeSet<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let (mut failures, mut models) = (Vec::new(), BTreeSet::new());
        for task in self.tasks {
            let (f, m) = task.await.expect("the client does not panic");
            failures.extend(f);
            models.extend(m);
        }
        (failures, models)
    }
}

fn flip_a_byte(file: &Path) {
    let mut bytes = std::fs::read(file).expect("read");
    let at = bytes.len() - 5;
    bytes[at] ^= 0x10;
    std::fs::write(file, bytes).expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_loads_reloads_and_unloads_over_a_socket() {
    let dir = models_dir();
    write_tiny_classifier_bundle_at(&dir.root.join("a"), "a", "1").expect("bundle a");
    let s = Served::start(&dir.root).await;
    let first = s.entry("a@1").await.expect("everything in the models dir serves at start");
    assert_eq!((&first["state"], &first["error"]), (&json!("ready"), &Value::Null));

    write_tiny_classifier_bundle_at(&dir.root.join("b").join("2"), "b", "2").expect("bundle b");
    assert!(s.entry("b@2").await.is_none(), "nothing watches this directory");
    let (status, body) = s.call(Method::POST, "/v1/models", Some(json!({"name": "b"}))).await;
    assert_eq!(status, 201, "{body}");
    assert_documented("/v1/models", "POST", StatusCode::CREATED);
    assert_eq!((&body["id"], &body["kind"]), (&json!("b@2"), &json!("classifier")));
    let (status, again) = s.call(Method::POST, "/v1/models", Some(json!({"name": "b", "version": "2"}))).await;
    assert_eq!((status, &again["bundle_id"]), (200, &body["bundle_id"]), "{again}");
    let (status, _) = s.call(Method::POST, "/v1/models/b/classify", Some(classify_body())).await;
    assert_eq!(status, 200);

    write_tiny_classifier_bundle_at(&dir.root.join("b").join("2"), "b", "2").expect("new weights for b");
    let (status, reloaded) = s.call(Method::POST, "/v1/models/b@2/reload", None).await;
    assert_eq!(status, 200, "{reloaded}");
    assert_documented(RELOAD.1, RELOAD.0, StatusCode::OK);
    assert_ne!(reloaded["bundle_id"], body["bundle_id"]);
    assert_eq!(s.entry("b@2").await.expect("listed")["bundle_id"], reloaded["bundle_id"]);

    let (status, gone) = s.call(Method::DELETE, "/v1/models/b", None).await;
    assert_eq!((status, gone), (204, Value::Null));
    assert_documented(UNLOAD.1, UNLOAD.0, StatusCode::NO_CONTENT);
    let answer = s.call(Method::POST, "/v1/models/b/classify", Some(classify_body())).await;
    check_error(&answer, 404, "not_found", ("POST", "/v1/models/{id}/classify"));
    assert!(s.entry("b@2").await.is_none());
    check_error(&s.call(Method::DELETE, "/v1/models/b", None).await, 404, "not_found", UNLOAD);
    check_error(&s.call(Method::POST, "/v1/models/b/reload", None).await, 404, "not_found", RELOAD);
    let missing = s.call(Method::POST, "/v1/models", Some(json!({"name": "nope"}))).await;
    check_error(&missing, 404, "not_found", LOAD);
    let unknown_field = s.call(Method::POST, "/v1/models", Some(json!({"name": "a", "path": "/x"}))).await;
    check_error(&unknown_field, 422, "invalid_input", LOAD);

    let text =
        reqwest::get(format!("http://{}/metrics", s.server.addr)).await.expect("metrics").text().await.expect("text");
    for line in [
        "# HELP tandem_model_loads_total",
        "# HELP tandem_model_unloads_total",
        r#"tandem_model_loads_total{bundle="b/2",operation="reload"}"#,
        r#"tandem_model_unloads_total{bundle="b/2"}"#,
    ] {
        assert!(text.contains(line), "{line} is not in /metrics:\n{text}");
    }
    s.server.stopped().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_symlinks_leading_outside_the_models_dir_are_refused() {
    let dir = models_dir();
    write_tiny_classifier_bundle_at(&dir.root.join("m"), "m", "1").expect("bundle m");
    write_tiny_classifier_bundle_at(&dir.outside.join("evil"), "evil", "1").expect("bundle outside");
    let s = Served::start(&dir.root).await;
    // Added once the server runs: a bundle refused at start stops the start.
    std::os::unix::fs::symlink(dir.outside.join("evil"), dir.root.join("evil")).expect("symlink out");
    let absolute = dir.outside.join("evil").display().to_string();
    for body in [
        json!({"name": "../outside"}),
        json!({"name": ".."}),
        json!({"name": absolute}),
        json!({"name": "m", "version": "../../outside/evil"}),
        json!({"name": "m/../m"}),
    ] {
        let message =
            check_error(&s.call(Method::POST, "/v1/models", Some(body.clone())).await, 422, "invalid_input", LOAD);
        assert!(message.contains("must be 1 to 128 ASCII letters"), "{body}: {message}");
    }
    let symlinked = s.call(Method::POST, "/v1/models", Some(json!({"name": "evil"}))).await;
    let message = check_error(&symlinked, 422, "invalid_input", LOAD);
    assert!(message.contains("evil resolves outside the models directory"), "{message}");
    assert!(!message.contains(&dir.outside.display().to_string()), "{message}");
    for path in ["/v1/models/..%2Foutside%2Fevil/reload", "/v1/models/%2Fetc/reload"] {
        check_error(&s.call(Method::POST, path, None).await, 404, "not_found", RELOAD);
    }
    check_error(&s.call(Method::DELETE, "/v1/models/..%2Fm", None).await, 404, "not_found", UNLOAD);
    assert_eq!(s.listed().await.len(), 1, "only m serves");
    s.server.stopped().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_reloads_keep_the_old_version_serving_with_no_failed_request() {
    let dir = models_dir();
    let bundle = dir.root.join("m");
    write_tiny_classifier_bundle_at(&bundle, "m", "1").expect("bundle m");
    let weights = bundle.join("model.safetensors");
    let good = std::fs::read(&weights).expect("weights");
    let s = Served::start(&dir.root).await;
    let old = s.entry("m@1").await.expect("m serves");
    let traffic = Traffic::start(s.server.addr, "m", 4);
    traffic.progress().await;

    std::fs::write(&weights, &good[..good.len() / 3]).expect("truncate");
    let message = check_error(&s.call(Method::POST, "/v1/models/m/reload", None).await, 422, "invalid_bundle", RELOAD);
    assert!(message.contains("m: model.safetensors: sha256 mismatch"), "{message}");
    let listed = s.entry("m@1").await.expect("still listed");
    assert_eq!((&listed["state"], &listed["bundle_id"]), (&json!("ready"), &old["bundle_id"]));
    assert!(listed["error"].as_str().is_some_and(|e| e.contains("sha256 mismatch")), "{listed}");
    traffic.progress().await;

    std::fs::write(&weights, &good).expect("restore");
    flip_a_byte(&weights);
    let message =
        check_error(&s.call(Method::POST, "/v1/models/m@1/reload", None).await, 422, "invalid_bundle", RELOAD);
    assert!(message.contains("sha256 mismatch"), "{message}");
    traffic.progress().await;

    // A good bundle with a new version replaces m@1 by m@2 in one swap, under the same traffic.
    write_tiny_classifier_bundle_at(&bundle, "m", "2").expect("version 2");
    let (status, body) = s.call(Method::POST, "/v1/models/m/reload", None).await;
    assert_eq!((status, &body["id"]), (200, &json!("m@2")), "{body}");
    traffic.progress().await;
    let (failures, models) = traffic.finish().await;
    assert!(failures.is_empty(), "{} requests failed during the reloads: {failures:?}", failures.len());
    assert_eq!(models, BTreeSet::from(["m@1".to_owned(), "m@2".to_owned()]));
    let ids: Vec<Value> = s.listed().await.iter().map(|m| m["id"].clone()).collect();
    assert_eq!(ids, [json!("m@2")]);
    assert_eq!(s.entry("m@2").await.expect("listed")["error"], Value::Null);
    s.server.stopped().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_serves_new_versions_and_refuses_corrupt_or_partial_ones() {
    let dir = models_dir();
    write_tiny_classifier_bundle_at(&dir.root.join("m").join("1"), "m", "1").expect("m@1");
    let s = Served::start(&dir.root).await;
    let watcher = tokio::spawn(s.repository.clone().watch(Duration::from_millis(20)));
    let traffic = Traffic::start(s.server.addr, "m", 3);

    write_tiny_classifier_bundle_at(&dir.root.join("m").join("2"), "m", "2").expect("m@2");
    s.wait_for("m@2 to serve", |models| models.iter().any(|m| m["id"] == "m@2" && m["state"] == "ready")).await;
    traffic.progress().await;
    let (_, answer) = s.call(Method::POST, "/v1/models/m/classify", Some(classify_body())).await;
    assert_eq!(answer["model"], "m@2", "a bare name is its highest version");
    let served = s.entry("m@2").await.expect("listed")["bundle_id"].clone();

    flip_a_byte(&dir.root.join("m/2/model.safetensors"));
    s.wait_for("the corrupt m@2 to be refused", |models| {
        models.iter().any(|m| m["id"] == "m@2" && m["error"].as_str().is_some_and(|e| e.contains("sha256 mismatch")))
    })
    .await;
    let listed = s.entry("m@2").await.expect("listed");
    assert_eq!((&listed["state"], &listed["bundle_id"]), (&json!("ready"), &served), "{listed}");
    traffic.progress().await;

    // A bundle copied file by file: seen with its manifest but without its weights, it fails;
    // once the weights arrive, the next pass serves it.
    let staging = dir.outside.join("m3");
    write_tiny_classifier_bundle_at(&staging, "m", "3").expect("m@3");
    std::fs::create_dir(dir.root.join("m/3")).expect("m/3");
    std::fs::copy(staging.join("manifest.json"), dir.root.join("m/3/manifest.json")).expect("copy manifest");
    s.wait_for("the partial m@3 to fail", |models| models.iter().any(|m| m["id"] == "m@3" && m["state"] == "failed"))
        .await;
    std::fs::copy(staging.join("model.safetensors"), dir.root.join("m/3/model.safetensors")).expect("copy weights");
    s.wait_for("m@3 to serve", |models| models.iter().any(|m| m["id"] == "m@3" && m["state"] == "ready")).await;
    traffic.progress().await;

    std::fs::remove_dir_all(dir.root.join("m/1")).expect("remove m/1");
    s.wait_for("m@1 to be unloaded", |models| models.iter().all(|m| m["id"] != "m@1")).await;
    traffic.progress().await;
    let (failures, models) = traffic.finish().await;
    assert!(failures.is_empty(), "{} requests failed while the watcher worked: {failures:?}", failures.len());
    assert!(models.contains("m@3"), "{models:?}");
    watcher.abort();
    s.server.stopped().await.expect("clean stop");
}

async fn oneshot(app: &axum::Router, method: Method, uri: &str, body: Option<Value>) -> Reply {
    let req = Request::builder().method(method).uri(uri).header("content-type", "application/json");
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
    send(app, req.body(body).expect("request")).await
}

#[tokio::test]
async fn without_a_models_dir_the_admin_api_answers_409_and_touches_nothing() {
    let fx = fixture();
    let (app, _) = ready_app(&fx, &ServerConfig::default());
    let uri = format!("/v1/models/{}", fx.model_id);
    for (method, path, body) in [
        (Method::POST, "/v1/models".to_owned(), Some(json!({"name": MODEL_NAME}))),
        (Method::DELETE, uri.clone(), None),
        (Method::POST, format!("{uri}/reload"), None),
    ] {
        let reply = oneshot(&app, method.clone(), &path, body).await;
        let message = reply.assert_error(409, "conflict");
        assert!(message.contains("--models-dir"), "{method} {path}: {message}");
    }
    for (method, route) in [LOAD, UNLOAD, RELOAD] {
        assert_documented(route, method, StatusCode::CONFLICT);
    }
    assert_eq!(get(&app, &uri).await.status, StatusCode::OK);

    let (keyed, _) = ready_app(&fx, &ServerConfig { api_key: Some("k".into()), ..ServerConfig::default() });
    oneshot(&keyed, Method::DELETE, &uri, None).await.assert_error(401, "unauthorized");
    assert_documented(UNLOAD.1, UNLOAD.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_given_at_start_are_out_of_the_admin_apis_reach() {
    let fx = fixture();
    let dir = models_dir();
    let repository = Repository::open(fx.runtime.clone(), &dir.root).expect("opens");
    let state = AppState::new(fx.runtime.clone(), &ServerConfig::default()).with_repository(repository);
    state.set_ready(true);
    let app = tandem_server::app(state);
    let uri = format!("/v1/models/{}", fx.model_id);
    let message = oneshot(&app, Method::DELETE, &uri, None).await.assert_error(409, "conflict");
    assert!(message.contains("was not loaded from the models directory"), "{message}");
    oneshot(&app, Method::POST, &format!("{uri}/reload"), None).await.assert_error(409, "conflict");
    assert_eq!(get(&app, &uri).await.status, StatusCode::OK);
}
