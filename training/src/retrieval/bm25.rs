//! Okapi BM25 over an in-memory inverted index: the lexical baseline of the retrieval benchmark.
//!
//! score(q, d) = Σ over the query's tokens t (repeats counted) of
//! idf(t) · tf(t, d) · (k1 + 1) / (tf(t, d) + k1 · (1 − b + b · |d| / avgdl)),
//! with idf(t) = ln(1 + (N − df(t) + 0.5) / (df(t) + 0.5)) (Lucene's form, never negative),
//! k1 = 1.2 and b = 0.75. Tokens are the maximal runs of alphanumeric characters, lowercased; no
//! stemming and no stop words, so the baseline depends on nothing but the text.
//! Only documents sharing a token with the query are ranked; ties go to the lower document number.

use std::collections::HashMap;

/// BM25's two constants.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bm25Params {
    /// Term-frequency saturation.
    pub k1: f32,
    /// Length normalisation, 0 (none) to 1 (full).
    pub b: f32,
}

impl Default for Bm25Params {
    fn default() -> Self {
        Bm25Params { k1: 1.2, b: 0.75 }
    }
}

/// An inverted index of a fixed list of documents.
#[derive(Debug, Clone)]
pub struct Bm25 {
    params: Bm25Params,
    vocab: HashMap<String, u32>,
    /// Per token: `(document, term frequency)`, by document.
    postings: Vec<Vec<(u32, u32)>>,
    doc_len: Vec<u32>,
    avgdl: f32,
}

impl Bm25 {
    /// Indexes `docs`; a document's number is its position.
    pub fn new<'a>(docs: impl IntoIterator<Item = &'a str>, params: Bm25Params) -> Bm25 {
        let mut vocab: HashMap<String, u32> = HashMap::new();
        let mut postings: Vec<Vec<(u32, u32)>> = Vec::new();
        let mut doc_len = Vec::new();
        let mut counts: HashMap<u32, u32> = HashMap::new();
        for (doc, text) in docs.into_iter().enumerate() {
            counts.clear();
            let mut len = 0;
            for token in tokenize(text) {
                let next_id = vocab.len() as u32;
                let id = *vocab.entry(token).or_insert(next_id);
                if id == next_id {
                    postings.push(Vec::new());
                }
                *counts.entry(id).or_insert(0) += 1;
                len += 1;
            }
            for (&id, &tf) in &counts {
                postings[id as usize].push((doc as u32, tf));
            }
            doc_len.push(len);
        }
        let total: u64 = doc_len.iter().map(|&l| u64::from(l)).sum();
        let avgdl = if doc_len.is_empty() { 0.0 } else { total as f32 / doc_len.len() as f32 };
        Bm25 { params, vocab, postings, doc_len, avgdl }
    }

    /// Number of documents.
    pub fn len(&self) -> usize {
        self.doc_len.len()
    }

    /// Whether there are no documents.
    pub fn is_empty(&self) -> bool {
        self.doc_len.is_empty()
    }

    /// Distinct tokens in the documents.
    pub fn vocabulary_size(&self) -> usize {
        self.vocab.len()
    }

    /// The inverse document frequency of a token (as [`tokenize`] yields it); 0 for unknown ones.
    pub fn idf(&self, token: &str) -> f32 {
        match self.vocab.get(token) {
            Some(&id) => self.idf_of(id),
            None => 0.0,
        }
    }

    /// Every document that shares a token with `query`, with its score, in document order.
    pub fn scores(&self, query: &str) -> Vec<(usize, f32)> {
        // Dense accumulators: a common token's postings cover a third of WordNet's glosses.
        let mut acc = vec![0f32; self.doc_len.len()];
        let mut touched: Vec<u32> = Vec::new();
        let Bm25Params { k1, b } = self.params;
        for token in tokenize(query) {
            let Some(&id) = self.vocab.get(&token) else {
                continue;
            };
            let idf = self.idf_of(id);
            for &(doc, tf) in &self.postings[id as usize] {
                let tf = tf as f32;
                let norm = 1.0 - b + b * self.doc_len[doc as usize] as f32 / self.avgdl;
                let slot = &mut acc[doc as usize];
                // Every term's contribution is positive (idf > 0, tf ≥ 1), so 0 means untouched.
                if *slot == 0.0 {
                    touched.push(doc);
                }
                *slot += idf * tf * (k1 + 1.0) / (tf + k1 * norm);
            }
        }
        touched.sort_unstable();
        touched.into_iter().map(|doc| (doc as usize, acc[doc as usize])).collect()
    }

    /// The best `k` documents for `query`, best first, ties to the lower document number.
    pub fn search(&self, query: &str, k: usize) -> Vec<(usize, f32)> {
        let mut scores = self.scores(query);
        super::search::keep_top_k(&mut scores, k);
        scores
    }

    fn idf_of(&self, id: u32) -> f32 {
        let n = self.doc_len.len() as f32;
        let df = self.postings[id as usize].len() as f32;
        (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
    }
}

