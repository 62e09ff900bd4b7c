//! Diffusion sampling: the VP noise schedule, multistep probability-flow ODE solvers (DDIM,
//! DPM-Solver++(2M/3M), UniPC), the DualFast mixing on top of any of them, and consistency-model
//! sampling.
//!
//! The solvers follow diffusers' data-prediction (x₀) formulation in λ = ln α − ln σ, so that a
//! model trained with diffusers' conventions samples the same here. Formulas and their sources
//! are in `DIFFUSION-METHODS.md`. Models plug in through [`EpsModel`] (ε prediction) and
//! [`ConsistencyModel`] (denoised sample); guidance and conditioning stay inside them.
//!
//! ```
//! use tandem_runtime::diffusion::{sample, BetaSchedule, EpsModel, NoiseSchedule, SamplerConfig, Solver, TimePoint};
//!
//! /// Data that is always exactly zero: the ideal ε is x/σ.
//! struct Zero;
//! impl EpsModel for Zero {
//!     fn predict_eps(&mut self, x: &[f32], t: &TimePoint) -> tandem_runtime::Result<Vec<f32>> {
//!         Ok(x.iter().map(|v| v / t.sigma as f32).collect())
//!     }
//! }
//!
//! let schedule = NoiseSchedule::new(BetaSchedule::Linear { start: 1e-4, end: 0.02 }, 1000)?;
//! let grid = schedule.sampling_grid(10)?;
//! let x = sample(&mut Zero, &grid, &SamplerConfig::new(Solver::DpmSolverPP2M), vec![0.3, -1.2])?;
//! assert!(x.iter().all(|v| v.abs() < 1e-6));
//! # Ok::<(), tandem_runtime::Error>(())
//! ```

pub mod schedule;

mod config;
mod consistency;
mod dpmpp;
mod dualfast;
mod sampler;
mod solver;
mod unipc;

#[cfg(test)]
mod gaussian_tests;

pub use config::{CSchedule, DualFast, DualFastTau, MixSpace, SamplerConfig, Solver, UniPcVariant};
pub use consistency::{consistency_sample, karras_sigmas, ConsistencyModel};
pub use sampler::{sample, EpsModel};
pub use schedule::{BetaSchedule, NoiseSchedule, TimePoint};
