//! Element-wise maths of transformer inference (exp, erf, the GELU variants) and the row
//! operations built on it (layer normalisation), written so that loops over slices vectorise.
//!
//! Every function here is scalar, branch-free and `#[inline(always)]`: called in a loop inside an
//! ISA-dispatched function ([`super::cpu::dispatch`], or the AVX-512 variants of the packed
//! matrix product), the compiler turns the loop into vector code of that ISA, selects included.
//! A call to libm would stop that: `expf` and `erff` are opaque calls the vectoriser cannot see
//! through, and candle evaluates its GELU in f64 one element at a time.

use candle_core::{bail, Result};
use rayon::prelude::*;

use super::cpu;
use super::packed_gemm::{on_isa, Kernel};

/// Rounding constant 1.5 * 2^23: adding it to a float of magnitude below 2^22 leaves the nearest
/// integer in the low mantissa bits, which is both a branch-free `round` and the integer itself.
const ROUND: f32 = 12_582_912.0;
/// The bit pattern of [`ROUND`].
const ROUND_BITS: i32 = 0x4B40_0000;
/// `ln 2` split so that `n * LN2_HI` is exact for the `n` that [`exp`] sees (Cody and Waite).
const LN2_HI: f32 = 0.693_359_4;
/// The rest of `ln 2` after [`LN2_HI`].
const LN2_LO: f32 = -2.121_944_4e-4;
/// Inputs of [`exp`] are clamped to this range, so that `2^n` stays a normal float.
const EXP_MIN: f32 = -87.0;
/// See [`EXP_MIN`].
const EXP_MAX: f32 = 88.0;

/// `e^x` with at most about 1 ulp of error on `[-87, 88]`; smaller inputs give about 1.6e-38
/// instead of a denormal or zero and larger ones `e^88` (callers feed it non-positive numbers, or
/// saturate as [`tanh`] does).
///
/// Cody-Waite range reduction `x = n ln 2 + r` with `|r| <= ln 2 / 2`, the minimax polynomial of
/// Cephes' `expf` for `e^r`, and `2^n` assembled in the exponent bits.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    // Comparisons rather than `f32::max`, whose NaN rules cost extra instructions per vector.
    let x = if x < EXP_MIN { EXP_MIN } else { x };
    let x = if x > EXP_MAX { EXP_MAX } else { x };
    let t = x.mul_add(std::f32::consts::LOG2_E, ROUND);
    let n = t - ROUND;
    let r = n.mul_add(-LN2_HI, x);
    let r = n.mul_add(-LN2_LO, r);
    let mut p = 1.987_569_1e-4f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5);
    let e_r = (p * r).mul_add(r, r) + 1.0;
    let n_int = t.to_bits() as i32 - ROUND_BITS;
    let scale = f32::from_bits(((n_int + 127) << 23) as u32);
    e_r * scale
}

/// Below this magnitude [`erf`] uses its odd polynomial, above it `1 - e^q(|x|)`.
const ERF_SPLIT: f32 = 0.927_734_4;

/// The error function, within 1e-7 of the exact value everywhere (tested against libm's f64
/// `erf`), as exact GELU needs: BERT models are trained with it, and the tanh approximation
/// differs by up to 1e-3, which shows in the embeddings.
///
/// The two minimax approximations are Norbert Juffa's faithfully rounded single-precision
/// `erff`: an odd polynomial for `|x| <= 0.9277` and `1 - e^q(|x|)` above, both evaluated and
/// one selected so that the code stays branch-free.
#[inline(always)]
pub(crate) fn erf(a: f32) -> f32 {
    let t = a.abs();
    let s = a * a;
    let mut r = (-1.728_534_7e-5f32).mul_add(t, 3.831_971_3e-4);
    let u = (-3.883_964_4e-3f32).mul_add(t, 2.425_462_2e-2);
    r = r.mul_add(s, u);
    r = r.mul_add(t, -1.067_778_8e-1);
    r = r.mul_add(t, -6.348_467e-1);
    r = r.mul_add(t, -1.287_175_1e-1);
    r = r.mul_add(t, -t);
    let large = (1.0 - exp(r)).copysign(a);
    let mut q = -5.967_617e-4f32;
    q = q.mul_add(s, 4.991_194_2e-3);
    q = q.mul_add(s, -2.676_813_5e-2);
    q = q.mul_add(s, 1.128_199_3e-1);
    q = q.mul_add(s, -3.761_253_4e-1);
    q = q.mul_add(s, 1.283_791_7e-1);
    let small = q.mul_add(a, a);
    if t > ERF_SPLIT {
        large
    } else {
        small
    }
}

