//! The embedder family end to end on a tiny imported sentence-transformers model: import, load,
//! embed, rerank, similarity, batching, truncation, caching and kind checks.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tandem_runtime::bundle::Bundle;
use tandem_runtime::import::{import_sentence_transformers, ImportOptions};
use tandem_runtime::models::sentence_encoder::Pooling;
use tandem_runtime::testing::write_tiny_classifier_bundle;
use tandem_runtime::testing_text::write_tiny_sentence_transformers_dir;
use tandem_runtime::{
    BatchConfig, ClassifyRequest, DelayPolicy, EmbedRequest, Error, RerankRequest, Runtime, RuntimeConfig,
};

const TEXTS: [&str; 6] =
    ["the cat sat", "a dog ran on the mat", "cats", "", "  the  dog  ", "the cat sat on the mat and the dog ran"];

/// A tiny sentence-transformers directory imported as a bundle under `tmp`.
fn tiny_bundle(tmp: &Path, pooling: Pooling, normalize: bool) -> PathBuf {
    let src = tmp.join("st");
    write_tiny_sentence_transformers_dir(&src, 2, pooling, normalize).unwrap();
    let out = tmp.join("bundle");
    let options = ImportOptions { name: "tiny".into(), version: "1".into() };
    import_sentence_transformers(&src, &out, &options).unwrap();
    out
}

fn runtime(dir: &Path, max_batch_size: usize, cache_capacity: u64) -> Runtime {
    let batch = BatchConfig {
        max_batch_size,
        max_batch_delay: Duration::from_millis(20),
        delay_policy: DelayPolicy::Fixed,
        ..Default::default()
    };
    let rt = Runtime::new(RuntimeConfig { batch, cache_capacity });
    rt.load(dir).unwrap();
    rt
}

fn request(texts: &[&str]) -> EmbedRequest {
    EmbedRequest {
        texts: texts.iter().map(|t| (*t).to_owned()).collect(),
        truncate: true,
        normalize: None,
        dimensions: None,
    }
}

#[track_caller]
fn assert_close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len());
    let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    assert!(diff <= tol, "max diff {diff}");
}

#[test]
fn import_keeps_the_architecture_and_drops_unused_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = Bundle::load(&tiny_bundle(tmp.path(), Pooling::Cls, false)).unwrap();
    assert_eq!(bundle.manifest.kind(), "embedder");
    let spec = bundle.manifest.embedder().unwrap();
    assert_eq!((spec.pooling, spec.normalize, spec.architecture.num_hidden_layers), (Pooling::Cls, false, 2));
    let paths: Vec<&str> = bundle.manifest.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["model.safetensors", "tokenizer.json"]);
    assert!(bundle.file("tokenizer.json").is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_embeddings_equal_unbatched_ones_for_every_pooling() {
    for pooling in [Pooling::Mean, Pooling::Cls, Pooling::Max] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tiny_bundle(tmp.path(), pooling, true);
        let single = runtime(&dir, 1, 0);
        let batched = Arc::new(runtime(&dir, 64, 0));
        let together = batched.embed("tiny", request(&TEXTS)).await.unwrap();
        for (text, expected) in TEXTS.iter().zip(&together.embeddings) {
            let alone = single.embed("tiny", request(&[text])).await.unwrap();
            assert_close(&alone.embeddings[0], expected, 1e-5);
            let norm: f32 = expected.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "{pooling:?}: norm {norm}");
        }
    }
}

#[tokio::test]
async fn long_texts_are_truncated_and_counted_or_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(&tiny_bundle(tmp.path(), Pooling::Mean, true), 8, 0);
    let long = "the cat sat on the mat ".repeat(20);
    let res = rt.embed("tiny", request(&[&long, "cats"])).await.unwrap();
    assert_eq!(res.usage.n_truncated, 1);
    let short = rt.embed("tiny", request(&["cats"])).await.unwrap();
    assert_eq!(short.usage.n_truncated, 0);
    assert_eq!(
        res.usage.n_tokens,
        24 + short.usage.n_tokens,
        "the long text counts the limit, special tokens included"
    );
    let refused = rt.embed("tiny", EmbedRequest { truncate: false, ..request(&["cats", &long]) }).await.unwrap_err();
    assert!(
        matches!(&refused, Error::InvalidInput(m) if m.starts_with("input 1: ") && m.contains("limit of 24")),
        "{refused}"
    );
}

