//! `tandem train` and `tandem distill`: one set of run options; `train` runs the methods without a
//! teacher (supervised, pskd, dual-io), `distill` those with one (kd, dhkd, dho).

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
    /// Architecture preset (teacher, teacher-wide, student, student-shallow, student-sep,
    /// student-wide, tiny) or a JSON file with a full CNN config.
    #[arg(long, default_value = "student")]
    pub arch: String,
    #[command(flatten)]
    pub target: super::bundle_args::BundleTarget,
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
    /// Largest random rotation, in degrees, for augmentation (0 turns it off).
    #[arg(long, default_value_t = 0.0)]
    pub augment_rotate: f32,
    /// Mirror half of the training images left to right (clothing, not digits).
    #[arg(long)]
    pub augment_flip: bool,
    /// Seed for initialisation, shuffling and augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Only use the first N training images.
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// RS2: train each epoch on a fresh subset of this fraction of the training split, taken
    /// without replacement from seeded permutations (every image once before any repeats).
    #[arg(long)]
    pub subset_fraction: Option<f64>,
    /// Ghost batch norm: batch-norm statistics over chunks of this many images of each batch.
    #[arg(long)]
    pub ghost_batch: Option<usize>,
    /// Rescale each step's gradients to this global L2 norm when they exceed it (off by default).
    #[arg(long)]
    pub clip_grad_norm: Option<f64>,
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

/// Method options shared by `train` and `distill`. Each applies to the methods its help names; a
/// flag given to a method that does not use it is refused rather than silently ignored.
#[derive(clap::Args, Clone, Default)]
pub struct MethodArgs {
    /// kd: weight of the distillation term (default 0.7); dhkd: weight of BinaryKL-Norm
    /// (default 1); pskd: final weight of the self-prediction, alpha_T (default 0.8).
    #[arg(long)]
    pub alpha: Option<f64>,
    /// kd (default 4), dhkd and dho (default 2): softening temperature.
    #[arg(long)]
    pub temperature: Option<f64>,
    /// dhkd: weight of the cross-entropy term (default 1).
    #[arg(long)]
    pub gamma: Option<f64>,
    /// supervised, kd, dhkd and dho: fraction of the training split that keeps its labels, chosen
    /// per class by the seed (dho's default 0.1; the others use every label unless given).
    /// Supervised runs train on the labeled images alone, for as many steps as the distillation
    /// runs, which also learn from the teacher's view of the rest.
    #[arg(long)]
    pub labeled_fraction: Option<f64>,
    /// dho: loss weights, few-shot (0.5 CE + 0.5 KD, the default) or semi (CE + KD).
    #[arg(long)]
    pub dho_weights: Option<String>,
    /// dual-io: how the two branches become one network: average or a (default average).
    #[arg(long)]
    pub merge: Option<String>,
    /// dual-io: epochs of each progressive-unfreezing stage after the merge (default 1).
    #[arg(long)]
    pub stage_epochs: Option<usize>,
}

/// Arguments of `tandem train`.
#[derive(clap::Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Training method without a teacher: supervised, pskd or dual-io. For dual-io, --epochs is
    /// the branch stage; one unfreezing stage per block (plus the head) of --stage-epochs follows.
    #[arg(long, default_value = "supervised")]
    pub method: String,
    #[command(flatten)]
    pub options: MethodArgs,
}

/// Arguments of `tandem distill`.
#[derive(clap::Args)]
pub struct DistillArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Teacher bundle directory.
    #[arg(long)]
    pub teacher: PathBuf,
    /// Distillation method: kd, dhkd or dho.
    #[arg(long, default_value = "kd")]
    pub method: String,
    #[command(flatten)]
    pub options: MethodArgs,
}

pub fn run_train(args: TrainArgs) -> anyhow::Result<()> {
    let method = method(&args.method, &args.options)?;
    if method.needs_teacher() {
        bail!(
            "method {} distills from a teacher: use `tandem distill --teacher DIR --method {}`",
            args.method,
            args.method
        );
    }
    run(&config_with_labels(&args.run, method, None, &args.options)?, args.run.json)
}

