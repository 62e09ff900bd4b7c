//! The pieces of consistency training that are pure arithmetic: iCT's discretization curriculum,
//! its lognormal choice of noise levels, the pseudo-Huber metric, and where a VP teacher's
//! timesteps sit on the VE σ axis.

use candle_core::{Result, Tensor};
use rand::Rng;

/// iCT's curriculum: the number of σ grid points at optimiser step `k` of `total`,
/// N(k) = min(s₀·2^⌊k/K′⌋, s₁) + 1 with K′ = ⌊K / (log₂⌊s₁/s₀⌋ + 1)⌋, so N doubles over equal stages
/// from s₀ + 1 to s₁ + 1.
pub fn discretization_steps(k: usize, total: usize, s0: usize, s1: usize) -> usize {
    let stages = (s1 / s0.max(1)).max(1).ilog2() as usize + 1;
    let per_stage = (total / stages).max(1);
    let doublings = (k / per_stage).min(63) as u32;
    (s0.saturating_mul(1usize << doublings)).min(s1) + 1
}

/// The error function, to the accuracy the noise-level weights need (Abramowitz & Stegun 7.1.26,
/// absolute error below 1.5e-7).
fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly =
        t * (0.254_829_592 + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let y = 1.0 - poly * (-x * x).exp();
    if x >= 0.0 {
        y
    } else {
        -y
    }
}

/// iCT's discrete lognormal weights over the intervals of an ascending σ grid: interval i (from σ_i
/// to σ_{i+1}) has probability ∝ erf((ln σ_{i+1} − P_mean)/(√2·P_std)) − erf((ln σ_i − P_mean)/(√2·P_std)).
pub fn interval_weights(sigmas: &[f64], p_mean: f64, p_std: f64) -> Vec<f64> {
    let cdf = |s: f64| erf((s.ln() - p_mean) / (std::f64::consts::SQRT_2 * p_std));
    let w: Vec<f64> = sigmas.windows(2).map(|p| (cdf(p[1]) - cdf(p[0])).max(0.0)).collect();
    let total: f64 = w.iter().sum();
    w.into_iter().map(|v| v / total).collect()
}

/// Draws an interval index from normalised `weights`.
pub fn draw(weights: &[f64], rng: &mut impl Rng) -> usize {
    let u: f64 = rng.random();
    let mut acc = 0.0;
    for (i, w) in weights.iter().enumerate() {
        acc += w;
        if u < acc {
            return i;
        }
    }
    weights.len() - 1
}

/// The pseudo-Huber distance per sample, over the whole sample as iCT defines it:
/// √(‖a − b‖² + c²) − c, for `[n, ...]` tensors; returns `[n]`. (An element-wise Huber averaged
/// afterwards, as some reference code does, changes both the scale and the gradients.)
pub fn pseudo_huber(a: &Tensor, b: &Tensor, c: f64) -> Result<Tensor> {
    let sq = (a - b)?.sqr()?.flatten_from(1)?.sum(1)?;
    (sq + c * c)?.sqrt()? - c
}

/// iCT's c for samples of `dim` values: 0.00054·√dim.
pub fn huber_c(dim: usize) -> f64 {
    0.00054 * (dim as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use rand::SeedableRng;

    #[test]
    fn the_curriculum_doubles_from_11_to_1281_over_eight_stages() {
        let total = 8000;
        let seen: Vec<usize> = (0..total).step_by(1000).map(|k| discretization_steps(k, total, 10, 1280)).collect();
        assert_eq!(seen, vec![11, 21, 41, 81, 161, 321, 641, 1281]);
        assert_eq!(discretization_steps(total * 3, total, 10, 1280), 1281, "capped at s1");
    }

    #[test]
    fn erf_matches_known_values() {
        for (x, want) in [(0.0, 0.0), (0.5, 0.520_499_877_8), (1.0, 0.842_700_792_9), (-2.0, -0.995_322_265)] {
            assert!((erf(x) - want).abs() < 2e-7, "erf({x})");
        }
    }

    #[test]
    fn the_noise_weights_peak_near_the_lognormal_mode() {
        let sigmas = tandem_runtime::diffusion::karras_sigmas(41, 0.002, 80.0, 7.0);
        let w = interval_weights(&sigmas, -1.1, 2.0);
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        let best = (0..w.len()).max_by(|&a, &b| w[a].total_cmp(&w[b])).unwrap();
        let mid = (sigmas[best] * sigmas[best + 1]).sqrt();
        assert!((0.05..3.0).contains(&mid), "mode at sigma {mid}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let draws: Vec<usize> = (0..2000).map(|_| draw(&w, &mut rng)).collect();
        let share = draws.iter().filter(|&&i| i == best).count() as f64 / 2000.0;
        assert!((share - w[best]).abs() < 0.03, "{share} vs {}", w[best]);
    }

    #[test]
    fn pseudo_huber_is_over_the_whole_sample() {
        let a = Tensor::new(&[[3f32, 0.0], [0.0, 0.0]], &Device::Cpu).unwrap();
        let b = Tensor::zeros((2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        let d = pseudo_huber(&a, &b, 4.0).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(d, vec![1.0, 0.0], "√(9 + 16) − 4 and 0");
    }
}
