//! The settings of a consistency-model run: iCT from scratch or consistency distillation (CD)
//! from a DDPM teacher bundle.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::json;

use crate::families::image_generation::GenerationRun;
use crate::trainer::LoopSettings;
use crate::{Error, Result};

/// How the student learns.
#[derive(Debug, Clone, PartialEq)]
pub enum ConsistencyMethod {
    /// Improved consistency training (Song & Dhariwal 2024): no teacher; pairs of noise levels on
    /// iCT's doubling curriculum, the target being the student itself without gradient.
    Ict {
        /// The curriculum's first grid size minus one (10 in iCT).
        s0: usize,
        /// Its last (1280 in iCT).
        s1: usize,
    },
    /// Consistency distillation: the target is the student at the point one DDIM step of the
    /// (guided) teacher reaches from the noisier point.
    Cd {
        /// The `diffusion` bundle to distill.
        teacher: PathBuf,
        /// Points of the fixed Karras σ grid the teacher steps between.
        grid: usize,
        /// The teacher's classifier-free guidance scale, baked into the student.
        guidance: f64,
    },
}

/// What the student's UNet predicts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StudentParametrization {
    /// A raw network inside Song et al.'s scalings (the runtime's `edm`).
    Edm,
    /// ε on the teacher's VP schedule, blended into x̂₀ with timestep scaling k (the runtime's
    /// `from_eps`; CD only): a student initialised from the teacher starts as its one-step denoiser.
    FromTeacherEps {
        /// k of the boundary scalings.
        timestep_scaling: f64,
    },
}

impl ConsistencyMethod {
    /// The recipe name in provenance.
    pub fn name(&self) -> &'static str {
        match self {
            ConsistencyMethod::Ict { .. } => "ict",
            ConsistencyMethod::Cd { .. } => "cd",
        }
    }
}

/// Everything a consistency run is made of.
#[derive(Debug, Clone)]
pub struct ConsistencyConfig {
    /// The settings every image-generation run shares; `run.arch` is the network F.
    pub run: GenerationRun,
    /// iCT or CD.
    pub method: ConsistencyMethod,
    /// The σ range and the data scale of the parametrization.
    pub sigma_min: f64,
    /// Largest σ.
    pub sigma_max: f64,
    /// σ_data of the parametrization.
    pub sigma_data: f64,
    /// iCT's lognormal noise-level distribution: mean and deviation of ln σ.
    pub p_mean: f64,
    /// See `p_mean`.
    pub p_std: f64,
    /// Candidate intermediate σ for two-step sampling, chosen at export by validation.
    pub sigma_mid_candidates: Vec<f64>,
    /// Start from the teacher's weights (CD only; the architectures must match).
    pub init_from_teacher: bool,
    /// Continue from a trained `consistency` bundle of the same architecture and parametrization
    /// (a warm restart: the optimiser and its schedule start afresh, the weights do not).
    pub init_from: Option<PathBuf>,
    /// What the student's UNet predicts.
    pub parametrization: StudentParametrization,
}

impl ConsistencyConfig {
    /// A run with the σ range, σ_data and noise-level distribution of Karras et al. and iCT
    /// (σ ∈ [0.002, 80], σ_data 0.5, ln σ ~ N(−1.1, 2²)), the default σ candidates of two-step
    /// sampling, and a freshly initialised student.
    pub fn new(run: GenerationRun, method: ConsistencyMethod) -> ConsistencyConfig {
        ConsistencyConfig {
            run,
            method,
            sigma_min: 0.002,
            sigma_max: 80.0,
            sigma_data: 0.5,
            p_mean: -1.1,
            p_std: 2.0,
            sigma_mid_candidates: vec![0.2, 0.4, 0.8, 1.6, 3.2],
            init_from_teacher: false,
            init_from: None,
            parametrization: StudentParametrization::Edm,
        }
    }

