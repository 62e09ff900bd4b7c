//! A BERT-family sentence encoder: a transformer encoder followed by pooling over tokens.
//!
//! The transformer is candle-transformers' `BertModel`; this module adds our own serializable
//! config (candle's `Config` cannot be written back into a manifest), the pooling step of
//! sentence-transformers (masked mean, CLS token, masked max) and batching with padding.
//!
//! Tensor names are those of Hugging Face `BertModel` checkpoints without a prefix
//! (`embeddings.word_embeddings.weight`, `encoder.layer.0.attention.self.query.weight`, ...), as in
//! sentence-transformers' `model.safetensors`. Checkpoints saved from a task model carry a `bert.`
//! prefix; both load. Such files also hold tensors the encoder never reads (`pooler.*`,
//! `embeddings.position_ids`); see [`is_unused_checkpoint_tensor`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use candle_transformers::models::bert::BertModel;
use serde::{Deserialize, Serialize};

use crate::Error;

pub(crate) use super::bert_config::hidden_act;
pub use super::bert_config::BertConfig;

/// The prefix of BERT checkpoints saved from a task model (`BertForMaskedLM` and friends).
const BERT_PREFIX: &str = "bert";

/// How token vectors become one sentence vector, as in sentence-transformers' `Pooling` module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// The mean of the token vectors, padding excluded.
    Mean,
    /// The vector of the first token (`[CLS]`).
    Cls,
    /// The element-wise maximum of the token vectors, padding excluded.
    Max,
}

/// Whether a tensor of a Hugging Face BERT checkpoint is one the encoder never reads: the pooler
/// (a classification head on `[CLS]`, unused by sentence-transformers) and the `position_ids`
/// buffer (an i64 constant). Such tensors may be dropped when importing a checkpoint.
pub fn is_unused_checkpoint_tensor(name: &str) -> bool {
    let name = name.strip_prefix("bert.").unwrap_or(name);
    name.starts_with("pooler.") || name == "embeddings.position_ids"
}

/// A BERT encoder with pooling: token ids in, one vector per sequence out.
pub struct SentenceEncoder {
    bert: BertModel,
    pooling: Pooling,
    pad_token_id: u32,
    vocab_size: usize,
    max_position_embeddings: usize,
    type_vocab_size: usize,
    hidden_size: usize,
    device: Device,
}

