//! Hot CPU kernels, as candle custom ops, shared by training and serving.
//!
//! candle's CPU convolution is a slow im2col copy plus a generic matrix product, and its
//! backward pass is a direct loop; together they dominate both inference and training of
//! the convolutional students. These kernels replace them for contiguous f32 tensors on the
//! CPU and fall back to candle's own ops for every other device or dtype, so a CUDA build
//! behaves exactly as before.
//!
//! The diffusion UNet's group norm (with the SiLU that follows it) is a fused op of the same
//! kind, [`group_norm`].
//!
//! Transformer inference takes a second route: [`PackedLinear`], [`self_attention`] and
//! [`layer_norm_rows`] work on plain f32 slices, with weights packed once at load, because at
//! one sentence per call the cost of a tensor operation (an allocation, a re-packed weight, a
//! single-threaded element-wise pass) outweighs its arithmetic.

mod attention;
mod conv;
mod cpu;
mod depthwise;
mod dot;
mod eltwise;
mod gemm;
mod geometry;
mod group_norm;
mod im2col;
mod microkernel;
mod norm;
mod ops;
mod packed_gemm;
mod peak;
mod pool;
mod simd;
mod tile512;
mod vmath;

use candle_core::{DType, Result, Tensor};

pub use attention::self_attention;
pub(crate) use attention::self_attention_with;
pub use cpu::{active_isa, detected_isa, isa_name, IsaLevel, ISA_VARIABLE};
pub use gemm::sgemm;
pub use geometry::Conv2dConfig;
pub(crate) use packed_gemm::Kernel;
pub use packed_gemm::{Activation, PackedLinear};
pub use peak::measured_peak_gflops;
pub use vmath::layer_norm_rows;

/// The convolution tile this process runs: the 8-row AVX-512 kernel where 16-lane FMAs outrun
/// 8-lane ones on this CPU, else the 4-row AVX2 tile, else its portable version. Benchmarks
/// print it, since the ISA alone does not say which one ran.
pub fn conv_tile_name() -> &'static str {
    if microkernel::wide_tile() {
        "avx512 8x24"
    } else if cpu::has_avx2_fma() {
        "avx2 4x24"
    } else {
        "portable 4x24"
    }
}

/// Worker threads the kernels spread one call over (rayon's global pool).
pub fn num_threads() -> usize {
    cpu::threads()
}

/// Asks the C allocator to keep freed memory for reuse instead of returning it to the OS.
///
/// Training allocates and frees activation-sized tensors (megabytes each) at every step.
/// glibc hands blocks that large back to the OS, so every step pays a page fault per 4 KiB
/// of fresh memory, measured at 15-20% of a small CNN's training step. This raises the
/// thresholds above which glibc maps and unmaps memory directly. Call it once at start-up;
/// it is process-wide, costs some resident memory, and does nothing off glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        // SAFETY: mallopt only adjusts allocator tuning parameters; these values are in the
        // documented ranges (the mmap threshold's maximum on 64-bit is 32 MiB).
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            mallopt(M_TRIM_THRESHOLD, 1 << 30);
        }
    }
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

/// Convolution as [`conv2d`], then max pooling over non-overlapping `size` x `size`
/// windows, in one pass and one graph node.
///
/// Equivalent to `max_pool2d(&conv2d(..)?, size)`, but the full-resolution activation is
/// pooled while still in cache and, in training, never becomes a graph tensor of its own.
pub fn conv2d_max_pool(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    cfg: Conv2dConfig,
    relu: bool,
    size: usize,
) -> Result<Tensor> {
    let fast = match bias {
        Some(b) => on_fast_path(&[x, weight, b]),
        None => on_fast_path(&[x, weight]),
    };
    if !fast {
        return reference_conv2d(x, weight, bias, cfg, relu)?.max_pool2d(size);
    }
    let keep = x.track_op() || weight.track_op() || bias.is_some_and(|b| b.track_op());
    let op = ops::ConvPool { cfg, relu, size, keep, activation: Default::default() };
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

/// Training-mode batch normalisation of `x` (`[n, c, ...]`) with the batch's own
/// statistics, `gamma * (x - mean) / sqrt(var + eps) + beta`, then ReLU if asked.
///
/// Returns the output and the batch mean and biased variance per channel, from which the
/// caller updates its running statistics. Gradients flow to `x`, `gamma` and `beta`,
/// through the statistics as well.
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    if !on_fast_path(&[x, gamma, beta]) {
        return reference_batch_norm_train(x, gamma, beta, eps, relu);
    }
    let x = x.contiguous()?;
    let stats = x.apply_op1_no_bwd(&ops::BatchStats)?;
    let (mean, var) = (stats.get(0)?, stats.get(1)?);
    let inv_std = (&var + eps)?.sqrt()?.recip()?;
    let op = ops::BatchNormApply { mean: mean.to_vec1()?, inv_std: inv_std.to_vec1()?, relu };
    let y = x.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
    Ok((y, mean, var))
}

