//! Cross-encoders over a real socket, on the tiny cross-encoder next to the tiny embedder and the
//! tiny classifier: both rerank routes answer a cross-encoder with the embedders' shapes and the
//! head's logits, `top_n`, the limits and truncation, and every kind check, each status held to
//! the spec.

use std::net::SocketAddr;

use axum::http::StatusCode;
use serde_json::{json, Value};
use tandem_runtime::testing_text::write_tiny_cross_encoder_bundle;
use tandem_runtime::RerankRequest;
use tandem_server::{AppState, ServerConfig};
use tempfile::TempDir;

use crate::common::*;
use crate::socket::{start_with_state, wait_ready, Running};

const RERANK: &str = "/v1/models/{id}/rerank";
const COMPAT: &str = "/v1/rerank";

const DOCUMENTS: [&str; 4] = ["a dog sat on the mat", "the cat", "", "red car and blue house"];

/// A served runtime holding the classifier `digits@1.0.0`, the embedder `texts@1` and the
/// cross-encoder `pairs@1`.
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
        let bundle = write_tiny_cross_encoder_bundle(dir.path(), "pairs", "1").expect("a tiny cross-encoder");
        assert_eq!(fx.runtime.load(&bundle).expect("the cross-encoder loads").id, "pairs@1");
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
        let url = format!("http://{}{}", self.addr(), template.replace("{id}", model));
        let res = self.client.post(url).json(body).send().await.expect("the server answers");
        let reply =
            Reply { status: res.status(), headers: res.headers().clone(), body: res.bytes().await.expect("body") };
        assert_documented(template, "POST", reply.status);
        reply
    }

    /// The runtime's own ranking, what both routes must answer.
    async fn expected(&self, query: &str, documents: &[&str]) -> Vec<(usize, f32)> {
        let documents = documents.iter().map(|d| (*d).to_owned()).collect();
        let request = RerankRequest { query: query.into(), documents, top_n: None, truncate: true };
        let res = self.fx.runtime.rerank("pairs", request).await.expect("the runtime reranks");
        res.results.iter().map(|r| (r.index, r.score)).collect()
    }
}

/// The `(index, score)` of each result of a 200 answer, with `key` the score's field.
#[track_caller]
fn ranked(reply: &Reply, key: &str) -> Vec<(usize, f32)> {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["model"], "pairs@1", "{body}");
    let results = body["results"].as_array().expect("results");
    results
        .iter()
        .map(|r| {
            let index = r["index"].as_u64().expect("an index") as usize;
            (index, r[key].as_f64().expect("a score") as f32)
        })
        .collect()
}

#[tokio::test]
async fn both_rerank_routes_answer_a_cross_encoder_with_its_logits() {
    let served = Served::start().await;
    let want = served.expected("the cat", &DOCUMENTS).await;
    assert!(want.windows(2).all(|w| w[0].1 >= w[1].1), "{want:?}");

    let body = json!({"query": "the cat", "documents": DOCUMENTS, "return_documents": true});
    let own = served.post(RERANK, "pairs", &body).await;
    assert_eq!(ranked(&own, "score"), want);
    let first = &own.json()["results"][0];
    assert_eq!(first["document"], DOCUMENTS[want[0].0], "{first}");
    assert_eq!(own.json()["usage"]["truncated_inputs"], 0);

    let compat =
        json!({"model": "pairs@1", "query": "the cat", "documents": DOCUMENTS, "top_n": 2, "return_documents": true});
    let compat = served.post(COMPAT, "", &compat).await;
    assert_eq!(ranked(&compat, "relevance_score"), want[..2]);
    assert_eq!(compat.json()["results"][0]["document"], json!({"text": DOCUMENTS[want[0].0]}));

    let top = served.post(RERANK, "pairs@1", &json!({"query": "the cat", "documents": DOCUMENTS, "top_n": 1})).await;
    assert_eq!(ranked(&top, "score"), want[..1]);
    assert!(top.json()["results"][0].get("document").is_none());

    // The embedder answers as before, by cosine: its own document first.
    let cosine = served.post(RERANK, "texts", &json!({"query": "the cat", "documents": DOCUMENTS})).await;
    assert_eq!(cosine.status, StatusCode::OK, "{}", cosine.text());
    let results = cosine.json()["results"].clone();
    assert_eq!((results[0]["index"].as_u64(), results[0]["score"].as_f64().map(|s| s > 0.999)), (Some(1), Some(true)));
}

