//! The WordNet retrieval benchmark: queries, documents, graded relevance, the split by synset, and
//! the training pairs the split leaves for fine-tuning. The definition is in the [module
//! docs](super).

use std::collections::HashSet;

use sha2::{Digest, Sha256};

use crate::data::wordnet::{SynsetId, WordNet};
use crate::data::Split;
use crate::{Error, Result};

/// Queries in the validation and the test split.
pub const HELD_OUT_QUERIES: usize = 2_000;

/// Synsets whose split hash modulo 100 is below this are test synsets.
const TEST_BUCKETS: u64 = 2;
/// Synsets whose split hash modulo 100 is below this (and not test) are validation synsets.
const VAL_BUCKETS: u64 = 4;

/// Where a query's text comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryKind {
    /// A lemma of the synset, underscores read as spaces.
    Lemma,
    /// An example sentence of the synset's gloss.
    Example,
}

/// One query: a text whose own synset is the best answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// What is searched for.
    pub text: String,
    /// The query's own synset, as an index into the documents.
    pub synset: usize,
    /// Lemma or example.
    pub kind: QueryKind,
}

/// One fine-tuning pair from the train split: a query and the gloss that answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainingPair {
    /// A lemma or example sentence of a train synset.
    pub query: String,
    /// That synset's definition.
    pub positive: String,
    /// The synset, as an index into the documents.
    pub synset: usize,
}

/// The benchmark over one copy of WordNet.
#[derive(Debug, Clone)]
pub struct Benchmark {
    /// One document per synset, in WordNet's order: the synset's definition.
    pub docs: Vec<String>,
    /// The synset of each document.
    pub ids: Vec<SynsetId>,
    split: Vec<Split>,
    split_hash: Vec<u64>,
    related: Vec<Vec<usize>>,
    queries: Vec<Query>,
    /// Indices into `queries`, per split, in sample order.
    train_queries: Vec<usize>,
    val_queries: Vec<usize>,
    test_queries: Vec<usize>,
}

impl Benchmark {
    /// Builds the benchmark; the split depends on nothing but the synset ids.
    pub fn new(wordnet: &WordNet) -> Benchmark {
        let n = wordnet.len();
        let mut docs = Vec::with_capacity(n);
        let mut ids = Vec::with_capacity(n);
        let mut split = Vec::with_capacity(n);
        let mut split_hash = Vec::with_capacity(n);
        let mut related = Vec::with_capacity(n);
        let mut queries = Vec::new();
        for (index, synset) in wordnet.synsets.iter().enumerate() {
            let hash = hash64(synset.id.to_string().as_bytes());
            docs.push(synset.definition.clone());
            ids.push(synset.id);
            split.push(split_of_hash(hash));
            split_hash.push(hash);
            let mut rel: Vec<usize> = synset
                .hypernyms
                .iter()
                .chain(&synset.hyponyms)
                .map(|id| wordnet.index_of(*id).expect("WordNet::parse resolves every pointer. This is a bug."))
                .filter(|&r| r != index)
                .collect();
            rel.sort_unstable();
            rel.dedup();
            related.push(rel);
            let mut seen = HashSet::new();
            let texts = synset
                .lemma_texts()
                .map(|t| (t, QueryKind::Lemma))
                .chain(synset.examples.iter().map(|t| (t.clone(), QueryKind::Example)));
            for (text, kind) in texts {
                if seen.insert(text.clone()) {
                    queries.push(Query { text, synset: index, kind });
                }
            }
        }
        let mut by_split: [Vec<(u64, usize)>; 3] = Default::default();
        for (q, query) in queries.iter().enumerate() {
            let key = format!("{}\t{}", ids[query.synset], query.text);
            let slot = match split[query.synset] {
                Split::Train => 0,
                Split::Val => 1,
                Split::Test => 2,
            };
            by_split[slot].push((hash64(key.as_bytes()), q));
        }
        let [train_queries, val_queries, test_queries] = by_split.map(|mut keyed| {
            keyed.sort_unstable();
            keyed.into_iter().map(|(_, q)| q).collect::<Vec<usize>>()
        });
        let held_out = |mut q: Vec<usize>| {
            q.truncate(HELD_OUT_QUERIES);
            q
        };
        Benchmark {
            docs,
            ids,
            split,
            split_hash,
            related,
            queries,
            train_queries,
            val_queries: held_out(val_queries),
            test_queries: held_out(test_queries),
        }
    }

    /// Number of documents (synsets).
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// Whether there are no documents.
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// The split a synset belongs to.
    pub fn split_of(&self, synset: usize) -> Split {
        self.split[synset]
    }

    /// Every query of every synset, grouped by synset in WordNet's order.
    pub fn all_queries(&self) -> &[Query] {
        &self.queries
    }

