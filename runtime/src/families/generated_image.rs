//! Generated images as pixels and PNG files: the output side of the generation families, kept
//! apart from sampling so that servers and tools can tile and encode images without a model.

use std::sync::Arc;

use crate::{Error, Result};

/// One generated image: grayscale pixels and their PNG encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Row-major 8-bit pixels (channel-interleaved for several channels).
    pub pixels: Vec<u8>,
    /// The image as a PNG file.
    pub png: Vec<u8>,
}
/// A model-space image on [−1, 1] as 8-bit pixels, channels interleaved.
pub fn to_pixels(values: &[f32], shape: [usize; 3]) -> Vec<u8> {
    let [c, h, w] = shape;
    let mut out = vec![0u8; c * h * w];
    for ch in 0..c {
        for p in 0..h * w {
            let v = ((f64::from(values[ch * h * w + p]) + 1.0) * 127.5).round().clamp(0.0, 255.0);
            out[p * c + ch] = v as u8;
        }
    }
    out
}

impl GeneratedImage {
    /// An image from channel-first values in model space ([−1, 1], clamped), with its PNG.
    pub fn from_model_space(values: &[f32], shape: [usize; 3]) -> Result<GeneratedImage> {
        let [c, h, w] = shape;
        let pixels = to_pixels(values, shape);
        let png = encode_png(&pixels, w, h, c)?;
        Ok(GeneratedImage { width: w, height: h, pixels, png })
    }
}

/// Tiles images of one size into a grid PNG, `cols` per row, `gap` pixels of black between them.
pub fn image_grid(images: &[Arc<GeneratedImage>], cols: usize, gap: usize) -> Result<Vec<u8>> {
    let Some(first) = images.first() else {
        return Err(Error::InvalidInput("a grid needs at least one image".into()));
    };
    let (w, h) = (first.width, first.height);
    let channels = first.pixels.len() / (w * h).max(1);
    if images.iter().any(|i| (i.width, i.height, i.pixels.len()) != (w, h, first.pixels.len())) {
        return Err(Error::InvalidInput("grid images must share one size".into()));
    }
    let cols = cols.clamp(1, images.len());
    let rows = images.len().div_ceil(cols);
    let (gw, gh) = (cols * w + (cols - 1) * gap, rows * h + (rows - 1) * gap);
    let mut grid = vec![0u8; gw * gh * channels];
    for (k, img) in images.iter().enumerate() {
        let (x0, y0) = ((k % cols) * (w + gap), (k / cols) * (h + gap));
        for y in 0..h {
            let src = &img.pixels[y * w * channels..(y + 1) * w * channels];
            let start = ((y0 + y) * gw + x0) * channels;
            grid[start..start + w * channels].copy_from_slice(src);
        }
    }
    encode_png(&grid, gw, gh, channels)
}

/// Encodes 8-bit pixels (1 channel: gray, 3: RGB) as PNG.
pub fn encode_png(pixels: &[u8], width: usize, height: usize, channels: usize) -> Result<Vec<u8>> {
    use image::ImageEncoder;
    let color = match channels {
        1 => image::ExtendedColorType::L8,
        3 => image::ExtendedColorType::Rgb8,
        c => return Err(Error::Internal(format!("cannot encode {c}-channel images as PNG"))),
    };
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(pixels, width as u32, height as u32, color)
        .map_err(|e| Error::Internal(format!("PNG encoding failed: {e}")))?;
    Ok(png)
}
