//! Convolution forward and both gradients as packed matrix products over im2col panels.
//!
//! Forward: `out[o, p] = sum_k w[o, k] * col[k, p]`. Input gradient: `dcol = w^T * dy`,
//! scattered back through the im2col map. Weight gradient: `dw = dy * col^T`, summed over
//! images. All three run the same tile product; only the packing differs.

use rayon::prelude::*;

use super::cpu::{threads, Aligned, Output};
use super::depthwise;
use super::geometry::Geometry;
use super::im2col::{pack_cols, pack_rows, pack_rows_transposed, packed_rows_len, scatter_row};
use super::microkernel::{tile, Epilogue, KC, MR, NR};

/// The gradient that reaches the convolution's own output: `dy`, zeroed wherever a fused
/// ReLU clamped the output (`mask` is that output).
#[inline(always)]
fn masked(dy: &[f32], mask: Option<&[f32]>, i: usize) -> f32 {
    match mask {
        Some(m) if m[i] <= 0.0 => 0.0,
        _ => dy[i],
    }
}

/// Computes the convolution of contiguous NCHW `x` with `w`, plus `bias`, then ReLU if asked.
pub(crate) fn forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &Geometry, relu: bool) -> Vec<f32> {
    if g.is_depthwise() {
        return depthwise::forward(x, w, bias, g, relu);
    }
    let (kg, mg, p) = (g.k_g(), g.cout_g(), g.out_plane());
    let a_len = packed_rows_len(mg, kg);
    let mut a = vec![0f32; a_len * g.groups];
    for (grp, panel) in a.chunks_exact_mut(a_len).enumerate() {
        pack_rows(&w[grp * mg * kg..], mg, kg, kg, 1, panel);
    }
    let mut out = Output::new(g.out_len());
    let dst = out.ptr();
    if g.out_len() == 0 {
        // SAFETY: there is nothing to initialise.
        return unsafe { out.assume_init() };
    }

    // Split each (image, group) over position chunks only when there are too few of them
    // to keep every thread busy, as for single-image inference.
    let units = g.n * g.groups;
    let panels = p.div_ceil(NR);
    let chunks = (threads() * 4).div_ceil(units).clamp(1, panels);
    let panels_per_chunk = panels.div_ceil(chunks);
    let chunks = panels.div_ceil(panels_per_chunk);

    (0..units * chunks).into_par_iter().for_each_init(
        || Aligned::zeros(KC * NR),
        |buf, task| {
            let (unit, chunk) = (task / chunks, task % chunks);
            let (n, grp) = (unit / g.groups, unit % g.groups);
            let x0 = (n * g.c_in + grp * g.cin_g()) * g.in_plane();
            let x_img = &x[x0..x0 + g.cin_g() * g.in_plane()];
            let pa = &a[grp * a_len..(grp + 1) * a_len];
            let c_base = (n * g.c_out + grp * mg) * p;
            let p_start = chunk * panels_per_chunk * NR;
            let p_end = ((chunk + 1) * panels_per_chunk * NR).min(p);
            let bias_g = bias.map(|b| &b[grp * mg..(grp + 1) * mg]);
            let buf = buf.as_mut_slice();
            for k0 in (0..kg).step_by(KC) {
                let kc = KC.min(kg - k0);
                let (first, last) = (k0 == 0, k0 + kc == kg);
                for p0 in (p_start..p_end).step_by(NR) {
                    let cols = NR.min(p_end - p0);
                    pack_cols(x_img, g, k0, kc, p0, cols, buf);
                    for i in 0..mg.div_ceil(MR) {
                        let rows = MR.min(mg - i * MR);
                        let ep = Epilogue {
                            accumulate: !first,
                            bias: bias_g.filter(|_| first).map(|b| &b[i * MR..i * MR + rows]),
                            relu: relu && last,
                        };
                        // SAFETY: the packed panels hold full tiles and the output tile lies
                        // inside this task's (image, group, chunk) region, which no other
                        // task writes.
                        unsafe {
                            tile(
                                kc,
                                pa.as_ptr().add(i * kg * MR + k0 * MR),
                                buf.as_ptr(),
                                NR,
                                dst.at(c_base + i * MR * p + p0),
                                p,
                                rows,
                                cols,
                                &ep,
                            )
                        };
                    }
                }
            }
        },
    );
    // SAFETY: the first reduction block of every task wrote each element of its region and
    // the regions cover the output.
    unsafe { out.assume_init() }
}

