//! Whole-sampler tests on Gaussian data, where the exact ε and the exact ODE solution are known:
//! agreement between solvers that must coincide, DualFast's off switch, convergence orders, and
//! the error paths of [`sample`].

use super::config::{CSchedule, DualFast, DualFastTau, MixSpace, SamplerConfig, Solver, UniPcVariant};
use super::sampler::{integrate, sample, EpsModel, Network};
use super::schedule::{BetaSchedule, NoiseSchedule, TimePoint};
use super::solver::{Method, Plan};
use crate::{Error, Result};

const DIM: usize = 16;
const ITEMS: usize = 4;

/// Data x₀ ~ N(μ_j, s_j²) independently per dimension j, with the exact ε
/// ε*(x, t) = σ_t·(x − α_t·μ)/(α_t²·s² + σ_t²), optionally perturbed by a smooth term so that the
/// model is not exactly the one every solver integrates well.
struct Gaussian {
    mu: Vec<f64>,
    s: Vec<f64>,
    perturb: f64,
}

impl Gaussian {
    fn new(perturb: f64) -> Gaussian {
        Gaussian {
            mu: (0..DIM).map(|j| (j as f64 * 0.7).sin() * 1.5).collect(),
            s: (0..DIM).map(|j| 0.05 + 1.5 * ((j * 5 % DIM) as f64 / DIM as f64)).collect(),
            perturb,
        }
    }

    fn eps(&self, k: usize, x: f64, t: &TimePoint) -> f64 {
        let j = k % DIM;
        let (mu, s) = (self.mu[j], self.s[j]);
        let exact = t.sigma * (x - t.alpha * mu) / (t.alpha * t.alpha * s * s + t.sigma * t.sigma);
        exact + self.perturb * (3.0 * x + t.lambda()).sin()
    }

    /// The z-score of x at `t`, which the exact probability-flow ODE keeps constant.
    fn z(&self, k: usize, x: f64, t: &TimePoint) -> f64 {
        let j = k % DIM;
        (x - t.alpha * self.mu[j]) / (t.alpha * t.alpha * self.s[j] * self.s[j] + t.sigma * t.sigma).sqrt()
    }

    fn x(&self, k: usize, z: f64, t: &TimePoint) -> f64 {
        let j = k % DIM;
        t.alpha * self.mu[j] + (t.alpha * t.alpha * self.s[j] * self.s[j] + t.sigma * t.sigma).sqrt() * z
    }

    /// ITEMS starting points at `start`, with z-scores spread over ±2.
    fn start(&self, start: &TimePoint) -> Vec<f64> {
        (0..ITEMS * DIM).map(|k| self.x(k, ((k * 7 % 23) as f64 / 11.0 - 1.0) * 2.0, start)).collect()
    }

    /// The exact solution at `end` from `x` at `start`.
    fn exact(&self, x: &[f64], start: &TimePoint, end: &TimePoint) -> Vec<f64> {
        x.iter().enumerate().map(|(k, &v)| self.x(k, self.z(k, v, start), end)).collect()
    }
}

impl Network for Gaussian {
    fn eps(&mut self, x: &[f64], t: &TimePoint) -> Result<Vec<f64>> {
        Ok(x.iter().enumerate().map(|(k, &v)| Gaussian::eps(self, k, v, t)).collect())
    }
}

impl EpsModel for Gaussian {
    fn predict_eps(&mut self, x: &[f32], t: &TimePoint) -> Result<Vec<f32>> {
        Ok(x.iter().enumerate().map(|(k, &v)| Gaussian::eps(self, k, f64::from(v), t) as f32).collect())
    }
}

fn ddpm() -> NoiseSchedule {
    NoiseSchedule::new(BetaSchedule::Linear { start: 1e-4, end: 0.02 }, 1000).unwrap()
}

/// `nfe` steps uniform in λ from training step 999 to training step 20: σ stays > 0, so the
/// singular last step onto σ = 0 does not hide the solvers' orders.
fn lambda_grid(nfe: usize) -> Vec<TimePoint> {
    let schedule = ddpm();
    let (lo, hi) = (schedule.point(999).lambda(), schedule.point(20).lambda());
    (0..=nfe).map(|i| TimePoint::vp_from_lambda(lo + (hi - lo) * i as f64 / nfe as f64, i as f64)).collect()
}

