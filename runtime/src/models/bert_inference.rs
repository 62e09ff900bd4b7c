//! A fast CPU forward pass of the BERT sentence encoder, for inference only.
//!
//! [`FastBertEncoder`] computes what [`SentenceEncoder`](super::sentence_encoder::SentenceEncoder)
//! computes, from the same weights, on plain f32 buffers and Tandem's own kernels instead of
//! candle tensors. candle pays per operation: an allocation for every intermediate, a re-packed
//! weight in every matrix product, element-wise passes on one thread. At one short sentence per
//! call those costs are most of the time; here weights are packed once at load, the query, key
//! and value projections are one product, bias, GELU and residual additions happen inside the
//! products, and attention runs per (sequence, head) over real tokens only.
//!
//! Sequences are never padded: a batch is its sequences' tokens back to back, every row-wise
//! operation treats them alike, and attention and pooling see one sequence at a time. So a
//! sequence costs the same alone or next to a long one, and its embedding is the same bit for
//! bit whatever it is batched with: every reduction runs in an order fixed by the model's
//! widths, never by the number of rows or how they are split over threads.

use std::sync::Mutex;

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::HiddenAct;

use super::sentence_encoder::{bert_root, check_batch, check_pairs, BertConfig, Pooling, SegmentedIds};
use crate::kernels::{layer_norm_rows, self_attention_with, Activation, Kernel, PackedLinear};

/// A layer norm's scale and shift.
struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

/// One transformer layer with its weights packed for the product kernels.
struct Layer {
    /// Query, key and value projections as one `[3 * hidden, hidden]` product.
    qkv: PackedLinear,
    /// The attention output projection.
    out: PackedLinear,
    /// Layer norm after the attention block.
    attention_norm: Norm,
    /// The feed-forward up projection, with the activation fused.
    up: PackedLinear,
    /// The feed-forward down projection.
    down: PackedLinear,
    /// Layer norm after the feed-forward block.
    output_norm: Norm,
}

/// A BERT encoder with pooling on Tandem's CPU kernels: token ids in, one vector per sequence
/// out. Same weights, tensor names and results (up to float rounding) as
/// [`SentenceEncoder`](super::sentence_encoder::SentenceEncoder), several times faster on the
/// CPU for small batches.
pub struct FastBertEncoder {
    pooling: Pooling,
    hidden: usize,
    heads: usize,
    intermediate: usize,
    vocab_size: usize,
    max_position_embeddings: usize,
    type_vocab_size: usize,
    eps: f32,
    /// The feed-forward activation.
    act: Activation,
    /// The tile kernel the weights are packed for.
    kernel: Kernel,
    /// `[vocab_size, hidden]`.
    word: Vec<f32>,
    /// `[max_position_embeddings, hidden]`.
    position: Vec<f32>,
    /// `[type_vocab_size, hidden]`: sentence encoders use row 0, a cross-encoder's pairs rows 0
    /// and 1.
    token_type: Vec<f32>,
    embedding_norm: Norm,
    layers: Vec<Layer>,
    /// Buffers of an earlier call, reused by the next one.
    spare: Mutex<Option<Buffers>>,
}

impl std::fmt::Debug for FastBertEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastBertEncoder")
            .field("pooling", &self.pooling)
            .field("hidden_size", &self.hidden)
            .field("layers", &self.layers.len())
            .finish_non_exhaustive()
    }
}

/// The tensor behind `t` as f32 values, whatever its dtype and device.
fn values(t: &Tensor) -> Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
}

/// Reads a layer norm the way candle's BERT does (`weight`/`bias`, or the older `gamma`/`beta`).
fn norm(size: usize, eps: f64, vb: VarBuilder) -> Result<Norm> {
    let ln = candle_nn::layer_norm(size, eps, vb)?;
    let gamma = values(ln.weight())?;
    let beta = match ln.bias() {
        Some(b) => values(b)?,
        None => vec![0.0; size],
    };
    Ok(Norm { gamma, beta })
}