/// The tokens BM25 sees: maximal runs of alphanumeric characters, lowercased.
pub fn tokenize(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric()).filter(|t| !t.is_empty()).map(str::to_lowercase)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCS: [&str; 4] = ["the cat sat on the mat", "a dog chased the cat", "dogs and cats", "a bank of the river"];

    /// Checks the top documents and scores of `query` against hand-computed values.
    #[track_caller]
    fn check(index: &Bm25, query: &str, expect: &[(usize, f64)]) {
        let found = index.search(query, 10);
        assert_eq!(found.len(), expect.len(), "{query:?}: {found:?}");
        for ((doc, score), (e_doc, e_score)) in found.iter().zip(expect) {
            assert_eq!(doc, e_doc, "{query:?}: {found:?}");
            assert!(
                (f64::from(*score) - e_score).abs() < 1e-5,
                "{query:?}: doc {doc} scored {score}, expected {e_score}"
            );
        }
    }

    #[test]
    fn tokens_are_lowercased_alphanumeric_runs() {
        let tokens: Vec<String> = tokenize("Don't run--you'll be OUT of breath; 1879-1955").collect();
        assert_eq!(tokens, ["don", "t", "run", "you", "ll", "be", "out", "of", "breath", "1879", "1955"]);
    }

    #[test]
    fn scores_match_the_formula_by_hand() {
        let index = Bm25::new(DOCS, Bm25Params::default());
        // Lengths 6, 5, 3, 5: avgdl = 19 / 4 = 4.75. N = 4.
        assert_eq!(index.len(), 4);
        assert_eq!(index.vocabulary_size(), 14);
        // "cat" is in docs 0 and 1: idf = ln(1 + (4 - 2 + 0.5) / 2.5) = ln 2.
        let idf_cat = 2f64.ln();
        assert!((f64::from(index.idf("cat")) - idf_cat).abs() < 1e-6);
        // "river" is in doc 3 only: idf = ln(1 + 3.5 / 1.5) = ln(10 / 3).
        let idf_river = (10f64 / 3.0).ln();
        let tf_part = |tf: f64, len: f64| tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * len / 4.75));
        // "cat": doc 1 (length 5) beats doc 0 (length 6) at tf 1; "cats" is another token.
        check(&index, "cat", &[(1, idf_cat * tf_part(1.0, 5.0)), (0, idf_cat * tf_part(1.0, 6.0))]);
        // "the" appears twice in doc 0, once in docs 1 and 3: idf = ln(1 + 1.5 / 3.5).
        let idf_the = (1.0f64 + 1.5 / 3.5).ln();
        check(
            &index,
            "The river",
            &[
                (3, idf_the * tf_part(1.0, 5.0) + idf_river * tf_part(1.0, 5.0)),
                (0, idf_the * tf_part(2.0, 6.0)),
                (1, idf_the * tf_part(1.0, 5.0)),
            ],
        );
        // A repeated query token counts twice; unknown tokens count nothing.
        check(&index, "river river zebra", &[(3, 2.0 * idf_river * tf_part(1.0, 5.0))]);
        check(&index, "zebra", &[]);
        // Ties (docs 1 and 3 both have "a" once at length 5) go to the lower number.
        let found = index.search("a", 1);
        assert_eq!(found.iter().map(|(d, _)| *d).collect::<Vec<_>>(), [1]);
    }
}