#[tokio::test]
async fn long_pairs_truncate_unless_asked_not_to_and_limits_hold() {
    let served = Served::start().await;
    let long = "the cat sat on the mat and the dog sat on the mat and the red car is not fast";
    let cut = served.post(RERANK, "pairs", &json!({"query": "the cat", "documents": ["a dog", long]})).await;
    assert_eq!(cut.status, StatusCode::OK, "{}", cut.text());
    assert_eq!(cut.json()["usage"]["truncated_inputs"], 1);
    let compat = served.post(COMPAT, "", &json!({"model": "pairs", "query": "the cat", "documents": [long]})).await;
    assert_eq!(compat.json()["usage"]["truncated_inputs"], 1, "{}", compat.text());

    let refused = served
        .post(RERANK, "pairs", &json!({"query": "the cat", "documents": ["a dog", long], "truncate": false}))
        .await;
    let message = refused.assert_error(422, "invalid_input");
    assert!(message.contains("document 1 with the query: the pair has"), "{message}");

    let cases = [
        (RERANK, "pairs", json!({"query": "the cat", "documents": []}), 422, "invalid_input"),
        (COMPAT, "", json!({"model": "pairs", "query": "the cat", "documents": []}), 422, "invalid_input"),
        (RERANK, "pairs", json!({"query": "q", "documents": ["d"], "top_n": 0}), 422, "invalid_input"),
        (RERANK, "pairs", json!({"query": "q", "documents": ["a", "b", "c", "d", "e", "f"]}), 413, "too_many_inputs"),
        (RERANK, "pairs", json!({"query": "q".repeat(201), "documents": ["d"]}), 422, "invalid_input"),
        (RERANK, "nope", json!({"query": "q", "documents": ["d"]}), 404, "not_found"),
    ];
    for (template, model, body, status, kind) in cases {
        served.post(template, model, &body).await.assert_error(status, kind);
    }
}

#[tokio::test]
async fn wrong_kinds_are_422s_naming_the_right_routes() {
    let served = Served::start().await;
    let on_classifier = served.post(RERANK, "digits", &json!({"query": "q", "documents": ["d"]})).await;
    let message = on_classifier.assert_error(422, "invalid_input");
    assert!(message.contains("this route serves kinds `embedder` and `cross_encoder`"), "{message}");
    let compat = served.post(COMPAT, "", &json!({"model": "digits", "query": "q", "documents": ["d"]})).await;
    assert!(compat.assert_error(422, "invalid_input").contains("is of kind `classifier`"));

    for (template, body) in [
        ("/v1/models/{id}/embed", json!({"inputs": ["a"]})),
        ("/v1/models/{id}/similarity", json!({"source": "a", "sentences": ["b"]})),
        ("/v1/models/{id}/classify", json!({"inputs": [{"pixels": pixel_rows(8, 0.0)}]})),
    ] {
        let message = served.post(template, "pairs", &body).await.assert_error(422, "invalid_input");
        assert!(
            message.contains("is of kind `cross_encoder`")
                && message.contains("served by POST /v1/rerank, POST /v1/models/{id}/rerank"),
            "{template}: {message}"
        );
    }
    let openai = served.post("/v1/embeddings", "", &json!({"model": "pairs", "input": "a"})).await;
    openai.assert_error(422, "invalid_input");

    let url = format!("http://{}/v1/models", served.addr());
    let list: Value = served.client.get(url).send().await.expect("an answer").json().await.expect("JSON");
    let pairs = list["models"].as_array().expect("models").iter().find(|m| m["id"] == "pairs@1").cloned();
    assert_eq!(pairs.expect("the cross-encoder is listed")["kind"], "cross_encoder");
    let url = format!("http://{}/v1/models/pairs", served.addr());
    let detail: Value = served.client.get(url).send().await.expect("an answer").json().await.expect("JSON");
    assert_eq!(detail["kind"], "cross_encoder");
    assert_eq!(detail["routes"], json!(["POST /v1/rerank", "POST /v1/models/{id}/rerank"]));
}
