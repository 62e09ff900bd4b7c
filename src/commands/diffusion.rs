//! `tandem train-diffusion`: a class-conditional DDPM teacher, exported as a `diffusion` bundle;
//! and the arguments every image-generation training command shares.

use std::path::PathBuf;

use anyhow::Context;
use tandem_runtime::diffusion::{BetaSchedule, Solver};
use tandem_training::data::DatasetName;
use tandem_training::families::common_run::CommonRun;
use tandem_training::families::diffusion::{self, unet_preset, DiffusionConfig};
use tandem_training::families::image_generation::GenerationRun;
use tandem_training::optim::AdamWConfig;

/// The arguments of `tandem train-diffusion` and `tandem train-consistency` alike.
#[derive(clap::Args)]
pub struct GenerationRunArgs {
    /// Dataset: digits (embedded, 8x8), mnist or fashion-mnist.
    #[arg(long, default_value = "mnist")]
    pub dataset: DatasetName,
    /// UNet preset: unet-tiny, unet-mini, unet-small or unet.
    #[arg(long, default_value = "unet-small")]
    pub arch: String,
    /// A classifier bundle for the dataset; the run's accuracy is the share of class-conditional
    /// samples it recognises as their class.
    #[arg(long)]
    pub judge: PathBuf,
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Peak learning rate of AdamW (default: 1e-3 for a DDPM, 2e-4 for a consistency model).
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Warm-up length as a fraction of all steps.
    #[arg(long, default_value_t = 0.02)]
    pub warmup: f64,
    /// Rescale each step's gradients to this global L2 norm when they exceed it.
    #[arg(long, default_value_t = 1.0)]
    pub clip_grad_norm: f64,
    /// Decay of the weights' moving average, which is sampled and exported.
    #[arg(long, default_value_t = 0.999)]
    pub ema_decay: f64,
    /// Probability of the null class per training image (classifier-free guidance).
    #[arg(long, default_value_t = 0.1)]
    pub class_dropout: f64,
    /// Samples per class judged after each epoch (and drawn in its grid).
    #[arg(long, default_value_t = 10)]
    pub val_samples: usize,
    /// Samples per class judged on the exported bundle.
    #[arg(long, default_value_t = 100)]
    pub test_samples: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Only use the first N training images.
    #[arg(long)]
    pub train_limit: Option<usize>,
    #[command(flatten)]
    pub bundle: super::bundle_args::BundleArgs,
}

impl GenerationRunArgs {
    /// The images' side: the digits are 8x8, MNIST and Fashion-MNIST 28x28.
    pub fn side(&self) -> usize {
        if self.dataset == DatasetName::Digits {
            8
        } else {
            28
        }
    }

    /// The shared run settings, with the command's own default learning rate.
    pub fn to_run(&self, default_lr: f64) -> anyhow::Result<GenerationRun> {
        let optim =
            AdamWConfig { lr: self.lr.unwrap_or(default_lr), weight_decay: self.weight_decay, ..Default::default() };
        Ok(GenerationRun {
            common: CommonRun {
                name: self.bundle.bundle_name(),
                version: self.bundle.target.version.clone(),
                epochs: self.epochs,
                batch_size: self.batch_size,
                optim,
                warmup_fraction: self.warmup,
                clip_grad_norm: Some(self.clip_grad_norm),
                seed: self.seed,
                out: self.bundle.target.out.clone(),
                resume: self.bundle.resume,
                progress: !self.bundle.quiet,
            },
            dataset: self.dataset,
            data_dir: self.bundle.data_dir(),
            arch_name: self.arch.clone(),
            arch: unet_preset(&self.arch, self.side(), 10)?,
            train_limit: self.train_limit,
            ema_decay: self.ema_decay,
            class_dropout: self.class_dropout,
            judge: self.judge.clone(),
            val_samples_per_class: self.val_samples,
            test_samples_per_class: self.test_samples,
        })
    }

    /// The line that opens a run: its name, method, preset, image size and parameter count.
    pub fn announce(&self, run: &GenerationRun, method: &str) -> anyhow::Result<()> {
        if !self.bundle.json {
            let params = tandem_runtime::models::unet::parameter_count(&run.arch)?;
            let side = self.side();
            eprintln!("{}: {method}, {} on {side}x{side}, {params} parameters", run.common.name, run.arch_name);
        }
        Ok(())
    }
}

/// Arguments of `tandem train-diffusion`.
#[derive(clap::Args)]
pub struct TrainDiffusionArgs {
    #[command(flatten)]
    pub run: GenerationRunArgs,
    /// The β schedule: cosine (Nichol & Dhariwal) or linear (DDPM, 1e-4 to 0.02).
    #[arg(long, default_value = "cosine")]
    pub schedule: String,
    /// Training timesteps T.
    #[arg(long, default_value_t = 1000)]
    pub train_steps: usize,
    /// Guidance scale of validation samples, written into the bundle as its default.
    #[arg(long, default_value_t = 2.0)]
    pub guidance: f64,
    /// Sampler of the judged samples.
    #[arg(long, default_value = "dpmpp2m")]
    pub eval_sampler: String,
    /// Model evaluations per judged sample.
    #[arg(long, default_value_t = 10)]
    pub eval_steps: usize,
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
    let cfg = DiffusionConfig {
        run: args.run.to_run(1e-3)?,
        schedule: schedule(&args.schedule)?,
        train_steps: args.train_steps,
        guidance: args.guidance,
        eval_sampler: args.eval_sampler.parse::<Solver>().context("--eval-sampler")?,
        eval_steps: args.eval_steps,
    };
    args.run.announce(&cfg.run, "ddpm")?;
    let summary = diffusion::train(&cfg)?;
    super::train::print_summary(&summary, args.run.bundle.json);
    Ok(())
}
