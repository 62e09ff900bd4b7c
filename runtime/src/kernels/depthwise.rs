//! Direct kernels for convolutions where every output channel reads one input channel.
//!
//! A depthwise convolution does nine multiply-adds per output value, far too few to amortise
//! packing for a matrix product, so these kernels run over whole output rows instead. On AVX2
//! and AVX-512 each vector of outputs keeps its running sum in a register over every tap
//! ([`Lanes`], 8 or 16 lanes); elsewhere the portable loops add one tap at a time into the
//! output row and let the compiler vectorise them. Both do the same multiplies and adds in the
//! same order (no fused multiply-add), so every path gives the same bits, which keeps training
//! runs reproducible across CPUs.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::cpu::{active_isa, dispatch, for_each_task, IsaLevel, Output};
use super::geometry::Geometry;
use super::simd::{copy, with_lanes, Lanes};

/// Depthwise forward pass with the bias and optional ReLU applied in the same sweep.
pub(crate) fn forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &Geometry, relu: bool) -> Vec<f32> {
    forward_on(active_isa(), x, w, bias, g, relu)
}

/// Depthwise gradient with respect to the input.
pub(crate) fn grad_input(dy: &[f32], w: &[f32], g: &Geometry) -> Vec<f32> {
    grad_input_on(active_isa(), dy, w, g)
}

/// Depthwise gradients with respect to the weight and, when asked, the bias.
pub(crate) fn grad_weight(x: &[f32], dy: &[f32], g: &Geometry, with_bias: bool) -> (Vec<f32>, Vec<f32>) {
    grad_weight_on(active_isa(), x, dy, g, with_bias)
}

/// [`forward`] on the kernels of `isa`.
fn forward_on(isa: IsaLevel, x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &Geometry, relu: bool) -> Vec<f32> {
    let (mult, taps, op) = (g.cout_g(), g.kh * g.kw, g.out_plane());
    let mut out = Output::new(g.out_len());
    let dst = out.ptr();
    for_each_task(g.n * g.c_out, g.out_len() * taps, Vec::new, |buf, plane| {
        let (n, o) = (plane / g.c_out, plane % g.c_out);
        let c = o / mult;
        let src = &x[(n * g.c_in + c) * g.in_plane()..][..g.in_plane()];
        let wo = &w[o * taps..(o + 1) * taps];
        let b = bias.map_or(0.0, |b| b[o]);
        // SAFETY: this task owns output plane `plane`.
        let out = unsafe { std::slice::from_raw_parts_mut(dst.at(plane * op).cast::<MaybeUninit<f32>>(), op) };
        // SAFETY: `isa` runs on this CPU: it is the active ISA or, in tests, a supported one.
        with_lanes!(isa,
            V => unsafe { forward_plane::<V>(padded(src, g, buf, |d, s| copy::<V>(d, s)), wo, b, g, relu, out) },
            portable => forward_plane_portable(padded(src, g, buf, <[f32]>::copy_from_slice), wo, b, g, relu, out)
        );
    });
    // SAFETY: every plane was written in full above.
    unsafe { out.assume_init() }
}

/// One output plane from its padded input plane.
///
/// # Safety
/// The CPU must run `V`'s instruction set.
#[inline(always)]
unsafe fn forward_plane<V: Lanes>(
    src: &[f32],
    wo: &[f32],
    b: f32,
    g: &Geometry,
    relu: bool,
    out: &mut [MaybeUninit<f32>],
) {
    debug_assert!(src.len() >= (g.h + 2 * g.pad) * (g.w + 2 * g.pad) && out.len() == g.out_plane());
    let (src, out) = (src.as_ptr(), out.as_mut_ptr().cast::<f32>());
    let mut oy = 0;
    // SAFETY: the caller's contract; the plane sizes were checked above.
    unsafe {
        while oy + ROWS <= g.oh {
            forward_rows::<V, ROWS>(src, wo, b, g, relu, out, oy);
            oy += ROWS;
        }
        for oy in oy..g.oh {
            forward_rows::<V, 1>(src, wo, b, g, relu, out, oy);
        }
    }
}

/// Output rows computed together: their running sums are independent, so the adds of one
/// overlap the latency of another's, and each tap's weight is broadcast once for all of them.
const ROWS: usize = 4;