    /// Refuses settings that cannot train.
    pub fn validate(&self) -> Result<()> {
        let (lo, hi, sd) = (self.sigma_min, self.sigma_max, self.sigma_data);
        if !(lo > 0.0 && lo < hi && hi.is_finite() && sd > 0.0 && sd.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "need 0 < sigma_min < sigma_max and sigma_data > 0, got {lo}, {hi}, {sd}"
            )));
        }
        if self.sigma_mid_candidates.iter().any(|s| !(*s > lo && *s < hi)) || self.sigma_mid_candidates.is_empty() {
            return Err(Error::InvalidArgument(format!("sigma-mid candidates must lie in ({lo}, {hi})")));
        }
        if self.init_from_teacher && self.init_from.is_some() {
            return Err(Error::InvalidArgument("give --init-from-teacher or --init-from, not both".into()));
        }
        if let StudentParametrization::FromTeacherEps { timestep_scaling } = self.parametrization {
            if !matches!(self.method, ConsistencyMethod::Cd { .. }) {
                return Err(Error::InvalidArgument(
                    "the from-eps parametrization takes a CD teacher's schedule".into(),
                ));
            }
            if !(timestep_scaling.is_finite() && timestep_scaling > 0.0) {
                return Err(Error::InvalidArgument(format!(
                    "--timestep-scaling must be finite and positive, got {timestep_scaling}"
                )));
            }
        }
        match &self.method {
            ConsistencyMethod::Ict { s0, s1 } if *s0 == 0 || s1 < s0 => {
                Err(Error::InvalidArgument(format!("iCT needs 0 < s0 <= s1, got {s0} and {s1}")))
            }
            ConsistencyMethod::Cd { grid, guidance, .. }
                if *grid < 2 || !(guidance.is_finite() && *guidance >= 0.0) =>
            {
                Err(Error::InvalidArgument(format!(
                    "CD needs a grid of at least 2 points and guidance >= 0, got {grid}, {guidance}"
                )))
            }
            _ => self.run.validate(),
        }
    }

    /// The hyperparameters recorded in the bundle's provenance.
    pub fn hyperparameters(&self) -> BTreeMap<String, serde_json::Value> {
        let mut h = self.run.hyperparameters();
        h.extend([
            ("sigma_min".into(), json!(self.sigma_min)),
            ("sigma_max".into(), json!(self.sigma_max)),
            ("sigma_data".into(), json!(self.sigma_data)),
            ("p_mean".into(), json!(self.p_mean)),
            ("p_std".into(), json!(self.p_std)),
            ("sigma_mid_candidates".into(), json!(self.sigma_mid_candidates)),
            ("init_from_teacher".into(), json!(self.init_from_teacher)),
        ]);
        match self.parametrization {
            StudentParametrization::Edm => {
                h.insert("parametrization".into(), json!("edm"));
            }
            StudentParametrization::FromTeacherEps { timestep_scaling } => {
                h.insert("parametrization".into(), json!("from_eps"));
                h.insert("timestep_scaling".into(), json!(timestep_scaling));
            }
        }
        match &self.method {
            ConsistencyMethod::Ict { s0, s1 } => {
                h.insert("s0".into(), json!(s0));
                h.insert("s1".into(), json!(s1));
            }
            ConsistencyMethod::Cd { grid, guidance, .. } => {
                h.insert("cd_grid".into(), json!(grid));
                h.insert("teacher_guidance".into(), json!(guidance));
            }
        }
        h
    }

    /// What the shared loop needs.
    pub fn loop_settings(&self) -> LoopSettings {
        self.run.loop_settings(self.fingerprint())
    }

    fn fingerprint(&self) -> String {
        let text = format!(
            "consistency|{}|{:?}|{}|{:?}|{:?}",
            self.run.arch_json(),
            self.hyperparameters(),
            self.run.dataset,
            self.method,
            self.init_from
        );
        tandem_runtime::bundle::sha256_hex(text.as_bytes())
    }
}
