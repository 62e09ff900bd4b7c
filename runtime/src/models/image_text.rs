//! An image–text dual encoder, CLIP at a small scale: an image tower and a text tower, each ending
//! in a linear projection into one shared space, L2-normalised, compared by cosine similarity
//! times a learned scale.
//!
//! The image tower is the runtime's [`Cnn`], whose head is the image projection: its
//! `num_classes` is the width of the shared space and `image.head` maps the pooled features into
//! it, so the tower needs no layer of its own. The text tower is BERT under `text.` (BERT's usual
//! tensor names), pooled, then `text_projection.weight` `[dim, hidden]`, without a bias as in
//! CLIP. `logit_scale` `[1]` holds ln s: a similarity logit is s · cos, with s capped at
//! [`MAX_LOGIT_SCALE`] as CLIP caps it, so that the softmax cannot grow arbitrarily sharp.
//!
//! [`TrainableImageText`] is the version that trains (the CNN with batch statistics, the text
//! tower on [`TrainableBert`]); [`ImageText`] is the served one (batch norm folded into the
//! convolutions, the text tower on [`ServedBert`]). Tests hold them to the same embeddings.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use super::cnn::{Cnn, CnnConfig};
use super::sentence_encoder::{expected_tensor_shapes as bert_shapes, BertConfig, Pooling};
use super::served_bert::ServedBert;
use super::trainable_bert::TrainableBert;
use crate::layers::differentiable::l2_normalize;

/// The name prefix of the image tower's tensors.
pub const IMAGE_PREFIX: &str = "image";
/// The name prefix of the text tower's tensors.
pub const TEXT_PREFIX: &str = "text";
/// The text projection's tensor name prefix.
pub const TEXT_PROJECTION: &str = "text_projection";
/// The tensor holding ln s.
pub const LOGIT_SCALE: &str = "logit_scale";
/// CLIP's starting temperature, 0.07: s starts at 1 / 0.07.
pub const INITIAL_LOGIT_SCALE: f64 = 1.0 / 0.07;
/// The largest scale s (CLIP's cap).
pub const MAX_LOGIT_SCALE: f64 = 100.0;

/// L2 normalisation's floor on a vector's norm, PyTorch's default.
const NORM_EPS: f64 = 1e-12;

/// The architecture of both towers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ImageTextConfig {
    /// The image tower; its `num_classes` is the width of the shared space (its head is the
    /// image projection), and it has no auxiliary head.
    pub image: CnnConfig,
    /// The text tower.
    pub text: BertConfig,
    /// How the text tower's token states become one vector before the projection.
    pub pooling: Pooling,
}

impl ImageTextConfig {
    /// The width of the shared space.
    pub fn embed_dim(&self) -> usize {
        self.image.num_classes
    }

    /// Checks that both towers can be built; the message names the field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.image.feature_dim().map_err(|e| format!("image: {e}"))?;
        if self.image.aux_head {
            return Err("image: field `aux_head`: the image tower has one head, its projection".into());
        }
        if self.embed_dim() == 0 {
            return Err("image: field `num_classes`: the shared space needs at least one dimension".into());
        }
        self.text.validate().map_err(|e| format!("text: {e}"))
    }

    /// Every trainable weight of both towers, the projections and the scale (batch-norm running
    /// statistics excluded).
    pub fn num_params(&self) -> std::result::Result<usize, String> {
        Ok(self.image.num_params()? + self.text.num_params() + self.embed_dim() * self.text.hidden_size + 1)
    }
}

/// The dual encoder that trains: every weight receives a gradient.
#[derive(Debug, Clone)]
pub struct TrainableImageText {
    image: Cnn,
    text: TrainableBert,
    text_projection: Linear,
    log_scale: Tensor,
}

impl TrainableImageText {
    /// Builds the model from `vb`, or creates its tensors in a `VarMap` (ln s at
    /// ln [`INITIAL_LOGIT_SCALE`]).
    pub fn new(cfg: &ImageTextConfig, vb: VarBuilder) -> Result<TrainableImageText> {
        cfg.validate().map_err(candle_core::Error::msg)?;
        let image = Cnn::new(&cfg.image, vb.pp(IMAGE_PREFIX))?;
        let text = TrainableBert::new(&cfg.text, cfg.pooling, vb.pp(TEXT_PREFIX))?;
        let text_projection = candle_nn::linear_no_bias(cfg.text.hidden_size, cfg.embed_dim(), vb.pp(TEXT_PROJECTION))?;
        let log_scale = vb.get_with_hints(1, LOGIT_SCALE, candle_nn::Init::Const(INITIAL_LOGIT_SCALE.ln()))?;
        Ok(TrainableImageText { image, text, text_projection, log_scale })
    }

