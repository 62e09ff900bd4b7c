//! The AVX-512 tile product of the packed matrix product: up to `MR` rows by `NR` columns.
//!
//! Twice the vector width of the AVX2 tile of `microkernel.rs` and twice the registers, so a
//! tile is 12 rows by two 16-lane vectors: 24 accumulators, two right-operand vectors and the
//! left operand broadcast straight from memory into each FMA. That is 24 FMAs per two vector
//! loads and twelve broadcasts, enough for both FMA ports of a core.
//!
//! Unlike the AVX2 tile, the left operand is read in place with arbitrary row and column strides
//! (activations are row-major, attention reads heads out of a wider buffer), so it is never
//! copied into a packed layout: the broadcasts do not care where the values live.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Rows of the tile.
pub(crate) const MR: usize = 12;
/// Columns of the tile: two 16-lane vectors.
pub(crate) const NR: usize = 32;

/// The left operand of a tile: element `(row i, depth l)` is at `ptr + i * rs + l * cs`.
#[derive(Clone, Copy)]
pub(crate) struct Strided {
    /// Element `(0, 0)`.
    pub ptr: *const f32,
    /// Floats between rows.
    pub rs: usize,
    /// Floats between depth steps.
    pub cs: usize,
}

/// Computes `c[r][j] (+)= sum_{l < kc} a(r, l) * b[l * ld + j]` for `r < rows`, `j < cols`.
///
/// # Safety
/// The CPU must support AVX-512F. `a` must be readable at every `(r, l)` with `r < rows`,
/// `l < kc`; every row `l < kc` of `b` must have `NR` readable floats; `c` must be valid for
/// `rows` rows of `cols <= NR` floats spaced `ldc` apart. `1 <= rows <= MR`.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
pub(crate) unsafe fn tile(
    kc: usize,
    a: Strided,
    b: *const f32,
    ld: usize,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    accumulate: bool,
) {
    // SAFETY (all arms): the caller's contract, with `R == rows`.
    unsafe {
        match rows {
            12 => tile_rows::<12>(kc, a, b, ld, c, ldc, cols, accumulate),
            11 => tile_rows::<11>(kc, a, b, ld, c, ldc, cols, accumulate),
            10 => tile_rows::<10>(kc, a, b, ld, c, ldc, cols, accumulate),
            9 => tile_rows::<9>(kc, a, b, ld, c, ldc, cols, accumulate),
            8 => tile_rows::<8>(kc, a, b, ld, c, ldc, cols, accumulate),
            7 => tile_rows::<7>(kc, a, b, ld, c, ldc, cols, accumulate),
            6 => tile_rows::<6>(kc, a, b, ld, c, ldc, cols, accumulate),
            5 => tile_rows::<5>(kc, a, b, ld, c, ldc, cols, accumulate),
            4 => tile_rows::<4>(kc, a, b, ld, c, ldc, cols, accumulate),
            3 => tile_rows::<3>(kc, a, b, ld, c, ldc, cols, accumulate),
            2 => tile_rows::<2>(kc, a, b, ld, c, ldc, cols, accumulate),
            1 => tile_rows::<1>(kc, a, b, ld, c, ldc, cols, accumulate),
            _ => unreachable!("an AVX-512 tile has 1 to {MR} rows, not {rows}. This is a bug."),
        }
    }
}

/// [`tile`] for exactly `R` rows; the row loops unroll, so the accumulators stay in registers.
///
/// # Safety
/// As for [`tile`].
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn tile_rows<const R: usize>(
    kc: usize,
    a: Strided,
    b: *const f32,
    ld: usize,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    accumulate: bool,
) {
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    // Row pointers computed once: inside the loop each broadcast is then a fixed register plus
    // the running depth offset.
    let mut rows = [a.ptr; R];
    for (r, p) in rows.iter_mut().enumerate() {
        *p = a.ptr.wrapping_add(r * a.rs);
    }
    let mut b = b;
    let mut off = 0;
    for _ in 0..kc {
        // SAFETY: row `l` of `b` holds NR readable floats; `a` is readable at (r, l).
        unsafe {
            let b0 = _mm512_loadu_ps(b);
            let b1 = _mm512_loadu_ps(b.add(16));
            for r in 0..R {
                let av = _mm512_set1_ps(*rows[r].add(off));
                acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
                acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
            }
            b = b.add(ld);
        }
        off += a.cs;
    }
    let (m0, m1): (__mmask16, __mmask16) = if cols >= NR {
        (!0, !0)
    } else if cols >= 16 {
        (!0, ((1u32 << (cols - 16)) - 1) as __mmask16)
    } else {
        (((1u32 << cols) - 1) as __mmask16, 0)
    };
    for (r, acc_row) in acc.iter().enumerate() {
        // SAFETY: row r < rows of `c`, masked to its `cols` valid floats.
        unsafe {
            let dst = c.add(r * ldc);
            let (mut x0, mut x1) = (acc_row[0], acc_row[1]);
            if accumulate {
                x0 = _mm512_add_ps(x0, _mm512_maskz_loadu_ps(m0, dst));
                x1 = _mm512_add_ps(x1, _mm512_maskz_loadu_ps(m1, dst.add(16)));
            }
            _mm512_mask_storeu_ps(dst, m0, x0);
            _mm512_mask_storeu_ps(dst.add(16), m1, x1);
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn tile_matches_a_nested_loop_for_every_row_count_and_width() {
        if !super::super::cpu::has_avx512f() {
            return;
        }
        let (kc, ld, rs, cs, ldc) = (19, NR + 3, 1, 13, 40);
        let a: Vec<f32> = (0..kc * cs + MR).map(|i| ((i * 7 % 23) as f32 - 11.0) * 0.1).collect();
        let b: Vec<f32> = (0..kc * ld).map(|i| ((i * 5 % 17) as f32 - 8.0) * 0.1).collect();
        for rows in 1..=MR {
            for cols in [1, 5, 16, 17, 31, 32] {
                for accumulate in [false, true] {
                    let start: Vec<f32> = (0..MR * ldc).map(|i| i as f32 * 0.01).collect();
                    let mut c = start.clone();
                    // SAFETY: the CPU has AVX-512F (checked above); the buffers cover every
                    // index the tile reads or writes.
                    unsafe {
                        tile(
                            kc,
                            Strided { ptr: a.as_ptr(), rs, cs },
                            b.as_ptr(),
                            ld,
                            c.as_mut_ptr(),
                            ldc,
                            rows,
                            cols,
                            accumulate,
                        )
                    };
                    for r in 0..MR {
                        for j in 0..ldc {
                            let mut want = start[r * ldc + j];
                            if r < rows && j < cols {
                                let dot: f32 = (0..kc).map(|l| a[r * rs + l * cs] * b[l * ld + j]).sum();
                                want = if accumulate { want + dot } else { dot };
                            }
                            let got = c[r * ldc + j];
                            assert!(
                                (got - want).abs() < 1e-4,
                                "rows {rows} cols {cols} at ({r}, {j}): {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}
