//! The consistency-model family: the runtime's [`ConsistencyNet`] (a UNet in the consistency
//! parametrization) trained so that f(x_σ, σ) is the same clean image for every σ of one noising
//! path, exported as a `consistency` bundle that samples in one or a few steps.
//!
//! Two methods share the loop, the model and the loss (iCT's pseudo-Huber over the whole sample):
//! - iCT from scratch: the pair is x + σ_{i+1}·z and x + σ_i·z with the same z, on iCT's doubling
//!   curriculum and lognormal noise levels, weighted by 1/(σ_{i+1} − σ_i), against the student itself
//!   without gradient (no EMA teacher);
//! - CD: the lower point is one DDIM (Euler) step of the guided DDPM teacher from the upper one, on a
//!   fixed Karras grid. The teacher is variance-preserving and the student variance-exploding; the
//!   two meet in [`CdTeacher::step`]: x_VP = x_VE/√(1 + σ²) and the teacher's timestep is the one
//!   whose σ_t/α_t is σ ([`NoiseSchedule::time_at_ve_sigma`]).
//!
//! Validation judges two-step samples with a classifier bundle, like the DDPM family; at export
//! the intermediate σ of two- and four-step sampling is chosen among candidates on validation.

mod config;
pub mod loss;

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tandem_runtime::bundle::{now_rfc3339, Bundle, ConsistencySpec, FamilySpec, Manifest, Provenance, SCHEMA_VERSION};
use tandem_runtime::diffusion::{karras_sigmas, BetaSchedule, NoiseSchedule};
use tandem_runtime::families::generator::{image_grid, GenerateRequest, Generator, CONSISTENCY_SAMPLER};
use tandem_runtime::models::consistency::{ConsistencyNet, Parametrization};
use tandem_runtime::models::unet::UNet;

use super::diffusion::{dropped_classes, judged_samples, model_space, normals, zero_output, Ema};
use crate::data::{self, Dataset, Split};
use crate::init::seeded_init;
use crate::report::{EpochRecord, TrainSummary};
use crate::trainer::{self, Export, Family, Plan, StepOutput, TestReport, Validation};
use crate::{Error, Result};

pub use config::{ConsistencyConfig, ConsistencyMethod, StudentParametrization};

/// Trains a consistency model: checkpoints every epoch, exports the bundle and measures it.
pub fn train(cfg: &ConsistencyConfig) -> Result<TrainSummary> {
    cfg.validate()?;
    trainer::run(ConsistencyStudent::new(cfg)?, &cfg.loop_settings())
}

/// The ρ of every Karras grid here.
const RHO: f64 = 7.0;

/// The frozen DDPM teacher of CD.
struct CdTeacher {
    net: UNet,
    /// The teacher's β schedule and steps, which a `from_eps` student takes over.
    beta: BetaSchedule,
    train_steps: usize,
    schedule: NoiseSchedule,
    guidance: f64,
    grid: Vec<f64>,
}

