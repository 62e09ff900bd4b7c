//! The DDPM teacher family on the embedded digits, at test scale: it trains through the shared
//! loop, checkpoints and resumes, writes its sample grids, exports a `diffusion` bundle that the
//! runtime serves, and learns (its noise-prediction loss falls well below that of predicting 0).

use std::path::{Path, PathBuf};

use tandem_runtime::diffusion::{BetaSchedule, Solver};
use tandem_runtime::{GenerateRequest, Runtime, RuntimeConfig};
use tandem_training::data::DatasetName;
use tandem_training::families::common_run::CommonRun;
use tandem_training::families::consistency::{self, ConsistencyConfig, ConsistencyMethod, StudentParametrization};
use tandem_training::families::diffusion::{train, unet_preset, DiffusionConfig};
use tandem_training::families::image_generation::GenerationRun;
use tandem_training::optim::AdamWConfig;

fn judge() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/digits-student")
}

/// The shared run settings of the tests' tiny models on the digits.
fn run(name: &str, out: &Path, epochs: usize, lr: f64, seed: u64) -> GenerationRun {
    let optim = AdamWConfig { lr, weight_decay: 0.0, ..Default::default() };
    GenerationRun {
        common: CommonRun {
            name: name.into(),
            warmup_fraction: 0.05,
            seed,
            progress: false,
            ..CommonRun::new(out.to_path_buf(), name, epochs, 32, optim)
        },
        dataset: DatasetName::Digits,
        data_dir: out.with_file_name("data"),
        arch_name: "unet-tiny".into(),
        arch: unet_preset("unet-tiny", 8, 10).unwrap(),
        train_limit: None,
        ema_decay: 0.99,
        class_dropout: 0.1,
        judge: judge(),
        val_samples_per_class: 2,
        test_samples_per_class: 3,
    }
}

fn config(out: &Path, epochs: usize) -> DiffusionConfig {
    DiffusionConfig {
        run: run("digits-ddpm", out, epochs, 3e-3, 3),
        schedule: BetaSchedule::Cosine { s: 0.008 },
        train_steps: 1000,
        guidance: 2.0,
        eval_sampler: Solver::DpmSolverPP2M,
        eval_steps: 4,
    }
}

#[test]
fn a_tiny_ddpm_trains_resumes_exports_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ddpm");
    let first = train(&config(&out, 2)).unwrap();
    // Predicting ε = 0 scores a mean squared error of 1; an epoch on the digits already beats it,
    // and the second epoch improves on the first.
    let losses: Vec<f64> = first.history.iter().map(|r| r.val_loss).collect();
    assert!(losses[0] < 0.8 && losses[1] < losses[0], "validation noise-prediction errors {losses:?}");
    for epoch in ["001", "002"] {
        assert!(out.with_file_name(format!("ddpm.samples-epoch-{epoch}.png")).exists());
    }
    assert_eq!(first.test_n, 30);
    assert!((0.0..=1.0).contains(&first.test_accuracy));

    // Resuming a finished run trains nothing more and exports the same weights (the average).
    let weights = || std::fs::read(out.join("model.safetensors")).unwrap();
    let exported = weights();
    let mut again = config(&out, 2);
    again.run.common.resume = true;
    let resumed = train(&again).unwrap();
    assert_eq!(resumed.history, first.history);
    assert!(weights() == exported, "the resumed export differs");

    let rt = Runtime::new(RuntimeConfig::default());
    rt.load(&out).unwrap();
    let request = GenerateRequest {
        class: Some(7),
        n: 2,
        steps: 5,
        sampler: "unipc".into(),
        seed: 1,
        guidance: None,
        dualfast: None,
        sigmas: None,
    };
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let res = tokio.block_on(rt.generate("digits-ddpm", request)).unwrap();
    assert_eq!((res.images.len(), res.images[0].width, res.images[0].height), (2, 8, 8));
}

fn consistency_config(out: &Path, method: ConsistencyMethod) -> ConsistencyConfig {
    let base = run("digits-cm", out, 1, 1e-3, 5);
    let run = GenerationRun {
        common: CommonRun { batch_size: 64, ..base.common.clone() },
        train_limit: Some(256),
        test_samples_per_class: 2,
        ..base
    };
    let cd = matches!(method, ConsistencyMethod::Cd { .. });
    ConsistencyConfig {
        init_from_teacher: cd,
        sigma_mid_candidates: vec![0.4, 1.6],
        parametrization: if cd {
            StudentParametrization::FromTeacherEps { timestep_scaling: 10.0 }
        } else {
            StudentParametrization::Edm
        },
        ..ConsistencyConfig::new(run, method)
    }
}

/// CD from a one-epoch DDPM and iCT from scratch each train an epoch through the loop, choose their
/// intermediate σ among the candidates on validation, and export a bundle the runtime samples.
#[test]
fn tiny_consistency_students_train_by_cd_and_ict_and_serve() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = dir.path().join("ddpm");
    let mut teacher_cfg = config(&teacher, 1);
    (teacher_cfg.run.train_limit, teacher_cfg.run.test_samples_per_class) = (Some(256), 1);
    train(&teacher_cfg).unwrap();
    let cd = ConsistencyMethod::Cd { teacher: teacher.clone(), grid: 10, guidance: 2.0 };
    for (name, method) in [("cd", cd), ("ict", ConsistencyMethod::Ict { s0: 10, s1: 1280 })] {
        let out = dir.path().join(name);
        let summary = consistency::train(&consistency_config(&out, method)).unwrap();
        assert_eq!(summary.method, name);
        assert_eq!(summary.test_n, 20);
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
        let mid = manifest["metrics"]["sigma_mid"].as_f64().unwrap();
        assert!([0.4, 1.6].contains(&mid), "{name}: sigma_mid {mid}");
        assert_eq!(manifest["family"]["sigmas"]["2"][1].as_f64(), Some(mid));
        // CD's student predicts ε on the teacher's schedule, which its bundle carries.
        let parametrization = &manifest["family"]["parametrization"];
        let expected = if name == "cd" { "from_eps" } else { "edm" };
        assert_eq!(parametrization["type"], expected, "{name}: {parametrization}");
        if name == "cd" {
            assert_eq!(parametrization["schedule"]["type"], "cosine");
            assert_eq!(parametrization["train_steps"], 1000);
        }
        let rt = Runtime::new(RuntimeConfig::default());
        rt.load(&out).unwrap();
        let request = GenerateRequest {
            class: Some(1),
            n: 3,
            steps: 2,
            sampler: "consistency".into(),
            seed: 9,
            guidance: None,
            dualfast: None,
            sigmas: None,
        };
        let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let res = tokio.block_on(rt.generate("digits-cm", request)).unwrap();
        assert_eq!((res.nfe, res.images.len()), (2, 3));
    }
}
