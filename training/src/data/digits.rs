//! The embedded 8×8 digits dataset, so that training works out of the box without any download.

use std::io::Read;

use flate2::read::GzDecoder;

use super::checksum;
use super::{Dataset, DatasetName};
use crate::{Error, Result};

/// scikit-learn's `digits.csv.gz`: 1,797 rows of 64 pixel counts (0..=16) followed by the label.
const CSV_GZ: &[u8] = include_bytes!("../../assets/digits.csv.gz");
/// File name used in listings and errors.
const FILE: &str = "digits.csv.gz";
/// sha256 of [`CSV_GZ`] as published in scikit-learn's wheel.
pub(crate) const SHA256: &str = "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22";
/// Rows in the published file.
pub(crate) const COUNT: usize = 1797;
const SIDE: usize = 8;
const MAX_COUNT: u32 = 16;

/// All 1,797 images, on the 0..=255 scale, in file order.
pub(crate) fn load_all() -> Result<Dataset> {
    let mut text = String::new();
    GzDecoder::new(CSV_GZ).read_to_string(&mut text).map_err(|e| invalid(format!("cannot decompress: {e}")))?;
    let ds = parse_csv(&text)?;
    if ds.len() != COUNT {
        return Err(invalid(format!("{} rows, expected {COUNT}", ds.len())));
    }
    Ok(ds)
}

/// Maps a pixel count in 0..=16 onto 0..=255, rounding halves up, so every dataset arrives on the
/// 8-bit scale that the runtime expects at inference.
fn to_byte(count: u32) -> u8 {
    ((count * 255 + MAX_COUNT / 2) / MAX_COUNT) as u8
}

/// Parses rows of 64 pixel counts (0..=16) and a label; public so that it can be fuzzed.
pub fn parse_csv(text: &str) -> Result<Dataset> {
    let pixels = SIDE * SIDE;
    let mut images = Vec::with_capacity(COUNT * pixels);
    let mut labels = Vec::with_capacity(COUNT);
    for (row, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut values = Vec::with_capacity(pixels + 1);
        for field in line.split(',') {
            let v: f64 =
                field.trim().parse().map_err(|_| invalid(format!("row {}: {field:?} is not a number", row + 1)))?;
            if v.fract() != 0.0 || !(0.0..=MAX_COUNT as f64).contains(&v) {
                return Err(invalid(format!("row {}: {field:?} is not an integer in 0..=16", row + 1)));
            }
            values.push(v as u32);
        }
        if values.len() != pixels + 1 {
            return Err(invalid(format!("row {}: {} fields, expected {}", row + 1, values.len(), pixels + 1)));
        }
        let label = values[pixels];
        if label > 9 {
            return Err(invalid(format!("row {}: label {label} is not a digit", row + 1)));
        }
        images.extend(values[..pixels].iter().map(|&c| to_byte(c)));
        labels.push(label as u8);
    }
    Ok(Dataset {
        name: DatasetName::Digits,
        height: SIDE,
        width: SIDE,
        images,
        labels,
        classes: DatasetName::Digits.classes(),
        source_sha256: source_sha256(),
    })
}

/// Provenance digest, built the same way as for fetched datasets: the sha256 of the one-line
/// listing of the embedded file.
pub(crate) fn source_sha256() -> String {
    checksum::sha256_hex(checksum::listing(&[(FILE, SHA256)]).as_bytes())
}

fn invalid(reason: String) -> Error {
    Error::InvalidData { file: FILE.to_string(), reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_file_is_the_published_one() {
        assert_eq!(checksum::sha256_hex(CSV_GZ), SHA256);
    }

    #[test]
    fn loads_all_images_on_the_8_bit_scale() {
        let ds = load_all().unwrap();
        assert_eq!(ds.len(), COUNT);
        assert_eq!((ds.height, ds.width), (8, 8));
        assert_eq!(ds.images.len(), COUNT * 64);
        assert_eq!(ds.classes, (0..10).map(|d| d.to_string()).collect::<Vec<_>>());
        // Both ends of the 0..=16 range occur and must land on both ends of 0..=255.
        assert_eq!(ds.images.iter().min(), Some(&0));
        assert_eq!(ds.images.iter().max(), Some(&255));
        // Every pixel must be the image of some count 0..=16.
        let allowed: Vec<u8> = (0..=16).map(to_byte).collect();
        assert!(ds.images.iter().all(|p| allowed.contains(p)));
        // Roughly 180 images per digit.
        for (digit, count) in ds.label_counts().into_iter().enumerate() {
            assert!((170..=190).contains(&count), "digit {digit}: {count}");
        }
    }

    #[test]
    fn count_mapping_rounds_halves_up() {
        assert_eq!(to_byte(0), 0);
        assert_eq!(to_byte(1), 16); // 15.94
        assert_eq!(to_byte(8), 128); // 127.5
        assert_eq!(to_byte(15), 239); // 239.06
        assert_eq!(to_byte(16), 255);
        for c in 0..=16u32 {
            let exact = c as f64 * 255.0 / 16.0;
            assert!((to_byte(c) as f64 - exact).abs() <= 0.5);
        }
    }

    #[test]
    fn malformed_rows_are_errors() {
        let good_row = format!("{},3", vec!["0"; 64].join(","));
        assert_eq!(parse_csv(&good_row).unwrap().labels, vec![3]);
        for bad in [
            format!("{},3", vec!["0"; 63].join(",")),
            format!("{},x", vec!["0"; 64].join(",")),
            format!("{},12", vec!["0"; 64].join(",")),
            format!("17,{},3", vec!["0"; 63].join(",")),
            format!("1.5,{},3", vec!["0"; 63].join(",")),
        ] {
            let err = parse_csv(&bad).unwrap_err();
            assert!(matches!(err, Error::InvalidData { .. }), "{err}");
        }
    }
}