    /// A split's queries in their fixed sample order: every query of the train synsets, or the
    /// first [`HELD_OUT_QUERIES`] of the validation or test synsets.
    pub fn queries(&self, split: Split) -> Vec<&Query> {
        let indices = match split {
            Split::Train => &self.train_queries,
            Split::Val => &self.val_queries,
            Split::Test => &self.test_queries,
        };
        indices.iter().map(|&q| &self.queries[q]).collect()
    }

    /// The documents judged for a query's synset as `(document, grade)`: 2 for the synset itself,
    /// 1 for its direct hypernyms and hyponyms.
    pub fn judgments(&self, synset: usize) -> Vec<(usize, u8)> {
        let mut judged = vec![(synset, super::metrics::OWN)];
        judged.extend(self.related[synset].iter().map(|&r| (r, 1)));
        judged
    }

    /// The corpus to search for `queries`: every document without a limit; with one, every
    /// document judged for a query plus the first others in split-hash order, up to `limit`
    /// documents. Document numbers come back in WordNet's order.
    pub fn corpus_for(&self, queries: &[&Query], limit: Option<usize>) -> Result<Vec<usize>> {
        let Some(limit) = limit else {
            return Ok((0..self.len()).collect());
        };
        let mut keep = vec![false; self.len()];
        let mut n_kept = 0;
        for query in queries {
            for (doc, _) in self.judgments(query.synset) {
                if !keep[doc] {
                    keep[doc] = true;
                    n_kept += 1;
                }
            }
        }
        if n_kept > limit {
            return Err(Error::InvalidArgument(format!(
                "the {} queries have {n_kept} judged documents, more than the corpus limit of {limit}: \
                 raise the limit or evaluate fewer queries",
                queries.len()
            )));
        }
        let mut others: Vec<usize> = (0..self.len()).filter(|&d| !keep[d]).collect();
        others.sort_unstable_by_key(|&d| (self.split_hash[d], d));
        for d in others.into_iter().take(limit - n_kept) {
            keep[d] = true;
        }
        Ok((0..self.len()).filter(|&d| keep[d]).collect())
    }

    /// `(query, positive gloss)` pairs for fine-tuning, from the train split only.
    ///
    /// Every query of every train synset is paired with that synset's definition, except pairs
    /// that would show a held-out query or gloss: a pair is left out when its query, or its
    /// positive, equals (ignoring case and spacing) a query or the definition of any validation or
    /// test synset. Polysemous lemmas (`bank`) and shared definitions (`a variety of aster`)
    /// would otherwise carry held-out text into training.
    pub fn training_pairs(&self) -> Vec<TrainingPair> {
        let mut held_out_queries = HashSet::new();
        for query in &self.queries {
            if self.split[query.synset] != Split::Train {
                held_out_queries.insert(normalize(&query.text));
            }
        }
        let held_out_docs = self.held_out_definitions();
        self.queries
            .iter()
            .filter(|q| self.split[q.synset] == Split::Train)
            .filter(|q| !held_out_queries.contains(&normalize(&q.text)))
            .filter(|q| !held_out_docs.contains(&normalize(&self.docs[q.synset])))
            .map(|q| TrainingPair { query: q.text.clone(), positive: self.docs[q.synset].clone(), synset: q.synset })
            .collect()
    }
}

impl Benchmark {
    /// The documents training may show (as negatives, or to distil on): the train split's
    /// definitions, without any that equals (ignoring case and spacing) a validation or test
    /// definition. With `limit`, `keep` (e.g. the training pairs' positives) plus the first others
    /// in split-hash order, up to `limit` documents. Document numbers come back in WordNet's order.
    pub fn training_docs(&self, keep: &[usize], limit: Option<usize>) -> Vec<usize> {
        let held_out = self.held_out_definitions();
        let allowed = |d: usize| self.split[d] == Split::Train && !held_out.contains(&normalize(&self.docs[d]));
        let Some(limit) = limit else {
            return (0..self.len()).filter(|&d| allowed(d)).collect();
        };
        let mut chosen = vec![false; self.len()];
        let mut n_chosen = 0;
        for &d in keep {
            if d < self.len() && allowed(d) && !chosen[d] {
                chosen[d] = true;
                n_chosen += 1;
            }
        }
        let mut others: Vec<usize> = (0..self.len()).filter(|&d| !chosen[d] && allowed(d)).collect();
        others.sort_unstable_by_key(|&d| (self.split_hash[d], d));
        for d in others.into_iter().take(limit.saturating_sub(n_chosen)) {
            chosen[d] = true;
        }
        (0..self.len()).filter(|&d| chosen[d]).collect()
    }

