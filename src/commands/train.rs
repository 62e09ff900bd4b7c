//! `tandem train` and `tandem distill`: one set of run options, two recipes.

use std::path::PathBuf;

use anyhow::bail;
use tandem_training::data::{default_data_dir, Augment, DatasetName};
use tandem_training::optim::AdamWConfig;
use tandem_training::report::TrainSummary;
use tandem_training::{arch, train, Method, TrainConfig};

/// Options shared by every training run.
#[derive(clap::Args, Clone)]
pub struct RunArgs {
    /// Dataset: digits (embedded), mnist or fashion-mnist.
    #[arg(long, default_value = "digits")]
    pub dataset: DatasetName,
    /// Architecture preset (teacher, student, tiny) or a JSON file with a full CNN config.
    #[arg(long, default_value = "student")]
    pub arch: String,
    /// Bundle directory to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Bundle name (default: the output directory's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Bundle version.
    #[arg(long, default_value = "1")]
    pub version: String,
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Peak learning rate of AdamW.
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 1e-4)]
    pub weight_decay: f64,
    /// Warm-up length as a fraction of all steps.
    #[arg(long, default_value_t = 0.05)]
    pub warmup: f64,
    /// Largest random shift, in pixels, for augmentation (0 turns it off).
    #[arg(long, default_value_t = 1)]
    pub augment_shift: usize,
    /// Seed for initialisation, shuffling and augmentation.
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

/// Arguments of `tandem train`.
#[derive(clap::Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub run: RunArgs,
}

/// Arguments of `tandem distill`.
#[derive(clap::Args)]
pub struct DistillArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Teacher bundle directory.
    #[arg(long)]
    pub teacher: PathBuf,
    /// Distillation method.
    #[arg(long, default_value = "kd")]
    pub method: String,
    /// Softening temperature of KD.
    #[arg(long, default_value_t = 4.0)]
    pub temperature: f64,
    /// Weight of the distillation term against cross-entropy.
    #[arg(long, default_value_t = 0.7)]
    pub alpha: f64,
}

pub fn run_train(args: TrainArgs) -> anyhow::Result<()> {
    let summary = train(&config(&args.run, Method::Supervised, None)?)?;
    print_summary(&summary, args.run.json);
    Ok(())
}

pub fn run_distill(args: DistillArgs) -> anyhow::Result<()> {
    let method = distill_method(&args)?;
    let summary = train(&config(&args.run, method, Some(args.teacher.clone()))?)?;
    print_summary(&summary, args.run.json);
    Ok(())
}

fn distill_method(args: &DistillArgs) -> anyhow::Result<Method> {
    if !(args.temperature > 0.0 && (0.0..=1.0).contains(&args.alpha)) {
        bail!("--temperature must be positive and --alpha within [0, 1]");
    }
    match args.method.as_str() {
        "kd" => Ok(Method::Kd { temperature: args.temperature, alpha: args.alpha }),
        other => bail!("unknown distillation method {other:?}; available: kd"),
    }
}

/// Builds the run's config from the shared options.
pub fn config(run: &RunArgs, method: Method, teacher: Option<PathBuf>) -> anyhow::Result<TrainConfig> {
    let (side, classes) = match run.dataset {
        DatasetName::Digits => (8, 10),
        _ => (28, 10),
    };
    let name = match &run.name {
        Some(n) => n.clone(),
        None => run.out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into()),
    };
    Ok(TrainConfig {
        name,
        version: run.version.clone(),
        dataset: run.dataset,
        data_dir: run.data_dir.clone().unwrap_or_else(default_data_dir),
        arch: arch::resolve(&run.arch, side, classes)?,
        method,
        teacher,
        epochs: run.epochs,
        batch_size: run.batch_size,
        optim: AdamWConfig { lr: run.lr, weight_decay: run.weight_decay, ..Default::default() },
        warmup_fraction: run.warmup,
        seed: run.seed,
        augment: Augment { max_shift: run.augment_shift },
        train_limit: run.train_limit,
        out: run.out.clone(),
        resume: run.resume,
        progress: !run.quiet,
    })
}

fn print_summary(summary: &TrainSummary, json: bool) {
    if json {
        println!("{}", serde_json::to_string(summary).expect("summaries serialise. This is a bug."));
    } else {
        println!(
            "{} ({} parameters, {}): val accuracy {:.4}, test accuracy {:.4} on {} images, {:.1}s of training\nbundle {} in {}",
            summary.model, summary.params, summary.method, summary.val_accuracy, summary.test_accuracy, summary.test_n, summary.train_seconds, summary.bundle_id, summary.bundle_dir
        );
    }
}