/// [`batch_norm_train`] with candle's built-in ops: the fallback off the fast path.
fn reference_batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    let c = x.dim(1)?;
    let mut shape = vec![1; x.rank()];
    shape[1] = c;
    let xt = x.transpose(0, 1)?.flatten_from(1)?;
    let mean = xt.mean_keepdim(1)?;
    let centered = xt.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(1)?;
    let mean_b = mean.reshape(shape.as_slice())?;
    let std_b = (&var + eps)?.sqrt()?.reshape(shape.as_slice())?;
    let y = x
        .broadcast_sub(&mean_b)?
        .broadcast_div(&std_b)?
        .broadcast_mul(&gamma.reshape(shape.as_slice())?)?
        .broadcast_add(&beta.reshape(shape.as_slice())?)?;
    let y = if relu { y.relu()? } else { y };
    Ok((y, mean.flatten_all()?.detach(), var.flatten_all()?.detach()))
}

/// Group normalisation of `x` (`[n, c, ...]`, rank 3 or more) over `groups` groups of
/// consecutive channels, `(x - mean) / sqrt(var + eps) * gamma + beta` with the mean and biased
/// variance of each sample's group, then SiLU (`z * sigmoid(z)`) if asked.
///
/// The same computation as candle-nn's `GroupNorm` followed by `silu`, in one multi-threaded
/// pass and one graph node; gradients flow to `x`, `gamma` and `beta`, through the statistics.
/// Each sample is normalised on its own in a fixed order, so its output is the same bits alone
/// or in any batch. Fails unless `groups` divides the channels and `gamma` and `beta` are `[c]`.
pub fn group_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, groups: usize, eps: f64, silu: bool) -> Result<Tensor> {
    ops::group_geometry(x.dims(), gamma.dims(), beta.dims(), groups)?;
    if !on_fast_path(&[x, gamma, beta]) {
        return reference_group_norm(x, gamma, beta, groups, eps, silu);
    }
    let op = ops::GroupNorm { groups, eps, silu, stats: Default::default() };
    x.contiguous()?.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)
}

/// [`group_norm`] with candle-nn's `GroupNorm` and `silu`: the fallback off the fast path, and
/// the baseline that tests and benchmarks compare against.
pub fn reference_group_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Result<Tensor> {
    let c = x.dim(1)?;
    let norm = candle_nn::GroupNorm::new(gamma.clone(), beta.clone(), c, groups, eps)?;
    let y = candle_core::Module::forward(&norm, x)?;
    if silu {
        y.silu()
    } else {
        Ok(y)
    }
}

/// Max pooling of NCHW `x` over non-overlapping `size` x `size` windows, with a backward
/// pass that routes each window's gradient to its maximum (split evenly between ties).
///
/// candle's own `max_pool2d` backward scales every gradient by `1 / size^2`; this one is
/// the exact derivative.
pub fn max_pool2d(x: &Tensor, size: usize) -> Result<Tensor> {
    if !on_fast_path(&[x]) {
        return x.max_pool2d(size);
    }
    x.contiguous()?.apply_op1(ops::MaxPool { size })
}
