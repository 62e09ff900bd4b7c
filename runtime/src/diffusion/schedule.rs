//! The variance-preserving noise schedule: ᾱ_t over the training steps, the points solvers step
//! between, and the sampling grid. Nothing here knows about solvers.

use crate::{Error, Result};

/// How the per-step variances β_t of a discrete DDPM are laid out over the training steps.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum BetaSchedule {
    /// β rises linearly from `start` to `end` over the training steps (DDPM: 1e-4 to 0.02).
    Linear {
        /// β at the first step.
        start: f64,
        /// β at the last step.
        end: f64,
    },
    /// Nichol & Dhariwal's cosine schedule, ᾱ(t) = cos²((t/T + s)/(1 + s)·π/2), with each β clipped
    /// at 0.999 so that the last step does not destroy the signal in one jump. `s = 0.008` is theirs.
    Cosine {
        /// The small offset that keeps β from vanishing near t = 0.
        s: f64,
    },
}

/// A discrete VP schedule: ᾱ_t for the integer training steps t in `0..train_steps`.
///
/// It stores ln ᾱ_t rather than ᾱ_t so that 1 − ᾱ_t near t = 0 keeps its digits: the σ of the last
/// sampling steps comes from there.
#[derive(Clone, Debug)]
pub struct NoiseSchedule {
    /// ln ᾱ_t, strictly decreasing.
    log_alpha_bar: Vec<f64>,
}

/// A point on the noise schedule: the signal and noise scales of x_t = α_t·x₀ + σ_t·ε.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimePoint {
    /// The timestep the network is conditioned on; −1 for the noise-free end point, where the
    /// network is never evaluated.
    pub t: f64,
    /// The signal scale α_t.
    pub alpha: f64,
    /// The noise scale σ_t; 0 at the noise-free end point.
    pub sigma: f64,
}

impl BetaSchedule {
    /// The betas over `train_steps` steps, validated.
    fn betas(self, train_steps: usize) -> Result<Vec<f64>> {
        let n = train_steps as f64;
        let betas: Vec<f64> = match self {
            BetaSchedule::Linear { start, end } => (0..train_steps)
                .map(|i| if train_steps == 1 { start } else { start + (end - start) * i as f64 / (n - 1.0) })
                .collect(),
            BetaSchedule::Cosine { s } => {
                if !(s.is_finite() && s >= 0.0) {
                    return Err(Error::InvalidInput(format!(
                        "cosine schedule offset s must be finite and >= 0, got {s}"
                    )));
                }
                let alpha_bar = |t: f64| ((t + s) / (1.0 + s) * std::f64::consts::FRAC_PI_2).cos().powi(2);
                (0..train_steps)
                    .map(|i| (1.0 - alpha_bar((i + 1) as f64 / n) / alpha_bar(i as f64 / n)).min(0.999))
                    .collect()
            }
        };
        if let Some((i, beta)) = betas.iter().enumerate().find(|(_, b)| !(**b > 0.0 && **b < 1.0)) {
            return Err(Error::InvalidInput(format!("beta at step {i} is {beta}; every beta must lie in (0, 1)")));
        }
        Ok(betas)
    }
}

impl NoiseSchedule {
    /// Builds the schedule of `train_steps` steps (1000 usually).
    pub fn new(beta: BetaSchedule, train_steps: usize) -> Result<Self> {
        if train_steps == 0 {
            return Err(Error::InvalidInput("a noise schedule needs at least one training step".into()));
        }
        let mut log_alpha_bar = Vec::with_capacity(train_steps);
        let mut acc = 0.0;
        for beta in beta.betas(train_steps)? {
            acc += (-beta).ln_1p();
            log_alpha_bar.push(acc);
        }
        if !acc.is_finite() || acc.exp() == 0.0 {
            return Err(Error::InvalidInput("the schedule destroys the signal entirely (alpha_bar underflows)".into()));
        }
        Ok(NoiseSchedule { log_alpha_bar })
    }

    /// The number of training steps T.
    pub fn train_steps(&self) -> usize {
        self.log_alpha_bar.len()
    }

    /// ᾱ_t, with which training noises x₀: x_t = √ᾱ_t·x₀ + √(1 − ᾱ_t)·ε.
    ///
    /// # Panics
    /// When `t >= train_steps()`, like slice indexing.
    pub fn alpha_bar(&self, t: usize) -> f64 {
        self.log_alpha_bar[t].exp()
    }

    /// The point of training step t: α_t = √ᾱ_t, σ_t = √(1 − ᾱ_t).
    ///
    /// # Panics
    /// When `t >= train_steps()`, like slice indexing.
    pub fn point(&self, t: usize) -> TimePoint {
        let log_alpha_bar = self.log_alpha_bar[t];
        TimePoint { t: t as f64, alpha: (0.5 * log_alpha_bar).exp(), sigma: (-log_alpha_bar.exp_m1()).sqrt() }
    }

