//! `tandem eval --task retrieval` as a user runs it: BM25 and an imported embedder on a tiny
//! WordNet in the real file format, the JSON it prints, the limits and the refusals; and the real
//! WordNet 3.0 as `tandem data fetch wordnet` installs it, with its counts and its split.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tandem_runtime::models::sentence_encoder::Pooling;
use tandem_runtime::testing_text::{write_tiny_cross_encoder_bundle, write_tiny_sentence_transformers_dir};
use tandem_training::data::wordnet::WordNet;
use tandem_training::data::Split;
use tandem_training::retrieval::Benchmark;

use crate::common::*;

/// The keys every retrieval report has, by the names the benchmark table uses.
const KEYS: [&str; 6] = ["ndcg@10", "recall@1", "recall@10", "mrr@10", "queries_per_s", "n"];

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("training/tests/fixtures/wordnet")
}

/// `tandem eval --task retrieval --json` on the fixture with extra arguments.
fn eval_fixture(model: &Path, extra: &[&str]) -> std::process::Command {
    let mut cmd = tandem();
    cmd.args(["eval", "--task", "retrieval", "--json", "--wordnet-dir"])
        .arg(fixture())
        .arg("--model")
        .arg(model)
        .args(extra);
    cmd
}

/// Checks the six keys and that each figure is a fraction; returns the report.
#[track_caller]
fn report(out: &std::process::Output) -> Value {
    let report = stdout_json(out);
    for key in KEYS {
        assert!(report[key].is_number(), "{key} missing from {report}");
    }
    for key in ["ndcg@10", "recall@1", "recall@10", "mrr@10"] {
        let v = report[key].as_f64().expect("a number");
        assert!((0.0..=1.0).contains(&v), "{key} = {v} in {report}");
    }
    assert!(report["recall@1"].as_f64() <= report["recall@10"].as_f64(), "{report}");
    assert!(report["queries_per_s"].as_f64().is_some_and(|q| q > 0.0), "{report}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("CPU: ") && stderr.contains("ISA: "), "the machine goes to stderr:\n{stderr}");
    report
}

fn import_tiny_embedder(root: &Path) -> PathBuf {
    let hf = root.join("hf");
    write_tiny_sentence_transformers_dir(&hf, 1, Pooling::Mean, true).expect("write a tiny model");
    let bundle = root.join("tiny");
    run_ok(tandem().args(["import", "hf"]).arg(&hf).arg("--out").arg(&bundle).args(["--name", "tiny"]));
    bundle
}

#[test]
fn bm25_and_an_embedder_on_a_tiny_wordnet() {
    let out = run_ok(&mut eval_fixture(Path::new("bm25"), &[]));
    let bm25 = report(&out);
    // The fixture's five test synsets have 21 queries; the corpus is all 16 synsets.
    assert_eq!((bm25["n"].as_u64(), bm25["n_docs"].as_u64()), (Some(21), Some(16)), "{bm25}");
    assert_eq!(bm25["model"], "bm25");
    assert!(bm25["params"].is_null(), "{bm25}");
    let first_four = report(&run_ok(&mut eval_fixture(Path::new("bm25"), &["--limit-queries", "4"])));
    assert_eq!(first_four["n"], 4);

    let dir = tempfile::tempdir().expect("temp dir");
    let bundle = import_tiny_embedder(dir.path());
    let args = ["--corpus-limit", "10", "--reranker"];
    let mut cmd = eval_fixture(&bundle, &args);
    cmd.arg(&bundle).args(["--rerank-top", "5"]);
    let dense = report(&run_ok(&mut cmd));
    assert_eq!(dense["model"], "tiny@1");
    assert_eq!(dense["reranker"], "tiny@1");
    assert_eq!(dense["rerank_top"], 5);
    // The ten documents judged for the 21 queries, and nothing else: all of them are in the top 10.
    assert_eq!(dense["n_docs"], 10);
    assert_eq!(dense["recall@10"], 1.0, "{dense}");

    // A cross-encoder reranks the same way.
    let pairs = write_tiny_cross_encoder_bundle(dir.path(), "pairs", "1").expect("a tiny cross-encoder");
    let mut cmd = eval_fixture(&bundle, &["--reranker"]);
    cmd.arg(&pairs).args(["--rerank-top", "5"]);
    let crossed = report(&run_ok(&mut cmd));
    assert_eq!((&crossed["reranker"], &crossed["rerank_top"]), (&Value::from("pairs@1"), &Value::from(5)));

    // Without --json: one readable line of figures.
    let out = run_ok(tandem().args(["eval", "--task", "retrieval", "--model", "bm25", "--wordnet-dir"]).arg(fixture()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("bm25: WordNet test nDCG@10 "), "{text}");
    assert!(text.contains("on 21 queries over 16 documents"), "{text}");
}

#[test]
fn retrieval_arguments_are_checked() {
    let refused = |cmd: &mut std::process::Command, why: &str| {
        let out = run_failing(cmd);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(why), "expected {why:?} in\n{stderr}");
    };
    refused(
        &mut eval_fixture(Path::new("bm25"), &["--corpus-limit", "9"]),
        "10 judged documents, more than the corpus limit of 9",
    );
    refused(
        &mut eval_fixture(Path::new("bm25"), &["--dataset", "mnist"]),
        "--dataset mnist applies to --task classification",
    );
    refused(
        tandem().args(["eval", "--model", "bm25", "--corpus-limit", "5"]),
        "--corpus-limit applies to --task retrieval only",
    );
    refused(tandem().args(["eval", "--task", "retrieval", "--model", "bm25", "--rerank-top", "5"]), "--reranker");
    let empty = tempfile::tempdir().expect("temp dir");
    refused(
        tandem().args(["eval", "--task", "retrieval", "--model", "bm25", "--data-dir"]).arg(empty.path()),
        "run `tandem data fetch wordnet` first",
    );
}

#[test]
fn real_wordnet_fetches_parses_and_splits_as_documented() {
    let data_dir =
        std::env::var_os("TANDEM_DATA_DIR").map_or_else(tandem_training::data::default_data_dir, PathBuf::from);
    let out = run_ok(tandem().args(["data", "fetch", "wordnet", "--data-dir"]).arg(&data_dir));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("wordnet: ") && printed.contains("(4 files verified)"), "{printed}");

    let wordnet = WordNet::load(&data_dir).expect("WordNet loads after fetching");
    let synsets = &wordnet.synsets;
    assert_eq!(synsets.len(), 117_659);
    assert_eq!(synsets.iter().filter(|s| s.gloss.contains('"')).count(), 32_930);
    assert_eq!(synsets.iter().filter(|s| !s.examples.is_empty()).count(), 32_927);
    assert_eq!(synsets.iter().map(|s| s.examples.len()).sum::<usize>(), 48_345);
    assert_eq!(synsets.iter().map(|s| s.lemmas.len()).sum::<usize>(), 206_978);
    let mut by_text: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for s in synsets {
        *by_text.entry(s.definition.as_str()).or_default() += 1;
    }
    let shared: Vec<usize> = by_text.values().copied().filter(|&n| n > 1).collect();
    assert_eq!((shared.len(), shared.iter().sum::<usize>()), (668, 1_630), "definitions shared by several synsets");

    // The counts below are those benches/wordnet_bm25_check.py computes without Tandem.
    let benchmark = Benchmark::new(&wordnet);
    let synsets_in = |split: Split| (0..benchmark.len()).filter(|&s| benchmark.split_of(s) == split).count();
    assert_eq!([synsets_in(Split::Train), synsets_in(Split::Val), synsets_in(Split::Test)], [112_889, 2_431, 2_339]);
    assert_eq!(benchmark.all_queries().len(), 255_317);
    let queries_in =
        |split: Split| benchmark.all_queries().iter().filter(|q| benchmark.split_of(q.synset) == split).count();
    assert_eq!((queries_in(Split::Val), queries_in(Split::Test)), (5_351, 4_970));
    let test = benchmark.queries(Split::Test);
    let val = benchmark.queries(Split::Val);
    assert_eq!((test.len(), val.len(), benchmark.queries(Split::Train).len()), (2_000, 2_000, 244_996));
    let held_out: HashSet<String> = benchmark
        .all_queries()
        .iter()
        .filter(|q| benchmark.split_of(q.synset) != Split::Train)
        .map(|q| q.text.to_lowercase())
        .collect();
    let held_out_docs: HashSet<String> = (0..benchmark.len())
        .filter(|&s| benchmark.split_of(s) != Split::Train)
        .map(|s| benchmark.docs[s].to_lowercase())
        .collect();
    let pairs = benchmark.training_pairs();
    assert_eq!(pairs.len(), 232_129);
    for pair in &pairs {
        assert_eq!(benchmark.split_of(pair.synset), Split::Train);
        assert!(!held_out.contains(&pair.query.to_lowercase()), "{pair:?}");
        assert!(!held_out_docs.contains(&pair.positive.to_lowercase()), "{pair:?}");
    }
    for q in test.iter().chain(&val) {
        assert_ne!(benchmark.split_of(q.synset), Split::Train, "{q:?}");
    }

    // The BM25 baseline on the whole corpus through the binary, as BENCHMARKS.md runs it.
    let out = run_ok(
        tandem().args(["eval", "--task", "retrieval", "--model", "bm25", "--json", "--data-dir"]).arg(&data_dir),
    );
    let bm25 = report(&out);
    assert_eq!((bm25["n"].as_u64(), bm25["n_docs"].as_u64()), (Some(2_000), Some(117_659)), "{bm25}");
}