fn plan(solver: Solver, lower_order_final: bool) -> Plan {
    Plan { lower_order_final, ..Plan::of(solver) }
}

fn run(model: &mut Gaussian, grid: &[TimePoint], plan: Plan, dualfast: Option<DualFast>) -> Vec<f64> {
    let start = model.start(&grid[0]);
    integrate(model, grid, plan, dualfast, None, start).unwrap()
}

#[track_caller]
fn check_relative(got: &[f64], expect: &[f64], tol: f64) {
    assert_eq!(got.len(), expect.len());
    for (k, (g, e)) in got.iter().zip(expect).enumerate() {
        assert!((g - e).abs() <= tol * e.abs().max(1.0), "element {k}: {g} vs {e}");
    }
}

/// DDIM against the textbook update written independently: x̂₀ = (x − σ_s ε̂)/α_s,
/// x_t = α_t x̂₀ + σ_t ε̂; on a grid ending at σ > 0 and on the sampling grid ending at σ = 0.
#[test]
fn ddim_is_the_textbook_update() {
    let mut model = Gaussian::new(0.1);
    for grid in [lambda_grid(12), ddpm().sampling_grid(12).unwrap()] {
        let mut x = model.start(&grid[0]);
        for pair in grid.windows(2) {
            let (s, t) = (&pair[0], &pair[1]);
            let eps = Network::eps(&mut model, &x, s).unwrap();
            for (v, e) in x.iter_mut().zip(eps) {
                let x0 = (*v - s.sigma * e) / s.alpha;
                *v = t.alpha * x0 + t.sigma * e;
            }
        }
        let got = run(&mut model, &grid, Plan::of(Solver::Ddim), None);
        check_relative(&got, &x, 1e-12);
        // The capped DPM-Solver++(3M) is the same solver.
        let capped = Plan { order: 1, ..Plan::of(Solver::DpmSolverPP3M) };
        assert_eq!(run(&mut model, &grid, capped, None), got);
        // Through the public f32 interface.
        let start: Vec<f32> = model.start(&grid[0]).iter().map(|&v| v as f32).collect();
        let public = sample(&mut model, &grid, &SamplerConfig::new(Solver::Ddim), start).unwrap();
        let public: Vec<f64> = public.into_iter().map(f64::from).collect();
        check_relative(&public, &x, 1e-5);
    }
}

/// UniPC-bh2's order-2 predictor without the corrector is DPM-Solver++(2M) (ρᵖ = ½), whatever
/// the end rules, as long as both lower their order at the same steps.
#[test]
fn unipc_bh2_predictor_is_dpm_solver_pp_2m() {
    let mut model = Gaussian::new(0.1);
    let unipc = |lower_order_final| Plan {
        method: Method::UniPc { variant: UniPcVariant::Bh2, corrector: false },
        ..plan(Solver::UniPc(UniPcVariant::Bh2), lower_order_final)
    };
    // Under 15 steps both lower the last step with lower_order_final; without it neither does.
    for (grid, lower_order_final) in
        [(lambda_grid(20), false), (lambda_grid(10), true), (ddpm().sampling_grid(10).unwrap(), true)]
    {
        let dpm = run(&mut model, &grid, plan(Solver::DpmSolverPP2M, lower_order_final), None);
        let predictor = run(&mut model, &grid, unipc(lower_order_final), None);
        check_relative(&predictor, &dpm, 1e-12);
        let ddim = run(&mut model, &grid, Plan::of(Solver::Ddim), None);
        let corrected = run(&mut model, &grid, plan(Solver::UniPc(UniPcVariant::Bh2), lower_order_final), None);
        let differs = |a: &[f64], b: &[f64]| a.iter().zip(b).any(|(x, y)| (x - y).abs() > 1e-6);
        assert!(differs(&dpm, &ddim) && differs(&corrected, &dpm), "the orders must matter on this model");
    }
}

fn all_dualfast(c_max: f64) -> Vec<DualFast> {
    let mut res = Vec::new();
    for tau in [DualFastTau::First, DualFastTau::Previous] {
        for space in [MixSpace::Eps, MixSpace::X0] {
            for schedule in [CSchedule::Linear, CSchedule::Constant] {
                res.push(DualFast { tau, c_max, schedule, space });
            }
        }
    }
    res
}

