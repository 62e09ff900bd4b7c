//! CPRD for the image–text family (METHODS.md, section 1): the dual encoder also learns the
//! rankings of an image–text matcher, a cross-encoder that reads each (image, caption) pair
//! jointly ([`TrainableImageTextMatcher`]).
//!
//! The matcher trains first, in the run's own first epochs (the `teacher` stage, at the peak rate
//! held constant), on the same batches and the same multi-positive loss over its pair logits as
//! the dual encoder's; it is then frozen and saved beside the run, or loaded from an earlier run.
//!
//! In each later step, for every image of the batch:
//!
//! 1. the candidates are the batch's captions of other classes, each text once; the `negatives`
//!    that the student (the dual encoder being trained) scores highest are its hard negatives;
//! 2. the matcher scores them and orders them, best first;
//! 3. the list is cut at the first invalid negative: one the matcher scores at or above the
//!    image's own caption (it doubts the label, so the order below carries no trust);
//! 4. [`partial_ranking_loss`] (the Plackett–Luce chain) asks the student to rank each kept
//!    negative above every negative the matcher ranks below it.
//!
//! The loss is the contrastive loss plus `beta` times that term. Within one class every caption
//! is a positive, so what the matcher teaches is the order among the other classes' captions:
//! which garments look alike (a shirt is nearer a T-shirt than a sandal), the knowledge one-hot
//! class captions do not carry.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use tandem_runtime::models::image_text_matcher::{ImageTextMatcherConfig, TrainableImageTextMatcher};
use tandem_runtime::models::sentence_encoder::{BertConfig, Pooling};

use super::config::CprdSettings;
use crate::init::seeded_init;
use crate::losses::partial_ranking_loss;
use crate::{Error, Result};

/// Keeps the matcher's initialisation apart from the student's under the same run seed.
const TEACHER_SEED_SALT: u64 = 0x7eac_4e12;

/// The matcher, its variables and what the distillation term needs.
pub(crate) struct Teacher {
    /// The matcher's variables, trained in the teacher stage and checkpointed under `teacher.`.
    pub vars: VarMap,
    pub model: TrainableImageTextMatcher,
    pub negatives: usize,
    pub beta: f64,
}

impl Teacher {
    /// The matcher of `settings` over the student's text tower shape: seeded from `seed`, or
    /// loaded from `settings.teacher`.
    pub fn new(settings: &CprdSettings, text: &BertConfig, seed: u64, device: &Device) -> Result<Teacher> {
        let config = ImageTextMatcherConfig {
            image: settings.teacher_arch.clone(),
            text: text.clone(),
            pooling: Pooling::Mean,
            hidden: settings.teacher_hidden,
        };
        let vars = VarMap::new();
        let model = TrainableImageTextMatcher::new(&config, VarBuilder::from_varmap(&vars, DType::F32, device))?;
        match &settings.teacher {
            Some(path) => load(&vars, path)?,
            None => seeded_init(&vars, seed ^ TEACHER_SEED_SALT)?,
        }
        Ok(Teacher { vars, model, negatives: settings.negatives, beta: settings.beta })
    }

    /// Writes the matcher's weights to `path`, for other runs' `--teacher`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = tandem_runtime::bundle::serialize_varmap(&self.vars)?;
        tandem_runtime::fs::atomic_write(path, &bytes).map_err(|e| Error::io(path, e))
    }

    /// The matcher's logits `[n, m]` of every (image, caption) pair of a batch: normalised images
    /// `[n, 1, h, w]`, captions as a padded token batch; `train` as [`TrainableImageTextMatcher`].
    pub fn scores(&self, x: &Tensor, ids: &Tensor, mask: &Tensor, train: bool) -> Result<Tensor> {
        let images = self.model.image_features(x, train)?;
        let texts = self.model.text_features(ids, mask)?;
        Ok(self.model.score_pairs(&images, &texts)?)
    }
}