impl std::fmt::Debug for SentenceEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentenceEncoder")
            .field("pooling", &self.pooling)
            .field("hidden_size", &self.hidden_size)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl SentenceEncoder {
    /// Builds the encoder from `vb`, whose tensors may be named with or without a `bert.` prefix.
    ///
    /// The config is validated first so that a bad manifest gives a message naming the field
    /// rather than a shape error deep in candle.
    pub fn new(cfg: &BertConfig, pooling: Pooling, vb: VarBuilder) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::msg)?;
        let vb = bert_root(vb);
        let device = vb.device().clone();
        let bert = BertModel::load(vb, &cfg.to_candle())?;
        Ok(SentenceEncoder {
            bert,
            pooling,
            pad_token_id: u32::try_from(cfg.pad_token_id).map_err(candle_core::Error::wrap)?,
            vocab_size: cfg.vocab_size,
            max_position_embeddings: cfg.max_position_embeddings,
            type_vocab_size: cfg.type_vocab_size,
            hidden_size: cfg.hidden_size,
            device,
        })
    }

    /// The pooling this encoder applies.
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// The width of the embeddings.
    pub fn hidden_size(&self) -> usize {
        self.hidden_size
    }

    /// The device the weights live on; inputs of [`SentenceEncoder::forward`] must be there too.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Encodes a padded batch: `input_ids` is `[n, len]` u32, `attention_mask` is `[n, len]` with
    /// 1 for real tokens and 0 for padding (any dtype). Returns the pooled `[n, hidden]`.
    ///
    /// Token types are all zero, as sentence-transformers uses for single sentences.
    pub fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        self.forward_typed(input_ids, &input_ids.zeros_like()?, attention_mask)
    }

    /// [`SentenceEncoder::forward`] with token types `[n, len]` u32 (0 for a pair's first
    /// segment, 1 for its second), as a cross-encoder reads a (query, document) pair.
    pub fn forward_typed(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<Tensor> {
        let hidden = self.bert.forward(input_ids, token_type_ids, Some(attention_mask))?;
        pool(&hidden, attention_mask, self.pooling)
    }

    /// Embeds token id sequences (special tokens included) as pooled, unnormalized vectors.
    ///
    /// Sequences are padded with the config's pad id to the longest one of the batch; padding
    /// changes no result beyond float rounding. Sequences must be non-empty, no longer than
    /// `max_position_embeddings` and hold ids below `vocab_size`.
    pub fn embed(&self, batch: &[&[u32]]) -> crate::Result<Vec<Vec<f32>>> {
        check_batch(batch, self.vocab_size, self.max_position_embeddings)?;
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let (ids, mask) = self.padded(batch)?;
        let pooled = self.forward(&ids, &mask)?;
        Ok(pooled.to_dtype(DType::F32)?.to_vec2::<f32>()?)
    }

    /// Encodes two-segment sequences (a cross-encoder's pairs) as pooled, unnormalized vectors:
    /// [`SentenceEncoder::embed`] with token type 1 from each pair's `second` on.
    ///
    /// The contract of [`SentenceEncoder::embed`], and each pair's `second` must lie within its
    /// sequence (a second segment also needs a model with a second token type).
    pub fn embed_pairs(&self, batch: &[SegmentedIds]) -> crate::Result<Vec<Vec<f32>>> {
        let seqs: Vec<&[u32]> = batch.iter().map(|pair| pair.ids).collect();
        check_batch(&seqs, self.vocab_size, self.max_position_embeddings)?;
        check_pairs(batch, self.type_vocab_size)?;
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let (ids, mask) = self.padded(&seqs)?;
        let types = token_types(batch, ids.dim(1)?, &self.device)?;
        let pooled = self.forward_typed(&ids, &types, &mask)?;
        Ok(pooled.to_dtype(DType::F32)?.to_vec2::<f32>()?)
    }

    /// A non-empty batch padded with the config's pad id to its longest sequence:
    /// `(input_ids, attention_mask)`.
    fn padded(&self, batch: &[&[u32]]) -> Result<(Tensor, Tensor)> {
        let len = batch.iter().map(|s| s.len()).max().unwrap_or(0);
        let n = batch.len();
        let mut ids = Vec::with_capacity(n * len);
        let mut mask = Vec::with_capacity(n * len);
        for seq in batch {
            ids.extend_from_slice(seq);
            ids.resize(ids.len() + len - seq.len(), self.pad_token_id);
            mask.extend(std::iter::repeat_n(1f32, seq.len()));
            mask.resize(mask.len() + len - seq.len(), 0f32);
        }
        Ok((Tensor::from_vec(ids, (n, len), &self.device)?, Tensor::from_vec(mask, (n, len), &self.device)?))
    }
}

/// `vb` moved under the `bert.` prefix when the checkpoint has one (it was saved from a task
/// model), so that the encoder's tensor names resolve either way.
pub fn bert_root(vb: VarBuilder) -> VarBuilder {
    let prefixed = format!("{BERT_PREFIX}.embeddings.word_embeddings.weight");
    if vb.contains_tensor(&prefixed) {
        vb.pp(BERT_PREFIX)
    } else {
        vb
    }
}

/// Checks token id sequences before encoding: each must be non-empty, no longer than
/// `max_position_embeddings` and hold ids below `vocab_size`. The error names the sequence.
pub(crate) fn check_batch(batch: &[&[u32]], vocab_size: usize, max_position_embeddings: usize) -> crate::Result<()> {
    for (i, seq) in batch.iter().enumerate() {
        if seq.is_empty() {
            return Err(Error::InvalidInput(format!("sequence {i} is empty")));
        }
        if seq.len() > max_position_embeddings {
            return Err(Error::InvalidInput(format!(
                "sequence {i} has {} tokens, more than the model's limit of {max_position_embeddings}",
                seq.len(),
            )));
        }
        if let Some(&id) = seq.iter().find(|&&id| id as usize >= vocab_size) {
            return Err(Error::InvalidInput(format!(
                "sequence {i} holds token id {id}, outside the vocabulary of {vocab_size}"
            )));
        }
    }
    Ok(())
}

/// A token id sequence of two segments, the way a cross-encoder reads a (query, document) pair
/// (`[CLS] query [SEP] document [SEP]`): token type 0 before `second`, 1 from it on.
///
/// One position per sequence is all the fast encoder needs to pick each token's type embedding,
/// and a single text is the pair whose `second` is its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentedIds<'a> {
    /// Token ids, special tokens included.
    pub ids: &'a [u32],
    /// Where the second segment starts, at most `ids.len()`.
    pub second: usize,
}

/// The token types `[n, len]` u32 of pairs padded to `len`: 1 from each pair's `second` on
/// (padding included, which the attention mask hides).
pub(crate) fn token_types(batch: &[SegmentedIds], len: usize, device: &Device) -> Result<Tensor> {
    let types: Vec<u32> =
        batch.iter().flat_map(|pair| (0..len).map(move |pos| u32::from(pos >= pair.second))).collect();
    Tensor::from_vec(types, (batch.len(), len), device)
}

