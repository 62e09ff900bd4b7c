//! Request images: decoding, validation and resizing onto the model's input grid.
//!
//! Every image enters on the 8-bit grayscale scale (0–255), whether it arrived as PNG, JPEG or a
//! pixel array, so that serving sees the same pipeline as training.

use std::io::Cursor;

use image::{imageops::FilterType, ImageBuffer, ImageFormat, Luma};

use crate::{Error, Result};

/// Largest accepted side, to bound decode memory.
pub const MAX_SIDE: u32 = 4096;

/// The filter used when an image's size differs from the model's: bilinear ("triangle").
pub const RESIZE_FILTER: &str = "triangle";

/// A single-channel image on the 0–255 scale.
#[derive(Debug, Clone, PartialEq)]
pub struct GrayImage {
    width: usize,
    height: usize,
    pixels: Vec<f32>,
}

/// What an image's header says, read without decoding any pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    /// PNG or JPEG; other formats are refused when the header is read.
    pub format: ImageFormat,
    /// Width in pixels, as declared.
    pub width: u32,
    /// Height in pixels, as declared.
    pub height: u32,
}

impl ImageHeader {
    /// Reads the format and declared size of PNG or JPEG bytes.
    pub fn read(bytes: &[u8]) -> Result<ImageHeader> {
        let format = image::guess_format(bytes)
            .map_err(|_| Error::InvalidImage("unrecognised image format: send PNG or JPEG".into()))?;
        if !matches!(format, ImageFormat::Png | ImageFormat::Jpeg) {
            return Err(Error::InvalidImage(format!("unsupported image format {format:?}: send PNG or JPEG")));
        }
        let (width, height) = image::ImageReader::with_format(Cursor::new(bytes), format)
            .into_dimensions()
            .map_err(|e| Error::InvalidImage(e.to_string()))?;
        Ok(ImageHeader { format, width, height })
    }

    /// Pixels the decoded image will hold.
    pub fn pixels(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }

    /// Refuses a declared size past [`MAX_SIDE`] per side or `max_pixels` in all.
    pub fn check(&self, max_pixels: u64) -> Result<()> {
        let (w, h) = (self.width, self.height);
        if w > MAX_SIDE || h > MAX_SIDE {
            return Err(Error::ImageTooLarge(format!("{w}x{h} exceeds the {MAX_SIDE} pixel side limit")));
        }
        if self.pixels() > max_pixels {
            return Err(Error::ImageTooLarge(format!(
                "{w}x{h} is {} pixels, more than the {max_pixels} allowed",
                self.pixels()
            )));
        }
        Ok(())
    }
}

/// The decoder's own allocation bounds: the header check has passed, so these only stop a file
/// whose body disagrees with its header. 16 bytes a pixel covers 16-bit RGBA plus a conversion copy.
fn decode_limits(max_pixels: u64) -> image::Limits {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(max_pixels.saturating_mul(16).max(1 << 20));
    limits
}

impl GrayImage {
    /// Decodes PNG or JPEG bytes; colour images are converted to grayscale (ITU-R BT.601 luma).
    /// Any size up to [`MAX_SIDE`] per side is accepted; servers use [`GrayImage::decode_within`].
    pub fn decode(bytes: &[u8]) -> Result<GrayImage> {
        GrayImage::decode_within(bytes, u64::from(MAX_SIDE) * u64::from(MAX_SIDE))
    }

    /// Decodes like [`GrayImage::decode`], but first reads the header and refuses an image of more
    /// than `max_pixels` pixels with [`Error::ImageTooLarge`], before any pixel is decoded: a
    /// 2 KB PNG can declare 4096×4096 and would otherwise cost 64 MB of floats.
    pub fn decode_within(bytes: &[u8], max_pixels: u64) -> Result<GrayImage> {
        let header = ImageHeader::read(bytes)?;
        header.check(max_pixels)?;
        let mut reader = image::ImageReader::with_format(Cursor::new(bytes), header.format);
        reader.limits(decode_limits(max_pixels));
        let img = reader.decode().map_err(|e| Error::InvalidImage(e.to_string()))?;
        let luma = img.to_luma8();
        let (width, height) = (luma.width() as usize, luma.height() as usize);
        Ok(GrayImage { width, height, pixels: luma.into_raw().into_iter().map(f32::from).collect() })
    }

    /// Builds an image from rows of pixel values on the 0–255 scale.
    pub fn from_rows(rows: &[Vec<f64>]) -> Result<GrayImage> {
        let height = rows.len();
        let width = rows.first().map_or(0, Vec::len);
        if height == 0 || width == 0 {
            return Err(Error::InvalidInput("pixels must be a non-empty 2-D array".into()));
        }
        if height > MAX_SIDE as usize || width > MAX_SIDE as usize {
            return Err(Error::InvalidInput(format!(
                "pixels: {height}x{width} exceeds the {MAX_SIDE} pixel side limit"
            )));
        }
        let mut pixels = Vec::with_capacity(height * width);
        for (r, row) in rows.iter().enumerate() {
            if row.len() != width {
                return Err(Error::InvalidInput(format!(
                    "pixels: row {r} has {} values, row 0 has {width}",
                    row.len()
                )));
            }
            for (c, &v) in row.iter().enumerate() {
                if !v.is_finite() || !(0.0..=255.0).contains(&v) {
                    return Err(Error::InvalidInput(format!(
                        "pixels[{r}][{c}] = {v}: values must be finite and within 0..=255"
                    )));
                }
                pixels.push(v as f32);
            }
        }
        Ok(GrayImage { width, height, pixels })
    }

