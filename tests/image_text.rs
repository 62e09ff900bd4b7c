//! `tandem train-image-text` as a user runs it, at test scale: a few steps on the embedded digits
//! with a tokenizer that spells, `tandem eval --task image-text` on the bundle, and the bundle
//! served: `embed` takes a text and an image in one request, `classify` free-text labels.

use base64::Engine;
use serde_json::json;
use tandem_runtime::testing_text::tiny_spelling_tokenizer_json;

use crate::common::*;

#[test]
fn a_few_steps_train_a_dual_encoder_that_evaluates_and_serves_texts_and_images() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tokenizer = dir.path().join("tokenizer.json");
    std::fs::write(&tokenizer, tiny_spelling_tokenizer_json()).expect("write the tokenizer");
    let bundle = dir.path().join("clip");
    let mut train = tandem();
    train.args(["train-image-text", "--dataset", "digits", "--image-arch", "tiny", "--embed-dim", "8"]);
    train.arg("--tokenizer").arg(&tokenizer);
    train.args(["--text-hidden", "16", "--text-layers", "1", "--text-heads", "2", "--max-seq-length", "16"]);
    train.args(["--epochs", "1", "--batch-size", "64", "--train-limit", "256", "--val-images", "50"]);
    train.args(["--test-images", "50"]).arg("--out").arg(&bundle).args(["--quiet", "--json"]);
    let summary = stdout_json(&run_ok(&mut train));
    assert_eq!(summary["model"], "clip@1", "{summary}");
    assert_eq!(summary["method"], "clip-multi-positive", "{summary}");
    assert_eq!(summary["history"].as_array().map(Vec::len), Some(1), "{summary}");
    assert_eq!(summary["test_n"], 50, "{summary}");
    assert_eq!(manifest(&bundle)["family"]["kind"], "image_text");

    let eval = stdout_json(&run_ok(
        tandem().args(["eval", "--task", "image-text", "--json", "--limit", "40", "--model"]).arg(&bundle),
    ));
    for key in ["i2t_r@1", "i2t_r@5", "t2i_r@1", "t2i_r@5", "zero_shot_accuracy"] {
        let value = eval[key].as_f64().unwrap_or(-1.0);
        assert!((0.0..=1.0).contains(&value), "{key}: {eval}");
    }
    assert_eq!(eval["n"], 40, "{eval}");

    let server = Server::start(&["--model", bundle.to_str().expect("UTF-8 path")]);
    let http = Http::new();
    let digit = digits_test();
    let image = base64::engine::general_purpose::STANDARD.encode(png(digit.image(0), 8, 8));
    let body = json!({"inputs": ["a photo of a 3", {"image": image}]});
    let reply = http.ok(http.client().post(server.url("/v1/models/clip/embed")).json(&body));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let embeddings = reply.json()["embeddings"].as_array().expect("embeddings").clone();
    assert_eq!(embeddings.len(), 2);
    for vector in &embeddings {
        let values: Vec<f64> = vector.as_array().expect("a vector").iter().filter_map(|x| x.as_f64()).collect();
        assert_eq!(values.len(), 8);
        assert!((values.iter().map(|x| x * x).sum::<f64>() - 1.0).abs() < 1e-4, "unit length: {values:?}");
    }

    let labels = ["a photo of a 0", "a photo of a 1", "a photo of a 7"];
    let body = json!({"inputs": [{"image": image}], "labels": labels, "top_k": 2});
    let reply = http.ok(http.client().post(server.url("/v1/models/clip/classify")).json(&body));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let answer = reply.json();
    assert_eq!(answer["model"], "clip@1");
    let predictions = answer["predictions"][0].as_array().expect("predictions");
    assert_eq!(predictions.len(), 2);
    assert!(predictions.iter().all(|p| labels.contains(&p["label"].as_str().unwrap_or(""))), "{answer}");
    let bad = http.ok(http.client().post(server.url("/v1/models/clip/classify")).json(&json!({
        "inputs": [{"image": image}], "labels": ["  "]
    })));
    assert!(assert_error(&bad, 422, "invalid_input").contains("labels[0] is blank"));

    // CPRD: a matcher stage first, then the dual encoder distils its rankings.
    let distilled = dir.path().join("clip-cprd");
    let mut cprd = tandem();
    cprd.args(["train-image-text", "--dataset", "digits", "--image-arch", "tiny", "--embed-dim", "8"]);
    cprd.arg("--tokenizer").arg(&tokenizer);
    cprd.args(["--text-hidden", "16", "--text-layers", "1", "--text-heads", "2", "--max-seq-length", "16"]);
    cprd.args(["--epochs", "1", "--batch-size", "64", "--train-limit", "256", "--val-images", "50"]);
    cprd.args(["--cprd", "--teacher-arch", "tiny", "--teacher-epochs", "1", "--cprd-negatives", "4"]);
    cprd.args(["--test-images", "50"]).arg("--out").arg(&distilled).args(["--quiet", "--json"]);
    let summary = stdout_json(&run_ok(&mut cprd));
    assert_eq!(summary["method"], "clip-multi-positive-cprd", "{summary}");
    let stages: Vec<&str> =
        summary["history"].as_array().expect("history").iter().filter_map(|r| r["stage"].as_str()).collect();
    assert_eq!(stages, ["teacher", "student"], "{summary}");
    assert!(dir.path().join("clip-cprd.teacher.safetensors").exists());
    let refused = run_failing(tandem().args(["train-image-text", "--teacher", "x.safetensors", "--out"]).arg(&bundle));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--cprd"), "{}", show(&refused));
}
