//! DHO: its loss on the two heads, its loss weights, and the choice of the serving-time head
//! mixture on validation data.
//!
//! Each step draws a labeled and an unlabeled mini-batch of the same size (the fixed split is
//! [`labeled_split`], shared with the label budgets of other methods) and runs them through the
//! network as one batch. An epoch is one pass over the larger of the two pools (normally the
//! unlabeled one); the smaller pool is cycled, reshuffled whenever it runs out.

use std::collections::BTreeMap;
use std::str::FromStr;

use rand::rngs::StdRng;
use tandem_runtime::bundle::InferenceSpec;

use crate::eval::head_logits;
use crate::losses::{cross_entropy, kd_kl};
use crate::methods::{ClassifierMethod, ClassifierRun, Finish};
use crate::report::{EpochRecord, HeadMixtureReport};
use crate::sampling::StepBatch;
use crate::trainer::StepOutput;
use crate::{Error, Result};

pub use crate::sampling::labeled_split;

/// Mixture weights of the main head searched after training: 0, 0.05, …, 1.
pub const ALPHAS: [f64; 21] = {
    let mut a = [0.0; 21];
    let mut i = 0;
    while i < 21 {
        a[i] = i as f64 / 20.0;
        i += 1;
    }
    a
};

/// Temperatures of the auxiliary head searched after training.
pub const BETAS: [f64; 7] = [0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 4.0];

/// Weights of DHO's two loss terms, named after the reference scripts that use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DhoWeights {
    /// `0.5 · CE + 0.5 · (KD_labeled + KD_unlabeled)`, as in the few-shot script.
    #[default]
    FewShot,
    /// `CE + KD_labeled + KD_unlabeled`, as in the ImageNet semi-supervised script.
    Semi,
}

impl DhoWeights {
    /// The names `--dho-weights` accepts.
    pub const NAMES: [&'static str; 2] = ["few-shot", "semi"];

    /// The name as the CLI and provenance spell it.
    pub fn name(&self) -> &'static str {
        match self {
            DhoWeights::FewShot => "few-shot",
            DhoWeights::Semi => "semi",
        }
    }

    /// Weight of the cross-entropy term.
    pub fn ce(&self) -> f64 {
        match self {
            DhoWeights::FewShot => 0.5,
            DhoWeights::Semi => 1.0,
        }
    }

    /// Weight of the sum of the two distillation terms.
    pub fn kd(&self) -> f64 {
        self.ce()
    }
}

impl FromStr for DhoWeights {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "few-shot" => Ok(DhoWeights::FewShot),
            "semi" => Ok(DhoWeights::Semi),
            other => Err(Error::InvalidArgument(format!(
                "unknown dho weights {other:?}; known: {}",
                DhoWeights::NAMES.join(", ")
            ))),
        }
    }
}

/// Searches `α · softmax(z_main) + (1 − α) · softmax(z_aux / β)` over [`ALPHAS`] × [`BETAS`] for
/// the best accuracy on `labels`; ties go to the lower negative log-likelihood, so among equally
/// accurate mixtures the better calibrated one is served. Logits are row-major `[n, classes]`.
pub fn search_mixture(main: &[f32], aux: &[f32], labels: &[u8], classes: usize) -> Result<HeadMixtureReport> {
    let n = labels.len();
    if n == 0 || classes == 0 || main.len() != n * classes || aux.len() != n * classes {
        return Err(Error::InvalidArgument(format!(
            "the head mixture needs validation logits for {n} images of {classes} classes"
        )));
    }
    let p_main = softmax_rows(main, classes, 1.0);
    let mut best: Option<(usize, f64, f64, f64)> = None;
    for beta in BETAS {
        let p_aux = softmax_rows(aux, classes, beta);
        for alpha in ALPHAS {
            let (mut hits, mut nll) = (0usize, 0.0f64);
            for (row, &label) in labels.iter().enumerate() {
                let r = row * classes..(row + 1) * classes;
                let mix = p_main[r.clone()].iter().zip(&p_aux[r]).map(|(m, a)| alpha * m + (1.0 - alpha) * a);
                let (arg, _) =
                    mix.clone().enumerate().fold((0, f64::MIN), |b, (k, p)| if p > b.1 { (k, p) } else { b });
                hits += usize::from(arg == usize::from(label));
                nll -= mix.clone().nth(usize::from(label)).unwrap_or(0.0).max(1e-12).ln();
            }
            let better = match best {
                None => true,
                Some((h, l, _, _)) => hits > h || (hits == h && nll < l - 1e-9),
            };
            if better {
                best = Some((hits, nll, alpha, beta));
            }
        }
    }
    let (hits, nll, alpha, beta) = best.expect("the grid is not empty. This is a bug.");
    Ok(HeadMixtureReport {
        alpha,
        beta,
        val_accuracy: hits as f64 / n as f64,
        val_nll: nll / n as f64,
        main_head_val_accuracy: accuracy(main, labels, classes),
        aux_head_val_accuracy: accuracy(aux, labels, classes),
    })
}

