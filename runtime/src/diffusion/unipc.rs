//! UniPC coefficients (Zhao et al. 2023) in diffusers' data-prediction form: the UniP predictor
//! and the UniC corrector, for both choices of B(h).
//!
//! With h = λ_t − λ_s0, hh = −h, φ₁ = e^{hh} − 1, r_k = (λ_{s_k} − λ_s0)/h (negative for past
//! points) and D_k = (m_k − m_0)/r_k:
//! predictor  x̃_t = (σ_t/σ_s0)·x − α_t·φ₁·m_0 − α_t·B(h)·Σ_k ρᵖ_k·D_k,
//! corrector  x_t = (σ_t/σ_s0)·x − α_t·φ₁·m_0 − α_t·B(h)·(Σ_k ρᶜ_k·D_k + ρᶜ_t·(m_t − m_0)),
//! where ρ solves the Vandermonde system R·ρ = b with R[i][k] = r_k^i and b_i = i!·g_i/B(h),
//! g_1 = φ₁/hh − 1, g_{i+1} = g_i/hh − 1/(i+1)!. Like diffusers, the order-2 predictor uses
//! ρᵖ = ½ (which makes it DPM-Solver++(2M) exactly) and the order-1 corrector ρᶜ = ½.

use super::config::UniPcVariant;
use super::schedule::TimePoint;
use super::solver::{Update, MAX_ORDER};
use crate::{Error, Result};

/// The predictor step from `s` to `t` of the given order, with the history's λ values newest
/// first (`lambdas[0]` is λ at `s`).
pub(crate) fn predictor(
    variant: UniPcVariant,
    order: usize,
    lambdas: &[f64],
    s: &TimePoint,
    t: &TimePoint,
) -> Result<Update> {
    let step = Step::new(variant, order, lambdas, s, t);
    let mut res = step.first_order();
    let rho: Vec<f64> = match order {
        1 => return Ok(res),
        2 => vec![0.5],
        _ => solve(&step.vandermonde(order - 1), &step.b[..order - 1])?,
    };
    step.add_differences(&mut res, &rho);
    Ok(res)
}

/// The corrector of the step from `s` to `t` that the predictor took at the given order, once
/// the model has been evaluated at the predicted point: its prediction m_t gets `current`.
pub(crate) fn corrector(
    variant: UniPcVariant,
    order: usize,
    lambdas: &[f64],
    s: &TimePoint,
    t: &TimePoint,
) -> Result<Update> {
    let step = Step::new(variant, order, lambdas, s, t);
    let mut res = step.first_order();
    let rho = match order {
        1 => vec![0.5],
        _ => solve(&step.vandermonde(order), &step.b[..order])?,
    };
    let (rho_t, rho_past) = rho.split_last().expect("the corrector has at least one coefficient. This is a bug.");
    step.add_differences(&mut res, rho_past);
    // ρ_t·(m_t − m_0)
    let weight = -t.alpha * step.b_h * rho_t;
    res.current = weight;
    res.history[0] -= weight;
    Ok(res)
}

/// What the predictor and the corrector of one step share.
struct Step {
    /// r_k for the past predictions k = 1..order, then 1 for the step's end point.
    rks: Vec<f64>,
    /// b_1..b_order.
    b: Vec<f64>,
    /// B(h).
    b_h: f64,
    phi1: f64,
    x_coef: f64,
    alpha_t: f64,
}

impl Step {
    fn new(variant: UniPcVariant, order: usize, lambdas: &[f64], s: &TimePoint, t: &TimePoint) -> Step {
        let h = t.lambda() - lambdas[0];
        let hh = -h;
        let phi1 = hh.exp_m1();
        let b_h = match variant {
            UniPcVariant::Bh1 => hh,
            UniPcVariant::Bh2 => phi1,
        };
        let mut rks: Vec<f64> = lambdas[1..order].iter().map(|lambda| (lambda - lambdas[0]) / h).collect();
        rks.push(1.0);
        let mut b = Vec::with_capacity(order);
        let (mut g, mut factorial) = (phi1 / hh - 1.0, 1.0);
        for i in 1..=order {
            b.push(g * factorial / b_h);
            factorial *= (i + 1) as f64;
            g = g / hh - 1.0 / factorial;
        }
        Step { rks, b, b_h, phi1, x_coef: t.sigma / s.sigma, alpha_t: t.alpha }
    }

    /// (σ_t/σ_s0)·x − α_t·φ₁·m_0: the DDIM step both stages start from.
    fn first_order(&self) -> Update {
        let mut res = Update::new(self.x_coef);
        res.history[0] = -self.alpha_t * self.phi1;
        res
    }

    /// R[i][k] = r_k^i for i, k < n.
    fn vandermonde(&self, n: usize) -> Vec<Vec<f64>> {
        (0..n).map(|i| self.rks[..n].iter().map(|r| r.powi(i as i32)).collect()).collect()
    }

