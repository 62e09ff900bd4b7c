//! `tandem quickstart`: the whole product in one command, on the embedded digits.
//!
//! Trains a teacher, distills a student from it with KD, exports both bundles, prints their held-out
//! accuracies, and serves them.

use std::path::PathBuf;

use tandem_training::data::{default_data_dir, Augment, DatasetName};
use tandem_training::optim::AdamWConfig;
use tandem_training::report::TrainSummary;
use tandem_training::{arch, train, Method, TrainConfig};

use crate::settings::ServeSettings;

/// Arguments of `tandem quickstart`.
#[derive(clap::Args)]
pub struct Args {
    /// Where to write the bundles.
    #[arg(long, default_value = "runs/quickstart")]
    out: PathBuf,
    /// Stop after training and evaluation.
    #[arg(long)]
    no_serve: bool,
    /// Print the summary as one JSON object with `teacher` and `student`.
    #[arg(long)]
    json: bool,
    /// Seed of both runs.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Interface to serve on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to serve on.
    #[arg(long, default_value_t = 8080)]
    port: u16,
}

fn run_config(
    args: &Args,
    name: &str,
    preset: &str,
    epochs: usize,
    method: Method,
    teacher: Option<PathBuf>,
) -> anyhow::Result<TrainConfig> {
    Ok(TrainConfig {
        name: name.into(),
        version: "1".into(),
        dataset: DatasetName::Digits,
        data_dir: default_data_dir(),
        arch: arch::preset(preset, 8, 10)?,
        method,
        teacher,
        epochs,
        batch_size: 32,
        optim: AdamWConfig { lr: 3e-3, weight_decay: 1e-4, ..Default::default() },
        warmup_fraction: 0.05,
        seed: args.seed,
        augment: Augment::shift(1),
        train_limit: None,
        out: args.out.join(name),
        resume: false,
        progress: !args.json,
        subset_fraction: None,
        ghost_batch: None,
        labeled_fraction: None,
        clip_grad_norm: None,
    })
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let teacher = train(&run_config(&args, "digits-teacher", "teacher", 20, Method::Supervised, None)?)?;
    let kd = Method::Kd { temperature: 4.0, alpha: 0.7 };
    let student =
        train(&run_config(&args, "digits-student", "student", 30, kd, Some(PathBuf::from(&teacher.bundle_dir)))?)?;
    if args.json {
        let entry = |s: &TrainSummary| serde_json::json!({"accuracy": s.test_accuracy, "params": s.params, "val_accuracy": s.val_accuracy, "bundle": s.bundle_dir, "bundle_id": s.bundle_id, "train_seconds": s.train_seconds});
        println!("{}", serde_json::json!({"teacher": entry(&teacher), "student": entry(&student)}));
    } else {
        for s in [&teacher, &student] {
            println!(
                "{:<24} {:>7} params   test accuracy {:.4} ({} images)   {}",
                s.model, s.params, s.test_accuracy, s.test_n, s.bundle_dir
            );
        }
    }
    if args.no_serve {
        return Ok(());
    }
    let settings = ServeSettings {
        models: vec![PathBuf::from(&teacher.bundle_dir), PathBuf::from(&student.bundle_dir)],
        host: Some(args.host.clone()),
        port: Some(args.port),
        ..Default::default()
    };
    crate::commands::serve::serve(&settings)
}
