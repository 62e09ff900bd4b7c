//! PS-KD's state: every training image's prediction from the previous epoch, and the soft targets
//! made from it.

use crate::{Error, Result};

/// The weight of the self-prediction at epoch `epoch` (0-based) of `epochs`: `α_T · (e + 1) / E`,
/// so the network leans on its own past answers more as they become trustworthy.
pub fn alpha_at(alpha_t: f64, epoch: usize, epochs: usize) -> f64 {
    alpha_t * (epoch + 1) as f64 / epochs.max(1) as f64
}

/// `P[N, C]`: each training image's softmax from the last time it was seen, one-hot before that.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictionTable {
    classes: usize,
    probs: Vec<f32>,
}

impl PredictionTable {
    /// One-hot rows of `labels`, the table at the start of training.
    pub fn one_hot(labels: &[u8], classes: usize) -> Result<PredictionTable> {
        let mut probs = vec![0f32; labels.len() * classes];
        for (row, &label) in labels.iter().enumerate() {
            let label = usize::from(label);
            if label >= classes {
                return Err(Error::InvalidArgument(format!("label {label} is out of range for {classes} classes")));
            }
            probs[row * classes + label] = 1.0;
        }
        Ok(PredictionTable { classes, probs })
    }

    /// Classes per row.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// All rows, row-major, for checkpoints.
    pub fn as_slice(&self) -> &[f32] {
        &self.probs
    }

    /// Replaces all rows, e.g. from a checkpoint.
    pub fn load(&mut self, probs: Vec<f32>) -> Result<()> {
        if probs.len() != self.probs.len() {
            return Err(Error::InvalidArgument(format!(
                "the prediction table has {} values, found {}",
                self.probs.len(),
                probs.len()
            )));
        }
        self.probs = probs;
        Ok(())
    }

    /// Soft targets `(1 − α) · onehot(y) + α · P[idx]`, row-major `[idx.len(), classes]`.
    ///
    /// # Panics
    ///
    /// If an index or label is out of range: both come from the program, never from a user.
    pub fn targets(&self, idx: &[usize], labels: &[u8], alpha: f64) -> Vec<f32> {
        let c = self.classes;
        let alpha = alpha as f32;
        let mut out = Vec::with_capacity(idx.len() * c);
        for &i in idx {
            out.extend(self.probs[i * c..(i + 1) * c].iter().map(|p| alpha * p));
            let row = out.len() - c;
            out[row + usize::from(labels[i])] += 1.0 - alpha;
        }
        out
    }

    /// Stores the rows of `probs` (row-major, one per index) as the latest predictions.
    ///
    /// # Panics
    ///
    /// If an index is out of range or `probs` has the wrong length: both come from the program.
    pub fn update(&mut self, idx: &[usize], probs: &[f32]) {
        let c = self.classes;
        assert_eq!(probs.len(), idx.len() * c, "one row of predictions per index. This is a bug.");
        for (&i, row) in idx.iter().zip(probs.chunks_exact(c)) {
            self.probs[i * c..(i + 1) * c].copy_from_slice(row);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_sum_to_one_and_start_as_the_labels() {
        let labels = [2u8, 0, 1, 2];
        let mut table = PredictionTable::one_hot(&labels, 3).unwrap();
        // Before any update the targets are the labels whatever alpha is.
        let t = table.targets(&[3, 1], &labels, alpha_at(0.8, 0, 10));
        assert_eq!(t, vec![0., 0., 1., 1., 0., 0.]);
        table.update(&[3, 0], &[0.2, 0.5, 0.3, 0.6, 0.3, 0.1]);
        for epoch in 0..10 {
            let alpha = alpha_at(0.8, epoch, 10);
            let t = table.targets(&[0, 1, 2, 3], &labels, alpha);
            for row in t.chunks(3) {
                let sum: f32 = row.iter().sum();
                assert!((sum - 1.0).abs() < 1e-6, "{row:?}");
                assert!(row.iter().all(|&p| p >= 0.0));
            }
            if epoch == 9 {
                // α = 0.8: 0.2 · onehot(2) + 0.8 · [0.2, 0.5, 0.3].
                let expected = [0.16, 0.4, 0.44];
                assert!(t[9..].iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-6), "{t:?}");
            }
        }
        assert!((alpha_at(0.8, 9, 10) - 0.8).abs() < 1e-12);
        assert!((alpha_at(0.8, 0, 10) - 0.08).abs() < 1e-12);
        assert!(PredictionTable::one_hot(&[3], 3).is_err());
        assert!(table.load(vec![0.0; 5]).is_err());
    }
}
