//! PS-KD: every training image's prediction from the previous epoch, the soft targets made from
//! it, and the method that trains on them.
//!
//! The prediction table is checkpointed beside the weights (as [`TABLE`]), so a resumed run
//! continues with the predictions the interrupted one had.

use candle_core::{Tensor, Var, D};
use candle_nn::ops::softmax;
use rand::rngs::StdRng;

use crate::losses::soft_cross_entropy;
use crate::methods::{ClassifierMethod, ClassifierRun};
use crate::sampling::StepBatch;
use crate::trainer::StepOutput;
use crate::{Error, Result};

/// Name of the prediction table in the checkpoint.
pub const TABLE: &str = "pskd.predictions";

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

/// Progressive self-knowledge distillation on the labeled images of each batch.
pub(crate) struct Pskd {
    alpha: f64,
    epochs: usize,
    table: PredictionTable,
    /// The table as a checkpointed variable, written before every checkpoint.
    var: Var,
}

impl Pskd {
    /// Starts from one-hot predictions of the training labels.
    pub(crate) fn new(alpha: f64, run: &ClassifierRun) -> Result<Pskd> {
        let ds = &run.train_set;
        let table = PredictionTable::one_hot(&ds.labels, ds.num_classes())?;
        let shape = (ds.len(), table.classes());
        let var = Var::from_tensor(&Tensor::from_slice(table.as_slice(), shape, &run.device)?)?;
        Ok(Pskd { alpha, epochs: run.epochs, table, var })
    }
}

impl ClassifierMethod for Pskd {
    fn state(&self) -> Vec<(String, Var)> {
        vec![(TABLE.to_owned(), self.var.clone())]
    }

    fn restored(&mut self) -> Result<()> {
        self.table.load(self.var.as_tensor().flatten_all()?.to_vec1::<f32>()?)
    }

    fn step(&mut self, run: &ClassifierRun, epoch: usize, batch: &StepBatch, rng: &mut StdRng) -> Result<StepOutput> {
        let forward = run.forward(batch, false, rng)?;
        let alpha = alpha_at(self.alpha, epoch, self.epochs);
        let targets = self.table.targets(&batch.labeled, &run.train_set.labels, alpha);
        let targets = Tensor::from_vec(targets, (forward.n_labeled, self.table.classes()), &run.device)?;
        let loss = soft_cross_entropy(&forward.out.logits, &targets)?;
        let probs = softmax(&forward.out.logits.detach(), D::Minus1)?.flatten_all()?.to_vec1::<f32>()?;
        self.table.update(&batch.labeled, &probs);
        forward.output(loss)
    }

    fn save_state(&mut self, run: &ClassifierRun) -> Result<()> {
        self.var.set(&Tensor::from_slice(self.table.as_slice(), self.var.shape(), &run.device)?)?;
        Ok(())
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
