//! The image–text family: a dual encoder that embeds images and texts into one space of unit
//! vectors (`embed`), and classifies images zero-shot against free-text labels (`classify`).
//!
//! One item type covers both inputs: an image, resized onto the image tower's grid and cached by
//! its pixels as a classifier's, or a text, tokenized and cached by its token ids as an
//! embedder's. Images and texts never share a batch: images are group 0, texts the embedder's
//! power-of-two length buckets; a text costs its tokens and an image 1, and a batch costs items ×
//! the largest cost, which for texts is the padded token count and for images their number. An
//! output is the model's unit vector; `dimensions` and normalisation apply after the cache, as
//! for embedders.
//!
//! Zero-shot classification embeds the labels with the text tower and the images with the image
//! tower in one request, so they share the queue and the cache (a label set used again is never
//! embedded again), then turns each label's s · cos into a probability by a softmax over the
//! labels, s being the model's learned scale. A request without labels uses the bundle's class
//! names.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use candle_core::Device;

use crate::batcher::BatchConfig;
use crate::bundle::{Bundle, FileEntry, ImageTextSpec, InputSpec};
use crate::families::classifier::{input_batch, top_k, validate_input, ClassifyResponse, ImageItem};
use crate::families::embedder::{
    check_dimensions, dot, finish, length_bucket, load_tokenizer, text_item, validate_text_spec, EmbedResponse,
    TextItem, TextSpec, TextUsage,
};
use crate::family::Family;
use crate::image::GrayImage;
use crate::models::image_text::{expected_tensor_shapes, ImageText};
use crate::registry::{Loaded, Served};
use crate::runtime::ModelInfo;
use crate::text::TextTokenizer;
use crate::{Error, Result, Runtime};

/// One input of an image–text request.
#[derive(Debug, Clone)]
pub enum ImageTextInput {
    /// A text, embedded by the text tower.
    Text(String),
    /// An image on the 0–255 scale, embedded by the image tower.
    Image(GrayImage),
}

/// Texts and images to embed into the shared space, and how.
#[derive(Debug, Clone)]
pub struct ImageTextEmbedRequest {
    /// The inputs, answered in order.
    pub inputs: Vec<ImageTextInput>,
    /// Cut texts longer than the model's limit (else they are refused).
    pub truncate: bool,
    /// Scale to unit length; `None` is yes (the model's vectors are unit length, so this only
    /// matters with `dimensions`).
    pub normalize: Option<bool>,
    /// Keep only the first `dimensions` values (then re-normalise when normalising).
    pub dimensions: Option<usize>,
}

/// Images to classify against labels.
#[derive(Debug, Clone)]
pub struct ZeroShotRequest {
    /// The images, each on the 0–255 scale.
    pub images: Vec<GrayImage>,
    /// Free-text labels to score each image against; `None` uses the bundle's class names.
    pub labels: Option<Vec<String>>,
    /// Labels to return per image, highest probability first.
    pub top_k: usize,
}

/// One prepared input: an image on the model's grid, or a tokenized text.
#[derive(Debug, Clone)]
pub enum ImageTextItem {
    /// Resized pixels.
    Image(ImageItem),
    /// Token ids.
    Text(TextItem),
}

/// A loaded image–text dual encoder with its tokenizer.
pub struct ImageTextModel {
    model: ImageText,
    tokenizer: TextTokenizer,
    input: InputSpec,
    labels: Vec<String>,
    embed_dim: usize,
    device: Device,
}

impl ImageTextModel {
    /// Builds both towers and the tokenizer of a validated image–text bundle.
    pub fn from_bundle(bundle: &Bundle, device: &Device) -> Result<ImageTextModel> {
        let Some(spec) = bundle.manifest.image_text() else {
            return Err(Error::Bundle(format!(
                "{} is a {} bundle, not an image_text one",
                bundle.model_id(),
                bundle.manifest.kind()
            )));
        };
        let model =
            ImageText::new(&spec.architecture, bundle.var_builder(device)).map_err(|e| Error::Bundle(e.to_string()))?;
        let tokenizer = load_tokenizer(bundle, &spec.tokenizer, spec.max_seq_length, &spec.architecture.text)?;
        Ok(ImageTextModel {
            model,
            tokenizer,
            input: spec.input.clone(),
            labels: spec.labels.clone(),
            embed_dim: spec.architecture.embed_dim(),
            device: device.clone(),
        })
    }

    /// The bundle's class names, what zero-shot classification uses without labels.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The tokenizer, with the model's length limit.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// Resizes images and tokenizes texts into items, counting tokens and truncations.
    fn prepare(&self, inputs: &[ImageTextInput], truncate: bool) -> Result<(Vec<ImageTextItem>, TextUsage)> {
        let mut usage = TextUsage::default();
        let items = inputs
            .iter()
            .enumerate()
            .map(|(i, input)| match input {
                ImageTextInput::Image(image) => Ok(ImageTextItem::Image(ImageItem::prepare(image, &self.input))),
                ImageTextInput::Text(text) => {
                    text_item(&self.tokenizer, i, text, truncate, &mut usage).map(ImageTextItem::Text)
                }
            })
            .collect::<Result<_>>()?;
        Ok((items, usage))
    }
}

