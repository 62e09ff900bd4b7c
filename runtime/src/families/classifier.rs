//! The image classifier family: images in, class probabilities out.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::ops::softmax;
use candle_nn::{VarBuilder, VarMap};

use crate::batcher::BatchConfig;
use crate::bundle::{shapes_of, Bundle, ClassifierSpec, InferenceSpec, InputSpec};
use crate::family::Family;
use crate::models::cnn::{Cnn, CnnConfig};
use crate::registry::{Loaded, Served};
use crate::runtime::ModelInfo;
use crate::{Error, Result, Runtime};

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

/// Class probabilities per image, in request order.
#[derive(Debug, Clone, PartialEq)]
pub struct Probabilities {
    /// `name@version` of the model that answered.
    pub model: String,
    /// One vector per image, in the order of the manifest's labels.
    pub probabilities: Vec<Vec<f32>>,
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

    /// An image resized onto the grid of `input`, the way every image family prepares one.
    pub(crate) fn prepare(image: &crate::image::GrayImage, input: &InputSpec) -> ImageItem {
        let [_, h, w] = input.shape;
        ImageItem::from_pixels(image.resized(h, w))
    }

    /// A hash of the pixels, for cache keys.
    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }
}

/// Prepared images as the network's input `[n, c, h, w]`, normalised as `input` says:
/// `(pixel / 255 - mean) / std`.
pub(crate) fn input_batch(items: &[&ImageItem], input: &InputSpec, device: &Device) -> Result<Tensor> {
    let [c, h, w] = input.shape;
    let scale = 1.0 / (255.0 * input.std);
    let shift = input.mean / input.std;
    let mut data = Vec::with_capacity(items.len() * c * h * w);
    for item in items {
        data.extend(item.pixels.iter().map(|p| p * scale - shift));
    }
    Ok(Tensor::from_vec(data, (items.len(), c, h, w), device)?)
}

/// A loaded classifier, ready to run batches.
pub struct Classifier {
    net: Cnn,
    input: InputSpec,
    inference: InferenceSpec,
    labels: Vec<String>,
    device: Device,
}

impl Runtime {
    /// Classifies images with the model `id`, which must be a classifier.
    pub async fn classify(&self, id: &str, request: ClassifyRequest) -> Result<ClassifyResponse> {
        if request.images.is_empty() {
            return Err(Error::InvalidInput("at least one image is required".into()));
        }
        if request.top_k == 0 {
            return Err(Error::InvalidInput("top_k must be at least 1".into()));
        }
        let model = self.typed::<Classifier>(id)?;
        let k = request.top_k.min(model.family.labels().len());
        let probs = self.classifier_probabilities(&model, request.images).await?;
        let predictions = probs.iter().map(|p| top_k(model.family.labels(), p, k)).collect();
        Ok(ClassifyResponse { model: model.info.id.clone(), predictions })
    }

    /// Every class probability of each image, in label order: what tensor protocols answer, where
    /// `classify`'s top-k would lose the order the model's output has.
    pub async fn class_probabilities(&self, id: &str, images: Vec<crate::image::GrayImage>) -> Result<Probabilities> {
        if images.is_empty() {
            return Err(Error::InvalidInput("at least one image is required".into()));
        }
        let model = self.typed::<Classifier>(id)?;
        let probs = self.classifier_probabilities(&model, images).await?;
        Ok(Probabilities { model: model.info.id.clone(), probabilities: probs.iter().map(|p| p.to_vec()).collect() })
    }

    /// Resizing on the blocking pool, then the shared request path.
    async fn classifier_probabilities(
        &self,
        model: &Loaded<Classifier>,
        images: Vec<crate::image::GrayImage>,
    ) -> Result<Vec<Arc<Vec<f32>>>> {
        let family = model.family.clone();
        let pixels = images.iter().map(|img| img.width() * img.height()).sum();
        let items =
            Runtime::prepare(pixels, move || Ok(images.iter().map(|img| family.prepare(img)).collect())).await?;
        self.infer(model, items).await
    }
}

