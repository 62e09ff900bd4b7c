//! The text embedder family: texts in, one vector per text out; reranking and similarity by cosine.
//! `Runtime::rerank` lives here and also serves cross-encoders, which score each pair jointly
//! (`families::cross_encoder`).
//!
//! The cache and the batcher see token ids, not texts: the cache key hashes the ids (so it covers
//! the text and every option that changes them, such as truncation), and the batch cost is the
//! padded token count. Normalisation and `dimensions` are applied after the cache, so one cached
//! vector serves every combination of them.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use candle_core::Device;

use crate::batcher::BatchConfig;
use crate::bundle::{Bundle, EmbedderSpec, FileEntry};
use crate::families::cross_encoder::CrossEncoderModel;
use crate::family::Family;
use crate::models::sentence_encoder::{expected_tensor_shapes, BertConfig};
use crate::models::served_bert::ServedBert;
use crate::registry::{Loaded, Served};
use crate::runtime::ModelInfo;
use crate::text::TextTokenizer;
use crate::{Error, Result, Runtime};

/// Shortest length bucket: texts up to this many tokens share batches.
const MIN_LENGTH_BUCKET: usize = 16;

/// Texts to embed and how.
#[derive(Debug, Clone)]
pub struct EmbedRequest {
    /// The texts, answered in order.
    pub texts: Vec<String>,
    /// Cut texts longer than the model's limit (else they are refused).
    pub truncate: bool,
    /// Scale to unit length; `None` follows the bundle.
    pub normalize: Option<bool>,
    /// Keep only the first `dimensions` values (then re-normalise when normalising).
    pub dimensions: Option<usize>,
}

/// Token accounting of a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TextUsage {
    /// Tokens the model read, special tokens included, after truncation.
    pub n_tokens: usize,
    /// Texts that were cut to the model's limit.
    pub n_truncated: usize,
}

/// Embeddings in request order.
#[derive(Debug, Clone)]
pub struct EmbedResponse {
    /// `name@version` of the model that answered.
    pub model: String,
    /// One vector per text.
    pub embeddings: Vec<Vec<f32>>,
    /// Token accounting.
    pub usage: TextUsage,
}

/// Documents to order by relevance to a query.
#[derive(Debug, Clone)]
pub struct RerankRequest {
    /// The query.
    pub query: String,
    /// The documents, referred to by index in the answer.
    pub documents: Vec<String>,
    /// Keep only the best `top_n`; `None` keeps all.
    pub top_n: Option<usize>,
    /// Cut texts longer than the model's limit (else they are refused).
    pub truncate: bool,
}

/// One document's relevance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranked {
    /// Index of the document in the request.
    pub index: usize,
    /// Higher is more relevant: an embedder's cosine similarity to the query, in -1..=1, or a
    /// cross-encoder's raw logit for the pair, unbounded.
    pub score: f32,
}

/// Documents by falling score.
#[derive(Debug, Clone)]
pub struct RerankResponse {
    /// `name@version` of the model that answered.
    pub model: String,
    /// Best first; ties keep request order.
    pub results: Vec<Ranked>,
    /// Token accounting.
    pub usage: TextUsage,
}

/// Cosine similarities of sentences to a source sentence.
#[derive(Debug, Clone)]
pub struct SimilarityResponse {
    /// `name@version` of the model that answered.
    pub model: String,
    /// One score per sentence, in request order.
    pub scores: Vec<f32>,
    /// Token accounting.
    pub usage: TextUsage,
}

/// One tokenized text.
#[derive(Debug, Clone)]
pub struct TextItem {
    pub(crate) ids: Vec<u32>,
    pub(crate) hash: u64,
}

impl TextItem {
    pub(crate) fn new(ids: Vec<u32>) -> TextItem {
        let mut hasher = DefaultHasher::new();
        ids.hash(&mut hasher);
        TextItem { hash: hasher.finish(), ids }
    }
}

/// A loaded sentence encoder with its tokenizer.
pub struct Embedder {
    encoder: ServedBert,
    tokenizer: TextTokenizer,
    normalize: bool,
    dimension: usize,
}