/// DualFast with c_max = 0 is bit-identical to its host for every solver and option, through
/// the public f32 interface; with c_max ≠ 0 it changes the result.
#[test]
fn dualfast_off_is_bit_identical_to_the_host() {
    let mut model = Gaussian::new(0.1);
    for grid in [lambda_grid(7), ddpm().sampling_grid(6).unwrap()] {
        let start: Vec<f32> = model.start(&grid[0]).iter().map(|&v| v as f32).collect();
        for solver in Solver::ALL {
            let host = sample(&mut model, &grid, &SamplerConfig::new(solver), start.clone()).unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
            for (off, on) in all_dualfast(0.0).into_iter().zip(all_dualfast(0.2)) {
                let config = SamplerConfig { solver, dualfast: Some(off), clip_x0: None };
                let got = sample(&mut model, &grid, &config, start.clone()).unwrap();
                assert_eq!(bits(&got), bits(&host), "{solver} {off:?}");
                let config = SamplerConfig { solver, dualfast: Some(on), clip_x0: None };
                let got = sample(&mut model, &grid, &config, start.clone()).unwrap();
                assert_ne!(bits(&got), bits(&host), "{solver} {on:?}");
            }
        }
    }
}

const NFES: [usize; 5] = [8, 16, 32, 64, 128];

/// The max abs error at the end of the λ grid for each NFE of [`NFES`].
fn errors(plan: Plan, dualfast: Option<DualFast>) -> Vec<f64> {
    let mut model = Gaussian::new(0.0);
    NFES.iter()
        .map(|&nfe| {
            let grid = lambda_grid(nfe);
            let got = run(&mut model, &grid, plan, dualfast);
            let exact = model.exact(&model.start(&grid[0]), &grid[0], &grid[nfe]);
            got.iter().zip(&exact).map(|(g, e)| (g - e).abs()).fold(0.0, f64::max)
        })
        .collect()
}

fn show(errors: &[f64]) -> String {
    errors.iter().map(|e| format!("{e:.2e}")).collect::<Vec<_>>().join(" ")
}

/// The least-squares slope of ln(error) against ln(NFE) over the given NFE indices.
fn slope(errors: &[f64], range: std::ops::Range<usize>) -> f64 {
    let points: Vec<(f64, f64)> = range.map(|i| ((NFES[i] as f64).ln(), errors[i].ln())).collect();
    let n = points.len() as f64;
    let (mx, my) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let cov: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let var: f64 = points.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    cov / var
}

/// Measures a solver's convergence and checks its slope over all NFEs and over the last three
/// (the asymptotic part), and its error at NFE 128.
#[track_caller]
fn check_order(name: &str, plan: Plan, dualfast: Option<DualFast>, slopes: [(f64, f64); 2], max_err_128: f64) {
    let errors = errors(plan, dualfast);
    let (all, tail) = (slope(&errors, 0..NFES.len()), slope(&errors, 2..NFES.len()));
    eprintln!("{name:<28} slope {all:+.2} (tail {tail:+.2})  errors {}", show(&errors));
    assert!(slopes[0].0 <= all && all <= slopes[0].1, "{name}: slope {all} outside {:?}", slopes[0]);
    assert!(slopes[1].0 <= tail && tail <= slopes[1].1, "{name}: tail slope {tail} outside {:?}", slopes[1]);
    assert!(errors[NFES.len() - 1] < max_err_128, "{name}: error {} at NFE 128", errors[NFES.len() - 1]);
}

