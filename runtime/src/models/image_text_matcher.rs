//! An image–text cross-encoder (a matcher): an image and a caption read jointly to one matching
//! logit, the teacher whose rankings an image–text dual encoder distils (CPRD).
//!
//! Each input has a tower of its own, as in the dual encoder ([`super::image_text`]): the
//! runtime's CNN, whose head maps the pooled image features to `width` values, and BERT, pooled
//! and projected to `width` (`text_in`). Where a dual encoder can only take the dot product of the
//! two vectors, the matcher reads them together: an MLP over `[v, t, v ⊙ t]` (`fuse`, ReLU,
//! `score`) gives the pair's logit, so the score can depend on any interaction of the two, the
//! CPU-scale cross-encoder of the method's notes (METHODS.md, section 1). The towers run once per
//! image and per caption; only the MLP runs per pair, which makes scoring a whole batch's pairs
//! affordable.
//!
//! Tensor names: `image.` (the CNN), `text.` (BERT), `text_in`, `fuse`, `score`. Training builds it
//! into a `VarMap`; nothing serves it, and it is saved as a plain safetensors file.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use super::cnn::{Cnn, CnnConfig};
use super::image_text::{IMAGE_PREFIX, TEXT_PREFIX};
use super::sentence_encoder::{BertConfig, Pooling};
use super::trainable_bert::TrainableBert;

/// The architecture of a matcher.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ImageTextMatcherConfig {
    /// The image tower; its `num_classes` is the width both towers' features share.
    pub image: CnnConfig,
    /// The text tower.
    pub text: BertConfig,
    /// How the text tower's token states become one vector.
    pub pooling: Pooling,
    /// Width of the MLP's hidden layer.
    pub hidden: usize,
}

impl ImageTextMatcherConfig {
    /// The width of both towers' features.
    pub fn width(&self) -> usize {
        self.image.num_classes
    }

    /// Checks that the model can be built; the message names the field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.image.feature_dim().map_err(|e| format!("image: {e}"))?;
        if self.image.aux_head || self.width() == 0 || self.hidden == 0 {
            return Err("the image tower needs one head of at least one output, and the MLP a hidden layer".into());
        }
        self.text.validate().map_err(|e| format!("text: {e}"))
    }
}

/// The matcher, trainable: every weight receives a gradient.
#[derive(Debug, Clone)]
pub struct TrainableImageTextMatcher {
    image: Cnn,
    text: TrainableBert,
    text_in: Linear,
    fuse: Linear,
    score: Linear,
}

impl TrainableImageTextMatcher {
    /// Builds the model from `vb`, or creates its tensors in a `VarMap`.
    pub fn new(cfg: &ImageTextMatcherConfig, vb: VarBuilder) -> Result<TrainableImageTextMatcher> {
        cfg.validate().map_err(candle_core::Error::msg)?;
        let w = cfg.width();
        Ok(TrainableImageTextMatcher {
            image: Cnn::new(&cfg.image, vb.pp(IMAGE_PREFIX))?,
            text: TrainableBert::new(&cfg.text, cfg.pooling, vb.pp(TEXT_PREFIX))?,
            text_in: candle_nn::linear(cfg.text.hidden_size, w, vb.pp("text_in"))?,
            fuse: candle_nn::linear(3 * w, cfg.hidden, vb.pp("fuse"))?,
            score: candle_nn::linear(cfg.hidden, 1, vb.pp("score"))?,
        })
    }

    /// Image features `[n, width]` of a normalised batch `[n, c, h, w]`; `train` normalises with
    /// batch statistics and enables dropout.
    pub fn image_features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.image.forward_t(x, train)?.logits)
    }

    /// Text features `[n, width]` of a padded token batch, as [`TrainableBert::forward`] takes it.
    pub fn text_features(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        self.text_in.forward(&self.text.forward(input_ids, attention_mask)?)
    }

    /// The logit of every (image, text) pair, `[n, m]`, from features `[n, width]` and `[m, width]`.
    pub fn score_pairs(&self, images: &Tensor, texts: &Tensor) -> Result<Tensor> {
        let (n, w) = images.dims2()?;
        let m = texts.dim(0)?;
        let v = images.unsqueeze(1)?.broadcast_as((n, m, w))?;
        let t = texts.unsqueeze(0)?.broadcast_as((n, m, w))?;
        let joint = Tensor::cat(&[&v, &t, &(&v * &t)?], D::Minus1)?.reshape((n * m, 3 * w))?;
        let hidden = self.fuse.forward(&joint)?.relu()?;
        self.score.forward(&hidden)?.reshape((n, m))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    use super::*;
    use crate::models::cnn::LayerSpec;
    use crate::models::trainable_bert::padded_batch;
    use crate::testing_text::tiny_bert_config;

    #[test]
    fn pairs_score_jointly_and_every_weight_learns() {
        let image = CnnConfig {
            input_shape: [1, 8, 8],
            num_classes: 6,
            layers: vec![
                LayerSpec::Conv { out_channels: 4, kernel: 3, stride: 1, padding: 1, batch_norm: true, relu: true },
                LayerSpec::GlobalAvgPool,
            ],
            aux_head: false,
        };
        let cfg = ImageTextMatcherConfig { image, text: tiny_bert_config(1), pooling: Pooling::Mean, hidden: 16 };
        let vars = VarMap::new();
        let model =
            TrainableImageTextMatcher::new(&cfg, VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu)).unwrap();
        let x = Tensor::randn(0f32, 1., (3, 1, 8, 8), &Device::Cpu).unwrap();
        let batch: [&[u32]; 2] = [&[2, 11, 17, 3], &[2, 18, 3]];
        let (ids, mask) = padded_batch(&batch, 0, &Device::Cpu).unwrap();
        let v = model.image_features(&x, true).unwrap();
        let t = model.text_features(&ids, &mask).unwrap();
        let scores = model.score_pairs(&v, &t).unwrap();
        assert_eq!(scores.dims(), [3, 2]);
        // A pair's score is its own: scoring one pair alone gives the grid's cell.
        let alone = model.score_pairs(&v.narrow(0, 2, 1).unwrap(), &t.narrow(0, 1, 1).unwrap()).unwrap();
        let cell = scores.get(2).unwrap().get(1).unwrap().to_scalar::<f32>().unwrap();
        assert!((alone.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0] - cell).abs() < 1e-6);

        let grads = scores.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        crate::testing::assert_every_weight_gets_a_gradient(&vars, &grads);
    }
}
