//! Shared fixtures: a tiny real model, request shortcuts and assertions on the error shape.

use std::io::Cursor;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use base64::Engine;
use serde_json::Value;
use tandem_runtime::import::{import_sentence_transformers, ImportOptions};
use tandem_runtime::models::sentence_encoder::Pooling;
use tandem_runtime::testing_text::write_tiny_sentence_transformers_dir;
use tandem_runtime::{Runtime, RuntimeConfig};
use tandem_server::{app, AppState, ServerConfig};
use tempfile::TempDir;
use tower::ServiceExt;

/// A runtime with one tiny 8x8 ten-class model loaded from a temporary bundle.
pub struct Fixture {
    pub runtime: Arc<Runtime>,
    pub model_id: String,
    _dir: TempDir,
}

pub const MODEL_NAME: &str = "digits";
pub const MODEL_VERSION: &str = "1.0.0";

pub fn fixture() -> Fixture {
    fixture_with(RuntimeConfig::default())
}

/// The tiny classifier in a runtime configured by `config`.
pub fn fixture_with(config: RuntimeConfig) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let bundle = tandem_runtime::testing::write_tiny_classifier_bundle(dir.path(), MODEL_NAME, MODEL_VERSION)
        .expect("tiny bundle is written");
    let runtime = Arc::new(Runtime::new(config));
    let info = runtime.load(&bundle).expect("tiny bundle loads");
    Fixture { runtime, model_id: info.id, _dir: dir }
}

/// The classifier fixture plus an embedder `texts@1`.
pub fn fixture_with_embedder() -> (Fixture, TempDir) {
    let fx = fixture();
    let dir = tempfile::tempdir().expect("temp dir");
    write_tiny_sentence_transformers_dir(&dir.path().join("st"), 2, Pooling::Mean, true).expect("tiny encoder");
    let options = ImportOptions { name: "texts".into(), version: "1".into() };
    import_sentence_transformers(&dir.path().join("st"), &dir.path().join("bundle"), &options).expect("imports");
    fx.runtime.load(&dir.path().join("bundle")).expect("embedder loads");
    (fx, dir)
}

/// The app over `fx`, marked ready as if warm-up had run.
pub fn ready_app(fx: &Fixture, config: &ServerConfig) -> (Router, AppState) {
    let state = AppState::new(fx.runtime.clone(), config);
    state.set_ready(true);
    (app(state.clone()), state)
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts the one error shape, the status, and the `type`, and returns the message.
    pub fn assert_error(&self, status: u16, kind: &str) -> String {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text());
        let content_type = self.headers["content-type"].to_str().expect("ascii");
        assert!(content_type.starts_with("application/json"), "{content_type}");
        let body = self.json();
        let error = body["error"].as_object().expect("error object");
        assert_eq!(error.len(), 2, "{body}");
        assert_eq!(error["type"], kind, "{body}");
        let message = error["message"].as_str().expect("message string");
        assert!(!message.is_empty());
        message.to_owned()
    }
}

impl Reply {
    /// Asserts the Open Inference Protocol's error shape, `{"error": "<message>", "type": ...}`
    /// and nothing else, the status and the type, and returns the message.
    pub fn assert_inference_error(&self, status: u16, kind: &str) -> String {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text());
        let content_type = self.headers["content-type"].to_str().expect("ascii");
        assert!(content_type.starts_with("application/json"), "{content_type}");
        let body = self.json();
        let fields = body.as_object().expect("an object");
        assert_eq!(fields.len(), 2, "{body}");
        assert_eq!(fields["type"], kind, "{body}");
        let message = fields["error"].as_str().expect("`error` is a string, as Triton's client reads it");
        assert!(!message.is_empty() && !message.ends_with('.'), "{body}");
        message.to_owned()
    }
}

pub async fn send(app: &Router, req: Request<Body>) -> Reply {
    let res = app.clone().oneshot(req).await.expect("infallible");
    let (parts, body) = res.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.expect("body reads");
    Reply { status: parts.status, headers: parts.headers, body }
}

pub async fn get(app: &Router, uri: &str) -> Reply {
    send(app, Request::get(uri).body(Body::empty()).expect("request")).await
}

pub async fn post_json(app: &Router, uri: &str, body: &Value) -> Reply {
    post_bytes(app, uri, "application/json", body.to_string().into_bytes()).await
}

pub async fn post_bytes(app: &Router, uri: &str, content_type: &str, body: Vec<u8>) -> Reply {
    let req = Request::post(uri).header("content-type", content_type).body(Body::from(body)).expect("request");
    send(app, req).await
}

pub fn classify_uri(fx: &Fixture) -> String {
    format!("/v1/models/{}/classify", fx.model_id)
}

/// A grayscale gradient, so that images differ from each other and from a blank one.
pub fn gray(width: u32, height: u32, seed: u32) -> image::GrayImage {
    image::GrayImage::from_fn(width, height, |x, y| image::Luma([((x * 31 + y * 17 + seed * 7) % 256) as u8]))
}

pub fn png(width: u32, height: u32, seed: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    gray(width, height, seed).write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png).expect("png encodes");
    bytes
}

/// A colour JPEG, to go through the grayscale conversion.
pub fn jpeg(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([(x * 20) as u8, (y * 20) as u8, 128]));
    let mut bytes = Vec::new();
    img.write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Jpeg).expect("jpeg encodes");
    bytes
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn pixel_rows(size: usize, value: f64) -> Vec<Vec<f64>> {
    (0..size).map(|r| (0..size).map(|c| (value + (r * size + c) as f64) % 256.0).collect()).collect()
}

/// Asserts that the OpenAPI document lists `status` for `method` on the route `template`, so that
/// every status a test produces is one a client was told about.
pub fn assert_documented(template: &str, method: &str, status: StatusCode) {
    let spec: Value = serde_json::from_str(&tandem_server::openapi_json()).expect("spec is JSON");
    let op = &spec["paths"][template][method.to_ascii_lowercase()];
    assert!(op.is_object(), "{method} {template} is not in the spec");
    let code = status.as_u16().to_string();
    assert!(op["responses"].get(&code).is_some(), "{method} {template} does not document {code}");
}