    /// Unit-length embeddings `[n, dim]` of a normalised image batch `[n, c, h, w]`; `train`
    /// normalises with batch statistics and enables dropout.
    pub fn embed_images(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        l2_normalize(&self.image.forward_t(x, train)?.logits, NORM_EPS)
    }

    /// Unit-length embeddings `[n, dim]` of a padded token batch, as
    /// [`TrainableBert::forward`] takes it.
    pub fn embed_texts(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let pooled = self.text.forward(input_ids, attention_mask)?;
        l2_normalize(&self.text_projection.forward(&pooled)?, NORM_EPS)
    }

    /// The scale s as a scalar tensor, capped at [`MAX_LOGIT_SCALE`] (beyond the cap ln s
    /// receives no gradient, which is how CLIP's clamp behaves).
    pub fn logit_scale(&self) -> Result<Tensor> {
        self.log_scale.minimum(MAX_LOGIT_SCALE.ln())?.exp()?.squeeze(0)
    }
}

/// The served dual encoder: images and token ids in, unit vectors of the shared space out.
#[derive(Debug)]
pub struct ImageText {
    image: Cnn,
    text: ServedBert,
    /// `[hidden, dim]`: the projection's weight, transposed once for the matrix product.
    text_projection: Tensor,
    logit_scale: f32,
    device: Device,
}

impl ImageText {
    /// Builds the model from `vb`: batch norm folded into the image tower's convolutions, the
    /// text tower on the path that suits `vb`'s device (see [`ServedBert::new`]).
    pub fn new(cfg: &ImageTextConfig, vb: VarBuilder) -> Result<ImageText> {
        cfg.validate().map_err(candle_core::Error::msg)?;
        let image = Cnn::new(&cfg.image, vb.pp(IMAGE_PREFIX))?.fused_for_inference()?;
        let text = ServedBert::new(&cfg.text, cfg.pooling, vb.pp(TEXT_PREFIX))?;
        let weight = vb.pp(TEXT_PROJECTION).get((cfg.embed_dim(), cfg.text.hidden_size), "weight")?;
        let text_projection = weight.to_dtype(DType::F32)?.t()?.contiguous()?;
        let log_scale = vb.get(1, LOGIT_SCALE)?.to_dtype(DType::F64)?.to_vec1::<f64>()?[0];
        let logit_scale = log_scale.min(MAX_LOGIT_SCALE.ln()).exp() as f32;
        Ok(ImageText { image, text, text_projection, logit_scale, device: vb.device().clone() })
    }

    /// Unit-length embeddings of a normalised image batch `[n, c, h, w]`, one row per image.
    pub fn embed_images(&self, x: &Tensor) -> crate::Result<Vec<Vec<f32>>> {
        let projected = self.image.forward_t(x, false)?.logits;
        Ok(l2_normalize(&projected, NORM_EPS)?.to_device(&Device::Cpu)?.to_vec2::<f32>()?)
    }

    /// Unit-length embeddings of token id sequences, in order; the contract of
    /// [`SentenceEncoder::embed`](super::sentence_encoder::SentenceEncoder::embed).
    pub fn embed_texts(&self, batch: &[&[u32]]) -> crate::Result<Vec<Vec<f32>>> {
        let pooled = self.text.embed(batch)?;
        let hidden = self.text_projection.dim(0)?;
        let flat: Vec<f32> = pooled.into_iter().flatten().collect();
        let pooled = Tensor::from_vec(flat, (batch.len(), hidden), &self.device)?;
        let projected = pooled.matmul(&self.text_projection)?;
        Ok(l2_normalize(&projected, NORM_EPS)?.to_device(&Device::Cpu)?.to_vec2::<f32>()?)
    }

    /// The learned scale s that turns a cosine into a logit, capped at [`MAX_LOGIT_SCALE`].
    pub fn logit_scale(&self) -> f32 {
        self.logit_scale
    }
}

