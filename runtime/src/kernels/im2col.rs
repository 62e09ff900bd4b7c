//! Packing of convolution operands into the panel layout the tile product streams.
//!
//! The im2col matrix of one image and group has a row per (input channel, tap) and a column
//! per output position. It is never built whole: only the panel about to be used is
//! gathered, so it stays in L1 and no image-sized buffer is written.

use super::cpu::{dispatch, Isa};
use super::geometry::Geometry;
use super::microkernel::{MR, NR};

/// Floats a packed buffer needs past its end, because the copy helpers may run over by up
/// to one vector (see [`Isa::copy_over`]).
pub(crate) const SLACK: usize = 8;

/// Where each im2col row reads from, precomputed once per call so the packing loops do no
/// divisions.
pub(crate) struct RowMap {
    /// Offset of the row's input channel within one image's group.
    plane: Vec<usize>,
    /// Vertical tap offset, `ky * dilation`.
    dy: Vec<usize>,
    /// Horizontal tap offset, `kx * dilation`.
    dx: Vec<usize>,
    /// `plane + dy * w + dx`: the row's offset from a position's top-left input corner.
    offset: Vec<usize>,
}

impl RowMap {
    /// Each row's offset from a position's top-left input corner.
    pub(crate) fn offsets(&self) -> &[usize] {
        &self.offset
    }

    pub(crate) fn new(g: &Geometry) -> Self {
        let taps = g.kh * g.kw;
        let k_g = g.k_g();
        let mut map = Self {
            plane: Vec::with_capacity(k_g),
            dy: Vec::with_capacity(k_g),
            dx: Vec::with_capacity(k_g),
            offset: Vec::with_capacity(k_g),
        };
        for k in 0..k_g {
            let (c, tap) = (k / taps, k % taps);
            let (dy, dx) = ((tap / g.kw) * g.dil, (tap % g.kw) * g.dil);
            map.plane.push(c * g.in_plane());
            map.dy.push(dy);
            map.dx.push(dx);
            map.offset.push(c * g.in_plane() + dy * g.w + dx);
        }
        map
    }
}

/// A run of consecutive output positions within one output row.
#[derive(Clone, Copy, Default)]
pub(crate) struct Segment {
    pub oy: usize,
    pub ox: usize,
    pub len: usize,
    /// Offset of the run within the panel.
    pub t: usize,
    /// Every tap of every position reads a contiguous stretch inside the input (unit
    /// stride, no padding touched), so the run is a plain copy from `corner + offset[k]`.
    interior: bool,
    /// Input offset of the run's first position's top-left corner, when `interior`.
    corner: usize,
}

impl Segment {
    pub(crate) fn new(g: &Geometry, oy: usize, ox: usize, len: usize, t: usize) -> Self {
        let (span_h, span_w) = (g.dil * (g.kh - 1), g.dil * (g.kw - 1));
        let interior = g.stride == 1
            && oy >= g.pad
            && oy - g.pad + span_h < g.h
            && ox >= g.pad
            && ox + len - 1 - g.pad + span_w < g.w;
        let corner = if interior { (oy - g.pad) * g.w + ox - g.pad } else { 0 };
        Self { oy, ox, len, t, interior, corner }
    }
}

/// Splits positions `p0 .. p0 + len` into per-row runs, appended to `out`.
pub(crate) fn segments(g: &Geometry, p0: usize, len: usize, out: &mut Vec<Segment>) {
    out.clear();
    let (mut oy, mut ox, mut t) = (p0 / g.ow, p0 % g.ow, 0);
    while t < len {
        let run = (len - t).min(g.ow - ox);
        out.push(Segment::new(g, oy, ox, run, t));
        t += run;
        ox = 0;
        oy += 1;
    }
}

