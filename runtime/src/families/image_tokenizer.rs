//! The image tokenizer family: images to discrete tokens (`tokenize`), pixel tokens back to an
//! image (`detokenize`), and the head run on an image's semantic tokens (`classify`), so that what
//! the tokens mean can be checked from outside.
//!
//! The three operations are items of one family, so they share the model's queue, its batching
//! and its cache; an item's group is its operation, so a batch never mixes them. Tokens are laid
//! out row-major over the code grid with the depth innermost: token `((r·width) + c)·depth + d` is
//! depth `d` at row `r`, column `c`.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{VarBuilder, VarMap};

use crate::batcher::BatchConfig;
use crate::bundle::{shapes_of, Bundle, ImageTokenizerSpec};
use crate::families::classifier::{top_k, ClassifyResponse, Probabilities};
use crate::families::generator::GeneratedImage;
use crate::family::Family;
use crate::image::GrayImage;
use crate::models::image_tokenizer::{parameter_count, to_model_space, ImageTokenizer};
use crate::registry::{Loaded, Served};
use crate::runtime::ModelInfo;
use crate::{Error, Result, Runtime};

/// The grid a list of tokens covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenGrid {
    /// Rows of the code grid.
    pub height: usize,
    /// Columns of the code grid.
    pub width: usize,
    /// Codes per position.
    pub depth: usize,
}

impl TokenGrid {
    /// Tokens the grid holds.
    pub fn len(&self) -> usize {
        self.height * self.width * self.depth
    }

    /// Whether the grid holds no token.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The tokens of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageTokens {
    /// The stream the decoder reads.
    pub pixel_tokens: Vec<u32>,
    /// The stream the head reads (`None` for a pixel-only tokenizer).
    pub semantic_tokens: Option<Vec<u32>>,
    /// The grid both streams cover.
    pub grid: TokenGrid,
}

/// Tokens per image, in request order.
#[derive(Debug, Clone)]
pub struct TokenizeResponse {
    /// `name@version` of the model that answered.
    pub model: String,
    /// One entry per image.
    pub tokens: Vec<Arc<ImageTokens>>,
}

/// The image that pixel tokens decode to.
#[derive(Debug, Clone)]
pub struct DetokenizeResponse {
    /// `name@version` of the model that answered.
    pub model: String,
    /// The decoded image (8-bit grayscale and PNG).
    pub image: Arc<GeneratedImage>,
}

/// One unit of work.
#[derive(Debug, Clone)]
pub enum TokenizerItem {
    /// An image on the model's grid (0–255) to tokenize.
    Tokenize(ImagePixels),
    /// Pixel tokens, checked against the model's grid and vocabulary, to decode.
    Detokenize(Vec<u32>),
    /// An image whose semantic tokens the head classifies.
    Classify(ImagePixels),
}

/// Pixels on the model's grid with their content hash.
#[derive(Debug, Clone)]
pub struct ImagePixels {
    pixels: Vec<f32>,
    hash: u64,
}

impl ImagePixels {
    fn new(pixels: Vec<f32>) -> ImagePixels {
        let mut hasher = DefaultHasher::new();
        pixels.iter().for_each(|p| p.to_bits().hash(&mut hasher));
        ImagePixels { pixels, hash: hasher.finish() }
    }
}

/// What one item gives.
#[derive(Debug, Clone)]
pub enum TokenizerOutput {
    /// A tokenized image.
    Tokens(Arc<ImageTokens>),
    /// A decoded image.
    Image(Arc<GeneratedImage>),
    /// Class probabilities from the semantic tokens.
    Probabilities(Arc<Vec<f32>>),
}

/// A loaded image tokenizer.
pub struct ImageTokenizerModel {
    net: ImageTokenizer,
    labels: Vec<String>,
    device: Device,
}

