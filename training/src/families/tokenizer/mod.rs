//! The image tokenizer family: DualToken (a pixel and a semantic codebook over one ViT encoder)
//! and its single-codebook baselines, trained in two stages and exported as an
//! `image_tokenizer` bundle.
//!
//! 1. **Teacher** (`teacher_epochs`, a constant learning rate): the encoder and its head train as
//!    a classifier. At the end of the stage a frozen copy becomes the semantic teacher and is
//!    saved beside the bundle (`<out>.teacher.safetensors`) so that other runs (the baselines,
//!    other layouts) can start from the same one with `--teacher`.
//! 2. **Tokenizer** (`epochs`, warm-up and cosine): everything but the codebooks trains on
//!    - reconstruction: pixel MSE, plus the squared distance between the teacher's features of
//!      the reconstruction and of the image after the pixel layer (the perceptual term);
//!    - each stream's residual-VQ commitment (the mean over depths of the distance between the
//!      latent and the running sum of its codes);
//!    - semantic alignment: the de-quantised semantic codes, put back in the encoder, against the
//!      teacher's hidden state there, and the pooled output against the teacher's, each MSE plus
//!      1 − cosine, weighted 5 and 1 as in DualToken's code.
//!
//!    Gradients pass the quantisers by the straight-through estimator; the codebooks follow the
//!    moving averages of what they are assigned (`codebook.rs`).
//!
//! Validation reports the reconstructions' PSNR, the head's accuracy on the semantic tokens, and
//! code usage, and draws originals over reconstructions as a PNG grid.

mod codebook;
mod config;
pub mod evaluate;
pub mod measure;
pub mod quality;

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use tandem_runtime::bundle::{
    now_rfc3339, Bundle, FamilySpec, ImageTokenizerSpec, Manifest, Provenance, SCHEMA_VERSION,
};
use tandem_runtime::models::image_tokenizer::{parameter_count, ImageTokenizer};
use tandem_runtime::models::vit::Vit;

use crate::data::{self, Dataset, Split};
use crate::families::diffusion::model_space;
use crate::init::seeded_init;
use crate::losses::{correct, cross_entropy};
use crate::report::{EpochRecord, TrainSummary};
use crate::trainer::{self, EpochPlan, Export, Family, Plan, StepOutput, TestReport, Validation};
use crate::{Error, Result};

use codebook::CodebookEma;
pub use config::{LossWeights, TokenizerConfig};
pub use measure::{measure, Measured};

/// The weights of the semantic alignment's two parts: the replaced hidden state and the pooled
/// output (DualToken's stage-1 values).
const FEATURE_ALIGNMENT: f64 = 5.0;
const POOLED_ALIGNMENT: f64 = 1.0;
/// The teacher stage's constant learning rate, as a fraction of the peak.
const TEACHER_LR_FRACTION: f64 = 0.5;
/// Images drawn in each epoch's reconstruction grid.
const GRID_IMAGES: usize = 16;

/// Trains a tokenizer: checkpoints every epoch, exports the bundle and measures it.
pub fn train(cfg: &TokenizerConfig) -> Result<TrainSummary> {
    cfg.validate()?;
    trainer::run(TokenizerRun::new(cfg)?, &cfg.loop_settings())
}

/// One run of the family.
pub struct TokenizerRun<'a> {
    cfg: &'a TokenizerConfig,
    train_set: Dataset,
    val_set: Dataset,
    vars: VarMap,
    net: ImageTokenizer,
    teacher_vars: VarMap,
    teacher: Vit,
    /// The moving averages of each stream's codebook, by stream name.
    codebooks: Vec<(&'static str, CodebookEma)>,
    steps_per_epoch: usize,
    device: Device,
}

