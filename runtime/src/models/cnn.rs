//! A config-driven convolutional classifier: teachers and students are the same code with other configs.
//!
//! The body is a list of [`LayerSpec`]s; the head is one linear layer, plus an optional auxiliary
//! linear head for dual-head methods (DHKD, DHO). Tensor names follow the layer list:
//! `layers.{i}.conv`, `layers.{i}.bn`, `layers.{i}.dw`, `layers.{i}.pw`, `head`, `head_aux`.

use candle_core::{Module, ModuleT, Result, Tensor, D};
use candle_nn::{BatchNorm, BatchNormConfig, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::layers::{batch_norm_train, conv2d, conv2d_no_bias, max_pool2d, Conv2d, Conv2dConfig};

/// The full architecture of a CNN classifier.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CnnConfig {
    /// `[channels, height, width]` of the input.
    pub input_shape: [usize; 3],
    /// Number of classes of the heads.
    pub num_classes: usize,
    /// The body, applied in order.
    pub layers: Vec<LayerSpec>,
    /// Adds a second linear head `head_aux` on the same features.
    #[serde(default)]
    pub aux_head: bool,
}

/// One stage of the body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerSpec {
    /// A convolution, optionally followed by batch norm and ReLU.
    Conv {
        /// Output channels.
        out_channels: usize,
        /// Square kernel size.
        kernel: usize,
        /// Stride.
        #[serde(default = "one")]
        stride: usize,
        /// Zero padding.
        #[serde(default)]
        padding: usize,
        /// Batch norm after the convolution (then the convolution has no bias).
        #[serde(default)]
        batch_norm: bool,
        /// ReLU at the end.
        #[serde(default = "yes")]
        relu: bool,
    },
    /// Depthwise `kernel × kernel` then pointwise 1×1, each with optional batch norm and a ReLU.
    Separable {
        /// Output channels of the pointwise convolution.
        out_channels: usize,
        /// Square kernel size of the depthwise convolution.
        kernel: usize,
        /// Stride of the depthwise convolution.
        #[serde(default = "one")]
        stride: usize,
        /// Zero padding of the depthwise convolution.
        #[serde(default)]
        padding: usize,
        /// Batch norm after each convolution.
        #[serde(default)]
        batch_norm: bool,
    },
    /// Non-overlapping max pooling.
    MaxPool {
        /// Window side and stride.
        size: usize,
    },
    /// Dropout, active in training only.
    Dropout {
        /// Drop probability.
        p: f32,
    },
    /// Mean over the spatial dimensions, giving `[N, C]`.
    GlobalAvgPool,
    /// Flattens `[N, C, H, W]` to `[N, C*H*W]`.
    Flatten,
    /// A fully connected layer on flat features.
    Linear {
        /// Output features.
        out_features: usize,
        /// ReLU at the end.
        #[serde(default = "yes")]
        relu: bool,
    },
}

fn one() -> usize {
    1
}

fn yes() -> bool {
    true
}

/// The shape of activations between layers, used to size layers and count parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Activation {
    Map { c: usize, h: usize, w: usize },
    Flat(usize),
}

impl CnnConfig {
    /// Checks that every layer fits the activation it receives and returns the feature width at the head.
    pub fn feature_dim(&self) -> std::result::Result<usize, String> {
        let mut act = self.input_activation();
        for (i, layer) in self.layers.iter().enumerate() {
            act = next_activation(act, layer).map_err(|e| format!("layers[{i}]: {e}"))?;
        }
        match act {
            Activation::Flat(n) => Ok(n),
            Activation::Map { .. } => Err("the body must end flat: add global_avg_pool or flatten".into()),
        }
    }

    /// The exact number of trainable parameters (batch-norm running statistics excluded).
    pub fn num_params(&self) -> std::result::Result<usize, String> {
        let mut act = self.input_activation();
        let mut total = 0;
        for (i, layer) in self.layers.iter().enumerate() {
            total += layer_params(act, layer);
            act = next_activation(act, layer).map_err(|e| format!("layers[{i}]: {e}"))?;
        }
        let features = match act {
            Activation::Flat(n) => n,
            Activation::Map { .. } => return Err("the body must end flat".into()),
        };
        let heads = if self.aux_head { 2 } else { 1 };
        Ok(total + heads * (features * self.num_classes + self.num_classes))
    }

