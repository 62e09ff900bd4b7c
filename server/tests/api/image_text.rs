//! Image–text dual encoders over a real socket, on the tiny `image_text` bundle next to the tiny
//! embedder and the tiny classifier: the embed route takes texts and images in one request, the
//! classify route classifies zero-shot against free-text labels or the model's class names, other
//! kinds keep their behaviour, and every status is held to the spec.

use std::net::SocketAddr;

use axum::http::StatusCode;
use serde_json::{json, Value};
use tandem_runtime::image::GrayImage;
use tandem_runtime::testing::write_tiny_image_text_bundle;
use tandem_runtime::{ImageTextEmbedRequest, ImageTextInput};
use tandem_server::{AppState, ServerConfig};
use tempfile::TempDir;

use crate::common::*;
use crate::socket::{start_with_state, wait_ready, Running};

const EMBED: &str = "/v1/models/{id}/embed";
const CLASSIFY: &str = "/v1/models/{id}/classify";

const FASHION: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// A served runtime holding the classifier `digits@1.0.0`, the embedder `texts@1` and the
/// image–text model `clip@1`.
struct Served {
    fx: Fixture,
    running: Running,
    client: reqwest::Client,
    _dirs: (TempDir, TempDir),
}

impl Served {
    async fn start() -> Served {
        let (fx, embedder_dir) = fixture_with_embedder();
        let dir = tempfile::tempdir().expect("temp dir");
        let bundle = write_tiny_image_text_bundle(dir.path(), "clip").expect("a tiny image_text bundle");
        assert_eq!(fx.runtime.load(&bundle).expect("the image_text model loads").id, "clip@1");
        let config = ServerConfig { max_inputs: 5, max_input_chars: 200, ..ServerConfig::default() };
        let running = start_with_state(AppState::new(fx.runtime.clone(), &config)).await;
        let client = reqwest::Client::new();
        wait_ready(&client, running.addr).await;
        Served { fx, running, client, _dirs: (embedder_dir, dir) }
    }

    fn addr(&self) -> SocketAddr {
        self.running.addr
    }

    /// Posts `body` to the route `template` for `model` and checks that the answer's status is
    /// one the spec documents for it.
    async fn post(&self, template: &str, model: &str, body: &Value) -> Reply {
        self.post_bytes(template, model, "application/json", body.to_string().into_bytes()).await
    }

    async fn post_bytes(&self, template: &str, model: &str, content_type: &str, body: Vec<u8>) -> Reply {
        let url = format!("http://{}{}", self.addr(), template.replace("{id}", model));
        let res = self.client.post(url).header("content-type", content_type).body(body).send().await;
        let res = res.expect("the server answers");
        let reply =
            Reply { status: res.status(), headers: res.headers().clone(), body: res.bytes().await.expect("body") };
        assert_documented(template, "POST", reply.status);
        reply
    }
}

/// The decoded form of [`png`], as the server sees it.
fn png_image(width: u32, height: u32, seed: u32) -> GrayImage {
    GrayImage::decode(&png(width, height, seed)).expect("a PNG decodes")
}

fn vectors(reply: &Reply) -> Vec<Vec<f32>> {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let body = reply.json();
    body["embeddings"]
        .as_array()
        .expect("embeddings")
        .iter()
        .map(|v| v.as_array().expect("a vector").iter().map(|x| x.as_f64().expect("a number") as f32).collect())
        .collect()
}

/// The top label of each image of a 200 classify answer, with its score.
fn top(reply: &Reply) -> Vec<(String, f32)> {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["model"], "clip@1", "{body}");
    body["predictions"]
        .as_array()
        .expect("predictions")
        .iter()
        .map(|p| (p[0]["label"].as_str().expect("a label").to_owned(), p[0]["score"].as_f64().expect("a score") as f32))
        .collect()
}

