//! Training-mode batch normalisation (optionally followed by ReLU) over NCHW activations.
//!
//! candle's own version builds a dozen single-threaded element-wise ops, each a sweep over
//! the activation with a graph node (and a zero-filled gradient) of its own. Here the batch
//! statistics take two sweeps, the normalisation one, and the backward pass two, all split
//! across threads by channel.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::cpu::{dispatch, Output, SharedMut};

/// Sizes of a batch-norm call: `n` images of `c` channels of `plane` values.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NormGeometry {
    pub n: usize,
    pub c: usize,
    pub plane: usize,
}

impl NormGeometry {
    /// Values per channel across the batch.
    pub(crate) fn count(&self) -> usize {
        self.n * self.plane
    }
}

/// Sum of a slice in eight independent lanes, so the compiler can vectorise it.
#[inline(always)]
fn lane_sum(v: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = v.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|&x| f(x)).sum();
    for c in chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l += f(x);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Per-channel mean and biased variance over the batch and spatial positions, computed in
/// two passes (mean, then squared deviations) and accumulated per plane in f64 so large
/// activations keep their precision.
pub(crate) fn batch_stats(x: &[f32], g: &NormGeometry) -> (Vec<f32>, Vec<f32>) {
    let count = g.count().max(1) as f64;
    let stats: Vec<(f32, f32)> = (0..g.c)
        .into_par_iter()
        .map(|c| {
            let planes = || (0..g.n).map(move |n| &x[(n * g.c + c) * g.plane..(n * g.c + c + 1) * g.plane]);
            dispatch!({
                let sum: f64 = planes().map(|p| lane_sum(p, |v| v) as f64).sum();
                let mean = (sum / count) as f32;
                let sq: f64 = planes()
                    .map(|p| {
                        lane_sum(p, |v| {
                            let d = v - mean;
                            d * d
                        }) as f64
                    })
                    .sum();
                (mean, (sq / count) as f32)
            })
        })
        .collect();
    stats.into_iter().unzip()
}

/// `y = gamma * (x - mean) * inv_std + beta`, then ReLU if asked.
pub(crate) fn normalize(
    x: &[f32],
    g: &NormGeometry,
    mean: &[f32],
    inv_std: &[f32],
    gamma: &[f32],
    beta: &[f32],
    relu: bool,
) -> Vec<f32> {
    let mut out = Output::new(x.len());
    let dst = out.ptr();
    (0..g.n * g.c).into_par_iter().with_min_len(8).for_each(|pl| {
        let c = pl % g.c;
        let scale = gamma[c] * inv_std[c];
        let shift = beta[c] - mean[c] * scale;
        let src = &x[pl * g.plane..(pl + 1) * g.plane];
        // SAFETY: each task owns plane `pl` of the output and writes all of it.
        let o = unsafe { std::slice::from_raw_parts_mut(dst.at(pl * g.plane).cast::<MaybeUninit<f32>>(), g.plane) };
        dispatch!({
            for (o, &v) in o.iter_mut().zip(src) {
                let y = v * scale + shift;
                *o = MaybeUninit::new(if relu && y < 0.0 { 0.0 } else { y });
            }
        });
    });
    // SAFETY: the planes cover the output.
    unsafe { out.assume_init() }
}

/// Gradients of [`normalize`] with batch statistics, given the forward input `x`, output
/// `y` (for the ReLU mask) and output gradient `dy`, flattened as `[dx..., dgamma...,
/// dbeta...]` so the caller can hand them out as views of one buffer.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    x: &[f32],
    y: &[f32],
    dy: &[f32],
    g: &NormGeometry,
    mean: &[f32],
    inv_std: &[f32],
    gamma: &[f32],
    relu: bool,
) -> Vec<f32> {
    let count = g.count().max(1) as f32;
    let mut dx = Output::new(x.len() + 2 * g.c);
    let dst: SharedMut = dx.ptr();
    let sums: Vec<(f32, f32)> = (0..g.c)
        .into_par_iter()
        .map(|c| {
            let (m, is) = (mean[c], inv_std[c]);
            let range = |n: usize| (n * g.c + c) * g.plane..(n * g.c + c + 1) * g.plane;
            let grad = |d: f32, out: f32| if relu && out <= 0.0 { 0.0 } else { d };
            dispatch!({
                // dbeta = sum(g), dgamma = sum(g * xhat), with g the gradient past the ReLU.
                let (mut dbeta, mut dgamma) = (0f64, 0f64);
                for n in 0..g.n {
                    let r = range(n);
                    let (xs, ys, ds) = (&x[r.clone()], &y[r.clone()], &dy[r]);
                    let (mut sb, mut sg) = ([0f32; 8], [0f32; 8]);
                    for (i, ((&xv, &yv), &dv)) in xs.iter().zip(ys).zip(ds).enumerate() {
                        let gv = grad(dv, yv);
                        sb[i % 8] += gv;
                        sg[i % 8] += gv * (xv - m) * is;
                    }
                    dbeta += sb.iter().sum::<f32>() as f64;
                    dgamma += sg.iter().sum::<f32>() as f64;
                }
                let (dbeta, dgamma) = (dbeta as f32, dgamma as f32);
                let k = gamma[c] * is;
                let (mb, mg) = (dbeta / count, dgamma / count);
                for n in 0..g.n {
                    let r = range(n);
                    let start = r.start;
                    let (xs, ys, ds) = (&x[r.clone()], &y[r.clone()], &dy[r]);
                    // SAFETY: this task owns channel `c` of every image in `dx`.
                    let o =
                        unsafe { std::slice::from_raw_parts_mut(dst.at(start).cast::<MaybeUninit<f32>>(), g.plane) };
                    for (((o, &xv), &yv), &dv) in o.iter_mut().zip(xs).zip(ys).zip(ds) {
                        let xhat = (xv - m) * is;
                        *o = MaybeUninit::new(k * (grad(dv, yv) - mb - xhat * mg));
                    }
                }
                (dgamma, dbeta)
            })
        })
        .collect();
    for (c, (dgamma, dbeta)) in sums.into_iter().enumerate() {
        // SAFETY: the two per-channel tails of the buffer, written by this thread alone.
        unsafe {
            dst.at(x.len() + c).write(dgamma);
            dst.at(x.len() + g.c + c).write(dbeta);
        }
    }
    // SAFETY: every channel of every image and both tails were written above.
    unsafe { dx.assume_init() }
}
