//! Non-overlapping max pooling over NCHW planes, forward and backward.
//!
//! The common 2 x 2 window runs on [`Lanes`] vectors on AVX2 and AVX-512: a vector of outputs
//! reads twice as many inputs per row and splits them into even and odd columns. Comparisons
//! and divisions are exact, and the vector kernels compare in the portable loops' order, so
//! every path gives the same bits, ties and signed zeros included. Other window sizes run the
//! portable loops everywhere.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::cpu::{active_isa, dispatch, worth_splitting, IsaLevel, Output};
use super::simd::{with_lanes, Lanes};

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
    pool_plane_on(active_isa(), src, g, out);
}

/// [`pool_plane`] on the kernels of `isa`.
fn pool_plane_on(isa: IsaLevel, src: &[f32], g: &PoolGeometry, out: &mut [MaybeUninit<f32>]) {
    let isa = if g.k == 2 { isa } else { IsaLevel::Portable };
    // SAFETY: `isa` runs on this CPU: it is the active ISA or, in tests, a supported one.
    with_lanes!(isa,
        V => unsafe { pool_plane_2x2::<V>(src, g, out) },
        portable => pool_plane_portable(src, g, out)
    );
}

/// [`pool_plane`] for 2 x 2 windows, a vector of outputs at a time.
///
/// # Safety
/// The CPU must run `V`'s instruction set, and `g.k` must be 2.
#[inline(always)]
unsafe fn pool_plane_2x2<V: Lanes>(src: &[f32], g: &PoolGeometry, out: &mut [MaybeUninit<f32>]) {
    let ow = g.ow();
    for (oy, orow) in out.chunks_exact_mut(ow).enumerate() {
        let (r0, r1) = src[2 * oy * g.w..(2 * oy + 2) * g.w].split_at(g.w);
        for ox in (0..ow).step_by(V::LANES) {
            let n = (ow - ox).min(V::LANES);
            // SAFETY: the `2 n` inputs from column `2 ox` lie inside each row.
            let ((a0, a1), (b0, b1)) =
                unsafe { (V::load_pairs(r0[2 * ox..].as_ptr(), 2 * n), V::load_pairs(r1[2 * ox..].as_ptr(), 2 * n)) };
            a0.max_keep(a1).max_keep(b0.max_keep(b1)).store(orow[ox..].as_mut_ptr().cast(), n);
        }
    }
}

/// [`pool_plane`] for the baseline ISA and for windows other than 2 x 2.
fn pool_plane_portable(src: &[f32], g: &PoolGeometry, out: &mut [MaybeUninit<f32>]) {
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
    forward_on(active_isa(), x, g)
}