    /// The normalised definitions of the validation and test synsets.
    fn held_out_definitions(&self) -> HashSet<String> {
        self.docs.iter().zip(&self.split).filter(|(_, s)| **s != Split::Train).map(|(d, _)| normalize(d)).collect()
    }
}

/// The first eight bytes of the sha256 of `bytes`, big-endian: stable across platforms and
/// versions, unlike the standard library's hasher.
fn hash64(bytes: &[u8]) -> u64 {
    let digest = Sha256::digest(bytes);
    u64::from_be_bytes(digest[..8].try_into().expect("a sha256 digest has 32 bytes. This is a bug."))
}

fn split_of_hash(hash: u64) -> Split {
    match hash % 100 {
        b if b < TEST_BUCKETS => Split::Test,
        b if b < VAL_BUCKETS => Split::Val,
        _ => Split::Train,
    }
}

/// Lowercase, with runs of whitespace made single spaces and the ends trimmed.
fn normalize(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::wordnet::Pos;

    fn fixture() -> (WordNet, Benchmark) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wordnet");
        let wordnet = WordNet::read_dir(&dir).unwrap();
        let benchmark = Benchmark::new(&wordnet);
        (wordnet, benchmark)
    }

    fn index(wordnet: &WordNet, pos: Pos, offset: u32) -> usize {
        wordnet.index_of(SynsetId { pos, offset }).unwrap()
    }

    #[test]
    fn the_split_is_a_hash_of_the_synset_id() {
        // Computed independently with Python's hashlib: the first 8 bytes of sha256("02084193-n")
        // are 0xe018be5cc4136c98, which is 0 modulo 100 (test); "02121636-n" gives 3 (val),
        // "00015388-n" 63 (train).
        assert_eq!(hash64(b"02084193-n"), 0xe018_be5c_c413_6c98);
        assert_eq!(split_of_hash(hash64(b"02084193-n")), Split::Test);
        assert_eq!(split_of_hash(hash64(b"02121636-n")), Split::Val);
        assert_eq!(split_of_hash(hash64(b"00015388-n")), Split::Train);
        assert_eq!(hash64(b"00015388-n") % 100, 63);
        let (wordnet, benchmark) = fixture();
        let ids_in = |split: Split| -> Vec<String> {
            (0..benchmark.len())
                .filter(|&s| benchmark.split_of(s) == split)
                .map(|s| benchmark.ids[s].to_string())
                .collect()
        };
        assert_eq!(ids_in(Split::Test), ["02084193-n", "08420321-n", "10954622-n", "01928880-v", "01385272-a"]);
        assert_eq!(ids_in(Split::Val), ["02121636-n", "00001748-v"]);
        assert_eq!(ids_in(Split::Train).len(), 9);
        assert_eq!(benchmark.docs[index(&wordnet, Pos::Verb, 1928880)], "run at a moderately swift pace");
    }

    #[test]
    fn queries_are_lemmas_and_examples_of_their_split() {
        let (wordnet, benchmark) = fixture();
        let test = benchmark.queries(Split::Test);
        // dog 3 + 1, bank 4 + 2, Einstein 2, jog 3 + 1, huge 3 + 2: all of them, fewer than 2,000.
        assert_eq!(test.len(), 21);
        assert!(test.iter().all(|q| benchmark.split_of(q.synset) == Split::Test));
        let dog = index(&wordnet, Pos::Noun, 2084193);
        let mut dog_queries: Vec<(&str, QueryKind)> =
            test.iter().filter(|q| q.synset == dog).map(|q| (q.text.as_str(), q.kind)).collect();
        dog_queries.sort_unstable_by_key(|(t, _)| *t);
        assert_eq!(
            dog_queries,
            [
                ("Canis familiaris", QueryKind::Lemma),
                ("dog", QueryKind::Lemma),
                ("domestic dog", QueryKind::Lemma),
                ("the dog barked all night", QueryKind::Example),
            ]
        );
        assert_eq!(benchmark.queries(Split::Val).len(), 2 + 1 + 3 + 2);
        let n_all = benchmark.all_queries().len();
        assert_eq!(benchmark.queries(Split::Train).len() + benchmark.queries(Split::Val).len() + test.len(), n_all);
        // The order is fixed: building again gives the same sample.
        let again = Benchmark::new(&wordnet);
        assert_eq!(again.queries(Split::Test), test);
    }

    #[test]
    fn relevance_is_own_synset_then_direct_neighbours() {
        let (wordnet, benchmark) = fixture();
        let at = |pos, offset| index(&wordnet, pos, offset);
        let dog = at(Pos::Noun, 2084193);
        let mut judged = benchmark.judgments(dog);
        judged.sort_unstable();
        // Own 2; hypernym animal and hyponym corgi 1; sibling cat unjudged.
        let mut expect = vec![(dog, 2), (at(Pos::Noun, 15388), 1), (at(Pos::Noun, 2112826), 1)];
        expect.sort_unstable();
        assert_eq!(judged, expect);
        // Instance hypernym.
        let einstein = at(Pos::Noun, 10954622);
        assert_eq!(benchmark.judgments(einstein), [(einstein, 2), (at(Pos::Noun, 10428004), 1)]);
        // `&` (similar to) is not a hypernym.
        let huge = at(Pos::Adj, 1385272);
        assert_eq!(benchmark.judgments(huge), [(huge, 2)]);
    }

    #[test]
    fn no_held_out_text_reaches_the_training_pairs() {
        let (wordnet, benchmark) = fixture();
        let pairs = benchmark.training_pairs();
        let held_out: Vec<&Query> =
            benchmark.all_queries().iter().filter(|q| benchmark.split_of(q.synset) != Split::Train).collect();
        for pair in &pairs {
            assert_eq!(benchmark.split_of(pair.synset), Split::Train, "{pair:?}");
            assert_eq!(pair.positive, benchmark.docs[pair.synset]);
            for q in &held_out {
                assert_ne!(normalize(&pair.query), normalize(&q.text), "{pair:?} shows held-out {q:?}");
                assert_ne!(normalize(&pair.positive), normalize(&benchmark.docs[q.synset]), "{pair:?}");
            }
        }
        // The river bank is a train synset, but its lemma is also a test query (the financial bank).
        let river_bank = index(&wordnet, Pos::Noun, 9213565);
        let river_pairs: Vec<&str> =
            pairs.iter().filter(|p| p.synset == river_bank).map(|p| p.query.as_str()).collect();
        assert_eq!(
            river_pairs,
            ["they pulled the canoe up on the bank", "he sat on the bank of the river and watched the currents"]
        );
        let n_train_queries = benchmark.queries(Split::Train).len();
        assert_eq!(pairs.len(), n_train_queries - 1);

        // A train synset sharing a held-out synset's definition gives no pair at all; a third
        // synset, with its own definition, gives its pair.
        let noun = "00000010 03 n 01 aster 0 000 | a variety of aster\n\
                    00000011 03 n 01 sunflower 0 000 | a tall plant\n\
                    00000016 03 n 01 daisy 0 000 | A variety  of aster\n";
        let wordnet = WordNet::parse(&[(Pos::Noun, "data.noun", noun)]).unwrap();
        let benchmark = Benchmark::new(&wordnet);
        assert_eq!(
            [benchmark.split_of(0), benchmark.split_of(1), benchmark.split_of(2)],
            [Split::Train, Split::Train, Split::Test]
        );
        let pairs = benchmark.training_pairs();
        assert_eq!(pairs, [TrainingPair { query: "sunflower".into(), positive: "a tall plant".into(), synset: 1 }]);
    }

    #[test]
    fn training_documents_are_train_definitions_only() {
        let (_, benchmark) = fixture();
        let all = benchmark.training_docs(&[], None);
        assert!(!all.is_empty());
        assert!(all.iter().all(|&d| benchmark.split_of(d) == Split::Train));
        let train_synsets = (0..benchmark.len()).filter(|&d| benchmark.split_of(d) == Split::Train).count();
        assert!(all.len() <= train_synsets);
        let limited = benchmark.training_docs(&[all[3]], Some(2));
        assert_eq!(limited.len(), 2);
        assert!(limited.contains(&all[3]));
        // A held-out document asked for is never kept.
        let test_doc = (0..benchmark.len()).find(|&d| benchmark.split_of(d) == Split::Test).unwrap();
        assert!(!benchmark.training_docs(&[test_doc], Some(1)).contains(&test_doc));
    }

    #[test]
    fn a_limited_corpus_keeps_every_judged_document() {
        let (_, benchmark) = fixture();
        let test = benchmark.queries(Split::Test);
        let judged: HashSet<usize> = test.iter().flat_map(|q| benchmark.judgments(q.synset)).map(|(d, _)| d).collect();
        assert_eq!(judged.len(), 10);
        assert_eq!(benchmark.corpus_for(&test, None).unwrap(), (0..16).collect::<Vec<_>>());
        let corpus = benchmark.corpus_for(&test, Some(10)).unwrap();
        assert_eq!(corpus.iter().copied().collect::<HashSet<_>>(), judged);
        let corpus = benchmark.corpus_for(&test, Some(12)).unwrap();
        assert_eq!(corpus.len(), 12);
        assert!(judged.iter().all(|d| corpus.contains(d)));
        assert!(corpus.windows(2).all(|w| w[0] < w[1]), "{corpus:?}");
        let err = benchmark.corpus_for(&test, Some(9)).unwrap_err();
        assert!(err.to_string().contains("10 judged documents, more than the corpus limit of 9"), "{err}");
    }
}
