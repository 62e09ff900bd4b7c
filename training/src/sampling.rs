//! Which training examples each epoch visits: RS2 rounds and endlessly cycled pools.
//!
//! Both are windows onto one endless sequence: the seeded permutations `epoch_order(n, seed, 0)`,
//! `epoch_order(n, seed, 1)`, … laid end to end. Any window is a pure function of its position, so
//! a resumed run sees exactly the examples the interrupted one would have, and with the full data
//! per round the rounds are exactly the plain per-epoch shuffles.

use crate::data::epoch_order;
use crate::{Error, Result};

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
