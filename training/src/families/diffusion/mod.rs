//! The DDPM teacher family: the runtime's [`UNet`] trained to predict the noise of
//! x_t = √ᾱ_t·x₀ + √(1 − ᾱ_t)·ε (Ho et al.), class-conditional with a null class for
//! classifier-free guidance, sampled and exported with its weights' moving average, as a
//! `diffusion` bundle.
//!
//! Its headline score is the one that asks whether it generates what it is asked for: the share of
//! class-conditional samples that a classifier bundle (the judge) recognises as their class. Each
//! epoch measures it on a few samples per class (and writes them as a PNG grid); the test measures
//! it on the exported bundle with more. The validation loss is the noise-prediction error on a
//! fixed set of validation images, timesteps and noises.

mod config;
mod ema;

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use tandem_runtime::bundle::{now_rfc3339, Bundle, DiffusionSpec, FamilySpec, Manifest, Provenance, SCHEMA_VERSION};
use tandem_runtime::diffusion::NoiseSchedule;
use tandem_runtime::families::generator::{image_grid, GenerateRequest, GeneratedImage, Generator};
use tandem_runtime::models::unet::UNet;

use crate::data::{self, Dataset, Split};
use crate::eval::evaluate_bundle;
use crate::init::seeded_init;
use crate::report::{EpochRecord, TrainSummary};
use crate::trainer::{self, Export, Family, Plan, StepOutput, TestReport, Validation};
use crate::{Error, Result};

pub use config::{unet_preset, DiffusionConfig, UNET_PRESETS};
pub use ema::Ema;

/// Images of the fixed validation loss.
const VAL_LOSS_IMAGES: usize = 512;
/// Images per forward pass outside training.
const EVAL_BATCH: usize = 64;

/// Trains a DDPM teacher: checkpoints every epoch, exports the bundle and measures it.
pub fn train(cfg: &DiffusionConfig) -> Result<TrainSummary> {
    cfg.validate()?;
    trainer::run(DdpmTeacher::new(cfg)?, &cfg.loop_settings())
}

/// The images of a dataset on the model's [−1, 1] scale, `[n, 1, h, w]`.
pub fn model_space(ds: &Dataset, idx: &[usize]) -> Vec<f32> {
    idx.iter().flat_map(|&i| ds.image(i).iter().map(|&p| f32::from(p) / 127.5 - 1.0)).collect()
}

/// `n` standard normal draws.
pub(crate) fn normals(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.sample(StandardNormal)).collect()
}

/// The class of each image of a batch, replaced by `null` with probability `dropout`: what
/// classifier-free guidance trains on.
pub(crate) fn dropped_classes(ds: &Dataset, idx: &[usize], null: u32, dropout: f64, rng: &mut StdRng) -> Vec<u32> {
    idx.iter().map(|&i| if rng.random::<f64>() < dropout { null } else { u32::from(ds.labels[i]) }).collect()
}

/// One run of the family.
pub struct DdpmTeacher<'a> {
    cfg: &'a DiffusionConfig,
    train_set: Dataset,
    val_set: Dataset,
    vars: VarMap,
    net: UNet,
    ema: Ema,
    ema_net: UNet,
    schedule: NoiseSchedule,
    device: Device,
}