    fn input_activation(&self) -> Activation {
        let [c, h, w] = self.input_shape;
        Activation::Map { c, h, w }
    }
}

fn conv_out(size: usize, kernel: usize, stride: usize, padding: usize) -> std::result::Result<usize, String> {
    let padded = size + 2 * padding;
    if kernel == 0 || stride == 0 || padded < kernel {
        return Err(format!("kernel {kernel} with stride {stride} and padding {padding} does not fit size {size}"));
    }
    Ok((padded - kernel) / stride + 1)
}

fn next_activation(act: Activation, layer: &LayerSpec) -> std::result::Result<Activation, String> {
    match (act, layer) {
        (Activation::Map { h, w, .. }, LayerSpec::Conv { out_channels, kernel, stride, padding, .. })
        | (Activation::Map { h, w, .. }, LayerSpec::Separable { out_channels, kernel, stride, padding, .. }) => {
            Ok(Activation::Map {
                c: *out_channels,
                h: conv_out(h, *kernel, *stride, *padding)?,
                w: conv_out(w, *kernel, *stride, *padding)?,
            })
        }
        (Activation::Map { c, h, w }, LayerSpec::MaxPool { size }) => {
            if *size == 0 || h < *size || w < *size {
                return Err(format!("max_pool {size} does not fit {h}x{w}"));
            }
            Ok(Activation::Map { c, h: h / size, w: w / size })
        }
        (act, LayerSpec::Dropout { p }) => {
            if !(0.0..1.0).contains(p) {
                return Err(format!("dropout p must be in [0, 1), found {p}"));
            }
            Ok(act)
        }
        (Activation::Map { c, .. }, LayerSpec::GlobalAvgPool) => Ok(Activation::Flat(c)),
        (Activation::Map { c, h, w }, LayerSpec::Flatten) => Ok(Activation::Flat(c * h * w)),
        (Activation::Flat(_), LayerSpec::Linear { out_features, .. }) => Ok(Activation::Flat(*out_features)),
        (Activation::Flat(_), other) => Err(format!("{other:?} needs a spatial input, found flat features")),
        (Activation::Map { .. }, LayerSpec::Linear { .. }) => {
            Err("linear needs flat features: add flatten or global_avg_pool first".into())
        }
    }
}

fn layer_params(act: Activation, layer: &LayerSpec) -> usize {
    let in_c = match act {
        Activation::Map { c, .. } => c,
        Activation::Flat(n) => n,
    };
    match layer {
        LayerSpec::Conv { out_channels, kernel, batch_norm, .. } => {
            let weights = out_channels * in_c * kernel * kernel;
            weights + if *batch_norm { 2 * out_channels } else { *out_channels }
        }
        LayerSpec::Separable { out_channels, kernel, batch_norm, .. } => {
            let dw = in_c * kernel * kernel + if *batch_norm { 2 * in_c } else { in_c };
            let pw = out_channels * in_c + if *batch_norm { 2 * out_channels } else { *out_channels };
            dw + pw
        }
        LayerSpec::Linear { out_features, .. } => in_c * out_features + out_features,
        LayerSpec::MaxPool { .. } | LayerSpec::Dropout { .. } | LayerSpec::GlobalAvgPool | LayerSpec::Flatten => 0,
    }
}

/// A convolution with its optional batch norm, folded away at inference.
#[derive(Debug, Clone)]
struct ConvBn {
    conv: Conv2d,
    bn: Option<BatchNorm>,
    relu: bool,
}

/// How batch norm normalises a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BnMode {
    /// Running statistics (inference, validation).
    Eval,
    /// Statistics of the whole batch.
    Batch,
    /// Statistics of each chunk of this many images (ghost batch norm).
    Ghost(usize),
}

impl BnMode {
    fn train(self) -> bool {
        self != BnMode::Eval
    }
}

