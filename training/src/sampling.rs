//! Which training examples each step visits: RS2 rounds, endlessly cycled pools, the seeded
//! labeled/unlabeled split of a label budget, and the [`Sampler`] that combines them into the
//! batches of an epoch.
//!
//! Rounds and pools are windows onto one endless sequence: the seeded permutations
//! `epoch_order(n, seed, 0)`, `epoch_order(n, seed, 1)`, … laid end to end. Any window is a pure
//! function of its position, so a resumed run sees exactly the examples the interrupted one would
//! have, and with the full data per round the rounds are exactly the plain per-epoch shuffles.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::data::{epoch_order, Dataset};
use crate::{Error, Result};

/// The examples of one optimiser step, as indices into the training split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepBatch {
    /// Examples whose labels the step may use.
    pub labeled: Vec<usize>,
    /// Examples without labels (semi-supervised runs only).
    pub unlabeled: Vec<usize>,
}

/// What a [`Sampler`] draws from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerConfig {
    /// The fraction of the split that keeps its labels, if not all of it.
    pub labeled_fraction: Option<f64>,
    /// RS2: the fraction of the driving pool each epoch visits, if not all of it.
    pub subset_fraction: Option<f64>,
    /// Fixes the split and every order.
    pub seed: u64,
    /// Examples per step from each pool.
    pub batch_size: usize,
}

/// Which examples each epoch visits. One pool drives the epoch (RS2 rounds over it); the other
/// pool of a label budget is cycled alongside, a batch of the same size per step.
#[derive(Debug, Clone)]
pub struct Sampler {
    driving: Vec<usize>,
    other: Vec<usize>,
    driving_is_labeled: bool,
    rounds: Rounds,
    other_seed: u64,
    batch_size: usize,
}

/// Salt of the cycled pool, so it is not shuffled in step with the driving pool.
const OTHER_POOL_SALT: u64 = 0x7374_7265_616d_2121;

impl Sampler {
    /// A sampler over the training split `ds`.
    pub fn new(ds: &Dataset, cfg: SamplerConfig) -> Result<Sampler> {
        let (labeled, unlabeled) = match cfg.labeled_fraction {
            Some(fraction) => labeled_split(&ds.labels, ds.num_classes(), fraction, cfg.seed),
            None => ((0..ds.len()).collect(), Vec::new()),
        };
        let driving_is_labeled = labeled.len() >= unlabeled.len();
        let (driving, other) = if driving_is_labeled { (labeled, unlabeled) } else { (unlabeled, labeled) };
        let rounds = Rounds::new(driving.len(), cfg.subset_fraction, cfg.seed)?;
        Ok(Sampler {
            driving,
            other,
            driving_is_labeled,
            rounds,
            other_seed: cfg.seed ^ OTHER_POOL_SALT,
            batch_size: cfg.batch_size,
        })
    }

    /// Optimiser steps per epoch.
    pub fn steps_per_epoch(&self) -> usize {
        self.rounds.size().div_ceil(self.batch_size)
    }

    /// The steps of epoch `epoch`, in order.
    pub fn batches(&self, epoch: usize) -> Vec<StepBatch> {
        let size = self.rounds.size();
        let round: Vec<usize> = self.rounds.round(epoch).into_iter().map(|p| self.driving[p]).collect();
        let others: Vec<usize> = stream_window(self.other.len(), self.other_seed, epoch.saturating_mul(size), size)
            .into_iter()
            .map(|p| self.other[p])
            .collect();
        round
            .chunks(self.batch_size)
            .enumerate()
            .map(|(i, main)| {
                let start = (i * self.batch_size).min(others.len());
                let end = (start + main.len()).min(others.len());
                let other = others[start..end].to_vec();
                if self.driving_is_labeled {
                    StepBatch { labeled: main.to_vec(), unlabeled: other }
                } else {
                    StepBatch { labeled: other, unlabeled: main.to_vec() }
                }
            })
            .collect()
    }
}

/// Salt of the split's generator, so the labeled subset does not follow the epoch shuffles.
const SPLIT_SALT: u64 = 0x6c61_6265_6c65_6421;

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

/// Positions `offset..offset + len` of the endless sequence of seeded permutations of `0..n`.
/// Empty when `n` is 0.
pub fn stream_window(n: usize, seed: u64, offset: usize, len: usize) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(len);
    let end = offset.saturating_add(len);
    let mut pos = offset;
    while pos < end {
        let perm = epoch_order(n, seed, pos / n);
        let start = pos % n;
        let take = (n - start).min(end - pos);
        out.extend_from_slice(&perm[start..start + take]);
        pos += take;
    }
    out
}

/// RS2 without replacement (Okanovic et al. 2023): every round ("epoch") trains on the next
/// `round(fraction · n)` examples of the endless sequence, so every example is seen once before
/// any is seen twice, and a fresh permutation starts whenever the previous one runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rounds {
    n: usize,
    size: usize,
    seed: u64,
}

