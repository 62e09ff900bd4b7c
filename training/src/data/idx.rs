//! Reader (and, for tests and fixtures, writer) of the IDX format that MNIST-style datasets ship in.
//!
//! An IDX file is a 4-byte magic (`0 0 <dtype> <ndim>`), `ndim` big-endian `u32` dimensions, then
//! the elements. Only unsigned bytes (dtype `0x08`) occur in the datasets Tandem uses, so only
//! those are accepted. Files may be gzip-compressed; that is detected from the gzip magic bytes,
//! not from the file name. Every header is checked against the amount of data that follows, so a
//! truncated or padded file is an error rather than a short or misaligned dataset.

use std::io::Read;
use std::path::Path;

use flate2::read::MultiGzDecoder;

use crate::{Error, Result};

/// The element type code for unsigned bytes.
const DTYPE_U8: u8 = 0x08;
/// More dimensions than any image or label file has; a larger count means a corrupt header.
const MAX_DIMS: usize = 4;
/// Upper bound on the initial allocation, so that a corrupt header claiming terabytes fails on
/// reading rather than on allocating.
const MAX_PREALLOC: usize = 64 << 20;

/// An n-dimensional array of bytes read from an IDX file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Dimensions, outermost first (e.g. `[count, rows, cols]` for images).
    pub dims: Vec<usize>,
    /// Elements in row-major order; `data.len()` is the product of `dims`.
    pub data: Vec<u8>,
}

impl IdxArray {
    /// Checks that this is a stack of images and returns `(count, height, width)`; `file` names
    /// the source in the error.
    pub fn image_dims(&self, file: &str) -> Result<(usize, usize, usize)> {
        match self.dims[..] {
            [n, h, w] if h > 0 && w > 0 => Ok((n, h, w)),
            _ => Err(invalid(file, format!("expected 3 dimensions [count, rows, cols], found {:?}", self.dims))),
        }
    }

    /// Checks that this is a vector of labels and returns its length; `file` names the source in
    /// the error.
    pub fn label_count(&self, file: &str) -> Result<usize> {
        match self.dims[..] {
            [n] => Ok(n),
            _ => Err(invalid(file, format!("expected 1 dimension [count], found {:?}", self.dims))),
        }
    }
}

/// Reads an IDX file, raw or gzip-compressed.
pub fn read(path: &Path) -> Result<IdxArray> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string());
    parse(bytes, &name)
}

/// Parses the bytes of an IDX file, raw or gzip-compressed; `name` names the source in errors.
///
/// Takes ownership so that a raw file's elements are reused in place instead of copied.
pub fn parse(mut bytes: Vec<u8>, name: &str) -> Result<IdxArray> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        return read_stream(MultiGzDecoder::new(&bytes[..]), name);
    }
    let (dims, header_len) = parse_header(&mut &bytes[..], name)?;
    let expected = element_count(&dims, name)?;
    let found = bytes.len() - header_len;
    if found != expected {
        return Err(length_error(name, &dims, expected, found));
    }
    bytes.drain(..header_len);
    Ok(IdxArray { dims, data: bytes })
}

