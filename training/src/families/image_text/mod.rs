//! The image–text family: a CLIP-style dual encoder trained from scratch on a dataset's images
//! and the fixed caption set of its classes ([`captions`]), exported as an `image_text` bundle.
//!
//! The image tower is a CNN of the runtime's (a preset of `arch` with the shared width as its
//! classes); the text tower a tiny BERT over the starting tokenizer's vocabulary cut to the
//! captions' tokens, the specials and the single characters (`embedder::student::cut_vocabulary`,
//! so a free-text label the captions never used still spells). Both are seeded from the run's
//! seed, and the logit scale starts at CLIP's 1/0.07.
//!
//! Each step draws, for every image of the batch, a random caption of its class, and minimises
//! the symmetric InfoNCE (CLIP) loss over the batch's image–caption similarity matrix with
//! **multi-positive targets**: an image's targets are all the batch's captions of its class,
//! equally weighted, and a caption's targets all the images of its class. A batch of 256 images of
//! 10 classes holds some 25 images of each class; with one-hot targets, the other 24 captions of
//! the class (often the very same text) would be pushed away as negatives. The targets matrix is
//! symmetric, so both directions use it.
//!
//! Validation writes the current weights as a bundle beside the run and measures it on the
//! validation split with the same [`evaluate_bundle`] that tests the exported bundle on the test
//! split, through the serving path; its headline is the zero-shot accuracy.
//!
//! With CPRD ([`cprd`]) a matcher (an image–text cross-encoder) trains first, in the run's first
//! epochs (the `teacher` stage, validated by its own zero-shot accuracy), and the dual encoder then
//! also learns its rankings of each image's hard negatives.

pub mod captions;
mod config;
mod cprd;
pub mod evaluate;

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::Rng;
use tandem_runtime::bundle::{now_rfc3339, FamilySpec, ImageTextSpec, InputSpec, Manifest, Provenance, SCHEMA_VERSION};
use tandem_runtime::image::RESIZE_FILTER;
use tandem_runtime::models::image_text::{ImageTextConfig, TrainableImageText, INITIAL_LOGIT_SCALE, LOGIT_SCALE};
use tandem_runtime::models::sentence_encoder::{BertConfig, Pooling};
use tandem_runtime::models::trainable_bert::padded_batch;
use tandem_runtime::text::TextTokenizer;

use crate::data::wordnet::WordNet;
use crate::data::{self, epoch_order, images_to_tensor, pixels_to_tensor, Dataset, Normalization, Split};
use crate::families::embedder::student::{cut_vocabulary, token_counts};
use crate::init::seeded_init;
use crate::losses::soft_cross_entropy;
use crate::optim::AdamW;
use crate::report::{EpochRecord, TrainSummary};
use crate::trainer::{self, EpochPlan, Export, Family, Plan, StepOutput, TestReport, Validation};
use crate::{Error, Result};
use captions::CaptionSet;
use cprd::{cprd_term, Teacher};
use evaluate::evaluate_bundle;

pub use config::{CprdSettings, ImageTextTrainConfig, TextTower};

/// The checkpoint's name prefix of the matcher's variables.
const TEACHER_PREFIX: &str = "teacher.";

/// Trains a dual encoder: checkpoints every epoch, exports the bundle and measures it.
pub fn train(cfg: &ImageTextTrainConfig) -> Result<TrainSummary> {
    cfg.validate()?;
    let run = ImageTextRun::new(cfg)?;
    let settings = cfg.loop_settings(&tandem_runtime::bundle::sha256_hex(&run.tokenizer_bytes));
    trainer::run(run, &settings)
}

/// The caption set of `dataset`, with WordNet from `wordnet_dir` or, when `None` and the captions
/// need it, from the copy fetched under `data_dir`.
pub fn caption_set(dataset: data::DatasetName, data_dir: &Path, wordnet_dir: Option<&Path>) -> Result<CaptionSet> {
    let wordnet = match (captions::uses_wordnet(dataset), wordnet_dir) {
        (false, _) => None,
        (true, Some(dir)) => Some(WordNet::read_dir(dir)?),
        (true, None) => Some(WordNet::load(data_dir)?),
    };
    CaptionSet::for_dataset(dataset, wordnet.as_ref())
}

