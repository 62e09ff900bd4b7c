//! Ranking metrics with graded relevance: nDCG@k, recall@k and MRR@k.
//!
//! A ranking is a list of document numbers, best first; judgments are `(document, grade)` pairs,
//! grade 2 for the query's own synset and 1 for its direct hypernyms and hyponyms. Documents
//! without a judgment have grade 0.
//!
//! - **nDCG@k**: DCG@k = Σ_{i=1..k} grade(doc_i) / log2(i + 1), with linear gains as trec_eval's
//!   `ndcg_cut` computes them, divided by the DCG@k of the ideal ranking of the query's judgments.
//! - **recall@k**: the fraction of the query's grade-2 documents found in the top k. Every WordNet
//!   query has exactly one (its own synset's gloss), so this is the fraction of queries whose own
//!   gloss is in the top k.
//! - **MRR@k**: 1 / the rank of the first grade-2 document if it is in the top k, else 0.
//!
//! Each is averaged over queries with equal weight.

/// The grade of the query's own synset.
pub const OWN: u8 = 2;

/// nDCG@k of one ranking.
pub fn ndcg_at(ranking: &[usize], judgments: &[(usize, u8)], k: usize) -> f64 {
    let grade_of = |doc: usize| judgments.iter().find(|(d, _)| *d == doc).map_or(0, |(_, g)| *g);
    let found = dcg(ranking.iter().take(k).map(|&doc| grade_of(doc)));
    let mut ideal: Vec<u8> = judgments.iter().map(|(_, g)| *g).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg = dcg(ideal.into_iter().take(k));
    if idcg > 0.0 {
        found / idcg
    } else {
        0.0
    }
}

/// recall@k of one ranking: the fraction of grade-2 documents in the top k (0 when there are none).
pub fn recall_at(ranking: &[usize], judgments: &[(usize, u8)], k: usize) -> f64 {
    let own: Vec<usize> = judgments.iter().filter(|(_, g)| *g == OWN).map(|(d, _)| *d).collect();
    if own.is_empty() {
        return 0.0;
    }
    let found = ranking.iter().take(k).filter(|doc| own.contains(doc)).count();
    found as f64 / own.len() as f64
}

/// MRR@k of one ranking: 1 / the rank of the first grade-2 document within the top k, else 0.
pub fn mrr_at(ranking: &[usize], judgments: &[(usize, u8)], k: usize) -> f64 {
    let is_own = |doc: &usize| judgments.iter().any(|(d, g)| d == doc && *g == OWN);
    match ranking.iter().take(k).position(is_own) {
        Some(i) => 1.0 / (i + 1) as f64,
        None => 0.0,
    }
}

/// The benchmark's four figures, averaged over `n` queries.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Metrics {
    /// Mean nDCG@10.
    pub ndcg_at_10: f64,
    /// Mean recall@1.
    pub recall_at_1: f64,
    /// Mean recall@10.
    pub recall_at_10: f64,
    /// Mean MRR@10.
    pub mrr_at_10: f64,
    /// Queries averaged over.
    pub n: usize,
}

impl Metrics {
    /// Averages the figures of each `(ranking, judgments)` pair.
    pub fn of<'a>(runs: impl IntoIterator<Item = (&'a [usize], &'a [(usize, u8)])>) -> Metrics {
        let mut sum = Metrics::default();
        for (ranking, judgments) in runs {
            sum.ndcg_at_10 += ndcg_at(ranking, judgments, 10);
            sum.recall_at_1 += recall_at(ranking, judgments, 1);
            sum.recall_at_10 += recall_at(ranking, judgments, 10);
            sum.mrr_at_10 += mrr_at(ranking, judgments, 10);
            sum.n += 1;
        }
        if sum.n == 0 {
            return sum;
        }
        let n = sum.n as f64;
        Metrics {
            ndcg_at_10: sum.ndcg_at_10 / n,
            recall_at_1: sum.recall_at_1 / n,
            recall_at_10: sum.recall_at_10 / n,
            mrr_at_10: sum.mrr_at_10 / n,
            n: sum.n,
        }
    }
}

fn dcg(grades: impl Iterator<Item = u8>) -> f64 {
    grades.enumerate().map(|(i, grade)| f64::from(grade) / ((i + 2) as f64).log2()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks `[nDCG@k, recall@k, MRR@k]` of one ranking against hand-computed values.
    #[track_caller]
    fn check(ranking: &[usize], judgments: &[(usize, u8)], k: usize, expect: [f64; 3]) {
        let found = [ndcg_at(ranking, judgments, k), recall_at(ranking, judgments, k), mrr_at(ranking, judgments, k)];
        for (name, (f, e)) in ["ndcg", "recall", "mrr"].iter().zip(found.iter().zip(expect)) {
            assert!((f - e).abs() < 1e-12, "{name}@{k} of {ranking:?} under {judgments:?}: {f}, expected {e}");
        }
    }

    #[test]
    fn hand_computed_rankings() {
        // Own document 7, hypernym 3, hyponym 9.
        let judged = [(7, 2), (3, 1), (9, 1)];
        // The ideal DCG@10: 2/log2(2) + 1/log2(3) + 1/log2(4) = 2 + 0.6309297535714575 + 0.5.
        let ideal = 2.0 + 0.630_929_753_571_457_5 + 0.5;
        check(&[7, 3, 9, 1], &judged, 10, [1.0, 1.0, 1.0]);
        // Own document at rank 2, a hyponym at rank 1: DCG = 1/1 + 2/log2(3) = 1 + 1.2618595071429148.
        check(&[9, 7, 5], &judged, 10, [(1.0 + 1.261_859_507_142_914_8) / ideal, 1.0, 0.5]);
        check(&[9, 7, 5], &judged, 1, [1.0 / 2.0, 0.0, 0.0]);
        // Own document at rank 4 only: DCG = 2/log2(5) = 0.8613531161467861.
        check(&[1, 2, 5, 7], &judged, 10, [0.861_353_116_146_786_1 / ideal, 1.0, 0.25]);
        // Own document at rank 11: outside every cut-off.
        let far: Vec<usize> = (100..110).chain([7]).collect();
        check(&far, &judged, 10, [0.0, 0.0, 0.0]);
        // Nothing judged, or nothing retrieved.
        check(&[1, 2], &[], 10, [0.0, 0.0, 0.0]);
        check(&[], &judged, 10, [0.0, 0.0, 0.0]);
    }

    #[test]
    fn the_mean_weighs_queries_equally() {
        let hit: Vec<usize> = vec![1, 2];
        let miss: Vec<usize> = vec![3, 2];
        let judged = [(1, 2)];
        let m = Metrics::of([(hit.as_slice(), &judged[..]), (miss.as_slice(), &judged[..])]);
        assert_eq!(m.n, 2);
        assert!((m.recall_at_1 - 0.5).abs() < 1e-12 && (m.recall_at_10 - 0.5).abs() < 1e-12, "{m:?}");
        assert!((m.mrr_at_10 - 0.5).abs() < 1e-12 && (m.ndcg_at_10 - 0.5).abs() < 1e-12, "{m:?}");
        assert_eq!(Metrics::of([]), Metrics::default());
    }
}