/// Ghost batch norm: each chunk of `ghost` images along the batch is normalised with its own
/// statistics, and each chunk updates the running statistics in turn, as the reference
/// implementation does with one forward pass per chunk. One chunk is plain training-mode batch norm.
fn ghost_batch_norm(bn: &BatchNorm, x: &Tensor, ghost: usize) -> Result<Tensor> {
    let n = x.dim(0)?;
    if n <= ghost {
        return batch_norm_train(bn, x, false);
    }
    let chunks = (0..n)
        .step_by(ghost)
        .map(|start| batch_norm_train(bn, &x.narrow(0, start, ghost.min(n - start))?, false))
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&chunks, 0)
}

impl ConvBn {
    fn forward_t(&self, x: &Tensor, mode: BnMode) -> Result<Tensor> {
        match &self.bn {
            None if self.relu => self.conv.forward_relu(x),
            None => self.conv.forward(x),
            Some(bn) => {
                let z = self.conv.forward(x)?;
                let y = match mode {
                    // The fused kernel normalises, updates the running statistics and applies ReLU in one pass.
                    BnMode::Batch => return batch_norm_train(bn, &z, self.relu),
                    BnMode::Ghost(ghost) => ghost_batch_norm(bn, &z, ghost)?,
                    BnMode::Eval => bn.forward_t(&z, false)?,
                };
                if self.relu {
                    y.relu()
                } else {
                    Ok(y)
                }
            }
        }
    }

    fn folded(&self) -> Result<ConvBn> {
        let conv = match &self.bn {
            Some(bn) => self.conv.fold_batch_norm(bn)?,
            None => self.conv.clone(),
        };
        Ok(ConvBn { conv, bn: None, relu: self.relu })
    }
}

#[derive(Debug, Clone)]
enum Layer {
    Conv(ConvBn),
    Separable { dw: ConvBn, pw: ConvBn },
    MaxPool(usize),
    Dropout(f32),
    GlobalAvgPool,
    Flatten,
    Linear { linear: Linear, relu: bool },
}

/// Logits of the main head, and of the auxiliary head when the config has one.
#[derive(Debug, Clone)]
pub struct CnnOutput {
    /// Main-head logits `[N, classes]`.
    pub logits: Tensor,
    /// Auxiliary-head logits `[N, classes]`.
    pub aux_logits: Option<Tensor>,
}

/// The CNN classifier.
#[derive(Debug, Clone)]
pub struct Cnn {
    config: CnnConfig,
    layers: Vec<Layer>,
    head: Linear,
    head_aux: Option<Linear>,
}

fn batch_norm(channels: usize, vb: VarBuilder) -> Result<BatchNorm> {
    candle_nn::batch_norm(channels, BatchNormConfig { eps: 1e-5, remove_mean: true, affine: true, momentum: 0.1 }, vb)
}

/// The shape of one convolution block, before its tensors exist.
struct ConvBnSpec {
    in_c: usize,
    out_c: usize,
    kernel: usize,
    cfg: Conv2dConfig,
    batch_norm: bool,
    relu: bool,
}

impl ConvBnSpec {
    /// Creates the block's tensors as `{name}` and, with batch norm, `{name}_bn` under `vb`.
    fn build(self, vb: &VarBuilder, name: &str) -> Result<ConvBn> {
        let ConvBnSpec { in_c, out_c, kernel, cfg, batch_norm: with_bn, relu } = self;
        let (conv, bn) = if with_bn {
            let conv = conv2d_no_bias(in_c, out_c, kernel, cfg, vb.pp(name))?;
            (conv, Some(batch_norm(out_c, vb.pp(format!("{name}_bn")))?))
        } else {
            (conv2d(in_c, out_c, kernel, cfg, vb.pp(name))?, None)
        };
        Ok(ConvBn { conv, bn, relu })
    }
}

