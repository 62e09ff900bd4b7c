//! Convolution forward and both gradients as matrix products over the im2col matrix.
//!
//! Forward: `out[o, p] = sum_k w[o, k] * col[k, p]`, a tile of 4 output channels by 24
//! positions at a time. Where 24 positions lie in one output row of a unit-stride
//! convolution, their im2col rows are contiguous stretches of the input and the tile reads
//! them in place; other positions are gathered into a packed panel first. Input gradient:
//! either a forward convolution of the output gradient with flipped weights, or
//! `dcol = w^T * dy` scattered back through the im2col map, whichever packs less per
//! multiply-add. Weight gradient: `dw = dy * col^T`, as dot products along the positions,
//! summed over images.
//!
//! Each image is first copied into a zero-padded buffer when the convolution pads, so every
//! unit-stride im2col run is a plain copy and no inner loop tests bounds.

use rayon::prelude::*;

use super::cpu::{for_each_task, threads, worth_splitting, Aligned, Output};
use super::depthwise;
use super::dot::{dot_tile, DM, DN};
use super::geometry::Geometry;
use super::im2col::{
    im2col_rows, pack_cols, pack_rows, packed_rows_len, scatter_rows, segments, RowMap, Segment, SLACK,
};
use super::microkernel::{tiles, wide_tile, Epilogue, Rows, KC, MR, NR};
use super::pool::{self, pool_plane, PoolGeometry};

/// Copies `planes` input planes into the middle of zeroed `(h + 2 pad) x (w + 2 pad)`
/// planes; returns `src` itself when there is no padding.
fn pad_planes<'a>(src: &'a [f32], g: &Geometry, planes: usize, buf: &'a mut Vec<f32>) -> &'a [f32] {
    if g.pad == 0 {
        return src;
    }
    let (hp, wp) = (g.h + 2 * g.pad, g.w + 2 * g.pad);
    buf.clear();
    buf.resize(planes * hp * wp, 0.0);
    for (plane, dst) in src.chunks_exact(g.in_plane()).zip(buf.chunks_exact_mut(hp * wp)) {
        for (iy, row) in plane.chunks_exact(g.w).enumerate() {
            let start = (iy + g.pad) * wp + g.pad;
            dst[start..start + g.w].copy_from_slice(row);
        }
    }
    buf
}

/// The forward pass's per-call state: the weights packed as row panels per group, and the
/// padded geometry with its im2col row map.
///
/// Packing happens on every call: it copies `c_out * k` floats, under 0.2% of the
/// multiply-adds of even a single image for the layers in use, so keeping a pre-packed copy
/// on the layer would not pay for its bookkeeping.
struct Plan {
    gp: Geometry,
    map: RowMap,
    a: Vec<f32>,
    a_len: usize,
}

impl Plan {
    fn new(w: &[f32], g: &Geometry) -> Self {
        let (kg, mg) = (g.k_g(), g.cout_g());
        let gp = g.padded();
        let map = RowMap::new(&gp);
        let a_len = packed_rows_len(mg, kg);
        let mut a = vec![0f32; a_len * g.groups];
        for (grp, panel) in a.chunks_exact_mut(a_len).enumerate() {
            pack_rows(&w[grp * mg * kg..], mg, kg, kg, 1, panel);
        }
        Self { gp, map, a, a_len }
    }
}

/// Buffers one worker reuses from task to task.
struct Scratch {
    panel: Aligned,
    tile: Vec<f32>,
    segs: Vec<Segment>,
    padded: Vec<f32>,
}

impl Scratch {
    fn new(g: &Geometry) -> Self {
        Self {
            panel: Aligned::zeros(g.k_g() * NR + SLACK),
            tile: vec![0f32; g.cout_g().div_ceil(MR) * MR * NR],
            segs: Vec::with_capacity(NR),
            padded: Vec::new(),
        }
    }
}

