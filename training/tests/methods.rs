//! Every training method end to end on a small slice of the embedded digits: train, export, load
//! the bundle into the runtime and classify through the serving path.

use std::path::{Path, PathBuf};

use tandem_runtime::bundle::{Bundle, InferenceSpec};
use tandem_runtime::image::GrayImage;
use tandem_runtime::{ClassifyRequest, Runtime, RuntimeConfig};
use tandem_training::data::{self, Augment, DatasetName, Split};
use tandem_training::methods::dho::{ALPHAS, BETAS};
use tandem_training::methods::{DhoWeights, MergeRule};
use tandem_training::optim::AdamWConfig;
use tandem_training::report::TrainSummary;
use tandem_training::{arch, train, Method, TrainConfig};

fn config(dir: &Path, name: &str, preset: &str, method: Method, teacher: Option<PathBuf>) -> TrainConfig {
    TrainConfig {
        name: name.into(),
        version: "1".into(),
        dataset: DatasetName::Digits,
        data_dir: dir.join("data"),
        arch: arch::preset(preset, 8, 10).unwrap(),
        method,
        teacher,
        epochs: 2,
        batch_size: 32,
        optim: AdamWConfig { lr: 5e-3, ..Default::default() },
        warmup_fraction: 0.1,
        seed: 3,
        augment: Augment::shift(1),
        train_limit: Some(200),
        out: dir.join(name),
        resume: false,
        progress: false,
        subset_fraction: None,
        ghost_batch: None,
        labeled_fraction: None,
        clip_grad_norm: None,
    }
}

/// A small supervised teacher, trained in `dir`.
fn teacher(dir: &Path) -> PathBuf {
    let mut cfg = config(dir, "teacher", "student", Method::Supervised, None);
    cfg.epochs = 3;
    train(&cfg).unwrap();
    cfg.out
}

/// Loads the bundle into the runtime and classifies the first test digit with it.
fn classify_through_runtime(bundle: &Path) -> Vec<(String, f32)> {
    let runtime = Runtime::new(RuntimeConfig::default());
    let info = runtime.load(bundle).unwrap();
    let test = data::load(DatasetName::Digits, Split::Test, Path::new("")).unwrap();
    let rows: Vec<Vec<f64>> =
        test.image(0).chunks(test.width).map(|r| r.iter().map(|&p| f64::from(p)).collect()).collect();
    let request = ClassifyRequest { images: vec![GrayImage::from_rows(&rows).unwrap()], top_k: 10 };
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let response = rt.block_on(runtime.classify(&info.id, request)).unwrap();
    assert_eq!(response.model, info.id);
    response.predictions[0].iter().map(|p| (p.label.clone(), p.score)).collect()
}

/// What every run must deliver: a loadable bundle that serves, the summary, the learning curve.
fn check_run(cfg: &TrainConfig, summary: &TrainSummary) -> Bundle {
    assert_eq!(summary.method, cfg.method.name());
    let bundle = Bundle::load(&cfg.out).unwrap();
    assert_eq!(bundle.manifest.provenance.recipe, cfg.method.name());
    assert_eq!(bundle.id, summary.bundle_id);
    let arch = &bundle.manifest.classifier().unwrap().architecture;
    assert_eq!(summary.params, arch.num_params().unwrap());
    assert!(summary.test_n > 0 && (0.0..=1.0).contains(&summary.test_accuracy));
    assert!(summary.history.iter().all(|r| r.train_loss.is_finite() && r.val_loss.is_finite()));
    let predictions = classify_through_runtime(&cfg.out);
    assert_eq!(predictions.len(), 10);
    let total: f32 = predictions.iter().map(|p| p.1).sum();
    assert!((total - 1.0).abs() < 1e-3, "{total}");
    assert!(predictions.windows(2).all(|w| w[0].1 >= w[1].1));
    let curve = image::open(cfg.curve_path()).unwrap();
    assert!(curve.width() > 100 && curve.height() > 100);
    assert_eq!(summary.curve.as_deref(), Some(cfg.curve_path().to_str().unwrap()));
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(cfg.summary_path()).unwrap()).unwrap();
    assert_eq!(saved["bundle_id"], summary.bundle_id.as_str());
    bundle
}

#[test]
fn supervised_with_rs2_subsets_and_ghost_batch_norm() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "sup", "tiny", Method::Supervised, None);
    cfg.subset_fraction = Some(0.5);
    cfg.ghost_batch = Some(8);
    let summary = train(&cfg).unwrap();
    let bundle = check_run(&cfg, &summary);
    assert_eq!(summary.history.len(), 2);
    let h = &bundle.manifest.provenance.hyperparameters;
    assert_eq!(h["subset_fraction"], 0.5);
    assert_eq!(h["ghost_batch"], 8);
    assert_eq!(h["subset_sampling"], "rs2-without-replacement");
}

#[test]
fn kd_distills_from_a_teacher() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = teacher(dir.path());
    let cfg = config(dir.path(), "kd", "tiny", Method::Kd { temperature: 4.0, alpha: 0.7 }, Some(teacher));
    let summary = train(&cfg).unwrap();
    let bundle = check_run(&cfg, &summary);
    assert!(bundle.manifest.provenance.teacher.is_some());
}

