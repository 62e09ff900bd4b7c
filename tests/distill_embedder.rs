//! `tandem distill-embedder` and `tandem train-ar2` as a user runs them on the tiny WordNet: a
//! student cut from a tiny teacher by embedding distillation, then continued with score KL and
//! CPRD against a cross-encoder trained here, and two AR2 rounds; every bundle exports, and the
//! students serve `embed` over HTTP.

use std::path::{Path, PathBuf};

use serde_json::json;
use tandem_runtime::models::sentence_encoder::Pooling;
use tandem_runtime::testing_text::write_tiny_sentence_transformers_dir;

use crate::common::*;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("training/tests/fixtures/wordnet")
}

/// The flags every run here shares: a tiny validation and test on the tiny WordNet.
fn tiny(cmd: &mut std::process::Command, out: &Path) {
    cmd.args(["--val-queries", "10", "--val-corpus", "100", "--test-queries", "5", "--quiet", "--json"]);
    cmd.arg("--wordnet-dir").arg(fixture()).arg("--out").arg(out);
}

#[test]
fn students_distil_by_every_method_and_serve() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hf = dir.path().join("hf");
    write_tiny_sentence_transformers_dir(&hf, 2, Pooling::Mean, true).expect("write a tiny model");
    let teacher = dir.path().join("teacher");
    run_ok(tandem().args(["import", "hf"]).arg(&hf).arg("--out").arg(&teacher).args(["--name", "teacher"]));

    let student = dir.path().join("student");
    let mut cut = tandem();
    cut.arg("distill-embedder").arg("--teacher").arg(&teacher);
    cut.args(["--layers", "1", "--vocab", "40", "--epochs", "2", "--batch-size", "8", "--lr", "1e-3", "--half"]);
    tiny(&mut cut, &student);
    let summary = stdout_json(&run_ok(&mut cut));
    assert_eq!(summary["method"], "distill-embedding-cosine", "{summary}");
    let family = &manifest(&student)["family"];
    assert_eq!((family["kind"].as_str(), family["architecture"]["vocab_size"].as_u64()), (Some("embedder"), Some(40)));

    let cross = dir.path().join("cross");
    let mut train = tandem();
    train.arg("train-cross-encoder").arg("--init").arg(&teacher).arg("--miner").arg(&teacher);
    train.args(["--negatives", "2", "--mine-depth", "10", "--batch-size", "4", "--rerank-top", "5"]);
    tiny(&mut train, &cross);
    run_ok(&mut train);

    for (method, extra) in [("score-kl", vec![]), ("cprd", vec!["--validity", "threshold", "--cprd-threshold", "-100"])]
    {
        let out = dir.path().join(method);
        let mut rank = tandem();
        rank.arg("distill-embedder").arg("--teacher").arg(&teacher).arg("--init").arg(&student);
        rank.arg("--cross-encoder").arg(&cross).args(["--method", method, "--negatives", "3", "--batch-size", "4"]);
        rank.args(&extra);
        tiny(&mut rank, &out);
        let summary = stdout_json(&run_ok(&mut rank));
        assert!(summary["method"].as_str().is_some_and(|m| m.starts_with("distill-")), "{summary}");
        assert!(summary["history"][0]["extra"]["hard_negatives_per_pair"].is_number(), "{summary}");
    }
    // A rank method without its cross-encoder is refused before anything runs.
    let refused = tandem()
        .arg("distill-embedder")
        .arg("--teacher")
        .arg(&teacher)
        .args(["--layers", "0", "--method", "cprd"])
        .output()
        .expect("run");
    assert!(!refused.status.success());

    let ar2 = dir.path().join("ar2");
    let mut rounds = tandem();
    rounds.arg("train-ar2").arg("--retriever").arg(&student).arg("--ranker-init").arg(&cross);
    rounds.args(["--rounds", "2", "--negatives", "2", "--ranker-batch-size", "4", "--retriever-batch-size", "4"]);
    rounds.args(["--rerank-top", "5"]);
    tiny(&mut rounds, &ar2);
    let report = stdout_json(&run_ok(&mut rounds));
    assert_eq!(report["rounds"].as_array().map(Vec::len), Some(2), "{report}");
    assert_eq!(manifest(&ar2.join("round-2-ranker"))["family"]["kind"], "cross_encoder");

    // The speed comparison a student's target is stated in: teacher and student take turns on
    // the same definitions, and every ratio is to the first model; a cross-encoder is refused.
    let mut speed = tandem();
    speed.args(["bench", "embed-speed", "--texts", "12", "--batch", "4", "--rounds", "2", "--json", "--models"]);
    speed.arg(format!("{},{}", teacher.display(), student.display())).arg("--wordnet-dir").arg(fixture());
    let report = stdout_json(&run_ok(&mut speed));
    let rows = report["rows"].as_array().expect("one row per model");
    assert_eq!(rows.len(), 2, "{report}");
    assert_eq!((rows[0]["model"].as_str(), rows[1]["model"].as_str()), (Some("teacher@1"), Some("student@1")));
    assert_eq!(rows[0]["ratio_to_first"], 1.0, "{report}");
    assert!(rows[1]["sentences_per_s"].as_f64().is_some_and(|r| r > 0.0), "{report}");
    assert_eq!(rows[1]["rounds"].as_array().map(Vec::len), Some(2), "{report}");
    assert_eq!(report["texts"], 12, "{report}");
    let mut refused = tandem();
    refused.args(["bench", "embed-speed", "--models"]).arg(format!("{},{}", teacher.display(), cross.display()));
    let output = refused.arg("--wordnet-dir").arg(fixture()).output().expect("run");
    assert!(!output.status.success() && String::from_utf8_lossy(&output.stderr).contains("not an embedder"));

    let served = dir.path().join("cprd");
    let server = Server::start(&["--model", served.to_str().expect("UTF-8 path")]);
    let http = Http::new();
    let body = json!({"inputs": ["a dog", "the cat sat on the mat"]});
    let answer = http.ok(http.client().post(server.url("/v1/models/cprd/embed")).json(&body)).json();
    assert_eq!(answer["embeddings"].as_array().map(Vec::len), Some(2), "{answer}");
}