/// One run of the family.
pub struct ImageTextRun<'a> {
    cfg: &'a ImageTextTrainConfig,
    train: Dataset,
    val: Dataset,
    norm: Normalization,
    captions: CaptionSet,
    /// Each caption's token ids, in caption order.
    caption_ids: Vec<Vec<u32>>,
    /// Caption indices by class.
    by_class: Vec<Vec<usize>>,
    /// Each class name's token ids, what the matcher is validated against.
    class_name_ids: Vec<Vec<u32>>,
    /// The matcher whose rankings CPRD distils.
    teacher: Option<Teacher>,
    architecture: ImageTextConfig,
    tokenizer_bytes: Vec<u8>,
    vars: VarMap,
    model: TrainableImageText,
    device: Device,
}

impl<'a> ImageTextRun<'a> {
    /// Loads the splits, the captions and the tokenizer, cuts the vocabulary, and builds and
    /// seeds both towers.
    pub fn new(cfg: &'a ImageTextTrainConfig) -> Result<ImageTextRun<'a>> {
        let device = tandem_runtime::device::default_device();
        let mut train = data::load(cfg.dataset, Split::Train, &cfg.data_dir)?;
        if let Some(n) = cfg.train_limit {
            train = train.subset(&(0..n.min(train.len())).collect::<Vec<_>>());
        }
        if train.len() < 2 {
            return Err(Error::InvalidArgument("the training split needs at least two images".into()));
        }
        let val = data::load(cfg.dataset, Split::Val, &cfg.data_dir)?;
        let val = val.subset(&(0..cfg.val_images.min(val.len())).collect::<Vec<_>>());
        if cfg.image_arch.input_shape != [1, train.height, train.width] {
            return Err(Error::InvalidArgument(format!(
                "the image tower reads {:?}, the images are [1, {}, {}]",
                cfg.image_arch.input_shape, train.height, train.width
            )));
        }
        let norm = Normalization::fit(&train);
        let captions = caption_set(cfg.dataset, &cfg.data_dir, cfg.wordnet_dir.as_deref())?;

        let source = std::fs::read(&cfg.tokenizer).map_err(|e| Error::io(&cfg.tokenizer, e))?;
        let full = TextTokenizer::from_bytes(&source, cfg.max_seq_length)?;
        let mut corpus = captions.texts();
        corpus.extend(captions.classes.iter().map(String::as_str));
        let counts = token_counts(&full, full.vocab_size(), &corpus)?;
        let (kept, tokenizer_bytes) = cut_vocabulary(&source, &counts, None)?;
        let tokenizer = TextTokenizer::from_bytes(&tokenizer_bytes, cfg.max_seq_length)?;
        let mut ids = corpus.iter().map(|text| Ok(tokenizer.encode(text, true)?.ids)).collect::<Result<Vec<_>>>()?;
        let class_name_ids = ids.split_off(captions.captions.len());
        let caption_ids = ids;
        // BERT's padding token; the attention mask hides it, so any id would do where it is absent.
        let pad = tokenizer.token_to_id("[PAD]").unwrap_or(0);

        let t = cfg.text;
        let text = BertConfig {
            vocab_size: kept.len(),
            hidden_size: t.hidden,
            num_hidden_layers: t.layers,
            num_attention_heads: t.heads,
            intermediate_size: t.intermediate,
            hidden_act: "gelu".into(),
            max_position_embeddings: cfg.max_seq_length,
            type_vocab_size: 1,
            layer_norm_eps: 1e-12,
            pad_token_id: pad as usize,
        };
        let architecture = ImageTextConfig { image: cfg.image_arch.clone(), text, pooling: Pooling::Mean };
        let vars = VarMap::new();
        let model = TrainableImageText::new(&architecture, VarBuilder::from_varmap(&vars, DType::F32, &device))?;
        seeded_init(&vars, cfg.common.seed)?;
        // The scale is a temperature, not a weight: it starts where CLIP's does.
        vars.data().lock().expect("varmap lock poisoned. This is a bug.")[LOGIT_SCALE]
            .set(&Tensor::new(&[INITIAL_LOGIT_SCALE.ln() as f32], &device)?)?;
        let by_class = (0..captions.classes.len()).map(|c| captions.of_class(c)).collect();
        let teacher =
            cfg.cprd.as_ref().map(|c| Teacher::new(c, &architecture.text, cfg.common.seed, &device)).transpose()?;
        Ok(ImageTextRun {
            cfg,
            train,
            val,
            norm,
            captions,
            caption_ids,
            by_class,
            class_name_ids,
            teacher,
            architecture,
            tokenizer_bytes,
            vars,
            model,
            device,
        })
    }

    /// The bundle of the current weights.
    fn manifest(&self, metrics: BTreeMap<String, f64>) -> Manifest {
        let spec = ImageTextSpec {
            architecture: self.architecture.clone(),
            input: InputSpec {
                shape: self.architecture.image.input_shape,
                dtype: "f32".into(),
                pixel_range: [0.0, 255.0],
                mean: self.norm.mean,
                std: self.norm.std,
                resize_filter: RESIZE_FILTER.into(),
            },
            tokenizer: TOKENIZER_FILE.into(),
            max_seq_length: self.cfg.max_seq_length,
            labels: self.captions.classes.clone(),
        };
        Manifest {
            schema_version: SCHEMA_VERSION,
            name: self.cfg.common.name.clone(),
            version: self.cfg.common.version.clone(),
            family: FamilySpec::ImageText(spec),
            files: Vec::new(),
            provenance: Provenance {
                dataset: self.cfg.dataset.as_str().into(),
                dataset_sha256: self.train.source_sha256.clone(),
                recipe: if self.teacher.is_some() { "clip-multi-positive-cprd" } else { "clip-multi-positive" }.into(),
                hyperparameters: self.cfg.hyperparameters(),
                teacher: None,
            },
            metrics,
            created_at: now_rfc3339(),
        }
    }

    /// The matcher's zero-shot accuracy on the validation images: the share whose best-scored
    /// class name is their class.
    fn teacher_accuracy(&self) -> Result<f64> {
        let Some(teacher) = &self.teacher else { return Ok(0.0) };
        let names: Vec<&[u32]> = self.class_name_ids.iter().map(Vec::as_slice).collect();
        let pad = u32::try_from(self.architecture.text.pad_token_id).unwrap_or(0);
        let (ids, mask) = padded_batch(&names, pad, &self.device)?;
        let mut hits = 0;
        for chunk in (0..self.val.len()).collect::<Vec<_>>().chunks(500) {
            let x = images_to_tensor(&self.val, chunk, self.norm, &self.device)?;
            let best = teacher.scores(&x, &ids, &mask, false)?.argmax(1)?.to_vec1::<u32>()?;
            hits += chunk.iter().zip(best).filter(|(&i, b)| u32::from(self.val.labels[i]) == *b).count();
        }
        Ok(hits as f64 / self.val.len().max(1) as f64)
    }

    /// The files beside the weights: the cut tokenizer.
    fn files(&self) -> Vec<(String, Vec<u8>)> {
        vec![(TOKENIZER_FILE.into(), self.tokenizer_bytes.clone())]
    }

    /// Writes the current weights as a servable bundle in `dir`.
    fn write_bundle(&self, dir: &Path) -> Result<()> {
        let weights = tandem_runtime::bundle::serialize_varmap(&self.vars)?;
        let files = self.files();
        let mut listed: Vec<(&str, &[u8])> = vec![(tandem_runtime::bundle::WEIGHTS_FILE, &weights)];
        listed.extend(files.iter().map(|(p, b)| (p.as_str(), b.as_slice())));
        tandem_runtime::bundle::write_bundle_files(dir, &self.manifest(BTreeMap::new()), &listed)?;
        Ok(())
    }
}

/// The tokenizer's file name inside the bundle.
const TOKENIZER_FILE: &str = "tokenizer.json";

/// The symmetric cross-entropy of pair logits `[n, n]` (image `i`, the caption drawn for image
/// `j`) against targets that spread each row over its same-class columns (see the module's
/// documentation); and how many rows' best column is of their class. The dual encoder's loss, on
/// its scaled cosines, and the matcher's, on its pair logits.
pub(crate) fn multi_positive_loss(logits: &Tensor, classes: &[usize]) -> Result<(Tensor, usize)> {
    let n = classes.len();
    let mut targets = vec![0f32; n * n];
    for (i, row) in targets.chunks_exact_mut(n).enumerate() {
        let positives = classes.iter().filter(|&&c| c == classes[i]).count() as f32;
        for (j, t) in row.iter_mut().enumerate() {
            if classes[j] == classes[i] {
                *t = 1.0 / positives;
            }
        }
    }
    let targets = Tensor::from_vec(targets, (n, n), logits.device())?;
    let image_to_text = soft_cross_entropy(logits, &targets)?;
    let text_to_image = soft_cross_entropy(&logits.t()?, &targets)?;
    let loss = ((image_to_text + text_to_image)? * 0.5)?;
    let best = logits.argmax(1)?.to_vec1::<u32>()?;
    let hits = best.iter().enumerate().filter(|(i, &j)| classes[j as usize] == classes[*i]).count();
    Ok((loss, hits))
}

impl Family for ImageTextRun<'_> {
    type Batch = Vec<usize>;