/// Reads a linear layer's weight `[out, in]` and bias `[out]` the way candle's BERT does.
fn linear_parts(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<(Vec<f32>, Vec<f32>)> {
    let lin = candle_nn::linear(in_dim, out_dim, vb)?;
    let bias = match lin.bias() {
        Some(b) => values(b)?,
        None => vec![0.0; out_dim],
    };
    Ok((values(lin.weight())?, bias))
}

/// A linear layer, packed for `kernel`.
fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder, kernel: Kernel) -> Result<PackedLinear> {
    let (w, b) = linear_parts(in_dim, out_dim, vb)?;
    PackedLinear::with_kernel(kernel, &w, Some(&b), out_dim, in_dim)
}

/// Reads the embedding table `[rows, hidden]` under `vb`.
fn embedding(rows: usize, hidden: usize, vb: VarBuilder) -> Result<Vec<f32>> {
    values(candle_nn::embedding(rows, hidden, vb)?.embeddings())
}

impl FastBertEncoder {
    /// Builds the encoder from `vb`, whose tensors may be named with or without a `bert.`
    /// prefix, exactly as [`SentenceEncoder::new`](super::sentence_encoder::SentenceEncoder::new)
    /// reads them. The weights are copied out as f32 and packed; `vb` can be dropped afterwards.
    pub fn new(cfg: &BertConfig, pooling: Pooling, vb: VarBuilder) -> Result<Self> {
        Self::with_kernel(cfg, pooling, vb, Kernel::best())
    }