/// Output rows `oy .. oy + R` of one plane, a vector of columns at a time, each vector summing
/// its taps in a register.
///
/// # Safety
/// The CPU must run `V`'s instruction set; `src` holds the padded input plane, `out` the output
/// plane, and the rows exist.
#[inline(always)]
unsafe fn forward_rows<V: Lanes, const R: usize>(
    src: *const f32,
    wo: &[f32],
    b: f32,
    g: &Geometry,
    relu: bool,
    out: *mut f32,
    oy: usize,
) {
    let wp = g.w + 2 * g.pad;
    for ox in (0..g.ow).step_by(V::LANES) {
        let n = (g.ow - ox).min(V::LANES);
        let mut acc = [V::splat(b); R];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let wv = V::splat(wo[ky * g.kw + kx]);
                for (r, acc) in acc.iter_mut().enumerate() {
                    let at = ((oy + r) * g.stride + ky * g.dil) * wp + kx * g.dil + ox * g.stride;
                    // SAFETY: output `ox + n - 1` reads padded column `(ox + n - 1) * stride + kx * dil`
                    // of padded row `(oy + r) * stride + ky * dil`, both inside the plane.
                    *acc = acc.add(wv.mul(load_every::<V>(src.add(at), g.stride, n)));
                }
            }
        }
        for (r, mut acc) in acc.into_iter().enumerate() {
            if relu {
                acc = acc.relu();
            }
            acc.store(out.add((oy + r) * g.ow + ox), n);
        }
    }
}

/// [`forward_plane`] for the baseline ISA: one tap at a time over whole output rows.
fn forward_plane_portable(src: &[f32], wo: &[f32], b: f32, g: &Geometry, relu: bool, out: &mut [MaybeUninit<f32>]) {
    let wp = g.w + 2 * g.pad;
    out.fill(MaybeUninit::new(b));
    // SAFETY: every element was just initialised.
    let out = unsafe { &mut *(out as *mut [MaybeUninit<f32>] as *mut [f32]) };
    dispatch!({
        for (oy, row) in out.chunks_exact_mut(g.ow).enumerate() {
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let base = (oy * g.stride + ky * g.dil) * wp + kx * g.dil;
                    axpy_strided(row, wo[ky * g.kw + kx], &src[base..], g.stride);
                }
            }
            if relu {
                row.iter_mut().for_each(|v| *v = v.max(0.0));
            }
        }
    });
}

/// [`grad_input`] on the kernels of `isa`.
///
/// The vector kernels gather each input's gradient from the outputs it fed, in the order in
/// which the portable loops scatter it there; with a stride the outputs an input fed differ
/// from lane to lane, so strided convolutions keep the portable scatter.
fn grad_input_on(isa: IsaLevel, dy: &[f32], w: &[f32], g: &Geometry) -> Vec<f32> {
    let isa = if g.stride == 1 { isa } else { IsaLevel::Portable };
    let (mult, taps) = (g.cout_g(), g.kh * g.kw);
    let mut dx = vec![0f32; g.in_len()];
    if g.in_plane() == 0 {
        return dx;
    }
    dx.par_chunks_mut(g.in_plane()).enumerate().for_each_init(Vec::new, |scratch, (plane, dx_plane)| {
        let (n, c) = (plane / g.c_in, plane % g.c_in);
        let dy = &dy[(n * g.c_out + c * mult) * g.out_plane()..][..mult * g.out_plane()];
        let wc = &w[c * mult * taps..(c + 1) * mult * taps];
        // SAFETY: as in `forward_on`; the vector kernel only runs at unit stride.
        with_lanes!(isa,
            V => unsafe { grad_input_plane::<V>(dy, wc, g, scratch, dx_plane) },
            portable => grad_input_plane_portable(dy, wc, g, scratch, dx_plane)
        );
    });
    dx
}

