//! What each fuzz target checks, as plain functions: `cargo fuzz` drives them from
//! `fuzz_targets/`, and `tests/replay.rs` runs every committed corpus input and crash reproducer
//! through them on stable Rust, so that a fixed crash stays fixed.
//!
//! Every target states a property beyond "does not panic" where there is one: a parsed manifest
//! serializes and parses back to itself, an IDX array re-encodes to the bytes it came from, and
//! no route answers 500 or a body that is not the JSON error shape.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use tandem_runtime::{Runtime, RuntimeConfig};
use tandem_server::{AppState, ServerConfig};
use tower::ServiceExt;

/// Manifest parsing (schema 2, and schema 1 through migration when the bytes say so).
pub fn manifest(data: &[u8]) {
    if let Ok(parsed) = tandem_runtime::bundle::parse_manifest(data) {
        let json = serde_json::to_vec(&parsed).expect("a parsed manifest serializes");
        let again = tandem_runtime::bundle::parse_manifest(&json).expect("a serialized manifest parses");
        assert_eq!(parsed, again, "a manifest survives a round trip");
    }
}

/// Bundle loading through the runtime, as `tandem serve` and a reload do. The input is a manifest,
/// a NUL byte, then the bytes of every file the manifest lists (written under each plain file name
/// it lists). Checksums in the manifest are rewritten to match, so that inputs reach the
/// safetensors parser, the shape checks and the model builders instead of all stopping at sha256.
pub fn bundle(data: &[u8]) {
    let Some(split) = data.iter().position(|&b| b == 0) else { return };
    let (manifest, payload) = (&data[..split], &data[split + 1..]);
    let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(manifest) else { return };
    let dir = scratch_dir();
    for entry in std::fs::read_dir(dir).expect("the scratch dir lists").flatten() {
        let _ = std::fs::remove_file(entry.path());
    }
    if let Some(files) = json.get_mut("files").and_then(|f| f.as_array_mut()) {
        for file in files.iter_mut() {
            let Some(name) = file.get("path").and_then(|p| p.as_str()).map(str::to_owned) else { continue };
            // Never write outside the scratch directory, whatever the manifest says.
            if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
                continue;
            }
            std::fs::write(dir.join(&name), payload).expect("the scratch file writes");
            if let Some(obj) = file.as_object_mut() {
                obj.insert("sha256".into(), tandem_runtime::bundle::sha256_hex(payload).into());
            }
        }
    }
    let manifest = serde_json::to_vec(&json).expect("a JSON value serializes");
    std::fs::write(dir.join("manifest.json"), manifest).expect("the manifest writes");
    let runtime = loader();
    if let Ok(info) = runtime.load(dir) {
        runtime.unload(&info.id).expect("a loaded model unloads");
    }
}

/// Image decoding as the classify route does it: header first, then pixels within a budget.
pub fn image(data: &[u8]) {
    const BUDGET: u64 = 1 << 20;
    let header = tandem_runtime::image::ImageHeader::read(data);
    if let Ok(img) = tandem_runtime::image::GrayImage::decode_within(data, BUDGET) {
        let header = header.expect("a decodable image has a readable header");
        assert!(header.pixels() <= BUDGET);
        assert_eq!(img.pixels().len(), img.width() * img.height());
        let resized = img.resized(8, 8);
        assert!(resized.iter().all(|p| p.is_finite() && (0.0..=255.0).contains(p)));
    }
}

/// The IDX reader of MNIST and Fashion-MNIST; what parses re-encodes to the same bytes.
pub fn idx(data: &[u8]) {
    if let Ok(array) = tandem_training::data::idx::parse(data.to_vec(), "fuzz") {
        assert_eq!(array.data.len(), array.dims.iter().product::<usize>());
        let encoded = tandem_training::data::idx::encode(&array.dims, &array.data).expect("a parsed array encodes");
        assert_eq!(encoded, data, "an IDX file re-encodes to its own bytes");
    }
}

/// The CSV reader of the embedded digits set.
pub fn digits_csv(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tandem_training::data::parse_digits_csv(text);
    }
}