#[tokio::test]
async fn embed_takes_texts_and_images_in_one_request() {
    let served = Served::start().await;
    let pixels = pixel_rows(28, 3.0);
    let body = json!({"inputs": ["a photo of a bag", {"image": b64(&png(28, 28, 1))}, {"pixels": pixels}, "sneaker"]});
    let got = vectors(&served.post(EMBED, "clip", &body).await);
    let rows: Vec<Vec<f64>> = pixel_rows(28, 3.0);
    let inputs = vec![
        ImageTextInput::Text("a photo of a bag".into()),
        ImageTextInput::Image(png_image(28, 28, 1)),
        ImageTextInput::Image(GrayImage::from_rows(&rows).expect("pixel rows")),
        ImageTextInput::Text("sneaker".into()),
    ];
    let request = ImageTextEmbedRequest { inputs, truncate: true, normalize: None, dimensions: None };
    let want = served.fx.runtime.embed_image_text("clip", request).await.expect("the runtime embeds").embeddings;
    assert_eq!(got.len(), 4);
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.len(), 8);
        assert!(g.iter().zip(w).all(|(a, b)| (a - b).abs() < 1e-6), "{g:?} against {w:?}");
    }
    let cut = served.post(EMBED, "clip@1", &json!({"inputs": ["bag"], "dimensions": 4})).await;
    assert_eq!(vectors(&cut)[0].len(), 4);
    let usage = served.post(EMBED, "clip", &json!({"inputs": ["a bag", {"pixels": pixel_rows(4, 0.0)}]})).await;
    assert!(usage.json()["usage"]["prompt_tokens"].as_u64() > Some(0), "{}", usage.text());

    // Embedders keep answering texts; an image there is a 422 naming it.
    let texts = served.post(EMBED, "texts", &json!({"inputs": ["the cat"]})).await;
    assert_eq!(vectors(&texts).len(), 1);
    let image = served.post(EMBED, "texts", &json!({"inputs": ["the cat", {"pixels": pixel_rows(4, 0.0)}]})).await;
    let message = image.assert_error(422, "invalid_input");
    assert!(message.contains("inputs[1] is an image") && message.contains("image_text"), "{message}");
}

#[tokio::test]
async fn classify_is_zero_shot_against_labels_or_the_class_names() {
    let served = Served::start().await;
    let image = b64(&png(28, 28, 2));
    let labels = ["a photo of a bag", "a photo of a dress", "trouser"];
    let body = json!({"inputs": [{"image": image}, {"pixels": pixel_rows(28, 9.0)}], "labels": labels, "top_k": 3});
    let reply = served.post(CLASSIFY, "clip", &body).await;
    let got = top(&reply);
    assert_eq!(got.len(), 2);
    for predictions in reply.json()["predictions"].as_array().expect("predictions") {
        let predictions = predictions.as_array().expect("a list");
        assert_eq!(predictions.len(), 3);
        let sum: f64 = predictions.iter().map(|p| p["score"].as_f64().expect("a score")).sum();
        assert!((sum - 1.0).abs() < 1e-4, "{sum}");
        assert!(predictions.iter().all(|p| labels.contains(&p["label"].as_str().expect("a label"))));
    }
    let request = tandem_runtime::ZeroShotRequest {
        images: vec![png_image(28, 28, 2)],
        labels: Some(labels.map(String::from).to_vec()),
        top_k: 1,
    };
    let want = served.fx.runtime.classify_zero_shot("clip", request).await.expect("the runtime classifies");
    assert_eq!(got[0].0, want.predictions[0][0].label);
    assert!((got[0].1 - want.predictions[0][0].score).abs() < 1e-6);

    // Without labels, the model's class names; a raw PNG body too.
    let names = top(&served.post(CLASSIFY, "clip", &json!({"inputs": [{"image": image}]})).await);
    assert!(FASHION.contains(&names[0].0.as_str()), "{names:?}");
    let raw = top(&served.post_bytes(CLASSIFY, "clip", "image/png", png(28, 28, 2)).await);
    assert_eq!(raw, names);

    // Classifiers keep their behaviour and refuse labels.
    let digits = served.post(CLASSIFY, "digits", &json!({"inputs": [{"pixels": pixel_rows(8, 0.0)}]})).await;
    assert_eq!(digits.status, StatusCode::OK, "{}", digits.text());
    let with_labels = json!({"inputs": [{"pixels": pixel_rows(8, 0.0)}], "labels": ["a"]});
    let message = served.post(CLASSIFY, "digits", &with_labels).await.assert_error(422, "invalid_input");
    assert!(message.contains("labels are for image_text models only"), "{message}");
}