#[tokio::test]
async fn dimensions_truncate_and_renormalise_and_normalize_can_be_turned_off() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(&tiny_bundle(tmp.path(), Pooling::Mean, true), 8, 0);
    let full = rt.embed("tiny", request(&["the cat"])).await.unwrap().embeddings.remove(0);
    let cut = rt.embed("tiny", EmbedRequest { dimensions: Some(8), ..request(&["the cat"]) }).await.unwrap();
    let cut = &cut.embeddings[0];
    assert_eq!(cut.len(), 8);
    let norm8: f32 = full[..8].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert_close(cut, &full[..8].iter().map(|x| x / norm8).collect::<Vec<_>>(), 1e-5);
    let raw = rt.embed("tiny", EmbedRequest { normalize: Some(false), ..request(&["the cat"]) }).await.unwrap();
    let raw_norm: f32 = raw.embeddings[0].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert_close(&raw.embeddings[0].iter().map(|x| x / raw_norm).collect::<Vec<_>>(), &full, 1e-5);
    for bad in [0, 33] {
        let err = rt.embed("tiny", EmbedRequest { dimensions: Some(bad), ..request(&["x"]) }).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{bad}: {err}");
    }
    assert!(matches!(rt.embed("tiny", request(&[])).await, Err(Error::InvalidInput(_))));
}

#[tokio::test]
async fn rerank_sorts_by_cosine_and_similarity_keeps_order() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(&tiny_bundle(tmp.path(), Pooling::Mean, true), 8, 0);
    let docs: Vec<String> = ["a dog ran", "the cat sat", "mat", "the cat sat on the mat"].map(String::from).to_vec();
    let sims = rt.similarity("tiny", "the cat sat".into(), docs.clone()).await.unwrap();
    assert!((sims.scores[1] - 1.0).abs() < 1e-5, "identical text scores 1: {:?}", sims.scores);
    let ranked = rt
        .rerank(
            "tiny",
            RerankRequest { query: "the cat sat".into(), documents: docs.clone(), top_n: Some(3), truncate: true },
        )
        .await
        .unwrap();
    assert_eq!(ranked.results.len(), 3);
    assert_eq!(ranked.results[0].index, 1);
    assert!(ranked.results.windows(2).all(|w| w[0].score >= w[1].score));
    for r in &ranked.results {
        assert!((r.score - sims.scores[r.index]).abs() < 1e-6);
    }
    let none = RerankRequest { query: "x".into(), documents: Vec::new(), top_n: None, truncate: true };
    assert!(matches!(rt.rerank("tiny", none).await, Err(Error::InvalidInput(_))));
}

#[tokio::test]
async fn repeated_texts_are_cache_hits() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(&tiny_bundle(tmp.path(), Pooling::Mean, true), 8, 100);
    let first = rt.embed("tiny", request(&["the cat", "a dog"])).await.unwrap();
    let before = rt.cache_stats();
    let again = rt.embed("tiny", EmbedRequest { dimensions: Some(4), ..request(&["a dog", "the cat"]) }).await.unwrap();
    let after = rt.cache_stats();
    assert_eq!(after.hits - before.hits, 2, "normalize and dimensions apply after the cache");
    assert_eq!(again.embeddings[1].len(), 4);
    assert_eq!(first.embeddings.len(), 2);
}

#[tokio::test]
async fn each_family_refuses_the_others_models() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(&tiny_bundle(tmp.path(), Pooling::Mean, true), 8, 0);
    rt.load(&write_tiny_classifier_bundle(tmp.path(), "digits", "1").unwrap()).unwrap();
    let err = rt.embed("digits", request(&["x"])).await.unwrap_err();
    assert!(matches!(&err, Error::WrongKind { kind, expected: "embedder", .. } if kind == "classifier"), "{err}");
    let image = tandem_runtime::image::GrayImage::from_rows(&vec![vec![0.0; 8]; 8]).unwrap();
    let err = rt.classify("tiny", ClassifyRequest { images: vec![image], top_k: 1 }).await.unwrap_err();
    assert!(matches!(&err, Error::WrongKind { kind, expected: "classifier", .. } if kind == "embedder"), "{err}");
    rt.warmup().unwrap();
}

#[test]
fn a_tampered_tokenizer_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_bundle(tmp.path(), Pooling::Mean, true);
    std::fs::write(dir.join("tokenizer.json"), b"{}").unwrap();
    let err = Bundle::load(&dir).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json: sha256 mismatch"), "{err}");
}