    const ITEM: &'static str = "img";

    fn trainable(&self) -> Vec<(String, VarMap)> {
        let mut maps = vec![(String::new(), self.vars.clone())];
        maps.extend(self.teacher.iter().map(|t| (TEACHER_PREFIX.to_owned(), t.vars.clone())));
        maps
    }

    /// The matcher's stage (if any) first, then the dual encoder's epochs under the cosine schedule.
    fn plan(&self) -> Plan {
        let steps_per_epoch = self.batches(0).len();
        let stage = self.cfg.teacher_stage_epochs();
        Plan {
            epochs: stage + self.cfg.common.epochs,
            steps_per_epoch,
            cosine_epochs: self.cfg.common.epochs,
            cosine_from: stage,
        }
    }

    fn epoch_plan(&self, epoch: usize) -> EpochPlan {
        match (&self.teacher, epoch < self.cfg.teacher_stage_epochs()) {
            (Some(_), true) => EpochPlan { stage: Some("teacher".into()), constant_lr: Some(self.cfg.common.optim.lr) },
            (Some(_), false) => EpochPlan { stage: Some("student".into()), constant_lr: None },
            (None, _) => EpochPlan::default(),
        }
    }

    /// Each stage updates its own model only; the matcher is saved when its stage ends.
    fn begin_epoch(&mut self, epoch: usize, optimizer: &mut AdamW) -> Result<BTreeMap<String, f64>> {
        let Some(teacher) = &self.teacher else { return Ok(BTreeMap::new()) };
        let stage = self.cfg.teacher_stage_epochs();
        if epoch < stage {
            optimizer.set_trainable(|name| name.starts_with(TEACHER_PREFIX));
        } else {
            optimizer.set_trainable(|name| !name.starts_with(TEACHER_PREFIX));
            if epoch == stage && stage > 0 {
                teacher.save(&self.cfg.teacher_path())?;
            }
        }
        Ok(BTreeMap::new())
    }