/// `tanh(x)` as `1 - 2 / (e^{2x} + 1)`: exact limits at both ends (the exponential saturates),
/// absolute error around 1e-7, which is all the tanh-approximated GELU needs.
#[inline(always)]
pub(crate) fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

/// `1 / sqrt(2)`.
const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// `sqrt(2 / pi)`, the scale of the tanh-approximated GELU.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;

/// Exact GELU, `x * (1 + erf(x / sqrt 2)) / 2` (`gelu` in Hugging Face configs).
#[inline(always)]
pub(crate) fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * FRAC_1_SQRT_2))
}

/// The tanh approximation of GELU (`gelu_new`, `gelu_pytorch_tanh`), as candle's `gelu`.
#[inline(always)]
pub(crate) fn gelu_tanh(x: f32) -> f32 {
    0.5 * x * (1.0 + tanh(SQRT_2_OVER_PI * x * 0.044_715f32.mul_add(x * x, 1.0)))
}

/// Lanes of the partial sums in [`sum`]: a multiple of every vector width, and enough
/// independent chains to hide the latency of vector additions.
const LANES: usize = 16;

/// The sum of `x`, accumulated in [`LANES`] partial sums so that the loop vectorises (a plain
/// fold must keep the sequential order of additions, which forbids vector code).
#[inline(always)]
pub(crate) fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The sum of `(x - mean)^2`, vectorised like [`sum`].
#[inline(always)]
fn centered_squares(x: &[f32], mean: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|v| (v - mean) * (v - mean)).sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += (v - mean) * (v - mean);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Layer normalisation of one row in place: `(x - mean) / sqrt(var + eps) * gamma + beta`, with
/// the biased variance of the centred values (two passes, the accurate form).
#[inline(always)]
pub(crate) fn layer_norm_row(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = x.len() as f32;
    let mean = sum(x) / n;
    let var = centered_squares(x, mean) / n;
    let inv = 1.0 / (var + eps).sqrt();
    for ((v, g), b) in x.iter_mut().zip(gamma).zip(beta) {
        *v = (*v - mean) * inv * g + b;
    }
}

/// Below this many floats, [`layer_norm_rows`] runs on the calling thread.
const SPLIT_MIN_LEN: usize = 1 << 15;

