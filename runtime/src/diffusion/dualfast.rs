//! DualFast's mixing (a reconstruction, see [`DualFast`]): turns each raw model prediction into
//! the x₀ prediction the host solver receives, extrapolating away from a cached noisier one.

use super::config::{DualFast, DualFastTau, MixSpace};
use super::schedule::TimePoint;

/// Converts an ε prediction at `point` for state `x` into the x₀ prediction, in place:
/// x₀ = (x − σ·ε)/α. The plain and the DualFast paths share it so that c = 0 stays bit-identical.
pub(crate) fn eps_to_x0(x: &[f64], pred: &mut [f64], point: &TimePoint) {
    for (p, &x) in pred.iter_mut().zip(x) {
        *p = (x - point.sigma * *p) / point.alpha;
    }
}

/// The mixing state over one sampling run.
#[derive(Debug)]
pub(crate) struct Mixer {
    options: DualFast,
    nfe: usize,
    /// pred_τ: the raw prediction (ε or x₀ by `options.space`) of the reference evaluation.
    cached: Vec<f64>,
    /// The raw prediction of the current evaluation, kept when it becomes the next pred_τ.
    scratch: Vec<f64>,
}

impl Mixer {
    /// The mixer of a run of `nfe` model evaluations.
    pub fn new(options: DualFast, nfe: usize) -> Mixer {
        Mixer { options, nfe, cached: Vec::new(), scratch: Vec::new() }
    }

    /// Turns the raw ε of evaluation `i`, made at `point` for state `x`, into the x₀ prediction the
    /// host solver uses: (1 + c_i)·pred_i − c_i·pred_τ, mixed in ε or in x₀.
    pub fn x0(&mut self, i: usize, x: &[f64], pred: &mut [f64], point: &TimePoint) {
        let c = self.options.coefficient(i, self.nfe);
        let keep = match self.options.tau {
            DualFastTau::First => i == 0,
            DualFastTau::Previous => true,
        };
        if self.options.space == MixSpace::X0 {
            eps_to_x0(x, pred, point);
        }
        if keep {
            self.scratch.clear();
            self.scratch.extend_from_slice(pred);
        }
        // c = 0 skips the arithmetic altogether, which is what makes c_max = 0 bit-identical to the
        // host (1·p − 0·q is p, but −0·∞ would not be).
        if c != 0.0 && self.cached.len() == pred.len() {
            for (p, &q) in pred.iter_mut().zip(&self.cached) {
                *p = (1.0 + c) * *p - c * q;
            }
        }
        if self.options.space == MixSpace::Eps {
            eps_to_x0(x, pred, point);
        }
        if keep {
            std::mem::swap(&mut self.cached, &mut self.scratch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::config::CSchedule;

    /// Feeds three evaluations of constant ε values through a mixer and checks the x₀ outputs.
    #[track_caller]
    fn check(options: DualFast, expect: [f64; 3]) {
        let mut mixer = Mixer::new(options, 3);
        let points = [0.0, 1.0, 2.0].map(|lambda| TimePoint::vp_from_lambda(lambda, 0.0));
        let (x, eps) = ([1.0, 2.0, 4.0], [0.5, 0.25, -1.0]);
        for i in 0..3 {
            let mut pred = [eps[i]];
            mixer.x0(i, &[x[i]], &mut pred, &points[i]);
            assert!((pred[0] - expect[i]).abs() < 1e-14, "step {i}: {} vs {}", pred[0], expect[i]);
        }
    }

    #[test]
    fn mixing_follows_the_formula_in_both_spaces_and_for_both_references() {
        let p = [0.0, 1.0, 2.0].map(|lambda| TimePoint::vp_from_lambda(lambda, 0.0));
        let x0 = |x: f64, eps: f64, p: &TimePoint| (x - p.sigma * eps) / p.alpha;
        let (m0, m1, m2) = (x0(1.0, 0.5, &p[0]), x0(2.0, 0.25, &p[1]), x0(4.0, -1.0, &p[2]));
        // Linear over 3 evaluations with c_max = 0.4: c = 0, 0.2, 0.4.
        let base = DualFast { tau: DualFastTau::First, c_max: 0.4, schedule: CSchedule::Linear, space: MixSpace::Eps };
        check(base, [m0, x0(2.0, 1.2 * 0.25 - 0.2 * 0.5, &p[1]), x0(4.0, -1.4 - 0.4 * 0.5, &p[2])]);
        check(
            DualFast { tau: DualFastTau::Previous, ..base },
            [m0, x0(2.0, 1.2 * 0.25 - 0.2 * 0.5, &p[1]), x0(4.0, -1.4 - 0.4 * 0.25, &p[2])],
        );
        check(DualFast { space: MixSpace::X0, ..base }, [m0, 1.2 * m1 - 0.2 * m0, 1.4 * m2 - 0.4 * m0]);
        check(
            DualFast { space: MixSpace::X0, tau: DualFastTau::Previous, ..base },
            [m0, 1.2 * m1 - 0.2 * m0, 1.4 * m2 - 0.4 * m1],
        );
    }
}
