//! The BERT encoder a served text model runs, whatever its family: Tandem's packed-weight kernels
//! on the CPU, candle-transformers' `BertModel` on other devices.
//!
//! Both are built from the same config and tensors, and tests hold them to the same outputs, so a
//! family picks neither: the embedder pools single texts through it, the cross-encoder pairs.

use candle_core::{Device, Result};
use candle_nn::VarBuilder;

use super::bert_inference::FastBertEncoder;
use super::sentence_encoder::{BertConfig, Pooling, SegmentedIds, SentenceEncoder};

/// A BERT encoder with pooling, on the path that suits its device.
pub enum ServedBert {
    /// The CPU path: weights packed once, unpadded attention, fused epilogues.
    Fast(FastBertEncoder),
    /// candle's ops, for CUDA and any device the kernels do not cover.
    Candle(SentenceEncoder),
}

impl std::fmt::Debug for ServedBert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServedBert::Fast(encoder) => encoder.fmt(f),
            ServedBert::Candle(encoder) => encoder.fmt(f),
        }
    }
}

impl ServedBert {
    /// Builds the encoder from `vb` (tensors named with or without a `bert.` prefix): the fast
    /// path when `vb` is on the CPU, candle's elsewhere.
    pub fn new(cfg: &BertConfig, pooling: Pooling, vb: VarBuilder) -> Result<ServedBert> {
        match vb.device() {
            Device::Cpu => FastBertEncoder::new(cfg, pooling, vb).map(ServedBert::Fast),
            _ => SentenceEncoder::new(cfg, pooling, vb).map(ServedBert::Candle),
        }
    }

    /// Pooled, unnormalized vectors of single texts; see [`SentenceEncoder::embed`].
    pub fn embed(&self, batch: &[&[u32]]) -> crate::Result<Vec<Vec<f32>>> {
        match self {
            ServedBert::Fast(encoder) => encoder.embed(batch),
            ServedBert::Candle(encoder) => encoder.embed(batch),
        }
    }

    /// Pooled, unnormalized vectors of two-segment sequences; see [`SentenceEncoder::embed_pairs`].
    pub fn embed_pairs(&self, batch: &[SegmentedIds]) -> crate::Result<Vec<Vec<f32>>> {
        match self {
            ServedBert::Fast(encoder) => encoder.embed_pairs(batch),
            ServedBert::Candle(encoder) => encoder.embed_pairs(batch),
        }
    }
}
