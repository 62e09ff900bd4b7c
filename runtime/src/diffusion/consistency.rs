//! Consistency-model sampling (Song et al. 2023, Algorithm 1) and the Karras σ grid that
//! consistency training and the choice of intermediate σ use. Everything here is in VE terms:
//! x_σ = x₀ + σ·z.

use crate::{Error, Result};

/// A consistency model: f(x, σ) maps a VE sample at noise level σ straight to its clean sample.
pub trait ConsistencyModel {
    /// The denoised batch for the flattened batch `x` at noise level `sigma`.
    fn denoise(&mut self, x: &[f32], sigma: f64) -> Result<Vec<f32>>;
}

/// Multistep consistency sampling.
///
/// The caller passes `x = σ_max·z₀` with `σ_max = sigmas[0]`; the first step is x ← f(x, σ_max).
/// Then for each later σ_k in `sigmas[1..]`: x ← x + √(σ_k² − σ_min²)·z_k and x ← f(x, σ_k), where
/// `noise(k)` returns z_k for the whole batch (the caller derives it from per-item seeds, so
/// that batched and unbatched runs agree byte for byte). `sigmas` must be finite, strictly
/// decreasing and above `sigma_min`. The model is evaluated `sigmas.len()` times.
///
/// With `clip`, every denoised estimate is clamped to that range before it is re-noised or
/// returned (the reference code's `clip_denoised`): an estimate's excursions past the data range
/// are error, and re-noising would carry them into the next step.
pub fn consistency_sample(
    model: &mut dyn ConsistencyModel,
    sigmas: &[f64],
    sigma_min: f64,
    x: Vec<f32>,
    noise: &mut dyn FnMut(usize) -> Vec<f32>,
    clip: Option<(f32, f32)>,
) -> Result<Vec<f32>> {
    validate(sigmas, sigma_min, &x)?;
    let len = x.len();
    let mut x = x;
    for (k, &sigma) in sigmas.iter().enumerate() {
        if k > 0 {
            let z = noise(k);
            if z.len() != len {
                return Err(Error::InvalidInput(format!(
                    "noise for step {k} has {} values for a batch of {len}",
                    z.len()
                )));
            }
            // √(σ² − σ_min²) rather than σ: f treats σ_min as "clean", so only the excess noise is added.
            let scale = (sigma * sigma - sigma_min * sigma_min).sqrt();
            for (v, &z) in x.iter_mut().zip(&z) {
                *v = (f64::from(*v) + scale * f64::from(z)) as f32;
            }
            if let Some(i) = x.iter().position(|v| !v.is_finite()) {
                return Err(Error::InvalidInput(format!("noise for step {k} is not finite at element {i}")));
            }
        }
        x = model.denoise(&x, sigma)?;
        if x.len() != len {
            return Err(Error::Internal(format!(
                "the consistency model returned {} values for a batch of {len} at step {k} (sigma {sigma})",
                x.len()
            )));
        }
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(Error::Internal(format!(
                "the consistency model returned a non-finite value at step {k} (sigma {sigma}), element {i}"
            )));
        }
        if let Some((lo, hi)) = clip {
            x.iter_mut().for_each(|v| *v = v.clamp(lo, hi));
        }
    }
    Ok(x)
}

/// The Karras σ grid, ascending: σ_i = (σ_min^{1/ρ} + i/(n − 1)·(σ_max^{1/ρ} − σ_min^{1/ρ}))^ρ for
/// i in 0..n, with the end points exactly σ_min and σ_max. ρ = 7 spends most points at low noise,
/// where consistency targets change fastest. n = 1 gives [σ_max] (one-step sampling), n = 0 nothing.
pub fn karras_sigmas(n: usize, sigma_min: f64, sigma_max: f64, rho: f64) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![sigma_max],
        _ => {
            let (lo, hi) = (sigma_min.powf(1.0 / rho), sigma_max.powf(1.0 / rho));
            let mut sigmas: Vec<f64> = (0..n).map(|i| (lo + i as f64 / (n - 1) as f64 * (hi - lo)).powf(rho)).collect();
            sigmas[0] = sigma_min;
            sigmas[n - 1] = sigma_max;
            sigmas
        }
    }
}

