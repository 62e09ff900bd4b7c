//! `tandem bench distill`: the method × dataset table of compact students, each cell the mean and
//! spread over seeds of full training runs, with the teacher each distillation run learns from.
//!
//! Runs are the ordinary `tandem train` / `tandem distill` runs, written under `--out`, so each
//! leaves its bundle, learning curve and summary to inspect. A finished run (its summary exists) is
//! read back instead of trained again, and an interrupted one resumes from its checkpoint: the
//! table takes hours of CPU, and a kill costs at most one epoch of it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Serialize;
use tandem_runtime::bundle::Bundle;
use tandem_training::data::DatasetName;
use tandem_training::report::TrainSummary;
use tandem_training::{train, Method, TrainConfig};

use crate::commands::bundle_args::BundleTarget;
use crate::commands::train::{config, config_with_labels, method, MethodArgs, RunArgs};

/// Arguments of `tandem bench distill`.
#[derive(clap::Args)]
pub struct DistillBenchArgs {
    /// Datasets, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "mnist,fashion-mnist")]
    pub datasets: Vec<DatasetName>,
    /// Methods, comma-separated (supervised, kd, dhkd, dho, pskd, dual-io).
    #[arg(long, value_delimiter = ',', default_value = "supervised,kd,dhkd,dho,pskd,dual-io")]
    pub methods: Vec<String>,
    /// Seeds, comma-separated: each cell is the mean and standard deviation over them.
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    pub seeds: Vec<u64>,
    /// Student architecture preset or JSON file.
    #[arg(long, default_value = "student")]
    pub arch: String,
    /// Student epochs (dual-io: its branch stage, then its unfreezing stages).
    #[arg(long, default_value_t = 15)]
    pub epochs: usize,
    /// Only this fraction of each training split keeps its labels (supervised, kd, dhkd and dho
    /// only): the label-budget comparison. DHO uses every label when this is not given.
    #[arg(long)]
    pub labeled_fraction: Option<f64>,
    /// An existing teacher bundle for a dataset, as DATASET=DIR (repeatable); datasets without one
    /// get a teacher trained here first, from `--teacher-arch`.
    #[arg(long = "teacher", value_parser = parse_teacher)]
    pub teachers: Vec<(DatasetName, PathBuf)>,
    /// Architecture of the teachers trained here: a preset (`teacher`, or `teacher-wide`, the
    /// shipped Fashion-MNIST teacher's) or a JSON CNN config.
    #[arg(long, default_value = "teacher")]
    pub teacher_arch: String,
    /// Epochs of the teachers trained here.
    #[arg(long, default_value_t = 12)]
    pub teacher_epochs: usize,
    /// Largest random shift, in pixels (every dataset).
    #[arg(long, default_value_t = 2)]
    pub augment_shift: usize,
    /// Largest random rotation, in degrees (every dataset).
    #[arg(long, default_value_t = 0.0)]
    pub augment_rotate: f32,
    /// Mirror images left to right on datasets whose classes survive it (Fashion-MNIST).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub augment_flip: bool,
    /// Only use the first N training images (quick checks).
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Directory for the runs and the result files.
    #[arg(long, default_value = "runs/bench-distill")]
    pub out: PathBuf,
    /// Dataset cache directory.
    #[arg(long, env = "TANDEM_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Hide progress output.
    #[arg(long)]
    pub quiet: bool,
}

fn parse_teacher(s: &str) -> Result<(DatasetName, PathBuf), String> {
    let (name, dir) = s.split_once('=').ok_or_else(|| format!("expected DATASET=DIR, found {s:?}"))?;
    Ok((name.parse().map_err(|e| format!("{e}"))?, PathBuf::from(dir)))
}

/// One cell of the table: a method on a dataset, over every seed.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub dataset: String,
    pub method: String,
    /// The student architecture (preset name or JSON file).
    pub arch: String,
    /// The label budget, when not every label was used.
    pub labeled_fraction: Option<f64>,
    pub params: usize,
    pub seeds: Vec<u64>,
    pub test_accuracies: Vec<f64>,
    pub mean: f64,
    /// Sample standard deviation (0 for a single seed).
    pub std: f64,
    /// Mean validation accuracy (what an architecture or method search may look at).
    pub val_mean: f64,
    /// Mean training time of one run, in seconds.
    pub train_seconds: f64,
    /// The teacher's test accuracy, for distillation methods.
    pub teacher_test_accuracy: Option<f64>,
}

