//! The image classifier family: images in, class probabilities out.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use candle_core::{Device, Tensor, D};
use candle_nn::ops::softmax;

use crate::bundle::{Architecture, Bundle, InferenceSpec, InputSpec};
use crate::family::Family;
use crate::models::cnn::Cnn;
use crate::{Error, Result};

/// A classification request: images and how many top labels to return for each.
#[derive(Debug, Clone)]
pub struct ClassifyRequest {
    /// The images, each on the 0–255 scale.
    pub images: Vec<crate::image::GrayImage>,
    /// Labels to return per image, highest score first.
    pub top_k: usize,
}

/// One label with its probability.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The class label from the manifest.
    pub label: String,
    /// Its probability.
    pub score: f32,
}

/// Predictions per image, in request order.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifyResponse {
    /// `name@version` of the model that answered.
    pub model: String,
    /// Top-k predictions per image.
    pub predictions: Vec<Vec<Prediction>>,
}

/// One image resized to the model's grid, with its content hash.
#[derive(Debug, Clone)]
pub struct ImageItem {
    pixels: Vec<f32>,
    hash: u64,
}

impl ImageItem {
    /// An item from pixels already on the model's grid (row-major, 0–255), e.g. from a dataset.
    pub fn from_pixels(pixels: Vec<f32>) -> ImageItem {
        let mut hasher = DefaultHasher::new();
        for p in &pixels {
            p.to_bits().hash(&mut hasher);
        }
        ImageItem { pixels, hash: hasher.finish() }
    }
}

/// A loaded classifier, ready to run batches.
pub struct Classifier {
    net: Cnn,
    input: InputSpec,
    inference: InferenceSpec,
    labels: Vec<String>,
    device: Device,
}

impl Classifier {
    /// Builds the network from a validated bundle, folded for inference.
    pub fn from_bundle(bundle: &Bundle, device: &Device) -> Result<Classifier> {
        let Architecture::Cnn(cfg) = &bundle.manifest.architecture;
        let net = Cnn::new(cfg, bundle.var_builder(device))
            .map_err(|e| Error::Bundle(e.to_string()))?
            .fused_for_inference()?;
        Ok(Classifier {
            net,
            input: bundle.manifest.input.clone(),
            inference: bundle.manifest.inference.clone(),
            labels: bundle.manifest.labels.clone(),
            device: device.clone(),
        })
    }

    /// Resizes an image onto the model's input grid.
    pub fn prepare(&self, image: &crate::image::GrayImage) -> ImageItem {
        let [_, h, w] = self.input.shape;
        ImageItem::from_pixels(image.resized(h, w))
    }

    /// `[channels, height, width]` the model expects.
    pub fn input_shape(&self) -> [usize; 3] {
        self.input.shape
    }

    /// The class labels, in logit order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Probabilities `[N, classes]` for a batch of prepared images.
    fn probabilities(&self, items: &[ImageItem]) -> Result<Tensor> {
        let [c, h, w] = self.input.shape;
        let scale = 1.0 / (255.0 * self.input.std);
        let shift = self.input.mean / self.input.std;
        let mut data = Vec::with_capacity(items.len() * c * h * w);
        for item in items {
            data.extend(item.pixels.iter().map(|p| p * scale - shift));
        }
        let x = Tensor::from_vec(data, (items.len(), c, h, w), &self.device)?;
        let out = self.net.forward_t(&x, false)?;
        let probs = match (&self.inference, &out.aux_logits) {
            (InferenceSpec::HeadMixture { alpha, beta }, Some(aux)) => {
                let main = softmax(&out.logits, D::Minus1)?;
                let aux = softmax(&(aux / f64::from(*beta))?, D::Minus1)?;
                ((main * f64::from(*alpha))? + (aux * f64::from(1.0 - alpha))?)?
            }
            _ => softmax(&out.logits, D::Minus1)?,
        };
        Ok(probs)
    }
}

impl Family for Classifier {
    type Item = ImageItem;
    type Output = Arc<Vec<f32>>;

    fn cache_key(&self, item: &ImageItem) -> Option<u64> {
        Some(item.hash)
    }

    fn run_batch(&self, items: &[ImageItem]) -> Result<Vec<Arc<Vec<f32>>>> {
        let probs = self.probabilities(items)?.to_device(&Device::Cpu)?.to_vec2::<f32>()?;
        Ok(probs.into_iter().map(Arc::new).collect())
    }

    fn warmup_item(&self) -> ImageItem {
        let [_, h, w] = self.input.shape;
        ImageItem { pixels: vec![0.0; h * w], hash: 0 }
    }
}

/// The `k` most probable labels, highest first.
pub fn top_k(labels: &[String], probs: &[f32], k: usize) -> Vec<Prediction> {
    let mut idx: Vec<usize> = (0..probs.len()).collect();
    idx.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    idx.into_iter().take(k).map(|i| Prediction { label: labels[i].clone(), score: probs[i] }).collect()
}