/// The name and shape of every tensor the model reads: the image tower's under `image.` (batch
/// norm's running statistics included), BERT's under `text.`, the projection and the scale.
pub fn expected_tensor_shapes(cfg: &ImageTextConfig) -> Result<BTreeMap<String, Vec<usize>>> {
    cfg.validate().map_err(candle_core::Error::msg)?;
    let image = VarMap::new();
    Cnn::new(&cfg.image, VarBuilder::from_varmap(&image, DType::F32, &Device::Cpu))?;
    let mut shapes: BTreeMap<String, Vec<usize>> = crate::bundle::shapes_of(&image)
        .into_iter()
        .map(|(name, dims)| (format!("{IMAGE_PREFIX}.{name}"), dims))
        .collect();
    shapes.extend(bert_shapes(&cfg.text)?.into_iter().map(|(name, dims)| (format!("{TEXT_PREFIX}.{name}"), dims)));
    shapes.insert(format!("{TEXT_PROJECTION}.weight"), vec![cfg.embed_dim(), cfg.text.hidden_size]);
    shapes.insert(LOGIT_SCALE.into(), vec![1]);
    Ok(shapes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::cnn::LayerSpec;
    use crate::models::trainable_bert::padded_batch;
    use crate::testing_text::tiny_bert_config;

    fn tiny() -> ImageTextConfig {
        let image = CnnConfig {
            input_shape: [1, 8, 8],
            num_classes: 6,
            layers: vec![
                LayerSpec::Conv { out_channels: 4, kernel: 3, stride: 1, padding: 1, batch_norm: true, relu: true },
                LayerSpec::MaxPool { size: 2 },
                LayerSpec::GlobalAvgPool,
            ],
            aux_head: false,
        };
        ImageTextConfig { image, text: tiny_bert_config(2), pooling: Pooling::Mean }
    }

    /// A trainable model over random weights (layer norms and running statistics moved away from
    /// their starting values, so a misread tensor shows) and its variables.
    fn random() -> (TrainableImageText, VarMap) {
        let vars = VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
        let model = TrainableImageText::new(&tiny(), vb).unwrap();
        for (name, var) in vars.data().lock().unwrap().iter() {
            let noise = Tensor::randn(0f32, 0.1, var.shape(), &Device::Cpu).unwrap();
            let moved = if name.contains("running_var") { noise.abs().unwrap() + 0.5 } else { var.as_tensor() + noise };
            var.set(&moved.unwrap()).unwrap();
        }
        (model, vars)
    }

    fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
        a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn the_served_model_embeds_what_the_trained_one_computes_and_every_weight_learns() {
        let (trainable, vars) = random();
        let tensors = vars.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
        let served = ImageText::new(&tiny(), VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu)).unwrap();

        let x = Tensor::randn(0f32, 1., (3, 1, 8, 8), &Device::Cpu).unwrap();
        let want = trainable.embed_images(&x, false).unwrap();
        assert!(max_diff(&want.to_vec2().unwrap(), &served.embed_images(&x).unwrap()) < 1e-4);
        let batch: [&[u32]; 3] = [&[2, 11, 17, 3], &[2, 18, 3], &[2, 10, 21, 22, 23, 3]];
        let (ids, mask) = padded_batch(&batch, 0, &Device::Cpu).unwrap();
        let texts = trainable.embed_texts(&ids, &mask).unwrap();
        let got = served.embed_texts(&batch).unwrap();
        assert!(max_diff(&texts.to_vec2().unwrap(), &got) < 1e-4);
        for v in &got {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "unit length, found {norm}");
        }
        let scale = trainable.logit_scale().unwrap().to_scalar::<f32>().unwrap();
        assert!((scale - served.logit_scale()).abs() < 1e-3 * scale, "{scale} and {}", served.logit_scale());

        // A CLIP logit matrix reaches every weight, the scale included.
        let images = trainable.embed_images(&x, true).unwrap();
        let logits = images.matmul(&texts.t().unwrap()).unwrap().broadcast_mul(&trainable.logit_scale().unwrap());
        let grads = logits.unwrap().sqr().unwrap().sum_all().unwrap().backward().unwrap();
        crate::testing::assert_every_weight_gets_a_gradient(&vars, &grads);
    }

    #[test]
    fn expected_shapes_are_what_the_model_builds() {
        let (_, vars) = random();
        let cfg = tiny();
        assert_eq!(crate::bundle::shapes_of(&vars), expected_tensor_shapes(&cfg).unwrap());
        assert_eq!(expected_tensor_shapes(&cfg).unwrap()["text_projection.weight"], vec![6, 32]);
        let trainable: usize = vars
            .data()
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| !k.contains("running"))
            .map(|(_, v)| v.elem_count())
            .sum();
        assert_eq!(cfg.num_params().unwrap(), trainable);
    }

    #[test]
    fn the_scale_is_capped() {
        let (model, vars) = random();
        vars.data().lock().unwrap()[LOGIT_SCALE].set(&Tensor::new(&[10f32], &Device::Cpu).unwrap()).unwrap();
        let scale = model.logit_scale().unwrap().to_scalar::<f32>().unwrap();
        assert!((f64::from(scale) - MAX_LOGIT_SCALE).abs() < 1e-3, "{scale}");
        let mut bad = tiny();
        bad.image.aux_head = true;
        assert!(bad.validate().unwrap_err().contains("aux_head"));
    }
}
