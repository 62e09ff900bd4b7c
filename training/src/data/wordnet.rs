//! WordNet 3.0 read from its four data files (`data.noun`, `data.verb`, `data.adj`, `data.adv`):
//! every synset with its lemmas, its gloss split into a definition and example sentences, and its
//! direct hypernyms and hyponyms.
//!
//! # The line format
//!
//! Each synset is one line (the files open with the licence, on lines that start with two spaces):
//!
//! ```text
//! offset lex_filenum ss_type w_cnt word lex_id [word lex_id ...] p_cnt [symbol offset pos st ...] [frames] | gloss
//! 00001930 03 n 01 physical_entity 0 007 @ 00001740 n 0000 ~ 00002452 n 0000 ... | an entity that has physical existence
//! ```
//!
//! `w_cnt` is two hex digits, `lex_id` one, `p_cnt` three decimal digits; verbs add sentence frames
//! after the pointers, which are skipped. A synset is identified by its offset and part of speech
//! ([`SynsetId`], written `00001930-n`); adjective satellites (`ss_type` `s`) live in `data.adj`
//! and are identified as adjectives, since an offset is unique within its file.
//!
//! # Lemmas, definitions and examples
//!
//! - Lemmas are kept as written (`physical_entity`, `Albert_Einstein`); the syntactic markers
//!   `(a)`, `(p)` and `(ip)` that follow some adjectives (`galore(ip)`) are removed.
//! - The gloss is split at its first double quote: the text before it, without trailing `;`, `:`
//!   or `,`, is the definition, and every quoted piece after it is an example sentence. A quote
//!   left open runs to the end of the gloss; the text between quoted pieces (separators, and
//!   attributions such as `- Shakespeare`) is dropped. WordNet 3.0 has 32,930 glosses with a
//!   double quote; 32,927 of them yield at least one non-empty example (48,345 in all), while in
//!   the other three a closing quote was left without its opening one (`close in; darkness
//!   enclosed him"`), so their examples stay in the definition.
//! - Hypernyms are the `@` (hypernym) and `@i` (instance hypernym) pointers, hyponyms the `~` and
//!   `~i` pointers. Every pointer must name a synset of the files, or loading fails.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use super::CorpusName;
use crate::{Error, Result};

/// The four data files, in the order their synsets are numbered.
pub const DATA_FILES: [(Pos, &str); 4] =
    [(Pos::Noun, "data.noun"), (Pos::Verb, "data.verb"), (Pos::Adj, "data.adj"), (Pos::Adv, "data.adv")];

/// A part of speech: which data file a synset lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pos {
    /// `n`, `data.noun`.
    Noun,
    /// `v`, `data.verb`.
    Verb,
    /// `a` and the satellites `s`, `data.adj`.
    Adj,
    /// `r`, `data.adv`.
    Adv,
}

impl Pos {
    /// The letter WordNet writes; satellites are written `a` here since they share `data.adj`.
    pub fn letter(&self) -> char {
        match self {
            Pos::Noun => 'n',
            Pos::Verb => 'v',
            Pos::Adj => 'a',
            Pos::Adv => 'r',
        }
    }

    /// The part of speech of a `ss_type` or pointer letter.
    pub fn from_letter(letter: &str) -> Option<Pos> {
        match letter {
            "n" => Some(Pos::Noun),
            "v" => Some(Pos::Verb),
            "a" | "s" => Some(Pos::Adj),
            "r" => Some(Pos::Adv),
            _ => None,
        }
    }
}

/// A synset's identity: its byte offset in the data file of its part of speech.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SynsetId {
    /// Which data file.
    pub pos: Pos,
    /// The offset, unique within that file.
    pub offset: u32,
}

impl fmt::Display for SynsetId {
    /// `00001740-n`: the eight-digit offset and the part-of-speech letter.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08}-{}", self.offset, self.pos.letter())
    }
}

/// One synset as the data files describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synset {
    /// Offset and part of speech.
    pub id: SynsetId,
    /// The words, as written (underscores for spaces), markers removed; at least one.
    pub lemmas: Vec<String>,
    /// The whole gloss as the file has it.
    pub gloss: String,
    /// The gloss up to its first double quote: what the synset means.
    pub definition: String,
    /// The quoted example sentences of the gloss, in order.
    pub examples: Vec<String>,
    /// Direct hypernyms (`@`) and instance hypernyms (`@i`).
    pub hypernyms: Vec<SynsetId>,
    /// Direct hyponyms (`~`) and instance hyponyms (`~i`).
    pub hyponyms: Vec<SynsetId>,
}

