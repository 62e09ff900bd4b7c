//! The fixed caption set of each dataset's classes: what the image–text family trains on (a
//! random caption of an image's class per step) and what its retrieval figures search.
//!
//! A class's captions are built from its names and, for Fashion-MNIST, from one WordNet 3.0 noun
//! synset chosen by hand per class ([`FASHION_SYNSETS`]):
//!
//! - the names are the dataset's class name, then the synset's lemmas (underscores read as
//!   spaces), each once (case aside): `Bag`, `handbag`, `pocketbook`, `purse`;
//! - each name goes through every [`NAME_TEMPLATES`] entry: `Bag`, `a photo of a Bag`, ...;
//! - the synset's definition (its gloss without the quoted examples) gives two more: the
//!   definition alone, and `a Bag: <definition>` (the class name, with its article).
//!
//! Classes come in label order and captions in that order within a class, so the set is the same
//! list on every machine; a test pins it. MNIST and the digits have no synsets: their captions are
//! the templates over the class names alone.
//!
//! The synsets, with their lemmas and definitions in WordNet 3.0:
//!
//! | class       | synset       | lemmas                                | definition |
//! |-------------|--------------|---------------------------------------|------------|
//! | T-shirt/top | `03595614-n` | jersey, T-shirt, tee_shirt            | a close-fitting pullover shirt |
//! | Trouser     | `04489008-n` | trouser, pant                         | (usually in the plural) a garment extending from the waist to the knee or ankle, covering each leg separately |
//! | Pullover    | `04021028-n` | pullover, slipover                    | a sweater that is put on by pulling it over the head |
//! | Dress       | `03236735-n` | dress, frock                          | a one-piece garment for a woman; has skirt and bodice |
//! | Coat        | `03057021-n` | coat                                  | an outer garment that has sleeves and covers the body from shoulder down; worn outdoors |
//! | Sandal      | `04133789-n` | sandal                                | a shoe consisting of a sole fastened by straps to the foot |
//! | Shirt       | `04197391-n` | shirt                                 | a garment worn on the upper half of the body |
//! | Sneaker     | `03472535-n` | gym_shoe, sneaker, tennis_shoe        | a canvas shoe with a pliable rubber sole |
//! | Bag         | `02774152-n` | bag, handbag, pocketbook, purse       | a container used for carrying money and small personal items or accessories (especially by women) |
//! | Ankle boot  | `02872752-n` | boot                                  | footwear that covers the whole foot and lower leg |
//!
//! WordNet has no ankle boot; `boot` is the closest synset that is footwear (the others are a
//! car's luggage space, a kick and instruments of torture). `Bag` takes the handbag sense, which
//! is what Fashion-MNIST's bags are, rather than the generic "flexible container".

use crate::data::wordnet::{Pos, SynsetId, WordNet};
use crate::data::DatasetName;
use crate::{Error, Result};

/// Per Fashion-MNIST class, in label order, the WordNet 3.0 noun synset its captions describe.
pub const FASHION_SYNSETS: [(&str, u32); 10] = [
    ("T-shirt/top", 3_595_614),
    ("Trouser", 4_489_008),
    ("Pullover", 4_021_028),
    ("Dress", 3_236_735),
    ("Coat", 3_057_021),
    ("Sandal", 4_133_789),
    ("Shirt", 4_197_391),
    ("Sneaker", 3_472_535),
    ("Bag", 2_774_152),
    ("Ankle boot", 2_872_752),
];

/// What each name of a class becomes: `{}` is the name, `{a}` its article (`an` before a vowel).
pub const NAME_TEMPLATES: [&str; 5] = [
    "{}",
    "a photo of {a} {}",
    "a picture of {a} {}",
    "a product photo of {a} {}",
    "a black and white photo of {a} {}",
];

/// One caption and the class it describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caption {
    /// The class, an index into [`CaptionSet::classes`].
    pub class: usize,
    /// The text.
    pub text: String,
}

/// Every caption of a dataset's classes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptionSet {
    /// The class names, by label.
    pub classes: Vec<String>,
    /// Class by class, in label order.
    pub captions: Vec<Caption>,
}

