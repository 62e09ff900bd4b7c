//! Exact top-k search: every query against every document, no approximation.
//!
//! Dense scores are dot products of unit vectors (cosines), computed block by block as matrix
//! products, so a block of queries reads the corpus matrix once instead of once per query.
//! Ties go to the lower document number, so a ranking never depends on thread timing.

use candle_core::{Device, Tensor};

use crate::{Error, Result};

/// Queries scored against the corpus per matrix product: 256 × 117,659 scores is 120 MB.
const QUERY_BLOCK: usize = 256;

/// Document vectors on the CPU, stored transposed (one column per document) so that every block
/// of queries multiplies a contiguous matrix.
pub struct DenseIndex {
    matrix_t: Tensor,
    n_docs: usize,
    dim: usize,
}

impl DenseIndex {
    /// Stacks document vectors, which must all have the same width.
    pub fn new(vectors: &[Vec<f32>]) -> Result<DenseIndex> {
        let dim = vectors.first().map_or(0, Vec::len);
        if let Some((i, v)) = vectors.iter().enumerate().find(|(_, v)| v.len() != dim) {
            return Err(Error::InvalidArgument(format!("document vector {i} has width {}, the first {dim}", v.len())));
        }
        let flat: Vec<f32> = vectors.iter().flatten().copied().collect();
        let matrix_t = Tensor::from_vec(flat, (vectors.len(), dim), &Device::Cpu)?.t()?.contiguous()?;
        Ok(DenseIndex { matrix_t, n_docs: vectors.len(), dim })
    }

    /// Number of documents.
    pub fn len(&self) -> usize {
        self.n_docs
    }

    /// Whether there are no documents.
    pub fn is_empty(&self) -> bool {
        self.n_docs == 0
    }

    /// The `k` documents with the largest dot product with each query, best first.
    pub fn search(&self, queries: &[Vec<f32>], k: usize) -> Result<Vec<Vec<(usize, f32)>>> {
        if let Some(q) = queries.iter().find(|q| q.len() != self.dim) {
            return Err(Error::InvalidArgument(format!(
                "a query vector has width {}, the documents {}",
                q.len(),
                self.dim
            )));
        }
        let mut results = Vec::with_capacity(queries.len());
        if self.n_docs == 0 {
            results.resize(queries.len(), Vec::new());
            return Ok(results);
        }
        for block in queries.chunks(QUERY_BLOCK) {
            let flat: Vec<f32> = block.iter().flatten().copied().collect();
            let q = Tensor::from_vec(flat, (block.len(), self.dim), &Device::Cpu)?;
            let scores = q.matmul(&self.matrix_t)?.flatten_all()?.to_vec1::<f32>()?;
            results.extend(scores.chunks_exact(self.n_docs).map(|row| top_k_of_row(row, k)));
        }
        Ok(results)
    }
}

/// The `k` best `(document, score)` pairs of one row of scores, in one pass that keeps a sorted
/// list of the best so far: the same answer as [`keep_top_k`] without materialising a pair per
/// document (a row of WordNet is 117,659 scores, and most are rejected by one comparison).
fn top_k_of_row(row: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut best: Vec<(usize, f32)> = Vec::with_capacity(k + 1);
    if k == 0 {
        return best;
    }
    for (doc, &score) in row.iter().enumerate() {
        let score = if score.is_nan() { f32::NEG_INFINITY } else { score };
        // Documents arrive in increasing order, so an equal score never displaces an earlier one.
        if best.len() == k && score <= best[k - 1].1 {
            continue;
        }
        let at = best.partition_point(|&(_, b)| b >= score);
        best.insert(at, (doc, score));
        best.truncate(k);
    }
    best
}

/// Keeps the `k` best `(document, score)` pairs, best first; ties go to the lower document number,
/// and NaN scores rank last.
pub fn keep_top_k(scored: &mut Vec<(usize, f32)>, k: usize) {
    let order = |a: &(usize, f32), b: &(usize, f32)| {
        let key = |s: f32| if s.is_nan() { f32::NEG_INFINITY } else { s };
        key(b.1).total_cmp(&key(a.1)).then(a.0.cmp(&b.0))
    };
    if k == 0 {
        scored.clear();
        return;
    }
    if scored.len() > k {
        scored.select_nth_unstable_by(k - 1, order);
        scored.truncate(k);
    }
    scored.sort_unstable_by(order);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(scores: &[f32], k: usize, expect: &[usize]) {
        let mut scored: Vec<(usize, f32)> = scores.iter().copied().enumerate().collect();
        keep_top_k(&mut scored, k);
        let found: Vec<usize> = scored.iter().map(|(d, _)| *d).collect();
        assert_eq!(found, expect, "top {k} of {scores:?}");
    }

    #[test]
    fn top_k_is_exact_and_breaks_ties_by_document() {
        check(&[0.1, 0.9, 0.5, 0.9, -1.0], 3, &[1, 3, 2]);
        check(&[0.1, 0.9, 0.5, 0.9, -1.0], 10, &[1, 3, 2, 0, 4]);
        check(&[0.5, 0.5, 0.5], 2, &[0, 1]);
        check(&[f32::NAN, 0.0, -3.0], 2, &[1, 2]);
        check(&[0.2, 0.1], 0, &[]);
    }

    #[test]
    fn the_one_pass_top_k_agrees_with_the_selection() {
        // Scores from a small set of values, so that ties are frequent, and a few NaNs.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for len in [0, 1, 7, 300] {
            let row: Vec<f32> = (0..len)
                .map(|_| match next() % 50 {
                    0 => f32::NAN,
                    v => (v % 9) as f32 / 8.0 - 0.5,
                })
                .collect();
            for k in [0, 1, 3, 10, 400] {
                let mut expect: Vec<(usize, f32)> = row.iter().copied().enumerate().collect();
                keep_top_k(&mut expect, k);
                let found = top_k_of_row(&row, k);
                let docs = |v: &[(usize, f32)]| v.iter().map(|(d, _)| *d).collect::<Vec<_>>();
                assert_eq!(docs(&found), docs(&expect), "top {k} of {row:?}");
            }
        }
    }

    #[test]
    fn dense_search_ranks_by_dot_product() {
        let docs = vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![0.6, 0.8], vec![0.0, 1.0]];
        let index = DenseIndex::new(&docs).unwrap();
        // More queries than one block, to cross a block boundary.
        let mut queries = vec![vec![0.0, 1.0]; QUERY_BLOCK + 1];
        queries[QUERY_BLOCK] = vec![1.0, 0.0];
        let found = index.search(&queries, 3).unwrap();
        assert_eq!(found.len(), QUERY_BLOCK + 1);
        let docs_of = |r: &[(usize, f32)]| r.iter().map(|(d, _)| *d).collect::<Vec<_>>();
        assert_eq!(docs_of(&found[0]), [1, 3, 2]);
        assert!((found[0][2].1 - 0.8).abs() < 1e-6);
        assert_eq!(docs_of(&found[QUERY_BLOCK]), [0, 2, 1]);
        assert!(index.search(&[vec![1.0]], 3).is_err());
        assert!(DenseIndex::new(&[vec![1.0], vec![1.0, 2.0]]).is_err());
    }
}
