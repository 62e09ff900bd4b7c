//! Small real bundles for tests and examples of downstream crates.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};

use crate::bundle::{
    serialize_varmap, write_bundle, write_bundle_files, ClassifierSpec, ConsistencySpec, DiffusionSpec, FamilySpec,
    ImageTextSpec, ImageTokenizerSpec, InferenceSpec, InputSpec, Manifest, Provenance, SCHEMA_VERSION, WEIGHTS_FILE,
};
use crate::diffusion::BetaSchedule;
use crate::image::RESIZE_FILTER;
use crate::models::cnn::{Cnn, CnnConfig, LayerSpec};
use crate::models::image_text::{ImageTextConfig, TrainableImageText};
use crate::models::image_tokenizer::{ImageTokenizer, ImageTokenizerConfig, TokenizerLayout};
use crate::models::unet::{tiny_config, UNet, UNetConfig};
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

/// Neutral provenance and metrics around a family section.
pub(crate) fn generic_manifest(name: &str, family: FamilySpec) -> Manifest {
    let mut m = manifest_for(name, "1", tiny_cnn_config());
    m.family = family;
    m
}

/// Builds the tiny UNet on a fresh `VarMap` and perturbs every weight (the output layer starts at
/// zero, which would make every untrained model predict ε = 0 whatever its input).
fn tiny_unet_vars(cfg: &UNetConfig) -> Result<VarMap> {
    let varmap = VarMap::new();
    UNet::new(cfg, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
    for var in varmap.all_vars() {
        let noise = candle_core::Tensor::randn(0f32, 0.05, var.shape(), &Device::Cpu)?;
        var.set(&(var.as_tensor() + noise)?)?;
    }
    Ok(varmap)
}

/// Writes a random-weight, ten-class 28×28 `diffusion` bundle to `dir/name` and returns its path.
pub fn write_tiny_diffusion_bundle(dir: &Path, name: &str) -> Result<PathBuf> {
    let cfg = tiny_config(10);
    let spec = DiffusionSpec {
        labels: (0..10).map(|i| i.to_string()).collect(),
        architecture: cfg.clone(),
        schedule: BetaSchedule::Linear { start: 1e-4, end: 0.02 },
        train_steps: 1000,
        guidance: 1.0,
    };
    let path = dir.join(name);
    write_bundle(&path, &generic_manifest(name, FamilySpec::Diffusion(spec)), &tiny_unet_vars(&cfg)?)?;
    Ok(path)
}

/// Writes a random-weight, ten-class 28×28 `consistency` bundle to `dir/name` (σ lists for 1 and
/// 2 steps) and returns its path.
pub fn write_tiny_consistency_bundle(dir: &Path, name: &str) -> Result<PathBuf> {
    let cfg = tiny_config(10);
    let spec = ConsistencySpec {
        labels: (0..10).map(|i| i.to_string()).collect(),
        architecture: cfg.clone(),
        sigma_min: 0.002,
        sigma_max: 80.0,
        sigma_data: 0.5,
        sigmas: BTreeMap::from([("1".into(), vec![80.0]), ("2".into(), vec![80.0, 0.8])]),
        parametrization: Default::default(),
    };
    let path = dir.join(name);
    write_bundle(&path, &generic_manifest(name, FamilySpec::Consistency(spec)), &tiny_unet_vars(&cfg)?)?;
    Ok(path)
}

/// The architecture of [`write_tiny_tokenizer_bundle`]: a dual tokenizer for 28×28 grayscale
/// images of ten classes, over a 2-layer ViT of width 16 (a 7×7 grid, depth 2, 64 codes).
pub fn tiny_tokenizer_config() -> ImageTokenizerConfig {
    let mut cfg = ImageTokenizerConfig::small([1, 28, 28], 10, TokenizerLayout::Dual);
    cfg.encoder.dim = 16;
    cfg.encoder.depth = 2;
    cfg.encoder.heads = 2;
    (cfg.pixel_layer, cfg.shortcut_layer, cfg.semantic_layer) = (1, None, 1);
    (cfg.code_dim, cfg.codebook_size, cfg.decoder_blocks, cfg.decoder_channels) = (4, 64, 1, 8);
    cfg
}

/// Writes a random-weight `image_tokenizer` bundle of [`tiny_tokenizer_config`] to `dir/name`
/// and returns its path.
pub fn write_tiny_tokenizer_bundle(dir: &Path, name: &str) -> Result<PathBuf> {
    let cfg = tiny_tokenizer_config();
    let varmap = VarMap::new();
    ImageTokenizer::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
    let spec = ImageTokenizerSpec { labels: (0..10).map(|i| i.to_string()).collect(), architecture: cfg };
    let path = dir.join(name);
    write_bundle(&path, &generic_manifest(name, FamilySpec::ImageTokenizer(spec)), &varmap)?;
    Ok(path)
}

/// The architecture of [`write_tiny_image_text_bundle`]: a one-convolution image tower for 28×28
/// grayscale images and the tiny 2-layer BERT over [`tiny_spelling_tokenizer_json`]'s
/// vocabulary, meeting in a space of width 8.
///
/// [`tiny_spelling_tokenizer_json`]: crate::testing_text::tiny_spelling_tokenizer_json
pub fn tiny_image_text_config() -> ImageTextConfig {
    let image = CnnConfig {
        input_shape: [1, 28, 28],
        num_classes: 8,
        layers: vec![
            LayerSpec::Conv { out_channels: 4, kernel: 3, stride: 1, padding: 1, batch_norm: true, relu: true },
            LayerSpec::MaxPool { size: 4 },
            LayerSpec::GlobalAvgPool,
        ],
        aux_head: false,
    };
    let tokenizer = crate::testing_text::tiny_spelling_tokenizer_json();
    let vocab_size = crate::text::TextTokenizer::from_bytes(tokenizer.as_bytes(), 8).map_or(0, |t| t.vocab_size());
    let text = crate::models::sentence_encoder::BertConfig { vocab_size, ..crate::testing_text::tiny_bert_config(2) };
    ImageTextConfig { image, text, pooling: crate::models::sentence_encoder::Pooling::Mean }
}

/// Writes a random-weight `image_text` bundle of [`tiny_image_text_config`] to `dir/name`, with
/// the spelling tokenizer and Fashion-MNIST's ten class names as its labels, and returns its path.
pub fn write_tiny_image_text_bundle(dir: &Path, name: &str) -> Result<PathBuf> {
    let cfg = tiny_image_text_config();
    let varmap = VarMap::new();
    TrainableImageText::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
    let tokenizer = crate::testing_text::tiny_spelling_tokenizer_json();
    let spec = ImageTextSpec {
        input: InputSpec {
            shape: cfg.image.input_shape,
            dtype: "f32".into(),
            pixel_range: [0.0, 255.0],
            mean: 0.5,
            std: 0.5,
            resize_filter: RESIZE_FILTER.into(),
        },
        architecture: cfg,
        tokenizer: crate::hf::TOKENIZER_FILE.into(),
        max_seq_length: crate::testing_text::TINY_MAX_SEQ_LENGTH,
        labels: [
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ]
        .map(String::from)
        .to_vec(),
    };
    let path = dir.join(name);
    let weights = serialize_varmap(&varmap)?;
    let files: [(&str, &[u8]); 2] = [(WEIGHTS_FILE, &weights), (crate::hf::TOKENIZER_FILE, tokenizer.as_bytes())];
    write_bundle_files(&path, &generic_manifest(name, FamilySpec::ImageText(spec)), &files)?;
    Ok(path)
}

/// Asserts that a loss's `grads` reach every trained weight of `vars` with a nonzero gradient.
/// Batch-norm running statistics are not trained, and an embedding table (`embeddings.*`, its
/// layer norm apart) may have rows that a small batch never looks up, so those may be zero.
pub fn assert_every_weight_gets_a_gradient(vars: &VarMap, grads: &candle_core::backprop::GradStore) {
    for (name, var) in vars.data().lock().expect("varmap lock poisoned. This is a bug.").iter() {
        if name.contains("running_") {
            continue;
        }
        let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name} gets no gradient"));
        let norm = g.sqr().and_then(|s| s.sum_all()).and_then(|s| s.to_scalar::<f32>()).expect("a gradient norm");
        let looked_up_in_part = name.contains("embeddings.") && !name.contains("LayerNorm");
        assert!(norm > 0.0 || looked_up_in_part, "{name} has a zero gradient");
    }
}
