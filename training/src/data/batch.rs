//! Turning dataset rows into training batches: epoch shuffles, shift augmentation, tensors.
//!
//! Everything random here takes an explicit seed or generator, so a run repeated with the same
//! seed sees the same batches in the same order.

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::Dataset;

/// Input normalisation, applied to `pixel / 255` as `(x - mean) / std`; the same two numbers go
/// into a bundle's input spec so inference normalises exactly like training did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Subtracted after scaling to 0..=1.
    pub mean: f32,
    /// Divided by after subtracting the mean.
    pub std: f32,
}

impl Normalization {
    /// Leaves `pixel / 255` unchanged.
    pub const IDENTITY: Normalization = Normalization { mean: 0.0, std: 1.0 };

    /// Mean and standard deviation of all pixels of `ds` (scaled to 0..=1). Fit it on the train
    /// split only, so validation and test stay unseen. A constant or empty dataset gets `std` 1,
    /// since dividing by zero would turn every input into NaN.
    pub fn fit(ds: &Dataset) -> Normalization {
        let n = ds.images.len();
        if n == 0 {
            return Normalization::IDENTITY;
        }
        let (sum, sum_sq) =
            ds.images.iter().fold((0u64, 0u64), |(s, q), &p| (s + p as u64, q + (p as u64) * (p as u64)));
        let mean = sum as f64 / n as f64 / 255.0;
        let var = (sum_sq as f64 / n as f64 / (255.0 * 255.0) - mean * mean).max(0.0);
        let std = var.sqrt();
        Normalization { mean: mean as f32, std: if std > 1e-6 { std as f32 } else { 1.0 } }
    }

    fn apply(&self, pixel: u8) -> f32 {
        (pixel as f32 / 255.0 - self.mean) / self.std
    }
}

impl Default for Normalization {
    fn default() -> Self {
        Normalization::IDENTITY
    }
}

/// The images at `idx` as an `[B, 1, H, W]` `f32` tensor, normalised.
pub fn images_to_tensor(
    ds: &Dataset,
    idx: &[usize],
    norm: Normalization,
    device: &Device,
) -> candle_core::Result<Tensor> {
    check_indices(ds, idx)?;
    let mut values = Vec::with_capacity(idx.len() * ds.image_len());
    for &i in idx {
        values.extend(ds.image(i).iter().map(|&p| norm.apply(p)));
    }
    Tensor::from_vec(values, (idx.len(), 1, ds.height, ds.width), device)
}

/// The labels at `idx` as a `[B]` `u32` tensor, the type candle's losses index with.
pub fn labels_to_tensor(ds: &Dataset, idx: &[usize], device: &Device) -> candle_core::Result<Tensor> {
    check_indices(ds, idx)?;
    let labels: Vec<u32> = idx.iter().map(|&i| ds.labels[i] as u32).collect();
    Tensor::from_vec(labels, idx.len(), device)
}

/// `b` images of `h × w` bytes (e.g. from [`Augment::apply`]) as an `[B, 1, H, W]` `f32` tensor,
/// normalised.
pub fn pixels_to_tensor(
    pixels: &[u8],
    b: usize,
    h: usize,
    w: usize,
    norm: Normalization,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let expected = b
        .checked_mul(h)
        .and_then(|x| x.checked_mul(w))
        .ok_or_else(|| candle_core::Error::Msg(format!("batch {b}x{h}x{w} overflows")))?;
    if pixels.len() != expected {
        return Err(candle_core::Error::Msg(format!("{} pixels do not make {b} images of {h}x{w}", pixels.len())));
    }
    let values: Vec<f32> = pixels.iter().map(|&p| norm.apply(p)).collect();
    Tensor::from_vec(values, (b, 1, h, w), device)
}

/// A permutation of `0..n` for one epoch, determined by `(seed, epoch)` alone, so a resumed run
/// continues with exactly the batches the interrupted one would have seen.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let epoch_seed = seed ^ (epoch as u64).wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut rng = StdRng::seed_from_u64(epoch_seed);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    order
}

/// The ordinary augmentation of every training image: a random whole-pixel translation, an
/// optional small rotation, and an optional left-right mirror. The uncovered border is filled
/// with zeros, the background of every dataset here.
///
/// Rotation and mirroring are off by default because they are not label-preserving everywhere:
/// a mirrored digit is not a digit, but a mirrored shirt is still a shirt.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Augment {
    /// Largest shift, in pixels, along each axis; 0 disables it.
    pub max_shift: usize,
    /// Largest rotation either way, in degrees; 0 disables it.
    #[serde(default)]
    pub max_rotation_deg: f32,
    /// Mirror half of the images left to right.
    #[serde(default)]
    pub flip: bool,
}

impl Augment {
    /// Translation only, by up to `max_shift` pixels.
    pub fn shift(max_shift: usize) -> Augment {
        Augment { max_shift, ..Augment::default() }
    }

