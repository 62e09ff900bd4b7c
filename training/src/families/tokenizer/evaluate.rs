//! The figures of an exported tokenizer on a split, as the benchmark table reports them:
//! reconstruction (PSNR, SSIM, FID-CNN of the reconstructions against the originals), semantics
//! (the head's accuracy on the semantic tokens, and linear probes on each stream's de-quantised
//! embeddings) and the codebooks (usage and perplexity per depth).
//!
//! A probe is softmax regression on a stream's de-quantised code vectors of every position,
//! concatenated and standardised with the probe-training images' statistics, fitted by Adam on
//! the first `probe_train` training images and measured on the split.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use serde::Serialize;
use tandem_runtime::bundle::{Bundle, FamilySpec};
use tandem_runtime::models::image_tokenizer::ImageTokenizer;
use tandem_runtime::models::rvq::ResidualQuantizer;

use super::measure::measure;
use super::quality::CodeUsage;
use crate::data::{self, DatasetName, Split};
use crate::fid::{FeatureExtractor, FeatureStats};
use crate::{Error, Result};

/// Full-batch Adam steps of a probe.
const PROBE_STEPS: usize = 300;
/// Adam's learning rate for the probes.
const PROBE_LR: f64 = 0.01;

/// What `tandem eval --task tokenizer` reports.
#[derive(Debug, Clone, Serialize)]
pub struct TokenizerReport {
    /// `name@version`.
    pub model: String,
    /// `dual`, `pixel_only` or `unified`.
    pub layout: String,
    /// Images measured.
    pub n: usize,
    /// Mean PSNR of the reconstructions, dB.
    pub psnr: f64,
    /// Mean SSIM of the reconstructions.
    pub ssim: f64,
    /// Fréchet distance between the classifier features of the reconstructions and of the originals.
    pub fid_cnn: f64,
    /// The classifier whose features FID-CNN uses.
    pub fid_classifier: String,
    /// The tokenizer's head on the semantic tokens (absent without a semantic stream).
    pub semantic_head_accuracy: Option<f64>,
    /// Linear probe on the semantic stream's de-quantised embeddings.
    pub probe_semantic: Option<f64>,
    /// Linear probe on the pixel stream's.
    pub probe_pixel: f64,
    /// Training images the probes were fitted on.
    pub probe_train: usize,
    /// Codebook usage per stream and depth.
    pub codebooks: BTreeMap<String, Vec<CodeUsage>>,
}

/// The de-quantised code vectors of every image, each image's positions concatenated.
fn embeddings(quantizer: &ResidualQuantizer, codes: &[u32], images: usize, device: &Device) -> Result<Tensor> {
    let per_image = codes.len() / images.max(1);
    let codes = Tensor::from_vec(codes.to_vec(), (images, per_image / quantizer.depth(), quantizer.depth()), device)?;
    Ok(ImageTokenizer::dequantize(quantizer, &codes)?.flatten_from(1)?)
}

/// Accuracy on `(test, test_labels)` of softmax regression fitted on `(train, labels)`.
fn linear_probe(train: &Tensor, labels: &[u8], test: &Tensor, test_labels: &[u8], classes: usize) -> Result<f64> {
    let device = train.device();
    let mean = train.mean_keepdim(0)?;
    let std = (train.broadcast_sub(&mean)?.sqr()?.mean_keepdim(0)? + 1e-6)?.sqrt()?;
    let standardise = |x: &Tensor| x.broadcast_sub(&mean)?.broadcast_div(&std);
    let (x, x_test) = (standardise(train)?, standardise(test)?);
    let y = Tensor::from_vec(labels.iter().map(|&l| u32::from(l)).collect::<Vec<_>>(), labels.len(), device)?;
    // Zero weights: the loss is convex, so the fitted probe, and its accuracy, are the same every run
    // (candle's default initialisation draws from an unseeded generator).
    let vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, DType::F32, device);
    let zero = candle_nn::Init::Const(0.0);
    let head = candle_nn::Linear::new(
        vb.get_with_hints((classes, x.dim(1)?), "weight", zero)?,
        Some(vb.get_with_hints(classes, "bias", zero)?),
    );
    let mut adam = candle_nn::AdamW::new(
        vars.all_vars(),
        candle_nn::ParamsAdamW { lr: PROBE_LR, weight_decay: 0.0, ..Default::default() },
    )?;
    for _ in 0..PROBE_STEPS {
        let logits = candle_nn::Module::forward(&head, &x)?;
        adam.backward_step(&candle_nn::loss::cross_entropy(&logits, &y)?)?;
    }
    let predicted = candle_nn::Module::forward(&head, &x_test)?.argmax(D::Minus1)?.to_vec1::<u32>()?;
    let hits = predicted.iter().zip(test_labels).filter(|(p, l)| **p == u32::from(**l)).count();
    Ok(hits as f64 / test_labels.len().max(1) as f64)
}

