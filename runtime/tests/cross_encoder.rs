//! The cross-encoder family on the tiny bundle: reranking through the shared request path
//! (batching, caching, truncation), scores equal to the model run directly, and the kind checks
//! of every text entry point.

use std::path::Path;
use std::time::Duration;

use candle_core::Device;
use tandem_runtime::bundle::Bundle;
use tandem_runtime::models::cross_encoder::CrossEncoder;
use tandem_runtime::models::sentence_encoder::SegmentedIds;
use tandem_runtime::testing::write_tiny_classifier_bundle;
use tandem_runtime::testing_text::write_tiny_cross_encoder_bundle;
use tandem_runtime::text::TextTokenizer;
use tandem_runtime::{BatchConfig, DelayPolicy, EmbedRequest, Error, RerankRequest, Runtime, RuntimeConfig};

const DOCUMENTS: [&str; 5] =
    ["the cat sat on the mat", "a dog", "", "the cat", "red car and blue house and a big tree"];

fn runtime(tmp: &Path, max_batch_size: usize, cache_capacity: u64) -> Runtime {
    let batch = BatchConfig {
        max_batch_size,
        max_batch_delay: Duration::from_millis(20),
        delay_policy: DelayPolicy::Fixed,
        ..Default::default()
    };
    let rt = Runtime::new(RuntimeConfig { batch, cache_capacity });
    rt.load(&write_tiny_cross_encoder_bundle(tmp, "rerank", "1").unwrap()).unwrap();
    rt
}

fn request(query: &str, documents: &[&str]) -> RerankRequest {
    RerankRequest {
        query: query.into(),
        documents: documents.iter().map(|d| (*d).to_owned()).collect(),
        top_n: None,
        truncate: true,
    }
}

/// The logits of the bundle's model run directly on the tokenizer's pairs, in document order.
fn direct_scores(dir: &Path, query: &str, documents: &[&str]) -> Vec<f32> {
    let bundle = Bundle::load(dir).unwrap();
    let spec = bundle.manifest.cross_encoder().unwrap();
    let model = CrossEncoder::new(&spec.architecture, spec.pooling, bundle.var_builder(&Device::Cpu)).unwrap();
    let tokenizer = TextTokenizer::from_bytes(bundle.file(&spec.tokenizer).unwrap(), spec.max_seq_length).unwrap();
    let pairs: Vec<_> = documents.iter().map(|d| tokenizer.encode_pair(query, d, true).unwrap()).collect();
    let segmented: Vec<SegmentedIds> = pairs.iter().map(|p| SegmentedIds { ids: &p.ids, second: p.second }).collect();
    segmented.iter().map(|pair| model.score(&[*pair]).unwrap()[0]).collect()
}

#[tokio::test]
async fn rerank_orders_by_the_heads_logit_whatever_the_batching() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path(), 2, 0);
    let want = direct_scores(&tmp.path().join("rerank"), "the cat", &DOCUMENTS);
    let res = rt.rerank("rerank", request("the cat", &DOCUMENTS)).await.unwrap();
    assert_eq!(res.model, "rerank@1");
    assert_eq!(res.results.len(), DOCUMENTS.len());
    assert!(res.results.windows(2).all(|w| w[0].score >= w[1].score), "{:?}", res.results);
    for ranked in &res.results {
        // Batched with others of its length bucket (at most two a batch), or alone: the same logit.
        assert!((ranked.score - want[ranked.index]).abs() < 1e-5, "{ranked:?} against {want:?}");
    }
    assert!(want.iter().any(|s| (s - want[0]).abs() > 1e-4), "scores differ between pairs: {want:?}");
    assert_eq!(res.usage.n_truncated, 0);

    let top = rt.rerank("rerank", RerankRequest { top_n: Some(2), ..request("the cat", &DOCUMENTS) }).await.unwrap();
    assert_eq!(top.results, res.results[..2]);
}

#[tokio::test]
async fn long_pairs_are_truncated_or_refused_and_repeats_are_cache_hits() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path(), 8, 100);
    let long = "the cat sat on the mat and the dog sat on the mat ".repeat(3);
    let documents = ["a dog", long.as_str()];
    let res = rt.rerank("rerank", request("the cat", &documents)).await.unwrap();
    assert_eq!(res.usage.n_truncated, 1);
    assert_eq!(res.usage.n_tokens, 7 + 24, "[CLS] the cat [SEP] a dog [SEP], and the limit");
    let refused = rt.rerank("rerank", RerankRequest { truncate: false, ..request("the cat", &documents) }).await;
    match refused {
        Err(Error::InvalidInput(msg)) => assert!(msg.starts_with("document 1 with the query: the pair has"), "{msg}"),
        other => panic!("expected invalid input, got {other:?}"),
    }

    let before = rt.cache_stats();
    rt.rerank("rerank", request("the cat", &documents)).await.unwrap();
    assert_eq!(rt.cache_stats().hits - before.hits, 2, "both pairs come from the cache");
    // Another query makes other pairs.
    rt.rerank("rerank", request("a dog", &documents[..1])).await.unwrap();
    assert_eq!(rt.cache_stats().hits - before.hits, 2);
}

#[tokio::test]
async fn bad_requests_and_other_kinds_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path(), 8, 0);
    rt.load(&write_tiny_classifier_bundle(tmp.path(), "digits", "1").unwrap()).unwrap();
    assert!(matches!(rt.rerank("rerank", request("q", &[])).await, Err(Error::InvalidInput(_))));
    let zero = RerankRequest { top_n: Some(0), ..request("q", &["d"]) };
    assert!(matches!(rt.rerank("rerank", zero).await, Err(Error::InvalidInput(_))));

    let err = rt.rerank("digits", request("q", &["d"])).await.unwrap_err();
    let wrong =
        matches!(&err, Error::WrongKind { kind, expected: "embedder or cross_encoder", .. } if kind == "classifier");
    assert!(wrong, "{err}");
    let embed = EmbedRequest { texts: vec!["a".into()], truncate: true, normalize: None, dimensions: None };
    let err = rt.embed("rerank", embed).await.unwrap_err();
    assert!(matches!(&err, Error::WrongKind { kind, expected: "embedder", .. } if kind == "cross_encoder"), "{err}");
    let err = rt.similarity("rerank", "a".into(), vec!["b".into()]).await.unwrap_err();
    assert!(matches!(&err, Error::WrongKind { kind, .. } if kind == "cross_encoder"), "{err}");

    let info = rt.model("rerank").unwrap();
    assert_eq!(info.kind, "cross_encoder");
    let cfg = &Bundle::load(&tmp.path().join("rerank")).unwrap().manifest.cross_encoder().unwrap().architecture.clone();
    assert_eq!(info.params, cfg.num_params() + cfg.hidden_size + 1);
    rt.warmup().unwrap();
}