impl<'a> TokenizerRun<'a> {
    /// Loads the splits (and a saved teacher), builds and seeds the tokenizer.
    pub fn new(cfg: &'a TokenizerConfig) -> Result<TokenizerRun<'a>> {
        let device = tandem_runtime::device::default_device();
        let mut train_set = data::load(cfg.dataset, Split::Train, &cfg.data_dir)?;
        if let Some(n) = cfg.train_limit {
            train_set = train_set.subset(&(0..n.min(train_set.len())).collect::<Vec<_>>());
        }
        let val_set = data::load(cfg.dataset, Split::Val, &cfg.data_dir)?;
        let [c, h, w] = cfg.arch.encoder.image_shape;
        if train_set.is_empty()
            || c != 1
            || (train_set.height, train_set.width) != (h, w)
            || train_set.num_classes() != cfg.arch.encoder.num_classes
        {
            return Err(Error::InvalidArgument(format!(
                "the tokenizer is for {c}x{h}x{w} images of {} classes; {}'s training split does not match",
                cfg.arch.encoder.num_classes, cfg.dataset
            )));
        }
        let vars = VarMap::new();
        let net = ImageTokenizer::new(&cfg.arch, VarBuilder::from_varmap(&vars, DType::F32, &device))?;
        seeded_init(&vars, cfg.common.seed)?;
        let mut teacher_vars = VarMap::new();
        let teacher = Vit::new(&cfg.arch.encoder, VarBuilder::from_varmap(&teacher_vars, DType::F32, &device))?;
        if let Some(path) = &cfg.teacher {
            teacher_vars.load(path).map_err(|e| {
                Error::InvalidArgument(format!("{}: not a teacher of this encoder: {e}", path.display()))
            })?;
            copy_into_encoder(&teacher_vars, &vars)?;
        }
        let codebooks = ["pixel", "semantic"]
            .into_iter()
            .filter_map(|stream| {
                let var = vars
                    .data()
                    .lock()
                    .expect("varmap lock poisoned. This is a bug.")
                    .get(&format!("{stream}.quantizer.codebook"))
                    .cloned();
                var.map(|v| CodebookEma::new(v, cfg.codebook_decay, cfg.dead_code_threshold).map(|e| (stream, e)))
            })
            .collect::<Result<Vec<_>>>()?;
        let steps_per_epoch = train_set.len().div_ceil(cfg.common.batch_size);
        Ok(TokenizerRun {
            cfg,
            train_set,
            val_set,
            vars,
            net,
            teacher_vars,
            teacher,
            codebooks,
            steps_per_epoch,
            device,
        })
    }

    fn images(&self, ds: &Dataset, idx: &[usize]) -> Result<Tensor> {
        let [c, h, w] = self.cfg.arch.encoder.image_shape;
        Ok(Tensor::from_vec(model_space(ds, idx), (idx.len(), c, h, w), &self.device)?)
    }

    fn labels(ds: &Dataset, idx: &[usize], device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_vec(idx.iter().map(|&i| u32::from(ds.labels[i])).collect::<Vec<_>>(), idx.len(), device)?)
    }

    fn teacher_epochs(&self) -> usize {
        self.cfg.teacher_stage_epochs()
    }

    /// One step of the teacher stage: the encoder and its head as a classifier.
    fn teacher_step(&self, x: &Tensor, labels: &Tensor, n: usize) -> Result<StepOutput> {
        let logits = self.net.encoder().forward(x)?;
        Ok(StepOutput { hits: correct(&logits, labels)?, loss: cross_entropy(&logits, labels)?, n, items: n })
    }

