//! What a caller chooses about sampling: the solver and the optional DualFast mixing, with the
//! short names the HTTP layer parses and prints.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// The multistep ODE solver. All of them are data-prediction (x₀) solvers in λ, as in diffusers,
/// and all spend one model evaluation per grid interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Solver {
    /// DDIM (η = 0), the first-order solver: DPM-Solver++ of order 1.
    Ddim,
    /// DPM-Solver++(2M), midpoint form, diffusers' default.
    DpmSolverPP2M,
    /// DPM-Solver++(3M).
    DpmSolverPP3M,
    /// UniPC of order 2: a DPM-Solver++-like predictor plus the UniC corrector, at no extra cost.
    UniPc(UniPcVariant),
}

/// UniPC's choice of B(h), which sets the corrector's coefficients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UniPcVariant {
    /// B(h) = h: the UniPC authors recommend it for unconditional sampling under 10 steps.
    Bh1,
    /// B(h) = e^h − 1: diffusers' default, and the one for guided sampling.
    Bh2,
}

/// DualFast, a reconstruction (the paper's rule is not published in a form we could verify; see
/// `DIFFUSION-METHODS.md`): at model evaluation i the host solver receives
/// pred̃_i = (1 + c_i)·pred_i − c_i·pred_τ instead of pred_i, where pred_τ is a cached prediction
/// from a noisier point. It costs no extra model evaluation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DualFast {
    /// Which cached prediction to extrapolate away from.
    pub tau: DualFastTau,
    /// The largest c; 0 turns the method off exactly. Negative values are allowed, to test the sign.
    pub c_max: f64,
    /// How c grows over the evaluations.
    pub schedule: CSchedule,
    /// Whether the mix acts on ε or on the x₀ predictions.
    pub space: MixSpace,
}

/// Where DualFast's reference prediction pred_τ comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DualFastTau {
    /// The prediction of the first evaluation (τ = T), the one closest to "pure noise in, mean out".
    First,
    /// The raw (unmixed) prediction of the evaluation just before.
    Previous,
}

/// How DualFast's c_i grows over the model evaluations i = 0..NFE. c_0 is always 0 because
/// there is nothing cached to mix with yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CSchedule {
    /// c_i = c_max·i/(NFE − 1): 0 at the first evaluation, c_max at the last.
    Linear,
    /// c_i = c_max at every evaluation after the first.
    Constant,
}

/// The quantity DualFast mixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MixSpace {
    /// Mix the raw ε predictions, then convert with the current point's α and σ.
    Eps,
    /// Mix the x₀ predictions, each converted at its own point.
    X0,
}

/// Everything [`sample`](super::sample) needs besides the model, the grid and the start.
///
/// The order is lowered near the end as diffusers does with `lower_order_final=True`: every
/// solver's last step is first order when it lands on σ = 0, DPM-Solver++ drops to first order
/// (3M: second, then first) over its last steps under 15 evaluations, and UniPC caps its order at
/// the number of steps left.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplerConfig {
    /// The ODE solver.
    pub solver: Solver,
    /// DualFast mixing on top of the solver, if any.
    pub dualfast: Option<DualFast>,
    /// Clips every x₀ prediction (after DualFast's mixing) to [−r, r], DDPM's `clip_sample`: data
    /// known to lie in that range. Near T a cosine schedule has α ≈ 5e-5, and x₀ = (x − σε)/α
    /// multiplies the network's error by 1/α, so unclipped data-prediction solvers start from
    /// garbage there.
    pub clip_x0: Option<f64>,
}

impl Solver {
    /// Every solver, in the order the names are listed to users.
    pub const ALL: [Solver; 5] = [
        Solver::Ddim,
        Solver::DpmSolverPP2M,
        Solver::DpmSolverPP3M,
        Solver::UniPc(UniPcVariant::Bh2),
        Solver::UniPc(UniPcVariant::Bh1),
    ];

    /// The short name: `ddim`, `dpmpp2m`, `dpmpp3m`, `unipc` (bh2) or `unipc-bh1`.
    pub fn as_str(self) -> &'static str {
        match self {
            Solver::Ddim => "ddim",
            Solver::DpmSolverPP2M => "dpmpp2m",
            Solver::DpmSolverPP3M => "dpmpp3m",
            Solver::UniPc(UniPcVariant::Bh2) => "unipc",
            Solver::UniPc(UniPcVariant::Bh1) => "unipc-bh1",
        }
    }
}

impl DualFastTau {
    /// The short name: `first` or `previous`.
    pub fn as_str(self) -> &'static str {
        match self {
            DualFastTau::First => "first",
            DualFastTau::Previous => "previous",
        }
    }
}

impl CSchedule {
    /// The short name: `linear` or `constant`.
    pub fn as_str(self) -> &'static str {
        match self {
            CSchedule::Linear => "linear",
            CSchedule::Constant => "constant",
        }
    }
}

impl MixSpace {
    /// The short name: `eps` or `x0`.
    pub fn as_str(self) -> &'static str {
        match self {
            MixSpace::Eps => "eps",
            MixSpace::X0 => "x0",
        }
    }
}