impl Embedder {
    /// Builds the encoder and the tokenizer of a validated embedder bundle.
    pub fn from_bundle(bundle: &Bundle, device: &Device) -> Result<Embedder> {
        let Some(spec) = bundle.manifest.embedder() else {
            return Err(Error::Bundle(format!(
                "{} is a {} bundle, not an embedder",
                bundle.model_id(),
                bundle.manifest.kind()
            )));
        };
        let encoder = ServedBert::new(&spec.architecture, spec.pooling, bundle.var_builder(device))
            .map_err(|e| Error::Bundle(e.to_string()))?;
        let tokenizer = load_tokenizer(bundle, &spec.tokenizer, spec.max_seq_length, &spec.architecture)?;
        Ok(Embedder { encoder, tokenizer, normalize: spec.normalize, dimension: spec.architecture.hidden_size })
    }

    /// The width of the embeddings.
    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// The tokenizer, with the model's length limit.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// Tokenizes texts into items, counting tokens and truncations.
    fn prepare(&self, texts: &[String], truncate: bool) -> Result<(Vec<TextItem>, TextUsage)> {
        let mut usage = TextUsage::default();
        let items = texts
            .iter()
            .enumerate()
            .map(|(i, text)| text_item(&self.tokenizer, i, text, truncate, &mut usage))
            .collect::<Result<_>>()?;
        Ok((items, usage))
    }
}

/// Tokenizes input `i` of a request into an item, adding its tokens and any truncation to `usage`;
/// errors name the input.
pub(crate) fn text_item(
    tokenizer: &TextTokenizer,
    i: usize,
    text: &str,
    truncate: bool,
    usage: &mut TextUsage,
) -> Result<TextItem> {
    let encoded = tokenizer.encode(text, truncate).map_err(|e| match e {
        Error::InvalidInput(m) => Error::InvalidInput(format!("input {i}: {m}")),
        other => other,
    })?;
    usage.n_tokens += encoded.ids.len();
    usage.n_truncated += usize::from(encoded.truncated);
    Ok(TextItem::new(encoded.ids))
}

impl Family for Embedder {
    const KIND: &'static str = "embedder";
    type Item = TextItem;
    /// The pooled vector before normalisation.
    type Output = Arc<Vec<f32>>;

    fn cost(&self, item: &TextItem) -> usize {
        item.ids.len()
    }

    /// Every text is padded to the longest of its batch, so that is what a batch costs.
    fn batch_cost(&self, n: usize, max_cost: usize, _sum_cost: usize) -> usize {
        n * max_cost
    }

    /// Power-of-two length buckets: a batch pads at most to twice its shortest text.
    fn group(&self, item: &TextItem) -> u64 {
        length_bucket(item.ids.len())
    }

    fn cache_key(&self, item: &TextItem) -> Option<u64> {
        Some(item.hash)
    }

    fn run_batch(&self, items: &[TextItem]) -> Result<Vec<Arc<Vec<f32>>>> {
        let batch: Vec<&[u32]> = items.iter().map(|item| item.ids.as_slice()).collect();
        Ok(self.encoder.embed(&batch)?.into_iter().map(Arc::new).collect())
    }

    fn warmup_item(&self) -> TextItem {
        let ids = self.tokenizer.encode("warm up", true).map(|e| e.ids).unwrap_or_else(|_| vec![0]);
        TextItem::new(ids)
    }
}

impl Runtime {
    /// Embeds texts with the model `id`, which must be an embedder.
    pub async fn embed(&self, id: &str, request: EmbedRequest) -> Result<EmbedResponse> {
        if request.texts.is_empty() {
            return Err(Error::InvalidInput("at least one text is required".into()));
        }
        let model = self.typed::<Embedder>(id)?;
        let dimensions = check_dimensions(request.dimensions, model.family.dimension())?;
        let normalize = request.normalize.unwrap_or(model.family.normalize);
        let (raw, usage) = self.embed_raw(&model, request.texts, request.truncate).await?;
        let embeddings = raw.iter().map(|v| finish(v, dimensions, normalize)).collect();
        Ok(EmbedResponse { model: model.info.id.clone(), embeddings, usage })
    }