    /// The sampling grid for `steps` model evaluations.
    ///
    /// The timesteps follow diffusers' "trailing" spacing, round(linspace(T, 0, steps + 1))[..steps] − 1
    /// with numpy's round-half-to-even, so sampling starts at the noisiest trained step T − 1: the
    /// "leading" spacing never sees the start of the chain and leaves visible noise at few steps.
    /// A final point with α = 1, σ = 0 (x₀ itself, diffusers' `final_sigmas_type="zero"`) follows.
    /// Returns `steps + 1` points; errors when `steps` is 0 or exceeds T.
    pub fn sampling_grid(&self, steps: usize) -> Result<Vec<TimePoint>> {
        let train_steps = self.train_steps();
        if steps == 0 || steps > train_steps {
            return Err(Error::InvalidInput(format!(
                "sampling steps must be between 1 and the {train_steps} training steps, got {steps}"
            )));
        }
        let mut grid: Vec<TimePoint> = (0..steps)
            .map(|k| {
                let position = (train_steps * (steps - k)) as f64 / steps as f64;
                // At least 1, so the cast and the subtraction cannot leave the schedule.
                let t = (position.round_ties_even() as usize).clamp(1, train_steps) - 1;
                self.point(t)
            })
            .collect();
        grid.push(TimePoint::CLEAN);
        Ok(grid)
    }

    /// The VE noise level of training step t, σ_t/α_t: the VP sample divided by α_t is x₀ plus
    /// this much unit noise, which is how consistency distillation reads a VP teacher.
    ///
    /// # Panics
    /// When `t >= train_steps()`, like slice indexing.
    pub fn ve_sigma(&self, t: usize) -> f64 {
        (-self.log_alpha_bar[t]).exp_m1().sqrt()
    }

    /// The inverse of [`NoiseSchedule::ve_sigma`]: the (fractional) timestep whose VE noise level
    /// is `sigma`, interpolating ln σ between the integer steps. Noise levels outside the steps'
    /// are clamped to the first and last step, as the network never saw them.
    pub fn time_at_ve_sigma(&self, sigma: f64) -> f64 {
        let steps = self.train_steps();
        if sigma <= self.ve_sigma(0) {
            return 0.0;
        }
        if sigma >= self.ve_sigma(steps - 1) {
            return (steps - 1) as f64;
        }
        // ve_sigma increases with t: the last t with ve_sigma(t) <= sigma.
        let (mut lo, mut hi) = (0usize, steps - 1);
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if self.ve_sigma(mid) <= sigma {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let (a, b) = (self.ve_sigma(lo).ln(), self.ve_sigma(hi).ln());
        lo as f64 + (sigma.ln() - a) / (b - a)
    }
}

impl TimePoint {
    /// The noise-free end point: α = 1, σ = 0.
    pub const CLEAN: TimePoint = TimePoint { t: -1.0, alpha: 1.0, sigma: 0.0 };

    /// The half log signal-to-noise ratio λ = ln α − ln σ; +∞ at σ = 0. Multistep solvers are
    /// written in λ because the linear part of the PF-ODE integrates exactly there.
    pub fn lambda(&self) -> f64 {
        self.alpha.ln() - self.sigma.ln()
    }

