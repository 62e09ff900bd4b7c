//! Bundle loading: every kind of damage is a precise error, never a panic.

use std::path::Path;

use tandem_runtime::bundle::{Bundle, MANIFEST_FILE, WEIGHTS_FILE};
use tandem_runtime::testing::write_tiny_classifier_bundle;

/// Writes a fresh bundle, applies `damage` to it, and checks that loading fails mentioning `expect`.
#[track_caller]
fn check(damage: impl FnOnce(&Path), expect: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_tiny_classifier_bundle(tmp.path(), "digits", "1").unwrap();
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
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
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
                v.as_object_mut().unwrap().remove("labels");
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
    check(|d| edit_manifest(d, |v| v["labels"] = serde_json::json!(["a", "b"])), "labels");
}

#[test]
fn input_shape_differs_from_architecture() {
    check(|d| edit_manifest(d, |v| v["input"]["shape"] = serde_json::json!([1, 28, 28])), "input.shape");
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