#[test]
fn dhkd_trains_two_heads_and_serves_the_main_one() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = teacher(dir.path());
    let method = Method::Dhkd { temperature: 2.0, alpha: 1.0, gamma: 1.0 };
    let cfg = config(dir.path(), "dhkd", "tiny", method, Some(teacher));
    let summary = train(&cfg).unwrap();
    let bundle = check_run(&cfg, &summary);
    let arch = &bundle.manifest.classifier().unwrap().architecture;
    assert!(arch.aux_head);
    assert_eq!(bundle.manifest.classifier().unwrap().inference, InferenceSpec::MainHead);
    assert_eq!(bundle.manifest.provenance.hyperparameters["gamma"], 1.0);
    assert!(summary.history.iter().all(|r| r.extra.contains_key("val_aux_accuracy")));
}

#[test]
fn dho_uses_a_fraction_of_the_labels_and_serves_the_chosen_mixture() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = teacher(dir.path());
    let method = Method::Dho { temperature: 2.0, labeled_fraction: 0.1, weights: DhoWeights::FewShot };
    let cfg = config(dir.path(), "dho", "tiny", method, Some(teacher));
    let summary = train(&cfg).unwrap();
    let bundle = check_run(&cfg, &summary);
    let mixture = summary.head_mixture.clone().unwrap();
    assert!(ALPHAS.contains(&mixture.alpha) && BETAS.contains(&mixture.beta));
    assert!(mixture.val_accuracy >= mixture.main_head_val_accuracy.max(mixture.aux_head_val_accuracy));
    assert_eq!(summary.val_accuracy, mixture.val_accuracy);
    assert_eq!(
        bundle.manifest.classifier().unwrap().inference,
        InferenceSpec::HeadMixture { alpha: mixture.alpha as f32, beta: mixture.beta as f32 }
    );
    let h = &bundle.manifest.provenance.hyperparameters;
    assert_eq!(h["labeled_fraction"], 0.1);
    assert_eq!(h["dho_weights"], "few-shot");
    // 20 of 200 images keep labels: each step pairs as many labeled with unlabeled images, so the
    // epoch's training accuracy is measured on (cycled) labeled images only.
    assert_eq!(summary.history.len(), 2);
}

#[test]
fn label_budgets_apply_to_supervised_and_kd_but_not_pskd() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = teacher(dir.path());
    let kd = Method::with_defaults("kd").unwrap();
    for (name, method, t) in [("sup-budget", Method::Supervised, None), ("kd-budget", kd, Some(teacher))] {
        let mut cfg = config(dir.path(), name, "tiny", method, t);
        cfg.labeled_fraction = Some(0.1);
        let summary = train(&cfg).unwrap();
        let bundle = check_run(&cfg, &summary);
        assert_eq!(bundle.manifest.provenance.hyperparameters["labeled_fraction"], 0.1);
    }
    let mut pskd = config(dir.path(), "pskd-budget", "tiny", Method::with_defaults("pskd").unwrap(), None);
    pskd.labeled_fraction = Some(0.1);
    assert!(train(&pskd).unwrap_err().to_string().contains("labeled fraction"));
}

#[test]
fn pskd_trains_without_a_teacher_and_resumes_with_its_table() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "pskd", "tiny", Method::Pskd { alpha: 0.8 }, None);
    let summary = train(&cfg).unwrap();
    check_run(&cfg, &summary);
    assert!(cfg.checkpoint_path().exists());
    // A resume of a finished run restores everything (table included) and only exports again.
    let resumed = train(&TrainConfig { resume: true, ..cfg.clone() }).unwrap();
    assert_eq!(resumed.history.len(), summary.history.len());
    for (a, b) in resumed.history.iter().zip(&summary.history) {
        assert_eq!((a.epoch, a.val_accuracy), (b.epoch, b.val_accuracy));
        assert!((a.train_loss - b.train_loss).abs() < 1e-9);
    }
    // Other settings are refused on resume.
    let other = TrainConfig { resume: true, method: Method::Pskd { alpha: 0.5 }, ..cfg };
    assert!(train(&other).unwrap_err().to_string().contains("other settings"));
}

#[test]
fn dual_io_merges_branches_and_unfreezes_progressively() {
    let dir = tempfile::tempdir().unwrap();
    for (merge, name) in [(MergeRule::Average, "dual-avg"), (MergeRule::A, "dual-a")] {
        let mut cfg = config(dir.path(), name, "tiny", Method::DualIo { merge, stage_epochs: 1 }, None);
        cfg.epochs = 1;
        let summary = train(&cfg).unwrap();
        let bundle = check_run(&cfg, &summary);
        // tiny: one convolution, so two stages (head, then everything) after one branch epoch.
        let stages: Vec<Option<&str>> = summary.history.iter().map(|r| r.stage.as_deref()).collect();
        assert_eq!(stages, vec![Some("branches"), Some("head"), Some("unfreeze-1")]);
        let report = summary.dual_io.clone().unwrap();
        assert_eq!(report.merge, merge.name());
        assert_eq!(report.unfreeze_stages, 2);
        if merge == MergeRule::A {
            // Keeping branch A unchanged reproduces its validation accuracy exactly.
            assert_eq!(report.merged_val_accuracy, report.branch_a_val_accuracy);
        }
        let arch = &bundle.manifest.classifier().unwrap().architecture;
        assert!(!arch.aux_head);
        assert_eq!(bundle.manifest.provenance.hyperparameters["merge"], merge.name());
        let resumed = train(&TrainConfig { resume: true, ..cfg }).unwrap();
        assert_eq!(resumed.dual_io, summary.dual_io);
    }
}