    /// The VP point (α² + σ² = 1) at half log-SNR `lambda`, labelled with timestep `t`: grids
    /// uniform in λ are built from this.
    pub fn vp_from_lambda(lambda: f64, t: f64) -> TimePoint {
        // α² = 1/(1 + e^{−2λ}) and σ² = 1/(1 + e^{2λ}); each form stays accurate on its own side.
        TimePoint {
            t,
            alpha: (1.0 + (-2.0 * lambda).exp()).recip().sqrt(),
            sigma: (1.0 + (2.0 * lambda).exp()).recip().sqrt(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ddpm() -> NoiseSchedule {
        NoiseSchedule::new(BetaSchedule::Linear { start: 1e-4, end: 0.02 }, 1000).unwrap()
    }

    #[test]
    fn the_time_at_a_ve_noise_level_inverts_it() {
        let schedule = ddpm();
        for t in [3usize, 100, 517, 998] {
            let back = schedule.time_at_ve_sigma(schedule.ve_sigma(t));
            assert!((back - t as f64).abs() < 1e-9, "{t} came back as {back}");
        }
        assert_eq!(schedule.time_at_ve_sigma(1e-6), 0.0);
        assert_eq!(schedule.time_at_ve_sigma(1e6), 999.0);
        let between = schedule.time_at_ve_sigma((schedule.ve_sigma(10) * schedule.ve_sigma(11)).sqrt());
        assert!(between > 10.0 && between < 11.0);
    }

    /// Checks the grid of `steps` against its expected timesteps (the final clean point excluded).
    #[track_caller]
    fn check_grid(steps: usize, expect_head: &[f64]) {
        let schedule = ddpm();
        let grid = schedule.sampling_grid(steps).unwrap();
        assert_eq!(grid.len(), steps + 1);
        assert_eq!(grid[0].t, 999.0);
        assert_eq!(grid[0], schedule.point(999));
        let timesteps: Vec<f64> = grid.iter().map(|p| p.t).collect();
        assert_eq!(&timesteps[..expect_head.len()], expect_head);
        for pair in grid.windows(2) {
            assert!(pair[1].t < pair[0].t && pair[1].sigma < pair[0].sigma, "not decreasing: {pair:?}");
        }
        assert_eq!(*grid.last().unwrap(), TimePoint { t: -1.0, alpha: 1.0, sigma: 0.0 });
        assert_eq!(grid.last().unwrap().lambda(), f64::INFINITY);
    }

    #[test]
    fn sampling_grids_use_trailing_spacing_and_end_clean() {
        check_grid(1, &[999.0]);
        check_grid(5, &[999.0, 799.0, 599.0, 399.0, 199.0]);
        // 1000/16 = 62.5: numpy rounds halves to even (937.5 -> 938, 812.5 -> 812, 687.5 -> 688).
        check_grid(16, &[999.0, 937.0, 874.0, 811.0, 749.0, 687.0]);
        check_grid(3, &[999.0, 666.0, 332.0]);
        let all: Vec<f64> = (0..1000).rev().map(|t| t as f64).collect();
        check_grid(1000, &all);
    }

    #[test]
    fn sampling_grid_rejects_zero_and_too_many_steps() {
        assert!(matches!(ddpm().sampling_grid(0), Err(Error::InvalidInput(_))));
        assert!(matches!(ddpm().sampling_grid(1001), Err(Error::InvalidInput(_))));
    }

    #[test]
    fn linear_schedule_matches_the_cumulative_product() {
        let schedule = ddpm();
        let mut alpha_bar = 1.0;
        for t in 0..1000 {
            alpha_bar *= 1.0 - (1e-4 + (0.02 - 1e-4) * t as f64 / 999.0);
            assert!((schedule.alpha_bar(t) / alpha_bar - 1.0).abs() < 1e-12, "t={t}");
            let point = schedule.point(t);
            assert!((point.alpha * point.alpha + point.sigma * point.sigma - 1.0).abs() < 1e-14);
            assert!((schedule.ve_sigma(t) - point.sigma / point.alpha).abs() <= 1e-12 * schedule.ve_sigma(t));
        }
        // Known DDPM value: ᾱ at the last step is about 4.04e-5.
        assert!((schedule.alpha_bar(999) - 4.036e-5).abs() < 1e-7, "{}", schedule.alpha_bar(999));
    }

    #[test]
    fn cosine_schedule_follows_its_closed_form_and_clips() {
        let schedule = NoiseSchedule::new(BetaSchedule::Cosine { s: 0.008 }, 1000).unwrap();
        let f = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
        for t in [0usize, 10, 500, 900] {
            let expect = f((t + 1) as f64 / 1000.0) / f(0.0);
            assert!((schedule.alpha_bar(t) / expect - 1.0).abs() < 1e-9, "t={t}");
        }
        // The last beta would be 1 without the clip; with it ᾱ stays positive.
        assert!(schedule.alpha_bar(999) > 0.0);
        let last = schedule.alpha_bar(999) / schedule.alpha_bar(998);
        assert!((last - 0.001).abs() < 1e-9, "{last}");
    }

    #[test]
    fn bad_schedules_are_errors() {
        for (beta, steps) in [
            (BetaSchedule::Linear { start: 1e-4, end: 0.02 }, 0),
            (BetaSchedule::Linear { start: 0.0, end: 0.02 }, 10),
            (BetaSchedule::Linear { start: 1e-4, end: 1.0 }, 10),
            (BetaSchedule::Linear { start: f64::NAN, end: 0.02 }, 10),
            (BetaSchedule::Cosine { s: -1.0 }, 10),
        ] {
            assert!(matches!(NoiseSchedule::new(beta, steps), Err(Error::InvalidInput(_))), "{beta:?} {steps}");
        }
    }

    #[test]
    fn points_from_lambda_are_vp() {
        for lambda in [-8.0, -1.0, 0.0, 0.5, 6.0] {
            let point = TimePoint::vp_from_lambda(lambda, 3.0);
            assert!((point.lambda() - lambda).abs() < 1e-12, "{lambda}");
            assert!((point.alpha.powi(2) + point.sigma.powi(2) - 1.0).abs() < 1e-15);
        }
    }
}