    /// Builds an image from row-major pixel values on the 0–255 scale, as tensor protocols send
    /// them; the same checks as [`GrayImage::from_rows`], naming the offending pixel by its index.
    pub fn from_pixels(height: usize, width: usize, pixels: Vec<f32>) -> Result<GrayImage> {
        if height == 0 || width == 0 {
            return Err(Error::InvalidInput("an image needs at least one pixel".into()));
        }
        if height > MAX_SIDE as usize || width > MAX_SIDE as usize {
            return Err(Error::InvalidInput(format!("{height}x{width} exceeds the {MAX_SIDE} pixel side limit")));
        }
        if pixels.len() != height * width {
            return Err(Error::InvalidInput(format!("{} pixel values for a {height}x{width} image", pixels.len())));
        }
        if let Some((i, v)) = pixels.iter().enumerate().find(|(_, v)| !(v.is_finite() && (0.0..=255.0).contains(*v))) {
            return Err(Error::InvalidInput(format!("pixel {i} = {v}: values must be finite and within 0..=255")));
        }
        Ok(GrayImage { width, height, pixels })
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Row-major pixels on the 0–255 scale.
    pub fn pixels(&self) -> &[f32] {
        &self.pixels
    }

    /// The pixels at `height × width`, resized with [`RESIZE_FILTER`] when the size differs.
    pub fn resized(&self, height: usize, width: usize) -> Vec<f32> {
        if self.height == height && self.width == width {
            return self.pixels.clone();
        }
        // `image` treats float pixels as 0..1 and clamps to that range while resampling.
        let unit: Vec<f32> = self.pixels.iter().map(|p| p / 255.0).collect();
        let buf: ImageBuffer<Luma<f32>, Vec<f32>> = ImageBuffer::from_raw(self.width as u32, self.height as u32, unit)
            .expect("pixel count matches the dimensions by construction. This is a bug.");
        let out = image::imageops::resize(&buf, width as u32, height as u32, FilterType::Triangle);
        out.into_raw().into_iter().map(|v| (v * 255.0).clamp(0.0, 255.0)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_round_trips_to_the_same_pixels() {
        let img = image::GrayImage::from_fn(5, 3, |x, y| Luma([(x * 40 + y) as u8]));
        let mut bytes = Vec::new();
        img.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png).unwrap();
        let decoded = GrayImage::decode(&bytes).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (5, 3));
        assert_eq!(decoded.pixels()[6], 41.0);
    }

    #[test]
    fn garbage_bytes_are_an_invalid_image() {
        assert!(matches!(GrayImage::decode(b"not an image"), Err(Error::InvalidImage(_))));
        let truncated = {
            let img = image::GrayImage::new(4, 4);
            let mut bytes = Vec::new();
            img.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png).unwrap();
            bytes.truncate(bytes.len() / 2);
            bytes
        };
        assert!(matches!(GrayImage::decode(&truncated), Err(Error::InvalidImage(_))));
    }

    #[test]
    fn oversized_headers_are_refused_before_decoding() {
        let img = image::GrayImage::new(2048, 1024);
        let mut bytes = Vec::new();
        img.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png).unwrap();
        let header = ImageHeader::read(&bytes).unwrap();
        assert_eq!((header.width, header.height, header.pixels()), (2048, 1024, 2048 * 1024));
        let err = GrayImage::decode_within(&bytes, 1 << 20).unwrap_err();
        assert!(matches!(&err, Error::ImageTooLarge(m) if m.contains("2048x1024")), "{err}");
        assert_eq!(GrayImage::decode_within(&bytes, 2048 * 1024).unwrap().pixels().len(), 2048 * 1024);
    }

    #[test]
    fn flat_pixels_are_validated_like_rows() {
        let img = GrayImage::from_pixels(2, 3, vec![0.0, 1.0, 2.0, 3.0, 4.0, 255.0]).unwrap();
        assert_eq!((img.width(), img.height()), (3, 2));
        assert_eq!(img, GrayImage::from_rows(&[vec![0.0, 1.0, 2.0], vec![3.0, 4.0, 255.0]]).unwrap());
        let err = GrayImage::from_pixels(1, 2, vec![0.0, f32::NAN]).unwrap_err().to_string();
        assert!(err.contains("pixel 1 = NaN"), "{err}");
        assert!(GrayImage::from_pixels(1, 2, vec![0.0, 256.0]).is_err());
        assert!(GrayImage::from_pixels(1, 2, vec![0.0]).is_err());
        assert!(GrayImage::from_pixels(0, 2, vec![]).is_err());
    }

    #[test]
    fn pixel_rows_are_validated() {
        let err = GrayImage::from_rows(&[vec![0.0, 1.0], vec![2.0]]).unwrap_err().to_string();
        assert!(err.contains("row 1"), "{err}");
        let err = GrayImage::from_rows(&[vec![0.0, f64::NAN]]).unwrap_err().to_string();
        assert!(err.contains("pixels[0][1]"), "{err}");
        assert!(GrayImage::from_rows(&[vec![0.0, 256.0]]).is_err());
        assert!(GrayImage::from_rows(&[]).is_err());
    }

    #[test]
    fn resize_keeps_a_constant_image_constant() {
        let img = GrayImage::from_rows(&vec![vec![100.0; 16]; 16]).unwrap();
        let out = img.resized(8, 8);
        assert_eq!(out.len(), 64);
        assert!(out.iter().all(|v| (v - 100.0).abs() < 1e-3));
    }
}
