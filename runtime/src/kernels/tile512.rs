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
    if R == MR {
        // SAFETY: the caller's contract, for all MR rows.
        let full = unsafe { reduce_full(kc, a, b, ld) };
        for (dst, src) in acc.iter_mut().zip(full) {
            *dst = src;
        }
    } else {
        // Row pointers computed once: inside the loop each broadcast is then a fixed register
        // plus the running depth offset.
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

/// How many depth steps ahead the unrolled tile loop prefetches the right operand into L1. Weight
/// panels come from L2 (many rows: each tile streams its own panel) or L3 (a few rows: the whole
/// model's weights pass once per call), and the hardware prefetchers start each panel too late.
/// Prefetches never fault, so running past the end of a panel is harmless.
const PREFETCH_STEPS: usize = 16;

/// One depth step of the 12 x 32 tile in assembly: two right-operand vectors at `[b + $b]`, then
/// each row's value at displacement `$a` broadcast and multiplied into its two accumulators.
#[cfg(target_arch = "x86_64")]
macro_rules! step {
    ($a:literal, $b:literal) => {
        concat!(
            "vmovups {b0}, zmmword ptr [{b}",
            $b,
            "]\n",
            "vmovups {b1}, zmmword ptr [{b}",
            $b,
            " + 64]\n",
            "vbroadcastss {t}, dword ptr [{p0} + ",
            $a,
            "]\n",
            "vfmadd231ps {c00}, {t}, {b0}\n",
            "vfmadd231ps {c01}, {t}, {b1}\n",
            "vbroadcastss {t}, dword ptr [{p0} + {rs} + ",
            $a,
            "]\n",
            "vfmadd231ps {c10}, {t}, {b0}\n",
            "vfmadd231ps {c11}, {t}, {b1}\n",
            "vbroadcastss {t}, dword ptr [{p0} + 2 * {rs} + ",
            $a,
            "]\n",
            "vfmadd231ps {c20}, {t}, {b0}\n",
            "vfmadd231ps {c21}, {t}, {b1}\n",
            "vbroadcastss {t}, dword ptr [{p1} + ",
            $a,
            "]\n",
            "vfmadd231ps {c30}, {t}, {b0}\n",
            "vfmadd231ps {c31}, {t}, {b1}\n",
            "vbroadcastss {t}, dword ptr [{p1} + {rs} + ",
            $a,
            "]\n",
            "vfmadd231ps {c40}, {t}, {b0}\n",
            "vfmadd231ps {c41}, {t}, {b1}\n",
            "vbroadcastss {t}, dword ptr [{p1} + 2 * {rs} + ",
            $a,
            "]\n",
            "vfmadd231ps {c50}, {t}, {b0}\n",
            "vfmadd231ps {c51}, {t}, {b1}\n",
            "vbroadcastss {t}, dword ptr [{p2} + ",
            $a,
            "]\n",
            "vfmadd231ps {c60}, {t}, {b0}\n",
            "vfmadd231ps {c61}, {t}, {b1}\n",
            "vbroadcastss {t}, dword ptr [{p2} + {rs} + ",
            $a,
            "]\n",
            "vfmadd231ps {c70}, {t}, {b0}\n",
            "vfmadd231ps {c71}, {t}, {b1}\n",
            "vbroadcastss {t}, dword ptr [{p2} + 2 * {rs} + ",
            $a,
            "]\n",
            "vfmadd231ps {c80}, {t}, {b0}\n",
            "vfmadd231ps {c81}, {t}, {b1}\n",
            "vbroadcastss {t}, dword ptr [{p3} + ",
            $a,
            "]\n",
            "vfmadd231ps {c90}, {t}, {b0}\n",
            "vfmadd231ps {c91}, {t}, {b1}\n",
            "vbroadcastss {t}, dword ptr [{p3} + {rs} + ",
            $a,
            "]\n",
            "vfmadd231ps {ca0}, {t}, {b0}\n",
            "vfmadd231ps {ca1}, {t}, {b1}\n",
            "vbroadcastss {t}, dword ptr [{p3} + 2 * {rs} + ",
            $a,
            "]\n",
            "vfmadd231ps {cb0}, {t}, {b0}\n",
            "vfmadd231ps {cb1}, {t}, {b1}\n",
        )
    };
}

/// The reduction of a full 12-row tile, in assembly. The compiler addresses the twelve rows
/// through a chain of dependent additions, one per row and step, which compete with the FMAs for
/// their ports; here they are four base registers plus one or two row strides. With contiguous
/// rows (`cs == 1`, activations of a linear layer) the loop is unrolled four times with constant
/// displacements, so the pointer updates are paid once per four steps.
///
/// # Safety
/// As for [`tile`], with `rows == MR`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn reduce_full(kc: usize, a: Strided, b: *const f32, ld: usize) -> [[__m512; 2]; MR] {
    const _: () = assert!(MR == 12 && NR == 32, "the assembly tile is written out for 12 x 32");
    let z = _mm512_setzero_ps();
    let (mut c00, mut c01, mut c10, mut c11, mut c20, mut c21) = (z, z, z, z, z, z);
    let (mut c30, mut c31, mut c40, mut c41, mut c50, mut c51) = (z, z, z, z, z, z);
    let (mut c60, mut c61, mut c70, mut c71, mut c80, mut c81) = (z, z, z, z, z, z);
    let (mut c90, mut c91, mut ca0, mut ca1, mut cb0, mut cb1) = (z, z, z, z, z, z);
    let (quads, singles) = if a.cs == 1 { (kc / 4, kc % 4) } else { (0, kc) };
    // SAFETY: the caller's contract: rows 0..12 of `a` at every depth below kc, and kc rows of NR
    // floats of `b`, are readable; the loops step through exactly kc depths.
    unsafe {
        std::arch::asm!(
            "test {quads}, {quads}",
            "jz 4f",
            "3:",
            "prefetcht0 byte ptr [{pf}]",
            "prefetcht0 byte ptr [{pf} + 64]",
            "prefetcht0 byte ptr [{pf} + {ld}]",
            "prefetcht0 byte ptr [{pf} + {ld} + 64]",
            "prefetcht0 byte ptr [{pf} + 2 * {ld}]",
            "prefetcht0 byte ptr [{pf} + 2 * {ld} + 64]",
            "prefetcht0 byte ptr [{pf} + {ld3}]",
            "prefetcht0 byte ptr [{pf} + {ld3} + 64]",
            "lea {pf}, [{pf} + 4 * {ld}]",
            step!("0", ""),
            step!("4", " + {ld}"),
            step!("8", " + 2 * {ld}"),
            step!("12", " + {ld3}"),
            "add {p0}, 16",
            "add {p1}, 16",
            "add {p2}, 16",
            "add {p3}, 16",
            "lea {b}, [{b} + 4 * {ld}]",
            "dec {quads}",
            "jnz 3b",
            "4:",
            "test {singles}, {singles}",
            "jz 6f",
            "5:",
            step!("0", ""),
            "add {p0}, {cs}",
            "add {p1}, {cs}",
            "add {p2}, {cs}",
            "add {p3}, {cs}",
            "add {b}, {ld}",
            "dec {singles}",
            "jnz 5b",
            "6:",
            p0 = inout(reg) a.ptr => _,
            p1 = inout(reg) a.ptr.wrapping_add(3 * a.rs) => _,
            p2 = inout(reg) a.ptr.wrapping_add(6 * a.rs) => _,
            p3 = inout(reg) a.ptr.wrapping_add(9 * a.rs) => _,
            rs = in(reg) a.rs * 4,
            cs = in(reg) a.cs * 4,
            b = inout(reg) b => _,
            pf = inout(reg) b.wrapping_add(PREFETCH_STEPS * ld) => _,
            ld = in(reg) ld * 4,
            ld3 = in(reg) ld * 12,
            quads = inout(reg) quads => _,
            singles = inout(reg) singles => _,
            b0 = out(zmm_reg) _,
            b1 = out(zmm_reg) _,
            t = out(zmm_reg) _,
                c00 = inout(zmm_reg) c00,
                c01 = inout(zmm_reg) c01,
                c10 = inout(zmm_reg) c10,
                c11 = inout(zmm_reg) c11,
                c20 = inout(zmm_reg) c20,
                c21 = inout(zmm_reg) c21,
                c30 = inout(zmm_reg) c30,
                c31 = inout(zmm_reg) c31,
                c40 = inout(zmm_reg) c40,
                c41 = inout(zmm_reg) c41,
                c50 = inout(zmm_reg) c50,
                c51 = inout(zmm_reg) c51,
                c60 = inout(zmm_reg) c60,
                c61 = inout(zmm_reg) c61,
                c70 = inout(zmm_reg) c70,
                c71 = inout(zmm_reg) c71,
                c80 = inout(zmm_reg) c80,
                c81 = inout(zmm_reg) c81,
                c90 = inout(zmm_reg) c90,
                c91 = inout(zmm_reg) c91,
                ca0 = inout(zmm_reg) ca0,
                ca1 = inout(zmm_reg) ca1,
                cb0 = inout(zmm_reg) cb0,
                cb1 = inout(zmm_reg) cb1,
            options(nostack, readonly),
        );
    }
    [
        [c00, c01],
        [c10, c11],
        [c20, c21],
        [c30, c31],
        [c40, c41],
        [c50, c51],
        [c60, c61],
        [c70, c71],
        [c80, c81],
        [c90, c91],
        [ca0, ca1],
        [cb0, cb1],
    ]
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn tile_matches_a_nested_loop_for_every_row_count_and_width() {
        if !super::super::cpu::has_avx512f() {
            return;
        }
        let (kc, ld, ldc) = (19, NR + 3, 40);
        let b: Vec<f32> = (0..kc * ld).map(|i| ((i * 5 % 17) as f32 - 8.0) * 0.1).collect();
        // Rows strided in memory (as attention reads values) and contiguous (as a linear layer
        // reads activations: the unrolled assembly loop of full tiles, plus its remainder).
        for (rs, cs) in [(1, 13), (kc + 3, 1)] {
            let a: Vec<f32> = (0..kc * cs + MR * rs).map(|i| ((i * 7 % 23) as f32 - 11.0) * 0.1).collect();
            for rows in 1..=MR {
                for cols in [1, 5, 16, 17, 31, 32] {
                    for accumulate in [false, true] {
                        check_tile(&a, Strided { ptr: a.as_ptr(), rs, cs }, &b, (kc, ld, ldc), rows, cols, accumulate);
                    }
                }
            }
        }
    }

    /// Runs one tile over `a` (laid out as `sa` describes) and `b` and compares every element of
    /// the output, touched or not, with a nested loop.
    fn check_tile(
        a: &[f32],
        sa: Strided,
        b: &[f32],
        (kc, ld, ldc): (usize, usize, usize),
        rows: usize,
        cols: usize,
        accumulate: bool,
    ) {
        let start: Vec<f32> = (0..MR * ldc).map(|i| i as f32 * 0.01).collect();
        let mut c = start.clone();
        // SAFETY: the CPU has AVX-512F (checked by the caller); the buffers cover every index
        // the tile reads or writes.
        unsafe { tile(kc, sa, b.as_ptr(), ld, c.as_mut_ptr(), ldc, rows, cols, accumulate) };
        for r in 0..MR {
            for j in 0..ldc {
                let mut want = start[r * ldc + j];
                if r < rows && j < cols {
                    let dot: f32 = (0..kc).map(|l| a[r * sa.rs + l * sa.cs] * b[l * ld + j]).sum();
                    want = if accumulate { want + dot } else { dot };
                }
                let got = c[r * ldc + j];
                assert!((got - want).abs() < 1e-4, "rows {rows} cols {cols} at ({r}, {j}): {got} vs {want}");
            }
        }
    }
}
