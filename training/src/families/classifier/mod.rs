//! The CNN image classifier family: the runtime's [`Cnn`] trained on a dataset of labeled images,
//! exported as a `classifier` bundle.
//!
//! It supplies the shared loop ([`crate::trainer`]) with its data (seeded batches of image indices
//! from [`Sampler`]), its model (the student, built under a `VarMap` and seeded) and its loss, which
//! it leaves to the run's method ([`crate::methods`]): the family forwards every call of the loop to
//! one boxed [`ClassifierMethod`] and never looks at which method it is.

mod config;

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Var;
use candle_nn::VarMap;
use rand::rngs::StdRng;
use tandem_runtime::bundle::{
    now_rfc3339, ClassifierSpec, FamilySpec, InputSpec, Manifest, Provenance, SCHEMA_VERSION,
};
use tandem_runtime::image::RESIZE_FILTER;

use crate::data::{self, Normalization, Split};
use crate::eval::evaluate_bundle;
use crate::init::seeded_init;
use crate::methods::{self, ClassifierMethod, ClassifierRun, Teacher};
use crate::optim::AdamW;
use crate::report::{EpochRecord, TrainSummary};
use crate::sampling::{Sampler, SamplerConfig, StepBatch};
use crate::trainer::{self, EpochPlan, Export, Family, Plan, StepOutput, TestReport, Validation};
use crate::{arch, Error, Result};

pub use config::TrainConfig;

/// Trains a CNN classifier: checkpoints every epoch, exports the bundle and measures it.
pub fn train(cfg: &TrainConfig) -> Result<TrainSummary> {
    cfg.validate()?;
    trainer::run(CnnClassifier::new(cfg)?, &cfg.loop_settings())
}

/// One run of the family.
pub struct CnnClassifier<'a> {
    cfg: &'a TrainConfig,
    run: ClassifierRun,
    method: Box<dyn ClassifierMethod>,
    sampler: Sampler,
}

impl<'a> CnnClassifier<'a> {
    /// Loads the splits and the teacher, builds and seeds the student, and sets up the method.
    pub fn new(cfg: &'a TrainConfig) -> Result<CnnClassifier<'a>> {
        let device = tandem_runtime::device::default_device();
        let mut train_set = data::load(cfg.dataset, Split::Train, &cfg.data_dir)?;
        if let Some(n) = cfg.train_limit {
            let n = n.min(train_set.len());
            train_set = train_set.subset(&(0..n).collect::<Vec<_>>());
        }
        if train_set.is_empty() {
            return Err(Error::InvalidArgument("the training split is empty".into()));
        }
        let val_set = data::load(cfg.dataset, Split::Val, &cfg.data_dir)?;
        config::check_fits(&cfg.arch, &train_set)?;
        let norm = Normalization::fit(&train_set);
        let teacher = match (&cfg.teacher, cfg.method.needs_teacher()) {
            (Some(path), true) => Some(Teacher::load(path, &train_set, &device)?),
            (None, true) => {
                return Err(Error::InvalidArgument(format!("method {} needs --teacher", cfg.method.name())))
            }
            (_, false) => None,
        };
        let arch = cfg.student_arch();
        let (vars, net) = arch::build(&arch, &device)?;
        seeded_init(&vars, cfg.seed)?;
        let run = ClassifierRun {
            train_set,
            val_set,
            norm,
            device,
            teacher,
            arch,
            vars,
            net,
            augment: cfg.augment,
            ghost_batch: cfg.ghost_batch,
            seed: cfg.seed,
            epochs: cfg.epochs,
            peak_lr: cfg.optim.lr,
        };
        let method = methods::build(&cfg.method, &run)?;
        let sampler = Sampler::new(
            &run.train_set,
            SamplerConfig {
                labeled_fraction: cfg.labeled_fraction(),
                subset_fraction: cfg.subset_fraction,
                seed: cfg.seed,
                batch_size: cfg.batch_size,
            },
        )?;
        Ok(CnnClassifier { cfg, run, method, sampler })
    }
}

impl Family for CnnClassifier<'_> {
    type Batch = StepBatch;