impl Family for ImageTextModel {
    const KIND: &'static str = "image_text";
    type Item = ImageTextItem;
    /// The model's unit vector.
    type Output = Arc<Vec<f32>>;

    fn cost(&self, item: &ImageTextItem) -> usize {
        match item {
            ImageTextItem::Image(_) => 1,
            ImageTextItem::Text(text) => text.ids.len(),
        }
    }

    /// Texts pad to the longest of their batch; images all cost 1, so this is their count.
    fn batch_cost(&self, n: usize, max_cost: usize, _sum_cost: usize) -> usize {
        n * max_cost
    }

    /// Images apart from texts, and texts in the embedder's length buckets (16 and up).
    fn group(&self, item: &ImageTextItem) -> u64 {
        match item {
            ImageTextItem::Image(_) => 0,
            ImageTextItem::Text(text) => length_bucket(text.ids.len()),
        }
    }

    /// The content hash, salted by the input's kind, so an image and a text never share a key.
    fn cache_key(&self, item: &ImageTextItem) -> Option<u64> {
        let mut hasher = DefaultHasher::new();
        match item {
            ImageTextItem::Image(image) => (0u8, image.hash()).hash(&mut hasher),
            ImageTextItem::Text(text) => (1u8, text.hash).hash(&mut hasher),
        }
        Some(hasher.finish())
    }

    /// Batches hold one kind of input (see [`Family::group`]); a mixed one still runs, each kind
    /// through its tower.
    fn run_batch(&self, items: &[ImageTextItem]) -> Result<Vec<Arc<Vec<f32>>>> {
        let mut images = Vec::new();
        let mut texts = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item {
                ImageTextItem::Image(image) => images.push((i, image)),
                ImageTextItem::Text(text) => texts.push((i, text.ids.as_slice())),
            }
        }
        let mut outputs: Vec<Option<Arc<Vec<f32>>>> = vec![None; items.len()];
        if !images.is_empty() {
            let pixels: Vec<&ImageItem> = images.iter().map(|(_, image)| *image).collect();
            let x = input_batch(&pixels, &self.input, &self.device)?;
            for ((i, _), v) in images.iter().zip(self.model.embed_images(&x)?) {
                outputs[*i] = Some(Arc::new(v));
            }
        }
        if !texts.is_empty() {
            let ids: Vec<&[u32]> = texts.iter().map(|(_, ids)| *ids).collect();
            for ((i, _), v) in texts.iter().zip(self.model.embed_texts(&ids)?) {
                outputs[*i] = Some(Arc::new(v));
            }
        }
        Ok(outputs.into_iter().map(|v| v.expect("every item went through a tower. This is a bug.")).collect())
    }

    fn warmup_item(&self) -> ImageTextItem {
        let [_, h, w] = self.input.shape;
        ImageTextItem::Image(ImageItem::from_pixels(vec![0.0; h * w]))
    }
}

impl Runtime {
    /// Embeds texts and images into the shared space with the model `id`, which must be an
    /// image–text dual encoder; one vector per input, in order.
    pub async fn embed_image_text(&self, id: &str, request: ImageTextEmbedRequest) -> Result<EmbedResponse> {
        if request.inputs.is_empty() {
            return Err(Error::InvalidInput("at least one input is required".into()));
        }
        let model = self.typed::<ImageTextModel>(id)?;
        let dimensions = check_dimensions(request.dimensions, model.family.embed_dim)?;
        let normalize = request.normalize.unwrap_or(true);
        let (raw, usage) = self.image_text_vectors(&model, request.inputs, request.truncate).await?;
        let embeddings = raw.iter().map(|v| finish(v, dimensions, normalize)).collect();
        Ok(EmbedResponse { model: model.info.id.clone(), embeddings, usage })
    }