/// One input plane's gradient from the `mult` output planes `dy` it fed, with their weights
/// `wc`: each vector of inputs sums, in a register, over the channels, then the taps from the
/// last row to the first and from the first column to the last.
///
/// # Safety
/// The CPU must run `V`'s instruction set; the convolution has unit stride.
#[inline(always)]
unsafe fn grad_input_plane<V: Lanes>(dy: &[f32], wc: &[f32], g: &Geometry, scratch: &mut Vec<f32>, dx: &mut [f32]) {
    debug_assert!(g.stride == 1 && dy.len() == g.cout_g() * g.out_plane() && dx.len() == g.in_plane());
    let pg = GatherPlanes::new(g);
    // Output planes padded by the kernel's span on every side, so that every lane of a load
    // is an output or a zero, which adds nothing. The border stays zero when the buffer is
    // reused, as only the middle is written.
    if scratch.len() != g.cout_g() * pg.plane {
        scratch.clear();
        scratch.resize(g.cout_g() * pg.plane, 0.0);
    }
    for (m, dy) in dy.chunks_exact(g.out_plane()).enumerate() {
        for (oy, src) in dy.chunks_exact(g.ow).enumerate() {
            let at = m * pg.plane + (oy + pg.span_h) * pg.rw + pg.span_w;
            // SAFETY: the caller's contract.
            unsafe { copy::<V>(&mut scratch[at..at + g.ow], src) };
        }
    }
    let (src, dx) = (scratch.as_ptr(), dx.as_mut_ptr());
    let mut jy = 0;
    // SAFETY: the caller's contract; the buffers' sizes were checked above.
    unsafe {
        while jy + ROWS <= g.h {
            grad_input_rows::<V, ROWS>(src, &pg, wc, g, dx, jy);
            jy += ROWS;
        }
        for jy in jy..g.h {
            grad_input_rows::<V, 1>(src, &pg, wc, g, dx, jy);
        }
    }
}

/// The layout of the zero-padded output-gradient planes that [`grad_input_rows`] reads.
struct GatherPlanes {
    /// Zero rows above and below, and zero columns left and right: the kernel's span.
    span_h: usize,
    span_w: usize,
    /// Floats per padded row and per padded plane.
    rw: usize,
    plane: usize,
}

impl GatherPlanes {
    fn new(g: &Geometry) -> Self {
        let (span_h, span_w) = ((g.kh - 1) * g.dil, (g.kw - 1) * g.dil);
        let rw = g.ow + 2 * span_w;
        Self { span_h, span_w, rw, plane: (g.oh + 2 * span_h) * rw }
    }
}

/// Input-gradient rows `jy .. jy + R` of one plane, a vector of columns at a time.
///
/// Input `(iy, ix)` (padded coordinates) meets tap `(ky, kx)` at output `(iy - ky dil,
/// ix - kx dil)`, which lies in the padded planes since `iy >= 0` and `iy < oh + span`
/// (as `oh + span = h + 2 pad`), and likewise for columns.
///
/// # Safety
/// The CPU must run `V`'s instruction set; `src` holds the planes `pg` describes, `dx` the
/// input-gradient plane, and the rows exist.
#[inline(always)]
unsafe fn grad_input_rows<V: Lanes, const R: usize>(
    src: *const f32,
    pg: &GatherPlanes,
    wc: &[f32],
    g: &Geometry,
    dx: *mut f32,
    jy: usize,
) {
    let taps = g.kh * g.kw;
    for jx in (0..g.w).step_by(V::LANES) {
        let n = (g.w - jx).min(V::LANES);
        let mut acc = [V::splat(0.0); R];
        for m in 0..g.cout_g() {
            for ky in (0..g.kh).rev() {
                for kx in 0..g.kw {
                    let wv = V::splat(wc[m * taps + ky * g.kw + kx]);
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let row = jy + r + g.pad + pg.span_h - ky * g.dil;
                        let col = jx + g.pad + pg.span_w - kx * g.dil;
                        // SAFETY: row and column lie in the padded plane (see above).
                        *acc = acc.add(wv.mul(V::load(src.add(m * pg.plane + row * pg.rw + col), n)));
                    }
                }
            }
        }
        for (r, acc) in acc.into_iter().enumerate() {
            acc.store(dx.add((jy + r) * g.w + jx), n);
        }
    }
}

/// [`grad_input_plane`] for the baseline ISA and for strides: scatters each output's gradient
/// over the inputs it read, tap by tap over whole rows, into a padded plane.
fn grad_input_plane_portable(dy: &[f32], wc: &[f32], g: &Geometry, scratch: &mut Vec<f32>, dx: &mut [f32]) {
    let (mult, taps, op) = (g.cout_g(), g.kh * g.kw, g.out_plane());
    let wp = g.w + 2 * g.pad;
    let acc: &mut [f32] = if g.pad == 0 {
        dx
    } else {
        scratch.clear();
        scratch.resize((g.h + 2 * g.pad) * wp, 0.0);
        scratch
    };
    dispatch!({
        for m in 0..mult {
            let wo = &wc[m * taps..(m + 1) * taps];
            for oy in 0..g.oh {
                let row = &dy[m * op + oy * g.ow..m * op + (oy + 1) * g.ow];
                for ky in 0..g.kh {
                    for kx in 0..g.kw {
                        let wv = wo[ky * g.kw + kx];
                        let base = (oy * g.stride + ky * g.dil) * wp + kx * g.dil;
                        if g.stride == 1 {
                            let dst = &mut acc[base..base + g.ow];
                            for (d, &v) in dst.iter_mut().zip(row.iter()) {
                                *d += wv * v;
                            }
                        } else {
                            for (ox, &v) in row.iter().enumerate() {
                                acc[base + ox * g.stride] += wv * v;
                            }
                        }
                    }
                }
            }
        }
    });
    if g.pad > 0 {
        for (iy, dst) in dx.chunks_exact_mut(g.w).enumerate() {
            let start = (iy + g.pad) * wp + g.pad;
            dst.copy_from_slice(&scratch[start..start + g.w]);
        }
    }
}