/// Checks the segments of pairs that [`check_batch`] accepted: each `second` lies within its
/// sequence, and a second segment needs a model with a second token type.
pub(crate) fn check_pairs(batch: &[SegmentedIds], type_vocab_size: usize) -> crate::Result<()> {
    for (i, pair) in batch.iter().enumerate() {
        if pair.second > pair.ids.len() {
            return Err(Error::InvalidInput(format!(
                "sequence {i} has {} tokens, its second segment cannot start at {}",
                pair.ids.len(),
                pair.second
            )));
        }
        if pair.second < pair.ids.len() && type_vocab_size < 2 {
            return Err(Error::InvalidInput(format!(
                "sequence {i} has a second segment, the model only token type 0 (type_vocab_size {type_vocab_size})"
            )));
        }
    }
    Ok(())
}

/// Pools token vectors `hidden` `[n, len, h]` into `[n, h]`, ignoring positions where
/// `attention_mask` `[n, len]` is 0, the way sentence-transformers' `Pooling` module does.
///
/// Built from differentiable operations only, so training can back-propagate through it.
pub fn pool(hidden: &Tensor, attention_mask: &Tensor, pooling: Pooling) -> Result<Tensor> {
    let mask = attention_mask.to_dtype(hidden.dtype())?.unsqueeze(2)?;
    match pooling {
        Pooling::Mean => {
            let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
            // sentence-transformers clamps the token count the same way.
            let counts = mask.sum(1)?.maximum(1e-9)?;
            summed.broadcast_div(&counts)
        }
        Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1),
        Pooling::Max => {
            // Padding becomes -1e9 (sentence-transformers' value), real tokens are kept exactly.
            let penalty = ((mask.clone() - 1.0)? * 1e9)?;
            hidden.broadcast_mul(&mask)?.broadcast_add(&penalty)?.max(1)
        }
    }
}

/// The name and shape of every tensor the encoder reads, unprefixed, in name order.
///
/// Bundle loading compares a weights file against it. It is obtained by building the encoder
/// over a backend that records requests and hands out zeros, so it cannot drift from
/// [`SentenceEncoder::new`]. Hugging Face checkpoints hold a few more tensors (see
/// [`is_unused_checkpoint_tensor`]).
pub fn expected_tensor_shapes(cfg: &BertConfig) -> Result<BTreeMap<String, Vec<usize>>> {
    let recorder = Recorder::default();
    let seen = recorder.seen.clone();
    let vb = VarBuilder::from_backend(Box::new(recorder), DType::F32, Device::Cpu);
    SentenceEncoder::new(cfg, Pooling::Mean, vb)?;
    let seen = seen.lock().expect("recorder lock poisoned. This is a bug.");
    Ok(seen.clone())
}

/// A `VarBuilder` backend that remembers each requested tensor and returns zeros.
#[derive(Default)]
struct Recorder {
    seen: Arc<Mutex<BTreeMap<String, Vec<usize>>>>,
}

