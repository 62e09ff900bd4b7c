//! Stronger augmentation for the second branch of dual-input-output training: random rotation,
//! zoom and translation in one affine warp, then a brightness change.
//!
//! The data module's shifts move whole pixels; rotation and zoom need sub-pixel sampling, so the
//! warp samples the source bilinearly, with the zero background outside it.

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::data::Dataset;

/// Ranges of the random distortions; each image draws its own values uniformly.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StrongAugment {
    /// Largest rotation either way, in degrees.
    pub max_rotation_deg: f32,
    /// Largest relative zoom either way (0.1: scale in 0.9..=1.1).
    pub max_zoom: f32,
    /// Largest translation along each axis, as a fraction of the side.
    pub max_shift: f32,
    /// Largest relative brightness change either way (0.2: pixels times 0.8..=1.2).
    pub max_brightness: f32,
}

impl Default for StrongAugment {
    /// Mild enough that a rotated 6 stays a 6 and a zoomed digit stays inside the frame.
    fn default() -> Self {
        StrongAugment { max_rotation_deg: 15.0, max_zoom: 0.1, max_shift: 0.1, max_brightness: 0.2 }
    }
}

impl StrongAugment {
    /// The images at `idx`, each distorted with its own draw, concatenated as
    /// `idx.len() * height * width` bytes (the layout of [`crate::data::Augment::apply`]).
    ///
    /// # Panics
    ///
    /// If an index is `>= ds.len()`: indices come from the program, never from a user.
    pub fn apply(&self, ds: &Dataset, idx: &[usize], rng: &mut impl Rng) -> Vec<u8> {
        let (h, w) = (ds.height, ds.width);
        let mut out = vec![0u8; idx.len() * h * w];
        for (dst, &i) in out.chunks_exact_mut((h * w).max(1)).zip(idx) {
            let warp = Warp {
                angle: symmetric(rng, self.max_rotation_deg).to_radians(),
                scale: 1.0 + symmetric(rng, self.max_zoom),
                dy: symmetric(rng, self.max_shift) * h as f32,
                dx: symmetric(rng, self.max_shift) * w as f32,
                brightness: 1.0 + symmetric(rng, self.max_brightness),
            };
            warp.apply(ds.image(i), dst, h, w);
        }
        out
    }
}

/// Writes `src` rotated by `angle` radians about its centre and moved by `(dy, dx)` pixels into
/// `dst`: the ordinary augmentation's rotation, sampled like the strong one.
pub(crate) fn rotate_shift_into(src: &[u8], dst: &mut [u8], h: usize, w: usize, angle: f32, dy: f32, dx: f32) {
    Warp { angle, scale: 1.0, dy, dx, brightness: 1.0 }.apply(src, dst, h, w);
}

/// A uniform draw in `-max..=max`; zero when the range is empty or not a number.
fn symmetric(rng: &mut impl Rng, max: f32) -> f32 {
    if max.is_finite() && max > 0.0 {
        rng.random_range(-max..=max)
    } else {
        0.0
    }
}

/// One image's distortion: rotate by `angle` and scale by `scale` about the centre, move by
/// `(dy, dx)` pixels, multiply intensities by `brightness`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Warp {
    angle: f32,
    scale: f32,
    dy: f32,
    dx: f32,
    brightness: f32,
}