/// Convergence orders on exact Gaussian ε, with `lower_order_final` off so that the solvers'
/// own orders show. Measured (slope over NFE 8..128, tail over 32..128, error at 128):
/// DDIM −0.96/−0.98/3.9e-2, 2M −1.73/−1.98/5.7e-4, 3M −2.49/−2.11/2.0e-4,
/// UniPC-bh2 −2.85/−2.98/4.6e-5, UniPC-bh1 −3.11/−3.06/8.4e-5.
#[test]
fn solvers_converge_at_their_order() {
    let bh1 = Solver::UniPc(UniPcVariant::Bh1);
    let bh2 = Solver::UniPc(UniPcVariant::Bh2);
    check_order("ddim", plan(Solver::Ddim, false), None, [(-1.3, -0.7), (-1.3, -0.7)], 0.05);
    check_order("dpmpp2m", plan(Solver::DpmSolverPP2M, false), None, [(-2.3, -1.6), (-2.3, -1.7)], 1e-3);
    // diffusers' third-order update is only second order: its D2 = (D1_0 − D1_1)/(r0 + r1) estimates
    // h²·m''/2 while the φ₃ term it multiplies needs h²·m''. The step is exact for linear x₀
    // trajectories but not for quadratic ones, so the local error is O(h³), not O(h⁴). With D2
    // doubled the tail slope measured −3.25 and the NFE-128 error 7e-6. We keep diffusers' formula
    // (models tuned on diffusers sample the same) and assert its true order; it still beats 2M.
    check_order("dpmpp3m", plan(Solver::DpmSolverPP3M, false), None, [(-2.8, -2.0), (-2.4, -1.8)], 5e-4);
    // UniC raises the order-2 predictor to order 3.
    check_order("unipc-bh2", plan(bh2, false), None, [(-3.3, -2.6), (-3.3, -2.7)], 1e-4);
    check_order("unipc-bh1", plan(bh1, false), None, [(-3.4, -2.7), (-3.4, -2.7)], 2e-4);
    let predictor = Plan { method: Method::UniPc { variant: UniPcVariant::Bh2, corrector: false }, ..plan(bh2, false) };
    check_order("unipc-bh2 no corrector", predictor, None, [(-2.3, -1.6), (-2.3, -1.7)], 1e-3);
    // With the defaults UniPC's last step is a first-order predictor with no corrector after it,
    // which caps the order at the end point (σ > 0 here) to 2: tail −2.28 (bh2), −2.84 (bh1).
    check_order("unipc (defaults)", Plan::of(bh2), None, [(-2.8, -2.0), (-2.6, -1.8)], 2e-4);
    check_order("unipc-bh1 (defaults)", Plan::of(bh1), None, [(-3.3, -2.4), (-3.3, -1.8)], 2e-4);
    check_order("dpmpp2m (defaults)", Plan::of(Solver::DpmSolverPP2M), None, [(-2.3, -1.6), (-2.3, -1.7)], 1e-3);
}

/// DualFast (default c_max 0.15) on the exact model, where it can only add error.
///
/// τ = previous: the extra term c·(pred_i − pred_{i−1}) is O(h), so the sampler still converges,
/// but at first order whatever the host (slopes −0.9 to −1.6, errors about 1e-2 at NFE 128).
/// τ = first: the term tends to c_max·(pred − pred_T), which does not vanish, so the result is
/// biased: errors level off near 0.18–0.24 in ε-space and 1.1–1.4 in x₀-space (where they even
/// grow with NFE for DDIM, since more steps are taken at a large c).
#[test]
fn dualfast_convergence_on_the_exact_model() {
    for solver in Solver::ALL {
        let host = errors(Plan::of(solver), None);
        for options in all_dualfast(DualFast::default().c_max) {
            let errors = errors(Plan::of(solver), Some(options));
            let name = format!("{solver} {} {} {}", options.tau, options.space, options.schedule);
            let slope = slope(&errors, 0..NFES.len());
            eprintln!("{name:<32} slope {slope:+.2}  errors {}", show(&errors));
            let last = errors[NFES.len() - 1];
            match options.tau {
                DualFastTau::Previous => {
                    assert!(errors.windows(2).all(|w| w[1] < w[0]), "{name}: errors must fall: {errors:?}");
                    assert!((-1.7..=-0.8).contains(&slope), "{name}: slope {slope}");
                    assert!(last < 0.05, "{name}: {last}");
                }
                DualFastTau::First => {
                    assert!(last > 0.09 && last > 2.0 * host[NFES.len() - 1], "{name}: no bias? {errors:?}");
                }
            }
        }
    }
}

/// The model that breaks at evaluation `at` (NaN) or returns a wrong length.
struct Broken {
    calls: usize,
    at: usize,
    wrong_length: bool,
}

