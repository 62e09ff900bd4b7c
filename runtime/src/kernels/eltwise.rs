//! Element-wise passes over activations, split across threads.

use rayon::prelude::*;

use super::cpu::{dispatch, Output};

/// Floats per task: large enough to amortise scheduling, small enough to balance two cores.
const CHUNK: usize = 1 << 15;

/// The gradient that passes a ReLU: `dy` where the ReLU's output `y` is positive, else 0.
///
/// Done once per backward pass so both convolution gradients read a plain tensor instead of
/// re-testing the mask inside their packing loops.
pub(crate) fn relu_grad(dy: &[f32], y: &[f32]) -> Vec<f32> {
    let mut out = Output::new(dy.len());
    let dst = out.ptr();
    dy.par_chunks(CHUNK).zip(y.par_chunks(CHUNK)).enumerate().for_each(|(i, (d, m))| {
        // SAFETY: chunk `i` owns this range of the output, and it is written in full
        // before anyone reads it.
        let o = unsafe { std::slice::from_raw_parts_mut(dst.at(i * CHUNK).cast(), d.len()) };
        dispatch!({
            for ((o, &d), &m) in o.iter_mut().zip(d).zip(m) {
                *o = std::mem::MaybeUninit::new(if m > 0.0 { d } else { 0.0 });
            }
        });
    });
    // SAFETY: the chunks cover the output.
    unsafe { out.assume_init() }
}