    /// The images at `idx`, each distorted with its own random draw, concatenated into
    /// `idx.len() * height * width` bytes ready for [`pixels_to_tensor`].
    ///
    /// # Panics
    ///
    /// If an index is `>= ds.len()`: indices come from the program, never from a user.
    pub fn apply(&self, ds: &Dataset, idx: &[usize], rng: &mut impl Rng) -> Vec<u8> {
        let (h, w) = (ds.height, ds.width);
        let mut out = vec![0u8; idx.len() * h * w];
        let s = i64::try_from(self.max_shift).unwrap_or(i64::MAX / 2);
        let rotate = self.max_rotation_deg.is_finite() && self.max_rotation_deg > 0.0;
        for (dst, &i) in out.chunks_exact_mut((h * w).max(1)).zip(idx) {
            let src = ds.image(i);
            let (dy, dx): (i64, i64) =
                if s == 0 { (0, 0) } else { (rng.random_range(-s..=s), rng.random_range(-s..=s)) };
            // Any shift of a full side or more clears the image; clamping keeps the arithmetic
            // below far from overflow without changing the result.
            let dy = dy.clamp(-(h as i64), h as i64) as isize;
            let dx = dx.clamp(-(w as i64), w as i64) as isize;
            if rotate {
                let angle = rng.random_range(-self.max_rotation_deg..=self.max_rotation_deg).to_radians();
                crate::augment::rotate_shift_into(src, dst, h, w, angle, dy as f32, dx as f32);
            } else {
                shift_into(src, dst, h, w, dy, dx);
            }
            if self.flip && w > 0 && rng.random_bool(0.5) {
                dst.chunks_exact_mut(w).for_each(<[u8]>::reverse);
            }
        }
        out
    }
}

/// Writes `src` moved down by `dy` and right by `dx` into `dst`, which must start zeroed.
fn shift_into(src: &[u8], dst: &mut [u8], h: usize, w: usize, dy: isize, dx: isize) {
    let (h, w) = (h as isize, w as isize);
    // Columns of the destination row that receive a source pixel.
    let x0 = dx.clamp(0, w);
    let x1 = (w + dx).clamp(0, w);
    if x0 >= x1 {
        return;
    }
    for y in 0..h {
        let sy = y - dy;
        if sy < 0 || sy >= h {
            continue;
        }
        let d = (y * w) as usize;
        let s = (sy * w) as usize;
        dst[d + x0 as usize..d + x1 as usize].copy_from_slice(&src[s + (x0 - dx) as usize..s + (x1 - dx) as usize]);
    }
}

