//! `tandem train-consistency`: a consistency model by iCT or by distilling a `diffusion` bundle,
//! exported as a `consistency` bundle.

use std::path::PathBuf;

use tandem_training::families::consistency::{self, ConsistencyConfig, ConsistencyMethod, StudentParametrization};

use super::diffusion::GenerationRunArgs;

/// Arguments of `tandem train-consistency`.
#[derive(clap::Args)]
pub struct TrainConsistencyArgs {
    #[command(flatten)]
    pub run: GenerationRunArgs,
    /// ict (improved consistency training, no teacher) or cd (consistency distillation).
    #[arg(long, default_value = "cd")]
    pub method: String,
    /// The `diffusion` bundle to distill (cd).
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Points of CD's Karras σ grid.
    #[arg(long, default_value_t = 18)]
    pub cd_grid: usize,
    /// The teacher's guidance scale during CD (baked into the student).
    #[arg(long, default_value_t = 2.0)]
    pub teacher_guidance: f64,
    /// Start from the teacher's weights (cd; same architecture).
    #[arg(long)]
    pub init_from_teacher: bool,
    /// Continue from a trained consistency bundle (same architecture and parametrization): a warm
    /// restart of the weights under a fresh optimiser and schedule.
    #[arg(long, value_name = "BUNDLE")]
    pub init_from: Option<PathBuf>,
    /// iCT's curriculum: the first and last grid sizes minus one.
    #[arg(long, default_value_t = 10)]
    pub s0: usize,
    #[arg(long, default_value_t = 1280)]
    pub s1: usize,
    /// What the student's UNet predicts: from-eps (ε on the teacher's schedule, blended into the
    /// data estimate; cd only, where it lets --init-from-teacher start from the teacher's denoiser)
    /// or edm (Song et al.'s scalings around a raw network) [default: from-eps for cd, edm for ict].
    #[arg(long)]
    pub parametrization: Option<String>,
    /// k of the from-eps boundary scalings: f leaves the identity over σ − σ_min ≈ σ_data/k.
    #[arg(long, default_value_t = 10.0)]
    pub timestep_scaling: f64,
    /// Candidate intermediate σ of two-step sampling, chosen on validation at export.
    #[arg(long, value_delimiter = ',', default_value = "0.2,0.4,0.8,1.6,3.2")]
    pub sigma_mid: Vec<f64>,
}

pub fn run(args: TrainConsistencyArgs) -> anyhow::Result<()> {
    let method = match (args.method.as_str(), &args.teacher) {
        ("ict", None) => ConsistencyMethod::Ict { s0: args.s0, s1: args.s1 },
        ("cd", Some(teacher)) => {
            ConsistencyMethod::Cd { teacher: teacher.clone(), grid: args.cd_grid, guidance: args.teacher_guidance }
        }
        ("ict", Some(_)) => anyhow::bail!("ict trains without a teacher: drop --teacher"),
        ("cd", None) => anyhow::bail!("cd distills a diffusion bundle: give --teacher DIR"),
        (other, _) => anyhow::bail!("unknown --method {other:?}: expected ict or cd"),
    };
    let default = if args.method == "cd" { "from-eps" } else { "edm" };
    let parametrization = match args.parametrization.as_deref().unwrap_or(default) {
        "from-eps" => StudentParametrization::FromTeacherEps { timestep_scaling: args.timestep_scaling },
        "edm" => StudentParametrization::Edm,
        other => anyhow::bail!("unknown --parametrization {other:?}: expected from-eps or edm"),
    };
    let mut run = args.run.to_run(2e-4)?;
    // Student and target passes would draw different dropout masks (candle's dropout cannot share
    // a generator), which adds noise to every target: consistency students train without dropout.
    run.arch.dropout = 0.0;
    let cfg = ConsistencyConfig {
        sigma_mid_candidates: args.sigma_mid.clone(),
        init_from_teacher: args.init_from_teacher,
        init_from: args.init_from.clone(),
        parametrization,
        ..ConsistencyConfig::new(run, method)
    };
    args.run.announce(&cfg.run, cfg.method.name())?;
    let summary = consistency::train(&cfg)?;
    super::train::print_summary(&summary, args.run.bundle.json);
    Ok(())
}
