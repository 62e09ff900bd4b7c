//! Group normalisation, optionally followed by SiLU, over `[n, c, ...]` activations, with its
//! gradient.
//!
//! candle's `GroupNorm` is a dozen single-threaded element-wise ops plus a separate SiLU, each a
//! sweep over the activation with a graph node (and a zero-filled gradient) of its own. Here one
//! task per (sample, group) computes the group's statistics and writes its output while the
//! group is still in cache, and the backward pass is one such task too.
//!
//! Every reduction runs over one sample's group in a fixed order (16 f32 lanes per block of
//! [`BLOCK`] values, blocks added in f64), so a sample's output is the same bits alone or in any
//! batch, on any number of threads. The per-channel gradients of gamma and beta add the
//! samples' partial sums in sample order.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::cpu::{Output, SharedMut};
use super::packed_gemm::{on_isa, Kernel};
use super::vmath;

/// Sizes of a group-norm call: `n` samples of `c` channels of `plane` values, in `groups` groups
/// of consecutive channels.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GroupGeometry {
    pub n: usize,
    pub c: usize,
    pub groups: usize,
    pub plane: usize,
}

impl GroupGeometry {
    /// Channels per group.
    pub(crate) fn channels_per_group(&self) -> usize {
        self.c / self.groups
    }

    /// Values per (sample, group): the count each mean and variance is taken over.
    pub(crate) fn group_len(&self) -> usize {
        self.channels_per_group() * self.plane
    }
}

/// Per (sample, group) mean and `1 / sqrt(var + eps)`, in sample-major order: what the forward
/// pass leaves for the backward pass.
#[derive(Debug, Clone, Default)]
pub(crate) struct GroupStats {
    pub mean: Vec<f64>,
    pub rstd: Vec<f32>,
}

/// A mean as the f32 nearest to it plus the f32 nearest to the rest, so that `(v - hi) - lo`
/// centres a value to f32 precision of the difference rather than of the mean: the first
/// subtraction is exact for values near the mean. A group of mean 300 and spread 1 would
/// otherwise lose 1.5e-5 of every normalised value to the rounding of its mean.
#[inline(always)]
fn split(mean: f64) -> (f32, f32) {
    let hi = mean as f32;
    (hi, (mean - hi as f64) as f32)
}

/// Lanes of the partial sums: one AVX-512 vector, two AVX2 ones.
const LANES: usize = 16;

/// Values summed in f32 lanes before the partial sums move to f64, so that the rounding error
/// of a sum does not grow with the size of the plane.
const BLOCK: usize = 1024;

/// Below this many values a call runs on the calling thread: waking the workers would cost more
/// than a single image's group norm.
const PARALLEL_MIN_LEN: usize = 1 << 15;

/// Runs `f` for every task index, on the worker threads when the call is large enough, and
/// returns the results in task order.
fn run_tasks<R: Send>(tasks: usize, len: usize, f: impl Fn(usize) -> R + Sync + Send) -> Vec<R> {
    if len >= PARALLEL_MIN_LEN && super::cpu::threads() > 1 {
        (0..tasks).into_par_iter().map(f).collect()
    } else {
        (0..tasks).map(f).collect()
    }
}

/// `sum f(v)` over `x` in [`LANES`] partial sums per [`BLOCK`], the blocks added in f64.
#[inline(always)]
fn blocked_sum(x: &[f32], f: impl Fn(f32) -> f32 + Copy) -> f64 {
    let mut total = 0f64;
    for block in x.chunks(BLOCK) {
        let mut acc = [0f32; LANES];
        let chunks = block.chunks_exact(LANES);
        let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
        for c in chunks {
            for (a, &v) in acc.iter_mut().zip(c) {
                *a += f(v);
            }
        }
        total += (acc.iter().sum::<f32>() + tail) as f64;
    }
    total
}

/// The sigmoid `1 / (1 + e^-z)`, vectorisable.
#[inline(always)]
fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + vmath::exp(-z))
}