/// Encodes bytes as a raw IDX file; `data.len()` must be the product of `dims`.
pub fn encode(dims: &[usize], data: &[u8]) -> Result<Vec<u8>> {
    let ndim = u8::try_from(dims.len())
        .ok()
        .filter(|&n| (1..=MAX_DIMS as u8).contains(&n))
        .ok_or_else(|| Error::InvalidArgument(format!("cannot encode {} dimensions", dims.len())))?;
    let expected = element_count(dims, "idx array")?;
    if data.len() != expected {
        return Err(Error::InvalidArgument(format!(
            "dimensions {dims:?} need {expected} elements, got {}",
            data.len()
        )));
    }
    let mut out = Vec::with_capacity(4 + 4 * dims.len() + data.len());
    out.extend_from_slice(&[0, 0, DTYPE_U8, ndim]);
    for &d in dims {
        let d = u32::try_from(d)
            .map_err(|_| Error::InvalidArgument(format!("dimension {d} does not fit the IDX format")))?;
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    Ok(out)
}

/// Reads from a stream whose total length is unknown up front (a gzip decoder), checking both that
/// enough data follows the header and that nothing follows the data.
fn read_stream(mut input: impl Read, name: &str) -> Result<IdxArray> {
    let (dims, _) = parse_header(&mut input, name)?;
    let expected = element_count(&dims, name)?;
    let mut data = Vec::with_capacity(expected.min(MAX_PREALLOC));
    (&mut input)
        .take(expected as u64)
        .read_to_end(&mut data)
        .map_err(|e| invalid(name, format!("cannot decompress: {e}")))?;
    if data.len() != expected {
        return Err(length_error(name, &dims, expected, data.len()));
    }
    let mut extra = [0u8; 1];
    let more = input.read(&mut extra).map_err(|e| invalid(name, format!("cannot decompress: {e}")))?;
    if more != 0 {
        return Err(invalid(name, format!("header {dims:?} says {expected} elements but more data follows")));
    }
    Ok(IdxArray { dims, data })
}

/// Returns the dimensions and the header's length in bytes.
fn parse_header(input: &mut impl Read, name: &str) -> Result<(Vec<usize>, usize)> {
    let mut magic = [0u8; 4];
    read_header_bytes(input, &mut magic, name)?;
    if magic[0] != 0 || magic[1] != 0 {
        return Err(invalid(
            name,
            format!("not an IDX file (magic {:02x} {:02x} {:02x} {:02x})", magic[0], magic[1], magic[2], magic[3]),
        ));
    }
    if magic[2] != DTYPE_U8 {
        return Err(invalid(
            name,
            format!("unsupported element type 0x{:02x} (only unsigned bytes, 0x08, are supported)", magic[2]),
        ));
    }
    let ndim = magic[3] as usize;
    if ndim == 0 || ndim > MAX_DIMS {
        return Err(invalid(name, format!("unsupported number of dimensions {ndim} (expected 1 to {MAX_DIMS})")));
    }
    let mut dims = Vec::with_capacity(ndim);
    for _ in 0..ndim {
        let mut d = [0u8; 4];
        read_header_bytes(input, &mut d, name)?;
        dims.push(u32::from_be_bytes(d) as usize);
    }
    Ok((dims, 4 + 4 * ndim))
}

fn read_header_bytes(input: &mut impl Read, buf: &mut [u8], name: &str) -> Result<()> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => invalid(name, "truncated header".to_string()),
        _ => invalid(name, format!("cannot read header: {e}")),
    })
}

fn element_count(dims: &[usize], name: &str) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| invalid(name, format!("dimensions {dims:?} overflow")))
}

fn length_error(name: &str, dims: &[usize], expected: usize, found: usize) -> Error {
    let what = if found < expected { "truncated" } else { "too long" };
    invalid(name, format!("{what}: header {dims:?} needs {expected} data bytes, found {found}"))
}