impl<'a> DdpmTeacher<'a> {
    /// Loads the splits, builds and seeds the network and its average.
    pub fn new(cfg: &'a DiffusionConfig) -> Result<DdpmTeacher<'a>> {
        let device = tandem_runtime::device::default_device();
        let mut train_set = data::load(cfg.run.dataset, Split::Train, &cfg.run.data_dir)?;
        if let Some(n) = cfg.run.train_limit {
            train_set = train_set.subset(&(0..n.min(train_set.len())).collect::<Vec<_>>());
        }
        if train_set.is_empty() {
            return Err(Error::InvalidArgument("the training split is empty".into()));
        }
        let [_, h, w] = cfg.run.arch.image_shape;
        if (train_set.height, train_set.width) != (h, w) || train_set.num_classes() != cfg.run.arch.num_classes {
            return Err(Error::InvalidArgument(format!(
                "the UNet is for {h}x{w} images of {} classes; {} has {}x{} images of {}",
                cfg.run.arch.num_classes,
                cfg.run.dataset,
                train_set.height,
                train_set.width,
                train_set.num_classes()
            )));
        }
        let val_set = data::load(cfg.run.dataset, Split::Val, &cfg.run.data_dir)?;
        let (vars, net) = build(cfg, &device)?;
        seeded_init(&vars, cfg.run.common.seed)?;
        zero_output(&vars)?;
        let (ema_vars, ema_net) = build(cfg, &device)?;
        let ema = Ema::new(&vars, ema_vars, cfg.run.ema_decay)?;
        let schedule = NoiseSchedule::new(cfg.schedule, cfg.train_steps)?;
        Ok(DdpmTeacher { cfg, train_set, val_set, vars, net, ema, ema_net, schedule, device })
    }

    /// The bundle's family section.
    fn spec(&self) -> DiffusionSpec {
        DiffusionSpec {
            architecture: self.cfg.run.arch.clone(),
            schedule: self.cfg.schedule,
            train_steps: self.cfg.train_steps,
            labels: self.train_set.classes.clone(),
            guidance: self.cfg.guidance,
        }
    }

    /// Noised images for the loss: x_t, the noise ε and the timesteps, for images `idx`.
    fn noised(&self, idx: &[usize], rng: &mut StdRng) -> Result<(Tensor, Tensor, Vec<f32>)> {
        let dim = self.cfg.run.arch.image_dim();
        let x0 = model_space(&self.train_set, idx);
        let t: Vec<usize> = idx.iter().map(|_| rng.random_range(0..self.cfg.train_steps)).collect();
        let eps = normals(rng, idx.len() * dim);
        let mut xt = Vec::with_capacity(x0.len());
        for (i, &ti) in t.iter().enumerate() {
            let ab = self.schedule.alpha_bar(ti);
            let (a, s) = (ab.sqrt(), (1.0 - ab).sqrt());
            let range = i * dim..(i + 1) * dim;
            xt.extend(
                x0[range.clone()].iter().zip(&eps[range]).map(|(x, e)| (a * f64::from(*x) + s * f64::from(*e)) as f32),
            );
        }
        let shape = image_shape(&self.cfg.run.arch.image_shape, idx.len());
        Ok((
            Tensor::from_vec(xt, shape, &self.device)?,
            Tensor::from_vec(eps, shape, &self.device)?,
            t.iter().map(|&ti| ti as f32).collect(),
        ))
    }

    /// The noise-prediction error of the averaged weights on fixed validation images, timesteps
    /// and noises.
    fn val_loss(&self) -> Result<f64> {
        let n = VAL_LOSS_IMAGES.min(self.val_set.len());
        let mut rng = StdRng::seed_from_u64(0x5eed_1055);
        let dim = self.cfg.run.arch.image_dim();
        let mut total = 0.0;
        for start in (0..n).step_by(EVAL_BATCH) {
            let idx: Vec<usize> = (start..(start + EVAL_BATCH).min(n)).collect();
            let x0 = model_space(&self.val_set, &idx);
            let t: Vec<usize> = idx.iter().map(|_| rng.random_range(0..self.cfg.train_steps)).collect();
            let eps = normals(&mut rng, idx.len() * dim);
            let xt: Vec<f32> = (0..x0.len())
                .map(|j| {
                    let ab = self.schedule.alpha_bar(t[j / dim]);
                    (ab.sqrt() * f64::from(x0[j]) + (1.0 - ab).sqrt() * f64::from(eps[j])) as f32
                })
                .collect();
            let shape = image_shape(&self.cfg.run.arch.image_shape, idx.len());
            let classes: Vec<u32> = idx.iter().map(|&i| u32::from(self.val_set.labels[i])).collect();
            let tf: Vec<f32> = t.iter().map(|&v| v as f32).collect();
            let pred = self.ema_net.forward(&Tensor::from_vec(xt, shape, &self.device)?, &tf, &classes, false)?;
            let err = (pred - Tensor::from_vec(eps, shape, &self.device)?)?.sqr()?.sum_all()?;
            total += f64::from(err.to_scalar::<f32>()?);
        }
        Ok(total / (n * dim).max(1) as f64)
    }
}

/// A fresh UNet under its own `VarMap`.
fn build(cfg: &DiffusionConfig, device: &Device) -> Result<(VarMap, UNet)> {
    let vars = VarMap::new();
    let net = UNet::new(&cfg.run.arch, VarBuilder::from_varmap(&vars, DType::F32, device))?;
    Ok((vars, net))
}

/// Zeroes the output convolution after the seeded initialisation: an untrained network then
/// predicts ε = 0, the DDPM / ADM recipe for a stable start.
pub(crate) fn zero_output(vars: &VarMap) -> Result<()> {
    let data = vars.data().lock().expect("varmap lock poisoned. This is a bug.");
    for (_, var) in data.iter().filter(|(name, _)| name.starts_with("out.conv.")) {
        var.set(&var.as_tensor().zeros_like()?)?;
    }
    Ok(())
}

fn image_shape(shape: &[usize; 3], n: usize) -> (usize, usize, usize, usize) {
    (n, shape[0], shape[1], shape[2])
}

/// Samples `per_class` images of every class from `generator` with seeds from `seed`, and the
/// share of them that the judge classifies as their class.
pub fn judged_samples(
    generator: &Generator<impl tandem_runtime::families::generator::Generative>,
    request: &GenerateRequest,
    classes: usize,
    per_class: usize,
    judge: &Path,
) -> Result<(f64, Vec<std::sync::Arc<GeneratedImage>>)> {
    let mut images = Vec::with_capacity(classes * per_class);
    let mut labels = Vec::with_capacity(classes * per_class);
    for k in 0..classes {
        let req =
            GenerateRequest { class: Some(k as u32), n: per_class, seed: request.seed + k as u64, ..request.clone() };
        images.extend(generator.generate_now(&req, EVAL_BATCH)?.images);
        labels.extend(std::iter::repeat_n(k as u8, per_class));
    }
    let first = images.first().ok_or_else(|| Error::InvalidArgument("no samples to judge".into()))?;
    let ds = Dataset {
        name: crate::data::DatasetName::Digits,
        height: first.height,
        width: first.width,
        images: images.iter().flat_map(|img| img.pixels.iter().copied()).collect(),
        labels,
        classes: (0..classes).map(|k| k.to_string()).collect(),
        source_sha256: String::new(),
    };
    Ok((evaluate_bundle(judge, &ds)?.accuracy, images))
}

impl DdpmTeacher<'_> {
    /// The request validation and test samples are drawn with.
    fn eval_request(&self, seed: u64) -> GenerateRequest {
        GenerateRequest {
            class: None,
            n: 1,
            steps: self.cfg.eval_steps,
            sampler: self.cfg.eval_sampler.as_str().into(),
            seed,
            guidance: Some(self.cfg.guidance),
            dualfast: None,
            sigmas: None,
        }
    }
}