impl DualFast {
    /// The options by name, each absent one at its default: how the HTTP route and the command
    /// line read them.
    pub fn from_names(
        tau: Option<&str>,
        c_max: Option<f64>,
        schedule: Option<&str>,
        space: Option<&str>,
    ) -> Result<Self> {
        let d = DualFast::default();
        Ok(DualFast {
            tau: tau.map(str::parse).transpose()?.unwrap_or(d.tau),
            c_max: c_max.unwrap_or(d.c_max),
            schedule: schedule.map(str::parse).transpose()?.unwrap_or(d.schedule),
            space: space.map(str::parse).transpose()?.unwrap_or(d.space),
        })
    }

    /// c at model evaluation `i` of `nfe`.
    pub fn coefficient(&self, i: usize, nfe: usize) -> f64 {
        match self.schedule {
            _ if i == 0 => 0.0,
            CSchedule::Constant => self.c_max,
            CSchedule::Linear => self.c_max * i as f64 / (nfe.max(2) - 1) as f64,
        }
    }
}

impl Default for DualFast {
    /// τ = first, c_max = 0.3, linear, ε-space, chosen on validation samples of `models/mnist-ddpm`
    /// (BENCHMARKS.md, "DualFast's options, on validation"): against the first author's earlier
    /// code's 0.15 (`linspace(0, 0.15, steps)` and a kept `x_T`), 0.3 lowered FID-CNN and the MSE to
    /// the 1000-step reference further at 4, 6 and 10 NFE for DDIM, DPM-Solver++(2M) and UniPC;
    /// τ = previous helped less, and mixing x₀ with τ = first ruined every sample.
    fn default() -> Self {
        DualFast { tau: DualFastTau::First, c_max: 0.3, schedule: CSchedule::Linear, space: MixSpace::Eps }
    }
}

impl SamplerConfig {
    /// The solver alone, without DualFast.
    pub fn new(solver: Solver) -> Self {
        SamplerConfig { solver, dualfast: None, clip_x0: None }
    }
}

/// Parses one of `names` (each paired with its value), naming the alternatives on failure.
fn parse_name<T: Copy>(what: &str, text: &str, names: &[(&str, T)]) -> Result<T> {
    if let Some((_, value)) = names.iter().find(|(name, _)| *name == text) {
        return Ok(*value);
    }
    let choices: Vec<&str> = names.iter().map(|(name, _)| *name).collect();
    Err(Error::InvalidInput(format!("{text:?} is not a {what}: one of {}", choices.join(", "))))
}

impl FromStr for Solver {
    type Err = Error;
    fn from_str(text: &str) -> Result<Self> {
        let mut names: Vec<(&str, Solver)> = Solver::ALL.iter().map(|s| (s.as_str(), *s)).collect();
        // Accepted, never printed: the explicit name of the default variant.
        names.push(("unipc-bh2", Solver::UniPc(UniPcVariant::Bh2)));
        parse_name("solver", text, &names)
    }
}

impl FromStr for DualFastTau {
    type Err = Error;
    fn from_str(text: &str) -> Result<Self> {
        parse_name("DualFast tau", text, &[("first", DualFastTau::First), ("previous", DualFastTau::Previous)])
    }
}

impl FromStr for CSchedule {
    type Err = Error;
    fn from_str(text: &str) -> Result<Self> {
        parse_name("DualFast c schedule", text, &[("linear", CSchedule::Linear), ("constant", CSchedule::Constant)])
    }
}

impl FromStr for MixSpace {
    type Err = Error;
    fn from_str(text: &str) -> Result<Self> {
        parse_name("DualFast mixing space", text, &[("eps", MixSpace::Eps), ("x0", MixSpace::X0)])
    }
}

macro_rules! display_as_str {
    ($($ty:ty),*) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}
display_as_str!(Solver, DualFastTau, CSchedule, MixSpace);

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name parses back to the value that prints it.
    #[track_caller]
    fn check_round_trip<T: FromStr<Err = Error> + fmt::Display + PartialEq + fmt::Debug>(values: &[T]) {
        for value in values {
            assert_eq!(&value.to_string().parse::<T>().unwrap(), value);
        }
        assert!(matches!("nonsense".parse::<T>(), Err(Error::InvalidInput(_))));
    }

    #[test]
    fn names_round_trip() {
        check_round_trip(&Solver::ALL);
        check_round_trip(&[DualFastTau::First, DualFastTau::Previous]);
        check_round_trip(&[CSchedule::Linear, CSchedule::Constant]);
        check_round_trip(&[MixSpace::Eps, MixSpace::X0]);
        assert_eq!("unipc-bh2".parse::<Solver>().unwrap(), Solver::UniPc(UniPcVariant::Bh2));
        assert_eq!(Solver::UniPc(UniPcVariant::Bh1).to_string(), "unipc-bh1");
    }

    #[test]
    fn c_schedules_start_at_zero() {
        let linear = DualFast { c_max: 0.3, ..DualFast::default() };
        for (i, expect) in [0.0, 0.1, 0.2, 0.3].into_iter().enumerate() {
            assert!((linear.coefficient(i, 4) - expect).abs() < 1e-15, "{i}");
        }
        assert_eq!(linear.coefficient(0, 1), 0.0);
        let constant = DualFast { schedule: CSchedule::Constant, ..linear };
        let got: Vec<f64> = (0..4).map(|i| constant.coefficient(i, 4)).collect();
        assert_eq!(got, [0.0, 0.3, 0.3, 0.3]);
    }
}
