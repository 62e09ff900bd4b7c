//! DHO's pieces outside the loss: the fixed labeled/unlabeled split and the choice of the
//! serving-time head mixture on validation data.
//!
//! Each step draws a labeled and an unlabeled mini-batch of the same size and runs them through
//! the network as one batch. An epoch is one pass over the larger of the two pools (normally the
//! unlabeled one); the smaller pool is cycled, reshuffled whenever it runs out.

use std::str::FromStr;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::report::HeadMixtureReport;
use crate::{Error, Result};

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

/// Salt of the split's generator, so the labeled subset does not follow the epoch shuffles.
const SPLIT_SALT: u64 = 0x6c61_6265_6c65_6421;

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

/// Splits image indices `0..labels.len()` into (labeled, unlabeled), both ascending. Each class
/// keeps `round(fraction · count)` labels, at least one, so a 1% split of a balanced set still
/// covers every class; the choice depends on `seed` only.
pub fn labeled_split(labels: &[u8], num_classes: usize, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); num_classes.max(1)];
    for (i, &label) in labels.iter().enumerate() {
        if let Some(members) = by_class.get_mut(usize::from(label)) {
            members.push(i);
        }
    }
    let mut rng = StdRng::seed_from_u64(seed ^ SPLIT_SALT);
    let mut is_labeled = vec![false; labels.len()];
    for members in &mut by_class {
        if members.is_empty() {
            continue;
        }
        members.shuffle(&mut rng);
        let keep = ((fraction * members.len() as f64).round() as usize).clamp(1, members.len());
        for &i in &members[..keep] {
            is_labeled[i] = true;
        }
    }
    (0..labels.len()).partition(|&i| is_labeled[i])
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
    fn the_split_is_per_class_fixed_by_the_seed_and_covers_everything() {
        let labels: Vec<u8> = (0..200).map(|i| (i % 10) as u8).collect();
        let (l, u) = labeled_split(&labels, 10, 0.1, 3);
        assert_eq!(l.len(), 20);
        assert_eq!(u.len(), 180);
        let mut all: Vec<usize> = l.iter().chain(&u).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..200).collect::<Vec<_>>());
        for class in 0..10u8 {
            assert_eq!(l.iter().filter(|&&i| labels[i] == class).count(), 2);
        }
        assert_eq!(labeled_split(&labels, 10, 0.1, 3), (l.clone(), u));
        assert_ne!(labeled_split(&labels, 10, 0.1, 4).0, l);
        // A tiny fraction still keeps one label per class; the full fraction keeps all.
        assert_eq!(labeled_split(&labels, 10, 0.001, 3).0.len(), 10);
        assert!(labeled_split(&labels, 10, 1.0, 3).1.is_empty());
    }

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
