//! A BERT encoder that trains: the computation and tensor names of candle-transformers' BERT
//! (what [`SentenceEncoder`] serves and `tandem import hf` writes), built from ops that all carry
//! gradients.
//!
//! candle-transformers normalises with candle-nn's fused layer norm, whose result has no autograd
//! graph, so nothing before a layer norm would ever receive a gradient there. This encoder uses
//! [`crate::layers::differentiable`]'s layer norm and softmax instead; everything else (embedding
//! look-up, linear layers, GELU, the additive attention mask, pooling) already has gradients in
//! candle. Its outputs equal [`SentenceEncoder`]'s within float rounding on the same weights, so a
//! student or a fine-tuned model trained here is served by the fast inference path unchanged.
//!
//! [`SentenceEncoder`]: super::sentence_encoder::SentenceEncoder

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Embedding, Linear, VarBuilder};

use super::sentence_encoder::{bert_root, hidden_act, pool, token_types, BertConfig, Pooling, SegmentedIds};
use crate::layers::differentiable::{softmax_last_dim, LayerNorm};
use candle_transformers::models::bert::HiddenAct;

/// One transformer layer.
#[derive(Debug, Clone)]
struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

impl Layer {
    fn new(cfg: &BertConfig, vb: VarBuilder) -> Result<Layer> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let attention = vb.pp("attention");
        Ok(Layer {
            query: candle_nn::linear(h, h, attention.pp("self.query"))?,
            key: candle_nn::linear(h, h, attention.pp("self.key"))?,
            value: candle_nn::linear(h, h, attention.pp("self.value"))?,
            attention_out: candle_nn::linear(h, h, attention.pp("output.dense"))?,
            attention_norm: LayerNorm::load(h, cfg.layer_norm_eps, attention.pp("output.LayerNorm"))?,
            intermediate: candle_nn::linear(h, i, vb.pp("intermediate.dense"))?,
            output: candle_nn::linear(i, h, vb.pp("output.dense"))?,
            output_norm: LayerNorm::load(h, cfg.layer_norm_eps, vb.pp("output.LayerNorm"))?,
        })
    }
}

/// The trainable encoder.
#[derive(Debug, Clone)]
pub struct TrainableBert {
    words: Embedding,
    positions: Embedding,
    token_types: Embedding,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    act: HiddenAct,
    pooling: Pooling,
}

impl TrainableBert {
    /// Builds the encoder from `vb` (tensors named with or without a `bert.` prefix, as
    /// [`SentenceEncoder::new`](super::sentence_encoder::SentenceEncoder::new) reads them), or
    /// creates them in a `VarMap`.
    pub fn new(cfg: &BertConfig, pooling: Pooling, vb: VarBuilder) -> Result<TrainableBert> {
        cfg.validate().map_err(candle_core::Error::msg)?;
        let vb = bert_root(vb);
        let e = vb.pp("embeddings");
        let h = cfg.hidden_size;
        Ok(TrainableBert {
            words: candle_nn::embedding(cfg.vocab_size, h, e.pp("word_embeddings"))?,
            positions: candle_nn::embedding(cfg.max_position_embeddings, h, e.pp("position_embeddings"))?,
            token_types: candle_nn::embedding(cfg.type_vocab_size, h, e.pp("token_type_embeddings"))?,
            embedding_norm: LayerNorm::load(h, cfg.layer_norm_eps, e.pp("LayerNorm"))?,
            layers: (0..cfg.num_hidden_layers)
                .map(|i| Layer::new(cfg, vb.pp(format!("encoder.layer.{i}"))))
                .collect::<Result<_>>()?,
            heads: cfg.num_attention_heads,
            act: hidden_act(&cfg.hidden_act).unwrap_or(HiddenAct::Gelu),
            pooling,
        })
    }

    fn activate(&self, x: &Tensor) -> Result<Tensor> {
        match self.act {
            HiddenAct::Gelu => x.gelu_erf(),
            HiddenAct::GeluApproximate => x.gelu(),
            HiddenAct::Relu => x.relu(),
        }
    }

    /// Token states `[n, len, hidden]` of a padded batch: `input_ids` `[n, len]` u32,
    /// `attention_mask` `[n, len]` with 1 for real tokens and 0 for padding (token types are 0).
    pub fn hidden_states(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        self.hidden_states_typed(input_ids, &input_ids.zeros_like()?, attention_mask)
    }

    /// [`TrainableBert::hidden_states`] with token types `[n, len]` u32 (0 for a pair's first
    /// segment, 1 for its second), as a cross-encoder reads a (query, document) pair.
    pub fn hidden_states_typed(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<Tensor> {
        let (n, len) = input_ids.dims2()?;
        let positions = Tensor::arange(0u32, len as u32, input_ids.device())?.unsqueeze(0)?.broadcast_as((n, len))?;
        let embedded = (self.words.forward(input_ids)? + self.positions.forward(&positions.contiguous()?)?)?
            .broadcast_add(&self.token_types.forward(token_type_ids)?)?;
        let mut x = self.embedding_norm.forward(&embedded)?;
        // Padding gets a large negative score before the softmax, as candle-transformers' BERT adds.
        let mask = attention_mask.to_dtype(x.dtype())?;
        let additive = ((mask.ones_like()? - mask)? * f64::from(f32::MIN))?.reshape((n, 1, 1, len))?;
        let h = x.dim(2)?;
        let hd = h / self.heads;
        for layer in &self.layers {
            let split =
                |t: Tensor| -> Result<Tensor> { t.reshape((n, len, self.heads, hd))?.transpose(1, 2)?.contiguous() };
            let q = split(layer.query.forward(&x)?)?;
            let k = split(layer.key.forward(&x)?)?;
            let v = split(layer.value.forward(&x)?)?;
            let scores = (q.matmul(&k.t()?.contiguous()?)? / (hd as f64).sqrt())?.broadcast_add(&additive)?;
            let context = softmax_last_dim(&scores)?.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((n, len, h))?;
            let attended = layer.attention_norm.forward(&(layer.attention_out.forward(&context)? + &x)?)?;
            let inner = self.activate(&layer.intermediate.forward(&attended)?)?;
            x = layer.output_norm.forward(&(layer.output.forward(&inner)? + &attended)?)?;
        }
        Ok(x)
    }

    /// The pooled sentence vectors `[n, hidden]` of a padded batch, unnormalised.
    pub fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        pool(&self.hidden_states(input_ids, attention_mask)?, attention_mask, self.pooling)
    }