/// Fills `vars` from a saved matcher, refusing a file of another architecture.
fn load(vars: &VarMap, path: &Path) -> Result<()> {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| Error::InvalidArgument(format!("--teacher {}: not a saved matcher: {e}", path.display())))?;
    let data = vars.data().lock().expect("varmap lock poisoned. This is a bug.");
    for (name, var) in data.iter() {
        let tensor = tensors.get(name).filter(|t| t.dims() == var.dims()).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "--teacher {}: `{name}` is missing or not of shape {:?}: the matcher was saved by a run of another \
                 architecture, tokenizer or text tower",
                path.display(),
                var.dims()
            ))
        })?;
        var.set(&tensor.to_device(var.device())?.to_dtype(DType::F32)?)?;
    }
    Ok(())
}

/// The CPRD term of a batch (see the module's documentation), or `None` when no image keeps a
/// negative: `student` holds the student's scaled similarities `[n, n]` (image `i`, the caption
/// drawn for image `j`), `teacher` the matcher's logits of the same pairs, `captions[j]` which
/// caption was drawn for image `j` and `classes[j]` its class.
pub(crate) fn cprd_term(
    student: &Tensor,
    teacher: &Tensor,
    captions: &[usize],
    classes: &[usize],
    negatives: usize,
) -> Result<Option<Tensor>> {
    let n = classes.len();
    let scores = student.detach().to_vec2::<f32>()?;
    let judged = teacher.detach().to_vec2::<f32>()?;
    // Each image's hard negatives, by the student: other classes' captions, each text once.
    let mut lists: Vec<Vec<usize>> = Vec::with_capacity(n);
    for (i, row) in scores.iter().enumerate() {
        let mut candidates: Vec<usize> = (0..n).filter(|&j| classes[j] != classes[i]).collect();
        candidates.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        let mut seen = std::collections::HashSet::new();
        candidates.retain(|&j| seen.insert(captions[j]));
        candidates.truncate(negatives);
        lists.push(candidates);
    }
    // One length for the batch's tensor: the shortest list (a small batch may lack negatives).
    let k = lists.iter().map(Vec::len).min().unwrap_or(0);
    if k < 2 {
        return Ok(None);
    }
    let mut order = Vec::with_capacity(n * k);
    let mut kept = Vec::with_capacity(n);
    for (i, list) in lists.iter_mut().enumerate() {
        list.truncate(k);
        list.sort_by(|&a, &b| judged[i][b].total_cmp(&judged[i][a]).then(a.cmp(&b)));
        let positive = judged[i][i];
        kept.push(list.iter().take_while(|&&j| judged[i][j] < positive).count());
        order.extend(list.iter().map(|&j| (i * n + j) as u32));
    }
    if kept.iter().all(|&m| m == 0) {
        return Ok(None);
    }
    let order = Tensor::from_vec(order, n * k, student.device())?;
    let ordered = student.flatten_all()?.index_select(&order, 0)?.reshape((n, k))?;
    Ok(Some(partial_ranking_loss(&ordered, &kept)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negatives_follow_the_teachers_order_and_stop_at_the_first_it_ranks_above_the_positive() {
        // Three images of classes 0, 1, 2; column j is the caption drawn for image j.
        let student = Tensor::new(&[[5f32, 1.0, 2.0], [0.5, 4.0, 3.0], [1.0, 2.0, 6.0]], &Device::Cpu).unwrap();
        // Image 0's teacher ranks caption 1 above caption 2 (the student the other way round);
        // image 1's teacher ranks caption 0 above its own caption: nothing of it is kept.
        let teacher = Tensor::new(&[[9f32, 3.0, 1.0], [5.0, 4.0, 0.0], [0.0, 1.0, 8.0]], &Device::Cpu).unwrap();
        let term = cprd_term(&student, &teacher, &[0, 1, 2], &[0, 1, 2], 8).unwrap().unwrap();
        // Image 0: order (1, 2), both below 9: kept 2; the chain is −log softmax(1, 2)[0] + 0.
        // Image 2: order (1, 0), both below 8: kept 2; −log softmax(2, 1)[0].
        let chain = |first: f64, second: f64| (first.exp() + second.exp()).ln() - first;
        let expected = (chain(1.0, 2.0) + chain(2.0, 1.0)) / 3.0;
        let got = f64::from(term.to_scalar::<f32>().unwrap());
        assert!((got - expected).abs() < 1e-5, "{got} against {expected}");

        // Two drawn captions of one text count once; with a single negative left, no term.
        let none = cprd_term(&student, &teacher, &[0, 7, 7], &[0, 1, 1], 8).unwrap();
        assert!(none.is_none());
    }
}
