//! Two-dimensional convolution and pooling layers on top of the fast CPU kernels.

use candle_core::{bail, Module, Result, Tensor};
use candle_nn::{BatchNorm, VarBuilder};

use crate::kernels;
pub use crate::kernels::Conv2dConfig;

/// A convolution layer over NCHW tensors.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    cfg: Conv2dConfig,
}

/// Rejects configurations that would otherwise panic inside the variable builder.
fn check(in_channels: usize, out_channels: usize, kernel: usize, cfg: &Conv2dConfig) -> Result<()> {
    if kernel == 0 || cfg.stride == 0 || cfg.dilation == 0 || cfg.groups == 0 {
        bail!("conv2d kernel, stride, dilation and groups must be positive, got kernel {kernel} and {cfg:?}")
    }
    if !in_channels.is_multiple_of(cfg.groups) || !out_channels.is_multiple_of(cfg.groups) {
        bail!(
            "conv2d groups {} must divide input channels {in_channels} and output channels {out_channels}",
            cfg.groups
        )
    }
    Ok(())
}

fn to_candle(cfg: Conv2dConfig) -> candle_nn::Conv2dConfig {
    candle_nn::Conv2dConfig {
        stride: cfg.stride,
        padding: cfg.padding,
        dilation: cfg.dilation,
        groups: cfg.groups,
        cudnn_fwd_algo: None,
    }
}

/// Builds a convolution with a bias, named `weight` and `bias` under `vb`, initialised as
/// candle's own `conv2d` so checkpoints and training recipes carry over unchanged.
pub fn conv2d(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    cfg: Conv2dConfig,
    vb: VarBuilder,
) -> Result<Conv2d> {
    check(in_channels, out_channels, kernel, &cfg)?;
    let inner = candle_nn::conv2d(in_channels, out_channels, kernel, to_candle(cfg), vb)?;
    Ok(Conv2d::new(inner.weight().clone(), inner.bias().cloned(), cfg))
}

/// Builds a convolution without a bias, for layers followed by batch norm.
pub fn conv2d_no_bias(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    cfg: Conv2dConfig,
    vb: VarBuilder,
) -> Result<Conv2d> {
    check(in_channels, out_channels, kernel, &cfg)?;
    let inner = candle_nn::conv2d_no_bias(in_channels, out_channels, kernel, to_candle(cfg), vb)?;
    Ok(Conv2d::new(inner.weight().clone(), None, cfg))
}

impl Conv2d {
    /// Wraps existing parameters, e.g. loaded from a checkpoint.
    pub fn new(weight: Tensor, bias: Option<Tensor>, cfg: Conv2dConfig) -> Self {
        Self { weight, bias, cfg }
    }

    /// Folds an inference-mode batch norm into this convolution's weight and bias, so
    /// serving runs one fused kernel instead of a convolution and a normalisation sweep.
    pub fn fold_batch_norm(&self, bn: &BatchNorm) -> Result<Conv2d> {
        let channels = self.out_channels();
        if bn.running_mean().elem_count() != channels {
            bail!(
                "batch norm over {} channels cannot fold into a convolution with {channels} outputs",
                bn.running_mean().elem_count()
            )
        }
        let inv_std = (bn.running_var() + bn.eps())?.sqrt()?.recip()?;
        let (scale, beta) = match bn.weight_and_bias() {
            Some((gamma, beta)) => ((gamma * inv_std)?, Some(beta)),
            None => (inv_std, None),
        };
        let weight = self.weight.broadcast_mul(&scale.reshape((channels, 1, 1, 1))?)?;
        let shift = match &self.bias {
            Some(b) => (b - bn.running_mean())?,
            None => bn.running_mean().neg()?,
        };
        let bias = (shift * &scale)?;
        let bias = match beta {
            Some(beta) => (bias + beta)?,
            None => bias,
        };
        Ok(Conv2d::new(weight, Some(bias), self.cfg))
    }

    /// Convolution, bias and ReLU in one pass over the output (and one graph node).
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        kernels::conv2d(x, &self.weight, self.bias.as_ref(), self.cfg, true)
    }

    /// Convolution, bias, ReLU and `size` x `size` max pooling in one pass: the
    /// full-resolution activation is pooled while still in cache instead of being written
    /// out and read back, and in training it never becomes a graph tensor of its own.
    pub fn forward_relu_max_pool(&self, x: &Tensor, size: usize) -> Result<Tensor> {
        kernels::conv2d_max_pool(x, &self.weight, self.bias.as_ref(), self.cfg, true, size)
    }

    /// Number of output channels.
    pub fn out_channels(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Kernel side length.
    pub fn kernel(&self) -> usize {
        self.weight.dims()[3]
    }

    /// The weight, `[out, in / groups, k, k]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias, `[out]`, if the layer has one.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Stride, padding, dilation and groups.
    pub fn config(&self) -> Conv2dConfig {
        self.cfg
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        kernels::conv2d(x, &self.weight, self.bias.as_ref(), self.cfg, false)
    }
}

/// Training-mode batch norm, then ReLU if asked, with the running statistics updated as
/// candle's `BatchNorm::forward_train` does (for a norm built with `remove_mean`, the
/// default). One fused, multi-threaded op instead of a dozen element-wise ones.
pub fn batch_norm_train(bn: &BatchNorm, x: &Tensor, relu: bool) -> Result<Tensor> {
    let c = bn.running_mean().elem_count();
    if x.rank() < 2 || x.dim(1)? != c {
        bail!("batch norm over {c} channels got an input of shape {:?}", x.dims())
    }
    let (gamma, beta) = match bn.weight_and_bias() {
        Some((g, b)) => (g.clone(), b.clone()),
        None => (Tensor::ones(c, x.dtype(), x.device())?, Tensor::zeros(c, x.dtype(), x.device())?),
    };
    let (y, mean, var) = kernels::batch_norm_train(x, &gamma, &beta, bn.eps(), relu)?;
    let count = (x.elem_count() / c) as f64;
    let m = bn.momentum();
    let running_mean = bn.running_mean().detach();
    let running_var = bn.running_var().detach();
    let new_mean = ((&running_mean * (1.0 - m))? + (mean.detach() * m)?)?;
    let unbias = if count > 1.0 { count / (count - 1.0) } else { 1.0 };
    let new_var = ((&running_var * (1.0 - m))? + (var.detach() * (m * unbias))?)?;
    // In place, so every clone of the layer (they share storage) sees the update.
    bn.running_mean().slice_set(&new_mean, 0, 0)?;
    bn.running_var().slice_set(&new_var, 0, 0)?;
    Ok(y)
}

/// Non-overlapping max pooling with a square window.
pub fn max_pool2d(x: &Tensor, size: usize) -> Result<Tensor> {
    kernels::max_pool2d(x, size)
}