/// Computes output rows `oy_start .. oy_end` of every output channel of one (image, group)
/// unit, plus bias and optional ReLU, into `dst` (the unit's first output channel, channels
/// `out_plane` apart).
///
/// Stretches of `NR` positions within an output row read their im2col rows straight from
/// the padded image; whatever is left (row ends, strided convolutions) is packed in panels
/// that may span rows, computed into a small buffer and copied out. The whole reduction
/// runs in one pass, so each tile is written exactly once.
///
/// # Safety
/// `dst` must be valid for the unit's `cout_g` channels of `out_plane` floats, and no
/// other thread may touch the written rows meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn run_unit(
    plan: &Plan,
    x: &[f32],
    g: &Geometry,
    (n, grp): (usize, usize),
    (oy_start, oy_end): (usize, usize),
    bias: Option<&[f32]>,
    relu: bool,
    dst: *mut f32,
    scratch: &mut Scratch,
) {
    let (kg, mg, p, ow) = (g.k_g(), g.cout_g(), g.out_plane(), g.ow);
    let x0 = (n * g.c_in + grp * g.cin_g()) * g.in_plane();
    let x_img = pad_planes(&x[x0..x0 + g.cin_g() * g.in_plane()], g, g.cin_g(), &mut scratch.padded);
    let pa = &plan.a[grp * plan.a_len..(grp + 1) * plan.a_len];
    let bias_g = bias.map(|b| &b[grp * mg..(grp + 1) * mg]);
    let blocks = mg.div_ceil(MR);
    let ep = Epilogue { accumulate: false, bias: bias_g, relu };

    let direct = if g.stride == 1 { ow / NR * NR } else { 0 };
    let offsets = plan.map.offsets().as_ptr();
    for oy in oy_start..oy_end {
        for ox in (0..direct).step_by(NR) {
            // SAFETY: with unit stride and the padding applied, every tap of these NR
            // positions reads inside input row `oy + dy` of the padded image.
            let base = unsafe { x_img.as_ptr().add(oy * plan.gp.w + ox) };
            // SAFETY: the caller's region; see above for the operand rows.
            unsafe {
                tiles(
                    wide_tile(),
                    kg,
                    pa.as_ptr(),
                    kg * MR,
                    Rows::Indexed { base, offsets },
                    dst.add(oy * ow + ox),
                    p,
                    mg,
                    NR,
                    &ep,
                )
            };
        }
    }
    if direct == ow {
        return;
    }
    let buf = scratch.panel.as_mut_slice();
    let (mut oy, mut ox) = (oy_start, direct);
    while oy < oy_end {
        let segs = &mut scratch.segs;
        segs.clear();
        let mut cols = 0;
        while cols < NR && oy < oy_end {
            let len = (ow - ox).min(NR - cols);
            segs.push(Segment::new(&plan.gp, oy, ox, len, cols));
            cols += len;
            ox += len;
            if ox == ow {
                ox = direct;
                oy += 1;
            }
        }
        pack_cols(x_img, &plan.gp, &plan.map, 0, kg, segs, cols, buf);
        let t = &mut scratch.tile[..blocks * MR * NR];
        // SAFETY: the packed panel holds a full tile and `t` one tile of output per group.
        unsafe {
            tiles(
                wide_tile(),
                kg,
                pa.as_ptr(),
                kg * MR,
                Rows::Strided { ptr: buf.as_ptr(), ld: NR },
                t.as_mut_ptr(),
                NR,
                mg,
                cols,
                &ep,
            )
        };
        for (r, trow) in t.chunks_exact(NR).take(mg).enumerate() {
            for s in segs.iter() {
                let src = &trow[s.t..s.t + s.len];
                // SAFETY: output row r, positions of `s`, inside the caller's region.
                unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.add(r * p + s.oy * ow + s.ox), s.len) };
            }
        }
    }
}

/// Computes the convolution of contiguous NCHW `x` with `w`, plus `bias`, then ReLU if asked.
pub(crate) fn forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &Geometry, relu: bool) -> Vec<f32> {
    if g.is_depthwise() {
        return depthwise::forward(x, w, bias, g, relu);
    }
    let plan = Plan::new(w, g);
    let p = g.out_plane();
    let mut out = Output::new(g.out_len());
    let dst = out.ptr();
    if g.out_len() == 0 {
        // SAFETY: there is nothing to initialise.
        return unsafe { out.assume_init() };
    }
    // Split each (image, group) over bands of output rows only when there are too few of
    // them to keep every thread busy, as for single-image inference.
    let units = g.n * g.groups;
    let work = g.out_len() * g.k_g();
    let chunks = if worth_splitting(work) { (threads() * 4).div_ceil(units).clamp(1, g.oh) } else { 1 };
    let rows_per_chunk = g.oh.div_ceil(chunks);
    let chunks = g.oh.div_ceil(rows_per_chunk);
    for_each_task(
        units * chunks,
        work,
        || Scratch::new(g),
        |scratch, task| {
            let (unit, chunk) = (task / chunks, task % chunks);
            let (n, grp) = (unit / g.groups, unit % g.groups);
            let rows = (chunk * rows_per_chunk, ((chunk + 1) * rows_per_chunk).min(g.oh));
            let c_base = (n * g.c_out + grp * g.cout_g()) * p;
            // SAFETY: each task writes its own (image, group, row band) of the output.
            unsafe { run_unit(&plan, x, g, (n, grp), rows, bias, relu, dst.at(c_base), scratch) };
        },
    );
    // SAFETY: every task wrote each element of its region and the regions cover the output.
    unsafe { out.assume_init() }
}