    /// [`FastBertEncoder::new`] on a given tile kernel, which the CPU must support.
    pub(crate) fn with_kernel(cfg: &BertConfig, pooling: Pooling, vb: VarBuilder, kernel: Kernel) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::msg)?;
        let vb = bert_root(vb);
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let act = match cfg.to_candle().hidden_act {
            HiddenAct::Gelu => Activation::Gelu,
            HiddenAct::GeluApproximate => Activation::GeluTanh,
            HiddenAct::Relu => Activation::Relu,
        };
        let emb = vb.pp("embeddings");
        let word = embedding(cfg.vocab_size, h, emb.pp("word_embeddings"))?;
        let position = embedding(cfg.max_position_embeddings, h, emb.pp("position_embeddings"))?;
        let token_type = embedding(cfg.type_vocab_size, h, emb.pp("token_type_embeddings"))?;
        let embedding_norm = norm(h, cfg.layer_norm_eps, emb.pp("LayerNorm"))?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for index in 0..cfg.num_hidden_layers {
            let vb = vb.pp(format!("encoder.layer.{index}"));
            let attention = vb.pp("attention");
            let mut qkv_w = Vec::with_capacity(3 * h * h);
            let mut qkv_b = Vec::with_capacity(3 * h);
            for name in ["query", "key", "value"] {
                let (w, b) = linear_parts(h, h, attention.pp("self").pp(name))?;
                qkv_w.extend_from_slice(&w);
                qkv_b.extend_from_slice(&b);
            }
            let qkv = PackedLinear::with_kernel(kernel, &qkv_w, Some(&qkv_b), 3 * h, h)?;
            let up_vb = vb.pp("intermediate");
            let up = linear(h, i, up_vb.pp("dense"), kernel)?;
            layers.push(Layer {
                qkv,
                out: linear(h, h, attention.pp("output").pp("dense"), kernel)?,
                attention_norm: norm(h, cfg.layer_norm_eps, attention.pp("output").pp("LayerNorm"))?,
                up,
                down: linear(i, h, vb.pp("output").pp("dense"), kernel)?,
                output_norm: norm(h, cfg.layer_norm_eps, vb.pp("output").pp("LayerNorm"))?,
            });
        }
        Ok(FastBertEncoder {
            pooling,
            hidden: h,
            heads: cfg.num_attention_heads,
            intermediate: i,
            vocab_size: cfg.vocab_size,
            max_position_embeddings: cfg.max_position_embeddings,
            type_vocab_size: cfg.type_vocab_size,
            eps: cfg.layer_norm_eps as f32,
            word,
            position,
            token_type,
            embedding_norm,
            layers,
            act,
            kernel,
            spare: Mutex::new(None),
        })
    }

    /// The pooling this encoder applies.
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// The width of the embeddings.
    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// Embeds token id sequences (special tokens included) as pooled, unnormalized vectors.
    ///
    /// The contract of [`SentenceEncoder::embed`](super::sentence_encoder::SentenceEncoder::embed):
    /// sequences must be non-empty, no longer than `max_position_embeddings` and hold ids below
    /// `vocab_size`, else the error names the offending sequence. Each sequence is encoded over
    /// its own tokens only, so the batch's composition changes nothing, not even the rounding.
    pub fn embed(&self, batch: &[&[u32]]) -> crate::Result<Vec<Vec<f32>>> {
        check_batch(batch, self.vocab_size, self.max_position_embeddings)?;
        let pairs: Vec<SegmentedIds> = batch.iter().map(|&ids| SegmentedIds { ids, second: ids.len() }).collect();
        self.run(&pairs)
    }

    /// Encodes two-segment sequences (a cross-encoder's pairs) as pooled, unnormalized vectors:
    /// [`FastBertEncoder::embed`] with token type 1 from each pair's `second` on.
    ///
    /// The contract of [`SentenceEncoder::embed_pairs`](super::sentence_encoder::SentenceEncoder::embed_pairs),
    /// with the same messages.
    pub fn embed_pairs(&self, batch: &[SegmentedIds]) -> crate::Result<Vec<Vec<f32>>> {
        let seqs: Vec<&[u32]> = batch.iter().map(|pair| pair.ids).collect();
        check_batch(&seqs, self.vocab_size, self.max_position_embeddings)?;
        check_pairs(batch, self.type_vocab_size)?;
        self.run(batch)
    }

    /// Runs checked sequences, each a single text when its `second` is its length.
    fn run(&self, batch: &[SegmentedIds]) -> crate::Result<Vec<Vec<f32>>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        // The whole pass runs on a rayon worker: each product and attention call then splits
        // its work from inside the pool, instead of a caller thread handing every one of them
        // to the pool and sleeping until it is done (two context switches per operation,
        // which at one sentence per call cost as much as the arithmetic).
        rayon::scope(|_| {
            let mut buffers = self.spare.lock().map(|mut spare| spare.take()).unwrap_or(None).unwrap_or_default();
            let result = self.forward(batch, &mut buffers);
            if buffers.len() <= MAX_SPARE_FLOATS {
                if let Ok(mut spare) = self.spare.lock() {
                    *spare = Some(buffers);
                }
            }
            result
        })
    }

    /// The forward pass of [`FastBertEncoder::embed`] on checked input, in `buffers`.
    fn forward(&self, batch: &[SegmentedIds], buffers: &mut Buffers) -> crate::Result<Vec<Vec<f32>>> {
        let h = self.hidden;
        let mut seqs = Vec::with_capacity(batch.len());
        let mut tokens = 0;
        for pair in batch {
            seqs.push(tokens..tokens + pair.ids.len());
            tokens += pair.ids.len();
        }
        // Every buffer is overwritten before it is read, so stale contents do not matter.
        let Buffers { x, qkv, ctx, inter } = buffers;
        x.resize(tokens * h, 0.0);
        qkv.resize(tokens * 3 * h, 0.0);
        ctx.resize(tokens * h, 0.0);
        inter.resize(tokens * self.intermediate, 0.0);

        let rows =
            batch.iter().flat_map(|pair| pair.ids.iter().enumerate().map(move |(pos, &id)| (pos, id, pair.second)));
        for (dst, (pos, id, second)) in x.chunks_exact_mut(h).zip(rows) {
            let word = &self.word[id as usize * h..][..h];
            let position = &self.position[pos * h..][..h];
            let token_type = &self.token_type[usize::from(pos >= second) * h..][..h];
            // candle's order of additions: (word + token type) + position.
            for (((d, w), t), p) in dst.iter_mut().zip(word).zip(token_type).zip(position) {
                *d = (w + t) + p;
            }
        }
        layer_norm_rows(x, &self.embedding_norm.gamma, &self.embedding_norm.beta, self.eps)?;

        for layer in &self.layers {
            layer.qkv.forward(x, tokens, qkv, Activation::Identity)?;
            self_attention_with(self.kernel, qkv, h, self.heads, &seqs, ctx)?;
            layer.out.forward_add(ctx, tokens, x)?;
            layer_norm_rows(x, &layer.attention_norm.gamma, &layer.attention_norm.beta, self.eps)?;
            layer.up.forward(x, tokens, inter, self.act)?;
            layer.down.forward_add(inter, tokens, x)?;
            layer_norm_rows(x, &layer.output_norm.gamma, &layer.output_norm.beta, self.eps)?;
        }

        Ok(seqs.iter().map(|r| pool(&x[r.start * h..r.end * h], h, self.pooling)).collect())
    }
}

