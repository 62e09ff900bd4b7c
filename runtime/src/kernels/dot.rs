//! The register-blocked dot-product tile behind the weight gradient.
//!
//! A weight gradient sums over output positions, which are the contiguous dimension of both
//! the output gradient and the im2col rows. Feeding that to the regular tile product would
//! mean transposing both operands element by element; this kernel instead keeps vectors
//! along the positions and reduces each accumulator horizontally once at the end.

/// Output-channel rows per tile.
pub(crate) const DM: usize = 4;
/// Im2col rows per tile.
pub(crate) const DN: usize = 3;

/// `out[i * ldo + j] += sum_{p < len} a[i][p] * b[j][p]` for `i < rows`, `j < cols`.
///
/// # Safety
/// Every pointer in `a` and `b` (including those past `rows` and `cols`, which may repeat a
/// valid row) must be readable for `len` floats, and `out` writable at the touched indices.
#[inline]
pub(crate) unsafe fn dot_tile(
    len: usize,
    a: &[*const f32; DM],
    b: &[*const f32; DN],
    out: *mut f32,
    ldo: usize,
    rows: usize,
    cols: usize,
) {
    let mut sums = [[0f32; DN]; DM];
    #[cfg(target_arch = "x86_64")]
    {
        if super::cpu::has_avx2_fma() {
            // SAFETY: the CPU supports the features; bounds are the caller's contract.
            unsafe { avx2::dot(len, a, b, &mut sums) };
            // SAFETY: as above.
            unsafe { add_sums(&sums, out, ldo, rows, cols) };
            return;
        }
    }
    // SAFETY: the caller's contract.
    unsafe { portable_dot(len, a, b, &mut sums) };
    // SAFETY: as above.
    unsafe { add_sums(&sums, out, ldo, rows, cols) }
}

/// Fallback for CPUs without AVX2/FMA.
///
/// # Safety
/// As for [`dot_tile`].
unsafe fn portable_dot(len: usize, a: &[*const f32; DM], b: &[*const f32; DN], sums: &mut [[f32; DN]; DM]) {
    for (i, row) in sums.iter_mut().enumerate() {
        for (j, s) in row.iter_mut().enumerate() {
            // SAFETY: the caller's contract.
            let (x, y) = unsafe { (std::slice::from_raw_parts(a[i], len), std::slice::from_raw_parts(b[j], len)) };
            *s = x.iter().zip(y).map(|(p, q)| p * q).sum();
        }
    }
}

/// Adds the valid part of a finished tile to the output.
///
/// # Safety
/// As for [`dot_tile`].
unsafe fn add_sums(sums: &[[f32; DN]; DM], out: *mut f32, ldo: usize, rows: usize, cols: usize) {
    for (i, row) in sums.iter().enumerate().take(rows) {
        for (j, s) in row.iter().enumerate().take(cols) {
            // SAFETY: the caller's contract.
            unsafe { *out.add(i * ldo + j) += s };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{DM, DN};
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        std::ptr::read_unaligned(p as *const __m256)
    }

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// # Safety
    /// AVX2 and FMA must be available; see [`super::dot_tile`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot(len: usize, a: &[*const f32; DM], b: &[*const f32; DN], sums: &mut [[f32; DN]; DM]) {
        let mut acc = [[_mm256_setzero_ps(); DN]; DM];
        let mut p = 0;
        while p + 8 <= len {
            let mut bv = [_mm256_setzero_ps(); DN];
            for (j, v) in bv.iter_mut().enumerate() {
                *v = load(b[j].add(p));
            }
            for (i, acc_row) in acc.iter_mut().enumerate() {
                let av = load(a[i].add(p));
                for j in 0..DN {
                    acc_row[j] = _mm256_fmadd_ps(av, bv[j], acc_row[j]);
                }
            }
            p += 8;
        }
        if p < len {
            let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((len - p) as i32), lanes);
            let mut bv = [_mm256_setzero_ps(); DN];
            for (j, v) in bv.iter_mut().enumerate() {
                *v = _mm256_maskload_ps(b[j].add(p), mask);
            }
            for (i, acc_row) in acc.iter_mut().enumerate() {
                let av = _mm256_maskload_ps(a[i].add(p), mask);
                for j in 0..DN {
                    acc_row[j] = _mm256_fmadd_ps(av, bv[j], acc_row[j]);
                }
            }
        }
        for (i, acc_row) in acc.iter().enumerate() {
            for (j, &v) in acc_row.iter().enumerate() {
                sums[i][j] = hsum(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatched_dot_matches_portable_dot() {
        for len in [1, 7, 8, 29, 64] {
            let rows: Vec<Vec<f32>> =
                (0..DM + DN).map(|r| (0..len).map(|p| ((r * 31 + p * 7) % 13) as f32 * 0.25 - 1.5).collect()).collect();
            let a = std::array::from_fn(|i| rows[i].as_ptr());
            let b = std::array::from_fn(|j| rows[DM + j].as_ptr());
            let mut fast = vec![0.5f32; DM * DN];
            let mut slow = [[0f32; DN]; DM];
            // SAFETY: every row holds `len` floats and `fast` a full tile.
            unsafe {
                dot_tile(len, &a, &b, fast.as_mut_ptr(), DN, DM, DN);
                portable_dot(len, &a, &b, &mut slow);
            }
            for i in 0..DM {
                for j in 0..DN {
                    let (x, y) = (fast[i * DN + j], slow[i][j] + 0.5);
                    assert!((x - y).abs() <= 1e-4, "{x} vs {y} at {i},{j} for length {len}");
                }
            }
        }
    }
}