/// [`forward`] on the kernels of `isa`.
fn forward_on(isa: IsaLevel, x: &[f32], g: &PoolGeometry) -> Vec<f32> {
    let (op, ip) = (g.oh() * g.ow(), g.h * g.w);
    let mut out = Output::new(g.planes * op);
    let dst = out.ptr();
    let plane = |pl: usize| {
        // SAFETY: each call owns output plane `pl` and fills it completely.
        let out = unsafe { std::slice::from_raw_parts_mut(dst.at(pl * op).cast::<MaybeUninit<f32>>(), op) };
        pool_plane_on(isa, &x[pl * ip..(pl + 1) * ip], g, out);
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
    backward_on(active_isa(), x, y, dy, g, relu)
}

/// [`backward`] on the kernels of `isa`.
fn backward_on(isa: IsaLevel, x: &[f32], y: &[f32], dy: &[f32], g: &PoolGeometry, relu: bool) -> Vec<f32> {
    let (op, ip) = (g.oh() * g.ow(), g.h * g.w);
    let mut dx = Output::new(g.planes * ip);
    let dst = dx.ptr();
    (0..g.planes).into_par_iter().with_min_len(PLANES_PER_TASK).for_each(|pl| {
        // SAFETY: this task owns input-gradient plane `pl` and fills it completely.
        let plane = unsafe { std::slice::from_raw_parts_mut(dst.at(pl * ip).cast::<MaybeUninit<f32>>(), ip) };
        let range = pl * op..(pl + 1) * op;
        let (src, ym, gm) = (&x[pl * ip..(pl + 1) * ip], &y[range.clone()], &dy[range]);
        let isa = if g.k == 2 { isa } else { IsaLevel::Portable };
        // SAFETY: as in `pool_plane_on`.
        with_lanes!(isa,
            V => unsafe { unpool_plane_2x2::<V>(src, ym, gm, g, relu, plane) },
            portable => unpool_plane(src, ym, gm, g, relu, plane)
        );
    });
    // SAFETY: every element was written above.
    unsafe { dx.assume_init() }
}

/// The backward pass of [`pool_plane`] for one plane and 2 x 2 windows, a vector of windows
/// at a time, with the same comparisons, counts and division as [`unpool_plane`].
///
/// # Safety
/// The CPU must run `V`'s instruction set, and `g.k` must be 2.
#[inline(always)]
unsafe fn unpool_plane_2x2<V: Lanes>(
    src: &[f32],
    ym: &[f32],
    gm: &[f32],
    g: &PoolGeometry,
    relu: bool,
    out: &mut [MaybeUninit<f32>],
) {
    let (oh, ow) = (g.oh(), g.ow());
    if 2 * oh != g.h || 2 * ow != g.w {
        out.fill(MaybeUninit::new(0.0));
    }
    let (zero, one) = (V::splat(0.0), V::splat(1.0));
    for oy in 0..oh {
        let (r0, r1) = src[2 * oy * g.w..(2 * oy + 2) * g.w].split_at(g.w);
        let (d0, d1) = out[2 * oy * g.w..(2 * oy + 2) * g.w].split_at_mut(g.w);
        for ox in (0..ow).step_by(V::LANES) {
            let n = (ow - ox).min(V::LANES);
            let at = oy * ow + ox;
            // SAFETY: `n` windows from `ox` lie inside the rows, `2 n` inputs from `2 ox`.
            let (m, dy, (a0, a1), (b0, b1)) = unsafe {
                (
                    V::load(ym[at..].as_ptr(), n),
                    V::load(gm[at..].as_ptr(), n),
                    V::load_pairs(r0[2 * ox..].as_ptr(), 2 * n),
                    V::load_pairs(r1[2 * ox..].as_ptr(), 2 * n),
                )
            };
            let ties = a0.where_eq(m, one).add(a1.where_eq(m, one)).add(b0.where_eq(m, one)).add(b1.where_eq(m, one));
            // No tie at all only happens for a NaN maximum; with `relu`, a window that is not
            // positive passed nothing forward.
            let mut share = ties.where_gt(zero, dy.div(ties));
            if relu {
                share = m.where_gt(zero, share);
            }
            let (p0, p1) = (d0[2 * ox..].as_mut_ptr().cast(), d1[2 * ox..].as_mut_ptr().cast());
            V::store_pairs(p0, a0.where_eq(m, share), a1.where_eq(m, share), 2 * n);
            V::store_pairs(p1, b0.where_eq(m, share), b1.where_eq(m, share), 2 * n);
        }
    }
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

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::super::simd::supported_levels;
    use super::*;

    /// Runs both passes on every ISA this CPU has and requires the portable path's bits. Inputs
    /// are drawn from a few values, signed zeros and a NaN among them, so windows tie often.
    #[track_caller]
    fn check(planes: usize, h: usize, w: usize, k: usize) {
        let g = PoolGeometry { planes, h, w, k };
        let mut rng = StdRng::seed_from_u64((planes * h * w * k) as u64);
        let pick = [-1.0, -0.0, 0.0, 0.5, 1.0, 2.0, f32::NAN];
        let x: Vec<f32> =
            (0..planes * h * w).map(|i| if i % 97 == 5 { f32::NAN } else { pick[rng.random_range(0..6)] }).collect();
        let dy: Vec<f32> = (0..planes * g.oh() * g.ow()).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let want = forward_on(IsaLevel::Portable, &x, &g);
        let want_dx = |relu| backward_on(IsaLevel::Portable, &x, &want, &dy, &g, relu);
        let want_dx = [want_dx(false), want_dx(true)];
        for isa in supported_levels() {
            let what = format!("{isa:?} {planes}x{h}x{w} window {k}");
            same_bits(&forward_on(isa, &x, &g), &want, &format!("forward {what}"));
            for (relu, want_dx) in [false, true].into_iter().zip(&want_dx) {
                same_bits(
                    &backward_on(isa, &x, &want, &dy, &g, relu),
                    want_dx,
                    &format!("backward relu {relu} {what}"),
                );
            }
        }
    }

    /// Equal bits, or NaN on both sides.
    #[track_caller]
    fn same_bits(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()), "{what} at {i}: {a:?} vs {b:?}");
        }
    }

    #[test]
    fn every_isa_gives_the_portable_bits() {
        check(3, 24, 24, 2);
        check(2, 7, 9, 2);
        check(1, 2, 66, 2);
        check(5, 3, 31, 2);
        check(2, 5, 5, 3);
        check(1, 1, 2, 2);
    }
}