    /// Quantises one stream's latents `[n, p, d]` (updating its codebook): the straight-through
    /// de-quantised latents and the commitment loss.
    fn quantize_stream(&self, stream: &str, z: &Tensor, rng: &mut StdRng) -> Result<(Tensor, Tensor)> {
        let (n, p, d) = z.dims3()?;
        let rows = z.reshape((n * p, d))?;
        let (_, ema) =
            self.codebooks.iter().find(|(s, _)| *s == stream).expect("every stream has a codebook. This is a bug.");
        ema.initialise_from(&rows, rng)?;
        let quantizer = match stream {
            "pixel" => self.net.pixel_quantizer(),
            _ => self.net.semantic_quantizer().expect("a semantic codebook has its stream. This is a bug."),
        };
        let q = quantizer.quantize(&rows)?;
        let commitment =
            q.partial_sums.iter().map(|s| (&rows - s)?.sqr()?.mean_all()).collect::<candle_core::Result<Vec<_>>>()?;
        let commitment = (Tensor::stack(&commitment, 0)?.mean_all())?;
        let dequantized = q.partial_sums.last().expect("depth >= 1. This is a bug.");
        let straight_through = (&rows + (dequantized - &rows)?.detach())?.reshape((n, p, d))?;
        ema.update(&q, rng)?;
        Ok((straight_through, commitment))
    }

    /// One step of the tokenizer stage.
    fn tokenizer_step(&self, x: &Tensor, labels: &Tensor, n: usize, rng: &mut StdRng) -> Result<StepOutput> {
        let cfg = self.cfg;
        let w = cfg.losses;
        let latents = self.net.latents(x)?;
        let mut loss = Tensor::zeros((), DType::F32, &self.device)?;
        let mut quantized = BTreeMap::new();
        for (stream, z) in [("pixel", &latents.pixel), ("semantic", &latents.semantic)] {
            if let Some(z) = z {
                let (zq, commitment) = self.quantize_stream(stream, z, rng)?;
                loss = (loss + (commitment * w.commitment)?)?;
                quantized.insert(stream, zq);
            }
        }
        let decoded = quantized.get("pixel").or(quantized.get("semantic")).expect("a stream exists. This is a bug.");
        let reconstruction = self.net.decode_latent(decoded)?;
        loss = (loss + ((&reconstruction - x)?.sqr()?.mean_all()? * w.reconstruction)?)?;
        let (layer, s) = (cfg.arch.pixel_layer, cfg.arch.semantic_layer);
        let semantic = quantized.get("semantic");
        // One frozen teacher pass over the images serves both the perceptual and the semantic targets.
        let deepest = match (w.perceptual > 0.0, semantic.is_some()) {
            (true, true) => layer.max(s),
            (true, false) => layer,
            (false, true) => s,
            (false, false) => 0,
        };
        let teacher_states: Vec<Tensor> =
            self.teacher.hidden_states(x, deepest)?.into_iter().map(|t| t.detach()).collect();
        if w.perceptual > 0.0 {
            let seen = self.teacher.hidden_states(&reconstruction, layer)?.pop().expect("layers. This is a bug.");
            loss = (loss + ((seen - &teacher_states[layer])?.sqr()?.mean_all()? * w.perceptual)?)?;
        }
        let mut hits = 0;
        if let Some(zq) = semantic {
            let target = &teacher_states[s];
            let target_pooled = self.teacher.finish(target, s)?.0.detach();
            let (hidden, pooled, logits) = self.net.semantic_head(zq)?;
            let alignment = ((alignment(&hidden, target)? * FEATURE_ALIGNMENT)?
                + (alignment(&pooled, &target_pooled)? * POOLED_ALIGNMENT)?)?;
            loss = (loss + (alignment * w.semantic)?)?;
            hits = correct(&logits, labels)?;
        }
        Ok(StepOutput { loss, hits, n, items: n })
    }

    /// Saves the frozen teacher beside the bundle, atomically, for other runs' `--teacher`.
    fn save_teacher(&self) -> Result<()> {
        let path = self.cfg.teacher_path();
        let bytes = tandem_runtime::bundle::serialize_varmap(&self.teacher_vars)?;
        tandem_runtime::fs::atomic_write(&path, &bytes).map_err(|e| Error::io(&path, e))
    }
}