/// Convolution, bias and optional ReLU followed by `k x k` max pooling, pooling each image's
/// activations while they are still in cache. Returns the pooled output and, with `keep`,
/// the full activation for the backward pass.
pub(crate) fn forward_pooled(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    g: &Geometry,
    relu: bool,
    k: usize,
    keep: bool,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let per_unit = PoolGeometry { planes: g.cout_g(), h: g.oh, w: g.ow, k };
    let whole = PoolGeometry { planes: g.n * g.c_out, ..per_unit };
    let units = g.n * g.groups;
    let work = g.out_len() * g.k_g();
    if g.is_depthwise() || (units < 2 * threads() && worth_splitting(work)) {
        // Too few images to split by image: the chunked forward pass keeps threads busy.
        let y = forward(x, w, bias, g, relu);
        let pooled = pool::forward(&y, &whole);
        return (pooled, keep.then_some(y));
    }
    let plan = Plan::new(w, g);
    let (p, pp) = (g.out_plane(), per_unit.oh() * per_unit.ow());
    let mut pooled = Output::new(g.n * g.c_out * pp);
    let mut act = keep.then(|| Output::new(g.out_len()));
    let (pdst, adst) = (pooled.ptr(), act.as_mut().map(Output::ptr));
    let unit_len = g.cout_g() * p;
    for_each_task(
        units,
        work,
        || (Scratch::new(g), Vec::new()),
        |(scratch, local), unit| {
            let (n, grp) = (unit / g.groups, unit % g.groups);
            let c_base = (n * g.c_out + grp * g.cout_g()) * p;
            let conv = match adst {
                // SAFETY: each unit owns its channels of the activation.
                Some(a) => unsafe { a.at(c_base) },
                None => {
                    local.resize(unit_len, 0.0);
                    local.as_mut_ptr()
                }
            };
            // SAFETY: `conv` holds this unit's channels and only this task writes them.
            unsafe { run_unit(&plan, x, g, (n, grp), (0, g.oh), bias, relu, conv, scratch) };
            // SAFETY: written in full just above.
            let conv = unsafe { std::slice::from_raw_parts(conv.cast_const(), unit_len) };
            let out_base = (n * g.c_out + grp * g.cout_g()) * pp;
            // SAFETY: each unit owns its channels of the pooled output.
            let out = unsafe { std::slice::from_raw_parts_mut(pdst.at(out_base).cast(), g.cout_g() * pp) };
            for (plane, o) in conv.chunks_exact(p).zip(out.chunks_exact_mut(pp)) {
                pool_plane(plane, &per_unit, o);
            }
        },
    );
    // SAFETY: every unit wrote its pooled planes and, when kept, its activations in full.
    unsafe { (pooled.assume_init(), act.map(|a| a.assume_init())) }
}