/// The activations of one forward pass.
#[derive(Default)]
struct Buffers {
    /// Token vectors, `[tokens, hidden]`.
    x: Vec<f32>,
    /// Fused query, key and value projections, `[tokens, 3 * hidden]`.
    qkv: Vec<f32>,
    /// Attention context, `[tokens, hidden]`.
    ctx: Vec<f32>,
    /// Feed-forward activations, `[tokens, intermediate]`.
    inter: Vec<f32>,
}

impl Buffers {
    /// Floats held.
    fn len(&self) -> usize {
        self.x.capacity() + self.qkv.capacity() + self.ctx.capacity() + self.inter.capacity()
    }
}

/// The largest buffers kept between calls (64 MiB, 32 texts of 128 tokens of all-MiniLM-L6-v2):
/// re-allocating them costs a page fault per 4 KiB on every call, but a rare huge batch should
/// not pin its memory for good.
const MAX_SPARE_FLOATS: usize = 16 << 20;

/// Pools the token vectors `x` (rows of `h`) of one sequence, as sentence-transformers does.
fn pool(x: &[f32], h: usize, pooling: Pooling) -> Vec<f32> {
    let mut rows = x.chunks_exact(h);
    let first = rows.next().expect("sequences are checked to be non-empty. This is a bug.");
    match pooling {
        Pooling::Cls => first.to_vec(),
        Pooling::Mean => {
            let mut sum = first.to_vec();
            for row in rows {
                sum.iter_mut().zip(row).for_each(|(s, v)| *s += v);
            }
            let n = (x.len() / h) as f32;
            sum.iter_mut().for_each(|s| *s /= n);
            sum
        }
        Pooling::Max => {
            let mut max = first.to_vec();
            for row in rows {
                max.iter_mut().zip(row).for_each(|(m, &v)| *m = m.max(v));
            }
            max
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::sentence_encoder::SentenceEncoder;
    use crate::testing_text::{tiny_bert_config, write_tiny_sentence_transformers_dir};
    use crate::Error;
    use candle_core::Device;
    use candle_nn::VarMap;
    use std::collections::HashMap;

    fn config(hidden: usize, heads: usize, intermediate: usize, act: &str) -> BertConfig {
        BertConfig {
            vocab_size: 50,
            hidden_size: hidden,
            num_hidden_layers: 2,
            num_attention_heads: heads,
            intermediate_size: intermediate,
            hidden_act: act.into(),
            max_position_embeddings: 40,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            pad_token_id: 0,
        }
    }

    /// Random weights as a name → tensor map, with layer norms and biases away from 1 and 0 so
    /// that a parameter read from the wrong place shows.
    fn random_weights(cfg: &BertConfig) -> HashMap<String, Tensor> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        SentenceEncoder::new(cfg, Pooling::Mean, vb).unwrap();
        let data = varmap.data().lock().unwrap();
        data.iter()
            .map(|(name, var)| {
                let t = var.as_tensor().clone();
                let t = if name.contains("LayerNorm") || name.ends_with("bias") {
                    (t.rand_like(-0.5, 0.5).unwrap() + if name.ends_with("LayerNorm.weight") { 1.0 } else { 0.0 })
                        .unwrap()
                } else {
                    t
                };
                (name.clone(), t)
            })
            .collect()
    }

    fn both(
        cfg: &BertConfig,
        pooling: Pooling,
        tensors: HashMap<String, Tensor>,
    ) -> (SentenceEncoder, FastBertEncoder) {
        both_on(Kernel::best(), cfg, pooling, tensors)
    }

    fn both_on(
        kernel: Kernel,
        cfg: &BertConfig,
        pooling: Pooling,
        tensors: HashMap<String, Tensor>,
    ) -> (SentenceEncoder, FastBertEncoder) {
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let candle = SentenceEncoder::new(cfg, pooling, vb.clone()).unwrap();
        (candle, FastBertEncoder::with_kernel(cfg, pooling, vb, kernel).unwrap())
    }

    fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    /// Deterministic sequences of the given lengths, ids below `vocab`.
    fn sequences(lens: &[usize], vocab: u32) -> Vec<Vec<u32>> {
        lens.iter()
            .enumerate()
            .map(|(s, &len)| (0..len).map(|i| ((s * 31 + i * 17 + 2) as u32) % vocab).collect())
            .collect()
    }

    fn batches(vocab: u32) -> Vec<Vec<Vec<u32>>> {
        vec![
            sequences(&[5], vocab),
            sequences(&[1], vocab),
            sequences(&[40], vocab),
            sequences(&[3, 3, 3], vocab),
            sequences(&[2, 17, 40, 1, 9, 12, 12, 33], vocab),
        ]
    }

    #[test]
    fn matches_the_candle_encoder_for_every_pooling_activation_width_and_kernel() {
        let configs = [config(16, 4, 24, "gelu"), config(48, 3, 100, "gelu_new"), config(36, 6, 37, "relu")];
        for (cfg, kernel) in configs.iter().flat_map(|c| Kernel::supported().into_iter().map(move |k| (c, k))) {
            let tensors = random_weights(cfg);
            for pooling in [Pooling::Mean, Pooling::Cls, Pooling::Max] {
                let (candle, fast) = both_on(kernel, cfg, pooling, tensors.clone());
                for batch in batches(50) {
                    let refs: Vec<&[u32]> = batch.iter().map(Vec::as_slice).collect();
                    let (want, got) = (candle.embed(&refs).unwrap(), fast.embed(&refs).unwrap());
                    let diff = max_abs_diff(&want, &got);
                    assert!(
                        diff < 1e-4,
                        "{kernel:?} {} {pooling:?} lengths {:?}: differs by {diff}",
                        cfg.hidden_act,
                        refs.iter().map(|s| s.len()).collect::<Vec<_>>()
                    );
                    // The same sequences as pairs, the second segment from their middle on.
                    let pairs: Vec<SegmentedIds> =
                        refs.iter().map(|&ids| SegmentedIds { ids, second: ids.len() / 2 }).collect();
                    let (want, got) = (candle.embed_pairs(&pairs).unwrap(), fast.embed_pairs(&pairs).unwrap());
                    let diff = max_abs_diff(&want, &got);
                    assert!(diff < 1e-4, "{kernel:?} {} {pooling:?} pairs: differ by {diff}", cfg.hidden_act);
                }
            }
        }
    }

    #[test]
    fn matches_the_candle_encoder_on_a_sentence_transformers_directory_with_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_sentence_transformers_dir(dir.path(), 2, Pooling::Mean, false).unwrap();
        let st = crate::hf::read_sentence_transformers_dir(dir.path()).unwrap();
        let bytes = std::fs::read(&st.weights).unwrap();
        let plain = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &Device::Cpu).unwrap();
        let tensors: HashMap<String, Tensor> = expected_names(&st.bert)
            .into_iter()
            .map(|name| {
                let t = plain.get_unchecked(&name).unwrap();
                (format!("bert.{name}"), t)
            })
            .collect();
        assert_eq!(tiny_bert_config(2), st.bert);
        for pooling in [Pooling::Mean, Pooling::Cls, Pooling::Max] {
            let candle = SentenceEncoder::new(&st.bert, pooling, plain.clone()).unwrap();
            let fast = FastBertEncoder::new(&st.bert, pooling, plain.clone()).unwrap();
            let prefixed = VarBuilder::from_tensors(tensors.clone(), DType::F32, &Device::Cpu);
            let fast_prefixed = FastBertEncoder::new(&st.bert, pooling, prefixed).unwrap();
            for batch in batches(st.bert.vocab_size as u32) {
                let batch: Vec<Vec<u32>> = batch.into_iter().map(|s| s[..s.len().min(32)].to_vec()).collect();
                let refs: Vec<&[u32]> = batch.iter().map(Vec::as_slice).collect();
                let want = candle.embed(&refs).unwrap();
                let got = fast.embed(&refs).unwrap();
                let diff = max_abs_diff(&want, &got);
                assert!(diff < 1e-4, "{pooling:?}: differs by {diff}");
                assert_eq!(got, fast_prefixed.embed(&refs).unwrap());
            }
        }
    }

    fn expected_names(cfg: &BertConfig) -> Vec<String> {
        crate::models::sentence_encoder::expected_tensor_shapes(cfg).unwrap().into_keys().collect()
    }

    #[test]
    fn batched_embeddings_equal_unbatched_ones_exactly() {
        let cfg = config(48, 3, 100, "gelu");
        for pooling in [Pooling::Mean, Pooling::Cls, Pooling::Max] {
            let (_, fast) = both(&cfg, pooling, random_weights(&cfg));
            let seqs = sequences(&[2, 17, 40, 1, 9, 12, 12, 33, 40, 40, 5], 50);
            let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
            let batched = fast.embed(&refs).unwrap();
            for (seq, got) in refs.iter().zip(&batched) {
                assert_eq!(got.len(), 48);
                // Rows never share a reduction and sequences never share attention, so the
                // batch changes nothing at all.
                assert_eq!(&fast.embed(&[seq]).unwrap()[0], got, "{pooling:?}");
            }
        }
    }

    #[test]
    fn pairs_are_batch_invariant_and_a_pair_without_a_second_segment_is_the_single_text() {
        let cfg = config(48, 3, 100, "gelu");
        let (_, fast) = both(&cfg, Pooling::Mean, random_weights(&cfg));
        let seqs = sequences(&[2, 17, 40, 1, 9, 12, 12, 33], 50);
        let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
        let whole: Vec<SegmentedIds> = refs.iter().map(|&ids| SegmentedIds { ids, second: ids.len() }).collect();
        assert_eq!(fast.embed_pairs(&whole).unwrap(), fast.embed(&refs).unwrap());
        let split: Vec<SegmentedIds> = refs.iter().map(|&ids| SegmentedIds { ids, second: ids.len() / 3 }).collect();
        let batched = fast.embed_pairs(&split).unwrap();
        for (pair, got) in split.iter().zip(&batched) {
            assert_eq!(&fast.embed_pairs(&[*pair]).unwrap()[0], got);
        }
    }

    #[test]
    fn embed_refuses_what_the_candle_encoder_refuses_with_the_same_message() {
        let cfg = config(16, 4, 24, "gelu");
        let (candle, fast) = both(&cfg, Pooling::Mean, random_weights(&cfg));
        assert!(fast.embed(&[]).unwrap().is_empty());
        let too_long = [1u32; 41];
        for bad in [&[][..], &too_long[..], &[2, 50, 3][..]] {
            let batch = [&[2u32, 3][..], bad];
            match (fast.embed(&batch), candle.embed(&batch)) {
                (Err(Error::InvalidInput(a)), Err(Error::InvalidInput(b))) => assert_eq!(a, b),
                other => panic!("expected two invalid-input errors, got {other:?}"),
            }
        }
        let ids = [2u32, 3, 4];
        for bad in [SegmentedIds { ids: &[], second: 0 }, SegmentedIds { ids: &ids, second: 4 }] {
            let batch = [SegmentedIds { ids: &ids, second: 1 }, bad];
            match (fast.embed_pairs(&batch), candle.embed_pairs(&batch)) {
                (Err(Error::InvalidInput(a)), Err(Error::InvalidInput(b))) => assert_eq!(a, b),
                other => panic!("expected two invalid-input errors, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_wrong_shape_or_config_is_an_error() {
        let cfg = config(16, 4, 24, "gelu");
        let tensors = random_weights(&cfg);
        let bigger = BertConfig { intermediate_size: 32, ..cfg.clone() };
        let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, &Device::Cpu);
        assert!(FastBertEncoder::new(&bigger, Pooling::Mean, vb).is_err());
        let bad = BertConfig { num_attention_heads: 5, ..cfg };
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let err = FastBertEncoder::new(&bad, Pooling::Mean, vb).unwrap_err().to_string();
        assert!(err.contains("num_attention_heads"), "{err}");
    }

    #[test]
    fn the_encoder_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<FastBertEncoder>();
    }
}