/// Loads a classifier bundle into a served model.
pub(crate) fn load(
    bundle: &Bundle,
    spec: &ClassifierSpec,
    device: &Device,
    batch: BatchConfig,
) -> Result<Arc<dyn Served>> {
    let classifier = Classifier::from_bundle(bundle, device)?;
    let params = spec.architecture.num_params().map_err(Error::Bundle)?;
    Ok(Arc::new(Loaded::new(ModelInfo::of(bundle, params), classifier, batch)))
}

/// Checks a classifier section; errors are `(field, message)` under `family`.
pub(crate) fn validate_spec(spec: &ClassifierSpec) -> std::result::Result<(), (String, String)> {
    let bad = |field: &str, msg: String| Err((field.to_owned(), msg));
    let cnn = &spec.architecture;
    if let Err(e) = cnn.feature_dim() {
        return bad("architecture", e);
    }
    validate_input(cnn, &spec.input)?;
    if spec.labels.len() != cnn.num_classes {
        return bad(
            "labels",
            format!("expected {} labels (num_classes), found {}", cnn.num_classes, spec.labels.len()),
        );
    }
    if let InferenceSpec::HeadMixture { alpha, beta } = spec.inference {
        if !cnn.aux_head {
            return bad("inference", "head_mixture needs an architecture with aux_head".into());
        }
        if !((0.0..=1.0).contains(&alpha) && beta.is_finite() && beta > 0.0) {
            return bad("inference", format!("alpha must be in [0, 1] and beta positive, found {alpha} and {beta}"));
        }
    }
    Ok(())
}

/// Checks the input section of a family whose images go through `cnn`: its shape is the
/// network's, it computes in f32, and the normalisation is finite with a positive std.
pub(crate) fn validate_input(cnn: &CnnConfig, input: &InputSpec) -> std::result::Result<(), (String, String)> {
    let bad = |field: &str, msg: String| Err((field.to_owned(), msg));
    if cnn.input_shape != input.shape {
        return bad(
            "input.shape",
            format!("expected {:?} (the architecture's input), found {:?}", cnn.input_shape, input.shape),
        );
    }
    if input.dtype != "f32" {
        return bad("input.dtype", format!("expected \"f32\", found {:?}", input.dtype));
    }
    if !(input.std.is_finite() && input.std > 0.0 && input.mean.is_finite()) {
        return bad(
            "input.std",
            format!("mean and std must be finite and std positive, found {} and {}", input.mean, input.std),
        );
    }
    Ok(())
}

/// Every tensor the classifier's CNN builds, by name and shape.
pub(crate) fn expected_shapes(spec: &ClassifierSpec) -> Result<BTreeMap<String, Vec<usize>>> {
    let varmap = VarMap::new();
    Cnn::new(&spec.architecture, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
    Ok(shapes_of(&varmap))
}

/// The CNN of a classifier bundle, folded for inference: the one way a bundle becomes a network,
/// used by serving and by training's frozen teachers alike.
pub fn inference_cnn(bundle: &Bundle, device: &Device) -> Result<Cnn> {
    let Some(spec) = bundle.manifest.classifier() else {
        return Err(Error::Bundle(format!(
            "{} is a {} bundle, not a classifier",
            bundle.model_id(),
            bundle.manifest.kind()
        )));
    };
    Ok(Cnn::new(&spec.architecture, bundle.var_builder(device))
        .map_err(|e| Error::Bundle(e.to_string()))?
        .fused_for_inference()?)
}

impl Classifier {
    /// Builds the network from a validated classifier bundle, folded for inference.
    pub fn from_bundle(bundle: &Bundle, device: &Device) -> Result<Classifier> {
        let net = inference_cnn(bundle, device)?;
        let spec = bundle.manifest.classifier().expect("inference_cnn checked the kind. This is a bug.");
        Ok(Classifier {
            net,
            input: spec.input.clone(),
            inference: spec.inference.clone(),
            labels: spec.labels.clone(),
            device: device.clone(),
        })
    }

    /// Resizes an image onto the model's input grid.
    pub fn prepare(&self, image: &crate::image::GrayImage) -> ImageItem {
        ImageItem::prepare(image, &self.input)
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
        let x = input_batch(&items.iter().collect::<Vec<_>>(), &self.input, &self.device)?;
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
    const KIND: &'static str = "classifier";
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
