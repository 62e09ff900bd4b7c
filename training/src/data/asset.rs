//! Names of everything `tandem data fetch` can install: the image datasets, the text corpora and
//! the pretrained models.
//!
//! A model is not a dataset (it has no splits, classes or images), and a text corpus has no
//! images or classes either, so each gets its own name type, and [`AssetName`] joins them for the
//! one place where they are handled alike: fetching, verifying and finding the installed files.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::DatasetName;
use crate::{Error, Result};

/// The pretrained models Tandem knows how to obtain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ModelName {
    /// sentence-transformers' all-MiniLM-L6-v2, a 6-layer BERT sentence encoder, in the
    /// sentence-transformers directory layout.
    #[serde(rename = "minilm")]
    MiniLm,
}

impl ModelName {
    /// Every model, for listings and help texts.
    pub const ALL: [ModelName; 1] = [ModelName::MiniLm];

    /// The name as the CLI spells it, which is also the directory it is installed in.
    pub fn as_str(&self) -> &'static str {
        match self {
            ModelName::MiniLm => "minilm",
        }
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text corpora Tandem knows how to obtain: datasets of text rather than labelled images,
/// read by their own loaders (see [`super::wordnet`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum CorpusName {
    /// Princeton WordNet 3.0: synsets with lemmas, glosses, examples and relations.
    #[serde(rename = "wordnet")]
    WordNet,
}

impl CorpusName {
    /// Every corpus, for listings and help texts.
    pub const ALL: [CorpusName; 1] = [CorpusName::WordNet];

    /// The name as the CLI spells it, which is also the directory it is installed in.
    pub fn as_str(&self) -> &'static str {
        match self {
            CorpusName::WordNet => "wordnet",
        }
    }
}

impl fmt::Display for CorpusName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A dataset, a corpus or a model: anything with a name that `tandem data fetch` accepts.
///
/// Serialised as the bare name (`"mnist"`, `"wordnet"`, `"minilm"`), since the names never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AssetName {
    /// A dataset, embedded or fetched.
    Dataset(DatasetName),
    /// A text corpus, always fetched.
    Corpus(CorpusName),
    /// A pretrained model, always fetched.
    Model(ModelName),
}

impl AssetName {
    /// Every asset, datasets first, then corpora, then models, for listings, help texts and
    /// `tandem data fetch all`.
    pub const ALL: [AssetName; 5] = [
        AssetName::Dataset(DatasetName::Digits),
        AssetName::Dataset(DatasetName::Mnist),
        AssetName::Dataset(DatasetName::FashionMnist),
        AssetName::Corpus(CorpusName::WordNet),
        AssetName::Model(ModelName::MiniLm),
    ];

    /// The name as the CLI spells it, which is also the directory it is installed in.
    pub fn as_str(&self) -> &'static str {
        match self {
            AssetName::Dataset(name) => name.as_str(),
            AssetName::Corpus(name) => name.as_str(),
            AssetName::Model(name) => name.as_str(),
        }
    }

    /// Whether the asset ships inside the binary, so there is nothing to fetch.
    pub fn is_embedded(&self) -> bool {
        matches!(self, AssetName::Dataset(name) if name.is_embedded())
    }
}

impl From<DatasetName> for AssetName {
    fn from(name: DatasetName) -> Self {
        AssetName::Dataset(name)
    }
}

impl From<CorpusName> for AssetName {
    fn from(name: CorpusName) -> Self {
        AssetName::Corpus(name)
    }
}

impl From<ModelName> for AssetName {
    fn from(name: ModelName) -> Self {
        AssetName::Model(name)
    }
}

impl fmt::Display for AssetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AssetName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let wanted = s.trim().to_ascii_lowercase().replace('_', "-");
        AssetName::ALL.into_iter().find(|name| name.as_str() == wanted).ok_or_else(|| {
            let known: Vec<&str> = AssetName::ALL.iter().map(AssetName::as_str).collect();
            Error::InvalidArgument(format!("unknown dataset or model {s:?}: expected one of {}", known.join(", ")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_agree_with_the_dataset_names() {
        for name in AssetName::ALL {
            assert_eq!(name.to_string().parse::<AssetName>().unwrap(), name);
            let json = serde_json::to_string(&name).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<AssetName>(&json).unwrap(), name);
        }
        for dataset in DatasetName::ALL {
            assert_eq!(AssetName::from(dataset).as_str(), dataset.as_str());
        }
        assert_eq!("MiniLM".parse::<AssetName>().unwrap(), AssetName::Model(ModelName::MiniLm));
        assert_eq!("fashion_mnist".parse::<AssetName>().unwrap(), AssetName::Dataset(DatasetName::FashionMnist));
        assert_eq!("WordNet".parse::<AssetName>().unwrap(), AssetName::Corpus(CorpusName::WordNet));
        for corpus in CorpusName::ALL {
            assert_eq!(AssetName::from(corpus).as_str(), corpus.as_str());
        }
        let err = "bert".parse::<AssetName>().unwrap_err();
        assert!(err.to_string().contains("digits, mnist, fashion-mnist, wordnet, minilm"), "{err}");
        let embedded: Vec<AssetName> = AssetName::ALL.into_iter().filter(AssetName::is_embedded).collect();
        assert_eq!(embedded, vec![AssetName::Dataset(DatasetName::Digits)]);
    }
}
