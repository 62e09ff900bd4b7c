//! Bundle loading: every kind of damage is a precise error, never a panic.

use std::path::{Path, PathBuf};

use tandem_runtime::bundle::{sha256_hex, Bundle, MANIFEST_FILE, SCHEMA_VERSION, WEIGHTS_FILE};
use tandem_runtime::testing::{write_tiny_classifier_bundle, write_tiny_image_text_bundle};
use tandem_runtime::testing_text::write_tiny_cross_encoder_bundle;

/// Writes a fresh classifier bundle, applies `damage` to it, and checks that loading fails
/// mentioning `expect`.
#[track_caller]
fn check(damage: impl FnOnce(&Path), expect: &str) {
    check_kind(|tmp| write_tiny_classifier_bundle(tmp, "digits", "1").unwrap(), damage, expect);
}

/// [`check`] on the bundle `write` writes under a temporary directory.
#[track_caller]
fn check_kind(write: impl FnOnce(&Path) -> PathBuf, damage: impl FnOnce(&Path), expect: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = write(tmp.path());
    damage(&dir);
    let err = Bundle::load(&dir).expect_err("a damaged bundle must not load").to_string();
    assert!(err.contains(expect), "error {err:?} does not mention {expect:?}");
}

fn edit_manifest(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join(MANIFEST_FILE);
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, serde_json::to_vec(&v).unwrap()).unwrap();
}