    /// The epoch's seeded order in batches; a last batch of one image, which has nothing to
    /// contrast, is dropped.
    fn batches(&self, epoch: usize) -> Vec<Vec<usize>> {
        let order = epoch_order(self.train.len(), self.cfg.common.seed, epoch);
        order.chunks(self.cfg.common.batch_size).filter(|b| b.len() > 1).map(<[usize]>::to_vec).collect()
    }

    fn step(&mut self, epoch: usize, batch: &Vec<usize>, rng: &mut StdRng) -> Result<StepOutput> {
        let pixels = self.cfg.augment.apply(&self.train, batch, rng);
        let x = pixels_to_tensor(&pixels, batch.len(), self.train.height, self.train.width, self.norm, &self.device)?;
        let classes: Vec<usize> = batch.iter().map(|&i| usize::from(self.train.labels[i])).collect();
        let drawn: Vec<usize> = classes
            .iter()
            .map(|&c| {
                let pool = &self.by_class[c];
                pool[rng.random_range(0..pool.len())]
            })
            .collect();
        let drawn_ids: Vec<&[u32]> = drawn.iter().map(|&i| self.caption_ids[i].as_slice()).collect();
        let pad = u32::try_from(self.architecture.text.pad_token_id).unwrap_or(0);
        let (ids, mask) = padded_batch(&drawn_ids, pad, &self.device)?;
        let output = |(loss, hits): (Tensor, usize)| StepOutput { loss, hits, n: batch.len(), items: 2 * batch.len() };
        if let (Some(teacher), true) = (&self.teacher, epoch < self.cfg.teacher_stage_epochs()) {
            return Ok(output(multi_positive_loss(&teacher.scores(&x, &ids, &mask, true)?, &classes)?));
        }
        let images = self.model.embed_images(&x, true)?;
        let texts = self.model.embed_texts(&ids, &mask)?;
        let logits = images.matmul(&texts.t()?)?.broadcast_mul(&self.model.logit_scale()?)?;
        let (mut loss, hits) = multi_positive_loss(&logits, &classes)?;
        if let Some(teacher) = &self.teacher {
            let judged = teacher.scores(&x, &ids, &mask, false)?;
            if let Some(term) = cprd_term(&logits, &judged, &drawn, &classes, teacher.negatives)? {
                loss = (loss + (term * teacher.beta)?)?;
            }
        }
        Ok(output((loss, hits)))
    }