fn invalid(file: &str, reason: String) -> Error {
    Error::InvalidData { file: file.to_string(), reason }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::write::GzEncoder;
    use flate2::Compression;

    use super::*;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn sample_images() -> (Vec<usize>, Vec<u8>) {
        let dims = vec![3, 4, 5];
        let data = (0..60u8).map(|i| i.wrapping_mul(37)).collect();
        (dims, data)
    }

    fn expect_invalid(result: Result<IdxArray>, needle: &str) {
        match result {
            Err(Error::InvalidData { reason, .. }) => {
                assert!(reason.contains(needle), "{reason:?} lacks {needle:?}")
            }
            other => panic!("expected invalid data containing {needle:?}, got {other:?}"),
        }
    }

    #[test]
    fn raw_round_trip() {
        let (dims, data) = sample_images();
        let file = encode(&dims, &data).unwrap();
        assert_eq!(&file[..4], &[0, 0, 8, 3]);
        assert_eq!(&file[4..8], &[0, 0, 0, 3]);
        let arr = parse(file, "x").unwrap();
        assert_eq!(arr.dims, dims);
        assert_eq!(arr.data, data);
        assert_eq!(arr.image_dims("x").unwrap(), (3, 4, 5));
        assert!(arr.label_count("x").is_err());
    }

    #[test]
    fn gzip_round_trip() {
        let labels: Vec<u8> = (0..1000u32).map(|i| (i % 10) as u8).collect();
        let file = gzip(&encode(&[1000], &labels).unwrap());
        assert_eq!(&file[..2], &[0x1f, 0x8b]);
        let arr = parse(file, "labels.gz").unwrap();
        assert_eq!(arr.label_count("labels.gz").unwrap(), 1000);
        assert_eq!(arr.data, labels);
        assert!(arr.image_dims("labels.gz").is_err());
    }

    #[test]
    fn reads_files_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (dims, data) = sample_images();
        let raw = dir.path().join("raw-idx3-ubyte");
        let gz = dir.path().join("compressed-without-suffix");
        std::fs::write(&raw, encode(&dims, &data).unwrap()).unwrap();
        std::fs::write(&gz, gzip(&encode(&dims, &data).unwrap())).unwrap();
        assert_eq!(read(&raw).unwrap(), read(&gz).unwrap());
        let missing = read(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(missing, Error::Io { .. }), "{missing}");
    }

    #[test]
    fn truncated_raw_files_are_errors() {
        let (dims, data) = sample_images();
        let file = encode(&dims, &data).unwrap();
        for cut in [0, 3, 4, 10, 15, 16, file.len() - 1] {
            let result = parse(file[..cut].to_vec(), "cut");
            assert!(matches!(result, Err(Error::InvalidData { .. })), "cut at {cut}: {result:?}");
        }
        expect_invalid(parse(file[..file.len() - 1].to_vec(), "cut"), "truncated");
        expect_invalid(parse(file[..10].to_vec(), "cut"), "truncated header");
        let mut longer = file.clone();
        longer.push(0);
        expect_invalid(parse(longer, "long"), "too long");
    }

    #[test]
    fn truncated_and_corrupt_gzip_files_are_errors() {
        let (dims, data) = sample_images();
        let raw = encode(&dims, &data).unwrap();
        let gz = gzip(&raw);
        // A cut gzip stream fails either in the decoder or as short data; both are InvalidData.
        for cut in [2, 10, gz.len() / 2, gz.len() - 1] {
            let result = parse(gz[..cut].to_vec(), "cut.gz");
            assert!(matches!(result, Err(Error::InvalidData { .. })), "cut at {cut}: {result:?}");
        }
        // A valid gzip stream around a truncated IDX payload.
        expect_invalid(parse(gzip(&raw[..raw.len() - 5]), "short.gz"), "truncated");
        // A valid gzip stream with trailing data after the payload.
        let mut padded = raw.clone();
        padded.extend_from_slice(&[1, 2, 3]);
        expect_invalid(parse(gzip(&padded), "padded.gz"), "more data follows");
        // Corrupted compressed bytes.
        let mut flipped = gz.clone();
        let mid = flipped.len() / 2;
        for b in &mut flipped[mid..mid + 8] {
            *b ^= 0xa5;
        }
        assert!(matches!(parse(flipped, "flipped.gz"), Err(Error::InvalidData { .. })));
    }

    #[test]
    fn bad_headers_are_errors() {
        let (dims, data) = sample_images();
        let good = encode(&dims, &data).unwrap();

        let mut magic = good.clone();
        magic[0] = 1;
        expect_invalid(parse(magic, "m"), "not an IDX file");

        let mut dtype = good.clone();
        dtype[2] = 0x0d;
        expect_invalid(parse(dtype, "d"), "unsupported element type 0x0d");

        let mut ndim = good.clone();
        ndim[3] = 0;
        expect_invalid(parse(ndim, "n"), "number of dimensions 0");

        let mut many = good.clone();
        many[3] = 9;
        expect_invalid(parse(many, "n"), "number of dimensions 9");

        // A header that claims far more data than exists must fail without allocating it.
        let mut huge = good.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        expect_invalid(parse(huge.clone(), "huge"), "truncated");
        expect_invalid(parse(gzip(&huge), "huge.gz"), "truncated");
    }

    #[test]
    fn encode_rejects_inconsistent_input() {
        assert!(encode(&[2, 2], &[0; 3]).is_err());
        assert!(encode(&[], &[]).is_err());
        assert!(encode(&[1, 1, 1, 1, 1], &[0]).is_err());
    }
}
