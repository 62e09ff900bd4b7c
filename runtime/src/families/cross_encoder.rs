//! The cross-encoder family: (query, document) pairs in, one relevance score per pair out, served
//! by the rerank routes (`Runtime::rerank` dispatches on the model's kind).
//!
//! An item is one pair, tokenized as `[CLS] query [SEP] document [SEP]`: the cache key hashes its
//! token ids and where the document's segment starts (so it covers both texts and every option
//! that changes their ids, such as truncation), a pair costs its token count, and batches are
//! grouped and charged like the embedder's texts, by padded tokens. The score is the head's raw
//! logit: unbounded, comparable between the documents of one query, and a probability-like
//! relevance after a sigmoid.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use candle_core::Device;

use crate::batcher::BatchConfig;
use crate::bundle::{Bundle, CrossEncoderSpec, FileEntry};
use crate::families::embedder::{length_bucket, load_tokenizer, validate_text_spec, TextSpec, TextUsage};
use crate::family::Family;
use crate::models::cross_encoder::{expected_tensor_shapes, CrossEncoder};
use crate::models::sentence_encoder::SegmentedIds;
use crate::registry::{Loaded, Served};
use crate::runtime::ModelInfo;
use crate::text::TextTokenizer;
use crate::{Error, Result, Runtime};

/// One tokenized (query, document) pair.
#[derive(Debug, Clone)]
pub struct PairItem {
    ids: Vec<u32>,
    /// Where token type 1 starts.
    second: usize,
    hash: u64,
}

impl PairItem {
    fn new(ids: Vec<u32>, second: usize) -> PairItem {
        let mut hasher = DefaultHasher::new();
        ids.hash(&mut hasher);
        second.hash(&mut hasher);
        PairItem { hash: hasher.finish(), ids, second }
    }
}

/// A loaded cross-encoder with its tokenizer.
pub struct CrossEncoderModel {
    model: CrossEncoder,
    tokenizer: TextTokenizer,
}

impl CrossEncoderModel {
    /// Builds the model and the tokenizer of a validated cross-encoder bundle.
    pub fn from_bundle(bundle: &Bundle, device: &Device) -> Result<CrossEncoderModel> {
        let Some(spec) = bundle.manifest.cross_encoder() else {
            return Err(Error::Bundle(format!(
                "{} is a {} bundle, not a cross-encoder",
                bundle.model_id(),
                bundle.manifest.kind()
            )));
        };
        let model = CrossEncoder::new(&spec.architecture, spec.pooling, bundle.var_builder(device))
            .map_err(|e| Error::Bundle(e.to_string()))?;
        let tokenizer = load_tokenizer(bundle, &spec.tokenizer, spec.max_seq_length, &spec.architecture)?;
        Ok(CrossEncoderModel { model, tokenizer })
    }

    /// The tokenizer, with the model's length limit.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// Tokenizes the pair of `query` with each document into items, counting tokens and
    /// truncations (a pair cut to the limit counts once).
    fn prepare(&self, query: &str, documents: &[String], truncate: bool) -> Result<(Vec<PairItem>, TextUsage)> {
        let mut usage = TextUsage::default();
        let mut items = Vec::with_capacity(documents.len());
        for (i, document) in documents.iter().enumerate() {
            let encoded = self.tokenizer.encode_pair(query, document, truncate).map_err(|e| match e {
                Error::InvalidInput(m) => Error::InvalidInput(format!("document {i} with the query: {m}")),
                other => other,
            })?;
            usage.n_tokens += encoded.ids.len();
            usage.n_truncated += usize::from(encoded.truncated);
            items.push(PairItem::new(encoded.ids, encoded.second));
        }
        Ok((items, usage))
    }
}

impl Family for CrossEncoderModel {
    const KIND: &'static str = "cross_encoder";
    type Item = PairItem;
    /// The head's raw logit.
    type Output = f32;

    fn cost(&self, item: &PairItem) -> usize {
        item.ids.len()
    }

    /// Charged like the embedder's texts: every pair as long as the longest of its batch.
    fn batch_cost(&self, n: usize, max_cost: usize, _sum_cost: usize) -> usize {
        n * max_cost
    }

    fn group(&self, item: &PairItem) -> u64 {
        length_bucket(item.ids.len())
    }

    fn cache_key(&self, item: &PairItem) -> Option<u64> {
        Some(item.hash)
    }

    fn run_batch(&self, items: &[PairItem]) -> Result<Vec<f32>> {
        let batch: Vec<SegmentedIds> =
            items.iter().map(|item| SegmentedIds { ids: &item.ids, second: item.second }).collect();
        self.model.score(&batch)
    }

    fn warmup_item(&self) -> PairItem {
        match self.tokenizer.encode_pair("warm up", "warm up", true) {
            Ok(pair) => PairItem::new(pair.ids, pair.second),
            Err(_) => PairItem::new(vec![0], 1),
        }
    }
}

impl Runtime {
    /// The cross-encoder's raw logit for `query` with each document, in request order: what
    /// [`Runtime::rerank`] ranks by for a cross-encoder. Tokenizing runs off the executor unless
    /// the texts are short.
    pub(crate) async fn pair_scores(
        &self,
        model: &Loaded<CrossEncoderModel>,
        query: String,
        documents: Vec<String>,
        truncate: bool,
    ) -> Result<(Vec<f32>, TextUsage)> {
        let family = model.family.clone();
        // Each pair tokenizes the query again.
        let chars = documents.iter().map(|d| d.len() + query.len()).sum();
        let (items, usage) = Runtime::prepare(chars, move || family.prepare(&query, &documents, truncate)).await?;
        Ok((self.infer(model, items).await?, usage))
    }
}

/// Loads a cross-encoder bundle into a served model.
pub(crate) fn load(
    bundle: &Bundle,
    spec: &CrossEncoderSpec,
    device: &Device,
    batch: BatchConfig,
) -> Result<Arc<dyn Served>> {
    let model = CrossEncoderModel::from_bundle(bundle, device)?;
    // The head: a weight per hidden unit and a bias.
    let params = spec.architecture.num_params() + spec.architecture.hidden_size + 1;
    Ok(Arc::new(Loaded::new(ModelInfo::of(bundle, params), model, batch)))
}

/// Checks a cross-encoder section; errors are `(field, message)` under `family`.
pub(crate) fn validate_spec(spec: &CrossEncoderSpec, files: &[FileEntry]) -> std::result::Result<(), (String, String)> {
    let text =
        TextSpec { architecture: &spec.architecture, tokenizer: &spec.tokenizer, max_seq_length: spec.max_seq_length };
    // `[CLS]`, a query token, `[SEP]`, a document token, `[SEP]`.
    validate_text_spec(&text, 5, files)?;
    if spec.architecture.type_vocab_size < 2 {
        return Err((
            "architecture".into(),
            format!(
                "field `type_vocab_size`: a cross-encoder needs 2 token types, one per text, found {}",
                spec.architecture.type_vocab_size
            ),
        ));
    }
    Ok(())
}

/// Every tensor the model reads, by name and shape: BERT's and the head's.
pub(crate) fn expected_shapes(spec: &CrossEncoderSpec) -> Result<BTreeMap<String, Vec<usize>>> {
    Ok(expected_tensor_shapes(&spec.architecture)?)
}