pub fn run_distill(args: DistillArgs) -> anyhow::Result<()> {
    let method = method(&args.method, &args.options)?;
    if !method.needs_teacher() {
        bail!("method {} uses no teacher: use `tandem train --method {}`", args.method, args.method);
    }
    run(&config_with_labels(&args.run, method, Some(args.teacher.clone()), &args.options)?, args.run.json)
}

/// The run's config with the label budget of `--labeled-fraction` (DHO keeps it in the method).
pub fn config_with_labels(
    run: &RunArgs,
    method: Method,
    teacher: Option<PathBuf>,
    options: &MethodArgs,
) -> anyhow::Result<TrainConfig> {
    let dho = matches!(method, Method::Dho { .. });
    let mut cfg = config(run, method, teacher)?;
    if !dho {
        cfg.labeled_fraction = options.labeled_fraction;
    }
    Ok(cfg)
}

fn run(cfg: &TrainConfig, json: bool) -> anyhow::Result<()> {
    if !json {
        let arch = cfg.student_arch();
        let params = arch.num_params().map_err(anyhow::Error::msg)?;
        eprintln!("{}: {} ({}), {params} parameters", cfg.name, cfg.method.name(), describe_arch(&arch));
    }
    let summary = train(cfg)?;
    print_summary(&summary, json);
    Ok(())
}

fn describe_arch(arch: &tandem_runtime::models::cnn::CnnConfig) -> String {
    let [c, h, w] = arch.input_shape;
    let heads = if arch.aux_head { "two heads" } else { "one head" };
    format!("{} layers on {c}x{h}x{w}, {heads}", arch.layers.len())
}

/// The method `name` with the options that apply to it; options for other methods are refused.
pub fn method(name: &str, o: &MethodArgs) -> anyhow::Result<Method> {
    let mut method = Method::with_defaults(name)?;
    let mut used: Vec<&str> = Vec::new();
    match &mut method {
        Method::Supervised => used.push("--labeled-fraction"),
        Method::Kd { temperature, alpha } => {
            used.push("--labeled-fraction");
            set(temperature, o.temperature, "--temperature", &mut used);
            set(alpha, o.alpha, "--alpha", &mut used);
        }
        Method::Dhkd { temperature, alpha, gamma } => {
            used.push("--labeled-fraction");
            set(temperature, o.temperature, "--temperature", &mut used);
            set(alpha, o.alpha, "--alpha", &mut used);
            set(gamma, o.gamma, "--gamma", &mut used);
        }
        Method::Dho { temperature, labeled_fraction, weights } => {
            set(temperature, o.temperature, "--temperature", &mut used);
            set(labeled_fraction, o.labeled_fraction, "--labeled-fraction", &mut used);
            let parsed = o.dho_weights.as_deref().map(str::parse).transpose()?;
            set(weights, parsed, "--dho-weights", &mut used);
        }
        Method::Pskd { alpha } => set(alpha, o.alpha, "--alpha", &mut used),
        Method::DualIo { merge, stage_epochs } => {
            let parsed = o.merge.as_deref().map(str::parse).transpose()?;
            set(merge, parsed, "--merge", &mut used);
            set(stage_epochs, o.stage_epochs, "--stage-epochs", &mut used);
        }
    }
    let given = [
        ("--alpha", o.alpha.is_some()),
        ("--temperature", o.temperature.is_some()),
        ("--gamma", o.gamma.is_some()),
        ("--labeled-fraction", o.labeled_fraction.is_some()),
        ("--dho-weights", o.dho_weights.is_some()),
        ("--merge", o.merge.is_some()),
        ("--stage-epochs", o.stage_epochs.is_some()),
    ];
    if let Some((flag, _)) = given.iter().find(|(flag, given)| *given && !used.contains(flag)) {
        bail!("{flag} does not apply to method {name}");
    }
    method.validate()?;
    Ok(method)
}

fn set<'a, T>(field: &mut T, value: Option<T>, flag: &'a str, used: &mut Vec<&'a str>) {
    used.push(flag);
    if let Some(v) = value {
        *field = v;
    }
}