    /// [`TrainableBert::forward`] with token types, as [`TrainableBert::hidden_states_typed`].
    pub fn forward_typed(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<Tensor> {
        pool(&self.hidden_states_typed(input_ids, token_type_ids, attention_mask)?, attention_mask, self.pooling)
    }

    /// The width of token and sentence vectors.
    pub fn hidden_size(&self) -> Result<usize> {
        self.words.embeddings().dim(D::Minus1)
    }

    /// The pooling this encoder applies.
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }
}

/// A batch of token id sequences padded with `pad` to the longest: `(input_ids, attention_mask)`.
pub fn padded_batch(batch: &[&[u32]], pad: u32, device: &candle_core::Device) -> Result<(Tensor, Tensor)> {
    let len = batch.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(batch.len() * len);
    let mut mask = Vec::with_capacity(batch.len() * len);
    for seq in batch {
        ids.extend(seq.iter().copied().chain(std::iter::repeat_n(pad, len - seq.len())));
        mask.extend((0..len).map(|i| u32::from(i < seq.len())));
    }
    Ok((
        Tensor::from_vec(ids, (batch.len(), len), device)?,
        Tensor::from_vec(mask, (batch.len(), len), device)?.to_dtype(DType::F32)?,
    ))
}

/// A batch of two-segment sequences padded with `pad` to the longest:
/// `(input_ids, token_type_ids, attention_mask)`, types 1 from each pair's `second` on (padding
/// included, which the mask hides).
pub fn padded_pair_batch(
    batch: &[SegmentedIds],
    pad: u32,
    device: &candle_core::Device,
) -> Result<(Tensor, Tensor, Tensor)> {
    let seqs: Vec<&[u32]> = batch.iter().map(|pair| pair.ids).collect();
    let (ids, mask) = padded_batch(&seqs, pad, device)?;
    let types = token_types(batch, ids.dim(1)?, device)?;
    Ok((ids, types, mask))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::sentence_encoder::SentenceEncoder;
    use candle_core::Device;
    use candle_nn::VarMap;

    fn tiny() -> BertConfig {
        crate::testing_text::tiny_bert_config(2)
    }

    #[test]
    fn it_computes_what_the_served_encoder_computes_and_every_weight_gets_a_gradient() {
        let vars = VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
        let trainable = TrainableBert::new(&tiny(), Pooling::Mean, vb.clone()).unwrap();
        // Layer norms start as the identity; give them values so that a swapped weight and bias shows.
        for (name, var) in vars.data().lock().unwrap().iter() {
            let noise = Tensor::randn(0f32, 0.1, var.shape(), &Device::Cpu).unwrap();
            var.set(&(var.as_tensor() + noise).unwrap()).unwrap();
            assert!(!name.starts_with("bert."), "{name}");
        }
        let served = SentenceEncoder::new(&tiny(), Pooling::Mean, vb).unwrap();
        let batch: [&[u32]; 3] = [&[1, 5, 7, 2], &[1, 9, 2], &[1, 3, 4, 8, 11, 2]];
        let (ids, mask) = padded_batch(&batch, 0, &Device::Cpu).unwrap();
        let ours = trainable.forward(&ids, &mask).unwrap();
        let theirs = served.forward(&ids, &mask).unwrap();
        let diff = (&ours - theirs).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5, "largest difference {diff}");

        let grads = ours.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        crate::testing::assert_every_weight_gets_a_gradient(&vars, &grads);

        // Pairs: the second segment reads token type 1, which then receives a gradient too.
        let pairs: Vec<SegmentedIds> = batch.iter().map(|&ids| SegmentedIds { ids, second: ids.len() / 2 }).collect();
        let (ids, types, mask) = padded_pair_batch(&pairs, 0, &Device::Cpu).unwrap();
        let ours = trainable.forward_typed(&ids, &types, &mask).unwrap();
        let theirs = served.forward_typed(&ids, &types, &mask).unwrap();
        let diff = (&ours - theirs).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5, "largest difference on pairs {diff}");
        let single = trainable.forward(&ids, &mask).unwrap();
        let moved = (&ours - single).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(moved > 1e-4, "token type 1 changes the result");
        let grads = ours.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let data = vars.data().lock().unwrap();
        let type_table = grads.get(data["embeddings.token_type_embeddings.weight"].as_tensor()).unwrap();
        let per_type = type_table.sqr().unwrap().sum(1).unwrap().to_vec1::<f32>().unwrap();
        assert!(per_type.iter().all(|&n| n > 0.0), "both token types get a gradient: {per_type:?}");
    }
}
