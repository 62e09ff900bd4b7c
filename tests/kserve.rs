//! Triton's own Python client, `tritonclient[http]`, unchanged against a live `tandem serve` over
//! the Open Inference Protocol (`/v2`): probes, metadata and inference for a classifier and an
//! embedder, in JSON and in binary (`tests/python/tritonclient_check.py`), every answer held
//! against what Tandem's own routes answer for the same inputs, and errors read as the client
//! reads them.

use serde_json::{json, Value};
use tandem_runtime::models::sentence_encoder::Pooling;
use tandem_runtime::testing_text::write_tiny_sentence_transformers_dir;

use crate::common::*;

/// Largest difference allowed between an element over `/v2` and over Tandem's own routes: the
/// same model on the same inputs, so only float printing in JSON may differ.
const TOLERANCE: f64 = 1e-6;

/// Three 8x8 grayscale images of whole pixel values, so that `UINT8` carries them exactly.
fn images() -> Vec<Vec<Vec<u32>>> {
    (0..3u32)
        .map(|seed| (0..8).map(|y| (0..8).map(|x| (x * 29 + y * 13 + seed * 71) % 256).collect()).collect())
        .collect()
}

fn matrix(value: &Value) -> Vec<Vec<f64>> {
    value
        .as_array()
        .expect("a list of rows")
        .iter()
        .map(|row| row.as_array().expect("a row").iter().map(|x| x.as_f64().expect("a number")).collect())
        .collect()
}

#[track_caller]
fn assert_matches(what: &str, served: &[Vec<f64>], reference: &[Vec<f64>]) {
    assert_eq!(served.len(), reference.len(), "{what}");
    for (i, (s, r)) in served.iter().zip(reference).enumerate() {
        assert_eq!(s.len(), r.len(), "{what}: row {i}");
        for (j, (a, b)) in s.iter().zip(r).enumerate() {
            assert!((a - b).abs() <= TOLERANCE, "{what}: row {i}, element {j}: {a} over /v2, {b} over Tandem's routes");
        }
    }
}

#[test]
fn tritonclient_infers_in_json_and_binary_as_tandems_own_routes_answer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let digits = tandem_runtime::testing::write_tiny_classifier_bundle(dir.path(), "digits", "1.0.0")
        .expect("a tiny classifier bundle");
    let st = dir.path().join("st");
    write_tiny_sentence_transformers_dir(&st, 2, Pooling::Mean, true).expect("a tiny sentence-transformers directory");
    let texts_bundle = dir.path().join("texts");
    run_ok(tandem().args(["import", "hf"]).arg(&st).arg("--out").arg(&texts_bundle).args(["--name", "texts"]));
    let server = Server::start(&[
        "--model",
        digits.to_str().expect("UTF-8 path"),
        "--model",
        texts_bundle.to_str().expect("UTF-8 path"),
    ]);

    let images = images();
    let texts = ["the cat sat on the mat", "émigré ☕ naïve café", "x"];
    let tensors: Vec<Value> = images.iter().map(|rows| json!([rows])).collect();
    let checked = python(
        "tritonclient_check.py",
        &[&format!("127.0.0.1:{}", server.port), "digits", "texts", "1"],
        &json!({"images": tensors, "texts": texts}),
    );

    // Tandem's own routes on the same inputs: every probability, rebuilt in label order.
    let http = Http::new();
    let detail = http.ok(http.client().get(server.url("/v1/models/digits"))).json();
    let labels: Vec<&str> =
        detail["labels"].as_array().expect("labels").iter().map(|l| l.as_str().expect("a label")).collect();
    let inputs: Vec<Value> = images.iter().map(|rows| json!({"pixels": rows})).collect();
    let body = json!({"inputs": inputs, "top_k": labels.len()});
    let classified = http.ok(http.client().post(server.url("/v1/models/digits/classify")).json(&body)).json();
    let probabilities: Vec<Vec<f64>> = classified["predictions"]
        .as_array()
        .expect("predictions")
        .iter()
        .map(|predictions| {
            let mut row = vec![f64::NAN; labels.len()];
            for p in predictions.as_array().expect("a list") {
                let index = labels.iter().position(|l| p["label"] == *l).expect("a known label");
                row[index] = p["score"].as_f64().expect("a score");
            }
            row
        })
        .collect();
    for call in ["json", "binary", "uint8", "default"] {
        assert_matches(&format!("classifier, {call}"), &matrix(&checked["classifier"][call]), &probabilities);
    }

    let embedded =
        http.ok(http.client().post(server.url("/v1/models/texts/embed")).json(&json!({"inputs": texts}))).json();
    let embeddings = matrix(&embedded["embeddings"]);
    for call in ["json", "binary"] {
        assert_matches(&format!("embedder, {call}"), &matrix(&checked["embedder"][call]), &embeddings);
    }

    let metadata = &checked["model_metadata"];
    assert_eq!(metadata["digits"]["inputs"][0]["name"], "images", "{metadata}");
    assert_eq!(metadata["digits"]["outputs"][0]["shape"], json!([-1, labels.len()]), "{metadata}");
    assert_eq!(metadata["texts"]["inputs"][0]["datatype"], "BYTES", "{metadata}");
    assert_eq!(metadata["texts"]["versions"], json!(["1"]), "{metadata}");

    // The client reads `error` as a string; it would raise on anything else before these checks.
    let errors = &checked["errors"];
    assert_eq!(errors["datatype"]["status"], "422", "{errors}");
    let message = errors["datatype"]["message"].as_str().expect("a string message");
    assert!(message.contains("datatype INT32 is not accepted; send FP32 or UINT8"), "{message}");
    assert_eq!(errors["unknown_model"]["status"], "404", "{errors}");
    println!("tritonclient {} agrees with Tandem's own routes", checked["client_version"]);
}
