//! The consistency model's parametrization around a UNet, shared by training (with gradients) and
//! serving: f(x, σ) = a(σ)·x + b(σ)·F(c(σ)·x, τ(σ)), where [`Parametrization`] says what F is.
//!
//! - `edm`: the scalings of the consistency-models paper (Song et al. 2023), which iCT keeps:
//!   c_skip = σ_d² / ((σ − σ_min)² + σ_d²) and c_out = σ_d·(σ − σ_min) / √(σ² + σ_d²), so f is
//!   exactly the identity at σ_min (the boundary condition), c_in = 1 / √(σ² + σ_d²) to feed F
//!   unit-variance inputs, and c_noise = 1000·¼·ln σ as F's timestep.
//! - `from_eps`: F is a VP ε-prediction network, as a DDPM teacher is, so a student distilled from
//!   one can start as the teacher itself. F sees the VP point x/√(1 + σ²) at the teacher's
//!   timestep t(σ) (σ_t/α_t = σ), the data estimate is x̂₀ = x − σ·F, and f = c_skip·x + c_out·x̂₀
//!   with the boundary scalings at s = k·(σ − σ_min): c_skip = σ_d²/(s² + σ_d²), c_out = s/√(s² + σ_d²)
//!   (latent consistency models' form; k, the timestep scaling, makes f ≈ x̂₀ away from σ_min).

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use super::unet::UNet;
use crate::diffusion::{BetaSchedule, NoiseSchedule};

/// What the UNet inside a consistency model predicts, and how f is made from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Parametrization {
    /// Song et al.'s scalings around a raw network F.
    #[default]
    Edm,
    /// F predicts ε on a VP schedule (a DDPM teacher's), and f blends x with x̂₀ = x − σ·F.
    FromEps {
        /// The teacher's β schedule.
        schedule: BetaSchedule,
        /// The teacher's training steps T.
        train_steps: usize,
        /// k in s = k·(σ − σ_min): how fast f leaves the identity above σ_min.
        timestep_scaling: f64,
    },
}

/// The scalings at one σ: f = c_skip·x + c_out·F(c_in·x, c_noise).
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
    /// The `edm` scalings at `sigma` for a model with `sigma_min` and data deviation `sigma_data`.
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

    /// The `from_eps` scalings: f = c_skip·x + c_out·(x − σ·F(x/√(1 + σ²), t(σ))), written in the
    /// common form (the input's weight c_skip + c_out, the network's −c_out·σ).
    fn from_eps(sigma: f64, sigma_min: f64, sigma_data: f64, schedule: &NoiseSchedule, k: f64) -> Scalings {
        let sd2 = sigma_data * sigma_data;
        let s = k * (sigma - sigma_min);
        let (skip, out) = (sd2 / (s * s + sd2), s / (s * s + sd2).sqrt());
        Scalings {
            c_skip: skip + out,
            c_out: -out * sigma,
            c_in: 1.0 / (1.0 + sigma * sigma).sqrt(),
            c_noise: schedule.time_at_ve_sigma(sigma),
        }
    }
}

/// The parametrization with its schedule built.
#[derive(Debug, Clone)]
enum Resolved {
    Edm,
    FromEps { schedule: NoiseSchedule, timestep_scaling: f64 },
}

/// A UNet wrapped in the consistency parametrization.
#[derive(Debug, Clone)]
pub struct ConsistencyNet {
    unet: UNet,
    sigma_min: f64,
    sigma_data: f64,
    parametrization: Resolved,
}

impl ConsistencyNet {
    /// Wraps `unet` in the parametrization `p`; fails on an invalid schedule.
    pub fn new(unet: UNet, sigma_min: f64, sigma_data: f64, p: &Parametrization) -> crate::Result<ConsistencyNet> {
        let parametrization = match p {
            Parametrization::Edm => Resolved::Edm,
            Parametrization::FromEps { schedule, train_steps, timestep_scaling } => {
                if !(timestep_scaling.is_finite() && *timestep_scaling > 0.0) {
                    return Err(crate::Error::InvalidInput(format!(
                        "timestep_scaling must be finite and positive, got {timestep_scaling}"
                    )));
                }
                Resolved::FromEps {
                    schedule: NoiseSchedule::new(*schedule, *train_steps)?,
                    timestep_scaling: *timestep_scaling,
                }
            }
        };
        Ok(ConsistencyNet { unet, sigma_min, sigma_data, parametrization })
    }

    /// The network F inside.
    pub fn unet(&self) -> &UNet {
        &self.unet
    }

    /// The scalings at `sigma`.
    pub fn scalings(&self, sigma: f64) -> Scalings {
        match &self.parametrization {
            Resolved::Edm => Scalings::at(sigma, self.sigma_min, self.sigma_data),
            Resolved::FromEps { schedule, timestep_scaling } => {
                Scalings::from_eps(sigma, self.sigma_min, self.sigma_data, schedule, *timestep_scaling)
            }
        }
    }

    /// f(x, σ) for a batch `[n, C, H, W]`, one σ and one class per image.
    pub fn forward(&self, x: &Tensor, sigmas: &[f64], classes: &[u32], train: bool) -> Result<Tensor> {
        let n = x.dim(0)?;
        if sigmas.len() != n {
            candle_core::bail!("{} noise levels for a batch of {n}", sigmas.len())
        }
        let s: Vec<Scalings> = sigmas.iter().map(|&sigma| self.scalings(sigma)).collect();
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
        let schedule = NoiseSchedule::new(BetaSchedule::Cosine { s: 0.008 }, 1000).unwrap();
        let s = Scalings::from_eps(0.002, 0.002, 0.5, &schedule, 10.0);
        assert_eq!((s.c_skip, s.c_out), (1.0, 0.0));
    }

    #[test]
    fn from_eps_is_the_teachers_data_estimate_away_from_sigma_min() {
        let schedule = NoiseSchedule::new(BetaSchedule::Cosine { s: 0.008 }, 1000).unwrap();
        for sigma in [1.0, 10.0, 80.0] {
            let s = Scalings::from_eps(sigma, 0.002, 0.5, &schedule, 10.0);
            // f = x − σ·F (nearly): the input's weight is 1 and the network's −σ.
            assert!((s.c_skip - 1.0).abs() < 0.02 && (s.c_out + sigma).abs() < 0.02 * sigma, "{sigma}: {s:?}");
            // F sees the VP point at the timestep whose noise level is σ.
            assert!((s.c_in * (1.0 + sigma * sigma).sqrt() - 1.0).abs() < 1e-12);
            let t = s.c_noise.round() as usize;
            assert!((schedule.ve_sigma(t) / sigma).ln().abs() < 0.05, "{sigma}: t {t}");
        }
    }

    #[test]
    fn at_large_sigma_the_network_dominates() {
        let s = Scalings::at(80.0, 0.002, 0.5);
        assert!(s.c_skip < 1e-4 && (s.c_out - 0.5).abs() < 1e-3, "{s:?}");
        assert!((s.c_in * (80f64 * 80.0 + 0.25).sqrt() - 1.0).abs() < 1e-12);
    }
}
