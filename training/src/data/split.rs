//! The fixed train/val/test partition of every dataset.
//!
//! The permutation uses a small generator written out here rather than `rand`'s `StdRng`, whose
//! algorithm `rand` reserves the right to change between releases: a dependency upgrade must never
//! move images between splits, or a test score would silently stop being held out.

use super::{digits, DatasetName, Split};
use crate::{Error, Result};

/// Seed of the split permutation. It is a constant of the codebase, independent of any training
/// seed, so the test split is the same for every run, recipe and machine.
pub const SPLIT_SEED: u64 = 0x7a4d_5e1e_c7ed_da7a;

/// Images in the official MNIST-style training set.
const OFFICIAL_TRAIN: usize = 60_000;
/// Of those, the images used for validation.
const OFFICIAL_VAL: usize = 5_000;
/// Digits images per split: 70/10/20 of 1,797.
const DIGITS_TRAIN: usize = 1_257;
const DIGITS_VAL: usize = 180;
const DIGITS_TEST: usize = 360;

/// Indices of `split` within the data that [`super::load`] read for it (`n` items), or `None` when
/// the split is that data as a whole (the official MNIST-style test set).
pub(crate) fn indices(name: DatasetName, split: Split, n: usize) -> Result<Option<Vec<usize>>> {
    let (total, ranges) = match name {
        DatasetName::Digits => (
            digits::COUNT,
            [
                0..DIGITS_TRAIN,
                DIGITS_TRAIN..DIGITS_TRAIN + DIGITS_VAL,
                DIGITS_TRAIN + DIGITS_VAL..DIGITS_TRAIN + DIGITS_VAL + DIGITS_TEST,
            ],
        ),
        DatasetName::Mnist | DatasetName::FashionMnist => {
            if split == Split::Test {
                return Ok(None);
            }
            let train = OFFICIAL_TRAIN - OFFICIAL_VAL;
            (OFFICIAL_TRAIN, [0..train, train..OFFICIAL_TRAIN, OFFICIAL_TRAIN..OFFICIAL_TRAIN])
        }
    };
    if n != total {
        return Err(Error::InvalidData {
            file: name.to_string(),
            reason: format!("expected {total} images to split, found {n}"),
        });
    }
    let range = match split {
        Split::Train => ranges[0].clone(),
        Split::Val => ranges[1].clone(),
        Split::Test => ranges[2].clone(),
    };
    let mut idx = permutation(total, SPLIT_SEED)[range].to_vec();
    idx.sort_unstable();
    Ok(Some(idx))
}

/// A uniformly random permutation of `0..n` (Fisher–Yates) driven by SplitMix64.
fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut state = seed;
    let mut perm: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = below(&mut state, i as u64 + 1) as usize;
        perm.swap(i, j);
    }
    perm
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Uniform in `0..bound` without modulo bias (rejection of the short last block).
fn below(state: &mut u64, bound: u64) -> u64 {
    let zone = u64::MAX - u64::MAX % bound;
    loop {
        let x = splitmix64(state);
        if x < zone {
            return x % bound;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_splits(name: DatasetName, n: usize) -> Vec<Vec<usize>> {
        Split::ALL.iter().map(|&s| indices(name, s, n).unwrap().unwrap_or_default()).collect()
    }

    #[test]
    fn digits_partition_is_70_10_20_and_disjoint() {
        let parts = all_splits(DatasetName::Digits, digits::COUNT);
        let sizes: Vec<usize> = parts.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![1257, 180, 360]);
        let mut all: Vec<usize> = parts.concat();
        all.sort_unstable();
        assert_eq!(all, (0..digits::COUNT).collect::<Vec<_>>());
        for p in &parts {
            assert!(p.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
        }
        // A shuffled partition, not a block of consecutive rows.
        assert_ne!(parts[2], (parts[2][0]..parts[2][0] + 360).collect::<Vec<_>>());
    }

    #[test]
    fn official_train_set_splits_55k_5k() {
        for name in [DatasetName::Mnist, DatasetName::FashionMnist] {
            let train = indices(name, Split::Train, 60_000).unwrap().unwrap();
            let val = indices(name, Split::Val, 60_000).unwrap().unwrap();
            assert_eq!((train.len(), val.len()), (55_000, 5_000));
            let mut all = [train, val].concat();
            all.sort_unstable();
            assert_eq!(all, (0..60_000).collect::<Vec<_>>());
            assert_eq!(indices(name, Split::Test, 10_000).unwrap(), None);
        }
    }

    #[test]
    fn splits_are_deterministic_and_seed_dependent() {
        let a = indices(DatasetName::Digits, Split::Test, digits::COUNT).unwrap();
        let b = indices(DatasetName::Digits, Split::Test, digits::COUNT).unwrap();
        assert_eq!(a, b);
        assert_eq!(permutation(1000, 7), permutation(1000, 7));
        assert_ne!(permutation(1000, 7), permutation(1000, 8));
    }

    #[test]
    fn wrong_input_size_is_an_error() {
        assert!(indices(DatasetName::Digits, Split::Train, 10).is_err());
        assert!(indices(DatasetName::Mnist, Split::Val, 59_999).is_err());
    }

    #[test]
    fn permutation_is_roughly_uniform() {
        // Position of element 0 over many seeds: each of 4 slots should get about a quarter.
        let mut hits = [0usize; 4];
        for seed in 0..4000 {
            let p = permutation(4, seed);
            hits[p.iter().position(|&x| x == 0).unwrap()] += 1;
        }
        for h in hits {
            assert!((850..=1150).contains(&h), "{hits:?}");
        }
    }
}
