//! `tandem train-diffusion`: a class-conditional DDPM teacher, exported as a `diffusion` bundle.

use std::path::PathBuf;

use anyhow::Context;
use tandem_runtime::diffusion::{BetaSchedule, Solver};
use tandem_training::data::{default_data_dir, DatasetName};
use tandem_training::families::diffusion::{self, unet_preset, DiffusionConfig};
use tandem_training::optim::AdamWConfig;

/// Arguments of `tandem train-diffusion`.
#[derive(clap::Args)]
pub struct TrainDiffusionArgs {
    /// Dataset: digits (embedded, 8x8), mnist or fashion-mnist.
    #[arg(long, default_value = "mnist")]
    pub dataset: DatasetName,
    /// UNet preset: unet-tiny, unet-small or unet.
    #[arg(long, default_value = "unet-small")]
    pub arch: String,
    /// A classifier bundle for the dataset; the run's accuracy is the share of class-conditional
    /// samples it recognises as their class.
    #[arg(long)]
    pub judge: PathBuf,
    /// Bundle directory to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Bundle name (default: the output directory's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Bundle version.
    #[arg(long, default_value = "1")]
    pub version: String,
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Peak learning rate of AdamW.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Warm-up length as a fraction of all steps.
    #[arg(long, default_value_t = 0.02)]
    pub warmup: f64,
    /// Rescale each step's gradients to this global L2 norm when they exceed it.
    #[arg(long, default_value_t = 1.0)]
    pub clip_grad_norm: f64,
    /// The β schedule: cosine (Nichol & Dhariwal) or linear (DDPM, 1e-4 to 0.02).
    #[arg(long, default_value = "cosine")]
    pub schedule: String,
    /// Training timesteps T.
    #[arg(long, default_value_t = 1000)]
    pub train_steps: usize,
    /// Decay of the weights' moving average, which is sampled and exported.
    #[arg(long, default_value_t = 0.999)]
    pub ema_decay: f64,
    /// Probability of the null class per training image (classifier-free guidance).
    #[arg(long, default_value_t = 0.1)]
    pub class_dropout: f64,
    /// Guidance scale of validation samples, written into the bundle as its default.
    #[arg(long, default_value_t = 2.0)]
    pub guidance: f64,
    /// Samples per class judged after each epoch (and drawn in its grid).
    #[arg(long, default_value_t = 10)]
    pub val_samples: usize,
    /// Samples per class judged on the exported bundle.
    #[arg(long, default_value_t = 100)]
    pub test_samples: usize,
    /// Sampler of the judged samples.
    #[arg(long, default_value = "dpmpp2m")]
    pub eval_sampler: String,
    /// Model evaluations per judged sample.
    #[arg(long, default_value_t = 10)]
    pub eval_steps: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Only use the first N training images.
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Continue from the checkpoint next to the output directory.
    #[arg(long)]
    pub resume: bool,
    /// Dataset cache directory.
    #[arg(long, env = "TANDEM_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Hide progress output.
    #[arg(long)]
    pub quiet: bool,
}

/// The β schedule named on the command line.
fn schedule(name: &str) -> anyhow::Result<BetaSchedule> {
    match name {
        "cosine" => Ok(BetaSchedule::Cosine { s: 0.008 }),
        "linear" => Ok(BetaSchedule::Linear { start: 1e-4, end: 0.02 }),
        other => anyhow::bail!("unknown --schedule {other:?}: expected cosine or linear"),
    }
}

pub fn run(args: TrainDiffusionArgs) -> anyhow::Result<()> {
    let side = if args.dataset == DatasetName::Digits { 8 } else { 28 };
    let name = match &args.name {
        Some(n) => n.clone(),
        None => args.out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "ddpm".into()),
    };
    let cfg = DiffusionConfig {
        name,
        version: args.version.clone(),
        dataset: args.dataset,
        data_dir: args.data_dir.clone().unwrap_or_else(default_data_dir),
        arch_name: args.arch.clone(),
        arch: unet_preset(&args.arch, side, 10)?,
        schedule: schedule(&args.schedule)?,
        train_steps: args.train_steps,
        epochs: args.epochs,
        batch_size: args.batch_size,
        optim: AdamWConfig { lr: args.lr, weight_decay: args.weight_decay, ..Default::default() },
        warmup_fraction: args.warmup,
        clip_grad_norm: Some(args.clip_grad_norm),
        seed: args.seed,
        train_limit: args.train_limit,
        ema_decay: args.ema_decay,
        class_dropout: args.class_dropout,
        guidance: args.guidance,
        judge: args.judge.clone(),
        val_samples_per_class: args.val_samples,
        test_samples_per_class: args.test_samples,
        eval_sampler: args.eval_sampler.parse::<Solver>().context("--eval-sampler")?,
        eval_steps: args.eval_steps,
        out: args.out.clone(),
        resume: args.resume,
        progress: !args.quiet,
    };
    if !args.json {
        let params = tandem_runtime::models::unet::parameter_count(&cfg.arch)?;
        eprintln!("{}: ddpm, {} on {side}x{side}, {params} parameters", cfg.name, cfg.arch_name);
    }
    let summary = diffusion::train(&cfg)?;
    super::train::print_summary(&summary, args.json);
    Ok(())
}