impl Synset {
    /// The lemmas as text: underscores read as spaces.
    pub fn lemma_texts(&self) -> impl Iterator<Item = String> + '_ {
        self.lemmas.iter().map(|lemma| lemma.replace('_', " "))
    }
}

/// Every synset of the four data files, in file order (nouns, verbs, adjectives, adverbs, each by
/// offset), with pointers checked to resolve.
#[derive(Debug, Clone)]
pub struct WordNet {
    /// The synsets; a synset's index here is its document number in the retrieval benchmark.
    pub synsets: Vec<Synset>,
    by_id: HashMap<SynsetId, usize>,
}

impl WordNet {
    /// Reads the copy that `tandem data fetch wordnet` installed and verified under `data_dir`.
    pub fn load(data_dir: &Path) -> Result<WordNet> {
        let dir = super::installed_dir(CorpusName::WordNet, data_dir)?;
        WordNet::read_dir(&dir)
    }

    /// Reads the four data files from `dir` as they are, without checksums: for a copy the user
    /// keeps elsewhere, and for small files in the same format.
    pub fn read_dir(dir: &Path) -> Result<WordNet> {
        let mut files = Vec::with_capacity(DATA_FILES.len());
        for (pos, name) in DATA_FILES {
            let path = dir.join(name);
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            let text = String::from_utf8(bytes).map_err(|e| Error::InvalidData {
                file: path.display().to_string(),
                reason: format!("not UTF-8: {e}"),
            })?;
            files.push((pos, path.display().to_string(), text));
        }
        let borrowed: Vec<(Pos, &str, &str)> =
            files.iter().map(|(pos, name, text)| (*pos, name.as_str(), text.as_str())).collect();
        WordNet::parse(&borrowed)
    }

    /// Parses data files given as `(part of speech, name for errors, text)`.
    pub fn parse(files: &[(Pos, &str, &str)]) -> Result<WordNet> {
        let mut synsets = Vec::new();
        let mut by_id = HashMap::new();
        let mut origin = Vec::new();
        for &(pos, name, text) in files {
            for (line_idx, line) in text.lines().enumerate() {
                if line.starts_with(' ') || line.trim().is_empty() {
                    continue;
                }
                let invalid = |reason: String| Error::InvalidData {
                    file: name.to_string(),
                    reason: format!("line {}: {reason}", line_idx + 1),
                };
                let synset = parse_line(line).map_err(invalid)?;
                if synset.id.pos != pos {
                    return Err(invalid(format!("a {:?} synset in the {:?} file", synset.id.pos, pos)));
                }
                if by_id.insert(synset.id, synsets.len()).is_some() {
                    return Err(invalid(format!("synset {} appears twice", synset.id)));
                }
                synsets.push(synset);
                origin.push((name, line_idx + 1));
            }
        }
        for (synset, (name, line)) in synsets.iter().zip(&origin) {
            let dangling = synset.hypernyms.iter().chain(&synset.hyponyms).find(|id| !by_id.contains_key(id));
            if let Some(id) = dangling {
                return Err(Error::InvalidData {
                    file: name.to_string(),
                    reason: format!("line {line}: synset {} points to {id}, which no data file has", synset.id),
                });
            }
        }
        Ok(WordNet { synsets, by_id })
    }

    /// The index of a synset in [`WordNet::synsets`].
    pub fn index_of(&self, id: SynsetId) -> Option<usize> {
        self.by_id.get(&id).copied()
    }

    /// Number of synsets.
    pub fn len(&self) -> usize {
        self.synsets.len()
    }

    /// Whether there are no synsets.
    pub fn is_empty(&self) -> bool {
        self.synsets.is_empty()
    }
}