/// MSE plus 1 − cosine along the last dimension, averaged: DualToken's alignment distance.
fn alignment(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let mse = (a - b)?.sqr()?.mean_all()?;
    let dot = (a * b)?.sum(D::Minus1)?;
    let norms = (a.sqr()?.sum(D::Minus1)?.sqrt()? * b.sqr()?.sum(D::Minus1)?.sqrt()?)?.maximum(1e-8)?;
    let cosine = (dot / norms)?.mean_all()?;
    Ok((mse + (cosine.neg()? + 1.0)?)?)
}

/// Copies a ViT's tensors into the tokenizer's encoder (`encoder.` + name).
fn copy_into_encoder(vit: &VarMap, tokenizer: &VarMap) -> Result<()> {
    let source = vit.data().lock().expect("varmap lock poisoned. This is a bug.");
    let target = tokenizer.data().lock().expect("varmap lock poisoned. This is a bug.");
    for (name, var) in source.iter() {
        let Some(dest) = target.get(&format!("encoder.{name}")) else {
            return Err(Error::InvalidArgument(format!("the teacher has {name}, which the encoder lacks")));
        };
        dest.set(var.as_tensor())?;
    }
    Ok(())
}

/// Copies the tokenizer's encoder into the teacher's ViT.
fn copy_from_encoder(tokenizer: &VarMap, vit: &VarMap) -> Result<()> {
    let source = tokenizer.data().lock().expect("varmap lock poisoned. This is a bug.");
    let target = vit.data().lock().expect("varmap lock poisoned. This is a bug.");
    for (name, var) in target.iter() {
        var.set(source[&format!("encoder.{name}")].as_tensor())?;
    }
    Ok(())
}

