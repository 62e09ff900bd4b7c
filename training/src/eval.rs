//! Accuracy of an exported bundle, measured through the runtime's serving path, and of a
//! classifier's training graph.
//!
//! Evaluating the bundle exactly as it is served (batch-norm folded, head mixture applied) means
//! the accuracy in a manifest is the accuracy users get. The training graph in eval mode is what
//! validation measures during training.

use std::path::Path;

use candle_core::Device;
use serde::Serialize;
use tandem_runtime::bundle::Bundle;
use tandem_runtime::families::classifier::{Classifier, ImageItem};
use tandem_runtime::family::Family;
use tandem_runtime::models::cnn::Cnn;

use crate::data::{self, labels_to_tensor, Dataset, Normalization};
use crate::losses::{correct, cross_entropy};
use crate::{Error, Result};

/// Images per forward pass of an evaluation.
const EVAL_BATCH: usize = 512;

/// The result of evaluating a bundle on a split.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// `name@version`.
    pub model: String,
    /// Fraction of images classified correctly.
    pub accuracy: f64,
    /// Images evaluated.
    pub n: usize,
    /// Trainable parameters of the model.
    pub params: usize,
}

/// Classifies every image of `ds` with the bundle in `dir`.
pub fn evaluate_bundle(dir: &Path, ds: &Dataset) -> Result<EvalReport> {
    let bundle = Bundle::load(dir)?;
    let device = tandem_runtime::device::default_device();
    let classifier = Classifier::from_bundle(&bundle, &device)?;
    let [_, h, w] = classifier.input_shape();
    if (h, w) != (ds.height, ds.width) {
        return Err(Error::InvalidArgument(format!(
            "the model expects {h}x{w} images, the dataset has {}x{}",
            ds.height, ds.width
        )));
    }
    if classifier.labels().len() != ds.num_classes() {
        return Err(Error::InvalidArgument(format!(
            "the model has {} classes, the dataset {}",
            classifier.labels().len(),
            ds.num_classes()
        )));
    }
    let mut correct = 0;
    let indices: Vec<usize> = (0..ds.len()).collect();
    for chunk in indices.chunks(EVAL_BATCH) {
        let items: Vec<ImageItem> = chunk
            .iter()
            .map(|&i| ImageItem::from_pixels(ds.image(i).iter().map(|&p| f32::from(p)).collect()))
            .collect();
        let probs = classifier.run_batch(&items)?;
        for (&i, p) in chunk.iter().zip(&probs) {
            let pred = p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(k, _)| k);
            correct += usize::from(pred == usize::from(ds.labels[i]));
        }
    }
    let cfg =
        &bundle.manifest.classifier().expect("the classifier loaded from this bundle. This is a bug.").architecture;
    Ok(EvalReport {
        model: bundle.model_id(),
        accuracy: if ds.is_empty() { 0.0 } else { correct as f64 / ds.len() as f64 },
        n: ds.len(),
        params: cfg.num_params().map_err(Error::InvalidArgument)?,
    })
}

/// Mean cross-entropy and accuracy of the training graph in eval mode.
pub fn evaluate(net: &Cnn, ds: &Dataset, norm: Normalization, device: &Device) -> Result<(f64, f64)> {
    let heads = evaluate_heads(net, ds, norm, device)?;
    Ok((heads.loss, heads.accuracy))
}

/// Validation measurements of both heads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeadsEval {
    /// Mean cross-entropy of the main head.
    pub loss: f64,
    /// Accuracy of the main head.
    pub accuracy: f64,
    /// Accuracy of the auxiliary head, when the network has one.
    pub aux_accuracy: Option<f64>,
}

/// Both heads of the training graph in eval mode on every image of `ds`.
pub fn evaluate_heads(net: &Cnn, ds: &Dataset, norm: Normalization, device: &Device) -> Result<HeadsEval> {
    let (mut loss_sum, mut hits, mut aux_hits) = (0.0, 0, 0);
    let all: Vec<usize> = (0..ds.len()).collect();
    for idx in all.chunks(EVAL_BATCH) {
        let x = data::images_to_tensor(ds, idx, norm, device)?;
        let y = labels_to_tensor(ds, idx, device)?;
        let out = net.forward_t(&x, false)?;
        loss_sum += f64::from(cross_entropy(&out.logits, &y)?.to_scalar::<f32>()?) * idx.len() as f64;
        hits += correct(&out.logits, &y)?;
        if let Some(aux) = &out.aux_logits {
            aux_hits += correct(aux, &y)?;
        }
    }
    let n = ds.len().max(1) as f64;
    Ok(HeadsEval {
        loss: loss_sum / n,
        accuracy: hits as f64 / n,
        aux_accuracy: net.config().aux_head.then_some(aux_hits as f64 / n),
    })
}

/// The logits of both heads in eval mode on every image of `ds`, row-major `[n, classes]` each.
pub fn head_logits(net: &Cnn, ds: &Dataset, norm: Normalization, device: &Device) -> Result<(Vec<f32>, Vec<f32>)> {
    let (mut main, mut aux) = (Vec::new(), Vec::new());
    let all: Vec<usize> = (0..ds.len()).collect();
    for idx in all.chunks(EVAL_BATCH) {
        let x = data::images_to_tensor(ds, idx, norm, device)?;
        let out = net.forward_t(&x, false)?;
        let Some(aux_logits) = out.aux_logits.as_ref() else {
            return Err(Error::InvalidArgument("the head logits need a network with the auxiliary head".into()));
        };
        main.extend(out.logits.flatten_all()?.to_vec1::<f32>()?);
        aux.extend(aux_logits.flatten_all()?.to_vec1::<f32>()?);
    }
    Ok((main, aux))
}