fn check_indices(ds: &Dataset, idx: &[usize]) -> candle_core::Result<()> {
    match idx.iter().find(|&&i| i >= ds.len()) {
        Some(bad) => {
            Err(candle_core::Error::Msg(format!("index {bad} is out of range for a dataset of {} images", ds.len())))
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::DatasetName;
    use super::*;

    /// `n` images of 5×6; image `k` has the single bright pixel at row `k % 5`, column `k % 6`.
    fn dots(n: usize) -> Dataset {
        let (h, w) = (5, 6);
        let mut images = vec![0u8; n * h * w];
        for k in 0..n {
            images[k * h * w + (k % h) * w + k % w] = 200;
        }
        Dataset {
            name: DatasetName::Digits,
            height: h,
            width: w,
            images,
            labels: (0..n).map(|k| (k % 10) as u8).collect(),
            classes: DatasetName::Digits.classes(),
            source_sha256: String::new(),
        }
    }

    #[test]
    fn image_tensor_has_batch_layout_and_normalisation() {
        let ds = dots(4);
        let norm = Normalization { mean: 0.5, std: 0.25 };
        let t = images_to_tensor(&ds, &[2, 0], norm, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[2, 1, 5, 6]);
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let background = (0.0 - 0.5) / 0.25;
        let bright = (200.0 / 255.0 - 0.5) / 0.25;
        // Image 2's dot is at (2, 2); image 0's at (0, 0).
        assert!((v[2 * 6 + 2] - bright).abs() < 1e-6);
        assert!((v[30] - bright).abs() < 1e-6);
        assert!((v[1] - background).abs() < 1e-6);
        assert_eq!(v.iter().filter(|&&x| (x - bright).abs() < 1e-6).count(), 2);
    }

    #[test]
    fn label_tensor_is_u32() {
        let ds = dots(12);
        let t = labels_to_tensor(&ds, &[11, 3, 10], &Device::Cpu).unwrap();
        assert_eq!(t.dtype(), candle_core::DType::U32);
        assert_eq!(t.to_vec1::<u32>().unwrap(), vec![1, 3, 0]);
    }

    #[test]
    fn bad_indices_and_sizes_are_errors() {
        let ds = dots(3);
        let norm = Normalization::IDENTITY;
        assert!(images_to_tensor(&ds, &[3], norm, &Device::Cpu).is_err());
        assert!(labels_to_tensor(&ds, &[0, 7], &Device::Cpu).is_err());
        assert!(pixels_to_tensor(&[0; 10], 1, 3, 3, norm, &Device::Cpu).is_err());
        let t = pixels_to_tensor(&[255; 18], 2, 3, 3, norm, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[2, 1, 3, 3]);
        assert!(pixels_to_tensor(&[], usize::MAX, 2, 2, norm, &Device::Cpu).is_err());
    }

    #[test]
    fn epoch_order_is_a_deterministic_permutation() {
        let a = epoch_order(500, 42, 3);
        assert_eq!(a, epoch_order(500, 42, 3));
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..500).collect::<Vec<_>>());
        assert_ne!(a, epoch_order(500, 42, 4));
        assert_ne!(a, epoch_order(500, 43, 3));
        assert_ne!(epoch_order(500, 0, 0), (0..500).collect::<Vec<_>>());
        assert!(epoch_order(0, 1, 1).is_empty());
    }

    #[test]
    fn shifts_move_pixels_within_bounds_and_fill_zeros() {
        let ds = dots(30);
        let aug = Augment::shift(2);
        let mut rng = StdRng::seed_from_u64(9);
        let idx: Vec<usize> = (0..30).collect();
        let out = aug.apply(&ds, &idx, &mut rng);
        assert_eq!(out.len(), 30 * 30);
        let mut moved = 0;
        for (k, img) in out.chunks_exact(30).enumerate() {
            let (y, x) = ((k % 5) as isize, (k % 6) as isize);
            let lit: Vec<usize> = (0..30).filter(|&p| img[p] != 0).collect();
            // Either the dot moved by at most 2 in each axis, or it was pushed off the image.
            assert!(lit.len() <= 1, "image {k}: {lit:?}");
            if let Some(&p) = lit.first() {
                let (ny, nx) = ((p / 6) as isize, (p % 6) as isize);
                assert!((ny - y).abs() <= 2 && (nx - x).abs() <= 2, "image {k}");
                assert_eq!(img[p], 200);
                moved += usize::from((ny, nx) != (y, x));
            }
        }
        assert!(moved > 10, "only {moved} of 30 images moved");
        // Same generator state, same shifts.
        let again = aug.apply(&ds, &idx, &mut StdRng::seed_from_u64(9));
        assert_eq!(out, again);
    }

    #[test]
    fn flips_mirror_rows_and_rotations_are_seeded() {
        let ds = dots(30);
        let (h, w) = (ds.height, ds.width);
        let flip = Augment { flip: true, ..Augment::default() };
        let mut rng = StdRng::seed_from_u64(5);
        let mut flipped = 0;
        for _ in 0..40 {
            let out = flip.apply(&ds, &[0], &mut rng);
            let mirrored: Vec<u8> = ds.image(0).chunks(w).flat_map(|r| r.iter().rev().copied()).collect();
            assert!(out == ds.image(0) || out == mirrored);
            flipped += usize::from(out == mirrored && out != ds.image(0));
        }
        // Half of the draws mirror: 40 draws all alike would be a broken coin.
        assert!((5..=35).contains(&flipped), "{flipped} of 40 mirrored");
        let rotate = Augment { max_rotation_deg: 30.0, ..Augment::default() };
        let out = rotate.apply(&ds, &[0, 1], &mut StdRng::seed_from_u64(6));
        assert_eq!(out.len(), 2 * h * w);
        assert_ne!(&out[..h * w], ds.image(0));
        let again = rotate.apply(&ds, &[0, 1], &mut StdRng::seed_from_u64(6));
        assert_eq!(out, again);
    }

    #[test]
    fn zero_shift_copies_and_large_shift_clears() {
        let ds = dots(4);
        let mut rng = StdRng::seed_from_u64(1);
        let out = Augment::shift(0).apply(&ds, &[3, 1], &mut rng);
        assert_eq!(&out[..30], ds.image(3));
        assert_eq!(&out[30..], ds.image(1));

        let full: Vec<u8> = vec![7; 30];
        let mut dst = vec![0u8; 30];
        shift_into(&full, &mut dst, 5, 6, 0, 6);
        assert!(dst.iter().all(|&p| p == 0));
        shift_into(&full, &mut dst, 5, 6, -5, 0);
        assert!(dst.iter().all(|&p| p == 0));
        shift_into(&full, &mut dst, 5, 6, 1, -2);
        // Rows 1..5 and columns 0..4 are covered: 4 * 4 pixels.
        assert_eq!(dst.iter().filter(|&&p| p == 7).count(), 16);
        assert!(dst[..6].iter().all(|&p| p == 0));
    }

    #[test]
    fn fit_matches_direct_computation() {
        let ds = dots(10);
        let norm = Normalization::fit(&ds);
        let xs: Vec<f64> = ds.images.iter().map(|&p| p as f64 / 255.0).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!((norm.mean as f64 - mean).abs() < 1e-6);
        assert!((norm.std as f64 - var.sqrt()).abs() < 1e-6);
        let flat = Dataset { images: vec![9; 30], ..dots(1) };
        assert_eq!(Normalization::fit(&flat).std, 1.0);
    }
}
