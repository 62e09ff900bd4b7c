//! A cache-blocked single-precision matrix product on the convolution tile kernel, or on the
//! AVX-512 tile of the packed product where the CPU has it.
//!
//! Large products (fully connected layers, the GEMM benchmark) go through the classic
//! three-level blocking: a `KC`-deep slab of the right operand per thread, `MC` rows of the
//! left operand per L2 block, and one `NR`-wide panel in L1 at a time.

use candle_core::{bail, Result};
use rayon::prelude::*;

use super::cpu::{self, threads, Aligned, SharedMut};
use super::im2col::{pack_rows, packed_rows_len};
use super::microkernel::{tile, Epilogue, Rows, KC, MR, NR};
use super::packed_gemm::{Activation, PackedLinear};

/// Rows of the left operand packed together; sized for the L2 cache.
const MC: usize = 128;

/// `c = a * b` for row-major `a` (`m` x `k`), `b` (`k` x `n`) and `c` (`m` x `n`).
pub fn sgemm(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) -> Result<()> {
    if a.len() != m * k || b.len() != k * n || c.len() != m * n {
        bail!(
            "sgemm operands hold {}, {} and {} floats, expected {}, {} and {}",
            a.len(),
            b.len(),
            c.len(),
            m * k,
            k * n,
            m * n
        )
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        c.fill(0.0);
        return Ok(());
    }
    if cpu::has_avx512f() {
        // The AVX-512 tile reads the left operand in place and needs only the right one packed,
        // which costs one pass over `b` against `m` passes of arithmetic.
        return PackedLinear::from_right_operand(b, k, n)?.forward(a, m, c, Activation::Identity);
    }
    let panels = n.div_ceil(NR);
    let parts = threads().min(panels);
    let per = panels.div_ceil(parts);
    let dst = SharedMut(c.as_mut_ptr());
    (0..parts).into_par_iter().for_each(|part| {
        let (c0, c1) = (part * per * NR, ((part + 1) * per * NR).min(n));
        if c0 >= c1 {
            return;
        }
        let my_panels = (c1 - c0).div_ceil(NR);
        let mut bbuf = Aligned::zeros(my_panels * KC * NR);
        let mut abuf = Aligned::zeros(packed_rows_len(MC, KC));
        let (bbuf, abuf) = (bbuf.as_mut_slice(), abuf.as_mut_slice());
        for k0 in (0..k).step_by(KC) {
            let kc = KC.min(k - k0);
            for (j, panel) in bbuf.chunks_exact_mut(KC * NR).enumerate() {
                let col = c0 + j * NR;
                let cols = NR.min(c1 - col);
                for (l, dst_row) in panel[..kc * NR].chunks_exact_mut(NR).enumerate() {
                    let src = &b[(k0 + l) * n + col..][..cols];
                    dst_row[..cols].copy_from_slice(src);
                    dst_row[cols..].fill(0.0);
                }
            }
            let ep = Epilogue { accumulate: k0 > 0, ..Epilogue::default() };
            for m0 in (0..m).step_by(MC) {
                let mc = MC.min(m - m0);
                pack_rows(&a[m0 * k + k0..], mc, kc, k, 1, abuf);
                for j in 0..my_panels {
                    let col = c0 + j * NR;
                    let cols = NR.min(c1 - col);
                    for i in 0..mc.div_ceil(MR) {
                        let rows = MR.min(mc - i * MR);
                        // SAFETY: each worker writes only its own columns of `c`.
                        unsafe {
                            tile(
                                kc,
                                abuf.as_ptr().add(i * kc * MR),
                                Rows::Strided { ptr: bbuf.as_ptr().add(j * KC * NR), ld: NR },
                                dst.at((m0 + i * MR) * n + col),
                                n,
                                rows,
                                cols,
                                &ep,
                            )
                        };
                    }
                }
            }
        }
    });
    Ok(())
}
