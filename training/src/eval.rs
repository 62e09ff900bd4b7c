//! Accuracy of an exported bundle, measured through the runtime's serving path.
//!
//! Evaluating the bundle exactly as it is served (batch-norm folded, head mixture applied) means
//! the accuracy in a manifest is the accuracy users get.

use std::path::Path;

use serde::Serialize;
use tandem_runtime::bundle::Bundle;
use tandem_runtime::families::classifier::{Classifier, ImageItem};
use tandem_runtime::family::Family;

use crate::data::Dataset;
use crate::{Error, Result};

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
    for chunk in indices.chunks(512) {
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