pub fn run_distill_bench(args: DistillBenchArgs) -> anyhow::Result<()> {
    if args.seeds.is_empty() || args.methods.is_empty() || args.datasets.is_empty() {
        bail!("give at least one dataset, method and seed");
    }
    // Each method with its label budget, parsed as `tandem distill` parses its flags.
    let methods: Vec<(Method, MethodArgs)> = args
        .methods
        .iter()
        .map(|name| {
            let options = MethodArgs { labeled_fraction: label_budget(&args, name), ..MethodArgs::default() };
            Ok((method(name, &options)?, options))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut cells = Vec::new();
    for &dataset in &args.datasets {
        let mut teacher: Option<(PathBuf, f64)> = None;
        for (m, options) in &methods {
            if m.needs_teacher() && teacher.is_none() {
                teacher = Some(ensure_teacher(&args, dataset)?);
            }
            let tdir = teacher.as_ref().filter(|_| m.needs_teacher()).map(|(dir, _)| dir.clone());
            let mut runs = Vec::new();
            for &seed in &args.seeds {
                let cfg = student_config(&args, dataset, m.clone(), options, tdir.clone(), seed)?;
                runs.push(run_or_reuse(&cfg)?);
            }
            let teacher_acc = teacher.as_ref().filter(|_| m.needs_teacher()).map(|t| t.1);
            let cell = Cell {
                arch: args.arch.clone(),
                ..cell(dataset, m, options.labeled_fraction, &args.seeds, &runs, teacher_acc)
            };
            if !args.quiet {
                eprintln!("{}", row(&cell));
            }
            cells.push(cell);
        }
    }
    write_results(&args.out, &results_stem(&args), &cells)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&cells)?);
    } else {
        println!("{}", table(&cells));
    }
    Ok(())
}

/// The label budget a method runs with in this table: DHO, whose own default is 10%, uses every
/// label unless the table sets a budget.
fn label_budget(args: &DistillBenchArgs, method: &str) -> Option<f64> {
    match method {
        "dho" => Some(args.labeled_fraction.unwrap_or(1.0)),
        _ => args.labeled_fraction,
    }
}

/// The run's options, as `tandem train` would take them from its flags.
fn run_args(
    args: &DistillBenchArgs,
    dataset: DatasetName,
    arch: &str,
    out: PathBuf,
    epochs: usize,
    seed: u64,
) -> RunArgs {
    RunArgs {
        dataset,
        arch: arch.to_owned(),
        target: BundleTarget { out, name: None, version: "1".into() },
        epochs,
        batch_size: 64,
        lr: 3e-3,
        weight_decay: 1e-4,
        warmup: 0.05,
        augment_shift: args.augment_shift,
        augment_rotate: args.augment_rotate,
        augment_flip: args.augment_flip && dataset.mirror_invariant(),
        seed,
        train_limit: args.train_limit,
        subset_fraction: None,
        ghost_batch: None,
        clip_grad_norm: None,
        resume: true,
        data_dir: args.data_dir.clone(),
        json: false,
        quiet: args.quiet,
    }
}

fn student_config(
    args: &DistillBenchArgs,
    dataset: DatasetName,
    m: Method,
    options: &MethodArgs,
    teacher: Option<PathBuf>,
    seed: u64,
) -> anyhow::Result<TrainConfig> {
    let label = match options.labeled_fraction {
        Some(f) if f < 1.0 => format!("{}-labels{f}", m.name()),
        _ => m.name().to_owned(),
    };
    // The default student keeps the short name; other architectures get their own runs.
    let arch = match args.arch.as_str() {
        "student" => String::new(),
        other => format!("-{}", Path::new(other).file_stem().map_or(other.into(), |s| s.to_string_lossy())),
    };
    let out = args.out.join(dataset.as_str()).join(format!("{label}{arch}-seed{seed}"));
    config_with_labels(&run_args(args, dataset, &args.arch, out, args.epochs, seed), m, teacher, options)
}

/// The dataset's teacher: the one given, or one trained (or reused) under `--out`.
fn ensure_teacher(args: &DistillBenchArgs, dataset: DatasetName) -> anyhow::Result<(PathBuf, f64)> {
    if let Some((_, dir)) = args.teachers.iter().find(|(d, _)| *d == dataset) {
        let bundle = Bundle::load(dir).with_context(|| format!("teacher {}", dir.display()))?;
        let acc = bundle.manifest.metrics.get("test_accuracy").copied().unwrap_or(f64::NAN);
        return Ok((dir.clone(), acc));
    }
    let out = args.out.join(dataset.as_str()).join("teacher");
    let cfg = config(
        &run_args(args, dataset, &args.teacher_arch, out.clone(), args.teacher_epochs, 0),
        Method::Supervised,
        None,
    )?;
    let summary = run_or_reuse(&cfg)?;
    Ok((out, summary.test_accuracy))
}

/// Trains the run, or reads its summary back when it already finished with the same settings.
fn run_or_reuse(cfg: &TrainConfig) -> anyhow::Result<TrainSummary> {
    let path = cfg.summary_path();
    if cfg.out.join("manifest.json").exists() && path.exists() {
        let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
        let summary: TrainSummary = serde_json::from_str(&text).with_context(|| path.display().to_string())?;
        let bundle = Bundle::load(&cfg.out).with_context(|| cfg.out.display().to_string())?;
        let same_arch = bundle.manifest.classifier().is_some_and(|spec| spec.architecture == cfg.student_arch());
        if same_arch && summary.hyperparameters == cfg.hyperparameters() {
            return Ok(summary);
        }
        bail!("{} holds a run with other settings; remove it or choose another --out", cfg.out.display());
    }
    Ok(train(cfg)?)
}

