//! The machinery every multistep solver shares: a step written as a linear combination of the
//! state and the cached x₀ predictions, the history of those predictions, and the rules that
//! choose each step's order.
//!
//! Writing every update as `x_next = a·x + Σ_k b_k·m_k` keeps the per-element work to a few
//! fused passes over the batch whatever the solver: the solver-specific modules only compute the
//! handful of f64 coefficients.

use std::collections::VecDeque;

use super::config::{Solver, UniPcVariant};

/// The highest order any solver here uses.
pub(crate) const MAX_ORDER: usize = 3;

/// One solver update: `x_next = x·base + Σ_k history[k]·m_k + current·m_t`, where m_0 is the
/// newest cached x₀ prediction, and m_t the one just computed (UniPC's corrector only).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Update {
    /// The coefficient of the base state.
    pub x: f64,
    /// The coefficients of the cached predictions, newest first; unused entries are 0.
    pub history: [f64; MAX_ORDER],
    /// The coefficient of the prediction at the step's end point (the corrector's m_t).
    pub current: f64,
}

/// The last x₀ predictions and the λ at which each was made, newest first.
#[derive(Debug)]
pub(crate) struct History {
    entries: VecDeque<(f64, Vec<f64>)>,
    capacity: usize,
}

/// The solver as the integration loop runs it: the public [`Solver`] plus the knobs the tests
/// turn (order caps, the corrector, lowering the order at the end).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Plan {
    pub method: Method,
    /// The order once warmed up.
    pub order: usize,
    /// diffusers' `lower_order_final`.
    pub lower_order_final: bool,
}

/// The two solver families.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Method {
    /// DPM-Solver++ multistep; order 1 is DDIM.
    DpmSolverPP,
    /// UniPC's predictor, with or without its corrector.
    UniPc { variant: UniPcVariant, corrector: bool },
}

impl Update {
    /// An update with only the base term.
    pub fn new(x: f64) -> Update {
        Update { x, history: [0.0; MAX_ORDER], current: 0.0 }
    }

    /// Writes the combination into `out`. `current` is read only when given.
    pub fn apply(&self, out: &mut [f64], base: &[f64], history: &History, current: Option<&[f64]>) {
        for (o, b) in out.iter_mut().zip(base) {
            *o = self.x * b;
        }
        for (k, &coef) in self.history.iter().enumerate().take(history.len()) {
            if coef != 0.0 {
                axpy(out, coef, history.pred(k));
            }
        }
        if let Some(m) = current {
            axpy(out, self.current, m);
        }
    }
}

/// out += a·m.
fn axpy(out: &mut [f64], a: f64, m: &[f64]) {
    for (o, v) in out.iter_mut().zip(m) {
        *o += a * v;
    }
}

impl History {
    /// An empty history keeping the last `capacity` predictions.
    pub fn new(capacity: usize) -> History {
        History { entries: VecDeque::with_capacity(capacity + 1), capacity }
    }

    /// Adds the newest prediction, made at `lambda`, dropping the oldest beyond capacity.
    pub fn push(&mut self, lambda: f64, pred: Vec<f64>) {
        self.entries.push_front((lambda, pred));
        self.entries.truncate(self.capacity);
    }

    /// How many predictions are cached.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The λ values, newest first.
    pub fn lambdas(&self) -> [f64; MAX_ORDER] {
        let mut lambdas = [f64::NAN; MAX_ORDER];
        for (slot, (lambda, _)) in lambdas.iter_mut().zip(&self.entries) {
            *slot = *lambda;
        }
        lambdas
    }

    /// The k-th newest prediction.
    pub fn pred(&self, k: usize) -> &[f64] {
        &self.entries[k].1
    }
}

impl Plan {
    /// How `sample` runs a public solver: diffusers' defaults (order 2 for UniPC, corrector on,
    /// `lower_order_final` on).
    pub fn of(solver: Solver) -> Plan {
        let (method, order) = match solver {
            Solver::Ddim => (Method::DpmSolverPP, 1),
            Solver::DpmSolverPP2M => (Method::DpmSolverPP, 2),
            Solver::DpmSolverPP3M => (Method::DpmSolverPP, 3),
            Solver::UniPc(variant) => (Method::UniPc { variant, corrector: true }, 2),
        };
        Plan { method, order, lower_order_final: true }
    }

    /// The order of step `i` (0-based) of `n`, `to_clean` when it lands on σ = 0.
    ///
    /// Multistep solvers warm up (step i has at most i + 1 predictions to difference). diffusers
    /// then lowers the order at the end: DPM-Solver++ only under 15 steps, UniPC always. A step
    /// onto σ = 0 is first order in every case: h is infinite there, so the higher-order terms
    /// would divide by it, and the first-order step returns the x₀ prediction itself.
    pub fn step_order(&self, i: usize, n: usize, to_clean: bool) -> usize {
        let warm = self.order.min(i + 1);
        if to_clean && i + 1 == n {
            return 1;
        }
        if !self.lower_order_final {
            return warm;
        }
        match self.method {
            Method::DpmSolverPP if n < 15 && i + 1 == n => 1,
            Method::DpmSolverPP if n < 15 && i + 2 == n => warm.min(2),
            Method::DpmSolverPP => warm,
            Method::UniPc { .. } => warm.min(n - i),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks the orders of all `n` steps of `plan`.
    #[track_caller]
    fn check_orders(plan: Plan, n: usize, to_clean: bool, expect: &[usize]) {
        let got: Vec<usize> = (0..n).map(|i| plan.step_order(i, n, to_clean)).collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn orders_warm_up_and_drop_at_the_end_as_in_diffusers() {
        let dpm3 = Plan::of(Solver::DpmSolverPP3M);
        check_orders(dpm3, 6, false, &[1, 2, 3, 3, 2, 1]);
        check_orders(dpm3, 6, true, &[1, 2, 3, 3, 2, 1]);
        let long: Vec<usize> = [1, 2].into_iter().chain(std::iter::repeat_n(3, 14)).collect();
        check_orders(dpm3, 16, false, &long);
        let mut long_clean = long.clone();
        *long_clean.last_mut().unwrap() = 1;
        check_orders(dpm3, 16, true, &long_clean);
        check_orders(Plan { lower_order_final: false, ..dpm3 }, 5, false, &[1, 2, 3, 3, 3]);
        check_orders(Plan::of(Solver::DpmSolverPP2M), 4, false, &[1, 2, 2, 1]);
        check_orders(Plan::of(Solver::Ddim), 3, true, &[1, 1, 1]);
        let unipc = Plan::of(Solver::UniPc(UniPcVariant::Bh2));
        check_orders(unipc, 20, false, &[&[1][..], &[2; 18], &[1]].concat());
        check_orders(Plan { lower_order_final: false, ..unipc }, 4, false, &[1, 2, 2, 2]);
        check_orders(Plan { lower_order_final: false, ..unipc }, 4, true, &[1, 2, 2, 1]);
    }

    #[test]
    fn history_keeps_the_newest_first() {
        let mut history = History::new(2);
        for k in 0..4 {
            history.push(k as f64, vec![k as f64]);
        }
        assert_eq!(history.len(), 2);
        assert_eq!(history.lambdas()[..2], [3.0, 2.0]);
        assert_eq!(history.pred(1), [2.0]);
    }
}