/// For a unit-stride convolution the input gradient is itself a convolution: of the output
/// gradient, padded by the kernel span less the original padding, with each group's weight
/// transposed over channels and flipped over taps. Returns that weight and geometry.
fn transposed(w: &[f32], g: &Geometry) -> Option<(Vec<f32>, Geometry)> {
    let (span_h, span_w) = (g.dil * (g.kh - 1), g.dil * (g.kw - 1));
    if g.stride != 1 || span_h != span_w || g.pad > span_h {
        return None;
    }
    let (cin_g, cout_g, taps) = (g.cin_g(), g.cout_g(), g.kh * g.kw);
    let mut flipped = vec![0f32; w.len()];
    for grp in 0..g.groups {
        for o in 0..cout_g {
            for i in 0..cin_g {
                let src = ((grp * cout_g + o) * cin_g + i) * taps;
                let dst = ((grp * cin_g + i) * cout_g + o) * taps;
                for t in 0..taps {
                    flipped[dst + t] = w[src + taps - 1 - t];
                }
            }
        }
    }
    let gt = Geometry {
        n: g.n,
        c_in: g.c_out,
        h: g.oh,
        w: g.ow,
        c_out: g.c_in,
        kh: g.kh,
        kw: g.kw,
        stride: 1,
        pad: span_h - g.pad,
        dil: g.dil,
        groups: g.groups,
        oh: g.h,
        ow: g.w,
    };
    Some((flipped, gt))
}

/// Gradient with respect to the input, given the gradient `dy` of the output.
pub(crate) fn grad_input(dy: &[f32], w: &[f32], g: &Geometry) -> Vec<f32> {
    if g.is_depthwise() {
        return depthwise::grad_input(dy, w, g);
    }
    // The flipped convolution packs `cout_g * taps` values per input position for
    // `cin_g` multiply-adds each; the scatter route packs `cout_g` and scatters
    // `cin_g * taps`, which is cheaper once the outputs outnumber the inputs.
    if g.cin_g() >= g.cout_g() {
        if let Some((flipped, gt)) = transposed(w, g) {
            return forward(dy, &flipped, None, &gt, false);
        }
    }
    let (kg, mg, p) = (g.k_g(), g.cout_g(), g.out_plane());
    let gp = g.padded();
    let map = RowMap::new(&gp);
    // The left operand is each group's weight transposed: a row per (channel, tap).
    let a_len = packed_rows_len(kg, mg);
    let mut a = vec![0f32; a_len * g.groups];
    for (grp, panel) in a.chunks_exact_mut(a_len).enumerate() {
        pack_rows(&w[grp * mg * kg..], kg, mg, 1, kg, panel);
    }
    let mut dx = vec![0f32; g.in_len()];
    let unit_len = g.cin_g() * g.in_plane();
    if unit_len == 0 {
        return dx;
    }
    let tmp_len = kg.div_ceil(MR) * MR * NR;
    let padded_len = g.cin_g() * gp.in_plane();
    dx.par_chunks_mut(unit_len).enumerate().for_each_init(
        || (Aligned::zeros(KC * NR), vec![0f32; tmp_len], Vec::with_capacity(NR), Vec::new()),
        |(buf, tmp, segs, scratch), (unit, dx_img)| {
            let (n, grp) = (unit / g.groups, unit % g.groups);
            let pa = &a[grp * a_len..(grp + 1) * a_len];
            let dy_base = (n * g.c_out + grp * mg) * p;
            let buf = buf.as_mut_slice();
            // With padding, gradients land in a padded buffer first and the border is
            // dropped at the end.
            let acc: &mut [f32] = if g.pad == 0 {
                dx_img
            } else {
                scratch.clear();
                scratch.resize(padded_len, 0.0);
                scratch
            };
            for p0 in (0..p).step_by(NR) {
                let cols = NR.min(p - p0);
                for c0 in (0..mg).step_by(KC) {
                    let kc = KC.min(mg - c0);
                    for (l, row) in buf[..kc * NR].chunks_exact_mut(NR).enumerate() {
                        let src = dy_base + (c0 + l) * p + p0;
                        row[..cols].copy_from_slice(&dy[src..src + cols]);
                        row[cols..].fill(0.0);
                    }
                    let ep = Epilogue { accumulate: c0 > 0, ..Epilogue::default() };
                    let rows_b = Rows::Strided { ptr: buf.as_ptr(), ld: NR };
                    let rows = kg.div_ceil(MR) * MR;
                    // SAFETY: `tmp` holds a full tile for every row panel.
                    unsafe {
                        tiles(
                            wide_tile(),
                            kc,
                            pa.as_ptr().add(c0 * MR),
                            mg * MR,
                            rows_b,
                            tmp.as_mut_ptr(),
                            NR,
                            rows,
                            NR,
                            &ep,
                        )
                    };
                }
                segments(&gp, p0, cols, segs);
                scatter_rows(acc, &gp, &map, kg, segs, tmp);
            }
            if g.pad > 0 {
                let wp = gp.w;
                for (plane, src) in dx_img.chunks_exact_mut(g.in_plane()).zip(scratch.chunks_exact(gp.in_plane())) {
                    for (iy, row) in plane.chunks_exact_mut(g.w).enumerate() {
                        let start = (iy + g.pad) * wp + g.pad;
                        row.copy_from_slice(&src[start..start + g.w]);
                    }
                }
            }
        },
    );
    dx
}

