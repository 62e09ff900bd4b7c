//! The runtime end to end on a real bundle: classify, full probabilities, batching equivalence,
//! cache, registry.

use std::sync::Arc;
use std::time::Duration;

use tandem_runtime::image::GrayImage;
use tandem_runtime::testing::write_tiny_classifier_bundle;
use tandem_runtime::{BatchConfig, ClassifyRequest, DelayPolicy, Error, Runtime, RuntimeConfig};

fn image(seed: u32) -> GrayImage {
    let rows: Vec<Vec<f64>> =
        (0..8).map(|r| (0..8).map(|c| f64::from((seed * 37 + r * 11 + c * 5) % 256)).collect()).collect();
    GrayImage::from_rows(&rows).unwrap()
}

fn runtime(max_batch_size: usize, cache_capacity: u64) -> (tempfile::TempDir, Runtime) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_tiny_classifier_bundle(tmp.path(), "digits", "1").unwrap();
    let rt = runtime_on(&dir, max_batch_size, cache_capacity);
    (tmp, rt)
}

fn runtime_on(dir: &std::path::Path, max_batch_size: usize, cache_capacity: u64) -> Runtime {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_results_equal_unbatched_ones() {
    let (tmp, single) = runtime(1, 0);
    let batched = Arc::new(runtime_on(&tmp.path().join("digits"), 32, 0));
    let images: Vec<_> = (0..24).map(image).collect();
    let mut expected = Vec::new();
    for img in &images {
        let res = single.classify("digits", ClassifyRequest { images: vec![img.clone()], top_k: 10 }).await.unwrap();
        expected.push(res.predictions[0].clone());
    }
    let tasks: Vec<_> = images
        .iter()
        .cloned()
        .map(|img| {
            let rt = batched.clone();
            tokio::spawn(async move {
                rt.classify("digits@1", ClassifyRequest { images: vec![img], top_k: 10 }).await.unwrap()
            })
        })
        .collect();
    for (task, want) in tasks.into_iter().zip(expected) {
        let got = task.await.unwrap().predictions.remove(0);
        assert_eq!(got.len(), 10);
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.label, w.label);
            assert!((g.score - w.score).abs() < 1e-5, "{g:?} vs {w:?}");
        }
    }
    let many = batched.classify("digits", ClassifyRequest { images: images.clone(), top_k: 3 }).await.unwrap();
    assert_eq!(many.predictions.len(), 24);
    assert_eq!(many.model, "digits@1");
}

#[tokio::test]
async fn probabilities_sum_to_one_and_top_k_is_capped() {
    let (_tmp, rt) = runtime(8, 0);
    let res = rt.classify("digits", ClassifyRequest { images: vec![image(1)], top_k: 50 }).await.unwrap();
    let preds = &res.predictions[0];
    assert_eq!(preds.len(), 10);
    let total: f32 = preds.iter().map(|p| p.score).sum();
    assert!((total - 1.0).abs() < 1e-4, "{total}");
    assert!(preds.windows(2).all(|w| w[0].score >= w[1].score));
}

#[tokio::test]
async fn class_probabilities_are_every_score_in_label_order() {
    let (_tmp, rt) = runtime(8, 0);
    let images = vec![image(1), image(2)];
    let full = rt.class_probabilities("digits", images.clone()).await.unwrap();
    assert_eq!(full.model, "digits@1");
    assert_eq!(full.probabilities.len(), 2);
    let ranked = rt.classify("digits", ClassifyRequest { images, top_k: 10 }).await.unwrap();
    for (probabilities, predictions) in full.probabilities.iter().zip(&ranked.predictions) {
        assert_eq!(probabilities.len(), 10);
        for p in predictions {
            let index: usize = p.label.parse().unwrap();
            assert_eq!(probabilities[index], p.score, "{}", p.label);
        }
    }
    let empty = rt.class_probabilities("digits", vec![]).await;
    assert!(matches!(empty, Err(Error::InvalidInput(_))));
}

#[tokio::test]
async fn repeated_images_hit_the_cache() {
    let (_tmp, rt) = runtime(8, 100);
    let req = || ClassifyRequest { images: vec![image(2)], top_k: 1 };
    let a = rt.classify("digits", req()).await.unwrap();
    let b = rt.classify("digits", req()).await.unwrap();
    assert_eq!(a, b);
    let stats = rt.cache_stats();
    assert_eq!((stats.hits, stats.misses), (1, 1));
}

#[tokio::test]
async fn other_sizes_are_resized() {
    let (_tmp, rt) = runtime(8, 0);
    let big = GrayImage::from_rows(&vec![vec![30.0; 28]; 28]).unwrap();
    let res = rt.classify("digits", ClassifyRequest { images: vec![big], top_k: 1 }).await.unwrap();
    assert_eq!(res.predictions[0].len(), 1);
}

#[tokio::test]
async fn bad_requests_are_errors() {
    let (_tmp, rt) = runtime(8, 0);
    let unknown = rt.classify("nope", ClassifyRequest { images: vec![image(1)], top_k: 1 }).await;
    assert!(matches!(unknown, Err(Error::NotFound(_))));
    let empty = rt.classify("digits", ClassifyRequest { images: vec![], top_k: 1 }).await;
    assert!(matches!(empty, Err(Error::InvalidInput(_))));
    let zero_k = rt.classify("digits", ClassifyRequest { images: vec![image(1)], top_k: 0 }).await;
    assert!(matches!(zero_k, Err(Error::InvalidInput(_))));
}

#[test]
fn registry_resolves_names_versions_and_unloads() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = Runtime::new(RuntimeConfig::default());
    let v1 = write_tiny_classifier_bundle(tmp.path(), "digits", "1.9").unwrap();
    rt.load(&v1).unwrap();
    let v2_dir = tmp.path().join("v2");
    std::fs::create_dir_all(&v2_dir).unwrap();
    let v2 = write_tiny_classifier_bundle(&v2_dir, "digits", "1.10").unwrap();
    rt.load(&v2).unwrap();
    assert_eq!(rt.models().len(), 2);
    assert_eq!(rt.model("digits").unwrap().id, "digits@1.10");
    assert_eq!(rt.model("digits@1.9").unwrap().version, "1.9");
    assert!(rt.model("digits@3").is_err());
    rt.warmup().unwrap();
    rt.unload("digits@1.10").unwrap();
    assert_eq!(rt.model("digits").unwrap().id, "digits@1.9");
}