    /// Classifies images zero-shot with the model `id`, which must be an image–text dual encoder:
    /// each label (the request's, else the bundle's class names) is embedded by the text tower,
    /// and an image's probabilities are the softmax over labels of s · cos(image, label).
    pub async fn classify_zero_shot(&self, id: &str, request: ZeroShotRequest) -> Result<ClassifyResponse> {
        if request.images.is_empty() {
            return Err(Error::InvalidInput("at least one image is required".into()));
        }
        if request.top_k == 0 {
            return Err(Error::InvalidInput("top_k must be at least 1".into()));
        }
        let model = self.typed::<ImageTextModel>(id)?;
        let labels = request.labels.unwrap_or_else(|| model.family.labels.clone());
        check_labels(&labels).map_err(Error::InvalidInput)?;
        let n_labels = labels.len();
        let inputs = labels
            .iter()
            .cloned()
            .map(ImageTextInput::Text)
            .chain(request.images.into_iter().map(ImageTextInput::Image));
        let (vectors, _) = self.image_text_vectors(&model, inputs.collect(), true).await?;
        let (label_vectors, image_vectors) = vectors.split_at(n_labels);
        let scale = model.family.model.logit_scale();
        let k = request.top_k.min(n_labels);
        let predictions = image_vectors
            .iter()
            .map(|image| {
                let logits: Vec<f32> = label_vectors.iter().map(|label| scale * dot(image, label)).collect();
                top_k(&labels, &softmax(&logits), k)
            })
            .collect();
        Ok(ClassifyResponse { model: model.info.id.clone(), predictions })
    }

    /// Preparation (off the executor unless small), then the shared request path: unit vectors.
    async fn image_text_vectors(
        &self,
        model: &Loaded<ImageTextModel>,
        inputs: Vec<ImageTextInput>,
        truncate: bool,
    ) -> Result<(Vec<Arc<Vec<f32>>>, TextUsage)> {
        let family = model.family.clone();
        let units = inputs
            .iter()
            .map(|input| match input {
                ImageTextInput::Text(text) => text.len(),
                ImageTextInput::Image(image) => image.width() * image.height(),
            })
            .sum();
        let (items, usage) = Runtime::prepare(units, move || family.prepare(&inputs, truncate)).await?;
        Ok((self.infer(model, items).await?, usage))
    }
}

/// Labels to classify against: at least one, none blank.
fn check_labels(labels: &[String]) -> std::result::Result<(), String> {
    if labels.is_empty() {
        return Err("labels must hold at least one label".into());
    }
    if let Some(i) = labels.iter().position(|label| label.chars().all(is_blank)) {
        return Err(format!("labels[{i}] is blank"));
    }
    Ok(())
}

/// Whitespace as regular expressions' `\s` has it (ECMAScript's, which JSON Schema patterns use),
/// so that a pattern `\S` states exactly which labels are not blank.
fn is_blank(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}' | '\u{feff}'
    )
}

/// Probabilities from logits, computed in f64 after subtracting the largest.
fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = logits.iter().map(|&z| f64::from(z - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| (e / sum) as f32).collect()
}

/// Loads an image–text bundle into a served model.
pub(crate) fn load(
    bundle: &Bundle,
    spec: &ImageTextSpec,
    device: &Device,
    batch: BatchConfig,
) -> Result<Arc<dyn Served>> {
    let model = ImageTextModel::from_bundle(bundle, device)?;
    let params = spec.architecture.num_params().map_err(Error::Bundle)?;
    Ok(Arc::new(Loaded::new(ModelInfo::of(bundle, params), model, batch)))
}

/// Checks an image–text section; errors are `(field, message)` under `family`.
pub(crate) fn validate_spec(spec: &ImageTextSpec, files: &[FileEntry]) -> std::result::Result<(), (String, String)> {
    if let Err(e) = spec.architecture.validate() {
        return Err(("architecture".into(), e));
    }
    validate_input(&spec.architecture.image, &spec.input)?;
    let text = TextSpec {
        architecture: &spec.architecture.text,
        tokenizer: &spec.tokenizer,
        max_seq_length: spec.max_seq_length,
    };
    // `[CLS]`, one token, `[SEP]`.
    validate_text_spec(&text, 3, files)?;
    check_labels(&spec.labels).map_err(|e| ("labels".to_owned(), e))
}

/// Every tensor the model reads, by name and shape: both towers', the projection and the scale.
pub(crate) fn expected_shapes(spec: &ImageTextSpec) -> Result<BTreeMap<String, Vec<usize>>> {
    Ok(expected_tensor_shapes(&spec.architecture)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_is_stable_and_sums_to_one() {
        let p = softmax(&[1000.0, 1000.0, 0.0]);
        assert!((p[0] - 0.5).abs() < 1e-6 && (p[1] - 0.5).abs() < 1e-6 && p[2] < 1e-30, "{p:?}");
        assert_eq!(softmax(&[3.0]), vec![1.0]);
    }

    #[test]
    fn labels_are_non_empty_and_never_blank() {
        assert!(check_labels(&[]).unwrap_err().contains("at least one"));
        assert_eq!(check_labels(&["Bag".into(), " ".into()]).unwrap_err(), "labels[1] is blank");
        assert!(check_labels(&["\u{feff}\u{3000}\t".into()]).is_err());
        assert!(check_labels(&["\u{85}".into()]).is_ok(), "NEL is not `\\s`, so the pattern lets it through");
        assert!(check_labels(&["Bag".into()]).is_ok());
    }
}
