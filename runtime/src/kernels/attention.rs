//! Multi-head self-attention of a BERT-style encoder over sequences stored back to back.
//!
//! The usual batched form pads every sequence to the longest one and masks the padding, so a
//! batch pays for its longest member in every sequence and head. Here each (sequence, head) is
//! its own task over only its real tokens, run in parallel with rayon: nothing is padded, and a
//! sequence's result does not depend on what it is batched with.
//!
//! One head is two products on the packed-product tiles, arranged so that neither needs a
//! transposed copy of anything large. Scores are computed transposed, `Sᵀ = K · Qᵀ` (keys as
//! rows, queries as columns), which puts the softmax reduction down the columns, where it
//! vectorises across queries without horizontal sums. `Sᵀ` rows are then directly the panels of
//! the second product, `Cᵀ = Vᵀ · Sᵀ` (one row per head dimension), whose left operand `Vᵀ` is
//! read in place with strides. The softmax normalisation is applied to the `d x L` context
//! rather than the `L x L` probabilities.

use std::cell::RefCell;
use std::ops::Range;

use candle_core::{bail, Result};
use rayon::prelude::*;

use super::cpu::{self, SharedMut};
use super::packed_gemm::{on_isa, product, with_pack_scratch, Finish, Kernel, Panels};
use super::tile512::Strided;
use super::vmath;