impl CdTeacher {
    /// One DDIM step of the guided teacher in VE terms, from `x` at σ_hi to σ_lo per image,
    /// with the teacher's noise estimate ε̂ at the VP point x/√(1 + σ_hi²) and timestep t(σ_hi).
    /// As served, the step goes through the clipped data estimate x̂₀ = clip(x − σ_hi·ε̂, ±1):
    /// x_lo = x̂₀ + (σ_lo/σ_hi)·(x − x̂₀), which is x + (σ_lo − σ_hi)·ε̂ wherever nothing is clipped.
    /// Without the clip, the teacher's error at the top of the grid (where ᾱ is tiny) became the
    /// student's target there.
    fn step(&self, x: &Tensor, hi: &[f64], lo: &[f64], classes: &[u32]) -> Result<Tensor> {
        let n = hi.len();
        let device = x.device();
        let col = |v: Vec<f32>| Tensor::from_vec(v, (n, 1, 1, 1), device);
        let to_vp = col(hi.iter().map(|s| (1.0 / (1.0 + s * s).sqrt()) as f32).collect())?;
        let x_vp = x.broadcast_mul(&to_vp)?;
        let t: Vec<f32> = hi.iter().map(|&s| self.schedule.time_at_ve_sigma(s) as f32).collect();
        let null = self.net.null_class();
        let eps = if self.guidance == 1.0 {
            self.net.forward(&x_vp, &t, classes, false)?
        } else {
            let both = Tensor::cat(&[&x_vp, &x_vp], 0)?;
            let mut k = classes.to_vec();
            k.extend(std::iter::repeat_n(null, n));
            let tt: Vec<f32> = t.iter().chain(&t).copied().collect();
            let out = self.net.forward(&both, &tt, &k, false)?;
            let (cond, uncond) = (out.narrow(0, 0, n)?, out.narrow(0, n, n)?);
            (&uncond + ((cond - &uncond)? * self.guidance)?)?
        };
        let x0 = (x - eps.broadcast_mul(&col(hi.iter().map(|&h| h as f32).collect())?)?)?.clamp(-1f32, 1f32)?;
        let ratio = col(hi.iter().zip(lo).map(|(h, l)| (l / h) as f32).collect())?;
        Ok((&x0 + (x - &x0)?.broadcast_mul(&ratio)?)?.detach())
    }
}

/// One run of the family.
pub struct ConsistencyStudent<'a> {
    cfg: &'a ConsistencyConfig,
    train_set: Dataset,
    vars: VarMap,
    net: ConsistencyNet,
    ema: Ema,
    ema_net: ConsistencyNet,
    teacher: Option<CdTeacher>,
    /// The runtime's form of the student's parametrization (the teacher's schedule filled in).
    parametrization: Parametrization,
    steps_per_epoch: usize,
    device: Device,
}