impl ImageTokenizerModel {
    /// Builds the network from a validated bundle.
    pub fn from_bundle(bundle: &Bundle, spec: &ImageTokenizerSpec, device: &Device) -> Result<ImageTokenizerModel> {
        let net = ImageTokenizer::new(&spec.architecture, bundle.var_builder(device))
            .map_err(|e| Error::Bundle(e.to_string()))?;
        Ok(ImageTokenizerModel { net, labels: spec.labels.clone(), device: device.clone() })
    }

    /// The network.
    pub fn network(&self) -> &ImageTokenizer {
        &self.net
    }

    /// The grid every stream's tokens cover.
    pub fn grid(&self) -> TokenGrid {
        let (height, width) = self.net.config().grid();
        TokenGrid { height, width, depth: self.net.config().depth }
    }

    fn prepare(&self, image: &GrayImage) -> ImagePixels {
        let [_, h, w] = self.net.config().encoder.image_shape;
        ImagePixels::new(image.resized(h, w))
    }

    /// Checks pixel tokens against the model's grid and vocabulary.
    pub fn check_tokens(&self, tokens: &[i64], grid: TokenGrid) -> Result<Vec<u32>> {
        let want = self.grid();
        if grid != want {
            return Err(Error::InvalidInput(format!(
                "shape {}x{}x{} does not match this model's token grid {}x{}x{} (height x width x depth)",
                grid.height, grid.width, grid.depth, want.height, want.width, want.depth
            )));
        }
        if tokens.len() != want.len() {
            return Err(Error::InvalidInput(format!(
                "{} pixel tokens for a {}x{}x{} grid, which holds {}",
                tokens.len(),
                want.height,
                want.width,
                want.depth,
                want.len()
            )));
        }
        let size = self.net.pixel_quantizer().size() as i64;
        match tokens.iter().position(|&t| !(0..size).contains(&t)) {
            Some(i) => Err(Error::InvalidInput(format!(
                "pixel_tokens[{i}] = {} is outside the codebook's 0..{size}",
                tokens[i]
            ))),
            None => Ok(tokens.iter().map(|&t| t as u32).collect()),
        }
    }

    fn images(&self, items: &[&ImagePixels]) -> Result<Tensor> {
        let shape = self.net.config().encoder.image_shape;
        let data = items.iter().flat_map(|i| i.pixels.iter().map(|&p| to_model_space(p))).collect::<Vec<_>>();
        Ok(Tensor::from_vec(data, (items.len(), shape[0], shape[1], shape[2]), &self.device)?)
    }

    fn tokenize(&self, items: &[&ImagePixels]) -> Result<Vec<TokenizerOutput>> {
        let codes = self.net.encode(&self.images(items)?)?;
        let flat = |t: &Tensor| -> Result<Vec<Vec<u32>>> { Ok(t.flatten_from(1)?.to_device(&Device::Cpu)?.to_vec2()?) };
        let pixel = flat(&codes.pixel)?;
        let semantic = codes.semantic.as_ref().map(flat).transpose()?;
        let grid = self.grid();
        Ok(pixel
            .into_iter()
            .enumerate()
            .map(|(i, pixel_tokens)| {
                let semantic_tokens = semantic.as_ref().map(|s| s[i].clone());
                TokenizerOutput::Tokens(Arc::new(ImageTokens { pixel_tokens, semantic_tokens, grid }))
            })
            .collect())
    }

    fn detokenize(&self, items: &[&Vec<u32>]) -> Result<Vec<TokenizerOutput>> {
        let grid = self.grid();
        let data = items.iter().flat_map(|t| t.iter().copied()).collect::<Vec<u32>>();
        let codes = Tensor::from_vec(data, (items.len(), grid.height * grid.width, grid.depth), &self.device)?;
        let images = self.net.decode(&codes)?;
        let shape = self.net.config().encoder.image_shape;
        let values = images.to_device(&Device::Cpu)?.flatten_from(1)?.to_vec2::<f32>()?;
        values
            .iter()
            .map(|v| Ok(TokenizerOutput::Image(Arc::new(GeneratedImage::from_model_space(v, shape)?))))
            .collect()
    }

