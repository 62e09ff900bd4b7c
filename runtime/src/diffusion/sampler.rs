//! The sampling loop: integrates the probability-flow ODE along a grid with one model evaluation
//! per step, whatever the solver.
//!
//! The state and the cached predictions are kept in f64 between steps; only the model sees f32.
//! It costs one conversion per evaluation, keeps the update's rounding out of the result, and lets
//! the tests drive the same loop with exact f64 models to measure the solvers' orders.

use super::config::{DualFast, SamplerConfig};
use super::dualfast::{eps_to_x0, Mixer};
use super::schedule::TimePoint;
use super::solver::{History, Method, Plan, Update, MAX_ORDER};
use super::{dpmpp, unipc};
use crate::{Error, Result};

/// The network as the solvers see it: an ε prediction for a whole batch at one time point.
///
/// `x` is the batch flattened (n items × dim floats); the result has the same length.
/// Classifier-free guidance, class labels and the like live inside the implementation.
pub trait EpsModel {
    /// Predicts the noise ε in `x` at `t`.
    fn predict_eps(&mut self, x: &[f32], t: &TimePoint) -> Result<Vec<f32>>;
}

/// Integrates the probability-flow ODE along `grid` and returns x at its last point.
///
/// `grid[0]` is the start and `x` holds the batch there; there is one model evaluation per grid
/// interval (NFE = `grid.len() − 1`). The grid must move toward less noise (λ increasing at
/// every point), with σ > 0 everywhere but possibly at the last point. When the last point has
/// σ = 0 the final step is first order and returns the x₀ prediction, as in diffusers.
pub fn sample(model: &mut dyn EpsModel, grid: &[TimePoint], config: &SamplerConfig, x: Vec<f32>) -> Result<Vec<f32>> {
    let x = x.into_iter().map(f64::from).collect();
    let res = integrate(&mut F32Model(model), grid, Plan::of(config.solver), config.dualfast, config.clip_x0, x)?;
    Ok(res.into_iter().map(|v| v as f32).collect())
}

/// The ε model in the precision the loop works in; tests use exact f64 models through it.
pub(crate) trait Network {
    /// Predicts ε in `x` at `t`.
    fn eps(&mut self, x: &[f64], t: &TimePoint) -> Result<Vec<f64>>;
}

/// An [`EpsModel`] seen as a [`Network`]: rounds the state to f32 for the call.
struct F32Model<'a>(&'a mut dyn EpsModel);

impl Network for F32Model<'_> {
    fn eps(&mut self, x: &[f64], t: &TimePoint) -> Result<Vec<f64>> {
        let input: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        Ok(self.0.predict_eps(&input, t)?.into_iter().map(f64::from).collect())
    }
}

/// The loop behind [`sample`], with the solver as a [`Plan`] so that tests can cap orders or turn
/// UniPC's corrector off.
pub(crate) fn integrate(
    net: &mut dyn Network,
    grid: &[TimePoint],
    plan: Plan,
    dualfast: Option<DualFast>,
    clip_x0: Option<f64>,
    x: Vec<f64>,
) -> Result<Vec<f64>> {
    validate(grid, plan, dualfast, &x)?;
    if clip_x0.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return Err(Error::InvalidInput(format!("clip_x0 must be finite and positive, got {clip_x0:?}")));
    }
    let n = grid.len() - 1;
    let mut mixer = dualfast.map(|options| Mixer::new(options, n));
    let mut history = History::new(plan.order);
    let mut x = x;
    // After each step: the state the step started from, which UniPC's corrector steps from again.
    let mut base = vec![0.0; x.len()];
    let mut prev_order = 0;
    for i in 0..n {
        let (s, t) = (&grid[i], &grid[i + 1]);
        let mut pred = net.eps(&x, s)?;
        check_prediction(&pred, x.len(), i, s)?;
        match &mut mixer {
            Some(mixer) => mixer.x0(i, &x, &mut pred, s),
            None => eps_to_x0(&x, &mut pred, s),
        }
        if let Some(r) = clip_x0 {
            pred.iter_mut().for_each(|p| *p = p.clamp(-r, r));
        }
        if let Method::UniPc { variant, corrector: true } = plan.method {
            if i > 0 {
                // x was predicted from `base` at grid[i − 1]; redo that step with the prediction at
                // its end point. The history keeps the prediction made at the uncorrected x.
                let update = unipc::corrector(variant, prev_order, &history.lambdas(), &grid[i - 1], s)?;
                update.apply(&mut x, &base, &history, Some(&pred));
            }
        }
        history.push(s.lambda(), pred);
        let order = plan.step_order(i, n, t.sigma == 0.0);
        let update = step_update(plan.method, order, &history.lambdas(), s, t)?;
        update.apply(&mut base, &x, &history, None);
        std::mem::swap(&mut x, &mut base);
        prev_order = order;
    }
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(Error::Internal(format!("sampling diverged: element {i} of the result is not finite")));
    }
    Ok(x)
}