/// Builds the run's config from the shared options.
pub fn config(run: &RunArgs, method: Method, teacher: Option<PathBuf>) -> anyhow::Result<TrainConfig> {
    let (side, classes) = match run.dataset {
        DatasetName::Digits => (8, 10),
        _ => (28, 10),
    };
    Ok(TrainConfig {
        name: run.target.bundle_name(),
        version: run.target.version.clone(),
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
        augment: Augment { max_shift: run.augment_shift, max_rotation_deg: run.augment_rotate, flip: run.augment_flip },
        train_limit: run.train_limit,
        out: run.target.out.clone(),
        resume: run.resume,
        progress: !run.quiet,
        subset_fraction: run.subset_fraction,
        ghost_batch: run.ghost_batch,
        labeled_fraction: None,
        clip_grad_norm: run.clip_grad_norm,
    })
}

/// `--name`, else the output directory's name (`model` for a path without one).
pub fn bundle_name(name: Option<&str>, out: &std::path::Path) -> String {
    match name {
        Some(n) => n.to_owned(),
        None => out.file_name().map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned()),
    }
}

pub fn print_summary(summary: &TrainSummary, json: bool) {
    if json {
        println!("{}", serde_json::to_string(summary).expect("summaries serialise. This is a bug."));
    } else {
        println!(
            "{} ({} parameters, {}): val accuracy {:.4}, test accuracy {:.4} on {} images, {:.1}s of training\nbundle {} in {}",
            summary.model, summary.params, summary.method, summary.val_accuracy, summary.test_accuracy, summary.test_n, summary.train_seconds, summary.bundle_id, summary.bundle_dir
        );
        if let Some(m) = &summary.head_mixture {
            println!(
                "head mixture alpha {:.2} beta {:.2}: val accuracy {:.4} (main head alone {:.4}, aux head alone {:.4})",
                m.alpha, m.beta, m.val_accuracy, m.main_head_val_accuracy, m.aux_head_val_accuracy
            );
        }
        if let Some(d) = &summary.dual_io {
            println!(
                "branches: A {:.4}, B {:.4} val accuracy; merged ({}) {:.4} before {} unfreezing stages",
                d.branch_a_val_accuracy, d.branch_b_val_accuracy, d.merge, d.merged_val_accuracy, d.unfreeze_stages
            );
        }
        if let Some(curve) = &summary.curve {
            println!("learning curve {curve}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Args;
    use tandem_training::methods::{DhoWeights, MergeRule};

    #[test]
    fn arch_help_names_every_preset() {
        let cmd = RunArgs::augment_args(clap::Command::new("train"));
        let arch = cmd.get_arguments().find(|a| a.get_id() == "arch").expect("an --arch flag");
        let help = arch.get_help().expect("a help text").to_string();
        for preset in tandem_training::arch::PRESETS {
            assert!(help.contains(&format!("{preset},")) || help.contains(&format!("{preset})")), "{preset}: {help}");
        }
    }

    #[test]
    fn method_options_apply_to_their_methods_only() {
        let none = MethodArgs::default();
        assert_eq!(method("kd", &none).unwrap(), Method::Kd { temperature: 4.0, alpha: 0.7 });
        let o = MethodArgs { temperature: Some(3.0), labeled_fraction: Some(0.01), ..Default::default() };
        assert_eq!(
            method("dho", &o).unwrap(),
            Method::Dho { temperature: 3.0, labeled_fraction: 0.01, weights: DhoWeights::FewShot }
        );
        let o = MethodArgs { merge: Some("a".into()), stage_epochs: Some(3), ..Default::default() };
        assert_eq!(method("dual-io", &o).unwrap(), Method::DualIo { merge: MergeRule::A, stage_epochs: 3 });
        let err = method("pskd", &MethodArgs { temperature: Some(2.0), ..Default::default() }).unwrap_err();
        assert!(err.to_string().contains("--temperature does not apply to method pskd"), "{err}");
        assert!(method("pskd", &MethodArgs { alpha: Some(2.0), ..Default::default() }).is_err());
        assert!(method("dho", &MethodArgs { dho_weights: Some("half".into()), ..Default::default() }).is_err());
        assert!(method("mixup", &none).is_err());
        let budget = MethodArgs { labeled_fraction: Some(0.01), ..Default::default() };
        for name in ["supervised", "kd", "dhkd", "dho"] {
            assert!(method(name, &budget).is_ok(), "{name}");
        }
        let err = method("pskd", &budget).unwrap_err();
        assert!(err.to_string().contains("--labeled-fraction does not apply to method pskd"), "{err}");
    }
}
