//! A run's weights are a function of its settings and seed, bit for bit, and refactors keep them.
//!
//! Each case trains for a few seconds on the embedded digits and compares the sha256 of the
//! exported `model.safetensors` with the one the same settings wrote when the hash was recorded.
//! The hashes were recorded before the training loop was split into a loop shared by every model
//! family, a family trait and per-method modules (issue 9), so they hold that refactor to the old
//! order of every random draw and every floating-point operation. The `kd` case is the documented
//! `tandem distill` command of `models/mnist-student` (student preset, KD defaults, shift 2,
//! seed 1, the CLI's optimiser defaults) at digits scale.
//!
//! What the hashes depend on besides the code: the kernels sum weight gradients per rayon worker,
//! so every case runs in a pool of [`THREADS`] workers; and the ISA and caches decide the order of
//! candle's matmul sums (`tandem_runtime::testing_bits`), so each case keeps one hash per recorded
//! machine. Elsewhere the test requires two runs of each case to agree and prints the hashes.
//!
//! Checkpoints are a compatibility promise too: `tests/data/` holds checkpoints that the code
//! before the split wrote after one epoch of PS-KD (with its prediction table) and of dual-io (with
//! both branches), and the current code must resume them, with the same fingerprint, to the
//! weights of an uninterrupted run.
//!
//! A change that is meant to change the weights updates the table with the hashes the failure
//! message prints, and says why in its commit message.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tandem_runtime::testing_bits::{machine_signature, recorded_machine, RECORDED_MACHINES};
use tandem_training::checkpoint::CheckpointState;
use tandem_training::data::{Augment, DatasetName};
use tandem_training::methods::{DhoWeights, MergeRule};
use tandem_training::optim::AdamWConfig;
use tandem_training::{arch, train, Method, TrainConfig};

/// Workers of the pool every case runs in (the CI machine's core count).
const THREADS: usize = 2;

