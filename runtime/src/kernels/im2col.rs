//! Packing of convolution operands into the panel layout the tile product streams.
//!
//! The im2col matrix of one image and group has a row per (input channel, tap) and a column
//! per output position. It is never built whole: only the panel about to be used is
//! gathered, so it stays in L1 and no image-sized buffer is written.

use super::geometry::Geometry;
use super::microkernel::{MR, NR};

/// Writes row `k` of the im2col matrix, columns `p0 .. p0 + len`, to `out[t * os]`.
///
/// `x` starts at the group's first input channel of one image.
///
/// # Safety
/// `out` must be valid for `len` writes spaced `os` apart.
#[inline(always)]
pub(crate) unsafe fn gather_row(x: &[f32], g: &Geometry, k: usize, p0: usize, len: usize, out: *mut f32, os: usize) {
    let taps = g.kh * g.kw;
    let (c, tap) = (k / taps, k % taps);
    let (ky, kx) = (tap / g.kw, tap % g.kw);
    let plane = &x[c * g.in_plane()..(c + 1) * g.in_plane()];
    let x_off = (kx * g.dil) as isize - g.pad as isize;
    let (mut oy, mut ox) = (p0 / g.ow, p0 % g.ow);
    let mut t = 0;
    while t < len {
        let run = (len - t).min(g.ow - ox);
        let iy = (oy * g.stride + ky * g.dil) as isize - g.pad as isize;
        // SAFETY: t + run <= len, inside the caller's contract.
        let dst = unsafe { out.add(t * os) };
        if iy < 0 || iy >= g.h as isize {
            for u in 0..run {
                // SAFETY: u < run.
                unsafe { *dst.add(u * os) = 0.0 };
            }
        } else {
            let row = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
            if g.stride == 1 {
                // Input column of position u is ox + u + x_off; keep the part inside the row.
                let first = ox as isize + x_off;
                let lo = (-first).clamp(0, run as isize) as usize;
                let hi = (g.w as isize - first).clamp(lo as isize, run as isize) as usize;
                for u in 0..lo {
                    // SAFETY: u < run.
                    unsafe { *dst.add(u * os) = 0.0 };
                }
                if hi > lo {
                    let src = &row[(first + lo as isize) as usize..(first + hi as isize) as usize];
                    if os == 1 {
                        // SAFETY: hi <= run.
                        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.add(lo), hi - lo) };
                    } else {
                        for (u, &v) in src.iter().enumerate() {
                            // SAFETY: lo + u < hi <= run.
                            unsafe { *dst.add((lo + u) * os) = v };
                        }
                    }
                }
                for u in hi..run {
                    // SAFETY: u < run.
                    unsafe { *dst.add(u * os) = 0.0 };
                }
            } else {
                for u in 0..run {
                    let ix = ((ox + u) * g.stride) as isize + x_off;
                    let v = if ix >= 0 && ix < g.w as isize { row[ix as usize] } else { 0.0 };
                    // SAFETY: u < run.
                    unsafe { *dst.add(u * os) = v };
                }
            }
        }
        t += run;
        ox = 0;
        oy += 1;
    }
}

/// Adds `src[t * ss]` back onto the input positions that row `k` of the im2col matrix read
/// for columns `p0 .. p0 + len` (the transpose of [`gather_row`]).
///
/// `dx` starts at the group's first input channel of one image.
#[inline(always)]
pub(crate) fn scatter_row(dx: &mut [f32], g: &Geometry, k: usize, p0: usize, len: usize, src: &[f32], ss: usize) {
    let taps = g.kh * g.kw;
    let (c, tap) = (k / taps, k % taps);
    let (ky, kx) = (tap / g.kw, tap % g.kw);
    let plane_len = g.in_plane();
    let plane = &mut dx[c * plane_len..(c + 1) * plane_len];
    let x_off = (kx * g.dil) as isize - g.pad as isize;
    let (mut oy, mut ox) = (p0 / g.ow, p0 % g.ow);
    let mut t = 0;
    while t < len {
        let run = (len - t).min(g.ow - ox);
        let iy = (oy * g.stride + ky * g.dil) as isize - g.pad as isize;
        if iy >= 0 && iy < g.h as isize {
            let row = &mut plane[iy as usize * g.w..(iy as usize + 1) * g.w];
            for u in 0..run {
                let ix = ((ox + u) * g.stride) as isize + x_off;
                if ix >= 0 && ix < g.w as isize {
                    row[ix as usize] += src[(t + u) * ss];
                }
            }
        }
        t += run;
        ox = 0;
        oy += 1;
    }
}

/// Packs rows `k0 .. k0 + kc` and columns `p0 .. p0 + cols` of the im2col matrix as `kc`
/// groups of `NR` values, zero padding columns past `cols`.
#[inline(always)]
pub(crate) fn pack_cols(x: &[f32], g: &Geometry, k0: usize, kc: usize, p0: usize, cols: usize, out: &mut [f32]) {
    let out = &mut out[..kc * NR];
    for (l, dst) in out.chunks_exact_mut(NR).enumerate() {
        // SAFETY: dst holds NR >= cols floats.
        unsafe { gather_row(x, g, k0 + l, p0, cols, dst.as_mut_ptr(), 1) };
        dst[cols..].fill(0.0);
    }
}

/// Packs the transpose: columns `p0 .. p0 + pc` become `pc` groups of `NR` values taken
/// from im2col rows `k0 .. k0 + rows`, zero padding past `rows`.
#[inline(always)]
pub(crate) fn pack_rows_transposed(
    x: &[f32],
    g: &Geometry,
    k0: usize,
    rows: usize,
    p0: usize,
    pc: usize,
    out: &mut [f32],
) {
    let out = &mut out[..pc * NR];
    for j in 0..rows {
        // SAFETY: writes j + t * NR for t < pc, inside out.
        unsafe { gather_row(x, g, k0 + j, p0, pc, out.as_mut_ptr().add(j), NR) };
    }
    if rows < NR {
        for group in out.chunks_exact_mut(NR) {
            group[rows..].fill(0.0);
        }
    }
}

/// Packs a row-major matrix `src[i * rs + l * cs]` (`rows` x `depth`) as panels of `MR`
/// rows: panel `i` holds `depth` groups of `MR` values, zero padded past `rows`.
pub(crate) fn pack_rows(src: &[f32], rows: usize, depth: usize, rs: usize, cs: usize, out: &mut [f32]) {
    let panels = rows.div_ceil(MR);
    for p in 0..panels {
        let panel = &mut out[p * depth * MR..(p + 1) * depth * MR];
        for r in 0..MR {
            let i = p * MR + r;
            if i >= rows {
                for l in 0..depth {
                    panel[l * MR + r] = 0.0;
                }
                continue;
            }
            for l in 0..depth {
                panel[l * MR + r] = src[i * rs + l * cs];
            }
        }
    }
}

/// Floats needed by [`pack_rows`] for `rows` x `depth`.
pub(crate) fn packed_rows_len(rows: usize, depth: usize) -> usize {
    rows.div_ceil(MR) * MR * depth
}
