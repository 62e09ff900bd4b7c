//! The real all-MiniLM-L6-v2, as a new user gets it: `tandem data fetch minilm`, `tandem import hf`,
//! `tandem serve`. Its embeddings are held against an independent float64 numpy forward pass of the
//! same weights (`tests/python/minilm_reference.py`, no candle), through Tandem's own routes and the
//! official `openai` Python client. A copy cut to 2 layers with CLS pooling, written here, checks
//! that layers, pooling and sizes come from the directory rather than from MiniLM's numbers.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tandem_runtime::models::sentence_encoder::Pooling;
use tandem_runtime::testing_text::cut_sentence_transformers_dir;

use crate::common::*;

/// Cosine every served embedding must reach against the reference.
const MIN_COSINE: f64 = 0.9999;

/// Unicode, accents, emoji, one character, padding whitespace, and a text past the 256-token limit.
fn texts() -> Vec<String> {
    let mut texts: Vec<String> = [
        "A man is playing a guitar on the street.",
        "Crème brûlée à la façon de grand-mère, naïve café déjà vu",
        "東京は日本の首都です。Москва — столица России. Ελληνικά",
        "I love pizza 🍕🔥 and rockets 🚀!",
        "x",
        "   padded on both sides, with a tab\tand a newline\n   ",
        "",
    ]
    .map(String::from)
    .to_vec();
    texts.push("The quick brown fox jumps over the lazy dog while the sun sets behind the hills. ".repeat(30));
    texts
}

/// The fetched MiniLM directory, fetching it (idempotently, checksums verified) if needed.
fn minilm_dir() -> PathBuf {
    let data_dir =
        std::env::var_os("TANDEM_DATA_DIR").map_or_else(tandem_training::data::default_data_dir, PathBuf::from);
    run_ok(tandem().args(["data", "fetch", "minilm", "--data-dir"]).arg(&data_dir));
    tandem_training::data::installed_dir(tandem_training::data::ModelName::MiniLm, &data_dir)
        .expect("minilm is installed after fetching")
}