#[tokio::test]
async fn bad_inputs_and_wrong_kinds_answer_the_documented_errors() {
    let served = Served::start().await;
    let pixels = || json!({"pixels": pixel_rows(28, 0.0)});
    let cases = [
        (EMBED, "clip", json!({"inputs": []}), 422, "invalid_input", "at least one input"),
        (EMBED, "clip", json!({"inputs": ["a", "b", "c", "d", "e", "f"]}), 413, "too_many_inputs", "6 inputs"),
        (EMBED, "clip", json!({"inputs": ["x".repeat(201)]}), 422, "invalid_input", "inputs[0] is longer"),
        (EMBED, "clip", json!({"inputs": ["a", {"image": "***"}]}), 400, "invalid_image", "inputs[1]: "),
        (EMBED, "clip", json!({"inputs": ["a", {"image": b64(b"not an image")}]}), 400, "invalid_image", "inputs[1]"),
        (EMBED, "clip", json!({"inputs": [3]}), 422, "invalid_input", "expected a text or an object"),
        (EMBED, "clip", json!({"inputs": ["a"], "dimensions": 9}), 422, "invalid_input", "between 1 and 8"),
        (CLASSIFY, "clip", json!({"inputs": [pixels()], "labels": []}), 422, "invalid_input", "at least one label"),
        (CLASSIFY, "clip", json!({"inputs": [pixels()], "labels": ["a", " "]}), 422, "invalid_input", "labels[1]"),
        (
            CLASSIFY,
            "clip",
            json!({"inputs": [pixels()], "labels": ["a", "b", "c", "d", "e", "f"]}),
            413,
            "too_many_inputs",
            "6 labels",
        ),
        (
            CLASSIFY,
            "clip",
            json!({"inputs": [pixels()], "labels": ["y".repeat(201)]}),
            422,
            "invalid_input",
            "labels[0] is longer",
        ),
        (CLASSIFY, "clip", json!({"inputs": [{"image": "***"}]}), 400, "invalid_image", "inputs[0]"),
        (EMBED, "digits", json!({"inputs": ["a"]}), 422, "invalid_input", "serves kinds `embedder` and `image_text`"),
        (
            "/v1/models/{id}/rerank",
            "clip",
            json!({"query": "q", "documents": ["d"]}),
            422,
            "invalid_input",
            "served by POST /v1/models/{id}/embed, POST /v1/models/{id}/classify",
        ),
    ];
    for (template, model, body, status, kind, expect) in cases {
        let message = served.post(template, model, &body).await.assert_error(status, kind);
        assert!(message.contains(expect), "{template} {body}: {message}");
    }

    let url = format!("http://{}/v1/models/clip", served.addr());
    let detail: Value = served.client.get(url).send().await.expect("an answer").json().await.expect("JSON");
    assert_eq!(detail["kind"], "image_text");
    assert_eq!(detail["labels"], json!(FASHION));
    assert_eq!(detail["input"]["shape"], json!([1, 28, 28]));
    assert_eq!(detail["embedding"]["dimensions"], 8);
    assert_eq!(detail["routes"], json!(["POST /v1/models/{id}/embed", "POST /v1/models/{id}/classify"]));
}
