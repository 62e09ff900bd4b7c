//! The loop on a toy family: a line fitted to noisy points, with a counter as checkpointed state.

use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use rand::Rng;

use super::*;
use crate::data::epoch_order;

const POINTS: usize = 20;

/// Fits `w · x` to `3 · x` plus noise drawn from the epoch's generator, four points per step.
struct Line {
    vars: VarMap,
    w: Var,
    /// Steps taken, as checkpointed state.
    seen: Var,
    seen_steps: f32,
    plan: Plan,
    constant_from: usize,
}

impl Line {
    fn new(plan: Plan, constant_from: usize) -> Line {
        let vars = VarMap::new();
        vars.get(1, "w", candle_nn::Init::Const(0.0), DType::F32, &Device::Cpu).unwrap();
        let w = vars.data().lock().unwrap()["w"].clone();
        let seen = Var::zeros(1, DType::F32, &Device::Cpu).unwrap();
        Line { vars, w, seen, seen_steps: 0.0, plan, constant_from }
    }
}

impl Family for Line {
    type Batch = Vec<usize>;

    const ITEM: &'static str = "point";

    fn trainable(&self) -> Vec<(String, VarMap)> {
        vec![("line.".into(), self.vars.clone())]
    }

    fn state(&self) -> Vec<(String, Var)> {
        vec![("toy.seen".into(), self.seen.clone())]
    }

    fn plan(&self) -> Plan {
        self.plan
    }

    fn epoch_plan(&self, epoch: usize) -> EpochPlan {
        if epoch < self.constant_from {
            return EpochPlan::default();
        }
        EpochPlan { stage: Some("flat".into()), constant_lr: Some(0.5e-2) }
    }

    fn restored(&mut self) -> Result<()> {
        self.seen_steps = self.seen.as_tensor().to_vec1::<f32>()?[0];
        Ok(())
    }

    fn batches(&self, epoch: usize) -> Vec<Vec<usize>> {
        epoch_order(POINTS, 1, epoch).chunks(POINTS / self.plan.steps_per_epoch).map(<[usize]>::to_vec).collect()
    }

    fn step(&mut self, _epoch: usize, batch: &Vec<usize>, rng: &mut StdRng) -> Result<StepOutput> {
        let x: Vec<f32> = batch.iter().map(|&i| i as f32 / POINTS as f32).collect();
        let y: Vec<f32> = x.iter().map(|x| 3.0 * x + rng.random_range(-0.1..0.1)).collect();
        let x = Tensor::new(x, &Device::Cpu)?;
        let y = Tensor::new(y, &Device::Cpu)?;
        let loss = x.broadcast_mul(self.w.as_tensor())?.sub(&y)?.sqr()?.mean_all()?;
        self.seen_steps += 1.0;
        Ok(StepOutput { loss, hits: 0, n: batch.len(), items: batch.len() })
    }

    fn validate(&mut self, _epoch: usize) -> Result<Validation> {
        let w = self.w.as_tensor().to_vec1::<f32>()?[0];
        Ok(Validation { loss: f64::from((w - 3.0).abs()), ..Validation::default() })
    }

    fn save_state(&mut self) -> Result<()> {
        self.seen.set(&Tensor::new(&[self.seen_steps], &Device::Cpu)?)?;
        Ok(())
    }

    fn export(&self, _history: &[EpochRecord]) -> Result<Export> {
        Err(Error::InvalidArgument("the toy family exports nothing".into()))
    }

    fn test(&self, _dir: &Path) -> Result<TestReport> {
        Err(Error::InvalidArgument("the toy family has no test split".into()))
    }
}

const PLAN: Plan = Plan { epochs: 4, steps_per_epoch: 4, cosine_epochs: 3, cosine_from: 0 };

fn settings(dir: &Path, resume: bool) -> LoopSettings {
    LoopSettings {
        name: "line".into(),
        seed: 9,
        optim: AdamWConfig { lr: 0.1, ..AdamWConfig::default() },
        warmup_fraction: 0.25,
        clip_grad_norm: None,
        out: dir.join("line"),
        checkpoint: dir.join("line.checkpoint.safetensors"),
        summary: dir.join("line.summary.json"),
        curve: dir.join("line.curve.png"),
        resume,
        progress: false,
        fingerprint: "toy".into(),
        weights_dtype: DType::F32,
    }
}

/// Runs epochs `..until` (resuming first when `settings.resume`); returns the weight, the
/// family's step counter and the loop state.
fn train_until(settings: &LoopSettings, until: usize) -> (f32, f32, CheckpointState) {
    let mut trainer = Trainer::new(Line::new(PLAN, 3), settings).unwrap();
    trainer.start_or_resume().unwrap();
    for epoch in trainer.state.epochs_done..until {
        trainer.epoch(epoch).unwrap();
    }
    let w = trainer.family.w.as_tensor().to_vec1::<f32>().unwrap()[0];
    (w, trainer.family.seen_steps, trainer.state)
}

#[test]
fn a_resumed_run_ends_where_an_uninterrupted_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let whole = train_until(&settings(&dir.path().join("a"), false), 4);
    let cut = settings(&dir.path().join("b"), false);
    let half = train_until(&cut, 2);
    assert_ne!(half.0, whole.0);
    let resumed = train_until(&LoopSettings { resume: true, ..cut.clone() }, 4);
    assert_eq!(resumed.0.to_bits(), whole.0.to_bits());
    assert_eq!(resumed.1, 16.0, "the family's state was restored");
    assert_eq!((resumed.2.steps, resumed.2.epochs_done, resumed.2.history.len()), (16, 4, 4));
    assert!(0.0 < half.0 && half.0 < whole.0 && whole.0 < 3.0, "the line is not being fitted: {half:?} {whole:?}");
    // Another run's checkpoint is refused.
    let other = LoopSettings { resume: true, fingerprint: "other".into(), ..cut };
    let mut trainer = Trainer::new(Line::new(PLAN, 3), &other).unwrap();
    assert!(trainer.start_or_resume().unwrap_err().to_string().contains("other settings"));
}

#[test]
fn the_schedule_warms_up_decays_and_yields_to_constant_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), false);
    let trainer = Trainer::new(Line::new(PLAN, 3), &settings).unwrap();
    // Three cosine epochs of four steps, a quarter of them warm-up.
    assert_eq!((trainer.cosine_steps, trainer.warmup), (12, 3));
    let cosine = EpochPlan::default();
    assert!((trainer.lr(&cosine, 0) - 0.1 / 3.0).abs() < 1e-12);
    assert!((trainer.lr(&cosine, 2) - 0.1).abs() < 1e-12);
    assert!((trainer.lr(&cosine, 12) - 0.1 * COSINE_FLOOR).abs() < 1e-12);
    let (_, _, state) = train_until(&settings, 4);
    assert_eq!(state.history[3].lr, 0.5e-2);
    assert_eq!(state.history[3].stage.as_deref(), Some("flat"));
    assert!(state.history[2].lr < 0.1 && state.history[2].stage.is_none());
}

#[test]
fn clipping_changes_the_run_only_when_a_gradient_exceeds_it() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, clip: Option<f64>| {
        let settings = LoopSettings { clip_grad_norm: clip, ..settings(&dir.path().join(name), false) };
        train_until(&settings, 4).0.to_bits()
    };
    let plain = run("plain", None);
    assert_eq!(run("loose", Some(1e9)), plain);
    assert_ne!(run("tight", Some(1e-3)), plain);
}