/// The group-normalised `x`: `(x - mean) / sqrt(var + eps) * gamma + beta` per (sample, group),
/// then SiLU if asked, with the statistics the backward pass needs.
pub(crate) fn forward(
    x: &[f32],
    g: &GroupGeometry,
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    silu: bool,
    kernel: Kernel,
) -> (Vec<f32>, GroupStats) {
    let (cpg, len) = (g.channels_per_group(), g.group_len());
    if len == 0 {
        let n = g.n * g.groups;
        return (Vec::new(), GroupStats { mean: vec![f64::NAN; n], rstd: vec![f32::NAN; n] });
    }
    let mut out = Output::new(x.len());
    let dst: SharedMut = out.ptr();
    let stats = run_tasks(g.n * g.groups, x.len(), |task| {
        let start = task * len;
        let xs = &x[start..start + len];
        // SAFETY: task `task` owns this (sample, group) of the output and writes all of it.
        let os = unsafe { std::slice::from_raw_parts_mut(dst.at(start).cast::<MaybeUninit<f32>>(), len) };
        let c0 = (task % g.groups) * cpg;
        on_isa!(kernel => {
            // Two passes, the mean and then the centred squares. The mean sums differences from
            // the group's first value, which stay small (and exact) when the mean is large next
            // to the spread.
            let pivot = xs[0];
            let mean = pivot as f64 + blocked_sum(xs, |v| v - pivot) / len as f64;
            let (hi, lo) = split(mean);
            let var = blocked_sum(xs, |v| {
                let d = (v - hi) - lo;
                d * d
            }) / len as f64;
            let rstd = (1.0 / (var + eps).sqrt()) as f32;
            for (ci, (xp, op)) in xs.chunks_exact(g.plane).zip(os.chunks_exact_mut(g.plane)).enumerate() {
                let (scale, shift) = (gamma[c0 + ci] * rstd, beta[c0 + ci]);
                if silu {
                    for (o, &v) in op.iter_mut().zip(xp) {
                        let z = ((v - hi) - lo) * scale + shift;
                        *o = MaybeUninit::new(z * sigmoid(z));
                    }
                } else {
                    for (o, &v) in op.iter_mut().zip(xp) {
                        *o = MaybeUninit::new(((v - hi) - lo) * scale + shift);
                    }
                }
            }
            (mean, rstd)
        })
    });
    // SAFETY: the (sample, group) tasks cover the output.
    let y = unsafe { out.assume_init() };
    let (mean, rstd) = stats.into_iter().unzip();
    (y, GroupStats { mean, rstd })
}