/// Layer normalisation of every row of `x` (rows of `gamma.len()` floats) in place, in
/// parallel over rows when there are many.
pub fn layer_norm_rows(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) -> Result<()> {
    let width = gamma.len();
    if width == 0 || beta.len() != width || !x.len().is_multiple_of(width) {
        bail!("layer norm: {} floats in rows of {width}, with {} biases", x.len(), beta.len())
    }
    let kernel = Kernel::best();
    let rows_per_task = SPLIT_MIN_LEN.div_ceil(width).max(1);
    let run = |chunk: &mut [f32]| {
        on_isa!(kernel => {
            for row in chunk.chunks_exact_mut(width) {
                layer_norm_row(row, gamma, beta, eps);
            }
        })
    };
    if x.len() >= 2 * SPLIT_MIN_LEN && cpu::threads() > 1 {
        x.par_chunks_mut(rows_per_task * width).for_each(run);
    } else {
        run(x);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::cpu::erf::erf_f64;

    /// Every float in [lo, hi) on a grid of `steps` points, plus the ends.
    fn grid(lo: f32, hi: f32, steps: usize) -> impl Iterator<Item = f32> {
        (0..=steps).map(move |i| lo + (hi - lo) * i as f32 / steps as f32)
    }

    #[test]
    fn erf_is_within_1e_7_of_libm_everywhere() {
        let mut worst = (0f64, 0f32);
        for x in grid(-6.0, 6.0, 2_000_000).chain([0.0, -0.0, 1e-30, -1e-30, 20.0, -20.0, 1e30, -1e30]) {
            let err = (erf(x) as f64 - erf_f64(x as f64)).abs();
            if err > worst.0 {
                worst = (err, x);
            }
        }
        assert!(worst.0 < 1e-7, "erf error {:e} at {}", worst.0, worst.1);
        assert_eq!(erf(f32::INFINITY), 1.0);
        assert_eq!(erf(f32::NEG_INFINITY), -1.0);
        assert_eq!(erf(0.0), 0.0);
    }

    #[test]
    fn exp_is_within_2_ulp_on_the_range_softmax_and_erf_use() {
        for x in grid(-87.0, 88.0, 1_000_000) {
            let (got, want) = (exp(x) as f64, (x as f64).exp());
            let ulp = f32::EPSILON as f64 * want;
            assert!((got - want).abs() <= 2.0 * ulp, "exp({x}) = {got}, want {want}");
        }
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) < 1e-37 && exp(-1000.0) >= 0.0);
        assert!(exp(1000.0).is_finite());
    }

    #[test]
    fn gelus_match_their_definitions() {
        for x in grid(-12.0, 12.0, 100_000) {
            let xd = x as f64;
            let exact = 0.5 * xd * (1.0 + erf_f64(xd / 2f64.sqrt()));
            assert!((gelu(x) as f64 - exact).abs() <= 2e-7 * xd.abs().max(1.0), "gelu({x})");
            let tanh_form =
                0.5 * xd * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (xd + 0.044715 * xd.powi(3))).tanh());
            assert!((gelu_tanh(x) as f64 - tanh_form).abs() <= 4e-7 * xd.abs().max(1.0), "gelu_tanh({x})");
        }
        assert_eq!(gelu(f32::INFINITY), f32::INFINITY);
        assert_eq!(gelu(-1e30), -0.0);
        assert_eq!(tanh(100.0), 1.0);
        assert_eq!(tanh(-100.0), -1.0);
    }

    #[test]
    fn layer_norm_row_matches_a_direct_f64_computation() {
        for n in [1, 7, 16, 33, 384] {
            let x: Vec<f32> = (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.3 + 100.0).collect();
            let gamma: Vec<f32> = (0..n).map(|i| 1.0 + i as f32 * 0.01).collect();
            let beta: Vec<f32> = (0..n).map(|i| i as f32 * -0.02).collect();
            let mut y = x.clone();
            layer_norm_row(&mut y, &gamma, &beta, 1e-12);
            let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
            let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
            for i in 0..n {
                let want = (x[i] as f64 - mean) / (var + 1e-12).sqrt() * gamma[i] as f64 + beta[i] as f64;
                assert!((y[i] as f64 - want).abs() < 1e-4, "n={n} i={i}: {} vs {want}", y[i]);
            }
        }
        assert_eq!(sum(&(1..=100).map(|i| i as f32).collect::<Vec<_>>()), 5050.0);
    }

    #[test]
    fn layer_norm_rows_normalises_each_row_alone() {
        let width = 48;
        let x: Vec<f32> = (0..width * 2000).map(|i| ((i * 7919) % 1000) as f32 * 0.01 - 5.0).collect();
        let (gamma, beta) = (vec![2.0f32; width], vec![0.5f32; width]);
        let mut all = x.clone();
        layer_norm_rows(&mut all, &gamma, &beta, 1e-5).unwrap();
        for (r, row) in x.chunks_exact(width).enumerate().step_by(97) {
            let mut one = row.to_vec();
            layer_norm_row(&mut one, &gamma, &beta, 1e-5);
            assert_eq!(&all[r * width..(r + 1) * width], &one[..]);
        }
        assert!(layer_norm_rows(&mut all[1..], &gamma, &beta, 1e-5).is_err());
        assert!(layer_norm_rows(&mut all, &gamma, &beta[1..], 1e-5).is_err());
    }
}