thread_local! {
    /// Per-thread buffers of one head: transposed queries, scores, context and column sums.
    static HEAD_SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Below this many multiply-adds in all heads together, attention runs on the calling thread.
const SPLIT_MIN_WORK: usize = 1 << 16;

/// Scaled dot-product self-attention of every sequence and head.
///
/// `qkv` holds one row of `3 * hidden` floats per token: the query, key and value projections
/// side by side, each split into `heads` heads of `hidden / heads` consecutive floats (the
/// layout of a fused QKV projection of a Hugging Face BERT). `seqs` are the token ranges of
/// the sequences, in order and disjoint; tokens attend only within their sequence. Writes each
/// token's context, heads side by side, into its row of `ctx` (`hidden` floats per token).
pub fn self_attention(qkv: &[f32], hidden: usize, heads: usize, seqs: &[Range<usize>], ctx: &mut [f32]) -> Result<()> {
    self_attention_with(Kernel::best(), qkv, hidden, heads, seqs, ctx)
}

/// [`self_attention`] on a given tile kernel, which the CPU must support.
pub(crate) fn self_attention_with(
    kernel: Kernel,
    qkv: &[f32],
    hidden: usize,
    heads: usize,
    seqs: &[Range<usize>],
    ctx: &mut [f32],
) -> Result<()> {
    if heads == 0 || !hidden.is_multiple_of(heads) {
        bail!("attention: {heads} heads do not divide the width {hidden}")
    }
    let tokens = ctx.len() / hidden.max(1);
    if ctx.len() != tokens * hidden || qkv.len() != tokens * 3 * hidden {
        bail!(
            "attention: qkv holds {} floats and ctx {}, expected 3 x and 1 x {tokens} x {hidden}",
            qkv.len(),
            ctx.len()
        )
    }
    let mut end = 0;
    for r in seqs {
        if r.start < end || r.end < r.start || r.end > tokens {
            bail!("attention: sequence {r:?} is out of order, overlapping or past the {tokens} tokens")
        }
        end = r.end;
    }
    let d = hidden / heads;
    let work: usize = seqs.iter().map(|r| 2 * r.len() * r.len() * d).sum::<usize>() * heads;
    let (q, out) = (qkv.as_ptr() as usize, SharedMut(ctx.as_mut_ptr()));
    let task = |t: usize| {
        let (seq, h) = (seqs[t / heads].clone(), t % heads);
        HEAD_SCRATCH.with(|s| {
            with_pack_scratch(|pack| {
                // SAFETY: the checks above keep every token of `seq` inside `qkv` and `ctx`;
                // sequences are disjoint, so this task alone writes head h of their rows.
                unsafe { head(kernel, q as *const f32, hidden, d, h, seq, out, &mut s.borrow_mut(), pack) }
            })
        })
    };
    if cpu::threads() > 1 && work >= SPLIT_MIN_WORK {
        (0..seqs.len() * heads).into_par_iter().for_each(task);
    } else {
        (0..seqs.len() * heads).for_each(task);
    }
    Ok(())
}

/// Attention of head `h` (width `d`) within the tokens `seq`.
///
/// # Safety
/// `qkv` must hold rows of `3 * hidden` floats for every token of `seq`, `ctx` rows of `hidden`
/// floats for them, and no other thread may write head `h` of those rows of `ctx`.
#[allow(clippy::too_many_arguments)]
unsafe fn head(
    kernel: Kernel,
    qkv: *const f32,
    hidden: usize,
    d: usize,
    h: usize,
    seq: Range<usize>,
    ctx: SharedMut,
    scratch: &mut Vec<f32>,
    pack: &mut Vec<f32>,
) {
    let l = seq.len();
    if l == 0 {
        return;
    }
    let w = 3 * hidden;
    let nr = kernel.nr();
    // Columns (queries) padded to whole panels, so every panel row is readable.
    let ldq = l.div_ceil(nr) * nr;
    let need = 2 * d * ldq + l * ldq + 2 * ldq;
    if scratch.len() < need {
        scratch.resize(need, 0.0);
    }
    let (q_t, rest) = scratch[..need].split_at_mut(d * ldq);
    let (s_t, rest) = rest.split_at_mut(l * ldq);
    let (c_t, rest) = rest.split_at_mut(d * ldq);
    let (col_max, col_sum) = rest.split_at_mut(ldq);
    let base = qkv.wrapping_add(seq.start * w + h * d);
    let scale = 1.0 / (d as f32).sqrt();
    on_isa!(kernel => {
        // Qᵀ, zero padded past the last query.
        for (dd, row) in q_t.chunks_exact_mut(ldq).enumerate() {
            for (i, v) in row.iter_mut().enumerate() {
                // SAFETY: token i < l of `seq`, query dimension dd < d of head h.
                *v = if i < l { unsafe { *base.add(i * w + dd) } } else { 0.0 };
            }
        }
        let keys = Strided { ptr: base.wrapping_add(hidden), rs: w, cs: 1 };
        // SAFETY: keys are readable for l rows of d floats, Qᵀ holds d rows of whole panels,
        // and Sᵀ is this thread's l x ldq buffer.
        unsafe {
            let q_panels = Panels { ptr: q_t.as_ptr(), ps: nr, ld: ldq };
            product(kernel, (l, l, d), keys, q_panels, s_t.as_mut_ptr(), ldq, false, Finish::default(), pack);
        }
        // Softmax of every column (query) over the rows (keys); the padding columns become
        // harmless finite values, and are never stored.
        for row in s_t.chunks_exact_mut(ldq) {
            row[l..].fill(0.0);
        }
        col_max.fill(f32::NEG_INFINITY);
        for row in s_t.chunks_exact(ldq) {
            for (m, &v) in col_max.iter_mut().zip(row) {
                *m = if v > *m { v } else { *m };
            }
        }
        col_sum.fill(0.0);
        for row in s_t.chunks_exact_mut(ldq) {
            for ((v, &m), s) in row.iter_mut().zip(col_max.iter()).zip(col_sum.iter_mut()) {
                *v = vmath::exp((*v - m) * scale);
                *s += *v;
            }
        }
        // Cᵀ = Vᵀ · P, with Vᵀ read in place: element (dimension r, key j) is v[j][r].
        let values = Strided { ptr: base.wrapping_add(2 * hidden), rs: 1, cs: w };
        // SAFETY: values are readable for l keys of d floats; Sᵀ holds l rows of whole panels;
        // Cᵀ is this thread's d x ldq buffer.
        unsafe {
            let p_panels = Panels { ptr: s_t.as_ptr(), ps: nr, ld: ldq };
            product(kernel, (d, l, l), values, p_panels, c_t.as_mut_ptr(), ldq, false, Finish::default(), pack);
        }
        for (i, s) in col_sum.iter_mut().enumerate().take(l) {
            *s = 1.0 / *s;
            // SAFETY: the caller gives this task head h of the rows of `seq` in `ctx`.
            let dst = unsafe { std::slice::from_raw_parts_mut(ctx.at((seq.start + i) * hidden + h * d), d) };
            for (dd, o) in dst.iter_mut().enumerate() {
                *o = c_t[dd * ldq + i] * *s;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Attention of one sequence, straight from the definition, in f64.
    fn reference(qkv: &[f32], hidden: usize, heads: usize, seq: Range<usize>, ctx: &mut [f32]) {
        let (d, w) = (hidden / heads, 3 * hidden);
        for h in 0..heads {
            for i in seq.clone() {
                let scores: Vec<f64> = seq
                    .clone()
                    .map(|j| {
                        let dot: f64 = (0..d)
                            .map(|x| qkv[i * w + h * d + x] as f64 * qkv[j * w + hidden + h * d + x] as f64)
                            .sum();
                        dot / (d as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = exps.iter().sum();
                for x in 0..d {
                    let v: f64 = seq
                        .clone()
                        .zip(&exps)
                        .map(|(j, e)| e / total * qkv[j * w + 2 * hidden + h * d + x] as f64)
                        .sum();
                    ctx[i * hidden + h * d + x] = v as f32;
                }
            }
        }
    }

    #[test]
    fn attention_matches_the_definition_for_ragged_sequences_on_every_kernel() {
        let mut rng = StdRng::seed_from_u64(11);
        for (hidden, heads) in [(32, 2), (36, 3), (16, 16), (384, 12)] {
            let lens = [1usize, 14, 5, 40, 33, 2];
            let tokens: usize = lens.iter().sum();
            let qkv: Vec<f32> = (0..tokens * 3 * hidden).map(|_| rng.random_range(-2.0..2.0)).collect();
            let mut seqs = Vec::new();
            let mut at = 0;
            for l in lens {
                seqs.push(at..at + l);
                at += l;
            }
            let mut want = vec![0f32; tokens * hidden];
            for s in &seqs {
                reference(&qkv, hidden, heads, s.clone(), &mut want);
            }
            for kernel in Kernel::supported() {
                let mut got = vec![f32::NAN; tokens * hidden];
                self_attention_with(kernel, &qkv, hidden, heads, &seqs, &mut got).unwrap();
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!((g - w).abs() < 2e-5, "{kernel:?} width {hidden}: element {i}: {g} vs {w}");
                }
            }
        }
    }

    #[test]
    fn attention_checks_its_operands() {
        let qkv = vec![0f32; 4 * 3 * 8];
        let mut ctx = vec![0f32; 4 * 8];
        let (all, too_many) = ([Range { start: 0, end: 4 }], [Range { start: 0, end: 5 }]);
        assert!(self_attention(&qkv, 8, 3, &all, &mut ctx).is_err());
        assert!(self_attention(&qkv, 8, 2, &too_many, &mut ctx).is_err());
        assert!(self_attention(&qkv, 8, 2, &[0..3, 2..4], &mut ctx).is_err());
        assert!(self_attention(&qkv[1..], 8, 2, &all, &mut ctx).is_err());
        self_attention(&qkv, 8, 2, &[0..1, 1..4], &mut ctx).unwrap();
    }
}