/// One run: a name, the settings that differ from [`base`], and the recorded hash.
struct Case {
    name: &'static str,
    method: Method,
    preset: &'static str,
    tweak: fn(&mut TrainConfig),
    /// The recorded hashes, one per machine of [`RECORDED_MACHINES`].
    sha256: [&'static str; 2],
}

fn no_tweak(_: &mut TrainConfig) {}

/// The CLI's defaults (`tandem train --dataset digits`) on a 400-image slice, for two epochs.
fn base(dir: &Path, name: &str, preset: &str, method: Method, teacher: Option<PathBuf>) -> TrainConfig {
    TrainConfig {
        name: name.into(),
        version: "1".into(),
        dataset: DatasetName::Digits,
        data_dir: dir.join("data"),
        arch: arch::preset(preset, 8, 10).unwrap(),
        method,
        teacher,
        epochs: 2,
        batch_size: 64,
        optim: AdamWConfig { lr: 3e-3, weight_decay: 1e-4, ..Default::default() },
        warmup_fraction: 0.05,
        seed: 0,
        augment: Augment::shift(1),
        train_limit: Some(400),
        out: dir.join(name),
        resume: false,
        progress: false,
        subset_fraction: None,
        ghost_batch: None,
        labeled_fraction: None,
        clip_grad_norm: None,
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Trains `cfg` in a pool of [`THREADS`] workers and returns the sha256 of the weights it wrote.
fn weights_sha256(cfg: &TrainConfig) -> String {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(THREADS).build().unwrap();
    pool.install(|| train(cfg)).unwrap();
    sha256_hex(&std::fs::read(cfg.out.join("model.safetensors")).unwrap())
}

/// Runs every case (the teacher first) and compares each hash with its record, reporting all
/// mismatches at once.
#[track_caller]
fn check(teacher: Case, students: &[Case]) {
    let dir = tempfile::tempdir().unwrap();
    let recorded = recorded_machine();
    let mut teacher_cfg = base(dir.path(), teacher.name, teacher.preset, teacher.method.clone(), None);
    (teacher.tweak)(&mut teacher_cfg);
    let mut got = vec![(teacher.name, weights_sha256(&teacher_cfg), teacher.sha256)];
    for case in students {
        let t = case.method.needs_teacher().then(|| teacher_cfg.out.clone());
        let mut cfg = base(dir.path(), case.name, case.preset, case.method.clone(), t);
        (case.tweak)(&mut cfg);
        let hash = weights_sha256(&cfg);
        if recorded.is_none() {
            cfg.out = dir.path().join(format!("{}-again", case.name));
            assert_eq!(weights_sha256(&cfg), hash, "{}: two runs of one config wrote different weights", case.name);
        }
        got.push((case.name, hash, case.sha256));
    }
    let Some(machine) = recorded else {
        let hashes: Vec<String> = got.iter().map(|(name, hash, _)| format!("{name}: {hash}")).collect();
        eprintln!("no hashes recorded for {}; this machine wrote:\n{}", machine_signature(), hashes.join("\n"));
        return;
    };
    let wrong: Vec<String> = got
        .iter()
        .filter(|(_, hash, expected)| hash != expected[machine])
        .map(|(name, hash, expected)| format!("{name}: wrote {hash}, recorded {}", expected[machine]))
        .collect();
    assert!(wrong.is_empty(), "weights changed on {}:\n{}", RECORDED_MACHINES[machine], wrong.join("\n"));
}

#[test]
fn issue_9_every_method_writes_the_recorded_weights() {
    let teacher = Case {
        name: "teacher",
        method: Method::Supervised,
        preset: "teacher",
        tweak: |c| c.epochs = 3,
        sha256: [
            "2a6b994a6c6b3cdfd7d89e7341726ba4b9d424fff0fd6650cdee88de05bdf70f",
            "a272ea0bcd4ac92ef120275432d5ac574df60b7a74d3d11ca2a46008010a3500",
        ],
    };
    let students = [
        Case {
            name: "supervised-rs2-ghost",
            method: Method::Supervised,
            preset: "student",
            tweak: |c| {
                c.subset_fraction = Some(0.5);
                c.ghost_batch = Some(16);
            },
            sha256: [
                "83b262ad0bf0b6e03df08d2efe7c29667feec14b5963c7646c4d66ce271b010f",
                "83b262ad0bf0b6e03df08d2efe7c29667feec14b5963c7646c4d66ce271b010f",
            ],
        },
        Case {
            name: "supervised-budget",
            method: Method::Supervised,
            preset: "tiny",
            tweak: |c| c.labeled_fraction = Some(0.2),
            sha256: [
                "1e39a4e075f66c3a50a50052958fa175ec253728821acf5046397f636ece22c7",
                "1e39a4e075f66c3a50a50052958fa175ec253728821acf5046397f636ece22c7",
            ],
        },
        Case {
            name: "kd",
            method: Method::Kd { temperature: 4.0, alpha: 0.7 },
            preset: "student",
            tweak: |c| {
                c.augment = Augment::shift(2);
                c.seed = 1;
            },
            sha256: [
                "da9a55d7cf280d272fbfaa154654f8fdb51b8b40bd624d6816688aa203bbeee2",
                "6f2f8fe7ab304d024e61dfc5add15acf1f86ca95fda35bfb59e83240df1cd6e8",
            ],
        },
        Case {
            name: "kd-budget",
            method: Method::Kd { temperature: 4.0, alpha: 0.7 },
            preset: "tiny",
            tweak: |c| c.labeled_fraction = Some(0.3),
            sha256: [
                "88d1a69b62d642222497216c8b460aa996d21620d7737f14091d25a88bd20be6",
                "3bc226e103cd2d9ff531e3cb29e5c86b404378b54f266c5509c9e053dbf68d2c",
            ],
        },
        Case {
            name: "dhkd",
            method: Method::Dhkd { temperature: 2.0, alpha: 1.0, gamma: 1.0 },
            preset: "student",
            tweak: no_tweak,
            sha256: [
                "5f285f1a6075b4672ebf6630550c0f421e9b1c1485be10d478a0f56009fcc07b",
                "5234e6a0615a17f044872b83fa3e873513f8473a406a457bcf4524d612b4b68d",
            ],
        },
        Case {
            name: "dho",
            method: Method::Dho { temperature: 2.0, labeled_fraction: 0.2, weights: DhoWeights::FewShot },
            preset: "student",
            tweak: no_tweak,
            sha256: [
                "8dcc1523ee0cadde1292c487c87009ee3a6ff67f41b24bd1ca7f00d1d500c4e0",
                "1f1e332fb99531107740bf725c14dd5084de4678bfc8773ad6b197ec1559bf90",
            ],
        },
        Case {
            name: "pskd",
            method: Method::Pskd { alpha: 0.8 },
            preset: "student",
            tweak: |c| {
                c.epochs = 3;
                c.augment.max_rotation_deg = 10.0;
            },
            sha256: [
                "09c7c60ed0567f736923c8870f593700a3cd3fe335542c5b12de68bee728dd6c",
                "09c7c60ed0567f736923c8870f593700a3cd3fe335542c5b12de68bee728dd6c",
            ],
        },
        Case {
            name: "dual-io",
            method: Method::DualIo { merge: MergeRule::Average, stage_epochs: 1 },
            preset: "student",
            tweak: |c| c.epochs = 1,
            sha256: [
                "5ccec648ce58740b0948600474cb695b0714e9238464e43575327b55272cb9d7",
                "5ccec648ce58740b0948600474cb695b0714e9238464e43575327b55272cb9d7",
            ],
        },
    ];
    check(teacher, &students);
}

/// The loop state in a checkpoint's metadata.
fn checkpoint_state(path: &Path) -> CheckpointState {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    serde_json::from_str(&meta.metadata().as_ref().unwrap()["tandem.state"]).unwrap()
}

#[test]
fn issue_9_checkpoints_written_before_the_split_still_resume() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let dual_io = Method::DualIo { merge: MergeRule::Average, stage_epochs: 1 };
    let cases = [
        (
            "pskd",
            Method::Pskd { alpha: 0.8 },
            3,
            [
                "bac6d8205a268fdea893d39406c2c05826ce86e96bf09bf2171e6769fa76cd28",
                "bac6d8205a268fdea893d39406c2c05826ce86e96bf09bf2171e6769fa76cd28",
            ],
        ),
        (
            "dual-io",
            dual_io,
            1,
            [
                "5f7db14abbd8eedf889faffba0b114f83cb4231c87359e877c80a0357dede97a",
                "5f7db14abbd8eedf889faffba0b114f83cb4231c87359e877c80a0357dede97a",
            ],
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut wrong = Vec::new();
    for (name, method, epochs, sha256) in cases {
        let mut cfg = base(dir.path(), name, "tiny", method, None);
        (cfg.epochs, cfg.train_limit, cfg.resume) = (epochs, Some(200), true);
        let fixture = fixtures.join(format!("{name}-after-epoch-1.checkpoint.safetensors"));
        std::fs::copy(&fixture, cfg.checkpoint_path()).unwrap();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(THREADS).build().unwrap();
        let summary = pool.install(|| train(&cfg)).unwrap();
        // The first epoch is the checkpoint's, timings included: the run resumed, not restarted.
        assert_eq!(summary.history[0], checkpoint_state(&fixture).history[0], "{name}");
        let hash = sha256_hex(&std::fs::read(cfg.out.join("model.safetensors")).unwrap());
        match recorded_machine() {
            Some(machine) if hash != sha256[machine] => {
                wrong.push(format!("{name}: the resumed run wrote {hash}, recorded {}", sha256[machine]))
            }
            Some(_) => {}
            None => eprintln!("no hashes recorded for {}; the resumed {name} wrote {hash}", machine_signature()),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