/// [`grad_weight`] on the kernels of `isa`.
fn grad_weight_on(isa: IsaLevel, x: &[f32], dy: &[f32], g: &Geometry, with_bias: bool) -> (Vec<f32>, Vec<f32>) {
    let (mult, taps, op) = (g.cout_g(), g.kh * g.kw, g.out_plane());
    let per_channel: Vec<(Vec<f32>, f32)> = (0..g.c_out)
        .into_par_iter()
        .map(|o| {
            let c = o / mult;
            let mut buf = Vec::new();
            // One running row of products per tap, summed once at the end: keeps the inner
            // loop a vectorisable multiply-add instead of a serial reduction.
            let mut acc = vec![0f32; taps * g.ow];
            let mut db = 0f32;
            for n in 0..g.n {
                let src = &x[(n * g.c_in + c) * g.in_plane()..][..g.in_plane()];
                let dy = &dy[(n * g.c_out + o) * op..][..op];
                if with_bias {
                    for row in dy.chunks_exact(g.ow) {
                        db += row.iter().sum::<f32>();
                    }
                }
                // SAFETY: as in `forward_on`.
                with_lanes!(isa,
                    V => unsafe { grad_weight_image::<V>(padded(src, g, &mut buf, |d, s| copy::<V>(d, s)), dy, g, &mut acc) },
                    portable => grad_weight_image_portable(padded(src, g, &mut buf, <[f32]>::copy_from_slice), dy, g, &mut acc)
                );
            }
            let dw = acc.chunks_exact(g.ow.max(1)).map(|a| a.iter().sum::<f32>()).collect::<Vec<_>>();
            (dw, db)
        })
        .collect();
    let mut dw = Vec::with_capacity(g.c_out * taps);
    let mut db = Vec::with_capacity(g.c_out);
    for (w, b) in per_channel {
        dw.extend_from_slice(&w);
        db.push(b);
    }
    if !with_bias {
        db.clear();
        db.resize(g.c_out, 0.0);
    }
    dw.resize(g.c_out * taps, 0.0);
    (dw, db)
}

/// Adds one image's products to the per-tap rows `acc` (`taps x ow`).
///
/// # Safety
/// The CPU must run `V`'s instruction set.
#[inline(always)]
unsafe fn grad_weight_image<V: Lanes>(src: &[f32], dy: &[f32], g: &Geometry, acc: &mut [f32]) {
    let taps = g.kh * g.kw;
    debug_assert!(src.len() >= (g.h + 2 * g.pad) * (g.w + 2 * g.pad) && dy.len() == g.out_plane());
    debug_assert_eq!(acc.len(), taps * g.ow);
    let (src, dy, acc) = (src.as_ptr(), dy.as_ptr(), acc.as_mut_ptr());
    let mut t = 0;
    // SAFETY: the caller's contract; the sizes were checked above.
    unsafe {
        while t + TAPS <= taps {
            grad_weight_taps::<V, TAPS>(src, dy, g, acc, t);
            t += TAPS;
        }
        for t in t..taps {
            grad_weight_taps::<V, 1>(src, dy, g, acc, t);
        }
    }
}

/// Taps whose weight gradients are summed together: each sum is one long chain of adds over
/// the output rows, and independent chains overlap each other's latency.
const TAPS: usize = 3;