impl Cnn {
    /// Builds the network, taking (or creating, under a `VarMap`) its tensors from `vb`.
    pub fn new(config: &CnnConfig, vb: VarBuilder) -> Result<Cnn> {
        config.feature_dim().map_err(candle_core::Error::msg)?;
        let mut act = config.input_activation();
        let mut layers = Vec::with_capacity(config.layers.len());
        for (i, spec) in config.layers.iter().enumerate() {
            let vb = vb.pp(format!("layers.{i}"));
            let in_c = match act {
                Activation::Map { c, .. } => c,
                Activation::Flat(n) => n,
            };
            let layer = match spec {
                LayerSpec::Conv { out_channels, kernel, stride, padding, batch_norm, relu } => {
                    let cfg = Conv2dConfig { stride: *stride, padding: *padding, ..Default::default() };
                    let spec = ConvBnSpec {
                        in_c,
                        out_c: *out_channels,
                        kernel: *kernel,
                        cfg,
                        batch_norm: *batch_norm,
                        relu: *relu,
                    };
                    Layer::Conv(spec.build(&vb, "conv")?)
                }
                LayerSpec::Separable { out_channels, kernel, stride, padding, batch_norm } => {
                    let dw_cfg =
                        Conv2dConfig { stride: *stride, padding: *padding, groups: in_c, ..Default::default() };
                    let dw = ConvBnSpec {
                        in_c,
                        out_c: in_c,
                        kernel: *kernel,
                        cfg: dw_cfg,
                        batch_norm: *batch_norm,
                        relu: true,
                    }
                    .build(&vb, "dw")?;
                    let pw_cfg = Conv2dConfig::default();
                    let pw = ConvBnSpec {
                        in_c,
                        out_c: *out_channels,
                        kernel: 1,
                        cfg: pw_cfg,
                        batch_norm: *batch_norm,
                        relu: true,
                    }
                    .build(&vb, "pw")?;
                    Layer::Separable { dw, pw }
                }
                LayerSpec::MaxPool { size } => Layer::MaxPool(*size),
                LayerSpec::Dropout { p } => Layer::Dropout(*p),
                LayerSpec::GlobalAvgPool => Layer::GlobalAvgPool,
                LayerSpec::Flatten => Layer::Flatten,
                LayerSpec::Linear { out_features, relu } => {
                    Layer::Linear { linear: candle_nn::linear(in_c, *out_features, vb.pp("linear"))?, relu: *relu }
                }
            };
            layers.push(layer);
            act = next_activation(act, spec).map_err(candle_core::Error::msg)?;
        }
        let features = match act {
            Activation::Flat(n) => n,
            Activation::Map { .. } => unreachable!("feature_dim() checked the body ends flat"),
        };
        let head = candle_nn::linear(features, config.num_classes, vb.pp("head"))?;
        let head_aux = if config.aux_head {
            Some(candle_nn::linear(features, config.num_classes, vb.pp("head_aux"))?)
        } else {
            None
        };
        Ok(Cnn { config: config.clone(), layers, head, head_aux })
    }

    /// The config this network was built from.
    pub fn config(&self) -> &CnnConfig {
        &self.config
    }

