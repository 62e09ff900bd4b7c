//! `average_bundles`: the mean of interchangeable bundles, served like any of them, and a clear
//! refusal of bundles that are not the same model.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use tandem_runtime::bundle::{write_bundle_files, Bundle, WEIGHTS_FILE};
use tandem_runtime::import::{import_sentence_transformers, ImportOptions};
use tandem_runtime::models::sentence_encoder::Pooling;
use tandem_runtime::testing_text::write_tiny_sentence_transformers_dir;
use tandem_runtime::{EmbedRequest, Runtime, RuntimeConfig};
use tandem_training::average::average_bundles;

fn tiny_embedder(dir: &Path, name: &str, layers: usize) -> PathBuf {
    let hf = dir.join(format!("{name}-hf"));
    write_tiny_sentence_transformers_dir(&hf, layers, Pooling::Mean, true).unwrap();
    let out = dir.join(name);
    import_sentence_transformers(&hf, &out, &ImportOptions { name: name.into(), version: "1".into() }).unwrap();
    out
}

fn weights(dir: &Path) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join(WEIGHTS_FILE), &Device::Cpu).unwrap()
}

/// A copy of the bundle in `from` whose every weight is `f(weight)`.
fn transformed(from: &Path, to: &Path, f: impl Fn(&Tensor) -> Tensor) {
    let bundle = Bundle::load(from).unwrap();
    let mut tensors: Vec<(String, Tensor)> = weights(from).into_iter().map(|(k, v)| (k, f(&v))).collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let bytes = safetensors::serialize(tensors.iter().map(|(k, v)| (k.as_str(), v)), None).unwrap();
    let tokenizer = std::fs::read(from.join("tokenizer.json")).unwrap();
    let files: [(&str, &[u8]); 2] = [(WEIGHTS_FILE, &bytes), ("tokenizer.json", &tokenizer)];
    write_bundle_files(to, &bundle.manifest, &files).unwrap();
}

#[test]
fn the_average_of_bundles_is_their_mean_weight_by_weight_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let a = tiny_embedder(dir.path(), "a", 1);
    let b = dir.path().join("b");
    let c = dir.path().join("c");
    transformed(&a, &b, |t| (t + 1.0).unwrap());
    transformed(&a, &c, |t| (t * -2.0).unwrap());

    let out = dir.path().join("soup");
    let summary = average_bundles(&[a.clone(), b.clone(), c.clone()], &out, "soup", "2").unwrap();
    assert_eq!(summary.model, "soup@2");
    let ids: Vec<String> = [&a, &b, &c].iter().map(|d| Bundle::load(d).unwrap().id).collect();
    assert_eq!(summary.ingredients, ids);

    // (w + (w + 1) + (-2 w)) / 3 = 1/3 for every weight, in the stored type.
    let (original, soup) = (weights(&a), weights(&out));
    assert_eq!(soup.len(), original.len());
    for (name, tensor) in &soup {
        assert_eq!(tensor.dtype(), original[name].dtype(), "{name} keeps its type");
        let values = tensor.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(values.iter().all(|v| (v - 1.0 / 3.0).abs() < 1e-5), "{name}: {:?}", &values[..3]);
    }
    let manifest = Bundle::load(&out).unwrap().manifest;
    assert_eq!(manifest.provenance.recipe, "uniform-weight-average");
    assert_eq!(manifest.provenance.hyperparameters["ingredients"], serde_json::json!(ids));
    assert!(!manifest.metrics.keys().any(|k| k.starts_with("test")), "measured figures are the ingredients'");

    // The soup is served like its ingredients; averaging a bundle with itself changes nothing.
    let runtime = Runtime::new(RuntimeConfig::default());
    let info = runtime.load(&out).unwrap();
    let request = EmbedRequest { texts: vec!["a dog".into()], truncate: true, normalize: None, dimensions: None };
    let embedded = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(runtime.embed(&info.id, request))
        .unwrap();
    assert!(embedded.embeddings[0].iter().all(|v| v.is_finite()));
    let twice = dir.path().join("twice");
    average_bundles(&[a.clone(), a.clone()], &twice, "twice", "1").unwrap();
    assert_eq!(std::fs::read(twice.join(WEIGHTS_FILE)).unwrap(), std::fs::read(a.join(WEIGHTS_FILE)).unwrap());
}

#[test]
fn bundles_that_are_not_one_model_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let one = tiny_embedder(dir.path(), "one", 1);
    let two = tiny_embedder(dir.path(), "two", 2);
    let half = dir.path().join("half");
    transformed(&one, &half, |t| t.to_dtype(DType::F16).unwrap());
    let out = dir.path().join("out");

    let refused = |dirs: &[PathBuf]| average_bundles(dirs, &out, "out", "1").unwrap_err().to_string();
    assert!(refused(std::slice::from_ref(&one)).contains("two bundles or more"));
    assert!(refused(&[one.clone(), two]).contains("family sections differ"));
    assert!(refused(&[one.clone(), half]).contains("F16"));
    assert!(refused(&[one, dir.path().join("missing")]).contains("missing"));
    assert!(!out.exists(), "nothing is written when the ingredients are refused");
}