/// Parses one synset line; the error says which field is wrong.
pub fn parse_line(line: &str) -> std::result::Result<Synset, String> {
    let Some((head, gloss)) = line.split_once('|') else {
        return Err("no `|` before the gloss".into());
    };
    let mut fields = head.split_ascii_whitespace();
    let mut next = |what: &str| fields.next().ok_or_else(|| format!("ends before its {what}"));
    let offset_field = next("offset")?;
    let offset: u32 = offset_field.parse().map_err(|_| format!("offset {offset_field:?} is not a number"))?;
    let lex_filenum = next("lexicographer file number")?;
    if lex_filenum.parse::<u8>().is_err() {
        return Err(format!("lexicographer file number {lex_filenum:?} is not a number"));
    }
    let ss_type = next("synset type")?;
    let pos = Pos::from_letter(ss_type).ok_or_else(|| format!("unknown synset type {ss_type:?}"))?;
    let w_cnt = next("word count")?;
    let n_words = usize::from_str_radix(w_cnt, 16).map_err(|_| format!("word count {w_cnt:?} is not hex"))?;
    if n_words == 0 {
        return Err("a synset without words".into());
    }
    let mut lemmas = Vec::with_capacity(n_words);
    for _ in 0..n_words {
        let word = next("words")?;
        let lex_id = next("words")?;
        if u8::from_str_radix(lex_id, 16).is_err() {
            return Err(format!("lex_id {lex_id:?} of {word:?} is not hex"));
        }
        lemmas.push(strip_marker(word, pos).to_string());
    }
    let p_cnt = next("pointer count")?;
    let n_pointers: usize = p_cnt.parse().map_err(|_| format!("pointer count {p_cnt:?} is not a number"))?;
    let mut hypernyms = Vec::new();
    let mut hyponyms = Vec::new();
    for _ in 0..n_pointers {
        let symbol = next("pointers")?;
        let target = next("pointers")?;
        let target_pos = next("pointers")?;
        let source_target = next("pointers")?;
        let target_offset: u32 = target.parse().map_err(|_| format!("pointer offset {target:?} is not a number"))?;
        let target_pos =
            Pos::from_letter(target_pos).ok_or_else(|| format!("unknown pointer part of speech {target_pos:?}"))?;
        if source_target.len() != 4 || u16::from_str_radix(source_target, 16).is_err() {
            return Err(format!("pointer source/target {source_target:?} is not four hex digits"));
        }
        let id = SynsetId { pos: target_pos, offset: target_offset };
        match symbol {
            "@" | "@i" => hypernyms.push(id),
            "~" | "~i" => hyponyms.push(id),
            _ => {}
        }
    }
    let gloss = gloss.trim().to_string();
    let (definition, examples) = split_gloss(&gloss);
    Ok(Synset { id: SynsetId { pos, offset }, lemmas, gloss, definition, examples, hypernyms, hyponyms })
}

/// Splits a gloss into its definition and its quoted examples, by the rule in the module docs.
pub fn split_gloss(gloss: &str) -> (String, Vec<String>) {
    let Some(first_quote) = gloss.find('"') else {
        return (gloss.trim().to_string(), Vec::new());
    };
    let definition = gloss[..first_quote].trim_end_matches(|c: char| c.is_whitespace() || matches!(c, ';' | ':' | ','));
    // After the first quote, pieces alternate inside and outside quotes: 1, 3, 5, ... are quoted.
    let examples = gloss[first_quote..]
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::trim)
        .filter(|example| !example.is_empty())
        .map(str::to_string)
        .collect();
    (definition.trim().to_string(), examples)
}