impl<'a> ConsistencyStudent<'a> {
    /// Loads the data and the teacher, builds and seeds the student and its average.
    pub fn new(cfg: &'a ConsistencyConfig) -> Result<ConsistencyStudent<'a>> {
        let device = tandem_runtime::device::default_device();
        let mut train_set = data::load(cfg.run.dataset, Split::Train, &cfg.run.data_dir)?;
        if let Some(n) = cfg.run.train_limit {
            train_set = train_set.subset(&(0..n.min(train_set.len())).collect::<Vec<_>>());
        }
        let [_, h, w] = cfg.run.arch.image_shape;
        if train_set.is_empty()
            || (train_set.height, train_set.width) != (h, w)
            || train_set.num_classes() != cfg.run.arch.num_classes
        {
            return Err(Error::InvalidArgument(format!(
                "the UNet is for {h}x{w} images of {} classes; {}'s training split does not match",
                cfg.run.arch.num_classes, cfg.run.dataset
            )));
        }
        let teacher = match &cfg.method {
            ConsistencyMethod::Cd { teacher, grid, guidance } => {
                Some(load_teacher(teacher, *grid, *guidance, cfg, &device)?)
            }
            ConsistencyMethod::Ict { .. } => None,
        };
        let parametrization = match (cfg.parametrization, &teacher) {
            (StudentParametrization::Edm, _) => Parametrization::Edm,
            (StudentParametrization::FromTeacherEps { timestep_scaling }, Some(t)) => {
                Parametrization::FromEps { schedule: t.beta, train_steps: t.train_steps, timestep_scaling }
            }
            (StudentParametrization::FromTeacherEps { .. }, None) => {
                return Err(Error::InvalidArgument("the from-eps parametrization needs a CD teacher".into()))
            }
        };
        let (vars, net) = build(cfg, &parametrization, &device)?;
        seeded_init(&vars, cfg.run.common.seed)?;
        zero_output(&vars)?;
        if cfg.init_from_teacher {
            let ConsistencyMethod::Cd { teacher, .. } = &cfg.method else {
                return Err(Error::InvalidArgument("--init-from-teacher needs CD".into()));
            };
            copy_weights(&Bundle::load(teacher)?, &vars)?;
        }
        if let Some(dir) = &cfg.init_from {
            copy_weights(&earlier_student(dir, &parametrization)?, &vars)?;
        }
        let (ema_vars, ema_net) = build(cfg, &parametrization, &device)?;
        let ema = Ema::new(&vars, ema_vars, cfg.run.ema_decay)?;
        let steps_per_epoch = train_set.len().div_ceil(cfg.run.common.batch_size);
        Ok(ConsistencyStudent {
            cfg,
            train_set,
            vars,
            net,
            ema,
            ema_net,
            teacher,
            parametrization,
            steps_per_epoch,
            device,
        })
    }

    /// The bundle's family section with the given σ lists.
    fn spec(&self, sigmas: BTreeMap<String, Vec<f64>>) -> ConsistencySpec {
        ConsistencySpec {
            architecture: self.cfg.run.arch.clone(),
            sigma_min: self.cfg.sigma_min,
            sigma_max: self.cfg.sigma_max,
            sigma_data: self.cfg.sigma_data,
            labels: self.train_set.classes.clone(),
            sigmas,
            parametrization: self.parametrization.clone(),
        }
    }

    /// The σ lists for 1, 2 and 4 steps around an intermediate σ.
    fn sigma_lists(&self, mid: f64) -> BTreeMap<String, Vec<f64>> {
        let max = self.cfg.sigma_max;
        let min = self.cfg.sigma_min * 1.0001;
        BTreeMap::from([
            ("1".into(), vec![max]),
            ("2".into(), vec![max, mid]),
            ("4".into(), vec![max, (mid * 4.0).min(max * 0.5), mid, (mid / 4.0).max(min)]),
        ])
    }

    /// The share of `steps`-step samples of `net` that the judge recognises, with seeds from `seed`.
    fn judge(
        &self,
        net: &ConsistencyNet,
        sigmas: BTreeMap<String, Vec<f64>>,
        steps: usize,
        seed: u64,
        per_class: usize,
    ) -> Result<(f64, Vec<std::sync::Arc<tandem_runtime::GeneratedImage>>)> {
        let generator = Generator::consistency(net.clone(), self.spec(sigmas), &self.device);
        let request = GenerateRequest {
            class: None,
            n: 1,
            steps,
            sampler: CONSISTENCY_SAMPLER.into(),
            seed,
            guidance: None,
            dualfast: None,
            sigmas: None,
        };
        judged_samples(&generator, &request, self.cfg.run.arch.num_classes, per_class, &self.cfg.run.judge)
    }

    /// The intermediate σ whose two-step samples the judge recognises best on validation seeds.
    fn choose_sigma_mid(&self) -> Result<(f64, BTreeMap<String, f64>)> {
        let mut scores = BTreeMap::new();
        let mut best = (f64::NEG_INFINITY, self.cfg.sigma_mid_candidates[0]);
        for &mid in &self.cfg.sigma_mid_candidates {
            let (acc, _) =
                self.judge(&self.ema_net, self.sigma_lists(mid), 2, 1_000, self.cfg.run.val_samples_per_class)?;
            scores.insert(format!("val_2step_accuracy_sigma_{mid}"), acc);
            if acc > best.0 {
                best = (acc, mid);
            }
        }
        Ok((best.1, scores))
    }
}

fn build(cfg: &ConsistencyConfig, p: &Parametrization, device: &Device) -> Result<(VarMap, ConsistencyNet)> {
    let vars = VarMap::new();
    let unet = UNet::new(&cfg.run.arch, VarBuilder::from_varmap(&vars, DType::F32, device))?;
    Ok((vars, ConsistencyNet::new(unet, cfg.sigma_min, cfg.sigma_data, p)?))
}

fn load_teacher(dir: &Path, grid: usize, guidance: f64, cfg: &ConsistencyConfig, device: &Device) -> Result<CdTeacher> {
    let bundle = Bundle::load(dir)?;
    let FamilySpec::Diffusion(spec) = &bundle.manifest.family else {
        return Err(Error::InvalidArgument(format!(
            "{} is a {} bundle, not a diffusion teacher",
            dir.display(),
            bundle.manifest.kind()
        )));
    };
    if spec.architecture.image_shape != cfg.run.arch.image_shape
        || spec.architecture.num_classes != cfg.run.arch.num_classes
    {
        return Err(Error::InvalidArgument("the teacher generates other images or classes than the student".into()));
    }
    let net = UNet::new(&spec.architecture, bundle.var_builder(device))?;
    let schedule = NoiseSchedule::new(spec.schedule, spec.train_steps)?;
    Ok(CdTeacher {
        net,
        beta: spec.schedule,
        train_steps: spec.train_steps,
        schedule,
        guidance,
        grid: karras_sigmas(grid, cfg.sigma_min, cfg.sigma_max, RHO),
    })
}

/// A trained `consistency` bundle to continue from; its parametrization must be the run's, since
/// the same weights mean another function under another one.
fn earlier_student(dir: &Path, parametrization: &Parametrization) -> Result<Bundle> {
    let bundle = Bundle::load(dir)?;
    match &bundle.manifest.family {
        FamilySpec::Consistency(spec) if &spec.parametrization == parametrization => Ok(bundle),
        FamilySpec::Consistency(spec) => Err(Error::InvalidArgument(format!(
            "{} was trained with the {:?} parametrization, this run uses {:?}",
            dir.display(),
            spec.parametrization,
            parametrization
        ))),
        other => Err(Error::InvalidArgument(format!(
            "--init-from takes a consistency bundle; {} is a {} bundle",
            dir.display(),
            other.kind()
        ))),
    }
}

/// Copies every tensor that the student has from a bundle, by name and shape (the whole UNet when
/// the architectures match).
fn copy_weights(bundle: &Bundle, vars: &VarMap) -> Result<()> {
    let data = vars.data().lock().expect("varmap lock poisoned. This is a bug.");
    let vb = bundle.var_builder(&Device::Cpu);
    for (name, var) in data.iter() {
        let t = vb
            .get(var.dims(), name)
            .map_err(|e| Error::InvalidArgument(format!("the teacher cannot initialise the student: {e}")))?;
        var.set(&t.to_device(var.device())?)?;
    }
    Ok(())
}

impl Family for ConsistencyStudent<'_> {
    type Batch = (usize, Vec<usize>);