/// DHO on a labeled and an unlabeled mini-batch run through the network as one batch.
pub(crate) struct Dho {
    temperature: f64,
    weights: DhoWeights,
}

impl Dho {
    pub(crate) fn new(temperature: f64, weights: DhoWeights) -> Dho {
        Dho { temperature, weights }
    }
}

impl ClassifierMethod for Dho {
    fn step(&mut self, run: &ClassifierRun, _epoch: usize, batch: &StepBatch, rng: &mut StdRng) -> Result<StepOutput> {
        let forward = run.forward(batch, true, rng)?;
        let (n_l, n_u, t) = (forward.n_labeled, forward.n_unlabeled, self.temperature);
        let aux = forward.out.aux_logits.as_ref().expect("dho builds the aux head. This is a bug.");
        let teacher = forward.teacher.as_ref().expect("dho loads a teacher. This is a bug.");
        let ce = cross_entropy(&forward.out.logits.narrow(0, 0, n_l)?, &forward.labels)?;
        let mut kd = kd_kl(&aux.narrow(0, 0, n_l)?, &teacher.narrow(0, 0, n_l)?, t)?;
        if n_u > 0 {
            kd = (kd + kd_kl(&aux.narrow(0, n_l, n_u)?, &teacher.narrow(0, n_l, n_u)?, t)?)?;
        }
        let loss = ((ce * self.weights.ce())? + (kd * self.weights.kd())?)?;
        forward.output(loss)
    }

    /// Serves the head mixture searched on the validation split, with the network in eval mode.
    fn finish(&self, run: &ClassifierRun, _history: &[EpochRecord]) -> Result<Finish> {
        let (main, aux) = head_logits(&run.net, &run.val_set, run.norm, &run.device)?;
        let mixture = search_mixture(&main, &aux, &run.val_set.labels, run.val_set.num_classes())?;
        Ok(Finish {
            inference: InferenceSpec::HeadMixture { alpha: mixture.alpha as f32, beta: mixture.beta as f32 },
            val_accuracy: Some(mixture.val_accuracy),
            metrics: BTreeMap::from([
                ("val_accuracy_main_head".to_owned(), mixture.main_head_val_accuracy),
                ("val_accuracy_aux_head".to_owned(), mixture.aux_head_val_accuracy),
            ]),
            head_mixture: Some(mixture),
            dual_io: None,
        })
    }
}

fn softmax_rows(logits: &[f32], classes: usize, temperature: f64) -> Vec<f64> {
    let mut out = Vec::with_capacity(logits.len());
    for row in logits.chunks_exact(classes) {
        let scaled: Vec<f64> = row.iter().map(|&z| f64::from(z) / temperature).collect();
        let max = scaled.iter().copied().fold(f64::MIN, f64::max);
        let exps: Vec<f64> = scaled.iter().map(|z| (z - max).exp()).collect();
        let sum: f64 = exps.iter().sum();
        out.extend(exps.iter().map(|e| e / sum));
    }
    out
}

fn accuracy(logits: &[f32], labels: &[u8], classes: usize) -> f64 {
    let hits = logits
        .chunks_exact(classes)
        .zip(labels)
        .filter(|(row, &label)| {
            let arg = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(k, _)| k);
            arg == usize::from(label)
        })
        .count();
    hits as f64 / labels.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mixture_search_finds_the_head_that_is_right() {
        // The main head is right on rows 0 and 1, the aux head on rows 1 and 2; each head's wrong
        // answer is a weak one, so a mix of the two beats both.
        let main = [5f32, 0., 0., /**/ 0., 5., 0., /**/ 0.2, 0., 0.];
        let aux = [0f32, 0.5, 0., /**/ 0., 4., 0., /**/ 0., 0., 4.];
        let labels = [0u8, 1, 2];
        let best = search_mixture(&main, &aux, &labels, 3).unwrap();
        assert!((best.main_head_val_accuracy - 2.0 / 3.0).abs() < 1e-12);
        assert!((best.aux_head_val_accuracy - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(best.val_accuracy, 1.0);
        assert!(best.alpha > 0.0 && best.alpha < 1.0, "{best:?}");
        assert!(BETAS.contains(&best.beta));
        // With the main head always right, mixtures that keep it in charge win.
        let best = search_mixture(&main[..6], &[0f32, 3., 0., 3., 0., 0.], &labels[..2], 3).unwrap();
        assert_eq!(best.val_accuracy, 1.0);
        assert!(best.alpha > 0.5);
        assert!(search_mixture(&main, &aux, &labels[..2], 3).is_err());
        assert_eq!(ALPHAS[0], 0.0);
        assert_eq!(ALPHAS[20], 1.0);
        assert!((ALPHAS[1] - 0.05).abs() < 1e-12);
    }
}
