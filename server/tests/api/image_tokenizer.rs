//! The image tokenizer routes over a real socket, on a tiny random tokenizer (28×28, a 7×7 grid of
//! depth 2, 64 codes) next to the tiny classifier: tokenize from every body form, detokenize to a
//! PNG in JSON or raw, classify by semantic tokens, and every refusal in the error shape, each
//! status held to the spec.

use std::net::SocketAddr;

use axum::http::{Method, StatusCode};
use base64::Engine;
use serde_json::{json, Value};
use tandem_runtime::image::GrayImage;
use tandem_server::{AppState, ServerConfig};
use tempfile::TempDir;

use crate::common::*;
use crate::socket::{start_with_state, wait_ready, Running};

const TOKENIZE: &str = "/v1/models/{id}/tokenize";
const DETOKENIZE: &str = "/v1/models/{id}/detokenize";
const CLASSIFY: &str = "/v1/models/{id}/classify";

/// A served runtime holding the classifier `digits@1.0.0` and the tokenizer `tok@1`.
struct Served {
    fx: Fixture,
    running: Running,
    client: reqwest::Client,
    _dir: TempDir,
}

impl Served {
    async fn start() -> Served {
        let fx = fixture();
        let dir = tempfile::tempdir().expect("temp dir");
        let bundle = tandem_runtime::testing::write_tiny_tokenizer_bundle(dir.path(), "tok").expect("a tiny tokenizer");
        assert_eq!(fx.runtime.load(&bundle).expect("the tokenizer loads").id, "tok@1");
        let running = start_with_state(AppState::new(fx.runtime.clone(), &ServerConfig::default())).await;
        let client = reqwest::Client::new();
        wait_ready(&client, running.addr).await;
        Served { fx, running, client, _dir: dir }
    }

    fn addr(&self) -> SocketAddr {
        self.running.addr
    }

    /// Sends `request` and checks that its status is one the spec documents for `template`.
    async fn send(&self, template: &str, request: reqwest::RequestBuilder) -> Reply {
        let res = request.send().await.expect("the server answers");
        let reply =
            Reply { status: res.status(), headers: res.headers().clone(), body: res.bytes().await.expect("body") };
        assert_documented(template, "POST", reply.status);
        reply
    }

    async fn post(&self, template: &str, model: &str, body: &Value) -> Reply {
        let url = format!("http://{}{}", self.addr(), template.replace("{id}", model));
        self.send(template, self.client.post(url).json(body)).await
    }

    async fn post_raw(&self, template: &str, model: &str, content_type: &str, body: Vec<u8>) -> Reply {
        let url = format!("http://{}{}", self.addr(), template.replace("{id}", model));
        self.send(template, self.client.post(url).header("content-type", content_type).body(body)).await
    }
}

/// A 28×28 gradient image as pixel rows.
fn rows(seed: usize) -> Vec<Vec<f64>> {
    (0..28).map(|r| (0..28).map(|c| ((r * 28 + c) * 37 + seed * 101) as f64 % 256.0).collect()).collect()
}

/// The tokens of a 200 tokenize answer, checked against the tiny tokenizer's grid and codebook.
#[track_caller]
fn tokens(reply: &Reply) -> Vec<Value> {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["model"], "tok@1", "{body}");
    let tokens = body["tokens"].as_array().expect("tokens").clone();
    for entry in &tokens {
        assert_eq!(entry["shape"], json!({"height": 7, "width": 7, "depth": 2}), "{entry}");
        for stream in ["pixel_tokens", "semantic_tokens"] {
            let ids = entry[stream].as_array().unwrap_or_else(|| panic!("{stream}: {entry}"));
            assert_eq!(ids.len(), 98, "{stream}");
            assert!(ids.iter().all(|id| id.as_u64().is_some_and(|id| id < 64)), "{stream}: {entry}");
        }
    }
    tokens
}

/// The PNG of a 200 detokenize answer in JSON, checked to be a 28×28 grayscale image.
#[track_caller]
fn png_of(reply: &Reply) -> Vec<u8> {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["model"], "tok@1", "{body}");
    let png = base64::engine::general_purpose::STANDARD
        .decode(body["png_base64"].as_str().expect("png_base64"))
        .expect("standard base64");
    assert_28x28_png(&png);
    png
}