impl Warp {
    /// Fills `dst` by mapping each destination pixel back into `src` (the inverse transform) and
    /// sampling there, so every destination pixel gets exactly one value.
    fn apply(&self, src: &[u8], dst: &mut [u8], h: usize, w: usize) {
        let (cy, cx) = ((h as f32 - 1.0) / 2.0, (w as f32 - 1.0) / 2.0);
        let (sin, cos) = self.angle.sin_cos();
        let inv_scale = 1.0 / self.scale.max(1e-3);
        for y in 0..h {
            for x in 0..w {
                let py = y as f32 - cy - self.dy;
                let px = x as f32 - cx - self.dx;
                let sy = (cos * py - sin * px) * inv_scale + cy;
                let sx = (sin * py + cos * px) * inv_scale + cx;
                let v = bilinear(src, h, w, sy, sx) * self.brightness;
                dst[y * w + x] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
}

/// The image at a fractional position, with zeros outside it.
fn bilinear(src: &[u8], h: usize, w: usize, y: f32, x: f32) -> f32 {
    let (y0, x0) = (y.floor(), x.floor());
    let (fy, fx) = (y - y0, x - x0);
    let at = |yy: f32, xx: f32| -> f32 {
        if yy < 0.0 || xx < 0.0 || yy >= h as f32 || xx >= w as f32 {
            return 0.0;
        }
        f32::from(src[yy as usize * w + xx as usize])
    };
    let top = at(y0, x0) * (1.0 - fx) + at(y0, x0 + 1.0) * fx;
    let bottom = at(y0 + 1.0, x0) * (1.0 - fx) + at(y0 + 1.0, x0 + 1.0) * fx;
    top * (1.0 - fy) + bottom * fy
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::DatasetName;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn identity() -> Warp {
        Warp { angle: 0.0, scale: 1.0, dy: 0.0, dx: 0.0, brightness: 1.0 }
    }

    fn image(h: usize, w: usize) -> Vec<u8> {
        (0..h * w).map(|i| ((i * 37) % 256) as u8).collect()
    }

    #[test]
    fn the_identity_warp_copies_the_image() {
        let src = image(5, 7);
        let mut dst = vec![0u8; 35];
        identity().apply(&src, &mut dst, 5, 7);
        assert_eq!(dst, src);
    }

    #[test]
    fn whole_pixel_shifts_and_quarter_turns_move_pixels_exactly() {
        let src = image(5, 5);
        let mut shifted = vec![0u8; 25];
        Warp { dy: 1.0, dx: -2.0, ..identity() }.apply(&src, &mut shifted, 5, 5);
        for y in 0..5 {
            for x in 0..5 {
                let expected = if y >= 1 && x + 2 < 5 { src[(y - 1) * 5 + x + 2] } else { 0 };
                assert_eq!(shifted[y * 5 + x], expected, "({y}, {x})");
            }
        }
        // Four quarter turns bring the image back.
        let quarter = Warp { angle: std::f32::consts::FRAC_PI_2, ..identity() };
        let mut img = src.clone();
        for _ in 0..4 {
            let mut next = vec![0u8; 25];
            quarter.apply(&img, &mut next, 5, 5);
            assert_ne!(next, img);
            img = next;
        }
        assert_eq!(img, src);
    }

    #[test]
    fn brightness_saturates_and_random_draws_stay_in_range() {
        let src = vec![200u8; 16];
        let mut dst = vec![0u8; 16];
        Warp { brightness: 1.5, ..identity() }.apply(&src, &mut dst, 4, 4);
        assert!(dst.iter().all(|&p| p == 255));
        let ds = Dataset {
            name: DatasetName::Digits,
            height: 8,
            width: 8,
            images: (0..3 * 64).map(|i| (i % 200) as u8).collect(),
            labels: vec![0, 1, 2],
            classes: DatasetName::Digits.classes(),
            source_sha256: String::new(),
        };
        let aug = StrongAugment::default();
        let a = aug.apply(&ds, &[0, 2], &mut StdRng::seed_from_u64(1));
        let b = aug.apply(&ds, &[0, 2], &mut StdRng::seed_from_u64(1));
        assert_eq!(a, b);
        assert_eq!(a.len(), 128);
        assert_ne!(&a[..64], ds.image(0));
        let off = StrongAugment { max_rotation_deg: 0.0, max_zoom: 0.0, max_shift: 0.0, max_brightness: 0.0 };
        assert_eq!(off.apply(&ds, &[1], &mut StdRng::seed_from_u64(2)), ds.image(1));
    }
}