fn validate(sigmas: &[f64], sigma_min: f64, x: &[f32]) -> Result<()> {
    if sigmas.is_empty() {
        return Err(Error::InvalidInput("consistency sampling needs at least one sigma".into()));
    }
    if !(sigma_min.is_finite() && sigma_min >= 0.0) {
        return Err(Error::InvalidInput(format!("sigma_min must be finite and >= 0, got {sigma_min}")));
    }
    for (k, &sigma) in sigmas.iter().enumerate() {
        if !(sigma.is_finite() && sigma > sigma_min) {
            return Err(Error::InvalidInput(format!(
                "sigma {k} is {sigma}; every sigma must be finite and above sigma_min {sigma_min}"
            )));
        }
        if k > 0 && sigma >= sigmas[k - 1] {
            return Err(Error::InvalidInput(format!(
                "sigmas must strictly decrease, but sigma {k} is {sigma} after {}",
                sigmas[k - 1]
            )));
        }
    }
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(Error::InvalidInput(format!("the starting sample holds a non-finite value at element {i}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIGMA_MIN: f64 = 0.002;

    /// The exact consistency function of data x₀ ~ N(μ, s²) per dimension: the VE PF-ODE keeps the
    /// z-score (x − μ)/√(s² + σ²), so f carries it to σ_min.
    struct Gaussian {
        mu: Vec<f64>,
        s: Vec<f64>,
        calls: Vec<f64>,
    }

    impl Gaussian {
        fn f(&self, j: usize, x: f64, sigma: f64) -> f64 {
            let (mu, s) = (self.mu[j], self.s[j]);
            mu + (s * s + SIGMA_MIN * SIGMA_MIN).sqrt() * (x - mu) / (s * s + sigma * sigma).sqrt()
        }
    }

    impl ConsistencyModel for Gaussian {
        fn denoise(&mut self, x: &[f32], sigma: f64) -> Result<Vec<f32>> {
            self.calls.push(sigma);
            Ok(x.iter().enumerate().map(|(j, &v)| self.f(j, f64::from(v), sigma) as f32).collect())
        }
    }

    fn gaussian() -> Gaussian {
        Gaussian { mu: vec![0.5, -1.0, 2.0], s: vec![0.5, 1.0, 0.1], calls: Vec::new() }
    }

    /// Runs the sampler on `sigmas` from z₀ = (1, −0.5, 2) with z_k = k·(0.3, −0.2, 0.1).
    fn run(model: &mut Gaussian, sigmas: &[f64]) -> Result<Vec<f32>> {
        run_clipped(model, sigmas, None)
    }

    fn run_clipped(model: &mut Gaussian, sigmas: &[f64], clip: Option<(f32, f32)>) -> Result<Vec<f32>> {
        let sigma_max = sigmas.first().copied().unwrap_or(1.0);
        let x: Vec<f32> = [1.0, -0.5, 2.0].iter().map(|z| (z * sigma_max) as f32).collect();
        let mut noise = |k: usize| [0.3, -0.2, 0.1].iter().map(|z| z * k as f32).collect();
        consistency_sample(model, sigmas, SIGMA_MIN, x, &mut noise, clip)
    }

    #[test]
    fn clipping_bounds_every_denoised_estimate_before_it_is_renoised() {
        let (z0, z1) = ([1.0f64, -0.5, 2.0], [0.3f64, -0.2, 0.1]);
        let mut model = gaussian();
        let two = run_clipped(&mut model, &[80.0, 0.821], Some((-1.0, 1.0))).unwrap();
        let scale = (0.821f64 * 0.821 - SIGMA_MIN * SIGMA_MIN).sqrt();
        let mut clipped_any = false;
        for j in 0..3 {
            let first = model.f(j, z0[j] * 80.0, 80.0);
            clipped_any |= first.abs() > 1.0;
            let expect = model.f(j, first.clamp(-1.0, 1.0) + scale * z1[j], 0.821).clamp(-1.0, 1.0);
            assert!((f64::from(two[j]) - expect).abs() < 1e-5, "{j}: {} vs {expect}", two[j]);
        }
        assert!(clipped_any, "the example must exercise the clip");
    }

    #[test]
    fn one_and_two_step_sampling_match_the_hand_computation() {
        let (z0, z1) = ([1.0f64, -0.5, 2.0], [0.3f64, -0.2, 0.1]);
        let mut model = gaussian();
        let one = run(&mut model, &[80.0]).unwrap();
        assert_eq!(model.calls, [80.0]);
        for j in 0..3 {
            let x80 = f64::from((z0[j] * 80.0) as f32);
            assert!((f64::from(one[j]) - model.f(j, x80, 80.0)).abs() < 1e-6, "{j}");
        }
        let mut model = gaussian();
        let two = run(&mut model, &[80.0, 0.821]).unwrap();
        assert_eq!(model.calls, [80.0, 0.821]);
        let scale = (0.821f64 * 0.821 - SIGMA_MIN * SIGMA_MIN).sqrt();
        for j in 0..3 {
            let first = model.f(j, z0[j] * 80.0, 80.0);
            let expect = model.f(j, first + scale * z1[j], 0.821);
            assert!((f64::from(two[j]) - expect).abs() < 1e-5, "{j}: {} vs {expect}", two[j]);
        }
    }

    #[test]
    fn bad_sigmas_and_outputs_are_errors() {
        for sigmas in [&[][..], &[1.0, 1.0], &[1.0, 2.0], &[1.0, SIGMA_MIN], &[f64::NAN], &[80.0, 0.001]] {
            assert!(matches!(run(&mut gaussian(), sigmas), Err(Error::InvalidInput(_))), "{sigmas:?}");
        }
        struct Broken;
        impl ConsistencyModel for Broken {
            fn denoise(&mut self, x: &[f32], _: f64) -> Result<Vec<f32>> {
                Ok(vec![f32::NAN; x.len()])
            }
        }
        let err = consistency_sample(&mut Broken, &[80.0], SIGMA_MIN, vec![1.0], &mut |_| vec![0.0], None).unwrap_err();
        assert!(err.to_string().contains("step 0"), "{err}");
        let err = consistency_sample(&mut gaussian(), &[80.0, 1.0], SIGMA_MIN, vec![1.0; 3], &mut |_| vec![0.0], None)
            .unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    }

    #[test]
    fn karras_grid_is_ascending_with_exact_ends() {
        let sigmas = karras_sigmas(11, SIGMA_MIN, 80.0, 7.0);
        assert_eq!(sigmas.len(), 11);
        assert_eq!((sigmas[0], sigmas[10]), (SIGMA_MIN, 80.0));
        assert!(sigmas.windows(2).all(|w| w[0] < w[1]));
        let mid = (SIGMA_MIN.powf(1.0 / 7.0) + 0.5 * (80f64.powf(1.0 / 7.0) - SIGMA_MIN.powf(1.0 / 7.0))).powi(7);
        assert!((sigmas[5] - mid).abs() < 1e-12 * mid);
        assert_eq!(karras_sigmas(1, SIGMA_MIN, 80.0, 7.0), [80.0]);
        assert!(karras_sigmas(0, SIGMA_MIN, 80.0, 7.0).is_empty());
    }
}