/// Removes an adjective's syntactic marker: `(a)`, `(p)` or `(ip)` right after the word.
fn strip_marker(word: &str, pos: Pos) -> &str {
    if pos != Pos::Adj {
        return word;
    }
    for marker in ["(a)", "(p)", "(ip)"] {
        if let Some(stripped) = word.strip_suffix(marker) {
            return stripped;
        }
    }
    word
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixture: a few synsets in the real line format, with the licence-style header lines.
    pub(crate) fn fixture_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures").join("wordnet")
    }

    #[track_caller]
    fn check_gloss(gloss: &str, definition: &str, examples: &[&str]) {
        let (found_definition, found_examples) = split_gloss(gloss);
        assert_eq!(found_definition, definition, "definition of {gloss:?}");
        assert_eq!(found_examples, examples, "examples of {gloss:?}");
    }

    #[test]
    fn glosses_split_into_definition_and_examples() {
        check_gloss("an entity that has physical existence", "an entity that has physical existence", &[]);
        check_gloss(
            "(usually followed by `to') having the necessary means; \"able to swim\"; \"she was able to program\"",
            "(usually followed by `to') having the necessary means",
            &["able to swim", "she was able to program"],
        );
        // Attributions between quotes are dropped, separators other than `;` too.
        check_gloss(
            "mercy; \"the quality of mercy is not strained\"--Shakespeare; \"a plea for mercy\"",
            "mercy",
            &["the quality of mercy is not strained", "a plea for mercy"],
        );
        check_gloss("a complete extent: \"a gamut of emotions\"", "a complete extent", &["a gamut of emotions"]);
        // Real glitches of WordNet 3.0: a quote left open, and a stray quote with nothing after it.
        check_gloss(
            "an announcement; \"an obituary notice\"; \"a notice of sale",
            "an announcement",
            &["an obituary notice", "a notice of sale"],
        );
        check_gloss(
            "a local branch where postal services are available\"",
            "a local branch where postal services are available",
            &[],
        );
        check_gloss("\"\"; \"  \"", "", &[]);
    }

    #[track_caller]
    fn check_line(line: &str, expect: &str) {
        let found = match parse_line(line) {
            Ok(s) => {
                let ids = |ids: &[SynsetId]| ids.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ");
                format!(
                    "{} lemmas={:?} def={:?} ex={:?} hyper=[{}] hypo=[{}]",
                    s.id,
                    s.lemmas,
                    s.definition,
                    s.examples,
                    ids(&s.hypernyms),
                    ids(&s.hyponyms)
                )
            }
            Err(e) => format!("error: {e}"),
        };
        assert_eq!(found, expect, "{line}");
    }

    #[test]
    fn real_lines_parse() {
        // Verbatim lines of WordNet 3.0, trailing spaces included.
        check_line(
            "00001930 03 n 01 physical_entity 0 007 @ 00001740 n 0000 ~ 00002452 n 0000 ~ 00002684 n 0000 ~ 00007347 n 0000 ~ 00020827 n 0000 ~ 00029677 n 0000 ~ 14580597 n 0000 | an entity that has physical existence  ",
            "00001930-n lemmas=[\"physical_entity\"] def=\"an entity that has physical existence\" ex=[] \
             hyper=[00001740-n] hypo=[00002452-n 00002684-n 00007347-n 00020827-n 00029677-n 14580597-n]",
        );
        check_line(
            "00001740 29 v 04 breathe 0 take_a_breath 0 respire 0 suspire 3 021 * 00005041 v 0000 * 00004227 v 0000 + 03110323 a 0301 + 00831191 n 0303 + 04080833 n 0301 + 04250850 n 0105 + 00831191 n 0101 ^ 00004227 v 0103 ^ 00005041 v 0103 $ 00002325 v 0000 $ 00002573 v 0000 ~ 00002573 v 0000 ~ 00002724 v 0000 ~ 00002942 v 0000 ~ 00003826 v 0000 ~ 00004032 v 0000 ~ 00004227 v 0000 ~ 00005041 v 0000 ~ 00006697 v 0000 ~ 00007328 v 0000 ~ 00017031 v 0000 02 + 02 00 + 08 00 | draw air into, and expel out of, the lungs; \"I can breathe better when the air is clean\"; \"The patient is respiring\"  ",
            "00001740-v lemmas=[\"breathe\", \"take_a_breath\", \"respire\", \"suspire\"] \
             def=\"draw air into, and expel out of, the lungs\" \
             ex=[\"I can breathe better when the air is clean\", \"The patient is respiring\"] hyper=[] \
             hypo=[00002573-v 00002724-v 00002942-v 00003826-v 00004032-v 00004227-v 00005041-v 00006697-v 00007328-v 00017031-v]",
        );
        // A satellite with a marker, and an instance hypernym.
        check_line(
            "00014358 00 s 02 abounding 0 galore(ip) 0 001 & 00013887 a 0000 | existing in abundance; \"abounding confidence\"; \"whiskey galore\"  ",
            "00014358-a lemmas=[\"abounding\", \"galore\"] def=\"existing in abundance\" \
             ex=[\"abounding confidence\", \"whiskey galore\"] hyper=[] hypo=[]",
        );
        check_line(
            "10954498 18 n 02 Einstein 0 Albert_Einstein 0 002 @i 10428004 n 0000 + 03031248 a 0101 | physicist born in Germany who formulated the special theory of relativity and the general theory of relativity; Einstein also proposed that light consists of discrete quantized bundles of energy (later called photons) (1879-1955)  ",
            "10954498-n lemmas=[\"Einstein\", \"Albert_Einstein\"] def=\"physicist born in Germany who formulated the \
             special theory of relativity and the general theory of relativity; Einstein also proposed that light \
             consists of discrete quantized bundles of energy (later called photons) (1879-1955)\" ex=[] \
             hyper=[10428004-n] hypo=[]",
        );
        // Sixteen words: the count is hex.
        let words: String = (0..16).map(|i| format!("w{i} 0 ")).collect();
        let line = format!("00000001 03 n 10 {words}000 | many words");
        assert_eq!(parse_line(&line).unwrap().lemmas.len(), 16);
    }

    #[test]
    fn malformed_lines_say_what_is_wrong() {
        check_line("00001930 03 n 01 entity 0 000 no gloss", "error: no `|` before the gloss");
        check_line("0000193x 03 n 01 entity 0 000 | g", "error: offset \"0000193x\" is not a number");
        check_line("00001930 03 q 01 entity 0 000 | g", "error: unknown synset type \"q\"");
        check_line("00001930 03 n 02 entity 0 000 | g", "error: ends before its words");
        check_line("00001930 03 n 00 000 | g", "error: a synset without words");
        check_line("00001930 03 n 01 entity 0 002 @ 00001740 n 0000 | g", "error: ends before its pointers");
        check_line(
            "00001930 03 n 01 entity 0 001 @ 00001740 x 0000 | g",
            "error: unknown pointer part of speech \"x\"",
        );
        check_line(
            "00001930 03 n 01 entity 0 001 @ 00001740 n 00 | g",
            "error: pointer source/target \"00\" is not four hex digits",
        );
    }

    #[test]
    fn files_resolve_pointers_and_reject_dangling_ones() {
        let noun = "  1 licence text\n00000010 03 n 01 thing 0 001 ~ 00000020 n 0000 | a thing\n\
                    00000020 03 n 01 part 0 001 @ 00000010 n 0000 | a part; \"a part of it\"\n";
        let wn = WordNet::parse(&[(Pos::Noun, "data.noun", noun)]).unwrap();
        assert_eq!(wn.len(), 2);
        let part = wn.index_of(SynsetId { pos: Pos::Noun, offset: 20 }).unwrap();
        assert_eq!(part, 1);
        assert_eq!(wn.synsets[part].hypernyms, [wn.synsets[0].id]);
        assert_eq!(wn.synsets[part].examples, ["a part of it"]);

        let dangling = "00000010 03 n 01 thing 0 001 ~ 00000030 n 0000 | a thing\n";
        let err = WordNet::parse(&[(Pos::Noun, "data.noun", dangling)]).unwrap_err();
        assert!(err.to_string().contains("line 1: synset 00000010-n points to 00000030-n"), "{err}");
        let twice = "00000010 03 n 01 thing 0 000 | a\n00000010 03 n 01 thing 0 000 | b\n";
        let err = WordNet::parse(&[(Pos::Noun, "data.noun", twice)]).unwrap_err();
        assert!(err.to_string().contains("line 2: synset 00000010-n appears twice"), "{err}");
        let err = WordNet::parse(&[(Pos::Verb, "data.verb", "00000010 03 n 01 thing 0 000 | a\n")]).unwrap_err();
        assert!(err.to_string().contains("a Noun synset in the Verb file"), "{err}");
    }

    #[test]
    fn fixture_reads_like_the_real_files() {
        let wn = WordNet::read_dir(&fixture_dir()).unwrap();
        let per_pos = |pos: Pos| wn.synsets.iter().filter(|s| s.id.pos == pos).count();
        assert_eq!([per_pos(Pos::Noun), per_pos(Pos::Verb), per_pos(Pos::Adj), per_pos(Pos::Adv)], [10, 3, 2, 1]);
        let dog = &wn.synsets[wn.index_of(SynsetId { pos: Pos::Noun, offset: 2084193 }).unwrap()];
        assert_eq!(dog.lemma_texts().collect::<Vec<_>>(), ["dog", "domestic dog", "Canis familiaris"]);
        assert_eq!(dog.examples, ["the dog barked all night"]);
        let missing = tempfile::tempdir().unwrap();
        let err = WordNet::read_dir(missing.path()).unwrap_err();
        assert!(err.to_string().contains("data.noun"), "{err}");
        let err = WordNet::load(missing.path()).unwrap_err();
        assert!(err.to_string().contains("tandem data fetch wordnet"), "{err}");
    }
}