    const ITEM: &'static str = "img";

    fn trainable(&self) -> Vec<(String, VarMap)> {
        vec![(String::new(), self.vars.clone())]
    }

    fn state(&self) -> Vec<(String, Var)> {
        self.ema.state("ema.")
    }

    fn plan(&self) -> Plan {
        Plan {
            epochs: self.cfg.run.common.epochs,
            steps_per_epoch: self.steps_per_epoch,
            cosine_epochs: self.cfg.run.common.epochs,
            cosine_from: 0,
        }
    }

    fn batches(&self, epoch: usize) -> Vec<(usize, Vec<usize>)> {
        let mut order: Vec<usize> = (0..self.train_set.len()).collect();
        let seed = self.cfg.run.common.seed.wrapping_mul(0x9e37_79b9).wrapping_add(epoch as u64);
        order.shuffle(&mut StdRng::seed_from_u64(seed));
        let first = epoch * self.steps_per_epoch;
        order.chunks(self.cfg.run.common.batch_size).enumerate().map(|(j, c)| (first + j, c.to_vec())).collect()
    }

    fn step(&mut self, _epoch: usize, batch: &(usize, Vec<usize>), rng: &mut StdRng) -> Result<StepOutput> {
        let (k, idx) = batch;
        let n = idx.len();
        let dim = self.cfg.run.arch.image_dim();
        let shape =
            (n, self.cfg.run.arch.image_shape[0], self.cfg.run.arch.image_shape[1], self.cfg.run.arch.image_shape[2]);
        let (lo, hi, weights) = match (&self.cfg.method, &self.teacher) {
            (ConsistencyMethod::Ict { s0, s1 }, _) => {
                let total = self.steps_per_epoch * self.cfg.run.common.epochs;
                let grid_n = loss::discretization_steps(*k, total, *s0, *s1);
                let grid = karras_sigmas(grid_n, self.cfg.sigma_min, self.cfg.sigma_max, RHO);
                let p = loss::interval_weights(&grid, self.cfg.p_mean, self.cfg.p_std);
                let i: Vec<usize> = (0..n).map(|_| loss::draw(&p, rng)).collect();
                let lo: Vec<f64> = i.iter().map(|&i| grid[i]).collect();
                let hi: Vec<f64> = i.iter().map(|&i| grid[i + 1]).collect();
                let w = lo.iter().zip(&hi).map(|(l, h)| 1.0 / (h - l)).collect::<Vec<f64>>();
                (lo, hi, w)
            }
            (ConsistencyMethod::Cd { .. }, Some(teacher)) => {
                let i: Vec<usize> = (0..n).map(|_| rng.random_range(0..teacher.grid.len() - 1)).collect();
                let lo: Vec<f64> = i.iter().map(|&i| teacher.grid[i]).collect();
                let hi: Vec<f64> = i.iter().map(|&i| teacher.grid[i + 1]).collect();
                // CD weighs pairs equally (λ = 1), in the units of the network's output: f's error
                // is the network's times |c_out|, which a from-eps student's σ makes 80 at the
                // top of the grid, so its pairs are divided by |c_out| (1 for an edm student,
                // whose c_out stays below σ_data).
                let w = hi
                    .iter()
                    .map(|&h| match self.parametrization {
                        Parametrization::Edm => 1.0,
                        Parametrization::FromEps { .. } => 1.0 / self.net.scalings(h).c_out.abs().max(1.0),
                    })
                    .collect();
                (lo, hi, w)
            }
            (ConsistencyMethod::Cd { .. }, None) => {
                return Err(Error::InvalidArgument("CD without a teacher. This is a bug.".into()))
            }
        };
        let classes =
            dropped_classes(&self.train_set, idx, self.net.unet().null_class(), self.cfg.run.class_dropout, rng);
        let x0 = Tensor::from_vec(model_space(&self.train_set, idx), shape, &self.device)?;
        let z = Tensor::from_vec(normals(rng, n * dim), shape, &self.device)?;
        let col =
            |v: &[f64]| Tensor::from_vec(v.iter().map(|s| *s as f32).collect::<Vec<_>>(), (n, 1, 1, 1), &self.device);
        let x_hi = (&x0 + z.broadcast_mul(&col(&hi)?)?)?;
        let x_lo = match &self.teacher {
            Some(teacher) => teacher.step(&x_hi, &hi, &lo, &classes)?,
            None => (&x0 + z.broadcast_mul(&col(&lo)?)?)?,
        };
        // The target is a data estimate: clamped to the data range, as the served sampler clamps
        // every step, so that its error at high σ (where an ε-predicting student multiplies its
        // network's error by σ) is not taught back.
        let target = self.net.forward(&x_lo, &lo, &classes, false)?.detach().clamp(-1f32, 1f32)?;
        let pred = self.net.forward(&x_hi, &hi, &classes, true)?;
        let d = loss::pseudo_huber(&pred, &target, loss::huber_c(dim))?;
        let w = Tensor::from_vec(weights.iter().map(|v| *v as f32).collect::<Vec<_>>(), n, &self.device)?;
        let loss = (d * w)?.mean_all()?;
        Ok(StepOutput { loss, hits: 0, n, items: n })
    }