impl EpsModel for Broken {
    fn predict_eps(&mut self, x: &[f32], _: &TimePoint) -> Result<Vec<f32>> {
        self.calls += 1;
        match self.calls - 1 {
            i if i == self.at && self.wrong_length => Ok(vec![0.0; x.len() + 1]),
            i if i == self.at => Ok(vec![f32::NAN; x.len()]),
            _ => Ok(vec![0.5; x.len()]),
        }
    }
}

#[track_caller]
fn check_error(grid: &[TimePoint], config: SamplerConfig, x: Vec<f32>, model: &mut Broken, expect: &str) {
    let err = sample(model, grid, &config, x).unwrap_err();
    assert!(err.to_string().contains(expect), "{err} does not mention {expect:?}");
}

#[test]
fn bad_grids_models_and_options_are_errors() {
    let grid = ddpm().sampling_grid(5).unwrap();
    let config = SamplerConfig::new(Solver::DpmSolverPP2M);
    let fine = || Broken { calls: 0, at: usize::MAX, wrong_length: false };
    check_error(&grid[..1], config, vec![0.0; 4], &mut fine(), "at least 2 points");
    check_error(&[], config, vec![0.0; 4], &mut fine(), "at least 2 points");
    let mut reversed = grid[..5].to_vec();
    reversed.reverse();
    check_error(&reversed, config, vec![0.0; 4], &mut fine(), "not less noisy");
    let clean_inside = [grid[0], TimePoint::CLEAN, grid[4]];
    check_error(&clean_inside, config, vec![0.0; 4], &mut fine(), "grid point 1");
    let repeated = [grid[0], grid[1], grid[1]];
    check_error(&repeated, config, vec![0.0; 4], &mut fine(), "not less noisy");
    check_error(&grid, config, vec![0.0, f32::NAN], &mut fine(), "starting sample");
    let nan_c = SamplerConfig { dualfast: Some(DualFast { c_max: f64::NAN, ..DualFast::default() }), ..config };
    check_error(&grid, nan_c, vec![0.0; 4], &mut fine(), "c_max");
    let bad_clip = SamplerConfig { clip_x0: Some(0.0), ..config };
    check_error(&grid, bad_clip, vec![0.0; 4], &mut fine(), "clip_x0");
    for solver in Solver::ALL {
        let mut nan_at_2 = Broken { calls: 0, at: 2, wrong_length: false };
        check_error(&grid, SamplerConfig::new(solver), vec![0.0; 4], &mut nan_at_2, "non-finite value at step 2");
        let mut long_at_1 = Broken { calls: 0, at: 1, wrong_length: true };
        check_error(
            &grid,
            SamplerConfig::new(solver),
            vec![0.0; 4],
            &mut long_at_1,
            "5 values for a batch of 4 at step 1",
        );
    }
    assert!(matches!(sample(&mut fine(), &grid[..1], &config, vec![0.0]), Err(Error::InvalidInput(_))));
    // One step straight to σ = 0 is fine: the x₀ prediction of a constant ε.
    let one = ddpm().sampling_grid(1).unwrap();
    let x = sample(&mut fine(), &one, &config, vec![1.0; 2]).unwrap();
    let p = one[0];
    assert!((f64::from(x[0]) - (1.0 - p.sigma * 0.5) / p.alpha).abs() < 1e-3);
}

/// Clipping bounds every x₀ prediction: a model whose ε is far off at the noisiest point (where
/// 1/α is about 2e4 on the cosine schedule) still ends inside the data range, and without the clip
/// the same run leaves it.
#[test]
fn clipping_keeps_every_x0_prediction_in_the_data_range() {
    let cosine = NoiseSchedule::new(BetaSchedule::Cosine { s: 0.008 }, 1000).unwrap();
    let grid = cosine.sampling_grid(6).unwrap();
    for solver in Solver::ALL {
        let run = |clip_x0| {
            let mut off = Broken { calls: 0, at: usize::MAX, wrong_length: false };
            sample(
                &mut off,
                &grid,
                &SamplerConfig { clip_x0, ..SamplerConfig::new(solver) },
                vec![0.3, -0.2, 1.5, -2.0],
            )
            .unwrap()
        };
        let clipped = run(Some(1.0));
        assert!(clipped.iter().all(|v| v.abs() <= 1.0 + 1e-6), "{solver}: {clipped:?}");
        assert!(run(None).iter().any(|v| v.abs() > 1.0), "{solver}: the unclipped run stays in range");
    }
}