impl Family for DdpmTeacher<'_> {
    type Batch = Vec<usize>;

    const ITEM: &'static str = "img";

    fn trainable(&self) -> Vec<(String, VarMap)> {
        vec![(String::new(), self.vars.clone())]
    }

    fn state(&self) -> Vec<(String, Var)> {
        self.ema.state("ema.")
    }

    fn plan(&self) -> Plan {
        let steps = self.train_set.len().div_ceil(self.cfg.run.common.batch_size);
        Plan {
            epochs: self.cfg.run.common.epochs,
            steps_per_epoch: steps,
            cosine_epochs: self.cfg.run.common.epochs,
            cosine_from: 0,
        }
    }

    fn batches(&self, epoch: usize) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..self.train_set.len()).collect();
        let seed = self.cfg.run.common.seed.wrapping_mul(0x9e37_79b9).wrapping_add(epoch as u64);
        order.shuffle(&mut StdRng::seed_from_u64(seed));
        order.chunks(self.cfg.run.common.batch_size).map(<[usize]>::to_vec).collect()
    }

    fn step(&mut self, _epoch: usize, batch: &Vec<usize>, rng: &mut StdRng) -> Result<StepOutput> {
        let (xt, eps, t) = self.noised(batch, rng)?;
        let classes = dropped_classes(&self.train_set, batch, self.net.null_class(), self.cfg.run.class_dropout, rng);
        let pred = self.net.forward(&xt, &t, &classes, true)?;
        let loss = (pred - eps)?.sqr()?.mean_all()?;
        // A noise predictor has no accuracy per step: hits stay 0.
        Ok(StepOutput { loss, hits: 0, n: batch.len(), items: batch.len() })
    }

    fn after_step(&mut self) -> Result<()> {
        self.ema.update(&self.vars)
    }

    fn restored(&mut self) -> Result<()> {
        // The warm-up of the decay is long over after an epoch; restart it at the cap.
        self.ema.set_updates(u64::MAX / 2);
        Ok(())
    }

    fn validate(&mut self, epoch: usize) -> Result<Validation> {
        let loss = self.val_loss()?;
        let generator = Generator::diffusion(self.ema_net.clone(), self.spec(), &self.device)?;
        let per_class = self.cfg.run.val_samples_per_class;
        let classes = self.cfg.run.arch.num_classes;
        let (accuracy, images) =
            judged_samples(&generator, &self.eval_request(1_000), classes, per_class, &self.cfg.run.judge)?;
        let grid = image_grid(&images, per_class, 2)?;
        let path = self.cfg.run.grid_path(epoch + 1);
        tandem_runtime::fs::atomic_write(&path, &grid).map_err(|e| Error::io(&path, e))?;
        Ok(Validation { loss, accuracy, extra: BTreeMap::from([("sample_accuracy".into(), accuracy)]) })
    }

    fn export(&self, history: &[EpochRecord]) -> Result<Export> {
        let cfg = self.cfg;
        let params = tandem_runtime::models::unet::parameter_count(&cfg.run.arch)?;
        let val_accuracy = history.last().map_or(0.0, |r| r.val_accuracy);
        let judge = Bundle::load(&cfg.run.judge)?;
        let manifest = Manifest {
            schema_version: SCHEMA_VERSION,
            name: cfg.run.common.name.clone(),
            version: cfg.run.common.version.clone(),
            family: FamilySpec::Diffusion(self.spec()),
            files: Vec::new(),
            provenance: Provenance {
                dataset: cfg.run.dataset.to_string(),
                dataset_sha256: self.train_set.source_sha256.clone(),
                recipe: "ddpm".into(),
                hyperparameters: cfg.hyperparameters(),
                teacher: None,
            },
            metrics: BTreeMap::from([
                ("params".into(), params as f64),
                ("val_sample_accuracy".into(), val_accuracy),
                ("val_loss".into(), history.last().map_or(0.0, |r| r.val_loss)),
            ]),
            created_at: now_rfc3339(),
        };
        tracing::info!(judge = %judge.model_id(), "samples judged by");
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
        let Some(FamilySpec::Diffusion(spec)) = Some(&bundle.manifest.family) else {
            return Err(Error::InvalidArgument(format!("{} is not a diffusion bundle", dir.display())));
        };
        let net = UNet::new(&spec.architecture, bundle.var_builder(&self.device))?;
        let generator = Generator::diffusion(net, spec.clone(), &self.device)?;
        let per_class = self.cfg.run.test_samples_per_class;
        let classes = spec.architecture.num_classes;
        let (accuracy, _) =
            judged_samples(&generator, &self.eval_request(2_000_000), classes, per_class, &self.cfg.run.judge)?;
        Ok(TestReport { accuracy, n: classes * per_class, extra: BTreeMap::new() })
    }
}
