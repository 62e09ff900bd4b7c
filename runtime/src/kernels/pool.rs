//! Non-overlapping max pooling over NCHW planes, forward and backward.

use rayon::prelude::*;

use super::cpu::{dispatch, Output};

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

/// Maximum over each `k x k` window; rows and columns past the last full window are dropped.
pub(crate) fn forward(x: &[f32], g: &PoolGeometry) -> Vec<f32> {
    let (oh, ow, k) = (g.oh(), g.ow(), g.k);
    let op = oh * ow;
    let mut out = Output::new(g.planes * op);
    let dst = out.ptr();
    (0..g.planes).into_par_iter().with_min_len(PLANES_PER_TASK).for_each(|pl| {
        let src = &x[pl * g.h * g.w..(pl + 1) * g.h * g.w];
        dispatch!({
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut m = f32::NEG_INFINITY;
                    for dy in 0..k {
                        let row = &src[(oy * k + dy) * g.w + ox * k..][..k];
                        for &v in row {
                            m = if v > m { v } else { m };
                        }
                    }
                    // SAFETY: this task owns output plane `pl`.
                    unsafe { dst.at(pl * op + oy * ow + ox).write(m) };
                }
            }
        });
    });
    // SAFETY: every output element was written above.
    unsafe { out.assume_init() }
}

/// Routes each window's gradient to the inputs equal to its maximum, split evenly between
/// ties, so the result is the exact derivative wherever the maximum is unique.
pub(crate) fn backward(x: &[f32], y: &[f32], dy: &[f32], g: &PoolGeometry) -> Vec<f32> {
    let (oh, ow, k) = (g.oh(), g.ow(), g.k);
    let (op, ip) = (oh * ow, g.h * g.w);
    let mut dx = vec![0f32; g.planes * ip];
    if ip == 0 {
        return dx;
    }
    dx.par_chunks_mut(ip).with_min_len(PLANES_PER_TASK).enumerate().for_each(|(pl, dxp)| {
        let src = &x[pl * ip..(pl + 1) * ip];
        dispatch!({
            for oy in 0..oh {
                for ox in 0..ow {
                    let (m, d) = (y[pl * op + oy * ow + ox], dy[pl * op + oy * ow + ox]);
                    let mut ties = 0u32;
                    for dy in 0..k {
                        let row = &src[(oy * k + dy) * g.w + ox * k..][..k];
                        ties += row.iter().filter(|&&v| v == m).count() as u32;
                    }
                    if ties == 0 {
                        continue;
                    }
                    let share = d / ties as f32;
                    for dy in 0..k {
                        let at = (oy * k + dy) * g.w + ox * k;
                        for (o, &v) in dxp[at..at + k].iter_mut().zip(&src[at..at + k]) {
                            if v == m {
                                *o = share;
                            }
                        }
                    }
                }
            }
        });
    });
    dx
}