/// Arguments of `tandem train-consistency`.
#[derive(clap::Args)]
pub struct TrainConsistencyArgs {
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
    /// iCT's curriculum: the first and last grid sizes minus one.
    #[arg(long, default_value_t = 10)]
    pub s0: usize,
    #[arg(long, default_value_t = 1280)]
    pub s1: usize,
    /// Dataset: digits (embedded, 8x8), mnist or fashion-mnist.
    #[arg(long, default_value = "mnist")]
    pub dataset: DatasetName,
    /// UNet preset: unet-tiny, unet-small or unet.
    #[arg(long, default_value = "unet-small")]
    pub arch: String,
    /// A classifier bundle that judges the class of samples.
    #[arg(long)]
    pub judge: PathBuf,
    /// Bundle directory to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Bundle name (default: the output directory's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Bundle version.
    #[arg(long, default_value = "1")]
    pub version: String,
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Peak learning rate of AdamW.
    #[arg(long, default_value_t = 2e-4)]
    pub lr: f64,
    /// Warm-up length as a fraction of all steps.
    #[arg(long, default_value_t = 0.02)]
    pub warmup: f64,
    #[arg(long, default_value_t = 1.0)]
    pub clip_grad_norm: f64,
    #[arg(long, default_value_t = 0.999)]
    pub ema_decay: f64,
    #[arg(long, default_value_t = 0.1)]
    pub class_dropout: f64,
    /// Candidate intermediate σ of two-step sampling, chosen on validation at export.
    #[arg(long, value_delimiter = ',', default_value = "0.2,0.4,0.8,1.6,3.2")]
    pub sigma_mid: Vec<f64>,
    #[arg(long, default_value_t = 10)]
    pub val_samples: usize,
    #[arg(long, default_value_t = 100)]
    pub test_samples: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub train_limit: Option<usize>,
    #[arg(long)]
    pub resume: bool,
    #[arg(long, env = "TANDEM_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
    #[arg(long)]
    pub quiet: bool,
}

pub fn run_consistency(args: TrainConsistencyArgs) -> anyhow::Result<()> {
    use tandem_training::families::consistency::{self, ConsistencyConfig, ConsistencyMethod};
    let side = if args.dataset == DatasetName::Digits { 8 } else { 28 };
    let method = match (args.method.as_str(), &args.teacher) {
        ("ict", None) => ConsistencyMethod::Ict { s0: args.s0, s1: args.s1 },
        ("cd", Some(teacher)) => {
            ConsistencyMethod::Cd { teacher: teacher.clone(), grid: args.cd_grid, guidance: args.teacher_guidance }
        }
        ("ict", Some(_)) => anyhow::bail!("ict trains without a teacher: drop --teacher"),
        ("cd", None) => anyhow::bail!("cd distills a diffusion bundle: give --teacher DIR"),
        (other, _) => anyhow::bail!("unknown --method {other:?}: expected ict or cd"),
    };
    let mut arch = unet_preset(&args.arch, side, 10)?;
    // Student and target passes would draw different dropout masks (candle's dropout cannot share
    // a generator), which adds noise to every target: consistency students train without dropout.
    arch.dropout = 0.0;
    let name = match &args.name {
        Some(n) => n.clone(),
        None => args.out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "cm".into()),
    };
    let cfg = ConsistencyConfig {
        name,
        version: args.version.clone(),
        dataset: args.dataset,
        data_dir: args.data_dir.clone().unwrap_or_else(default_data_dir),
        arch_name: args.arch.clone(),
        arch,
        method,
        sigma_min: 0.002,
        sigma_max: 80.0,
        sigma_data: 0.5,
        p_mean: -1.1,
        p_std: 2.0,
        epochs: args.epochs,
        batch_size: args.batch_size,
        optim: AdamWConfig { lr: args.lr, weight_decay: 0.0, ..Default::default() },
        warmup_fraction: args.warmup,
        clip_grad_norm: Some(args.clip_grad_norm),
        seed: args.seed,
        train_limit: args.train_limit,
        ema_decay: args.ema_decay,
        class_dropout: args.class_dropout,
        judge: args.judge.clone(),
        val_samples_per_class: args.val_samples,
        test_samples_per_class: args.test_samples,
        sigma_mid_candidates: args.sigma_mid.clone(),
        init_from_teacher: args.init_from_teacher,
        out: args.out.clone(),
        resume: args.resume,
        progress: !args.quiet,
    };
    if !args.json {
        let params = tandem_runtime::models::unet::parameter_count(&cfg.arch)?;
        eprintln!("{}: {}, {} on {side}x{side}, {params} parameters", cfg.name, cfg.method.name(), cfg.arch_name);
    }
    let summary = consistency::train(&cfg)?;
    super::train::print_summary(&summary, args.json);
    Ok(())
}