    fn classify(&self, items: &[&ImagePixels]) -> Result<Vec<TokenizerOutput>> {
        let codes = self.net.encode(&self.images(items)?)?;
        let Some(semantic) = codes.semantic else {
            return Err(Error::InvalidInput("this tokenizer has no semantic tokens to classify".into()));
        };
        let probs = candle_nn::ops::softmax(&self.net.classify(&semantic)?, D::Minus1)?;
        let rows = probs.to_device(&Device::Cpu)?.to_vec2::<f32>()?;
        Ok(rows.into_iter().map(|p| TokenizerOutput::Probabilities(Arc::new(p))).collect())
    }
}

impl Family for ImageTokenizerModel {
    const KIND: &'static str = "image_tokenizer";
    type Item = TokenizerItem;
    type Output = TokenizerOutput;

    fn group(&self, item: &TokenizerItem) -> u64 {
        match item {
            TokenizerItem::Tokenize(_) => 0,
            TokenizerItem::Detokenize(_) => 1,
            TokenizerItem::Classify(_) => 2,
        }
    }

    fn cache_key(&self, item: &TokenizerItem) -> Option<u64> {
        let mut hasher = DefaultHasher::new();
        self.group(item).hash(&mut hasher);
        match item {
            TokenizerItem::Tokenize(p) | TokenizerItem::Classify(p) => p.hash.hash(&mut hasher),
            TokenizerItem::Detokenize(tokens) => tokens.hash(&mut hasher),
        }
        Some(hasher.finish())
    }

    fn run_batch(&self, items: &[TokenizerItem]) -> Result<Vec<TokenizerOutput>> {
        // The batcher groups items by operation, so the first item names the whole batch's.
        match items.first() {
            None => Ok(Vec::new()),
            Some(TokenizerItem::Tokenize(_)) => self.tokenize(&pixels_of(items)?),
            Some(TokenizerItem::Classify(_)) => self.classify(&pixels_of(items)?),
            Some(TokenizerItem::Detokenize(_)) => {
                let tokens = items
                    .iter()
                    .map(|i| match i {
                        TokenizerItem::Detokenize(t) => Ok(t),
                        _ => Err(Error::Internal("a batch mixed tokenizer operations. This is a bug.".into())),
                    })
                    .collect::<Result<Vec<_>>>()?;
                self.detokenize(&tokens)
            }
        }
    }

    fn warmup_item(&self) -> TokenizerItem {
        let [_, h, w] = self.net.config().encoder.image_shape;
        TokenizerItem::Tokenize(ImagePixels::new(vec![0.0; h * w]))
    }
}

fn pixels_of(items: &[TokenizerItem]) -> Result<Vec<&ImagePixels>> {
    items
        .iter()
        .map(|i| match i {
            TokenizerItem::Tokenize(p) | TokenizerItem::Classify(p) => Ok(p),
            TokenizerItem::Detokenize(_) => {
                Err(Error::Internal("a batch mixed tokenizer operations. This is a bug.".into()))
            }
        })
        .collect()
}

impl Runtime {
    /// The tokens of each image, with the tokenizer `id`.
    pub async fn tokenize(&self, id: &str, images: Vec<GrayImage>) -> Result<TokenizeResponse> {
        let model = self.tokenizer_items(id, images, TokenizerItem::Tokenize).await?;
        let tokens = model
            .1
            .into_iter()
            .map(|o| match o {
                TokenizerOutput::Tokens(t) => Ok(t),
                _ => Err(Error::Internal("tokenize answered another operation. This is a bug.".into())),
            })
            .collect::<Result<_>>()?;
        Ok(TokenizeResponse { model: model.0, tokens })
    }

    /// The image that `pixel_tokens` on `grid` decode to, with the tokenizer `id`. Tokens out of
    /// the codebook's range and a grid other than the model's are invalid input.
    pub async fn detokenize(&self, id: &str, pixel_tokens: &[i64], grid: TokenGrid) -> Result<DetokenizeResponse> {
        let model = self.typed::<ImageTokenizerModel>(id)?;
        let tokens = model.family.check_tokens(pixel_tokens, grid)?;
        match self.infer(&model, vec![TokenizerItem::Detokenize(tokens)]).await?.pop() {
            Some(TokenizerOutput::Image(image)) => Ok(DetokenizeResponse { model: model.info.id.clone(), image }),
            _ => Err(Error::Internal("detokenize answered another operation. This is a bug.".into())),
        }
    }

