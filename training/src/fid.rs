//! FID-CNN: the Fréchet distance between two image sets in the penultimate-layer features of a
//! classifier bundle, the FID recipe with a Tandem CNN in place of Inception (which needs a hub
//! download and sees 28×28 digits poorly).
//!
//! FD = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2·tr (Σ₁^½ Σ₂ Σ₁^½)^½, computed in f64 with symmetric eigen
//! decompositions (nalgebra), so no non-symmetric matrix square root is ever taken.

use std::path::Path;

use candle_core::{Device, Tensor};
use nalgebra::{DMatrix, DVector, SymmetricEigen};
use tandem_runtime::bundle::Bundle;
use tandem_runtime::families::classifier::inference_cnn;
use tandem_runtime::models::cnn::Cnn;

use crate::{Error, Result};

/// Images per forward pass.
const BATCH: usize = 256;

/// The mean and covariance of a set of feature vectors.
#[derive(Debug, Clone)]
pub struct FeatureStats {
    mean: DVector<f64>,
    cov: DMatrix<f64>,
    /// Vectors the statistics came from.
    pub n: usize,
}

impl FeatureStats {
    /// Statistics of `rows` (each a feature vector of one length); the covariance is unbiased.
    pub fn of(rows: &[Vec<f32>]) -> Result<FeatureStats> {
        let n = rows.len();
        let d = rows.first().map_or(0, Vec::len);
        if n < 2 || d == 0 || rows.iter().any(|r| r.len() != d) {
            return Err(Error::InvalidArgument(format!(
                "feature statistics need 2 or more vectors of one length, got {n}"
            )));
        }
        let mut mean = DVector::zeros(d);
        for r in rows {
            for (m, v) in mean.iter_mut().zip(r) {
                *m += f64::from(*v);
            }
        }
        mean /= n as f64;
        let mut cov = DMatrix::zeros(d, d);
        for r in rows {
            let centered = DVector::from_iterator(d, r.iter().zip(mean.iter()).map(|(v, m)| f64::from(*v) - m));
            cov.ger(1.0, &centered, &centered, 1.0);
        }
        cov /= (n - 1) as f64;
        Ok(FeatureStats { mean, cov, n })
    }

    /// The Fréchet distance between two Gaussians with these statistics.
    pub fn frechet_distance(&self, other: &FeatureStats) -> Result<f64> {
        if self.mean.len() != other.mean.len() {
            return Err(Error::InvalidArgument("feature statistics of different lengths".into()));
        }
        let diff = (&self.mean - &other.mean).norm_squared();
        let root = psd_sqrt(&self.cov);
        let inner = &root * &other.cov * &root;
        let inner = (&inner + inner.transpose()) * 0.5;
        let trace_sqrt: f64 = SymmetricEigen::new(inner).eigenvalues.iter().map(|l| l.max(0.0).sqrt()).sum();
        Ok(diff + self.cov.trace() + other.cov.trace() - 2.0 * trace_sqrt)
    }
}

/// The square root of a symmetric positive semi-definite matrix (negative rounding noise in the
/// eigenvalues clipped to 0).
fn psd_sqrt(m: &DMatrix<f64>) -> DMatrix<f64> {
    let eig = SymmetricEigen::new((m + m.transpose()) * 0.5);
    let roots = eig.eigenvalues.map(|l| l.max(0.0).sqrt());
    &eig.eigenvectors * DMatrix::from_diagonal(&roots) * eig.eigenvectors.transpose()
}

/// A classifier bundle as a feature extractor: its CNN up to the last linear layer, on images
/// normalised exactly as the classifier serves them.
pub struct FeatureExtractor {
    net: Cnn,
    shape: [usize; 3],
    mean: f32,
    std: f32,
    device: Device,
    /// `name@version` of the classifier, for reports.
    pub model: String,
}

impl FeatureExtractor {
    /// Loads the classifier bundle in `dir`.
    pub fn load(dir: &Path) -> Result<FeatureExtractor> {
        let bundle = Bundle::load(dir)?;
        let device = tandem_runtime::device::default_device();
        let net = inference_cnn(&bundle, &device)?;
        let spec = bundle.manifest.classifier().ok_or_else(|| Error::InvalidArgument("not a classifier".into()))?;
        Ok(FeatureExtractor {
            shape: spec.input.shape,
            mean: spec.input.mean,
            std: spec.input.std,
            net,
            device,
            model: bundle.model_id(),
        })
    }

    /// Penultimate-layer features of 8-bit images laid end to end (each the classifier's input size).
    pub fn features(&self, pixels: &[u8]) -> Result<Vec<Vec<f32>>> {
        Ok(self.run(pixels)?.0)
    }

    /// The features and the main head's predicted class of each image.
    pub fn features_and_classes(&self, pixels: &[u8]) -> Result<(Vec<Vec<f32>>, Vec<usize>)> {
        self.run(pixels)
    }

    fn run(&self, pixels: &[u8]) -> Result<(Vec<Vec<f32>>, Vec<usize>)> {
        let [c, h, w] = self.shape;
        let dim = c * h * w;
        if !pixels.len().is_multiple_of(dim) {
            return Err(Error::InvalidArgument(format!("{} pixels are not whole {h}x{w} images", pixels.len())));
        }
        let (mut features, mut classes) = (Vec::with_capacity(pixels.len() / dim), Vec::new());
        for chunk in pixels.chunks(dim * BATCH) {
            let n = chunk.len() / dim;
            let x: Vec<f32> = chunk.iter().map(|&p| (f32::from(p) / 255.0 - self.mean) / self.std).collect();
            let x = Tensor::from_vec(x, (n, c, h, w), &self.device)?;
            let f = self.net.features(&x, false)?;
            let logits = self.net.heads(&f)?.logits;
            classes.extend(logits.argmax(1)?.to_vec1::<u32>()?.into_iter().map(|k| k as usize));
            features.extend(f.flatten_from(1)?.to_vec2::<f32>()?);
        }
        Ok((features, classes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn gaussian(n: usize, d: usize, shift: f32, scale: f32, seed: u64) -> Vec<Vec<f32>> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| (0..d).map(|_| shift + scale * rng.sample::<f32, _>(rand_distr::StandardNormal)).collect())
            .collect()
    }

    #[test]
    fn the_distance_of_gaussians_matches_the_closed_form() {
        // Isotropic: FD = d·(Δμ)² + d·(s₁ − s₂)².
        let (d, n) = (4, 20_000);
        let a = FeatureStats::of(&gaussian(n, d, 0.0, 1.0, 1)).unwrap();
        let b = FeatureStats::of(&gaussian(n, d, 0.5, 2.0, 2)).unwrap();
        let fd = a.frechet_distance(&b).unwrap();
        let want = d as f64 * (0.25 + 1.0);
        assert!((fd - want).abs() < 0.15, "{fd} vs {want}");
        let same = FeatureStats::of(&gaussian(n, d, 0.0, 1.0, 3)).unwrap();
        assert!(a.frechet_distance(&same).unwrap().abs() < 0.02);
        assert!(a.frechet_distance(&a).unwrap().abs() < 1e-9, "a set is at distance 0 from itself");
    }

    #[test]
    fn too_few_vectors_are_an_error() {
        assert!(FeatureStats::of(&[vec![1.0, 2.0]]).is_err());
        assert!(FeatureStats::of(&[vec![1.0], vec![1.0, 2.0]]).is_err());
    }
}