    /// Orders documents by relevance to the query, best first, with the model `id`: an embedder
    /// scores by the cosine similarity of the query's and each document's embeddings (in -1..=1),
    /// a cross-encoder by its head's raw logit on each (query, document) pair (unbounded; its
    /// sigmoid is a probability-like relevance).
    pub async fn rerank(&self, id: &str, request: RerankRequest) -> Result<RerankResponse> {
        if request.documents.is_empty() {
            return Err(Error::InvalidInput("at least one document is required".into()));
        }
        if request.top_n == Some(0) {
            return Err(Error::InvalidInput("top_n must be at least 1".into()));
        }
        let (model, scores, usage) = match self.typed::<Embedder>(id) {
            Ok(model) => {
                let (scores, usage) = self.cosines(&model, request.query, request.documents, request.truncate).await?;
                (model.info.id.clone(), scores, usage)
            }
            Err(Error::WrongKind { model, kind, .. }) => match self.typed::<CrossEncoderModel>(id) {
                Ok(model) => {
                    let (scores, usage) =
                        self.pair_scores(&model, request.query, request.documents, request.truncate).await?;
                    (model.info.id.clone(), scores, usage)
                }
                Err(_) => return Err(Error::WrongKind { model, kind, expected: "embedder or cross_encoder" }),
            },
            Err(e) => return Err(e),
        };
        let mut results: Vec<Ranked> =
            scores.into_iter().enumerate().map(|(index, score)| Ranked { index, score }).collect();
        results.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
        results.truncate(request.top_n.unwrap_or(usize::MAX));
        Ok(RerankResponse { model, results, usage })
    }

    /// Cosine similarity of each sentence to `source`, in request order.
    pub async fn similarity(&self, id: &str, source: String, sentences: Vec<String>) -> Result<SimilarityResponse> {
        if sentences.is_empty() {
            return Err(Error::InvalidInput("at least one sentence is required".into()));
        }
        let model = self.typed::<Embedder>(id)?;
        let (scores, usage) = self.cosines(&model, source, sentences, true).await?;
        Ok(SimilarityResponse { model: model.info.id.clone(), scores, usage })
    }

    /// Tokenizes (off the executor unless the texts are short), then runs the shared request path:
    /// raw pooled vectors.
    async fn embed_raw(
        &self,
        model: &Loaded<Embedder>,
        texts: Vec<String>,
        truncate: bool,
    ) -> Result<(Vec<Arc<Vec<f32>>>, TextUsage)> {
        let family = model.family.clone();
        let chars = texts.iter().map(String::len).sum();
        let (items, usage) = Runtime::prepare(chars, move || family.prepare(&texts, truncate)).await?;
        Ok((self.infer(model, items).await?, usage))
    }

    /// Cosines of `others` to `anchor`, embedded together so they can share a batch.
    async fn cosines(
        &self,
        model: &Loaded<Embedder>,
        anchor: String,
        others: Vec<String>,
        truncate: bool,
    ) -> Result<(Vec<f32>, TextUsage)> {
        let mut texts = Vec::with_capacity(others.len() + 1);
        texts.push(anchor);
        texts.extend(others);
        let (raw, usage) = self.embed_raw(model, texts, truncate).await?;
        let anchor = finish(&raw[0], None, true);
        let scores = raw[1..].iter().map(|v| dot(&anchor, &finish(v, None, true))).collect();
        Ok((scores, usage))
    }
}

/// `dimensions` must keep at least one value and at most all of them.
pub(crate) fn check_dimensions(dimensions: Option<usize>, width: usize) -> Result<Option<usize>> {
    match dimensions {
        Some(d) if d == 0 || d > width => {
            Err(Error::InvalidInput(format!("dimensions must be between 1 and {width}, the model's width, found {d}")))
        }
        other => Ok(other),
    }
}

/// Truncates to `dimensions`, then scales to unit length when `normalize` is set.
pub(crate) fn finish(raw: &[f32], dimensions: Option<usize>, normalize: bool) -> Vec<f32> {
    let mut v = raw[..dimensions.unwrap_or(raw.len()).min(raw.len())].to_vec();
    if normalize {
        let norm = v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x = (f64::from(*x) / norm) as f32);
        }
    }
    v
}

pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The batch group of a text of `len` tokens: power-of-two length buckets, so that a batch pads
/// at most to twice its shortest text and short texts never pad to long ones.
pub(crate) fn length_bucket(len: usize) -> u64 {
    len.max(MIN_LENGTH_BUCKET).next_power_of_two() as u64
}

/// The tokenizer of a text bundle, with its length limit; a tokenizer whose ids reach past the
/// encoder's vocabulary is refused here rather than on the first request that uses them.
pub(crate) fn load_tokenizer(
    bundle: &Bundle,
    path: &str,
    max_seq_length: usize,
    architecture: &BertConfig,
) -> Result<TextTokenizer> {
    let tokenizer = TextTokenizer::from_bytes(bundle.file(path)?, max_seq_length)?;
    if tokenizer.vocab_size() > architecture.vocab_size {
        return Err(Error::Bundle(format!(
            "{path}: the tokenizer has {} tokens, the encoder's vocabulary {}",
            tokenizer.vocab_size(),
            architecture.vocab_size
        )));
    }
    Ok(tokenizer)
}

/// Loads an embedder bundle into a served model.
pub(crate) fn load(
    bundle: &Bundle,
    spec: &EmbedderSpec,
    device: &Device,
    batch: BatchConfig,
) -> Result<Arc<dyn Served>> {
    let embedder = Embedder::from_bundle(bundle, device)?;
    let params = spec.architecture.num_params();
    Ok(Arc::new(Loaded::new(ModelInfo::of(bundle, params), embedder, batch)))
}

/// Checks an embedder section; errors are `(field, message)` under `family`.
pub(crate) fn validate_spec(spec: &EmbedderSpec, files: &[FileEntry]) -> std::result::Result<(), (String, String)> {
    let text =
        TextSpec { architecture: &spec.architecture, tokenizer: &spec.tokenizer, max_seq_length: spec.max_seq_length };
    // `[CLS]`, one token, `[SEP]`.
    validate_text_spec(&text, 3, files)
}

/// What every text family's section has: a BERT, its tokenizer file and a length limit.
pub(crate) struct TextSpec<'a> {
    pub architecture: &'a BertConfig,
    pub tokenizer: &'a str,
    pub max_seq_length: usize,
}

/// Checks a text family's common fields: the architecture, `max_seq_length` between
/// `min_seq_length` (room for the special tokens and some text) and the position table, and the
/// tokenizer listed in `files`.
pub(crate) fn validate_text_spec(
    spec: &TextSpec,
    min_seq_length: usize,
    files: &[FileEntry],
) -> std::result::Result<(), (String, String)> {
    if let Err(e) = spec.architecture.validate() {
        return Err(("architecture".into(), e));
    }
    if spec.max_seq_length < min_seq_length || spec.max_seq_length > spec.architecture.max_position_embeddings {
        return Err((
            "max_seq_length".into(),
            format!(
                "must be between {min_seq_length} and max_position_embeddings ({}), found {}",
                spec.architecture.max_position_embeddings, spec.max_seq_length
            ),
        ));
    }
    if !files.iter().any(|f| f.path == spec.tokenizer) {
        return Err(("tokenizer".into(), format!("{:?} must be listed in `files`", spec.tokenizer)));
    }
    Ok(())
}

/// Every tensor the encoder reads, by name and shape.
pub(crate) fn expected_shapes(spec: &EmbedderSpec) -> Result<BTreeMap<String, Vec<usize>>> {
    Ok(expected_tensor_shapes(&spec.architecture)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finishing_truncates_then_renormalises() {
        let v = finish(&[3.0, 4.0, 12.0], Some(2), true);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6, "{v:?}");
        assert_eq!(finish(&[3.0, 4.0, 12.0], Some(2), false), vec![3.0, 4.0]);
        assert_eq!(finish(&[0.0, 0.0], None, true), vec![0.0, 0.0]);
    }

    #[test]
    fn dimensions_stay_within_the_width() {
        assert!(check_dimensions(Some(0), 4).is_err());
        assert!(check_dimensions(Some(5), 4).is_err());
        assert_eq!(check_dimensions(Some(4), 4).unwrap(), Some(4));
        assert_eq!(check_dimensions(None, 4).unwrap(), None);
    }
}
