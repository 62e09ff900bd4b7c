//! Running a tokenizer over a split: its reconstructions, its codes and the head's predictions on
//! the semantic codes, from which validation, the test and the benchmark table compute their
//! figures.

use std::sync::Arc;

use candle_core::{Device, Tensor, D};
use tandem_runtime::families::generator::{image_grid, to_pixels, GeneratedImage};
use tandem_runtime::models::image_tokenizer::ImageTokenizer;
use tandem_runtime::models::vit::Vit;

use super::quality::{code_usage, psnr, ssim, CodeUsage};
use crate::data::Dataset;
use crate::families::diffusion::model_space;
use crate::Result;

/// Images per forward pass.
const BATCH: usize = 250;

/// What a tokenizer made of the first `n` images of a split.
#[derive(Debug, Clone)]
pub struct Measured {
    /// The images, 0–255, row-major, image after image.
    pub originals: Vec<u8>,
    /// Their reconstructions from the pixel codes, the same way.
    pub reconstructions: Vec<u8>,
    /// Mean squared error of the reconstructions in model space ([−1, 1]).
    pub mse: f64,
    /// Pixel codes, `[n, positions, depth]` flattened.
    pub pixel_codes: Vec<u32>,
    /// Semantic codes, when the layout has them.
    pub semantic_codes: Option<Vec<u32>>,
    /// The head's class for each image from its semantic codes.
    pub predictions: Option<Vec<u32>>,
    /// The true classes.
    pub labels: Vec<u8>,
    /// Pixels per image.
    pub image_len: usize,
    /// Image side lengths `(height, width)`.
    pub size: (usize, usize),
    /// Codes per position.
    pub depth: usize,
    /// Entries per codebook.
    pub codebook_size: usize,
}

impl Measured {
    /// Images measured.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether no image was measured.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.originals.chunks(self.image_len).zip(self.reconstructions.chunks(self.image_len))
    }

    /// Mean PSNR over images, dB.
    pub fn psnr(&self) -> f64 {
        self.pairs().map(|(a, b)| psnr(a, b)).sum::<f64>() / self.len().max(1) as f64
    }

    /// Mean SSIM over images.
    pub fn ssim(&self) -> f64 {
        let (h, w) = self.size;
        self.pairs().map(|(a, b)| ssim(a, b, h, w)).sum::<f64>() / self.len().max(1) as f64
    }

    /// The head's accuracy on the semantic codes, when there are any.
    pub fn semantic_accuracy(&self) -> Option<f64> {
        let p = self.predictions.as_ref()?;
        Some(p.iter().zip(&self.labels).filter(|(a, b)| **a == u32::from(**b)).count() as f64 / p.len().max(1) as f64)
    }

    /// Usage of the pixel codebook over every depth.
    pub fn pixel_usage(&self) -> CodeUsage {
        code_usage(self.pixel_codes.iter().copied(), self.codebook_size)
    }

    /// Usage of a stream's codebook at each depth.
    pub fn usage_by_depth(&self, codes: &[u32]) -> Vec<CodeUsage> {
        (0..self.depth)
            .map(|d| code_usage(codes.iter().skip(d).step_by(self.depth).copied(), self.codebook_size))
            .collect()
    }
}

/// Tokenizes, reconstructs and classifies the first `n` images of `ds`.
pub fn measure(net: &ImageTokenizer, ds: &Dataset, n: usize, device: &Device) -> Result<Measured> {
    let shape = net.config().encoder.image_shape;
    let n = n.min(ds.len());
    let mut m = Measured {
        originals: Vec::with_capacity(n * ds.image_len()),
        reconstructions: Vec::with_capacity(n * ds.image_len()),
        mse: 0.0,
        pixel_codes: Vec::new(),
        semantic_codes: net.semantic_quantizer().map(|_| Vec::new()),
        predictions: net.semantic_quantizer().map(|_| Vec::new()),
        labels: ds.labels[..n].to_vec(),
        image_len: ds.image_len(),
        size: (ds.height, ds.width),
        depth: net.config().depth,
        codebook_size: net.config().codebook_size,
    };
    let mut squared = 0.0;
    for start in (0..n).step_by(BATCH) {
        let idx: Vec<usize> = (start..(start + BATCH).min(n)).collect();
        let x = Tensor::from_vec(model_space(ds, &idx), (idx.len(), shape[0], shape[1], shape[2]), device)?;
        let codes = net.encode(&x)?;
        let recon = net.decode(&codes.pixel)?;
        squared += f64::from((&recon - &x)?.sqr()?.sum_all()?.to_scalar::<f32>()?);
        for values in recon.flatten_from(1)?.to_device(&Device::Cpu)?.to_vec2::<f32>()? {
            m.reconstructions.extend(to_pixels(&values, shape));
        }
        for &i in &idx {
            m.originals.extend_from_slice(ds.image(i));
        }
        m.pixel_codes.extend(codes.pixel.flatten_all()?.to_vec1::<u32>()?);
        if let (Some(semantic), Some(all), Some(predictions)) =
            (&codes.semantic, m.semantic_codes.as_mut(), m.predictions.as_mut())
        {
            all.extend(semantic.flatten_all()?.to_vec1::<u32>()?);
            predictions.extend(net.classify(semantic)?.argmax(D::Minus1)?.to_vec1::<u32>()?);
        }
    }
    m.mse = squared / (n * ds.image_len()).max(1) as f64;
    Ok(m)
}

/// The accuracy of a ViT classifier on the first `n` images of `ds`.
pub fn classifier_accuracy(vit: &Vit, ds: &Dataset, n: usize, device: &Device) -> Result<f64> {
    let [c, h, w] = vit.config().image_shape;
    let n = n.min(ds.len());
    let mut hits = 0;
    for start in (0..n).step_by(BATCH) {
        let idx: Vec<usize> = (start..(start + BATCH).min(n)).collect();
        let x = Tensor::from_vec(model_space(ds, &idx), (idx.len(), c, h, w), device)?;
        let predicted = vit.forward(&x)?.argmax(D::Minus1)?.to_vec1::<u32>()?;
        hits += predicted.iter().zip(&idx).filter(|(p, &i)| **p == u32::from(ds.labels[i])).count();
    }
    Ok(hits as f64 / n.max(1) as f64)
}

/// A PNG of the first `k` originals in one row and their reconstructions in the row below.
pub fn reconstruction_grid(ds: &Dataset, m: &Measured, k: usize) -> Result<Vec<u8>> {
    let k = k.min(m.len());
    let (h, w) = m.size;
    let image = |pixels: &[u8]| -> Result<Arc<GeneratedImage>> {
        let png = tandem_runtime::families::generator::encode_png(pixels, w, h, 1)?;
        Ok(Arc::new(GeneratedImage { width: w, height: h, pixels: pixels.to_vec(), png }))
    };
    let mut images = Vec::with_capacity(2 * k);
    for source in [&m.originals, &m.reconstructions] {
        for i in 0..k {
            images.push(image(&source[i * ds.image_len()..(i + 1) * ds.image_len()])?);
        }
    }
    Ok(image_grid(&images, k, 2)?)
}