    /// res −= α_t·B(h)·Σ_k ρ_k·(m_{k+1} − m_0)/r_k.
    fn add_differences(&self, res: &mut Update, rho: &[f64]) {
        for (k, (rho_k, r_k)) in rho.iter().zip(&self.rks).enumerate() {
            let weight = -self.alpha_t * self.b_h * rho_k / r_k;
            res.history[k + 1] += weight;
            res.history[0] -= weight;
        }
        debug_assert!(rho.len() < MAX_ORDER);
    }
}

/// Solves the small dense system a·y = rhs by Gaussian elimination with partial pivoting.
fn solve(a: &[Vec<f64>], rhs: &[f64]) -> Result<Vec<f64>> {
    let n = rhs.len();
    let mut m: Vec<Vec<f64>> = a.iter().zip(rhs).map(|(row, &v)| row.iter().copied().chain([v]).collect()).collect();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| m[i][col].abs().total_cmp(&m[j][col].abs()))
            .expect("the pivot range is not empty. This is a bug.");
        let size = m[pivot][col].abs();
        if size == 0.0 || size.is_nan() {
            return Err(Error::InvalidInput("UniPC's coefficient system is singular: repeated λ in the grid".into()));
        }
        m.swap(col, pivot);
        let (upper, lower) = m.split_at_mut(col + 1);
        let pivot_row = &upper[col];
        for row in lower {
            let factor = row[col] / pivot_row[col];
            for (v, p) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                *v -= factor * p;
            }
        }
    }
    let mut y = vec![0.0; n];
    for row in (0..n).rev() {
        let tail: f64 = (row + 1..n).map(|k| m[row][k] * y[k]).sum();
        y[row] = (m[row][n] - tail) / m[row][row];
    }
    if y.iter().any(|v| !v.is_finite()) {
        return Err(Error::InvalidInput("UniPC's coefficients are not finite: the grid steps are degenerate".into()));
    }
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::dpmpp;

    fn points() -> ([f64; 3], TimePoint, TimePoint) {
        let lambdas = [-0.7, -1.2, -2.0];
        (lambdas, TimePoint::vp_from_lambda(lambdas[0], 600.0), TimePoint::vp_from_lambda(-0.1, 400.0))
    }

    #[track_caller]
    fn check_close(got: Update, expect: Update) {
        assert!((got.x - expect.x).abs() < 1e-15);
        for (g, e) in got.history.iter().zip(expect.history) {
            assert!((g - e).abs() < 1e-14, "{got:?} vs {expect:?}");
        }
        assert!((got.current - expect.current).abs() < 1e-14, "{got:?} vs {expect:?}");
    }

    /// The order-2 bh2 predictor is DPM-Solver++(2M); the order-1 predictor is DDIM for both B(h).
    #[test]
    fn low_order_predictors_are_dpm_solver_pp() {
        let (lambdas, s, t) = points();
        for variant in [UniPcVariant::Bh1, UniPcVariant::Bh2] {
            check_close(predictor(variant, 1, &lambdas, &s, &t).unwrap(), dpmpp::update(1, &lambdas, &s, &t));
        }
        check_close(predictor(UniPcVariant::Bh2, 2, &lambdas, &s, &t).unwrap(), dpmpp::update(2, &lambdas, &s, &t));
    }

    /// The order-2 corrector, against its closed form: ρ_prev = (b₁ − b₂)/(1 − r₁), ρ_t = b₁ − ρ_prev.
    #[test]
    fn order_two_corrector_matches_its_closed_form() {
        let (lambdas, s, t) = points();
        for variant in [UniPcVariant::Bh1, UniPcVariant::Bh2] {
            let got = corrector(variant, 2, &lambdas, &s, &t).unwrap();
            let h = t.lambda() - lambdas[0];
            let phi1 = (-h).exp_m1();
            let b_h = if variant == UniPcVariant::Bh1 { -h } else { phi1 };
            let g1 = phi1 / -h - 1.0;
            let g2 = g1 / -h - 0.5;
            let (b1, b2) = (g1 / b_h, 2.0 * g2 / b_h);
            let r1 = (lambdas[1] - lambdas[0]) / h;
            let rho_prev = (b1 - b2) / (1.0 - r1);
            let rho_t = b1 - rho_prev;
            // x − α φ₁ m0 − α B (ρ_prev (m1 − m0)/r1 + ρ_t (m_t − m0)), as coefficients.
            let a = -t.alpha * b_h;
            let expect = Update {
                x: t.sigma / s.sigma,
                history: [-t.alpha * phi1 - a * rho_prev / r1 - a * rho_t, a * rho_prev / r1, 0.0],
                current: a * rho_t,
            };
            check_close(got, expect);
        }
    }

    #[test]
    fn solve_handles_a_pivot_swap_and_rejects_singular_systems() {
        let y = solve(&[vec![0.0, 2.0], vec![3.0, 1.0]], &[4.0, 5.0]).unwrap();
        assert!((y[0] - 1.0).abs() < 1e-15 && (y[1] - 2.0).abs() < 1e-15, "{y:?}");
        assert!(solve(&[vec![1.0, 1.0], vec![1.0, 1.0]], &[1.0, 2.0]).is_err());
    }
}