impl CaptionSet {
    /// The caption set of `dataset`; Fashion-MNIST's needs `wordnet` for its glosses.
    pub fn for_dataset(dataset: DatasetName, wordnet: Option<&WordNet>) -> Result<CaptionSet> {
        let classes = dataset.classes();
        if !uses_wordnet(dataset) {
            let names = classes.iter().map(|c| vec![c.clone()]).collect();
            let definitions = vec![None; classes.len()];
            return Ok(CaptionSet::build(classes, names, definitions));
        }
        let Some(wordnet) = wordnet else {
            return Err(Error::InvalidArgument(format!(
                "{dataset}'s captions quote WordNet: run `tandem data fetch wordnet` (or give --wordnet-dir)"
            )));
        };
        let mut names = Vec::with_capacity(classes.len());
        let mut definitions = Vec::with_capacity(classes.len());
        for (class, &(expected, offset)) in classes.iter().zip(&FASHION_SYNSETS) {
            debug_assert_eq!(class, expected, "FASHION_SYNSETS follows the label order");
            let id = SynsetId { pos: Pos::Noun, offset };
            let synset = wordnet.index_of(id).map(|i| &wordnet.synsets[i]).ok_or_else(|| {
                Error::InvalidArgument(format!("WordNet has no synset {id}, the one the captions of {class} quote"))
            })?;
            let mut class_names = vec![class.clone()];
            for lemma in synset.lemma_texts() {
                if !class_names.iter().any(|n| n.eq_ignore_ascii_case(&lemma)) {
                    class_names.push(lemma);
                }
            }
            names.push(class_names);
            definitions.push(Some(synset.definition.clone()));
        }
        Ok(CaptionSet::build(classes, names, definitions))
    }

    fn build(classes: Vec<String>, names: Vec<Vec<String>>, definitions: Vec<Option<String>>) -> CaptionSet {
        let mut captions = Vec::new();
        for (class, (names, definition)) in names.iter().zip(definitions).enumerate() {
            let mut push = |text: String| captions.push(Caption { class, text });
            for name in names {
                NAME_TEMPLATES.iter().for_each(|template| push(fill(template, name)));
            }
            if let Some(definition) = definition {
                push(definition.clone());
                push(format!("{} {}: {definition}", article(&classes[class]), classes[class]));
            }
        }
        CaptionSet { classes, captions }
    }

    /// The indices of class `class`'s captions.
    pub fn of_class(&self, class: usize) -> Vec<usize> {
        (0..self.captions.len()).filter(|&i| self.captions[i].class == class).collect()
    }

    /// Every caption's text, in order.
    pub fn texts(&self) -> Vec<&str> {
        self.captions.iter().map(|c| c.text.as_str()).collect()
    }
}

/// Whether `dataset`'s captions quote WordNet.
pub fn uses_wordnet(dataset: DatasetName) -> bool {
    dataset == DatasetName::FashionMnist
}

/// `template` with `{a}` replaced by `name`'s article and `{}` by `name`.
fn fill(template: &str, name: &str) -> String {
    template.replace("{a}", article(name)).replace("{}", name)
}