/// A route of every family, as `(method, path, content type)`; the first input byte picks one.
const ROUTES: &[(&str, &str, &str)] = &[
    ("POST", "/v1/models/digits/classify", "application/json"),
    ("POST", "/v1/models/digits/classify", "image/png"),
    ("POST", "/v1/embeddings", "application/json"),
    ("POST", "/v1/rerank", "application/json"),
    ("POST", "/v1/models/texts/embed", "application/json"),
    ("POST", "/v1/models/texts/rerank", "application/json"),
    ("POST", "/v1/models/texts/similarity", "application/json"),
    ("POST", "/v1/models/texts/classify", "application/json"),
    ("POST", "/v2/models/digits/infer", "application/json"),
    ("POST", "/v2/models/texts/infer", "application/json"),
    ("POST", "/v2/models/digits/infer", "application/octet-stream"),
    ("POST", "/v2/models/texts/infer", "application/octet-stream"),
    ("POST", "/v1/models/ddpm/generate", "application/json"),
    ("POST", "/v1/models/cm/generate", "application/json"),
    ("POST", "/v2/models/ddpm/infer", "application/json"),
];

/// The request body of every route, through the whole app (extractors, validation, the runtime).
/// The first byte picks the route; for the binary tensor extension the next two give the JSON
/// header's length. No input may get a 500, and every error answers in its protocol's JSON shape.
pub fn request(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else { return };
    let (method, path, content_type) = ROUTES[pick as usize % ROUTES.len()];
    let mut builder = Request::builder().method(method).uri(path).header(header::CONTENT_TYPE, content_type);
    if content_type == "application/octet-stream" && body.len() >= 2 {
        let length = u16::from_le_bytes([body[0], body[1]]) as usize;
        builder = builder.header("inference-header-content-length", length.min(body.len() - 2));
    }
    let body = if content_type == "application/octet-stream" && body.len() >= 2 { &body[2..] } else { body };
    let request = builder.body(Body::from(body.to_vec())).expect("a request builds");
    let (app, rt) = server();
    let (status, bytes) = rt.block_on(async {
        let response = app.clone().oneshot(request).await.expect("the router is infallible");
        let status = response.status();
        (status, axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("the body reads"))
    });
    if std::env::var_os("TANDEM_FUZZ_TRACE").is_some() {
        eprintln!("{method} {path} ({content_type}) -> {status}: {}", String::from_utf8_lossy(&bytes));
    }
    assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{path}: {}", String::from_utf8_lossy(&bytes));
    if !status.is_success() {
        let json: serde_json::Value = serde_json::from_slice(&bytes).expect("errors are JSON");
        assert!(json.get("error").is_some(), "{path} {status}: {json}");
    }
}

/// One scratch directory per process for [`bundle`].
fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a temp dir")).path()
}

/// A runtime that loads whatever [`bundle`] writes, with no batching delay.
fn loader() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::new(fast_config()))
}

fn fast_config() -> RuntimeConfig {
    let mut config = RuntimeConfig::default();
    config.batch.max_batch_delay = std::time::Duration::ZERO;
    config.cache_capacity = 0;
    config
}

/// The app over a tiny classifier `digits@1`, a tiny embedder `texts@1`, and tiny generators
/// `ddpm@1` (diffusion) and `cm@1` (consistency), built once.
fn server() -> (&'static Router, &'static tokio::runtime::Runtime) {
    static SERVER: OnceLock<(Router, tokio::runtime::Runtime, tempfile::TempDir)> = OnceLock::new();
    let (app, rt, _) = SERVER.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temp dir");
        let runtime = Arc::new(Runtime::new(fast_config()));
        let classifier = tandem_runtime::testing::write_tiny_classifier_bundle(dir.path(), "digits", "1")
            .expect("the tiny classifier writes");
        runtime.load(&classifier).expect("the tiny classifier loads");
        let st = dir.path().join("st");
        tandem_runtime::testing_text::write_tiny_sentence_transformers_dir(
            &st,
            2,
            tandem_runtime::models::sentence_encoder::Pooling::Mean,
            true,
        )
        .expect("the tiny encoder writes");
        let options = tandem_runtime::import::ImportOptions { name: "texts".into(), version: "1".into() };
        tandem_runtime::import::import_sentence_transformers(&st, &dir.path().join("texts"), &options)
            .expect("the tiny encoder imports");
        runtime.load(&dir.path().join("texts")).expect("the tiny embedder loads");
        let ddpm = tandem_runtime::testing::write_tiny_diffusion_bundle(dir.path(), "ddpm")
            .expect("the tiny diffusion model writes");
        runtime.load(&ddpm).expect("the tiny diffusion model loads");
        let cm = tandem_runtime::testing::write_tiny_consistency_bundle(dir.path(), "cm")
            .expect("the tiny consistency model writes");
        runtime.load(&cm).expect("the tiny consistency model loads");
        let state = AppState::new(runtime, &ServerConfig::default());
        state.set_ready(true);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
        (tandem_server::app(state), rt, dir)
    });
    (app, rt)
}
