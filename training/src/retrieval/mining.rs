//! Hard negatives: for each training pair, the documents a bi-encoder ranks highest for the query
//! that are not answers to it.
//!
//! In-batch negatives are mostly easy (a random gloss seldom resembles the query), so after a
//! while they teach little; the documents the current model confuses with the answer are the
//! informative ones. A mined document is never relevant to the query by the benchmark's own
//! judgments (its own synset, direct hypernyms and hyponyms) and never has the positive's text
//! (WordNet repeats some definitions across synsets), and it always comes from the documents
//! training may show ([`Benchmark::training_docs`]), so no held-out text is trained on.

use std::collections::HashSet;
use std::path::Path;

use super::benchmark::{Benchmark, TrainingPair};
use super::eval::Encoder;
use super::search::DenseIndex;
use crate::{Error, Result};

/// How hard negatives are mined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MiningOptions {
    /// Documents kept per query, best first.
    pub per_query: usize,
    /// Documents searched per query before the relevant ones are dropped.
    pub depth: usize,
    /// The miner's best documents passed over, beyond the relevant ones: the very top of an
    /// imperfect judgment (WordNet has near-synonymous synsets that are not linked) is often an
    /// unjudged answer, so skipping it trades a little hardness for fewer false negatives.
    pub skip_top: usize,
    /// Search this many training documents (the pairs' positives and the first others in the
    /// benchmark's hash order) instead of all of them: embedding 112,000 definitions is minutes
    /// of CPU per mining round.
    pub corpus_limit: Option<usize>,
}

impl Default for MiningOptions {
    fn default() -> Self {
        MiningOptions { per_query: 1, depth: 30, skip_top: 0, corpus_limit: None }
    }
}

/// The documents a pair's negatives must never be: those judged relevant to its query, and any
/// with its positive's text (WordNet repeats some definitions across synsets).
pub struct Answers {
    relevant: HashSet<usize>,
    positive: String,
}

impl Answers {
    pub fn of(benchmark: &Benchmark, pair: &TrainingPair) -> Answers {
        let relevant = benchmark.judgments(pair.synset).into_iter().map(|(d, _)| d).collect();
        Answers { relevant, positive: pair.positive.trim().to_lowercase() }
    }

    /// Whether document `doc` of `benchmark` answers the pair's query.
    pub fn contains(&self, benchmark: &Benchmark, doc: usize) -> bool {
        self.relevant.contains(&doc) || benchmark.docs[doc].trim().to_lowercase() == self.positive
    }
}

/// Per pair, up to `per_query` hard negatives as indices into `benchmark.docs`, best first.
///
/// `miner` is an embedder bundle; its rankings are exact (every query against every searched
/// document). A pair gets fewer than `per_query` negatives only when the search ran out of
/// documents that are not answers.
pub fn mine_hard_negatives(
    benchmark: &Benchmark,
    miner: &Path,
    pairs: &[TrainingPair],
    options: &MiningOptions,
) -> Result<Vec<Vec<usize>>> {
    if options.per_query == 0 || options.depth < options.per_query + options.skip_top {
        return Err(Error::InvalidArgument(format!(
            "mining needs at least one negative per query and a depth ({}) of at least the negatives ({}) plus the \
             skipped top ({})",
            options.depth, options.per_query, options.skip_top
        )));
    }
    let positives: Vec<usize> = pairs.iter().map(|p| p.synset).collect();
    let corpus = benchmark.training_docs(&positives, options.corpus_limit);
    let encoder = Encoder::load(miner, 0)?;
    let docs: Vec<String> = corpus.iter().map(|&d| benchmark.docs[d].clone()).collect();
    let index = DenseIndex::new(&encoder.embed(&docs, "mining documents")?)?;
    let queries: Vec<String> = pairs.iter().map(|p| p.query.clone()).collect();
    let vectors = encoder.embed(&queries, "mining queries")?;
    let found = index.search(&vectors, options.depth)?;
    Ok(pairs
        .iter()
        .zip(found)
        .map(|(pair, ranked)| {
            let answers = Answers::of(benchmark, pair);
            ranked
                .into_iter()
                .map(|(position, _)| corpus[position])
                .filter(|&d| !answers.contains(benchmark, d))
                .skip(options.skip_top)
                .take(options.per_query)
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::wordnet::WordNet;
    use crate::data::Split;
    use tandem_runtime::import::{import_sentence_transformers, ImportOptions};
    use tandem_runtime::models::sentence_encoder::Pooling;
    use tandem_runtime::testing_text::write_tiny_sentence_transformers_dir;

    fn benchmark() -> Benchmark {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wordnet");
        Benchmark::new(&WordNet::read_dir(&dir).unwrap())
    }

    #[test]
    fn negatives_are_never_answers_nor_held_out() {
        let benchmark = benchmark();
        let pairs = benchmark.training_pairs();
        let dir = tempfile::tempdir().unwrap();
        let hf = dir.path().join("hf");
        write_tiny_sentence_transformers_dir(&hf, 1, Pooling::Mean, true).unwrap();
        let miner = dir.path().join("miner");
        import_sentence_transformers(&hf, &miner, &ImportOptions { name: "miner".into(), version: "1".into() })
            .unwrap();
        let options = MiningOptions { per_query: 2, depth: 8, skip_top: 0, corpus_limit: None };
        let mined = mine_hard_negatives(&benchmark, &miner, &pairs, &options).unwrap();
        assert_eq!(mined.len(), pairs.len());
        assert!(mined.iter().any(|negatives| !negatives.is_empty()));
        for (pair, negatives) in pairs.iter().zip(&mined) {
            assert!(negatives.len() <= 2);
            for &d in negatives {
                assert!(benchmark.judgments(pair.synset).iter().all(|&(j, _)| j != d), "{pair:?} got an answer {d}");
                assert_eq!(benchmark.split_of(d), Split::Train);
                assert_ne!(benchmark.docs[d], pair.positive);
            }
        }
        // Skipping the top shifts the list by one.
        let skipped = MiningOptions { skip_top: 1, ..options.clone() };
        let shifted = mine_hard_negatives(&benchmark, &miner, &pairs, &skipped).unwrap();
        for (a, b) in mined.iter().zip(&shifted) {
            if a.len() == 2 && !b.is_empty() {
                assert_eq!(a[1], b[0]);
            }
        }
        let bad = MiningOptions { per_query: 5, depth: 4, ..options };
        assert!(mine_hard_negatives(&benchmark, &miner, &pairs, &bad).is_err());
    }
}