fn cell(
    dataset: DatasetName,
    m: &Method,
    fraction: Option<f64>,
    seeds: &[u64],
    runs: &[TrainSummary],
    teacher: Option<f64>,
) -> Cell {
    let accs: Vec<f64> = runs.iter().map(|r| r.test_accuracy).collect();
    let (mean, std) = mean_std(&accs);
    Cell {
        dataset: dataset.as_str().to_owned(),
        method: m.name().to_owned(),
        arch: String::new(),
        labeled_fraction: fraction.filter(|f| *f < 1.0),
        params: runs.first().map_or(0, |r| r.params),
        seeds: seeds.to_vec(),
        test_accuracies: accs,
        mean,
        std,
        val_mean: mean_std(&runs.iter().map(|r| r.val_accuracy).collect::<Vec<_>>()).0,
        train_seconds: runs.iter().map(|r| r.train_seconds).sum::<f64>() / runs.len().max(1) as f64,
        teacher_test_accuracy: teacher,
    }
}

/// Mean and sample standard deviation.
fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    if xs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 { xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
}

const HEADER: &str = "| dataset | method | student | labels | test accuracy (mean ± std) | val accuracy | seeds | params | train time per run | teacher |\n|---|---|---|---|---|---|---|---|---|---|";

fn row(c: &Cell) -> String {
    // Rounded to four decimals so that 0.01 prints as 1%, not 1.0000000000000002%.
    let labels = c.labeled_fraction.map_or("all".to_owned(), |f| format!("{}%", (f * 1e6).round() / 1e4));
    let teacher = c.teacher_test_accuracy.map_or("—".to_owned(), |a| format!("{:.2}%", a * 100.0));
    format!(
        "| {} | {} | {} | {labels} | {:.2}% ± {:.2} | {:.2}% | {} | {} | {:.0} s | {teacher} |",
        c.dataset,
        c.method,
        c.arch,
        c.mean * 100.0,
        c.std * 100.0,
        c.val_mean * 100.0,
        c.seeds.len(),
        c.params,
        c.train_seconds
    )
}

fn table(cells: &[Cell]) -> String {
    let rows: Vec<String> = cells.iter().map(row).collect();
    format!("{HEADER}\n{}", rows.join("\n"))
}

/// The result files' name: one pair per kind of table, so that tables sharing `--out` (and its
/// teachers) do not overwrite each other.
fn results_stem(args: &DistillBenchArgs) -> String {
    let datasets: Vec<&str> = args.datasets.iter().map(DatasetName::as_str).collect();
    let arch = Path::new(&args.arch).file_stem().map_or(args.arch.clone(), |s| s.to_string_lossy().into_owned());
    let labels = args.labeled_fraction.map_or(String::new(), |f| format!("-labels{f}"));
    format!("results-{}-{arch}-{}ep{labels}", datasets.join("+"), args.epochs)
}

fn write_results(out: &Path, stem: &str, cells: &[Cell]) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| out.display().to_string())?;
    let by_key: BTreeMap<String, &Cell> =
        cells.iter().map(|c| (format!("{}/{}/{}", c.dataset, c.method, c.arch), c)).collect();
    tandem_runtime::fs::atomic_write(
        &out.join(format!("{stem}.json")),
        serde_json::to_string_pretty(&by_key)?.as_bytes(),
    )?;
    tandem_runtime::fs::atomic_write(&out.join(format!("{stem}.md")), table(cells).as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_std() {
        let (m, s) = mean_std(&[0.99, 0.993, 0.996]);
        assert!((m - 0.993).abs() < 1e-12);
        assert!((s - 0.003).abs() < 1e-9);
        assert_eq!(mean_std(&[0.5]), (0.5, 0.0));
        assert!(mean_std(&[]).0.is_nan());
    }

    #[test]
    fn rows_show_label_budgets_and_teachers() {
        let c = Cell {
            dataset: "fashion-mnist".into(),
            method: "dho".into(),
            arch: "student".into(),
            labeled_fraction: Some(0.01),
            params: 14_408,
            seeds: vec![0, 1, 2],
            test_accuracies: vec![0.8, 0.81, 0.82],
            mean: 0.81,
            std: 0.01,
            val_mean: 0.805,
            train_seconds: 300.4,
            teacher_test_accuracy: Some(0.93),
        };
        assert_eq!(
            row(&c),
            "| fashion-mnist | dho | student | 1% | 81.00% ± 1.00 | 80.50% | 3 | 14408 | 300 s | 93.00% |"
        );
        let all = Cell { labeled_fraction: None, teacher_test_accuracy: None, ..c };
        assert!(row(&all).contains("| all |") && row(&all).ends_with("| — |"));
        assert!(parse_teacher("mnist=models/t").is_ok());
        assert!(parse_teacher("mnist").is_err() && parse_teacher("cifar=x").is_err());
    }
}
