//! The register-blocked tile product that every convolution and matrix product ends in.
//!
//! A tile is `MR` rows by `NR` columns of the output. Its left operand is packed as `kc`
//! groups of `MR` values (one per row) and its right operand as `kc` groups of `NR` values,
//! so the inner loop only streams both forward. Rows are broadcast and columns are loaded
//! as vectors, which keeps the output in the same row-major order as NCHW feature maps.

/// Rows of the output tile (output channels for a convolution).
pub(crate) const MR: usize = 4;
/// Columns of the output tile (spatial positions for a convolution); three AVX vectors.
pub(crate) const NR: usize = 24;
/// Depth of one packed block; keeps an `NR`-wide panel of the right operand in L1.
pub(crate) const KC: usize = 256;

/// What to do with the accumulated tile when it is written back.
#[derive(Clone, Copy, Default)]
pub(crate) struct Epilogue<'a> {
    /// Add to what is already stored instead of overwriting it.
    pub accumulate: bool,
    /// Per-row value added once, on the first block of the reduction.
    pub bias: Option<&'a [f32]>,
    /// Clamp at zero after the last block of the reduction.
    pub relu: bool,
}

/// Computes one output tile: `c[r][j] (+)= sum_l a[l][r] * b[l][j]`, then applies `ep`.
///
/// Only the first `rows` rows and `cols` columns of `c` are touched; the packed operands
/// must still hold a full `MR` x `NR` tile (zero padded), which the packing routines ensure.
///
/// # Safety
/// `a` must hold `kc * MR` floats, `b` at least `(kc - 1) * ldb + NR` and be 32-byte aligned
/// with `ldb` a multiple of 8, and `c` must be valid for `rows` rows of `cols` floats spaced
/// `ldc` apart.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) unsafe fn tile(
    kc: usize,
    a: *const f32,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    ep: &Epilogue,
) {
    debug_assert!(b as usize % 32 == 0 && ldb % 8 == 0, "unaligned right operand. This is a bug.");
    #[cfg(target_arch = "x86_64")]
    {
        if super::cpu::has_avx2_fma() {
            // SAFETY: the CPU supports the features the kernel is compiled for.
            unsafe { avx2::tile(kc, a, b, ldb, c, ldc, rows, cols, ep) };
            return;
        }
    }
    // SAFETY: same contract as this function.
    unsafe { portable_tile(kc, a, b, ldb, c, ldc, rows, cols, ep) }
}

/// Writes an accumulated tile held in a plain array.
///
/// # Safety
/// As for [`tile`].
#[inline(always)]
unsafe fn store_scalar(acc: &[[f32; NR]; MR], c: *mut f32, ldc: usize, rows: usize, cols: usize, ep: &Epilogue) {
    for (r, acc_row) in acc.iter().enumerate().take(rows) {
        let bias = ep.bias.map_or(0.0, |b| b[r]);
        for (j, &v) in acc_row.iter().enumerate().take(cols) {
            // SAFETY: r < rows and j < cols, inside the caller's tile.
            let dst = unsafe { &mut *c.add(r * ldc + j) };
            let mut v = v + bias;
            if ep.accumulate {
                v += *dst;
            }
            if ep.relu && v < 0.0 {
                v = 0.0;
            }
            *dst = v;
        }
    }
}

/// Fallback for CPUs without AVX2/FMA; the compiler vectorises it with the baseline ISA.
#[allow(clippy::too_many_arguments)]
unsafe fn portable_tile(
    kc: usize,
    a: *const f32,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    ep: &Epilogue,
) {
    let mut acc = [[0f32; NR]; MR];
    for l in 0..kc {
        // SAFETY: bounds are the caller's contract.
        let (av, bv) =
            unsafe { (std::slice::from_raw_parts(a.add(l * MR), MR), std::slice::from_raw_parts(b.add(l * ldb), NR)) };
        for r in 0..MR {
            for j in 0..NR {
                acc[r][j] += av[r] * bv[j];
            }
        }
    }
    // SAFETY: as above.
    unsafe { store_scalar(&acc, c, ldc, rows, cols, ep) }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{store_scalar, Epilogue, MR, NR};
    use std::arch::x86_64::*;

    const NV: usize = NR / 8;

    /// # Safety
    /// The CPU must support AVX2 and FMA; pointer contract as [`super::tile`].
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile(
        kc: usize,
        a: *const f32,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        rows: usize,
        cols: usize,
        ep: &Epilogue,
    ) {
        let mut acc = [[_mm256_setzero_ps(); NV]; MR];
        let mut a = a;
        let mut b = b;
        for _ in 0..kc {
            let mut bv = [_mm256_setzero_ps(); NV];
            for (v, slot) in bv.iter_mut().enumerate() {
                // An aligned dereference rather than `_mm256_loadu_ps`: it compiles to the same
                // load, without the copy and overlap checks that debug builds wrap around the
                // unaligned intrinsic in this innermost loop.
                *slot = *(b.add(v * 8) as *const __m256);
            }
            for (r, acc_row) in acc.iter_mut().enumerate() {
                let av = _mm256_broadcast_ss(&*a.add(r));
                for v in 0..NV {
                    acc_row[v] = _mm256_fmadd_ps(av, bv[v], acc_row[v]);
                }
            }
            a = a.add(MR);
            b = b.add(ldb);
        }
        if rows == MR && cols == NR {
            let zero = _mm256_setzero_ps();
            for (r, acc_row) in acc.iter().enumerate() {
                let bias = _mm256_set1_ps(ep.bias.map_or(0.0, |b| b[r]));
                for (v, &x) in acc_row.iter().enumerate() {
                    let dst = c.add(r * ldc + v * 8);
                    let mut x = _mm256_add_ps(x, bias);
                    if ep.accumulate {
                        x = _mm256_add_ps(x, _mm256_loadu_ps(dst));
                    }
                    if ep.relu {
                        x = _mm256_max_ps(x, zero);
                    }
                    _mm256_storeu_ps(dst, x);
                }
            }
            return;
        }
        let mut spill = [[0f32; NR]; MR];
        for (r, acc_row) in acc.iter().enumerate() {
            for (v, &x) in acc_row.iter().enumerate() {
                _mm256_storeu_ps(spill[r].as_mut_ptr().add(v * 8), x);
            }
        }
        store_scalar(&spill, c, ldc, rows, cols, ep);
    }
}