    /// Classifies images by the head run on their semantic tokens.
    pub async fn classify_by_tokens(&self, id: &str, images: Vec<GrayImage>, top: usize) -> Result<ClassifyResponse> {
        if top == 0 {
            return Err(Error::InvalidInput("top_k must be at least 1".into()));
        }
        let probabilities = self.token_class_probabilities(id, images).await?;
        let model = self.typed::<ImageTokenizerModel>(id)?;
        let labels = &model.family.labels;
        let k = top.min(labels.len());
        let predictions = probabilities.probabilities.iter().map(|p| top_k(labels, p, k)).collect();
        Ok(ClassifyResponse { model: probabilities.model, predictions })
    }

    /// Every class probability of each image from its semantic tokens, in label order.
    pub async fn token_class_probabilities(&self, id: &str, images: Vec<GrayImage>) -> Result<Probabilities> {
        let (model, outputs) = self.tokenizer_items(id, images, TokenizerItem::Classify).await?;
        let probabilities = outputs
            .into_iter()
            .map(|o| match o {
                TokenizerOutput::Probabilities(p) => Ok(p.to_vec()),
                _ => Err(Error::Internal("classify answered another operation. This is a bug.".into())),
            })
            .collect::<Result<_>>()?;
        Ok(Probabilities { model, probabilities })
    }

    /// Resizes images on the blocking pool, wraps each as an item, and runs them.
    async fn tokenizer_items(
        &self,
        id: &str,
        images: Vec<GrayImage>,
        item: fn(ImagePixels) -> TokenizerItem,
    ) -> Result<(String, Vec<TokenizerOutput>)> {
        if images.is_empty() {
            return Err(Error::InvalidInput("at least one image is required".into()));
        }
        let model = self.typed::<ImageTokenizerModel>(id)?;
        let family = model.family.clone();
        let pixels = images.iter().map(|img| img.width() * img.height()).sum();
        let items =
            Runtime::prepare(pixels, move || Ok(images.iter().map(|img| item(family.prepare(img))).collect())).await?;
        Ok((model.info.id.clone(), self.infer(&model, items).await?))
    }

    /// The token grid of the tokenizer `id`.
    pub fn token_grid(&self, id: &str) -> Result<TokenGrid> {
        Ok(self.typed::<ImageTokenizerModel>(id)?.family.grid())
    }
}

/// Loads a tokenizer bundle into a served model.
pub(crate) fn load(
    bundle: &Bundle,
    spec: &ImageTokenizerSpec,
    device: &Device,
    batch: BatchConfig,
) -> Result<Arc<dyn Served>> {
    let model = ImageTokenizerModel::from_bundle(bundle, spec, device)?;
    let params = parameter_count(&spec.architecture)?;
    Ok(Arc::new(Loaded::new(ModelInfo::of(bundle, params), model, batch)))
}

/// Checks a tokenizer section; errors are `(field, message)` under `family`.
pub(crate) fn validate_spec(spec: &ImageTokenizerSpec) -> std::result::Result<(), (String, String)> {
    if let Err(e) = spec.architecture.validate() {
        return Err(("architecture".into(), e));
    }
    let classes = spec.architecture.encoder.num_classes;
    if spec.labels.len() != classes {
        return Err(("labels".into(), format!("expected {classes} labels (num_classes), found {}", spec.labels.len())));
    }
    Ok(())
}

/// Every tensor the tokenizer builds, by name and shape.
pub(crate) fn expected_shapes(spec: &ImageTokenizerSpec) -> Result<BTreeMap<String, Vec<usize>>> {
    let varmap = VarMap::new();
    ImageTokenizer::new(&spec.architecture, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
    Ok(shapes_of(&varmap))
}