fn vectors(value: &Value) -> Vec<Vec<f64>> {
    value
        .as_array()
        .expect("a list of vectors")
        .iter()
        .map(|v| v.as_array().expect("a vector").iter().map(|x| x.as_f64().expect("a number")).collect())
        .collect()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

#[track_caller]
fn assert_matches(what: &str, served: &[Vec<f64>], reference: &[Vec<f64>]) {
    assert_eq!(served.len(), reference.len(), "{what}");
    for (i, (s, r)) in served.iter().zip(reference).enumerate() {
        assert_eq!(s.len(), r.len(), "{what}: text {i}");
        let c = cosine(s, r);
        assert!(c >= MIN_COSINE, "{what}: text {i} has cosine {c} to the reference");
    }
}

fn import(src: &Path, out: &Path, name: &str) {
    run_ok(tandem().args(["import", "hf"]).arg(src).arg("--out").arg(out).args(["--name", name]));
}

#[test]
fn minilm_served_as_fetched_matches_an_independent_forward_pass() {
    let minilm = minilm_dir();
    let tmp = tempfile::tempdir().expect("temp dir");
    let cut = tmp.path().join("minilm-2-cls");
    cut_sentence_transformers_dir(&minilm, &cut, 2, Pooling::Cls).expect("cut MiniLM to 2 layers");
    let (full_bundle, cut_bundle) = (tmp.path().join("full"), tmp.path().join("cut"));
    import(&minilm, &full_bundle, "minilm");
    import(&cut, &cut_bundle, "minilm-2-cls");
    let cut_manifest = manifest(&cut_bundle);
    assert_eq!(cut_manifest["family"]["architecture"]["num_hidden_layers"], 2);
    assert_eq!(cut_manifest["family"]["pooling"], "cls");

    let server = Server::start(&[
        "--model",
        full_bundle.to_str().expect("UTF-8 path"),
        "--model",
        cut_bundle.to_str().expect("UTF-8 path"),
    ]);
    let http = Http::new();
    let texts = texts();
    for (model, dir) in [("minilm", &minilm), ("minilm-2-cls", &cut)] {
        let reference = python("minilm_reference.py", &[dir.to_str().expect("UTF-8 path")], &json!(texts));
        let expected = vectors(&reference["embeddings"]);
        let url = server.url(&format!("/v1/models/{model}/embed"));

        // All texts in one request share batches; one text per request runs alone.
        let together = http.ok(http.client().post(&url).json(&json!({"inputs": texts}))).json();
        assert_matches(&format!("{model}, batched"), &vectors(&together["embeddings"]), &expected);
        let n_tokens: u64 = reference["n_tokens"].as_array().expect("n_tokens").iter().filter_map(Value::as_u64).sum();
        assert_eq!(together["usage"]["prompt_tokens"], n_tokens, "{model}: token counts agree with the reference");
        assert_eq!(together["usage"]["truncated_inputs"], 1, "{model}: the long text was truncated");
        let mut alone = Vec::new();
        for text in &texts {
            let one = http.ok(http.client().post(&url).json(&json!({"inputs": [text]}))).json();
            alone.extend(vectors(&one["embeddings"]));
        }
        assert_matches(&format!("{model}, one at a time"), &alone, &expected);
        for (a, b) in alone.iter().zip(vectors(&together["embeddings"])) {
            assert!(cosine(a, &b) > 0.999_999, "{model}: batched and unbatched embeddings differ");
        }

        let refused = http.send(http.client().post(&url).json(&json!({"inputs": [texts[7]], "truncate": false})));
        assert_error(&refused.expect("an answer"), 422, "invalid_input");
    }

    // The official client, unchanged, against the OpenAI-compatible route.
    let reference = python("minilm_reference.py", &[minilm.to_str().expect("UTF-8 path")], &json!(texts));
    let expected = vectors(&reference["embeddings"]);
    let checked = python("openai_client_check.py", &[&server.url(""), "minilm", "-"], &json!(texts));
    let calls = &checked["calls"];
    for call in ["list_default", "list_float", "list_base64"] {
        assert_matches(&format!("openai client, {call}"), &vectors(&calls[call]["embeddings"]), &expected);
    }
    assert_matches("openai client, single string", &vectors(&calls["single"]["embeddings"]), &expected[..1]);
    let cut_128: Vec<Vec<f64>> = expected
        .iter()
        .map(|v| {
            let head = &v[..128];
            let norm = head.iter().map(|x| x * x).sum::<f64>().sqrt();
            head.iter().map(|x| x / norm).collect()
        })
        .collect();
    assert_matches("openai client, dimensions 128", &vectors(&calls["dimensions_128"]["embeddings"]), &cut_128);

    // Rerank returns every document, sorted by score, the relevant one first.
    let documents = ["Stock markets fell sharply today.", "Cats enjoy eating fish.", "The train leaves at noon."];
    let body = json!({"query": "What do cats like to eat?", "documents": documents, "return_documents": true});
    let ranked = http.ok(http.client().post(server.url("/v1/models/minilm/rerank")).json(&body)).json();
    let results = ranked["results"].as_array().expect("results");
    assert_eq!(results.len(), 3, "{ranked}");
    assert_eq!(results[0]["index"], 1, "{ranked}");
    assert_eq!(results[0]["document"], documents[1], "{ranked}");
    let scores: Vec<f64> = results.iter().map(|r| r["score"].as_f64().expect("score")).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{ranked}");
    let compat = json!({"model": "minilm", "query": "What do cats like to eat?", "documents": documents, "top_n": 1});
    let compat = http.ok(http.client().post(server.url("/v1/rerank")).json(&compat)).json();
    assert_eq!(compat["results"][0]["index"], 1, "{compat}");
    assert!((compat["results"][0]["relevance_score"].as_f64().expect("score") - scores[0]).abs() < 1e-6);
}