/// Gradients of [`forward`] given its input `x`, statistics and the output gradient `dy`,
/// flattened as `[dx..., dgamma..., dbeta...]` so the caller can hand them out as views of one
/// buffer.
///
/// With `g` the gradient past the SiLU (`dy * s * (1 + z * (1 - s))`, `s = sigmoid(z)`, `z` the
/// normalised output before it) and `xhat` the normalised input: `dbeta = sum g`,
/// `dgamma = sum g * xhat`, and `dx = rstd * (gamma * g - mean(gamma * g) - xhat * mean(gamma *
/// g * xhat))`, the sums over samples and positions, the means over the sample's group.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    x: &[f32],
    dy: &[f32],
    g: &GroupGeometry,
    stats: &GroupStats,
    gamma: &[f32],
    beta: &[f32],
    silu: bool,
    kernel: Kernel,
) -> Vec<f32> {
    let (cpg, len, plane) = (g.channels_per_group(), g.group_len(), g.plane);
    if len == 0 {
        return vec![0.0; 2 * g.c];
    }
    let mut flat = Output::new(x.len() + 2 * g.c);
    let dst: SharedMut = flat.ptr();
    // Per task, per channel of its group: (sum g, sum g * xhat).
    let partial = run_tasks(g.n * g.groups, x.len(), |task| {
        let start = task * len;
        let (xs, ds) = (&x[start..start + len], &dy[start..start + len]);
        // SAFETY: task `task` owns this (sample, group) of `dx`: it first parks the gradient past
        // the SiLU there, then overwrites it with the input gradient.
        let parked = unsafe { std::slice::from_raw_parts_mut(dst.at(start).cast::<MaybeUninit<f32>>(), len) };
        let c0 = (task % g.groups) * cpg;
        let ((hi, lo), rstd) = (split(stats.mean[task]), stats.rstd[task]);
        on_isa!(kernel => {
            let mut sums = Vec::with_capacity(cpg);
            for ci in 0..cpg {
                let range = ci * plane..(ci + 1) * plane;
                let (xp, dp, op) = (&xs[range.clone()], &ds[range.clone()], &mut parked[range]);
                let (gam, bet) = (gamma[c0 + ci], beta[c0 + ci]);
                let scale = gam * rstd;
                let pass = |v: f32, d: f32| {
                    if silu {
                        let z = ((v - hi) - lo) * scale + bet;
                        let s = sigmoid(z);
                        d * (s * (1.0 + z * (1.0 - s)))
                    } else {
                        d
                    }
                };
                let (mut sum_g, mut sum_gx) = (0f64, 0f64);
                for ((xb, db), ob) in xp.chunks(BLOCK).zip(dp.chunks(BLOCK)).zip(op.chunks_mut(BLOCK)) {
                    let (mut a1, mut a2) = ([0f32; LANES], [0f32; LANES]);
                    let mut xc = xb.chunks_exact(LANES);
                    let mut dc = db.chunks_exact(LANES);
                    let mut oc = ob.chunks_exact_mut(LANES);
                    for ((xl, dl), ol) in (&mut xc).zip(&mut dc).zip(&mut oc) {
                        for l in 0..LANES {
                            let gv = pass(xl[l], dl[l]);
                            ol[l] = MaybeUninit::new(gv);
                            a1[l] += gv;
                            a2[l] += gv * (((xl[l] - hi) - lo) * rstd);
                        }
                    }
                    let (mut t1, mut t2) = (0f32, 0f32);
                    for ((&v, &d), o) in xc.remainder().iter().zip(dc.remainder()).zip(oc.into_remainder()) {
                        let gv = pass(v, d);
                        *o = MaybeUninit::new(gv);
                        t1 += gv;
                        t2 += gv * (((v - hi) - lo) * rstd);
                    }
                    sum_g += (a1.iter().sum::<f32>() + t1) as f64;
                    sum_gx += (a2.iter().sum::<f32>() + t2) as f64;
                }
                sums.push((sum_g, sum_gx));
            }
            let a: f64 = sums.iter().enumerate().map(|(ci, s)| gamma[c0 + ci] as f64 * s.0).sum();
            let b: f64 = sums.iter().enumerate().map(|(ci, s)| gamma[c0 + ci] as f64 * s.1).sum();
            let (mean_a, mean_b) = ((a / len as f64) as f32, (b / len as f64) as f32);
            // SAFETY: as above; the first pass wrote every value of the group.
            let os = unsafe { std::slice::from_raw_parts_mut(dst.at(start), len) };
            for ci in 0..cpg {
                let range = ci * plane..(ci + 1) * plane;
                let (xp, op) = (&xs[range.clone()], &mut os[range]);
                let gam = gamma[c0 + ci];
                for (o, &v) in op.iter_mut().zip(xp) {
                    let xhat = ((v - hi) - lo) * rstd;
                    *o = rstd * (gam * *o - mean_a - xhat * mean_b);
                }
            }
            sums
        })
    });
    for c in 0..g.c {
        let (group, ci) = (c / cpg, c % cpg);
        let (mut dbeta, mut dgamma) = (0f64, 0f64);
        for n in 0..g.n {
            let (sum_g, sum_gx) = partial[n * g.groups + group][ci];
            dbeta += sum_g;
            dgamma += sum_gx;
        }
        // SAFETY: the two per-channel tails of the buffer, written by this thread alone.
        unsafe {
            dst.at(x.len() + c).write(dgamma as f32);
            dst.at(x.len() + g.c + c).write(dbeta as f32);
        }
    }
    // SAFETY: every (sample, group) of `dx` and both tails were written above.
    unsafe { flat.assume_init() }
}

#[cfg(test)]
#[path = "group_norm_tests.rs"]
mod tests;