#[track_caller]
fn assert_28x28_png(png: &[u8]) {
    let decoded = image::load_from_memory_with_format(png, image::ImageFormat::Png).expect("a PNG");
    assert_eq!((decoded.width(), decoded.height()), (28, 28));
    assert_eq!(decoded.color(), image::ColorType::L8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_every_body_form_decode_to_a_png_in_json_or_raw() {
    let served = Served::start().await;
    let png = {
        let img = image::GrayImage::from_fn(28, 28, |x, y| image::Luma([((x * 9 + y * 5) % 256) as u8]));
        let mut bytes = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).expect("png encodes");
        bytes
    };

    // JSON: a pixel array and a base64 PNG, answered in order and exactly as the runtime answers.
    let body = json!({"inputs": [{"pixels": rows(1)}, {"image": b64(&png)}]});
    let json_tokens = tokens(&served.post(TOKENIZE, "tok", &body).await);
    assert_eq!(json_tokens.len(), 2);
    let images =
        vec![GrayImage::from_rows(&rows(1)).expect("pixels"), GrayImage::decode(&png).expect("the PNG decodes")];
    let direct = served.fx.runtime.tokenize("tok", images).await.expect("the runtime tokenizes");
    for (entry, expected) in json_tokens.iter().zip(&direct.tokens) {
        assert_eq!(entry["pixel_tokens"], json!(expected.pixel_tokens));
        assert_eq!(entry["semantic_tokens"], json!(expected.semantic_tokens.as_ref().expect("a dual tokenizer")));
    }
    assert_ne!(json_tokens[0]["pixel_tokens"], json_tokens[1]["pixel_tokens"], "two images, two token lists");

    // A raw PNG body is the same image as the base64 one; a raw JPEG is accepted too.
    let raw = tokens(&served.post_raw(TOKENIZE, "tok@1", "image/png", png.clone()).await);
    assert_eq!(raw, [json_tokens[1].clone()]);
    assert_eq!(tokens(&served.post_raw(TOKENIZE, "tok", "image/jpeg", jpeg(28, 28)).await).len(), 1);

    // Detokenize: the pixel tokens and shape, or the whole entry as tokenize answered it.
    let entry = &json_tokens[0];
    let request = json!({"pixel_tokens": entry["pixel_tokens"], "shape": entry["shape"]});
    let decoded = png_of(&served.post(DETOKENIZE, "tok", &request).await);
    assert_eq!(png_of(&served.post(DETOKENIZE, "tok@1", entry).await), decoded, "the same tokens, the same bytes");
    let pixel_tokens: Vec<i64> =
        entry["pixel_tokens"].as_array().expect("ids").iter().map(|id| id.as_i64().expect("an id")).collect();
    let grid = served.fx.runtime.token_grid("tok").expect("a tokenizer");
    let direct = served.fx.runtime.detokenize("tok", &pixel_tokens, grid).await.expect("the runtime decodes");
    assert_eq!(decoded, direct.image.png);

    // `Accept: image/png` answers the PNG itself; JSON when the client prefers it.
    let url = format!("http://{}/v1/models/tok/detokenize", served.addr());
    let raw = served.send(DETOKENIZE, served.client.post(&url).header("accept", "image/png").json(&request)).await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.text());
    assert_eq!(raw.headers["content-type"], "image/png");
    assert_eq!(raw.body.as_ref(), decoded.as_slice());
    let preferred = "application/json, image/png;q=0.5";
    let json_answer =
        served.send(DETOKENIZE, served.client.post(&url).header("accept", preferred).json(&request)).await;
    assert_eq!(png_of(&json_answer), decoded);

    // The model lists its routes.
    let detail: Value = served
        .client
        .get(format!("http://{}/v1/models/tok", served.addr()))
        .send()
        .await
        .expect("the server answers")
        .json()
        .await
        .expect("JSON");
    assert_eq!(detail["kind"], "image_tokenizer");
    assert_eq!(
        detail["routes"],
        json!(["POST /v1/models/{id}/tokenize", "POST /v1/models/{id}/detokenize", "POST /v1/models/{id}/classify"])
    );
    served.running.stopped().await.expect("the server stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classify_on_a_tokenizer_answers_predictions_from_its_semantic_tokens() {
    let served = Served::start().await;
    let body = json!({"inputs": [{"pixels": rows(3)}, {"pixels": rows(4)}], "top_k": 3});
    let reply = served.post(CLASSIFY, "tok", &body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let answer = reply.json();
    assert_eq!(answer["model"], "tok@1");
    let predictions = answer["predictions"].as_array().expect("predictions");
    assert_eq!(predictions.len(), 2);
    let images = vec![GrayImage::from_rows(&rows(3)).expect("pixels"), GrayImage::from_rows(&rows(4)).expect("pixels")];
    let direct = served.fx.runtime.classify_by_tokens("tok", images, 3).await.expect("the runtime classifies");
    for (served_list, direct_list) in predictions.iter().zip(&direct.predictions) {
        let list = served_list.as_array().expect("a list per input");
        assert_eq!(list.len(), 3);
        for (p, d) in list.iter().zip(direct_list) {
            assert_eq!(p["label"], d.label.as_str());
            assert!((p["score"].as_f64().expect("a score") - f64::from(d.score)).abs() < 1e-6, "{p} vs {d:?}");
        }
    }

    // A raw PNG body with `top_k` in the query, as for a classifier.
    let url = format!("http://{}/v1/models/tok/classify?top_k=2", served.addr());
    let raw =
        served.send(CLASSIFY, served.client.post(url).header("content-type", "image/png").body(png(28, 28, 1))).await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.text());
    assert_eq!(raw.json()["predictions"][0].as_array().map(Vec::len), Some(2));

    // The classifier keeps answering on the same route.
    let reply = served.post(CLASSIFY, &served.fx.model_id, &json!({"inputs": [{"pixels": pixel_rows(8, 3.0)}]})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["model"], served.fx.model_id.as_str());
    served.running.stopped().await.expect("the server stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_shapes_bodies_and_kinds_answer_documented_errors() {
    let served = Served::start().await;
    let shape = json!({"height": 7, "width": 7, "depth": 2});
    let zeros = vec![0i64; 98];
    let with_first = |first: Value| {
        let mut ids: Vec<Value> = zeros.iter().map(|&id| json!(id)).collect();
        ids[0] = first;
        ids
    };

    // (body, status, type, what the message must hold)
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (json!({"pixel_tokens": with_first(json!(64)), "shape": shape}), 422, "invalid_input", "pixel_tokens[0] = 64"),
        (json!({"pixel_tokens": with_first(json!(-1)), "shape": shape}), 422, "invalid_input", "pixel_tokens[0] = -1"),
        (
            json!({"pixel_tokens": with_first(json!(1e30)), "shape": shape}),
            422,
            "invalid_input",
            "outside the codebook",
        ),
        (json!({"pixel_tokens": with_first(json!(1.5)), "shape": shape}), 422, "invalid_input", "whole number"),
        (json!({"pixel_tokens": with_first(json!("3")), "shape": shape}), 422, "invalid_input", "whole number"),
        (json!({"pixel_tokens": with_first(json!(null)), "shape": shape}), 422, "invalid_input", "whole number"),
        (
            json!({"pixel_tokens": &zeros[1..], "shape": shape}),
            422,
            "invalid_input",
            "97 pixel tokens for a 7x7x2 grid",
        ),
        (json!({"pixel_tokens": [], "shape": shape}), 422, "invalid_input", "0 pixel tokens"),
        (
            json!({"pixel_tokens": vec![0; 147], "shape": {"height": 7, "width": 7, "depth": 3}}),
            422,
            "invalid_input",
            "shape 7x7x3 does not match this model's token grid 7x7x2",
        ),
        (
            json!({"pixel_tokens": zeros, "shape": {"height": 14, "width": 7, "depth": 1}}),
            422,
            "invalid_input",
            "does not match this model's token grid",
        ),
        (json!({"pixel_tokens": zeros, "shape": {"height": 7, "width": 7}}), 422, "invalid_input", "depth"),
        (json!({"pixel_tokens": zeros}), 422, "invalid_input", "shape"),
        (json!({"pixel_tokens": zeros, "shape": shape, "tokens": []}), 422, "invalid_input", "unknown field"),
    ];
    for (body, status, kind, says) in &cases {
        let reply = served.post(DETOKENIZE, "tok", body).await;
        let message = reply.assert_error(*status, kind);
        assert!(message.contains(says), "{body}: {message:?} does not hold {says:?}");
    }

    let malformed = served.post_raw(DETOKENIZE, "tok", "application/json", b"{\"pixel_tokens\": [".to_vec()).await;
    malformed.assert_error(400, "invalid_json");
    let text = served.post_raw(DETOKENIZE, "tok", "text/plain", b"{}".to_vec()).await;
    text.assert_error(415, "unsupported_media_type");
    served
        .post(DETOKENIZE, "nothing", &json!({"pixel_tokens": zeros, "shape": shape}))
        .await
        .assert_error(404, "not_found");

    // Tokenize refuses what classify refuses.
    let empty = served.post(TOKENIZE, "tok", &json!({"inputs": []})).await;
    assert!(empty.assert_error(422, "invalid_input").contains("at least one input"));
    let not_png = served.post_raw(TOKENIZE, "tok", "image/png", b"not a png".to_vec()).await;
    not_png.assert_error(400, "invalid_image");
    let bad_base64 = served.post(TOKENIZE, "tok", &json!({"inputs": [{"image": "***"}]})).await;
    assert!(bad_base64.assert_error(400, "invalid_image").starts_with("inputs[0]: "));
    let ragged = served.post(TOKENIZE, "tok", &json!({"inputs": [{"pixels": [[1.0, 2.0], [3.0]]}]})).await;
    ragged.assert_error(422, "invalid_input");
    let extra = served.post(TOKENIZE, "tok", &json!({"inputs": [{"pixels": rows(1)}], "top_k": 3})).await;
    assert!(extra.assert_error(422, "invalid_input").contains("unknown field"));

    // Another kind's model on a tokenizer route, and a tokenizer on another kind's route: the
    // wrong-kind 422 naming the routes the model does serve.
    let digits = served.fx.model_id.clone();
    let tokenize_classifier =
        served.post(TOKENIZE, &digits, &json!({"inputs": [{"pixels": pixel_rows(8, 1.0)}]})).await;
    let message = tokenize_classifier.assert_error(422, "invalid_input");
    assert!(message.contains("kind `classifier`") && message.contains("kind `image_tokenizer`"), "{message}");
    assert!(message.contains("POST /v1/models/{id}/classify"), "{message}");
    let raw_classifier = served.post_raw(TOKENIZE, &digits, "image/png", png(8, 8, 1)).await;
    raw_classifier.assert_error(422, "invalid_input");
    let detokenize_classifier = served.post(DETOKENIZE, &digits, &json!({"pixel_tokens": zeros, "shape": shape})).await;
    assert!(detokenize_classifier.assert_error(422, "invalid_input").contains("kind `classifier`"));
    let url = format!("http://{}/v1/models/tok/generate", served.addr());
    let generate = served.send("/v1/models/{id}/generate", served.client.post(url).json(&json!({}))).await;
    let message = generate.assert_error(422, "invalid_input");
    assert!(message.contains("POST /v1/models/{id}/tokenize, POST /v1/models/{id}/detokenize"), "{message}");
    let v2 = served
        .client
        .request(Method::POST, format!("http://{}/v2/models/tok/infer", served.addr()))
        .json(&json!({"inputs": [{"name": "images", "datatype": "FP32", "shape": [1], "data": [0.0]}]}))
        .send()
        .await
        .expect("the server answers");
    assert_eq!(v2.status(), 422);
    let body: Value = v2.json().await.expect("JSON");
    assert!(body["error"].as_str().is_some_and(|m| m.contains("POST /v1/models/{id}/tokenize")), "{body}");
    served.running.stopped().await.expect("the server stops cleanly");
}