/// Adds one image's products to the rows of taps `t .. t + T` of `acc`, a vector of columns at
/// a time: the running sums stay in registers over the output rows, in the portable order.
///
/// # Safety
/// The CPU must run `V`'s instruction set; `src` holds the padded input plane, `dy` the output
/// gradient plane, `acc` the `taps x ow` rows, and the taps exist.
#[inline(always)]
unsafe fn grad_weight_taps<V: Lanes, const T: usize>(
    src: *const f32,
    dy: *const f32,
    g: &Geometry,
    acc: *mut f32,
    t: usize,
) {
    let wp = g.w + 2 * g.pad;
    let offset = |j: usize| ((t + j) / g.kw * g.dil) * wp + (t + j) % g.kw * g.dil;
    for ox in (0..g.ow).step_by(V::LANES) {
        let n = (g.ow - ox).min(V::LANES);
        let mut a: [V; T] = std::array::from_fn(|j| V::load(acc.add((t + j) * g.ow + ox), n));
        for oy in 0..g.oh {
            let r = V::load(dy.add(oy * g.ow + ox), n);
            let row = src.add(oy * g.stride * wp + ox * g.stride);
            for (j, a) in a.iter_mut().enumerate() {
                // SAFETY: as in `forward_rows`.
                *a = a.add(r.mul(load_every::<V>(row.add(offset(j)), g.stride, n)));
            }
        }
        for (j, a) in a.into_iter().enumerate() {
            a.store(acc.add((t + j) * g.ow + ox), n);
        }
    }
}

/// [`grad_weight_image`] for the baseline ISA: one output row at a time for every tap.
fn grad_weight_image_portable(src: &[f32], dy: &[f32], g: &Geometry, acc: &mut [f32]) {
    let wp = g.w + 2 * g.pad;
    dispatch!({
        for (oy, row) in dy.chunks_exact(g.ow).enumerate() {
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let base = (oy * g.stride + ky * g.dil) * wp + kx * g.dil;
                    let t = ky * g.kw + kx;
                    let a = &mut acc[t * g.ow..(t + 1) * g.ow];
                    if g.stride == 1 {
                        let s = &src[base..base + g.ow];
                        for ((a, &r), &s) in a.iter_mut().zip(row.iter()).zip(s) {
                            *a += r * s;
                        }
                    } else {
                        for (ox, (a, &r)) in a.iter_mut().zip(row.iter()).enumerate() {
                            *a += r * src[base + ox * g.stride];
                        }
                    }
                }
            }
        }
    });
}

/// `n` floats from `p`, `stride` apart: contiguous, every other one, or gathered.
///
/// # Safety
/// The CPU must run `V`'s instruction set and `p` be readable for `(n - 1) * stride + 1` floats.
#[inline(always)]
unsafe fn load_every<V: Lanes>(p: *const f32, stride: usize, n: usize) -> V {
    // SAFETY: the caller's contract.
    unsafe {
        match stride {
            1 => V::load(p, n),
            2 => V::load_pairs(p, 2 * n - 1).0,
            _ => V::load_strided(p, stride, n),
        }
    }
}

/// Copies one input plane into the middle of a zeroed `(h + 2 pad) x (w + 2 pad)` buffer so
/// the inner loops need no bounds checks; returns the plane itself when there is no padding.
///
/// `buf` serves only this function, and every call of one kernel has the same geometry: a
/// buffer of the right length already has its zero border, as only the middle is written,
/// so it is zeroed only when first sized. `copy` copies one row.
#[inline(always)]
fn padded<'a>(src: &'a [f32], g: &Geometry, buf: &'a mut Vec<f32>, copy: impl Fn(&mut [f32], &[f32])) -> &'a [f32] {
    if g.pad == 0 {
        return src;
    }
    let wp = g.w + 2 * g.pad;
    let len = (g.h + 2 * g.pad) * wp;
    if buf.len() != len {
        buf.clear();
        buf.resize(len, 0.0);
    }
    for (iy, row) in src.chunks_exact(g.w).enumerate() {
        let start = (iy + g.pad) * wp + g.pad;
        copy(&mut buf[start..start + g.w], row);
    }
    buf
}