/// Gradients with respect to the weight and, when asked, the bias.
pub(crate) fn grad_weight(x: &[f32], dy: &[f32], g: &Geometry, with_bias: bool) -> (Vec<f32>, Vec<f32>) {
    if g.is_depthwise() {
        return depthwise::grad_weight(x, dy, g, with_bias);
    }
    let (kg, mg, p) = (g.k_g(), g.cout_g(), g.out_plane());
    let gp = g.padded();
    let map = RowMap::new(&gp);
    // Positions per im2col block, so one block of all kg rows stays around 256 KB (L2);
    // a multiple of 8 keeps the output-gradient rows vector aligned.
    let pc = if p <= 8 { p } else { ((1usize << 16) / kg.max(1)).clamp(64, 4096).min(p) / 8 * 8 };
    let ld = pc.div_ceil(8) * 8 + SLACK;
    // With a bias, an extra im2col row of ones makes its gradient (the sum of the output
    // gradient over positions) one more column of the same dot products.
    let kx = kg + usize::from(with_bias);
    // Each worker sums over its own images; the few weight-sized partials are added after.
    let parts = threads().min(g.n).max(1);
    let per = g.n.div_ceil(parts);
    let partials: Vec<Vec<f32>> = (0..parts)
        .into_par_iter()
        .map(|part| {
            let mut dw = vec![0f32; g.c_out * kx];
            let mut col = Aligned::zeros(kx * ld);
            let col = col.as_mut_slice();
            col[kg * ld..].fill(1.0);
            let (mut segs, mut pbuf) = (Vec::new(), Vec::new());
            for n in part * per..((part + 1) * per).min(g.n) {
                for grp in 0..g.groups {
                    let x0 = (n * g.c_in + grp * g.cin_g()) * g.in_plane();
                    let x_img = pad_planes(&x[x0..x0 + g.cin_g() * g.in_plane()], g, g.cin_g(), &mut pbuf);
                    let dy_img = &dy[(n * g.c_out + grp * mg) * p..(n * g.c_out + (grp + 1) * mg) * p];
                    for p0 in (0..p).step_by(pc) {
                        let len = pc.min(p - p0);
                        segments(&gp, p0, len, &mut segs);
                        im2col_rows(x_img, &gp, &map, 0, kg, &segs, len, col, ld);
                        for kb in (0..kx).step_by(DN) {
                            let cols = DN.min(kx - kb);
                            // Rows past the edge repeat the last valid one; their sums are
                            // computed but never stored.
                            let b = std::array::from_fn(|j| col[(kb + j.min(cols - 1)) * ld..].as_ptr());
                            for cb in (0..mg).step_by(DM) {
                                let rows = DM.min(mg - cb);
                                let a = std::array::from_fn(|i| dy_img[(cb + i.min(rows - 1)) * p + p0..].as_ptr());
                                // SAFETY: every row pointer has `len` floats behind it and the
                                // tile lies inside this worker's own `dw`.
                                unsafe {
                                    dot_tile(
                                        len,
                                        &a,
                                        &b,
                                        dw.as_mut_ptr().add((grp * mg + cb) * kx + kb),
                                        kx,
                                        rows,
                                        cols,
                                    )
                                };
                            }
                        }
                    }
                }
            }
            dw
        })
        .collect();
    let mut iter = partials.into_iter();
    let mut total = iter.next().expect("at least one worker partial exists. This is a bug.");
    for part in iter {
        total.iter_mut().zip(&part).for_each(|(a, b)| *a += b);
    }
    if !with_bias {
        return (total, vec![0f32; g.c_out]);
    }
    let dw = total.chunks_exact(kx).flat_map(|row| &row[..kg]).copied().collect();
    let db = total.chunks_exact(kx).map(|row| row[kg]).collect();
    (dw, db)
}
