//! A cross-encoder: BERT reading a (query, document) pair jointly, `[CLS] query [SEP] document
//! [SEP]` with token types 0 and 1, pooled, then one linear layer to a relevance logit.
//!
//! A bi-encoder embeds the query and the document apart and compares the vectors; here every
//! layer attends across both texts, which ranks better and costs one forward pass per pair, so it
//! reorders a bi-encoder's first candidates. The tensors are BERT's under their usual names (as an
//! embedder bundle holds them, so an embedder starts a cross-encoder) plus the head, `score.weight`
//! `[1, hidden]` and `score.bias` `[1]`.
//!
//! [`TrainableCrossEncoder`] is the version that trains (on [`TrainableBert`], gradients
//! everywhere); [`CrossEncoder`] is the served one (on [`ServedBert`]). Tests hold them to the same
//! scores.

use std::collections::BTreeMap;

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::sentence_encoder::{expected_tensor_shapes as bert_shapes, BertConfig, Pooling, SegmentedIds};
use super::served_bert::ServedBert;
use super::trainable_bert::TrainableBert;

/// The name prefix of the head's tensors.
pub const SCORE_PREFIX: &str = "score";

/// The cross-encoder that trains: every weight, head and BERT, receives a gradient.
#[derive(Debug, Clone)]
pub struct TrainableCrossEncoder {
    bert: TrainableBert,
    score: Linear,
}

impl TrainableCrossEncoder {
    /// Builds the model from `vb` (BERT's tensors at its root, with or without a `bert.` prefix,
    /// the head under `score`), or creates them in a `VarMap`.
    pub fn new(cfg: &BertConfig, pooling: Pooling, vb: VarBuilder) -> Result<TrainableCrossEncoder> {
        let bert = TrainableBert::new(cfg, pooling, vb.clone())?;
        let score = candle_nn::linear(cfg.hidden_size, 1, vb.pp(SCORE_PREFIX))?;
        Ok(TrainableCrossEncoder { bert, score })
    }

    /// The relevance logits `[n]` of a padded batch of pairs: `input_ids`, `token_type_ids` and
    /// `attention_mask` as [`TrainableBert::forward_typed`] takes them.
    pub fn forward(&self, input_ids: &Tensor, token_type_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let pooled = self.bert.forward_typed(input_ids, token_type_ids, attention_mask)?;
        self.score.forward(&pooled)?.squeeze(1)
    }
}

/// The served cross-encoder: pairs in, one relevance logit each out.
#[derive(Debug)]
pub struct CrossEncoder {
    encoder: ServedBert,
    /// `score.weight`, `[hidden]`.
    weight: Vec<f32>,
    /// `score.bias`.
    bias: f32,
}

impl CrossEncoder {
    /// Builds the model from `vb`, on the fast CPU path when `vb` is on the CPU (see
    /// [`ServedBert::new`]).
    pub fn new(cfg: &BertConfig, pooling: Pooling, vb: VarBuilder) -> Result<CrossEncoder> {
        let score = candle_nn::linear(cfg.hidden_size, 1, vb.pp(SCORE_PREFIX))?;
        let values = |t: &Tensor| t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>();
        let weight = values(score.weight())?;
        let bias = match score.bias() {
            Some(b) => values(b)?.first().copied().unwrap_or(0.0),
            None => 0.0,
        };
        Ok(CrossEncoder { encoder: ServedBert::new(cfg, pooling, vb)?, weight, bias })
    }

    /// The relevance logit of each pair, in order: unbounded, higher is more relevant.
    ///
    /// The contract of [`SentenceEncoder::embed_pairs`](super::sentence_encoder::SentenceEncoder::embed_pairs).
    pub fn score(&self, batch: &[SegmentedIds]) -> crate::Result<Vec<f32>> {
        let pooled = self.encoder.embed_pairs(batch)?;
        Ok(pooled.iter().map(|v| v.iter().zip(&self.weight).map(|(x, w)| x * w).sum::<f32>() + self.bias).collect())
    }
}

/// The name and shape of every tensor a cross-encoder reads: BERT's, unprefixed, and the head's.
pub fn expected_tensor_shapes(cfg: &BertConfig) -> Result<BTreeMap<String, Vec<usize>>> {
    let mut shapes = bert_shapes(cfg)?;
    shapes.insert(format!("{SCORE_PREFIX}.weight"), vec![1, cfg.hidden_size]);
    shapes.insert(format!("{SCORE_PREFIX}.bias"), vec![1]);
    Ok(shapes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::trainable_bert::padded_pair_batch;
    use crate::testing_text::tiny_bert_config;
    use candle_core::Device;
    use candle_nn::VarMap;

    /// A trainable model over random weights (layer norms and the head away from their starting
    /// values, so a misread tensor shows) and its variables.
    fn random(pooling: Pooling) -> (TrainableCrossEncoder, VarMap) {
        let vars = VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
        let model = TrainableCrossEncoder::new(&tiny_bert_config(2), pooling, vb).unwrap();
        for var in vars.data().lock().unwrap().values() {
            let noise = Tensor::randn(0f32, 0.1, var.shape(), &Device::Cpu).unwrap();
            var.set(&(var.as_tensor() + noise).unwrap()).unwrap();
        }
        (model, vars)
    }

    #[track_caller]
    fn check(pooling: Pooling, lens: &[(usize, usize)]) {
        let (trainable, vars) = random(pooling);
        let tensors = vars.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
        let served = CrossEncoder::new(
            &tiny_bert_config(2),
            pooling,
            VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu),
        )
        .unwrap();
        let seqs: Vec<Vec<u32>> = lens
            .iter()
            .enumerate()
            .map(|(s, &(len, _))| (0..len).map(|i| ((s * 7 + i * 13 + 2) % 50) as u32).collect())
            .collect();
        let pairs: Vec<SegmentedIds> =
            seqs.iter().zip(lens).map(|(ids, &(_, second))| SegmentedIds { ids, second }).collect();
        let (ids, types, mask) = padded_pair_batch(&pairs, 0, &Device::Cpu).unwrap();
        let logits = trainable.forward(&ids, &types, &mask).unwrap();
        let want = logits.to_vec1::<f32>().unwrap();
        let got = served.score(&pairs).unwrap();
        let diff = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(diff < 1e-4, "{pooling:?}: trained {want:?}, served {got:?}");

        let grads = logits.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        crate::testing::assert_every_weight_gets_a_gradient(&vars, &grads);
    }

    #[test]
    fn the_served_model_scores_what_the_trained_one_computes() {
        check(Pooling::Mean, &[(8, 4), (5, 3), (12, 5), (3, 3)]);
        check(Pooling::Cls, &[(8, 4), (6, 2)]);
    }

    #[test]
    fn expected_shapes_are_what_the_model_builds() {
        let (_, vars) = random(Pooling::Mean);
        let cfg = tiny_bert_config(2);
        assert_eq!(crate::bundle::shapes_of(&vars), expected_tensor_shapes(&cfg).unwrap());
        assert_eq!(expected_tensor_shapes(&cfg).unwrap()["score.weight"], vec![1, 32]);
    }
}
