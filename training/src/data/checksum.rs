//! sha256 digests of files and of file listings, kept apart from fetching so the checks can be
//! exercised on local files.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Lowercase hex of a digest; the form `sha256sum` prints and the source tables use.
fn to_hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of a byte slice, in lowercase hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    to_hex(&Sha256::digest(bytes))
}

/// A `sha256sum`-style listing: `<digest>  <file>\n` per file, in the given order. Its own sha256
/// is what identifies a dataset's sources, and anyone can recompute it with coreutils.
pub(crate) fn listing(files: &[(&str, &str)]) -> String {
    files.iter().map(|(file, digest)| format!("{digest}  {file}\n")).collect()
}

/// Copies `src` to `dest` while hashing it, and keeps the copy only if the digest is `expected`;
/// `file` is the name errors use.
///
/// Hashing during the copy reads each file once; writing to a `.part` file next to `dest` and
/// renaming means a crash never leaves a half-written file under the final name.
pub(crate) fn copy_verified(src: &Path, dest: &Path, file: &str, expected: &str) -> Result<()> {
    let mut part = dest.as_os_str().to_os_string();
    part.push(".part");
    let part = PathBuf::from(part);
    let result = copy_hashing(src, &part).and_then(|found| {
        if found == expected {
            Ok(())
        } else {
            Err(Error::ChecksumMismatch { file: file.to_string(), expected: expected.to_string(), found })
        }
    });
    if let Err(err) = result {
        let _ = std::fs::remove_file(&part);
        return Err(err);
    }
    std::fs::rename(&part, dest).map_err(|e| Error::io(dest, e))
}

/// Checks a file already in place against its published digest.
pub(crate) fn verify_file(path: &Path, file: &str, expected: &str) -> Result<()> {
    let found = sha256_file(path)?;
    if found != expected {
        return Err(Error::ChecksumMismatch { file: file.to_string(), expected: expected.to_string(), found });
    }
    Ok(())
}

/// sha256 of a file's contents, streamed so large files are not held in memory.
pub(crate) fn sha256_file(path: &Path) -> Result<String> {
    let mut input = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = input.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            return Ok(to_hex(&hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

fn copy_hashing(src: &Path, dest: &Path) -> Result<String> {
    let mut input = File::open(src).map_err(|e| Error::io(src, e))?;
    let mut output = File::create(dest).map_err(|e| Error::io(dest, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = input.read(&mut buf).map_err(|e| Error::io(src, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        output.write_all(&buf[..n]).map_err(|e| Error::io(dest, e))?;
    }
    output.sync_all().map_err(|e| Error::io(dest, e))?;
    Ok(to_hex(&hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn file_and_slice_digests_agree() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bin");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        assert_eq!(sha256_file(&path).unwrap(), sha256_hex(&data));
        assert_eq!(sha256_hex(b""), EMPTY);
    }

    #[test]
    fn copy_verified_keeps_only_matching_files() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.bin");
        std::fs::write(&src, b"hello").unwrap();
        let good = sha256_hex(b"hello");

        let dest = dir.path().join("out.bin");
        copy_verified(&src, &dest, "out.bin", &good).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello");

        let bad_dest = dir.path().join("bad.bin");
        let err = copy_verified(&src, &bad_dest, "bad.bin", EMPTY).unwrap_err();
        match &err {
            Error::ChecksumMismatch { file, expected, found } => {
                assert_eq!(file, "bad.bin");
                assert_eq!(expected, EMPTY);
                assert_eq!(found, &good);
            }
            other => panic!("unexpected error {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("bad.bin") && msg.contains(EMPTY) && msg.contains(&good));
        assert!(!bad_dest.exists());
        assert!(!dir.path().join("bad.bin.part").exists());

        // A name with a directory in it only labels errors; the partial file sits next to `dest`.
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let nested = dir.path().join("sub").join("config.json");
        copy_verified(&src, &nested, "sub/config.json", &good).unwrap();
        assert_eq!(std::fs::read(&nested).unwrap(), b"hello");
        let err = copy_verified(&src, &nested, "sub/config.json", EMPTY).unwrap_err();
        assert!(err.to_string().contains("sub/config.json"), "{err}");
        let names: Vec<_> =
            std::fs::read_dir(dir.path().join("sub")).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(names, ["config.json"]);
    }

    #[test]
    fn verify_file_reports_both_digests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        std::fs::write(&path, b"abc").unwrap();
        verify_file(&path, "x", &sha256_hex(b"abc")).unwrap();
        let err = verify_file(&path, "x", EMPTY).unwrap_err();
        assert!(matches!(err, Error::ChecksumMismatch { .. }), "{err}");
        let missing = verify_file(&dir.path().join("nope"), "nope", EMPTY).unwrap_err();
        assert!(matches!(missing, Error::Io { .. }), "{missing}");
    }

    #[test]
    fn listing_matches_sha256sum_format() {
        let text = listing(&[("a", "11"), ("b", "22")]);
        assert_eq!(text, "11  a\n22  b\n");
    }
}