/// Measures the tokenizer bundle in `dir` on `split` of `dataset` (the first `limit` images, or
/// all), with FID-CNN in the features of the classifier bundle `fid_classifier`.
pub fn evaluate(
    dir: &Path,
    dataset: DatasetName,
    data_dir: &Path,
    split: Split,
    limit: Option<usize>,
    fid_classifier: &Path,
    probe_train: usize,
) -> Result<TokenizerReport> {
    let bundle = Bundle::load(dir)?;
    let FamilySpec::ImageTokenizer(spec) = &bundle.manifest.family else {
        return Err(Error::InvalidArgument(format!(
            "{} is a {} bundle, not an image tokenizer",
            dir.display(),
            bundle.manifest.kind()
        )));
    };
    let device = tandem_runtime::device::default_device();
    let net = ImageTokenizer::new(&spec.architecture, bundle.var_builder(&device))?;
    let ds = data::load(dataset, split, data_dir)?;
    let m = measure(&net, &ds, limit.unwrap_or(ds.len()), &device)?;
    let train = data::load(dataset, Split::Train, data_dir)?;
    let probe_train = probe_train.min(train.len());
    let fitted = measure(&net, &train, probe_train, &device)?;

    let extractor = FeatureExtractor::load(fid_classifier)?;
    let fid_cnn = FeatureStats::of(&extractor.features(&m.reconstructions)?)?
        .frechet_distance(&FeatureStats::of(&extractor.features(&m.originals)?)?)?;

    let classes = spec.labels.len();
    let probe = |quantizer: &ResidualQuantizer, fit: &[u32], eval: &[u32]| -> Result<f64> {
        let x = embeddings(quantizer, fit, fitted.len(), &device)?;
        let x_test = embeddings(quantizer, eval, m.len(), &device)?;
        linear_probe(&x, &fitted.labels, &x_test, &m.labels, classes)
    };
    let probe_pixel = probe(net.pixel_quantizer(), &fitted.pixel_codes, &m.pixel_codes)?;
    let probe_semantic = match (net.semantic_quantizer(), &fitted.semantic_codes, &m.semantic_codes) {
        (Some(q), Some(fit), Some(eval)) => Some(probe(q, fit, eval)?),
        _ => None,
    };
    let mut codebooks = BTreeMap::from([("pixel".to_string(), m.usage_by_depth(&m.pixel_codes))]);
    if let Some(codes) = &m.semantic_codes {
        codebooks.insert("semantic".into(), m.usage_by_depth(codes));
    }
    Ok(TokenizerReport {
        model: bundle.model_id(),
        layout: spec.architecture.layout.name().into(),
        n: m.len(),
        psnr: m.psnr(),
        ssim: m.ssim(),
        fid_cnn,
        fid_classifier: extractor.model.clone(),
        semantic_head_accuracy: m.semantic_accuracy(),
        probe_semantic,
        probe_pixel,
        probe_train,
        codebooks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_separates_separable_classes_and_not_noise() {
        let device = Device::Cpu;
        let make = |n: usize, offset: f32| -> (Tensor, Vec<u8>) {
            let labels: Vec<u8> = (0..n).map(|i| (i % 2) as u8).collect();
            let x: Vec<f32> =
                (0..n).flat_map(|i| [labels[i] as f32 * 2.0 - 1.0 + offset, ((i * 7) % 5) as f32]).collect();
            (Tensor::from_vec(x, (n, 2), &device).unwrap(), labels)
        };
        let (x, y) = make(200, 0.0);
        let (t, ty) = make(100, 0.1);
        assert!(linear_probe(&x, &y, &t, &ty, 2).unwrap() > 0.95);
        let noise: Vec<f32> = (0..200).map(|i| ((i * 37) % 11) as f32).collect();
        let xn = Tensor::from_vec(noise, (200, 1), &device).unwrap();
        let acc = linear_probe(&xn, &y, &xn.narrow(0, 0, 100).unwrap(), &y[..100], 2).unwrap();
        assert!(acc < 0.8, "a feature unrelated to the label cannot be probed well: {acc}");
    }
}