    fn after_step(&mut self) -> Result<()> {
        self.ema.update(&self.vars)
    }

    fn restored(&mut self) -> Result<()> {
        self.ema.set_updates(u64::MAX / 2);
        Ok(())
    }

    fn validate(&mut self, epoch: usize) -> Result<Validation> {
        let mid = self.cfg.sigma_mid_candidates[self.cfg.sigma_mid_candidates.len() / 2];
        let per_class = self.cfg.run.val_samples_per_class;
        let (accuracy, images) = self.judge(&self.ema_net, self.sigma_lists(mid), 2, 1_000, per_class)?;
        let (one_step, _) = self.judge(&self.ema_net, self.sigma_lists(mid), 1, 1_000, per_class)?;
        let path = self.cfg.run.grid_path(epoch + 1);
        tandem_runtime::fs::atomic_write(&path, &image_grid(&images, per_class, 2)?)
            .map_err(|e| Error::io(&path, e))?;
        let extra = BTreeMap::from([("sample_accuracy".into(), accuracy), ("one_step_accuracy".into(), one_step)]);
        // The loss of consistency training is not comparable across the curriculum's stages; the
        // judged accuracy of two-step samples is the score, and 1 − accuracy stands in as the loss.
        Ok(Validation { loss: 1.0 - accuracy, accuracy, extra })
    }

