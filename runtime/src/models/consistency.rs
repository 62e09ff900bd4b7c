//! The consistency model's parametrization around a UNet, shared by training (with gradients) and
//! serving: f(x, σ) = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x, c_noise(σ)).
//!
//! The scalings are those of the consistency-models paper (Song et al. 2023), which iCT keeps:
//! c_skip = σ_d² / ((σ − σ_min)² + σ_d²) and c_out = σ_d·(σ − σ_min) / √(σ² + σ_d²), so f is exactly
//! the identity at σ_min (the boundary condition), c_in = 1 / √(σ² + σ_d²) to feed F unit-variance
//! inputs, and c_noise = 1000·¼·ln σ as F's timestep.

use candle_core::{Result, Tensor};

use super::unet::UNet;

/// The four scalings at one σ.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scalings {
    /// Weight of the input in the output.
    pub c_skip: f64,
    /// Weight of the network in the output.
    pub c_out: f64,
    /// Scale of the network's input.
    pub c_in: f64,
    /// The timestep the network is conditioned on.
    pub c_noise: f64,
}

impl Scalings {
    /// The scalings at `sigma` for a model with `sigma_min` and data deviation `sigma_data`.
    pub fn at(sigma: f64, sigma_min: f64, sigma_data: f64) -> Scalings {
        let sd2 = sigma_data * sigma_data;
        let shifted = sigma - sigma_min;
        Scalings {
            c_skip: sd2 / (shifted * shifted + sd2),
            c_out: sigma_data * shifted / (sigma * sigma + sd2).sqrt(),
            c_in: 1.0 / (sigma * sigma + sd2).sqrt(),
            c_noise: 250.0 * (sigma + 1e-44).ln(),
        }
    }
}

/// A UNet wrapped in the consistency parametrization.
#[derive(Debug, Clone)]
pub struct ConsistencyNet {
    unet: UNet,
    sigma_min: f64,
    sigma_data: f64,
}

impl ConsistencyNet {
    /// Wraps `unet`, whose output is the raw F.
    pub fn new(unet: UNet, sigma_min: f64, sigma_data: f64) -> ConsistencyNet {
        ConsistencyNet { unet, sigma_min, sigma_data }
    }

    /// The network F inside.
    pub fn unet(&self) -> &UNet {
        &self.unet
    }

    /// f(x, σ) for a batch `[n, C, H, W]`, one σ and one class per image.
    pub fn forward(&self, x: &Tensor, sigmas: &[f64], classes: &[u32], train: bool) -> Result<Tensor> {
        let n = x.dim(0)?;
        if sigmas.len() != n {
            candle_core::bail!("{} noise levels for a batch of {n}", sigmas.len())
        }
        let s: Vec<Scalings> =
            sigmas.iter().map(|&sigma| Scalings::at(sigma, self.sigma_min, self.sigma_data)).collect();
        let column = |f: fn(&Scalings) -> f64| {
            let values: Vec<f32> = s.iter().map(|v| f(v) as f32).collect();
            Tensor::from_vec(values, (n, 1, 1, 1), x.device())
        };
        let c_noise: Vec<f32> = s.iter().map(|v| v.c_noise as f32).collect();
        let inner = self.unet.forward(&x.broadcast_mul(&column(|v| v.c_in)?)?, &c_noise, classes, train)?;
        x.broadcast_mul(&column(|v| v.c_skip)?)? + inner.broadcast_mul(&column(|v| v.c_out)?)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_is_the_identity_at_sigma_min() {
        let s = Scalings::at(0.002, 0.002, 0.5);
        assert_eq!((s.c_skip, s.c_out), (1.0, 0.0));
    }

    #[test]
    fn at_large_sigma_the_network_dominates() {
        let s = Scalings::at(80.0, 0.002, 0.5);
        assert!(s.c_skip < 1e-4 && (s.c_out - 0.5).abs() < 1e-3, "{s:?}");
        assert!((s.c_in * (80f64 * 80.0 + 0.25).sqrt() - 1.0).abs() < 1e-12);
    }
}
