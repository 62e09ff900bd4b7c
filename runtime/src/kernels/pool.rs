//! Non-overlapping max pooling over NCHW planes, forward and backward.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::cpu::{dispatch, worth_splitting, Output};

/// Planes handed to one worker at a time; a pooled plane is too little work on its own.
const PLANES_PER_TASK: usize = 16;

/// Sizes of one pooling call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolGeometry {
    /// Images times channels.
    pub planes: usize,
    pub h: usize,
    pub w: usize,
    /// Window side and stride.
    pub k: usize,
}

impl PoolGeometry {
    pub(crate) fn oh(&self) -> usize {
        self.h / self.k
    }

    pub(crate) fn ow(&self) -> usize {
        self.w / self.k
    }
}

/// The larger value, keeping `a` unless `b` is strictly greater (candle's tie rule).
#[inline(always)]
fn max(a: f32, b: f32) -> f32 {
    if b > a {
        b
    } else {
        a
    }
}

/// Pools one `h x w` plane into `out` (`oh x ow`), writing every element.
pub(crate) fn pool_plane(src: &[f32], g: &PoolGeometry, out: &mut [MaybeUninit<f32>]) {
    let (ow, k) = (g.ow(), g.k);
    dispatch!({
        for (oy, orow) in out.chunks_exact_mut(ow).enumerate() {
            let rows = &src[oy * k * g.w..(oy * k + k) * g.w];
            if k == 2 {
                let (r0, r1) = rows.split_at(g.w);
                for (ox, o) in orow.iter_mut().enumerate() {
                    let (a, b) = (max(r0[2 * ox], r0[2 * ox + 1]), max(r1[2 * ox], r1[2 * ox + 1]));
                    *o = MaybeUninit::new(max(a, b));
                }
                continue;
            }
            for (ox, o) in orow.iter_mut().enumerate() {
                let mut m = f32::NEG_INFINITY;
                for r in rows.chunks_exact(g.w) {
                    for &v in &r[ox * k..ox * k + k] {
                        m = max(m, v);
                    }
                }
                *o = MaybeUninit::new(m);
            }
        }
    });
}

/// Maximum over each `k x k` window; rows and columns past the last full window are dropped.
pub(crate) fn forward(x: &[f32], g: &PoolGeometry) -> Vec<f32> {
    let (op, ip) = (g.oh() * g.ow(), g.h * g.w);
    let mut out = Output::new(g.planes * op);
    let dst = out.ptr();
    let plane = |pl: usize| {
        // SAFETY: each call owns output plane `pl` and fills it completely.
        let out = unsafe { std::slice::from_raw_parts_mut(dst.at(pl * op).cast::<MaybeUninit<f32>>(), op) };
        pool_plane(&x[pl * ip..(pl + 1) * ip], g, out);
    };
    if worth_splitting(x.len()) {
        (0..g.planes).into_par_iter().with_min_len(PLANES_PER_TASK).for_each(plane);
    } else {
        (0..g.planes).for_each(plane);
    }
    // SAFETY: every output element was written above.
    unsafe { out.assume_init() }
}

/// Routes each window's gradient to the inputs equal to its maximum, split evenly between
/// ties, so the result is the exact derivative wherever the maximum is unique.
///
/// With `relu`, the pooled input is itself a ReLU output and windows whose maximum is not
/// positive pass nothing back, which folds the ReLU's derivative into the same sweep.
pub(crate) fn backward(x: &[f32], y: &[f32], dy: &[f32], g: &PoolGeometry, relu: bool) -> Vec<f32> {
    let (op, ip) = (g.oh() * g.ow(), g.h * g.w);
    let mut dx = Output::new(g.planes * ip);
    let dst = dx.ptr();
    (0..g.planes).into_par_iter().with_min_len(PLANES_PER_TASK).for_each(|pl| {
        // SAFETY: this task owns input-gradient plane `pl` and fills it completely.
        let plane = unsafe { std::slice::from_raw_parts_mut(dst.at(pl * ip).cast::<MaybeUninit<f32>>(), ip) };
        let range = pl * op..(pl + 1) * op;
        unpool_plane(&x[pl * ip..(pl + 1) * ip], &y[range.clone()], &dy[range], g, relu, plane);
    });
    // SAFETY: every element was written above.
    unsafe { dx.assume_init() }
}

/// The backward pass of [`pool_plane`] for one plane, writing every element of `out`.
fn unpool_plane(src: &[f32], ym: &[f32], gm: &[f32], g: &PoolGeometry, relu: bool, out: &mut [MaybeUninit<f32>]) {
    let (oh, ow, k) = (g.oh(), g.ow(), g.k);
    // Rows and columns no window covers get no gradient.
    if oh * k != g.h || ow * k != g.w {
        out.fill(MaybeUninit::new(0.0));
    }
    dispatch!({
        for oy in 0..oh {
            let (yrow, grow) = (&ym[oy * ow..(oy + 1) * ow], &gm[oy * ow..(oy + 1) * ow]);
            let share = |ox: usize, ties: usize| {
                let m = yrow[ox];
                if ties == 0 || (relu && m <= 0.0) {
                    0.0
                } else {
                    grow[ox] / ties as f32
                }
            };
            if k == 2 {
                let (r0, r1) = (&src[2 * oy * g.w..(2 * oy + 1) * g.w], &src[(2 * oy + 1) * g.w..(2 * oy + 2) * g.w]);
                let (d0, rest) = out[2 * oy * g.w..(2 * oy + 2) * g.w].split_at_mut(g.w);
                for (ox, &m) in yrow.iter().enumerate() {
                    let hits = [r0[2 * ox] == m, r0[2 * ox + 1] == m, r1[2 * ox] == m, r1[2 * ox + 1] == m];
                    let s = share(ox, hits.iter().filter(|&&h| h).count());
                    let pick = |h: bool| MaybeUninit::new(if h { s } else { 0.0 });
                    d0[2 * ox] = pick(hits[0]);
                    d0[2 * ox + 1] = pick(hits[1]);
                    rest[2 * ox] = pick(hits[2]);
                    rest[2 * ox + 1] = pick(hits[3]);
                }
                continue;
            }
            for (ox, &m) in yrow.iter().enumerate() {
                let mut ties = 0;
                for r in 0..k {
                    let at = (oy * k + r) * g.w + ox * k;
                    ties += src[at..at + k].iter().filter(|&&v| v == m).count();
                }
                let s = share(ox, ties);
                for r in 0..k {
                    let at = (oy * k + r) * g.w + ox * k;
                    for (o, &v) in out[at..at + k].iter_mut().zip(&src[at..at + k]) {
                        *o = MaybeUninit::new(if v == m { s } else { 0.0 });
                    }
                }
            }
        }
    });
}