/// `an` before a vowel sound (a vowel letter, or the digit 8, read "eight"), else `a`.
fn article(name: &str) -> &'static str {
    match name.chars().next().map(|c| c.to_ascii_lowercase()) {
        Some('a' | 'e' | 'i' | 'o' | 'u' | '8') => "an",
        _ => "a",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ten synsets' lines of WordNet 3.0's `data.noun`, pointers dropped (so that they parse
    /// alone); lemmas and glosses as the file has them.
    const FASHION_LINES: &str = "\
03595614 06 n 03 jersey 1 T-shirt 0 tee_shirt 0 000 | a close-fitting pullover shirt
04489008 06 n 02 trouser 0 pant 0 000 | (usually in the plural) a garment extending from the waist to the knee or ankle, covering each leg separately; \"he had a sharp crease in his trousers\"
04021028 06 n 02 pullover 0 slipover 0 000 | a sweater that is put on by pulling it over the head
03236735 06 n 02 dress 0 frock 0 000 | a one-piece garment for a woman; has skirt and bodice
03057021 06 n 01 coat 0 000 | an outer garment that has sleeves and covers the body from shoulder down; worn outdoors
04133789 06 n 01 sandal 0 000 | a shoe consisting of a sole fastened by straps to the foot
04197391 06 n 01 shirt 0 000 | a garment worn on the upper half of the body
03472535 06 n 03 gym_shoe 0 sneaker 0 tennis_shoe 0 000 | a canvas shoe with a pliable rubber sole
02774152 06 n 04 bag 2 handbag 0 pocketbook 0 purse 0 000 | a container used for carrying money and small personal items or accessories (especially by women); \"she reached into her bag and found a comb\"
02872752 06 n 01 boot 0 000 | footwear that covers the whole foot and lower leg
";

    fn fashion() -> CaptionSet {
        let wordnet = WordNet::parse(&[(Pos::Noun, "data.noun", FASHION_LINES)]).unwrap();
        CaptionSet::for_dataset(DatasetName::FashionMnist, Some(&wordnet)).unwrap()
    }

    #[track_caller]
    fn check(set: &CaptionSet, class: usize, expect: &[&str]) {
        let texts: Vec<&str> = set.of_class(class).into_iter().map(|i| set.captions[i].text.as_str()).collect();
        assert_eq!(texts, expect);
    }

    #[test]
    fn the_fashion_caption_set_is_pinned() {
        let set = fashion();
        assert_eq!(set.classes, DatasetName::FashionMnist.classes());
        check(
            &set,
            8,
            &[
                "Bag",
                "a photo of a Bag",
                "a picture of a Bag",
                "a product photo of a Bag",
                "a black and white photo of a Bag",
                "handbag",
                "a photo of a handbag",
                "a picture of a handbag",
                "a product photo of a handbag",
                "a black and white photo of a handbag",
                "pocketbook",
                "a photo of a pocketbook",
                "a picture of a pocketbook",
                "a product photo of a pocketbook",
                "a black and white photo of a pocketbook",
                "purse",
                "a photo of a purse",
                "a picture of a purse",
                "a product photo of a purse",
                "a black and white photo of a purse",
                "a container used for carrying money and small personal items or accessories (especially by women)",
                "a Bag: a container used for carrying money and small personal items or accessories (especially by women)",
            ],
        );
        check(
            &set,
            9,
            &[
                "Ankle boot",
                "a photo of an Ankle boot",
                "a picture of an Ankle boot",
                "a product photo of an Ankle boot",
                "a black and white photo of an Ankle boot",
                "boot",
                "a photo of a boot",
                "a picture of a boot",
                "a product photo of a boot",
                "a black and white photo of a boot",
                "footwear that covers the whole foot and lower leg",
                "an Ankle boot: footwear that covers the whole foot and lower leg",
            ],
        );
        let per_class: Vec<usize> = (0..10).map(|c| set.of_class(c).len()).collect();
        assert_eq!(per_class, [22, 12, 12, 12, 7, 7, 7, 17, 22, 12]);
        // Every caption, pinned: a change to the synsets, names or templates shows here.
        let listing: String = set.captions.iter().map(|c| format!("{}\t{}\n", c.class, c.text)).collect();
        assert_eq!(
            tandem_runtime::bundle::sha256_hex(listing.as_bytes()),
            "21dc39419a47defc4e28506984a630347eac87d9781d434450c297aea921e693",
            "{listing}"
        );
    }

    #[test]
    fn digits_use_the_templates_alone_and_fashion_needs_wordnet() {
        let set = CaptionSet::for_dataset(DatasetName::Digits, None).unwrap();
        check(
            &set,
            8,
            &[
                "8",
                "a photo of an 8",
                "a picture of an 8",
                "a product photo of an 8",
                "a black and white photo of an 8",
            ],
        );
        assert_eq!(set.captions.len(), 50);
        let err = CaptionSet::for_dataset(DatasetName::FashionMnist, None).unwrap_err().to_string();
        assert!(err.contains("tandem data fetch wordnet"), "{err}");
        let empty = WordNet::parse(&[]).unwrap();
        let err = CaptionSet::for_dataset(DatasetName::FashionMnist, Some(&empty)).unwrap_err().to_string();
        assert!(err.contains("no synset 03595614-n"), "{err}");
    }
}
