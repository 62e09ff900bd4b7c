//! Hot CPU kernels, as candle custom ops, shared by training and serving.
//!
//! candle's CPU convolution is a slow im2col copy plus a generic matrix product, and its
//! backward pass is a direct loop; together they dominate both inference and training of
//! the convolutional students. These kernels replace them for contiguous f32 tensors on the
//! CPU and fall back to candle's own ops for every other device or dtype, so a CUDA build
//! behaves exactly as before.

mod conv;
mod cpu;
mod depthwise;
mod gemm;
mod geometry;
mod im2col;
mod microkernel;
mod ops;
mod pool;

use candle_core::{DType, Result, Tensor};

pub use gemm::sgemm;
pub use geometry::Conv2dConfig;

/// Worker threads the kernels spread one call over (rayon's global pool).
pub fn num_threads() -> usize {
    cpu::threads()
}

/// Whether the fast kernels can take these tensors.
fn on_fast_path(tensors: &[&Tensor]) -> bool {
    tensors.iter().all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// Two-dimensional convolution of NCHW `x` with `weight` (`[out, in / groups, kh, kw]`),
/// plus an optional per-channel `bias`, optionally followed by ReLU.
///
/// Fusing bias and ReLU into the convolution saves two sweeps over the activation in both
/// directions. Gradients flow to every operand that tracks them.
pub fn conv2d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, cfg: Conv2dConfig, relu: bool) -> Result<Tensor> {
    let fast = match bias {
        Some(b) => on_fast_path(&[x, weight, b]),
        None => on_fast_path(&[x, weight]),
    };
    if !fast {
        return reference_conv2d(x, weight, bias, cfg, relu);
    }
    let op = ops::Conv { cfg, relu };
    let (x, weight) = (x.contiguous()?, weight.contiguous()?);
    match bias {
        Some(b) => x.apply_op3(&weight, &b.contiguous()?, op),
        None => x.apply_op2(&weight, op),
    }
}

/// The same computation with candle's built-in ops: the fallback off the fast path, and the
/// baseline that tests and benchmarks compare against.
pub fn reference_conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    cfg: Conv2dConfig,
    relu: bool,
) -> Result<Tensor> {
    let y = x.conv2d(weight, cfg.padding, cfg.stride, cfg.dilation, cfg.groups)?;
    let y = match bias {
        Some(b) => y.broadcast_add(&b.reshape((1, b.elem_count(), 1, 1))?)?,
        None => y,
    };
    if relu {
        y.relu()
    } else {
        Ok(y)
    }
}

/// Max pooling of NCHW `x` over non-overlapping `size` x `size` windows, with a backward
/// pass that routes each window's gradient to its maximum.
pub fn max_pool2d(x: &Tensor, size: usize) -> Result<Tensor> {
    if !on_fast_path(&[x]) {
        return x.max_pool2d(size);
    }
    x.contiguous()?.apply_op1(ops::MaxPool { size })
}
