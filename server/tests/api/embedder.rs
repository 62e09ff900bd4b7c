//! The embedder routes in-process, on a tiny imported sentence encoder next to the tiny classifier:
//! every shape, the limits and the kind checks, each answer held to the spec's documented codes.

use axum::http::StatusCode;
use base64::Engine;
use serde_json::{json, Value};
use tandem_server::ServerConfig;

use crate::common::*;

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().expect("numbers").iter().map(|x| x.as_f64().expect("a number") as f32).collect()
}

#[tokio::test]
async fn openai_shape_with_float_base64_single_input_and_dimensions() {
    let (fx, _dir) = fixture_with_embedder();
    let (app, _) = ready_app(&fx, &ServerConfig::default());
    let reply = post_json(&app, "/v1/embeddings", &json!({"model": "texts", "input": ["the cat", "a dog"]})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_documented("/v1/embeddings", "POST", reply.status);
    let body = reply.json();
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "texts@1");
    assert_eq!(body["data"][1]["object"], "embedding");
    assert_eq!(body["data"][1]["index"], 1);
    assert_eq!(body["usage"]["prompt_tokens"], body["usage"]["total_tokens"]);
    let floats0 = floats(&body["data"][0]["embedding"]);
    assert_eq!(floats0.len(), 32);

    let reply =
        post_json(&app, "/v1/embeddings", &json!({"model": "texts", "input": "the cat", "encoding_format": "base64"}))
            .await;
    let body = reply.json();
    assert_eq!(body["data"].as_array().expect("data").len(), 1, "a single string is one input");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body["data"][0]["embedding"].as_str().expect("base64 text"))
        .expect("valid base64");
    let decoded: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    assert_eq!(decoded, floats0);

    let reply =
        post_json(&app, "/v1/embeddings", &json!({"model": "texts", "input": "the cat", "dimensions": 8.0})).await;
    let cut = floats(&reply.json()["data"][0]["embedding"]);
    assert_eq!(cut.len(), 8);
    assert!((cut.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5, "re-normalised");
}

#[tokio::test]
async fn own_routes_embed_rerank_and_score() {
    let (fx, _dir) = fixture_with_embedder();
    let (app, _) = ready_app(&fx, &ServerConfig::default());
    let embed = post_json(&app, "/v1/models/texts/embed", &json!({"inputs": ["the cat"], "normalize": false})).await;
    assert_eq!(embed.status, StatusCode::OK, "{}", embed.text());
    assert_documented("/v1/models/{id}/embed", "POST", embed.status);
    assert_eq!(embed.json()["embeddings"].as_array().expect("embeddings").len(), 1);

    let docs = json!(["a dog", "the cat sat", "the cat"]);
    let rerank = post_json(
        &app,
        "/v1/models/texts@1/rerank",
        &json!({"query": "the cat", "documents": docs, "return_documents": true}),
    )
    .await;
    assert_documented("/v1/models/{id}/rerank", "POST", rerank.status);
    let body = rerank.json();
    assert_eq!(body["results"][0]["index"], 2, "{body}");
    assert_eq!(body["results"][0]["document"], "the cat");
    let scores: Vec<f64> =
        body["results"].as_array().expect("results").iter().map(|r| r["score"].as_f64().expect("score")).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{body}");

    let compat = post_json(
        &app,
        "/v1/rerank",
        &json!({"model": "texts", "query": "the cat", "documents": docs, "top_n": 2, "return_documents": true}),
    )
    .await;
    assert_documented("/v1/rerank", "POST", compat.status);
    let body = compat.json();
    assert_eq!(body["results"].as_array().expect("results").len(), 2);
    assert_eq!(body["results"][0]["document"], json!({"text": "the cat"}));
    assert!((body["results"][0]["relevance_score"].as_f64().expect("score") - scores[0]).abs() < 1e-6);

    let sim = post_json(
        &app,
        "/v1/models/texts/similarity",
        &json!({"source": "the cat", "sentences": ["the cat", "a dog"]}),
    )
    .await;
    assert_documented("/v1/models/{id}/similarity", "POST", sim.status);
    let scores = floats(&sim.json()["scores"]);
    assert!((scores[0] - 1.0).abs() < 1e-5 && scores[1] < scores[0], "{scores:?}");
}