    fn export(&self, history: &[EpochRecord]) -> Result<Export> {
        let cfg = self.cfg;
        let params = tandem_runtime::models::unet::parameter_count(&cfg.run.arch)?;
        let (mid, scores) = self.choose_sigma_mid()?;
        let sigmas = self.sigma_lists(mid);
        let val_accuracy = scores.values().copied().fold(f64::NEG_INFINITY, f64::max);
        let teacher = match &cfg.method {
            ConsistencyMethod::Cd { teacher, .. } => Some(Bundle::load(teacher)?.id),
            ConsistencyMethod::Ict { .. } => None,
        };
        let mut metrics = BTreeMap::from([
            ("params".into(), params as f64),
            ("val_2step_accuracy".into(), val_accuracy),
            ("sigma_mid".into(), mid),
            ("val_last_epoch_accuracy".into(), history.last().map_or(0.0, |r| r.val_accuracy)),
        ]);
        metrics.extend(scores);
        let mut hyperparameters = cfg.hyperparameters();
        if let Some(dir) = &cfg.init_from {
            hyperparameters.insert("init_from".into(), serde_json::json!(Bundle::load(dir)?.id));
        }
        let manifest = Manifest {
            schema_version: SCHEMA_VERSION,
            name: cfg.run.common.name.clone(),
            version: cfg.run.common.version.clone(),
            family: FamilySpec::Consistency(self.spec(sigmas)),
            files: Vec::new(),
            provenance: Provenance {
                dataset: cfg.run.dataset.to_string(),
                dataset_sha256: self.train_set.source_sha256.clone(),
                recipe: cfg.method.name().into(),
                hyperparameters,
                teacher,
            },
            metrics,
            created_at: now_rfc3339(),
        };
        Ok(Export {
            manifest,
            vars: self.ema.vars().clone(),
            params,
            val_accuracy,
            head_mixture: None,
            dual_io: None,
            files: Vec::new(),
        })
    }

    fn test(&self, dir: &Path) -> Result<TestReport> {
        let bundle = Bundle::load(dir)?;
        let FamilySpec::Consistency(spec) = &bundle.manifest.family else {
            return Err(Error::InvalidArgument(format!("{} is not a consistency bundle", dir.display())));
        };
        let unet = UNet::new(&spec.architecture, bundle.var_builder(&self.device))?;
        let net = ConsistencyNet::new(unet, spec.sigma_min, spec.sigma_data, &spec.parametrization)?;
        let per_class = self.cfg.run.test_samples_per_class;
        let (accuracy, _) = self.judge(&net, spec.sigmas.clone(), 2, 2_000_000, per_class)?;
        Ok(TestReport { accuracy, n: spec.architecture.num_classes * per_class, extra: BTreeMap::new() })
    }
}