    fn validate(&mut self, epoch: usize) -> Result<Validation> {
        if epoch < self.cfg.teacher_stage_epochs() {
            let accuracy = self.teacher_accuracy()?;
            let extra = BTreeMap::from([("teacher_zero_shot_accuracy".into(), accuracy)]);
            return Ok(Validation { loss: 1.0 - accuracy, accuracy, extra });
        }
        let dir = trainer::sibling(&self.cfg.common.out, "val-bundle");
        self.write_bundle(&dir)?;
        let report = evaluate_bundle(&dir, &self.val, &self.captions)?;
        let mut extra = report.figures();
        extra.remove("n");
        extra.insert("logit_scale".into(), f64::from(self.model.logit_scale()?.to_scalar::<f32>()?));
        Ok(Validation { loss: 1.0 - report.zero_shot_accuracy, accuracy: report.zero_shot_accuracy, extra })
    }

    fn export(&self, history: &[EpochRecord]) -> Result<Export> {
        let params = self.architecture.num_params().map_err(Error::InvalidArgument)?;
        let mut metrics = BTreeMap::from([("params".into(), params as f64)]);
        if let Some(last) = history.last() {
            metrics.insert("val_zero_shot_accuracy".into(), last.val_accuracy);
            for (name, value) in &last.extra {
                metrics.insert(format!("val_{name}"), *value);
            }
        }
        Ok(Export {
            manifest: self.manifest(metrics),
            vars: self.vars.clone(),
            params,
            val_accuracy: history.last().map_or(0.0, |r| r.val_accuracy),
            head_mixture: None,
            dual_io: None,
            files: self.files(),
        })
    }

    fn test(&self, dir: &Path) -> Result<TestReport> {
        let test = data::load(self.cfg.dataset, Split::Test, &self.cfg.data_dir)?;
        let n = self.cfg.test_images.unwrap_or(test.len()).min(test.len());
        let test = test.subset(&(0..n).collect::<Vec<_>>());
        let report = evaluate_bundle(dir, &test, &self.captions)?;
        let mut extra = report.figures();
        extra.remove("n");
        Ok(TestReport { accuracy: report.zero_shot_accuracy, n: report.n, extra })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_class_pairs_are_all_positives() {
        // Two images of class 0 and one of class 1; each image's vector equals its caption's.
        let v = Tensor::new(&[[1f32, 0.0], [1.0, 0.0], [0.0, 1.0]], &Device::Cpu).unwrap();
        let scale = Tensor::new(10f32, &Device::Cpu).unwrap();
        let clip = |images: &Tensor, texts: &Tensor| {
            let logits = images.matmul(&texts.t().unwrap()).unwrap().broadcast_mul(&scale).unwrap();
            multi_positive_loss(&logits, &[0, 0, 1]).unwrap()
        };
        let (loss, hits) = clip(&v, &v);
        assert_eq!(hits, 3);
        // Each class-0 row spreads its target over two equal logits and the class-1 row is
        // nearly one-hot: the loss is ln 2 for 2 rows of 3 in each direction, plus what the
        // negative at cos 0 takes.
        let expected = {
            let class0 = -(0.5f64 * (10f64.exp() / (2.0 * 10f64.exp() + 1.0)).ln()) * 2.0;
            let class1 = -(1f64.exp().powi(10) / (1f64.exp().powi(10) + 2.0)).ln();
            (2.0 * class0 + class1) / 3.0
        };
        let loss = f64::from(loss.to_scalar::<f32>().unwrap());
        assert!((loss - expected).abs() < 1e-5, "{loss} against {expected}");
        // Captions of one class are interchangeable: swapping two of them between their images
        // changes nothing, where one-hot targets would count each as the other image's negative.
        let texts = Tensor::new(&[[1f32, 0.0], [0.8, 0.6], [0.0, 1.0]], &Device::Cpu).unwrap();
        let swapped = Tensor::new(&[[0.8f32, 0.6], [1.0, 0.0], [0.0, 1.0]], &Device::Cpu).unwrap();
        let (a, _) = clip(&v, &texts);
        let (b, _) = clip(&v, &swapped);
        let (a, b) = (a.to_scalar::<f32>().unwrap(), b.to_scalar::<f32>().unwrap());
        assert!((a - b).abs() < 1e-6, "{a} and {b}");
    }
}
