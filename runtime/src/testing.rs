//! Small real bundles for tests and examples of downstream crates.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};

use crate::bundle::{
    write_bundle, ClassifierSpec, FamilySpec, InferenceSpec, InputSpec, Manifest, Provenance, SCHEMA_VERSION,
};
use crate::image::RESIZE_FILTER;
use crate::models::cnn::{Cnn, CnnConfig, LayerSpec};
use crate::Result;

/// A tiny CNN for 8×8 grayscale digits with ten classes.
pub fn tiny_cnn_config() -> CnnConfig {
    CnnConfig {
        input_shape: [1, 8, 8],
        num_classes: 10,
        layers: vec![
            LayerSpec::Conv { out_channels: 4, kernel: 3, stride: 1, padding: 1, batch_norm: true, relu: true },
            LayerSpec::MaxPool { size: 2 },
            LayerSpec::Flatten,
        ],
        aux_head: false,
    }
}

/// A manifest for `cfg` with neutral provenance.
pub fn manifest_for(name: &str, version: &str, cfg: CnnConfig) -> Manifest {
    let [c, h, w] = cfg.input_shape;
    Manifest {
        schema_version: SCHEMA_VERSION,
        name: name.to_owned(),
        version: version.to_owned(),
        family: FamilySpec::Classifier(ClassifierSpec {
            input: InputSpec {
                shape: [c, h, w],
                dtype: "f32".into(),
                pixel_range: [0.0, 255.0],
                mean: 0.5,
                std: 0.5,
                resize_filter: RESIZE_FILTER.into(),
            },
            labels: (0..cfg.num_classes).map(|i| i.to_string()).collect(),
            architecture: cfg,
            inference: InferenceSpec::MainHead,
        }),
        files: Vec::new(),
        provenance: Provenance {
            dataset: "none".into(),
            dataset_sha256: String::new(),
            recipe: "random-init".into(),
            hyperparameters: BTreeMap::new(),
            teacher: None,
        },
        metrics: BTreeMap::new(),
        created_at: crate::bundle::now_rfc3339(),
    }
}

/// Writes a random-weight 8×8 ten-class classifier bundle to `dir/name` and returns its path.
pub fn write_tiny_classifier_bundle(dir: &Path, name: &str, version: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    write_tiny_classifier_bundle_at(&path, name, version)?;
    Ok(path)
}

/// Writes a random-weight 8×8 ten-class classifier bundle named `name@version` into the directory
/// `path`, e.g. `models/<name>/<version>`; every call draws new weights, so a bundle written twice
/// has two ids.
pub fn write_tiny_classifier_bundle_at(path: &Path, name: &str, version: &str) -> Result<()> {
    let cfg = tiny_cnn_config();
    let varmap = VarMap::new();
    Cnn::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
    write_bundle(path, &manifest_for(name, version, cfg), &varmap)?;
    Ok(())
}