fn rewrite_tensor(dir: &Path, name: &str, shape: Option<Vec<usize>>) {
    let path = dir.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (n, v) in st.tensors() {
        if n != name {
            out.push((n, v.shape().to_vec(), v.data().to_vec()));
        } else if let Some(shape) = &shape {
            let count: usize = shape.iter().product();
            out.push((n, shape.clone(), vec![0u8; count * 4]));
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = out
        .iter()
        .map(|(n, s, d)| {
            (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap())
        })
        .collect();
    let bytes = safetensors::serialize(views, None).unwrap();
    std::fs::write(path, &bytes).unwrap();
    // Re-list the digest, so that the shape checks behind the digest check are what is tested.
    edit_manifest(dir, |v| v["files"][0]["sha256"] = sha256_hex(&bytes).into());
}

#[test]
fn an_intact_bundle_loads_with_a_stable_id() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_tiny_classifier_bundle(tmp.path(), "digits", "1").unwrap();
    let a = Bundle::load(&dir).unwrap();
    let b = Bundle::load(&dir).unwrap();
    assert_eq!(a.id, b.id);
    assert!(a.id.starts_with("sha256:") && a.id.len() == 7 + 64);
    assert_eq!(a.model_id(), "digits@1");
}

#[test]
fn truncated_weights() {
    check(
        |d| {
            let p = d.join(WEIGHTS_FILE);
            let bytes = std::fs::read(&p).unwrap();
            std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        },
        WEIGHTS_FILE,
    );
}

#[test]
fn garbage_weights() {
    check(|d| std::fs::write(d.join(WEIGHTS_FILE), b"\xff\xff\xff\xff\xff\xff\xff\xffjunk").unwrap(), WEIGHTS_FILE);
}

#[test]
fn missing_weights_file() {
    check(|d| std::fs::remove_file(d.join(WEIGHTS_FILE)).unwrap(), "cannot read model.safetensors");
}

#[test]
fn malformed_manifest_json() {
    check(|d| std::fs::write(d.join(MANIFEST_FILE), b"{ not json").unwrap(), MANIFEST_FILE);
}

#[test]
fn missing_manifest_field() {
    check(
        |d| {
            edit_manifest(d, |v| {
                v["family"].as_object_mut().unwrap().remove("labels");
            })
        },
        "labels",
    );
}

#[test]
fn unknown_schema_version() {
    check(|d| edit_manifest(d, |v| v["schema_version"] = 99.into()), "schema_version");
}

#[test]
fn label_count_differs_from_classes() {
    check(|d| edit_manifest(d, |v| v["family"]["labels"] = serde_json::json!(["a", "b"])), "labels");
}

#[test]
fn input_shape_differs_from_architecture() {
    check(|d| edit_manifest(d, |v| v["family"]["input"]["shape"] = serde_json::json!([1, 28, 28])), "input.shape");
}

#[test]
fn tensor_with_the_wrong_shape() {
    check(
        |d| rewrite_tensor(d, "head.weight", Some(vec![10, 3])),
        "tensor `head.weight`: expected shape [10, 64], found [10, 3]",
    );
}

#[test]
fn missing_tensor() {
    check(|d| rewrite_tensor(d, "head.bias", None), "missing tensor `head.bias`");
}

#[test]
fn a_cross_encoder_is_checked_like_an_embedder_plus_its_head() {
    let write = |tmp: &Path| write_tiny_cross_encoder_bundle(tmp, "rerank", "1").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = write(tmp.path());
    assert_eq!(Bundle::load(&dir).unwrap().manifest.kind(), "cross_encoder");
    // Pooling is mean when the manifest names none.
    edit_manifest(&dir, |v| drop(v["family"].as_object_mut().unwrap().remove("pooling")));
    let spec = Bundle::load(&dir).unwrap().manifest.cross_encoder().cloned().unwrap();
    assert_eq!(spec.pooling, tandem_runtime::models::sentence_encoder::Pooling::Mean);

    let wrong_head = |d: &Path| rewrite_tensor(d, "score.weight", Some(vec![2, 32]));
    check_kind(write, wrong_head, "tensor `score.weight`: expected shape [1, 32], found [2, 32]");
    check_kind(write, |d| rewrite_tensor(d, "score.bias", None), "missing tensor `score.bias`");
    let layer = "encoder.layer.1.output.dense.weight";
    check_kind(write, |d| rewrite_tensor(d, layer, Some(vec![32, 3])), "expected shape [32, 64], found [32, 3]");
    let one_type = |d: &Path| edit_manifest(d, |v| v["family"]["architecture"]["type_vocab_size"] = 1.into());
    check_kind(write, one_type, "a cross-encoder needs 2 token types");
    check_kind(write, |d| edit_manifest(d, |v| v["family"]["max_seq_length"] = 4.into()), "family.max_seq_length");
    let unlisted = |d: &Path| edit_manifest(d, |v| v["family"]["tokenizer"] = "other.json".into());
    check_kind(write, unlisted, "family.tokenizer");
    check_kind(write, |d| edit_manifest(d, |v| v["family"]["pooling"] = "sum".into()), "unknown variant `sum`");
}

#[test]
fn an_image_text_bundle_is_checked_tower_by_tower() {
    let write = |tmp: &Path| write_tiny_image_text_bundle(tmp, "clip").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(Bundle::load(&write(tmp.path())).unwrap().manifest.kind(), "image_text");

    let projection = |d: &Path| rewrite_tensor(d, "text_projection.weight", Some(vec![8, 3]));
    check_kind(write, projection, "tensor `text_projection.weight`: expected shape [8, 32], found [8, 3]");
    check_kind(write, |d| rewrite_tensor(d, "logit_scale", None), "missing tensor `logit_scale`");
    let conv = |d: &Path| rewrite_tensor(d, "image.layers.0.conv.weight", Some(vec![4, 1, 5, 5]));
    check_kind(write, conv, "expected shape [4, 1, 3, 3], found [4, 1, 5, 5]");
    let layer = |d: &Path| rewrite_tensor(d, "text.encoder.layer.1.output.dense.weight", Some(vec![32, 3]));
    check_kind(write, layer, "expected shape [32, 64], found [32, 3]");
    let shape = |d: &Path| edit_manifest(d, |v| v["family"]["input"]["shape"] = serde_json::json!([1, 8, 8]));
    check_kind(write, shape, "family.input.shape");
    let aux = |d: &Path| edit_manifest(d, |v| v["family"]["architecture"]["image"]["aux_head"] = true.into());
    check_kind(write, aux, "aux_head");
    check_kind(write, |d| edit_manifest(d, |v| v["family"]["labels"] = serde_json::json!([])), "family.labels");
    check_kind(write, |d| edit_manifest(d, |v| v["family"]["max_seq_length"] = 2.into()), "family.max_seq_length");
    let unlisted = |d: &Path| edit_manifest(d, |v| v["family"]["tokenizer"] = "other.json".into());
    check_kind(write, unlisted, "family.tokenizer");
    // A tokenizer whose ids reach past the text tower's vocabulary is refused when the model is built.
    let small_vocab = |d: &Path| {
        edit_manifest(d, |v| v["family"]["architecture"]["text"]["vocab_size"] = 10.into());
        rewrite_tensor(d, "text.embeddings.word_embeddings.weight", Some(vec![10, 32]));
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = write(tmp.path());
    small_vocab(&dir);
    let rt = tandem_runtime::Runtime::new(tandem_runtime::RuntimeConfig::default());
    let err = rt.load(&dir).unwrap_err().to_string();
    assert!(err.contains("the tokenizer has") && err.contains("vocabulary 10"), "{err}");
}

#[test]
fn weights_that_differ_from_their_listed_digest() {
    check(
        |d| {
            let p = d.join(WEIGHTS_FILE);
            let mut bytes = std::fs::read(&p).unwrap();
            let last = bytes.len() - 1;
            bytes[last] ^= 1;
            std::fs::write(&p, bytes).unwrap();
        },
        "model.safetensors: sha256 mismatch",
    );
}

#[test]
fn listed_files_stay_inside_the_bundle() {
    check(|d| edit_manifest(d, |v| v["files"][0]["path"] = "../model.safetensors".into()), "relative path inside");
    check(|d| edit_manifest(d, |v| v["files"] = serde_json::json!([])), "model.safetensors must be listed");
}

#[test]
fn an_unknown_kind_is_refused() {
    check(|d| edit_manifest(d, |v| v["family"]["kind"] = "sampler".into()), "unknown variant `sampler`");
}

#[test]
fn a_schema_1_bundle_loads_migrated_with_its_old_id() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schema1-digits-student");
    let bundle = Bundle::load(&dir).unwrap();
    assert_eq!(bundle.manifest.schema_version, SCHEMA_VERSION);
    assert_eq!(bundle.manifest.kind(), "classifier");
    let spec = bundle.manifest.classifier().unwrap();
    assert_eq!(spec.labels.len(), 10);
    assert_eq!(spec.architecture.input_shape, [1, 8, 8]);
    assert_eq!(bundle.manifest.files.len(), 1);
    assert_eq!(bundle.manifest.files[0].sha256, sha256_hex(&std::fs::read(dir.join(WEIGHTS_FILE)).unwrap()));
    // The id of a schema-1 bundle is what it was before the schema changed, so teachers named in
    // older students' provenance still match.
    assert_eq!(bundle.id, "sha256:70eee401cea243e65cd1c82be11ca03b76e8cb8eda1083437ae5931e0e9a7d89");
}

#[test]
fn f16_and_bf16_weights_load_widened_to_f32() {
    for dtype in [safetensors::Dtype::F16, safetensors::Dtype::BF16] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = write_tiny_classifier_bundle(tmp.path(), "digits", "1").unwrap();
        let f32_bundle = Bundle::load(&dir).unwrap();
        let path = dir.join(WEIGHTS_FILE);
        let bytes = std::fs::read(&path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let narrowed: Vec<(String, Vec<usize>, Vec<u8>)> = st
            .tensors()
            .into_iter()
            .map(|(n, v)| {
                let data = v
                    .data()
                    .chunks_exact(4)
                    .flat_map(|b| {
                        let x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                        match dtype {
                            safetensors::Dtype::F16 => half::f16::from_f32(x).to_le_bytes(),
                            _ => half::bf16::from_f32(x).to_le_bytes(),
                        }
                    })
                    .collect();
                (n, v.shape().to_vec(), data)
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView)> = narrowed
            .iter()
            .map(|(n, s, d)| (n.clone(), safetensors::tensor::TensorView::new(dtype, s.clone(), d).unwrap()))
            .collect();
        let out = safetensors::serialize(views, None).unwrap();
        std::fs::write(&path, &out).unwrap();
        edit_manifest(&dir, |v| v["files"][0]["sha256"] = sha256_hex(&out).into());
        let narrow = Bundle::load(&dir).unwrap();
        let device = candle_core::Device::Cpu;
        let a = f32_bundle.var_builder(&device).get((4, 1, 3, 3), "layers.0.conv.weight").unwrap();
        let b = narrow.var_builder(&device).get((4, 1, 3, 3), "layers.0.conv.weight").unwrap();
        let diff: f32 = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
        assert!(diff < 0.01, "{dtype:?}: max diff {diff}");
    }
}