    const ITEM: &'static str = "img";

    fn trainable(&self) -> Vec<(String, VarMap)> {
        let mut maps = vec![(String::new(), self.run.vars.clone())];
        maps.extend(self.method.trainable());
        maps
    }

    fn state(&self) -> Vec<(String, Var)> {
        self.method.state()
    }

    fn plan(&self) -> Plan {
        self.method.plan(&self.run, self.sampler.steps_per_epoch())
    }

    fn epoch_plan(&self, epoch: usize) -> EpochPlan {
        self.method.epoch_plan(epoch)
    }

    fn restored(&mut self) -> Result<()> {
        self.method.restored()
    }

    fn begin_epoch(&mut self, epoch: usize, optimizer: &mut AdamW) -> Result<BTreeMap<String, f64>> {
        self.method.begin_epoch(&self.run, epoch, optimizer)
    }

    fn batches(&self, epoch: usize) -> Vec<StepBatch> {
        self.sampler.batches(epoch)
    }

    fn step(&mut self, epoch: usize, batch: &StepBatch, rng: &mut StdRng) -> Result<StepOutput> {
        self.method.step(&self.run, epoch, batch, rng)
    }

    fn validate(&mut self, epoch: usize) -> Result<Validation> {
        match self.method.validate(&self.run, epoch)? {
            Some(validation) => Ok(validation),
            None => self.run.validate(),
        }
    }

    fn save_state(&mut self) -> Result<()> {
        self.method.save_state(&self.run)
    }

    fn export(&self, history: &[EpochRecord]) -> Result<Export> {
        let (cfg, run) = (self.cfg, &self.run);
        let finish = self.method.finish(run, history)?;
        let params = run.arch.num_params().map_err(Error::InvalidArgument)?;
        let last_val = history.last().map_or(0.0, |r| r.val_accuracy);
        let val_accuracy = finish.val_accuracy.unwrap_or(last_val);
        let mut metrics = BTreeMap::from([("params".into(), params as f64), ("val_accuracy".into(), val_accuracy)]);
        metrics.extend(finish.metrics);
        let manifest = Manifest {
            schema_version: SCHEMA_VERSION,
            name: cfg.name.clone(),
            version: cfg.version.clone(),
            family: FamilySpec::Classifier(ClassifierSpec {
                architecture: run.arch.clone(),
                input: InputSpec {
                    shape: run.arch.input_shape,
                    dtype: "f32".into(),
                    pixel_range: [0.0, 255.0],
                    mean: run.norm.mean,
                    std: run.norm.std,
                    resize_filter: RESIZE_FILTER.into(),
                },
                labels: run.train_set.classes.clone(),
                inference: finish.inference,
            }),
            files: Vec::new(),
            provenance: Provenance {
                dataset: cfg.dataset.to_string(),
                dataset_sha256: run.train_set.source_sha256.clone(),
                recipe: cfg.method.name().into(),
                hyperparameters: cfg.hyperparameters(),
                teacher: run.teacher.as_ref().map(|t| t.bundle_id.clone()),
            },
            metrics,
            created_at: now_rfc3339(),
        };
        Ok(Export {
            manifest,
            vars: run.vars.clone(),
            params,
            val_accuracy,
            head_mixture: finish.head_mixture,
            dual_io: finish.dual_io,
            files: Vec::new(),
        })
    }

    fn test(&self, dir: &Path) -> Result<TestReport> {
        let test_set = data::load(self.cfg.dataset, Split::Test, &self.cfg.data_dir)?;
        let report = evaluate_bundle(dir, &test_set)?;
        Ok(TestReport { accuracy: report.accuracy, n: report.n, extra: Default::default() })
    }
}