/// The solver's step from `s` to `t`.
fn step_update(
    method: Method,
    order: usize,
    lambdas: &[f64; MAX_ORDER],
    s: &TimePoint,
    t: &TimePoint,
) -> Result<Update> {
    match method {
        Method::DpmSolverPP => Ok(dpmpp::update(order, lambdas, s, t)),
        Method::UniPc { variant, .. } => unipc::predictor(variant, order, lambdas, s, t),
    }
}

/// Rejects grids, options and starts the loop cannot integrate, before any model evaluation.
fn validate(grid: &[TimePoint], plan: Plan, dualfast: Option<DualFast>, x: &[f64]) -> Result<()> {
    if grid.len() < 2 {
        return Err(Error::InvalidInput(format!("a sampling grid needs at least 2 points, got {}", grid.len())));
    }
    if !(1..=MAX_ORDER).contains(&plan.order) {
        return Err(Error::InvalidInput(format!("solver order {} is not between 1 and {MAX_ORDER}", plan.order)));
    }
    let last = grid.len() - 1;
    for (i, point) in grid.iter().enumerate() {
        let sigma_ok = point.sigma > 0.0 || (i == last && point.sigma == 0.0);
        if !(point.t.is_finite() && point.alpha.is_finite() && point.alpha > 0.0 && point.sigma.is_finite() && sigma_ok)
        {
            return Err(Error::InvalidInput(format!(
                "grid point {i} {point:?} is unusable: alpha must be finite and > 0, sigma finite and > 0 \
                 (0 is allowed at the last point only)"
            )));
        }
        if i > 0 && point.lambda() <= grid[i - 1].lambda() {
            return Err(Error::InvalidInput(format!(
                "grid point {i} (sigma {}, alpha {}) is not less noisy than point {} (sigma {}, alpha {}): \
                 the grid must run toward less noise",
                point.sigma,
                point.alpha,
                i - 1,
                grid[i - 1].sigma,
                grid[i - 1].alpha
            )));
        }
    }
    if let Some(options) = dualfast {
        if !options.c_max.is_finite() {
            return Err(Error::InvalidInput(format!("DualFast c_max must be finite, got {}", options.c_max)));
        }
    }
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(Error::InvalidInput(format!("the starting sample holds a non-finite value at element {i}")));
    }
    Ok(())
}

/// A model output must match the state's length and be finite: a NaN would otherwise spread
/// silently through every later step. Both failures are the model's, hence `Internal`.
fn check_prediction(pred: &[f64], len: usize, step: usize, point: &TimePoint) -> Result<()> {
    if pred.len() != len {
        return Err(Error::Internal(format!(
            "the model returned {} values for a batch of {len} at step {step} (t = {})",
            pred.len(),
            point.t
        )));
    }
    if let Some(i) = pred.iter().position(|v| !v.is_finite()) {
        return Err(Error::Internal(format!(
            "the model returned a non-finite value at step {step} (t = {}), element {i}",
            point.t
        )));
    }
    Ok(())
}
