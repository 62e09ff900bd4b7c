//! How good a tokenizer's reconstructions and codes are: PSNR and SSIM on 8-bit images, and each
//! codebook's usage and perplexity per depth.

/// Peak signal-to-noise ratio of `b` against `a`, both 0–255, in dB; identical images count as
/// 100 dB, so that a mean over images stays finite.
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let mse =
        a.iter().zip(b).map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2)).sum::<f64>() / a.len().max(1) as f64;
    if mse == 0.0 {
        100.0
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

/// The normalised 11-tap Gaussian window (σ = 1.5) of Wang et al.'s SSIM.
fn gaussian_window() -> [f64; 11] {
    let mut w = [0.0; 11];
    for (i, v) in w.iter_mut().enumerate() {
        let d = i as f64 - 5.0;
        *v = (-d * d / (2.0 * 1.5 * 1.5)).exp();
    }
    let total: f64 = w.iter().sum();
    w.map(|v| v / total)
}

/// Mean structural similarity (Wang et al. 2004) of two `height`×`width` 8-bit images: local
/// statistics under an 11×11 Gaussian window (σ = 1.5) at every position where the window fits,
/// C₁ = (0.01·255)², C₂ = (0.03·255)². Images smaller than the window use all their pixels once.
pub fn ssim(a: &[u8], b: &[u8], height: usize, width: usize) -> f64 {
    let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
    let g = gaussian_window();
    let at = |img: &[u8], r: usize, c: usize| f64::from(img[r * width + c]);
    let stats = |r0: usize, c0: usize, rows: usize, cols: usize, weight: &dyn Fn(usize, usize) -> f64| {
        let (mut ma, mut mb, mut aa, mut bb, mut ab) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for i in 0..rows {
            for j in 0..cols {
                let w = weight(i, j);
                let (x, y) = (at(a, r0 + i, c0 + j), at(b, r0 + i, c0 + j));
                (ma, mb, aa, bb, ab) = (ma + w * x, mb + w * y, aa + w * x * x, bb + w * y * y, ab + w * x * y);
            }
        }
        let (va, vb, cov) = (aa - ma * ma, bb - mb * mb, ab - ma * mb);
        ((2.0 * ma * mb + c1) * (2.0 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2))
    };
    if height < 11 || width < 11 {
        let n = (height * width) as f64;
        return stats(0, 0, height, width, &|_, _| 1.0 / n);
    }
    let window = |i: usize, j: usize| g[i] * g[j];
    let (rows, cols) = (height - 10, width - 10);
    let mut total = 0.0;
    for r in 0..rows {
        for c in 0..cols {
            total += stats(r, c, 11, 11, &window);
        }
    }
    total / (rows * cols) as f64
}

/// How a codebook was used at one depth: the share of its codes that occurred, and the
/// perplexity exp(H) of the codes' distribution (the number of equally likely codes it is worth).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CodeUsage {
    /// Codes that occurred at least once, over the codebook's size.
    pub usage: f64,
    /// exp of the entropy (nats) of the codes' frequencies.
    pub perplexity: f64,
}

/// The usage of a `size`-entry codebook by `codes`.
pub fn code_usage(codes: impl IntoIterator<Item = u32>, size: usize) -> CodeUsage {
    let mut counts = vec![0u64; size];
    let mut n = 0u64;
    for c in codes {
        counts[c as usize] += 1;
        n += 1;
    }
    let entropy: f64 = counts
        .iter()
        .filter(|&&k| k > 0)
        .map(|&k| {
            let p = k as f64 / n as f64;
            -p * p.ln()
        })
        .sum();
    CodeUsage { usage: counts.iter().filter(|&&k| k > 0).count() as f64 / size as f64, perplexity: entropy.exp() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psnr_is_infinite_free_and_falls_with_error() {
        let a = vec![100u8; 64];
        assert_eq!(psnr(&a, &a), 100.0);
        let b: Vec<u8> = a.iter().map(|v| v + 10).collect();
        assert!((psnr(&a, &b) - 10.0 * (65025.0f64 / 100.0).log10()).abs() < 1e-9);
    }

    #[test]
    fn ssim_is_one_for_equal_images_and_lower_for_noisy_ones() {
        let a: Vec<u8> = (0..28 * 28).map(|i| ((i * 7) % 256) as u8).collect();
        assert!((ssim(&a, &a, 28, 28) - 1.0).abs() < 1e-12);
        let b: Vec<u8> = a.iter().enumerate().map(|(i, v)| v.saturating_add(((i * 13) % 40) as u8)).collect();
        let s = ssim(&a, &b, 28, 28);
        assert!(s < 0.99 && s > 0.0, "{s}");
        let inverted: Vec<u8> = a.iter().map(|v| 255 - v).collect();
        assert!(ssim(&a, &inverted, 28, 28) < 0.0, "anti-correlated structure scores below zero");
    }

    #[test]
    fn usage_and_perplexity_count_the_codes() {
        let u = code_usage([0, 1, 2, 3], 8);
        assert_eq!(u.usage, 0.5);
        assert!((u.perplexity - 4.0).abs() < 1e-9, "four equally likely codes");
        assert!((code_usage([5, 5, 5], 8).perplexity - 1.0).abs() < 1e-12);
    }
}