impl Family for TokenizerRun<'_> {
    type Batch = Vec<usize>;

    const ITEM: &'static str = "img";

    fn trainable(&self) -> Vec<(String, VarMap)> {
        vec![(String::new(), self.vars.clone())]
    }

    fn state(&self) -> Vec<(String, Var)> {
        let data = self.teacher_vars.data().lock().expect("varmap lock poisoned. This is a bug.");
        let mut state: Vec<(String, Var)> = data.iter().map(|(n, v)| (format!("teacher.{n}"), v.clone())).collect();
        for (stream, ema) in &self.codebooks {
            state.extend(ema.state(&format!("codebook_ema.{stream}.")));
        }
        state
    }

    fn plan(&self) -> Plan {
        Plan {
            epochs: self.teacher_epochs() + self.cfg.common.epochs,
            steps_per_epoch: self.steps_per_epoch,
            cosine_epochs: self.cfg.common.epochs,
            cosine_from: self.teacher_epochs(),
        }
    }

    fn epoch_plan(&self, epoch: usize) -> EpochPlan {
        if epoch < self.teacher_epochs() {
            EpochPlan {
                stage: Some("teacher".into()),
                constant_lr: Some(self.cfg.common.optim.lr * TEACHER_LR_FRACTION),
            }
        } else {
            EpochPlan { stage: Some("tokenizer".into()), constant_lr: None }
        }
    }

    fn begin_epoch(&mut self, epoch: usize, optimizer: &mut crate::optim::AdamW) -> Result<BTreeMap<String, f64>> {
        if epoch < self.teacher_epochs() {
            optimizer.set_trainable(|name| name.starts_with("encoder."));
            return Ok(BTreeMap::new());
        }
        optimizer.set_trainable(|name| !name.ends_with("quantizer.codebook"));
        if epoch == self.teacher_epochs() && self.teacher_epochs() > 0 {
            // The stage just ended: its encoder is the teacher, frozen from here on.
            copy_from_encoder(&self.vars, &self.teacher_vars)?;
            self.save_teacher()?;
        }
        Ok(BTreeMap::new())
    }

    fn batches(&self, epoch: usize) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..self.train_set.len()).collect();
        let seed = self.cfg.common.seed.wrapping_mul(0x9e37_79b9).wrapping_add(epoch as u64);
        order.shuffle(&mut StdRng::seed_from_u64(seed));
        order.chunks(self.cfg.common.batch_size).map(<[usize]>::to_vec).collect()
    }

    fn step(&mut self, epoch: usize, idx: &Vec<usize>, rng: &mut StdRng) -> Result<StepOutput> {
        let x = self.images(&self.train_set, idx)?;
        let labels = Self::labels(&self.train_set, idx, &self.device)?;
        if epoch < self.teacher_epochs() {
            self.teacher_step(&x, &labels, idx.len())
        } else {
            self.tokenizer_step(&x, &labels, idx.len(), rng)
        }
    }

    fn validate(&mut self, epoch: usize) -> Result<Validation> {
        let n = self.cfg.val_images.min(self.val_set.len());
        if epoch < self.teacher_epochs() {
            let accuracy = measure::classifier_accuracy(self.net.encoder(), &self.val_set, n, &self.device)?;
            return Ok(Validation { loss: 0.0, accuracy, extra: BTreeMap::new() });
        }
        let m = measure(&self.net, &self.val_set, n, &self.device)?;
        let grid = measure::reconstruction_grid(&self.val_set, &m, GRID_IMAGES)?;
        let path = self.cfg.grid_path(epoch + 1);
        std::fs::write(&path, grid).map_err(|e| Error::io(&path, e))?;
        let mut extra = BTreeMap::from([("psnr".into(), m.psnr()), ("pixel_code_usage".into(), m.pixel_usage().usage)]);
        if let Some(acc) = m.semantic_accuracy() {
            extra.insert("semantic_accuracy".into(), acc);
        }
        Ok(Validation { loss: m.mse, accuracy: m.semantic_accuracy().unwrap_or(0.0), extra })
    }

    fn export(&self, history: &[EpochRecord]) -> Result<Export> {
        let cfg = self.cfg;
        let params = parameter_count(&cfg.arch)?;
        let last = history.last();
        let val_accuracy = last.map_or(0.0, |r| r.val_accuracy);
        let mut metrics = BTreeMap::from([("params".into(), params as f64)]);
        if let Some(r) = last {
            metrics.extend(r.extra.iter().map(|(k, v)| (format!("val_{k}"), *v)));
        }
        let manifest = Manifest {
            schema_version: SCHEMA_VERSION,
            name: cfg.common.name.clone(),
            version: cfg.common.version.clone(),
            family: FamilySpec::ImageTokenizer(ImageTokenizerSpec {
                architecture: cfg.arch.clone(),
                labels: self.train_set.classes.clone(),
            }),
            files: Vec::new(),
            provenance: Provenance {
                dataset: cfg.dataset.to_string(),
                dataset_sha256: self.train_set.source_sha256.clone(),
                recipe: format!("dualtoken-{}", cfg.arch.layout.name()),
                hyperparameters: cfg.hyperparameters(),
                teacher: None,
            },
            metrics,
            created_at: now_rfc3339(),
        };
        Ok(Export {
            manifest,
            vars: self.vars.clone(),
            params,
            val_accuracy,
            head_mixture: None,
            dual_io: None,
            files: Vec::new(),
        })
    }

    fn test(&self, dir: &Path) -> Result<TestReport> {
        let bundle = Bundle::load(dir)?;
        let FamilySpec::ImageTokenizer(spec) = &bundle.manifest.family else {
            return Err(Error::InvalidArgument(format!("{} is not an image tokenizer bundle", dir.display())));
        };
        let net = ImageTokenizer::new(&spec.architecture, bundle.var_builder(&self.device))?;
        let test_set = data::load(self.cfg.dataset, Split::Test, &self.cfg.data_dir)?;
        let n = self.cfg.test_images.unwrap_or(test_set.len()).min(test_set.len());
        let m = measure(&net, &test_set, n, &self.device)?;
        let extra = BTreeMap::from([("psnr".to_string(), m.psnr()), ("ssim".to_string(), m.ssim())]);
        Ok(TestReport { accuracy: m.semantic_accuracy().unwrap_or(0.0), n, extra })
    }
}