impl Rounds {
    /// Rounds over `n` examples; `None` (or 1) means the whole set every round.
    pub fn new(n: usize, fraction: Option<f64>, seed: u64) -> Result<Rounds> {
        let size = match fraction {
            None => n,
            Some(f) if f > 0.0 && f <= 1.0 => ((f * n as f64).round() as usize).clamp(n.min(1), n),
            Some(f) => return Err(Error::InvalidArgument(format!("the subset fraction must be in (0, 1], found {f}"))),
        };
        Ok(Rounds { n, size, seed })
    }

    /// Examples per round.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The positions (indices into the pool of `n`) that round `k` visits, in order.
    pub fn round(&self, k: usize) -> Vec<usize> {
        stream_window(self.n, self.seed, k.saturating_mul(self.size), self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{self, DatasetName, Split};

    fn digits(n: usize) -> Dataset {
        let ds = data::load(DatasetName::Digits, Split::Train, std::path::Path::new("")).unwrap();
        ds.subset(&(0..n).collect::<Vec<_>>())
    }

    fn config(labeled_fraction: Option<f64>) -> SamplerConfig {
        SamplerConfig { labeled_fraction, subset_fraction: None, seed: 7, batch_size: 4 }
    }

    #[test]
    fn plain_epochs_visit_every_image_once_in_the_old_order() {
        let sampler = Sampler::new(&digits(10), config(None)).unwrap();
        assert_eq!(sampler.steps_per_epoch(), 3);
        for epoch in 0..2 {
            let batches = sampler.batches(epoch);
            let flat: Vec<usize> = batches.iter().flat_map(|b| b.labeled.clone()).collect();
            assert_eq!(flat, data::epoch_order(10, 7, epoch));
            assert!(batches.iter().all(|b| b.unlabeled.is_empty()));
        }
    }

    #[test]
    fn label_budgets_pair_labeled_and_unlabeled_batches_of_one_size() {
        let ds = digits(50);
        let sampler = Sampler::new(&ds, config(Some(0.2))).unwrap();
        let (labeled, unlabeled) = labeled_split(&ds.labels, 10, 0.2, 7);
        assert!(!sampler.driving_is_labeled);
        // An epoch is one pass over the unlabeled pool; labeled batches cycle alongside.
        let batches = sampler.batches(0);
        assert_eq!(batches.len(), unlabeled.len().div_ceil(4));
        let mut seen_u: Vec<usize> = batches.iter().flat_map(|b| b.unlabeled.clone()).collect();
        seen_u.sort_unstable();
        assert_eq!(seen_u, unlabeled);
        for b in &batches {
            assert_eq!(b.labeled.len(), b.unlabeled.len());
            assert!(b.labeled.iter().all(|i| labeled.contains(i)));
        }
        let rs2 = SamplerConfig { subset_fraction: Some(2.0), ..config(None) };
        assert!(Sampler::new(&ds, rs2).is_err());
    }

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
    fn full_rounds_are_the_plain_epoch_shuffles() {
        let rounds = Rounds::new(37, None, 5).unwrap();
        for k in 0..3 {
            assert_eq!(rounds.round(k), epoch_order(37, 5, k));
        }
        assert_eq!(Rounds::new(37, Some(1.0), 5).unwrap(), rounds);
    }

    #[test]
    fn rs2_sees_every_example_once_before_any_repeats() {
        let n = 50;
        let rounds = Rounds::new(n, Some(0.12), 9).unwrap();
        assert_eq!(rounds.size(), 6);
        let seen: Vec<usize> = (0..20).flat_map(|k| rounds.round(k)).collect();
        assert_eq!(seen.len(), 120);
        // The first n positions are a permutation of 0..n, and so are the next n.
        for block in seen.chunks(n).take(2) {
            let mut sorted = block.to_vec();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..n).collect::<Vec<_>>());
        }
        // Round 8 straddles the reshuffle: its first two positions end one permutation, the rest
        // start the next.
        assert_eq!(rounds.round(8)[..2], epoch_order(n, 9, 0)[48..]);
        assert_eq!(rounds.round(8)[2..], epoch_order(n, 9, 1)[..4]);
        // Rounds differ: this is not a static subset.
        assert_ne!(rounds.round(0), rounds.round(1));
    }

    #[test]
    fn fractions_are_checked_and_tiny_ones_keep_one_example() {
        assert!(Rounds::new(10, Some(0.0), 0).is_err());
        assert!(Rounds::new(10, Some(1.5), 0).is_err());
        assert!(Rounds::new(10, Some(f64::NAN), 0).is_err());
        assert_eq!(Rounds::new(10, Some(0.01), 0).unwrap().size(), 1);
        assert!(Rounds::new(0, Some(0.5), 0).unwrap().round(3).is_empty());
    }

    #[test]
    fn windows_can_span_several_permutations() {
        let w = stream_window(4, 1, 2, 9);
        let mut expected = epoch_order(4, 1, 0)[2..].to_vec();
        expected.extend(epoch_order(4, 1, 1));
        expected.extend(&epoch_order(4, 1, 2)[..3]);
        assert_eq!(w, expected);
        assert!(stream_window(0, 1, 0, 5).is_empty());
    }
}