    /// Flat features before the heads. `train` enables dropout and batch-statistics normalisation.
    pub fn features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.features_with(x, if train { BnMode::Batch } else { BnMode::Eval })
    }

    fn features_with(&self, x: &Tensor, mode: BnMode) -> Result<Tensor> {
        let train = mode.train();
        let mut x = x.clone();
        for layer in &self.layers {
            x = match layer {
                Layer::Conv(c) => c.forward_t(&x, mode)?,
                Layer::Separable { dw, pw } => pw.forward_t(&dw.forward_t(&x, mode)?, mode)?,
                Layer::MaxPool(size) => max_pool2d(&x, *size)?,
                Layer::Dropout(p) if train => candle_nn::ops::dropout(&x, *p)?,
                Layer::Dropout(_) => x,
                Layer::GlobalAvgPool => x.mean(D::Minus1)?.mean(D::Minus1)?,
                Layer::Flatten => x.flatten_from(1)?,
                Layer::Linear { linear, relu } => {
                    let y = linear.forward(&x)?;
                    if *relu {
                        y.relu()?
                    } else {
                        y
                    }
                }
            };
        }
        Ok(x)
    }

    /// Logits of both heads for a normalised `[N, C, H, W]` batch.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<CnnOutput> {
        self.heads(&self.features(x, train)?)
    }

    /// A training-mode pass with ghost batch norm: batch statistics over chunks of `ghost_batch`
    /// images (the last chunk may be smaller), so a large batch keeps the regularising noise of
    /// small-batch statistics. Each chunk updates the running statistics, which evaluation uses.
    /// A `ghost_batch` of at least the batch size is exactly `forward_t(x, true)`.
    pub fn forward_ghost(&self, x: &Tensor, ghost_batch: usize) -> Result<CnnOutput> {
        if ghost_batch == 0 {
            candle_core::bail!("the ghost batch size must be positive");
        }
        self.heads(&self.features_with(x, BnMode::Ghost(ghost_batch))?)
    }

    /// Both heads' logits on features from [`Cnn::features`]: a caller that needs the features
    /// too (FID-CNN) runs the body once.
    pub fn heads(&self, features: &Tensor) -> Result<CnnOutput> {
        let logits = self.head.forward(features)?;
        let aux_logits = self.head_aux.as_ref().map(|h| h.forward(features)).transpose()?;
        Ok(CnnOutput { logits, aux_logits })
    }

    /// An inference-only copy with batch norm folded into the convolutions.
    ///
    /// Folding removes a full pass over every activation map per batch-normed layer, and lets the
    /// convolution kernel apply bias and ReLU in its epilogue.
    pub fn fused_for_inference(&self) -> Result<Cnn> {
        let layers = self
            .layers
            .iter()
            .map(|layer| {
                Ok(match layer {
                    Layer::Conv(c) => Layer::Conv(c.folded()?),
                    Layer::Separable { dw, pw } => Layer::Separable { dw: dw.folded()?, pw: pw.folded()? },
                    other => other.clone(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Cnn { config: self.config.clone(), layers, head: self.head.clone(), head_aux: self.head_aux.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    fn small() -> CnnConfig {
        CnnConfig {
            input_shape: [1, 8, 8],
            num_classes: 10,
            layers: vec![
                LayerSpec::Conv { out_channels: 4, kernel: 3, stride: 1, padding: 1, batch_norm: true, relu: true },
                LayerSpec::Separable { out_channels: 6, kernel: 3, stride: 1, padding: 1, batch_norm: true },
                LayerSpec::MaxPool { size: 2 },
                LayerSpec::Conv { out_channels: 5, kernel: 3, stride: 1, padding: 0, batch_norm: false, relu: true },
                LayerSpec::GlobalAvgPool,
                LayerSpec::Dropout { p: 0.1 },
            ],
            aux_head: true,
        }
    }

    #[test]
    fn param_count_matches_the_built_variables() {
        let cfg = small();
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        Cnn::new(&cfg, vb).unwrap();
        let data = varmap.data().lock().unwrap();
        let trainable: usize = data.iter().filter(|(k, _)| !k.contains("running")).map(|(_, v)| v.elem_count()).sum();
        assert_eq!(cfg.num_params().unwrap(), trainable);
    }

    #[test]
    fn folded_network_matches_the_training_graph_in_eval_mode() {
        let cfg = small();
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let net = Cnn::new(&cfg, vb).unwrap();
        let x = Tensor::randn(0f32, 1., (3, 1, 8, 8), &Device::Cpu).unwrap();
        // A few training passes move the running statistics away from their initial values.
        for _ in 0..3 {
            net.forward_t(&x, true).unwrap();
        }
        let eval = net.forward_t(&x, false).unwrap().logits;
        let fused = net.fused_for_inference().unwrap().forward_t(&x, false).unwrap().logits;
        let diff = (eval - fused).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-4, "max diff {diff}");
    }

    fn running_stats(varmap: &VarMap) -> Vec<(String, Vec<f32>)> {
        let data = varmap.data().lock().unwrap();
        let mut stats: Vec<(String, Vec<f32>)> = data
            .iter()
            .filter(|(k, _)| k.contains("running"))
            .map(|(k, v)| (k.clone(), v.as_tensor().to_vec1::<f32>().unwrap()))
            .collect();
        stats.sort_by(|a, b| a.0.cmp(&b.0));
        stats
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn ghost_batch_norm_with_one_chunk_is_plain_batch_norm() {
        let mut cfg = small();
        cfg.layers.retain(|l| !matches!(l, LayerSpec::Dropout { .. }));
        let x = Tensor::randn(0f32, 1., (6, 1, 8, 8), &Device::Cpu).unwrap();
        let plain_vars = VarMap::new();
        let plain = Cnn::new(&cfg, VarBuilder::from_varmap(&plain_vars, DType::F32, &Device::Cpu)).unwrap();
        let ghost_vars = VarMap::new();
        let ghost = Cnn::new(&cfg, VarBuilder::from_varmap(&ghost_vars, DType::F32, &Device::Cpu)).unwrap();
        for (name, var) in plain_vars.data().lock().unwrap().iter() {
            ghost_vars.data().lock().unwrap()[name].set(var.as_tensor()).unwrap();
        }
        for ghost_batch in [6, 64] {
            let a = plain.forward_t(&x, true).unwrap();
            let b = ghost.forward_ghost(&x, ghost_batch).unwrap();
            assert!(max_diff(&a.logits, &b.logits) < 1e-6);
            assert!(max_diff(a.aux_logits.as_ref().unwrap(), b.aux_logits.as_ref().unwrap()) < 1e-6);
            assert_eq!(running_stats(&plain_vars), running_stats(&ghost_vars));
        }
    }

    #[test]
    fn ghost_batch_norm_normalises_each_chunk_on_its_own() {
        // One batch-normed convolution without ReLU: each chunk of the output has zero mean per channel.
        let cfg = CnnConfig {
            input_shape: [1, 4, 4],
            num_classes: 2,
            layers: vec![
                LayerSpec::Conv { out_channels: 3, kernel: 3, stride: 1, padding: 1, batch_norm: true, relu: false },
                LayerSpec::Flatten,
            ],
            aux_head: false,
        };
        let varmap = VarMap::new();
        let net = Cnn::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
        // Positive weights make the offset of the second chunk show up in every channel.
        let weight = &varmap.data().lock().unwrap()["layers.0.conv.weight"];
        weight.set(&weight.ones_like().unwrap()).unwrap();
        // Two chunks with very different scales, plus a smaller third chunk.
        let a = Tensor::randn(0f32, 1., (4, 1, 4, 4), &Device::Cpu).unwrap();
        let b = Tensor::randn(0f32, 1., (4, 1, 4, 4), &Device::Cpu).unwrap().affine(10.0, 5.0).unwrap();
        let c = Tensor::randn(0f32, 1., (2, 1, 4, 4), &Device::Cpu).unwrap();
        let x = Tensor::cat(&[&a, &b, &c], 0).unwrap();
        let features = net.features_with(&x, BnMode::Ghost(4)).unwrap().reshape((10, 3, 16)).unwrap();
        for (start, len) in [(0, 4), (4, 4), (8, 2)] {
            let chunk = features.narrow(0, start, len).unwrap();
            let mean = chunk.mean(2).unwrap().mean(0).unwrap().abs().unwrap().max_all().unwrap();
            assert!(mean.to_scalar::<f32>().unwrap() < 1e-4);
        }
        // Plain batch norm over the whole batch does not centre the chunks.
        let plain = net.features(&x, true).unwrap().reshape((10, 3, 16)).unwrap();
        let first = plain.narrow(0, 0, 4).unwrap().mean(2).unwrap().mean(0).unwrap().abs().unwrap().max_all().unwrap();
        assert!(first.to_scalar::<f32>().unwrap() > 0.1);
        assert!(net.forward_ghost(&x, 0).is_err());
    }

    #[test]
    fn body_that_does_not_end_flat_is_rejected() {
        let mut cfg = small();
        cfg.layers.truncate(3);
        assert!(cfg.feature_dim().unwrap_err().contains("end flat"));
    }
}