impl SimpleBackend for Recorder {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut seen = self.seen.lock().expect("recorder lock poisoned. This is a bug.");
        seen.insert(name.to_owned(), s.dims().to_vec());
        Tensor::zeros(s, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> Result<Tensor> {
        candle_core::bail!("cannot record `{name}` without a shape")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::VarMap;
    use std::collections::HashMap;

    fn tiny() -> BertConfig {
        BertConfig {
            vocab_size: 50,
            hidden_size: 16,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 24,
            hidden_act: "gelu".into(),
            max_position_embeddings: 20,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            pad_token_id: 0,
        }
    }

    /// An encoder over random weights, plus the weights as a name → tensor map.
    fn random_encoder(cfg: &BertConfig, pooling: Pooling) -> (SentenceEncoder, HashMap<String, Tensor>) {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let enc = SentenceEncoder::new(cfg, pooling, vb).unwrap();
        let data = varmap.data().lock().unwrap();
        let tensors = data.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
        (enc, tensors)
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn hf_config_is_read_leniently_and_validated() {
        let json = br#"{"architectures": ["BertModel"], "hidden_act": "gelu", "hidden_size": 384,
            "intermediate_size": 1536, "layer_norm_eps": 1e-12, "max_position_embeddings": 512,
            "model_type": "bert", "num_attention_heads": 12, "num_hidden_layers": 6, "pad_token_id": 0,
            "position_embedding_type": "absolute", "type_vocab_size": 2, "vocab_size": 30522,
            "transformers_version": "4.8.2"}"#;
        let cfg = BertConfig::from_hf_config_json(json).unwrap();
        assert_eq!(cfg.hidden_size, 384);
        assert_eq!(cfg.num_hidden_layers, 6);
        // all-MiniLM-L6-v2: 22.7M parameters in the file, less the unused pooler (148k).
        assert_eq!(cfg.num_params(), 22_565_376);

        let roberta = String::from_utf8_lossy(json).replace("\"bert\"", "\"roberta\"");
        let err = BertConfig::from_hf_config_json(roberta.as_bytes()).unwrap_err();
        assert!(err.contains("model_type"), "{err}");
        let missing = br#"{"hidden_size": 8}"#;
        assert!(BertConfig::from_hf_config_json(missing).unwrap_err().contains("vocab_size"));
    }

    #[test]
    fn validate_names_the_field() {
        type Edit = Box<dyn Fn(&mut BertConfig)>;
        let cases: Vec<(Edit, &str)> = vec![
            (Box::new(|c| c.num_attention_heads = 3), "num_attention_heads"),
            (Box::new(|c| c.hidden_size = 0), "hidden_size"),
            (Box::new(|c| c.hidden_act = "swish".into()), "hidden_act"),
            (Box::new(|c| c.layer_norm_eps = f64::NAN), "layer_norm_eps"),
            (Box::new(|c| c.pad_token_id = 50), "pad_token_id"),
        ];
        for (edit, field) in cases {
            let mut cfg = tiny();
            edit(&mut cfg);
            let err = cfg.validate().unwrap_err();
            assert!(err.contains(field), "{err}");
        }
        for act in ["gelu", "gelu_new", "gelu_approximate", "relu"] {
            BertConfig { hidden_act: act.into(), ..tiny() }.validate().unwrap();
        }
    }

    #[test]
    fn config_round_trips_and_refuses_unknown_fields() {
        let json = serde_json::to_string(&tiny()).unwrap();
        assert_eq!(serde_json::from_str::<BertConfig>(&json).unwrap(), tiny());
        let extra = json.replace("{", "{\"dropout\": 0.1, ");
        assert!(serde_json::from_str::<BertConfig>(&extra).is_err());
        assert_eq!(serde_json::to_string(&Pooling::Cls).unwrap(), "\"cls\"");
    }

    #[test]
    fn expected_shapes_match_the_built_model_and_num_params() {
        let cfg = tiny();
        let shapes = expected_tensor_shapes(&cfg).unwrap();
        let (_, tensors) = random_encoder(&cfg, Pooling::Mean);
        assert_eq!(shapes.len(), tensors.len());
        for (name, t) in &tensors {
            assert_eq!(shapes.get(name).map(Vec::as_slice), Some(t.dims()), "{name}");
        }
        assert_eq!(shapes.len(), 5 + 16 * cfg.num_hidden_layers);
        assert_eq!(shapes["embeddings.word_embeddings.weight"], vec![50, 16]);
        assert_eq!(shapes["encoder.layer.1.intermediate.dense.weight"], vec![24, 16]);
        let total: usize = shapes.values().map(|s| s.iter().product::<usize>()).sum();
        assert_eq!(total, cfg.num_params());
    }

    #[test]
    fn loads_with_and_without_the_bert_prefix() {
        let cfg = tiny();
        let (enc, tensors) = random_encoder(&cfg, Pooling::Mean);
        let prefixed: HashMap<String, Tensor> = tensors.iter().map(|(k, v)| (format!("bert.{k}"), v.clone())).collect();
        let plain =
            SentenceEncoder::new(&cfg, Pooling::Mean, VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu))
                .unwrap();
        let with_prefix =
            SentenceEncoder::new(&cfg, Pooling::Mean, VarBuilder::from_tensors(prefixed, DType::F32, &Device::Cpu))
                .unwrap();
        let seq: &[u32] = &[2, 7, 9, 3];
        let a = enc.embed(&[seq]).unwrap();
        let b = plain.embed(&[seq]).unwrap();
        let c = with_prefix.embed(&[seq]).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
    }

    #[test]
    fn a_wrong_shape_is_an_error() {
        let (_, tensors) = random_encoder(&tiny(), Pooling::Mean);
        let bigger = BertConfig { intermediate_size: 32, ..tiny() };
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        assert!(SentenceEncoder::new(&bigger, Pooling::Mean, vb).is_err());
    }

    #[test]
    fn batched_embeddings_equal_unbatched_ones_for_every_pooling() {
        let seqs: Vec<Vec<u32>> = vec![vec![2, 11, 12, 3], vec![2, 5, 6, 7, 8, 9, 10, 3], vec![2, 3], vec![2, 40, 3]];
        let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
        for pooling in [Pooling::Mean, Pooling::Cls, Pooling::Max] {
            let (enc, _) = random_encoder(&tiny(), pooling);
            let batched = enc.embed(&refs).unwrap();
            assert_eq!(batched.len(), seqs.len());
            for (seq, got) in refs.iter().zip(&batched) {
                let alone = enc.embed(&[seq]).unwrap();
                assert_eq!(got.len(), 16);
                let diff = max_abs_diff(got, &alone[0]);
                assert!(diff < 1e-5, "{pooling:?}: batched differs from unbatched by {diff}");
            }
        }
    }

    #[test]
    fn pooling_ignores_padding() {
        // Token vectors [n=1, len=3, h=2], the last position padding with extreme values.
        let hidden = Tensor::new(&[[[1f32, -2.0], [3.0, -4.0], [100.0, 100.0]]], &Device::Cpu).unwrap();
        let mask = Tensor::new(&[[1u32, 1, 0]], &Device::Cpu).unwrap();
        let get = |p| pool(&hidden, &mask, p).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(get(Pooling::Mean), vec![vec![2.0, -3.0]]);
        assert_eq!(get(Pooling::Max), vec![vec![3.0, -2.0]]);
        assert_eq!(get(Pooling::Cls), vec![vec![1.0, -2.0]]);
        // Negative token values must win over larger padding values.
        let hidden = Tensor::new(&[[[-1f32, -4.0], [-3.0, -2.0], [-0.5, -0.5]]], &Device::Cpu).unwrap();
        let max = pool(&hidden, &mask, Pooling::Max).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(max, vec![vec![-1.0, -2.0]]);
    }

    #[test]
    fn a_pair_without_a_second_segment_is_the_single_text() {
        let seqs: Vec<Vec<u32>> = vec![vec![2, 11, 12, 3, 7, 3], vec![2, 5, 3, 9, 3], vec![2, 3]];
        let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
        let whole: Vec<SegmentedIds> = refs.iter().map(|&ids| SegmentedIds { ids, second: ids.len() }).collect();
        let split: Vec<SegmentedIds> = refs.iter().map(|&ids| SegmentedIds { ids, second: ids.len() / 2 }).collect();
        let (enc, _) = random_encoder(&tiny(), Pooling::Mean);
        let singles = enc.embed(&refs).unwrap();
        assert_eq!(enc.embed_pairs(&whole).unwrap(), singles);
        let pairs = enc.embed_pairs(&split).unwrap();
        assert!(pairs.iter().zip(&singles).all(|(p, s)| max_abs_diff(p, s) > 1e-4), "token type 1 changes the result");
        for (pair, got) in split.iter().zip(&pairs) {
            let diff = max_abs_diff(got, &enc.embed_pairs(&[*pair]).unwrap()[0]);
            assert!(diff < 1e-5, "batched pairs differ from unbatched by {diff}");
        }
        let beyond = SegmentedIds { ids: refs[0], second: 7 };
        match enc.embed_pairs(&[beyond]) {
            Err(Error::InvalidInput(msg)) => assert!(msg.contains("cannot start at 7"), "{msg}"),
            other => panic!("expected invalid input, got {other:?}"),
        }
        let (one_type, _) = random_encoder(&BertConfig { type_vocab_size: 1, ..tiny() }, Pooling::Mean);
        assert!(matches!(one_type.embed_pairs(&split), Err(Error::InvalidInput(m)) if m.contains("type_vocab_size 1")));
    }

    #[test]
    fn embed_checks_its_input() {
        let (enc, _) = random_encoder(&tiny(), Pooling::Mean);
        assert!(enc.embed(&[]).unwrap().is_empty());
        let too_long = [1u32; 21];
        for (bad, what) in [(&[][..], "empty"), (&too_long[..], "21 tokens"), (&[2, 50, 3][..], "token id 50")] {
            match enc.embed(&[&[2, 3], bad]) {
                Err(Error::InvalidInput(msg)) => assert!(msg.contains(what), "{msg}"),
                other => panic!("expected invalid input, got {other:?}"),
            }
        }
    }

    #[test]
    fn the_encoder_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SentenceEncoder>();
    }

    #[test]
    fn unused_checkpoint_tensors() {
        assert!(is_unused_checkpoint_tensor("pooler.dense.weight"));
        assert!(is_unused_checkpoint_tensor("bert.embeddings.position_ids"));
        assert!(!is_unused_checkpoint_tensor("embeddings.position_embeddings.weight"));
    }
}
