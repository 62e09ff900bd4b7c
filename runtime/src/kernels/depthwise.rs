//! Direct kernels for convolutions where every output channel reads one input channel.
//!
//! A depthwise convolution does nine multiply-adds per output value, far too few to amortise
//! packing for a matrix product, so these loops run over whole output rows instead and let
//! the compiler vectorise along them.

use rayon::prelude::*;

use super::cpu::{dispatch, for_each_task, Output};
use super::geometry::Geometry;

/// Copies one input plane into the middle of a zeroed `(h + 2 pad) x (w + 2 pad)` buffer so
/// the inner loops need no bounds checks; returns the plane itself when there is no padding.
fn padded<'a>(src: &'a [f32], g: &Geometry, buf: &'a mut Vec<f32>) -> &'a [f32] {
    if g.pad == 0 {
        return src;
    }
    let wp = g.w + 2 * g.pad;
    buf.clear();
    buf.resize((g.h + 2 * g.pad) * wp, 0.0);
    for (iy, row) in src.chunks_exact(g.w).enumerate() {
        let start = (iy + g.pad) * wp + g.pad;
        buf[start..start + g.w].copy_from_slice(row);
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

/// Depthwise forward pass with the bias and optional ReLU applied in the same sweep.
pub(crate) fn forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &Geometry, relu: bool) -> Vec<f32> {
    let (mult, taps, op) = (g.cout_g(), g.kh * g.kw, g.out_plane());
    let wp = g.w + 2 * g.pad;
    let mut out = Output::new(g.out_len());
    let dst = out.ptr();
    for_each_task(g.n * g.c_out, g.out_len() * taps, Vec::new, |buf, plane| {
        let (n, o) = (plane / g.c_out, plane % g.c_out);
        let c = o / mult;
        let src = &x[(n * g.c_in + c) * g.in_plane()..][..g.in_plane()];
        let src = padded(src, g, buf);
        let wo = &w[o * taps..(o + 1) * taps];
        let b = bias.map_or(0.0, |b| b[o]);
        for i in 0..op {
            // SAFETY: this task owns output plane `plane`.
            unsafe { dst.at(plane * op + i).write(b) };
        }
        // SAFETY: the plane was just initialised and only this task touches it.
        let out_plane = unsafe { std::slice::from_raw_parts_mut(dst.at(plane * op), op) };
        dispatch!({
            for (oy, row) in out_plane.chunks_exact_mut(g.ow).enumerate() {
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
    });
    // SAFETY: every plane was written in full above.
    unsafe { out.assume_init() }
}

/// Depthwise gradient with respect to the input.
pub(crate) fn grad_input(dy: &[f32], w: &[f32], g: &Geometry) -> Vec<f32> {
    let (mult, taps, op) = (g.cout_g(), g.kh * g.kw, g.out_plane());
    let wp = g.w + 2 * g.pad;
    let mut dx = vec![0f32; g.in_len()];
    if g.in_plane() == 0 {
        return dx;
    }
    dx.par_chunks_mut(g.in_plane()).enumerate().for_each_init(Vec::new, |scratch, (plane, dx_plane)| {
        let (n, c) = (plane / g.c_in, plane % g.c_in);
        let acc: &mut [f32] = if g.pad == 0 {
            dx_plane
        } else {
            scratch.clear();
            scratch.resize((g.h + 2 * g.pad) * wp, 0.0);
            scratch
        };
        dispatch!({
            for m in 0..mult {
                let o = c * mult + m;
                let wo = &w[o * taps..(o + 1) * taps];
                let dy0 = (n * g.c_out + o) * op;
                for oy in 0..g.oh {
                    let row = &dy[dy0 + oy * g.ow..dy0 + (oy + 1) * g.ow];
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
            for (iy, dst) in dx_plane.chunks_exact_mut(g.w).enumerate() {
                let start = (iy + g.pad) * wp + g.pad;
                dst.copy_from_slice(&scratch[start..start + g.w]);
            }
        }
    });
    dx
}

/// Depthwise gradients with respect to the weight and, when asked, the bias.
pub(crate) fn grad_weight(x: &[f32], dy: &[f32], g: &Geometry, with_bias: bool) -> (Vec<f32>, Vec<f32>) {
    let (mult, taps, op) = (g.cout_g(), g.kh * g.kw, g.out_plane());
    let wp = g.w + 2 * g.pad;
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
                let src = padded(src, g, &mut buf);
                let dy0 = (n * g.c_out + o) * op;
                dispatch!({
                    for oy in 0..g.oh {
                        let row = &dy[dy0 + oy * g.ow..dy0 + (oy + 1) * g.ow];
                        if with_bias {
                            db += row.iter().sum::<f32>();
                        }
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