/// `dst[i] += wv * src[i * stride]` for every `i` in `dst`.
#[inline(always)]
fn axpy_strided(dst: &mut [f32], wv: f32, src: &[f32], stride: usize) {
    if stride == 1 {
        let src = &src[..dst.len()];
        for (d, &s) in dst.iter_mut().zip(src) {
            *d += wv * s;
        }
    } else {
        for (i, d) in dst.iter_mut().enumerate() {
            *d += wv * src[i * stride];
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::super::geometry::Conv2dConfig;
    use super::super::simd::supported_levels;
    use super::*;

    /// Runs every pass on every ISA this CPU has and requires the bits of the portable path.
    /// `special` seeds signed zeros, a NaN and exact ties that random values would never hit.
    #[track_caller]
    fn check(x_dims: [usize; 4], w_dims: [usize; 4], cfg: Conv2dConfig, special: bool) {
        let g = Geometry::new(&x_dims, &w_dims, &cfg).unwrap();
        assert!(g.is_depthwise(), "{g:?}");
        let mut rng = StdRng::seed_from_u64(x_dims.iter().chain(&w_dims).product::<usize>() as u64);
        let mut uniform = |len: usize| (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect::<Vec<_>>();
        let (mut x, mut w, mut bias, dy) =
            (uniform(g.in_len()), uniform(w_dims.iter().product()), uniform(g.c_out), uniform(g.out_len()));
        if special {
            // The first channel's outputs are sums of -0.0 only (-0.0 bias, +0.0 inputs times
            // negative weights) and ReLU sees them, and one input is NaN.
            x[..g.in_plane()].fill(0.0);
            w[..g.kh * g.kw].iter_mut().for_each(|v| *v = -v.abs());
            bias[0] = -0.0;
            let last = x.len() - 1;
            x[last] = f32::NAN;
        }
        let want_y = |relu| forward_on(IsaLevel::Portable, &x, &w, Some(&bias), &g, relu);
        let (want_y, want_relu) = (want_y(false), want_y(true));
        let want_dx = grad_input_on(IsaLevel::Portable, &dy, &w, &g);
        let want_dw = grad_weight_on(IsaLevel::Portable, &x, &dy, &g, true);
        for isa in supported_levels() {
            let what = format!("{isa:?} {x_dims:?} * {w_dims:?} {cfg:?}");
            same_bits(&forward_on(isa, &x, &w, Some(&bias), &g, false), &want_y, &format!("forward {what}"));
            same_bits(&forward_on(isa, &x, &w, Some(&bias), &g, true), &want_relu, &format!("forward+relu {what}"));
            same_bits(&grad_input_on(isa, &dy, &w, &g), &want_dx, &format!("grad_input {what}"));
            let (dw, db) = grad_weight_on(isa, &x, &dy, &g, true);
            same_bits(&dw, &want_dw.0, &format!("grad_weight {what}"));
            same_bits(&db, &want_dw.1, &format!("grad_bias {what}"));
        }
    }

    /// Equal bits, or NaN on both sides (a NaN's payload may come from either operand).
    #[track_caller]
    fn same_bits(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()), "{what} at {i}: {a:?} vs {b:?}");
        }
    }

    fn cfg(stride: usize, padding: usize, dilation: usize, groups: usize) -> Conv2dConfig {
        Conv2dConfig { stride, padding, dilation, groups }
    }

    #[test]
    fn every_isa_gives_the_portable_bits_at_unit_stride() {
        check([2, 3, 7, 9], [3, 1, 3, 3], cfg(1, 1, 1, 3), false);
        check([1, 2, 28, 28], [2, 1, 3, 3], cfg(1, 1, 1, 2), false);
        check([1, 1, 6, 17], [1, 1, 3, 3], cfg(1, 0, 1, 1), false);
        check([2, 2, 5, 37], [4, 1, 3, 3], cfg(1, 2, 2, 2), false);
        check([1, 2, 8, 19], [2, 1, 1, 5], cfg(1, 2, 1, 2), false);
        check([3, 4, 4, 4], [4, 1, 1, 1], cfg(1, 0, 1, 4), false);
        check([1, 2, 3, 33], [6, 1, 3, 3], cfg(1, 1, 1, 2), false);
    }

    #[test]
    fn every_isa_gives_the_portable_bits_with_a_stride() {
        check([1, 3, 11, 13], [3, 1, 3, 3], cfg(2, 1, 1, 3), false);
        check([2, 2, 28, 28], [2, 1, 3, 3], cfg(2, 1, 1, 2), false);
        check([1, 2, 9, 40], [6, 1, 5, 5], cfg(3, 2, 1, 2), false);
        check([1, 2, 10, 35], [2, 1, 3, 3], cfg(2, 0, 2, 2), false);
    }

    #[test]
    fn every_isa_keeps_signed_zeros_and_nan() {
        check([1, 2, 5, 21], [2, 1, 3, 3], cfg(1, 1, 1, 2), true);
        check([1, 2, 6, 21], [2, 1, 3, 3], cfg(2, 1, 1, 2), true);
    }
}