/// Gradient with respect to the input, given the gradient `dy` of the output.
pub(crate) fn grad_input(dy: &[f32], w: &[f32], mask: Option<&[f32]>, g: &Geometry) -> Vec<f32> {
    if g.is_depthwise() {
        return depthwise::grad_input(dy, w, mask, g);
    }
    let (kg, mg, p) = (g.k_g(), g.cout_g(), g.out_plane());
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
    dx.par_chunks_mut(unit_len).enumerate().for_each_init(
        || (Aligned::zeros(KC * NR), vec![0f32; tmp_len]),
        |(buf, tmp), (unit, dx_img)| {
            let (n, grp) = (unit / g.groups, unit % g.groups);
            let pa = &a[grp * a_len..(grp + 1) * a_len];
            let dy_base = (n * g.c_out + grp * mg) * p;
            let buf = buf.as_mut_slice();
            for p0 in (0..p).step_by(NR) {
                let cols = NR.min(p - p0);
                for c0 in (0..mg).step_by(KC) {
                    let kc = KC.min(mg - c0);
                    for (l, row) in buf[..kc * NR].chunks_exact_mut(NR).enumerate() {
                        let src = dy_base + (c0 + l) * p + p0;
                        for (jj, v) in row[..cols].iter_mut().enumerate() {
                            *v = masked(dy, mask, src + jj);
                        }
                        row[cols..].fill(0.0);
                    }
                    let ep = Epilogue { accumulate: c0 > 0, ..Epilogue::default() };
                    for i in 0..kg.div_ceil(MR) {
                        // SAFETY: `tmp` holds a full tile for every row panel.
                        unsafe {
                            tile(
                                kc,
                                pa.as_ptr().add(i * mg * MR + c0 * MR),
                                buf.as_ptr(),
                                NR,
                                tmp.as_mut_ptr().add(i * MR * NR),
                                NR,
                                MR,
                                NR,
                                &ep,
                            )
                        };
                    }
                }
                for k in 0..kg {
                    scatter_row(dx_img, g, k, p0, cols, &tmp[k * NR..], 1);
                }
            }
        },
    );
    dx
}

/// Gradients with respect to the weight and, when asked, the bias.
pub(crate) fn grad_weight(
    x: &[f32],
    dy: &[f32],
    mask: Option<&[f32]>,
    g: &Geometry,
    with_bias: bool,
) -> (Vec<f32>, Vec<f32>) {
    if g.is_depthwise() {
        return depthwise::grad_weight(x, dy, mask, g, with_bias);
    }
    let (kg, mg, p) = (g.k_g(), g.cout_g(), g.out_plane());
    let w_len = g.c_out * kg;
    // Each worker sums over its own images; the few weight-sized partials are added after.
    let parts = threads().min(g.n).max(1);
    let per = g.n.div_ceil(parts);
    let partials: Vec<(Vec<f32>, Vec<f32>)> = (0..parts)
        .into_par_iter()
        .map(|part| {
            let mut dw = vec![0f32; w_len];
            let mut db = vec![0f32; g.c_out];
            let mut abuf = Aligned::zeros(packed_rows_len(mg, KC));
            let mut bbuf = Aligned::zeros(KC * NR);
            let (abuf, bbuf) = (abuf.as_mut_slice(), bbuf.as_mut_slice());
            let ep = Epilogue { accumulate: true, ..Epilogue::default() };
            for n in part * per..((part + 1) * per).min(g.n) {
                for grp in 0..g.groups {
                    let x0 = (n * g.c_in + grp * g.cin_g()) * g.in_plane();
                    let x_img = &x[x0..x0 + g.cin_g() * g.in_plane()];
                    let dy_base = (n * g.c_out + grp * mg) * p;
                    for p0 in (0..p).step_by(KC) {
                        let pc = KC.min(p - p0);
                        pack_dy_rows(
                            dy,
                            mask,
                            dy_base + p0,
                            p,
                            mg,
                            pc,
                            abuf,
                            with_bias.then(|| &mut db[grp * mg..(grp + 1) * mg]),
                        );
                        for k0 in (0..kg).step_by(NR) {
                            let cols = NR.min(kg - k0);
                            pack_rows_transposed(x_img, g, k0, cols, p0, pc, bbuf);
                            for i in 0..mg.div_ceil(MR) {
                                let rows = MR.min(mg - i * MR);
                                // SAFETY: the tile lies inside this worker's own `dw`.
                                unsafe {
                                    tile(
                                        pc,
                                        abuf.as_ptr().add(i * pc * MR),
                                        bbuf.as_ptr(),
                                        NR,
                                        dw.as_mut_ptr().add((grp * mg + i * MR) * kg + k0),
                                        kg,
                                        rows,
                                        cols,
                                        &ep,
                                    )
                                };
                            }
                        }
                    }
                }
            }
            (dw, db)
        })
        .collect();
    sum_partials(partials)
}

/// Adds the per-worker partial gradients.
pub(crate) fn sum_partials(partials: Vec<(Vec<f32>, Vec<f32>)>) -> (Vec<f32>, Vec<f32>) {
    let mut iter = partials.into_iter();
    let (mut dw, mut db) = iter.next().expect("at least one worker partial exists. This is a bug.");
    for (pw, pb) in iter {
        dw.iter_mut().zip(&pw).for_each(|(a, b)| *a += b);
        db.iter_mut().zip(&pb).for_each(|(a, b)| *a += b);
    }
    (dw, db)
}

/// Packs `rows` output-gradient channels (spaced `ld` apart, from `base`) over `pc`
/// positions as row panels, masking by the fused ReLU and summing each row into `db`.
#[allow(clippy::too_many_arguments)]
fn pack_dy_rows(
    dy: &[f32],
    mask: Option<&[f32]>,
    base: usize,
    ld: usize,
    rows: usize,
    pc: usize,
    out: &mut [f32],
    mut db: Option<&mut [f32]>,
) {
    for pnl in 0..rows.div_ceil(MR) {
        let panel = &mut out[pnl * pc * MR..(pnl + 1) * pc * MR];
        for r in 0..MR {
            let i = pnl * MR + r;
            if i >= rows {
                for l in 0..pc {
                    panel[l * MR + r] = 0.0;
                }
                continue;
            }
            let mut sum = 0.0;
            for l in 0..pc {
                let v = masked(dy, mask, base + i * ld + l);
                panel[l * MR + r] = v;
                sum += v;
            }
            if let Some(db) = db.as_deref_mut() {
                db[i] += sum;
            }
        }
    }
}
