//! `tandem train-cross-encoder` as a user runs it: a tiny imported embedder starts the model and
//! mines its negatives on the tiny WordNet, a few steps train it, and the exported bundle serves
//! both rerank routes and reranks in `tandem eval`.

use std::path::{Path, PathBuf};

use serde_json::json;
use tandem_runtime::models::sentence_encoder::Pooling;
use tandem_runtime::testing_text::write_tiny_sentence_transformers_dir;

use crate::common::*;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("training/tests/fixtures/wordnet")
}

#[test]
fn a_trained_cross_encoder_exports_and_reranks_over_http() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hf = dir.path().join("hf");
    write_tiny_sentence_transformers_dir(&hf, 1, Pooling::Mean, true).expect("write a tiny model");
    let embedder = dir.path().join("tiny");
    run_ok(tandem().args(["import", "hf"]).arg(&hf).arg("--out").arg(&embedder).args(["--name", "tiny"]));

    let bundle = dir.path().join("pairs");
    let mut train = tandem();
    train.arg("train-cross-encoder").arg("--init").arg(&embedder).arg("--miner").arg(&embedder);
    train.args(["--negatives", "2", "--mine-depth", "10", "--epochs", "2", "--batch-size", "4", "--lr", "1e-3"]);
    train.args(["--val-queries", "10", "--val-corpus", "100", "--rerank-top", "5", "--test-queries", "5"]);
    train.arg("--wordnet-dir").arg(fixture()).arg("--out").arg(&bundle).args(["--quiet", "--json"]);
    let summary = stdout_json(&run_ok(&mut train));
    assert_eq!(summary["model"], "pairs@1", "{summary}");
    assert_eq!(summary["method"], "cross-encoder-listwise-hard-negatives", "{summary}");
    assert_eq!(summary["history"].as_array().map(Vec::len), Some(2), "{summary}");
    assert_eq!(summary["test_n"], 5, "{summary}");
    assert_eq!(summary["hyperparameters"]["negatives"], 2, "{summary}");
    assert_eq!(summary["hyperparameters"]["random_negatives"], 4, "the default mixes in random negatives: {summary}");
    assert_eq!(manifest(&bundle)["family"]["kind"], "cross_encoder");

    let eval = run_ok(
        tandem()
            .args(["eval", "--task", "retrieval", "--json", "--wordnet-dir"])
            .arg(fixture())
            .arg("--model")
            .arg(&embedder)
            .arg("--reranker")
            .arg(&bundle)
            .args(["--rerank-top", "5"]),
    );
    assert_eq!(stdout_json(&eval)["reranker"], "pairs@1");

    let server = Server::start(&["--model", bundle.to_str().expect("UTF-8 path")]);
    let http = Http::new();
    let documents = ["a dog", "the cat sat on the mat", "a red car"];
    let body = json!({"query": "the cat", "documents": documents, "return_documents": true});
    let own = http.ok(http.client().post(server.url("/v1/models/pairs/rerank")).json(&body)).json();
    let results = own["results"].as_array().expect("results");
    assert_eq!(results.len(), 3, "{own}");
    let scores: Vec<f64> = results.iter().map(|r| r["score"].as_f64().expect("a score")).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{own}");
    let compat = json!({"model": "pairs", "query": "the cat", "documents": documents, "top_n": 1});
    let compat = http.ok(http.client().post(server.url("/v1/rerank")).json(&compat)).json();
    assert_eq!(compat["results"].as_array().map(Vec::len), Some(1), "{compat}");
    assert_eq!(compat["results"][0]["index"], results[0]["index"], "{compat}");
    let embed = http.send(http.client().post(server.url("/v1/models/pairs/embed")).json(&json!({"inputs": ["a"]})));
    assert_error(&embed.expect("an answer"), 422, "invalid_input");
    let listed = http.get(&server.url("/v1/models")).expect("an answer").json();
    assert_eq!(listed["models"][0]["kind"], "cross_encoder", "{listed}");
}