#[tokio::test]
async fn limits_and_bad_inputs_answer_documented_errors() {
    let (fx, _dir) = fixture_with_embedder();
    let config = ServerConfig { max_inputs: 3, max_input_chars: 10, ..ServerConfig::default() };
    let (app, _) = ready_app(&fx, &config);
    let cases = [
        ("/v1/models/texts/embed", json!({"inputs": []}), 422, "invalid_input"),
        ("/v1/models/texts/embed", json!({"inputs": ["a", "b", "c", "d"]}), 413, "too_many_inputs"),
        ("/v1/models/texts/embed", json!({"inputs": ["a", "this is far too long"]}), 422, "invalid_input"),
        ("/v1/models/texts/embed", json!({"inputs": ["a"], "dimensions": 33}), 422, "invalid_input"),
        ("/v1/models/texts/embed", json!({"inputs": ["a"], "dimensions": 0}), 422, "invalid_input"),
        ("/v1/models/texts/embed", json!({"inputs": ["a"], "colour": 1}), 422, "invalid_input"),
        ("/v1/models/texts/embed", json!({"inputs": [1]}), 422, "invalid_input"),
        ("/v1/models/nope/embed", json!({"inputs": ["a"]}), 404, "not_found"),
        ("/v1/embeddings", json!({"model": "nope", "input": "a"}), 404, "not_found"),
        ("/v1/embeddings", json!({"model": "texts", "input": [101, 102]}), 422, "invalid_input"),
        ("/v1/embeddings", json!({"model": "texts", "input": []}), 422, "invalid_input"),
        ("/v1/models/texts/rerank", json!({"query": "a", "documents": []}), 422, "invalid_input"),
        ("/v1/models/texts/rerank", json!({"query": "a", "documents": ["b"], "top_n": 0}), 422, "invalid_input"),
        (
            "/v1/models/texts/similarity",
            json!({"source": "far too long a source", "sentences": ["a"]}),
            422,
            "invalid_input",
        ),
    ];
    for (uri, body, status, kind) in cases {
        let reply = post_json(&app, uri, &body).await;
        let message = reply.assert_error(status, kind);
        assert!(!message.is_empty(), "{uri} {body}");
        let template = if uri.starts_with("/v1/models/") {
            format!("/v1/models/{{id}}/{}", uri.rsplit('/').next().expect("a last segment"))
        } else {
            uri.to_owned()
        };
        assert_documented(&template, "POST", reply.status);
    }
}

#[tokio::test]
async fn a_route_of_another_family_is_a_422_naming_the_right_routes() {
    let (fx, _dir) = fixture_with_embedder();
    let (app, _) = ready_app(&fx, &ServerConfig::default());
    let on_classifier = post_json(&app, "/v1/models/digits/embed", &json!({"inputs": ["a"]})).await;
    let message = on_classifier.assert_error(422, "invalid_input");
    assert!(
        message.contains("is of kind `classifier`") && message.contains("POST /v1/models/{id}/classify"),
        "{message}"
    );
    let on_embedder =
        post_json(&app, "/v1/models/texts/classify", &json!({"inputs": [{"pixels": pixel_rows(8, 0.0)}]})).await;
    let message = on_embedder.assert_error(422, "invalid_input");
    assert!(message.contains("is of kind `embedder`") && message.contains("POST /v1/embeddings"), "{message}");
    let detail = get(&app, "/v1/models/texts").await.json();
    assert_eq!(detail["kind"], "embedder");
    assert_eq!(
        detail["embedding"],
        json!({"dimensions": 32, "max_seq_length": 24, "pooling": "mean", "normalize": true})
    );
    assert!(detail.get("labels").is_none(), "{detail}");
}