/// Writes one run of row `k` of the im2col matrix to `d`, which may be overrun by up to 7
/// floats (see [`Isa::copy_over`]).
///
/// # Safety
/// `d` must be writable for `s.len + 7` floats.
#[inline(always)]
unsafe fn gather_segment<S: Isa>(x: &[f32], g: &Geometry, map: &RowMap, k: usize, s: &Segment, d: *mut f32) {
    if s.interior {
        let start = s.corner + map.offset[k];
        debug_assert!(start + s.len <= x.len(), "interior run outside the input. This is a bug.");
        // SAFETY: `Segment::new` checked that the run lies inside input row `oy + dy - pad`,
        // and `x` holds every plane of the group.
        unsafe { S::copy_over(d, x.as_ptr().add(start), s.len) };
        return;
    }
    let pad = g.pad as isize;
    let iy = (s.oy * g.stride + map.dy[k]) as isize - pad;
    let first = (s.ox * g.stride + map.dx[k]) as isize - pad;
    let (h, w) = (g.h as isize, g.w as isize);
    if iy < 0 || iy >= h {
        // SAFETY: the caller's contract.
        unsafe { S::zero_over(d, s.len) };
        return;
    }
    let start = map.plane[k] + iy as usize * g.w;
    let row = &x[start..start + g.w];
    if g.stride == 1 {
        // Input column of position u is first + u; keep the part inside the row.
        let lo = (-first).clamp(0, s.len as isize) as usize;
        let hi = (w - first).clamp(lo as isize, s.len as isize) as usize;
        // SAFETY: lo <= hi <= s.len, and the source range lies inside `row`.
        unsafe {
            S::zero_over(d, lo);
            if hi > lo {
                S::copy_over(d.add(lo), row.as_ptr().offset(first + lo as isize), hi - lo);
            }
            S::zero_over(d.add(hi), s.len - hi);
        }
        return;
    }
    for u in 0..s.len {
        let ix = first + (u * g.stride) as isize;
        let v = if ix >= 0 && ix < w { row[ix as usize] } else { 0.0 };
        // SAFETY: u < s.len.
        unsafe { *d.add(u) = v };
    }
}

/// Packs rows `k0 .. k0 + kc` of the im2col matrix over the positions of `segs` (at most
/// `NR` of them, `cols` in all) as `kc` groups of `NR` values, zero padding past `cols`.
///
/// `x` starts at the group's first input channel of one image; `out` needs [`SLACK`] floats
/// beyond `kc * NR`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pack_cols(
    x: &[f32],
    g: &Geometry,
    map: &RowMap,
    k0: usize,
    kc: usize,
    segs: &[Segment],
    cols: usize,
    out: &mut [f32],
) {
    assert!(out.len() >= kc * NR + SLACK && cols <= NR, "packing buffer too small. This is a bug.");
    let out = out.as_mut_ptr();
    dispatch!(S => {
        for l in 0..kc {
            // SAFETY: row l of the buffer; runs may spill into later rows or the slack, which
            // are written afterwards or never read.
            unsafe {
                let dst = out.add(l * NR);
                for s in segs {
                    gather_segment::<S>(x, g, map, k0 + l, s, dst.add(s.t));
                }
                if cols < NR {
                    S::zero_over(dst.add(cols), NR - cols);
                }
            }
        }
    });
}

/// Writes im2col rows `k0 .. k0 + kc` over the positions of `segs` (`len` in all), row `l`
/// starting at `out[l * ld]`; `ld` must leave [`SLACK`] floats after each row.
#[allow(clippy::too_many_arguments)]
pub(crate) fn im2col_rows(
    x: &[f32],
    g: &Geometry,
    map: &RowMap,
    k0: usize,
    kc: usize,
    segs: &[Segment],
    len: usize,
    out: &mut [f32],
    ld: usize,
) {
    assert!(ld >= len + SLACK && out.len() >= kc * ld, "im2col buffer too small. This is a bug.");
    let out = out.as_mut_ptr();
    dispatch!(S => {
        for l in 0..kc {
            for s in segs {
                // SAFETY: the run lies in row l, whose slack absorbs any overrun.
                unsafe { gather_segment::<S>(x, g, map, k0 + l, s, out.add(l * ld + s.t)) };
            }
        }
    });
}

/// Adds a tile of im2col values back onto the input positions they were read from (the
/// transpose of packing): row `k` of `tmp` (stride `NR`) covers the positions of `segs`.
///
/// `dx` starts at the group's first input channel of one image.
pub(crate) fn scatter_rows(dx: &mut [f32], g: &Geometry, map: &RowMap, kg: usize, segs: &[Segment], tmp: &[f32]) {
    let pad = g.pad as isize;
    let (h, w) = (g.h as isize, g.w as isize);
    dispatch!({
        for k in 0..kg {
            let src = &tmp[k * NR..k * NR + NR];
            for s in segs {
                let vals = &src[s.t..s.t + s.len];
                if s.interior {
                    let start = s.corner + map.offset[k];
                    for (d, v) in dx[start..start + s.len].iter_mut().zip(vals) {
                        *d += v;
                    }
                    continue;
                }
                let iy = (s.oy * g.stride + map.dy[k]) as isize - pad;
                if iy < 0 || iy >= h {
                    continue;
                }
                let start = map.plane[k] + iy as usize * g.w;
                let row = &mut dx[start..start + g.w];
                let first = (s.ox * g.stride + map.dx[k]) as isize - pad;
                for (u, v) in vals.iter().enumerate() {
                    let ix = first + (u * g.stride) as isize;
                    if ix >= 0 && ix < w {
                        row[ix as usize] += v;
                    }
                }
            }
        }
    });
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
