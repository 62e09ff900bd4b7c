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

/// Where a tile's right-operand rows come from.
#[derive(Clone, Copy)]
pub(crate) enum Rows {
    /// Row `l` is `NR` floats at `ptr + l * ld`: a packed panel.
    Strided {
        /// First row.
        ptr: *const f32,
        /// Floats between rows.
        ld: usize,
    },
    /// Row `l` is `NR` floats at `base + offsets[l]`: read in place, e.g. straight from a
    /// padded image when the tile's positions are one stretch of an output row.
    Indexed {
        /// Common origin.
        base: *const f32,
        /// Per-row offsets in floats, one per reduction step.
        offsets: *const usize,
    },
}

/// Computes one output tile: `c[r][j] (+)= sum_l a[l][r] * b_l[j]`, then applies `ep`.
///
/// Only the first `rows` rows and `cols` columns of `c` are touched; the operands must
/// still hold a full `MR` x `NR` tile (zero padded or readable), which the callers ensure.
///
/// # Safety
/// `a` must hold `kc * MR` floats, every right-operand row `NR` readable floats, and `c`
/// must be valid for `rows` rows of `cols` floats spaced `ldc` apart.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) unsafe fn tile(
    kc: usize,
    a: *const f32,
    b: Rows,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    ep: &Epilogue,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if super::cpu::has_avx2_fma() {
            // SAFETY: the CPU supports the features the kernel is compiled for.
            unsafe { avx2::tile(kc, a, b, c, ldc, rows, cols, ep) };
            return;
        }
    }
    // SAFETY: same contract as this function.
    unsafe { portable_tile(kc, a, b, c, ldc, rows, cols, ep) }
}

/// Whether [`tiles`] should take its 8-row AVX-512 kernel: where the kernels may use AVX-512 and
/// this CPU's 16-lane FMAs outrun its 8-lane ones ([`super::peak::wide_fma_pays`]).
pub(crate) fn wide_tile() -> bool {
    super::cpu::has_avx512f() && super::peak::wide_fma_pays()
}

/// Computes the `total_rows` x `cols` output of several tiles stacked in rows: group `i` (rows
/// `i * MR ..`) reads its packed left operand at `a + i * a_stride` and writes rows `c + i * MR * ldc`;
/// every group shares the right operand `b`. `ep.bias`, when given, covers all `total_rows`.
///
/// With `wide` ([`wide_tile`] says when it pays), two groups run at once in one 8-row AVX-512
/// kernel, which reads each right-operand row once for eight rows and keeps twice the
/// accumulators; otherwise groups run one at a time. Both give the same bits.
///
/// # Safety
/// As for [`tile`], for every group: `a + i * a_stride` must hold `kc * MR` floats for each of
/// the `ceil(total_rows / MR)` groups, and `c` must be valid for `total_rows` rows. `wide` only
/// where the CPU runs AVX-512F.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) unsafe fn tiles(
    wide: bool,
    kc: usize,
    a: *const f32,
    a_stride: usize,
    b: Rows,
    c: *mut f32,
    ldc: usize,
    total_rows: usize,
    cols: usize,
    ep: &Epilogue,
) {
    let groups = total_rows.div_ceil(MR);
    let group_ep = |i: usize| Epilogue { bias: ep.bias.map(|b| &b[i * MR..]), ..*ep };
    let mut i = 0;
    #[cfg(target_arch = "x86_64")]
    if wide {
        while i + 1 < groups {
            let rows = (total_rows - i * MR).min(2 * MR);
            // SAFETY: the caller's contract for groups i and i + 1; the CPU runs AVX-512F.
            unsafe {
                avx512::tile8(kc, a.add(i * a_stride), a_stride, b, c.add(i * MR * ldc), ldc, rows, cols, &group_ep(i))
            };
            i += 2;
        }
    }
    while i < groups {
        let rows = (total_rows - i * MR).min(MR);
        // SAFETY: the caller's contract for group i.
        unsafe { tile(kc, a.add(i * a_stride), b, c.add(i * MR * ldc), ldc, rows, cols, &group_ep(i)) };
        i += 1;
    }
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
///
/// # Safety
/// As for [`tile`].
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn portable_tile(
    kc: usize,
    a: *const f32,
    b: Rows,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    ep: &Epilogue,
) {
    let mut acc = [[0f32; NR]; MR];
    for l in 0..kc {
        // SAFETY: bounds are the caller's contract.
        let (av, bv) = unsafe {
            let row = match b {
                Rows::Strided { ptr, ld } => ptr.add(l * ld),
                Rows::Indexed { base, offsets } => base.add(*offsets.add(l)),
            };
            (std::slice::from_raw_parts(a.add(l * MR), MR), std::slice::from_raw_parts(row, NR))
        };
        for r in 0..MR {
            for j in 0..NR {
                acc[r][j] += av[r] * bv[j];
            }
        }
    }
    // SAFETY: as above.
    unsafe { store_scalar(&acc, c, ldc, rows, cols, ep) }
}

/// Starts fetching the `rows` output rows of a tile (`NR` floats each): the reduction that
/// follows takes long enough to hide the miss, which otherwise stalls the write-back of every
/// tile of a large product.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_output(c: *mut f32, ldc: usize, rows: usize) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    for r in 0..rows {
        let row = c.wrapping_add(r * ldc) as *const i8;
        // SAFETY: prefetching is a hint and never faults, whatever the address.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(row);
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(64));
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(4 * NR - 4));
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{store_scalar, Epilogue, Rows, MR, NR};
    use std::arch::x86_64::*;

    const _: () = assert!(MR == 4 && NR == 24, "the AVX2 tile is written out for 4 x 24");

    /// The tile's twelve accumulators, `[row][vector]`.
    type Acc = [[__m256; 3]; 4];

    /// # Safety
    /// The CPU must support AVX2 and FMA; pointer contract as [`super::tile`].
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile(
        kc: usize,
        a: *const f32,
        b: Rows,
        c: *mut f32,
        ldc: usize,
        rows: usize,
        cols: usize,
        ep: &Epilogue,
    ) {
        super::prefetch_output(c, ldc, rows);
        let acc = match b {
            Rows::Strided { ptr, ld } => strided(kc, a, ptr, ld),
            Rows::Indexed { base, offsets } => indexed(kc, a, base, offsets),
        };
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

    // The reduction loops are written in assembly because twelve accumulators, three
    // right-operand vectors and a broadcast need all sixteen vector registers, and the
    // compiler's allocator then shuffles registers and spills every iteration (half the
    // speed). `fma_rows!` is the shared body: one broadcast of the left operand per row,
    // three FMAs against the right-operand row already in b0..b2.
    macro_rules! fma_rows {
        () => {
            concat!(
                "vbroadcastss {t}, dword ptr [{a}]\n",
                "vfmadd231ps {c00}, {t}, {b0}\n",
                "vfmadd231ps {c01}, {t}, {b1}\n",
                "vfmadd231ps {c02}, {t}, {b2}\n",
                "vbroadcastss {t}, dword ptr [{a} + 4]\n",
                "vfmadd231ps {c10}, {t}, {b0}\n",
                "vfmadd231ps {c11}, {t}, {b1}\n",
                "vfmadd231ps {c12}, {t}, {b2}\n",
                "vbroadcastss {t}, dword ptr [{a} + 8]\n",
                "vfmadd231ps {c20}, {t}, {b0}\n",
                "vfmadd231ps {c21}, {t}, {b1}\n",
                "vfmadd231ps {c22}, {t}, {b2}\n",
                "vbroadcastss {t}, dword ptr [{a} + 12]\n",
                "vfmadd231ps {c30}, {t}, {b0}\n",
                "vfmadd231ps {c31}, {t}, {b1}\n",
                "vfmadd231ps {c32}, {t}, {b2}\n",
                "add {a}, 16\n",
            )
        };
    }

    /// Reduction over a packed panel, rows `ld` floats apart.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn strided(kc: usize, a: *const f32, b: *const f32, ld: usize) -> Acc {
        let z = _mm256_setzero_ps();
        let (mut c00, mut c01, mut c02, mut c10, mut c11, mut c12) = (z, z, z, z, z, z);
        let (mut c20, mut c21, mut c22, mut c30, mut c31, mut c32) = (z, z, z, z, z, z);
        if kc > 0 {
            std::arch::asm!(
                "2:",
                "vmovups {b0}, ymmword ptr [{b}]",
                "vmovups {b1}, ymmword ptr [{b} + 32]",
                "vmovups {b2}, ymmword ptr [{b} + 64]",
                fma_rows!(),
                "add {b}, {ld}",
                "dec {k}",
                "jnz 2b",
                a = inout(reg) a => _,
                b = inout(reg) b => _,
                k = inout(reg) kc => _,
                ld = in(reg) ld * 4,
                b0 = out(ymm_reg) _,
                b1 = out(ymm_reg) _,
                b2 = out(ymm_reg) _,
                t = out(ymm_reg) _,
                c00 = inout(ymm_reg) c00,
                c01 = inout(ymm_reg) c01,
                c02 = inout(ymm_reg) c02,
                c10 = inout(ymm_reg) c10,
                c11 = inout(ymm_reg) c11,
                c12 = inout(ymm_reg) c12,
                c20 = inout(ymm_reg) c20,
                c21 = inout(ymm_reg) c21,
                c22 = inout(ymm_reg) c22,
                c30 = inout(ymm_reg) c30,
                c31 = inout(ymm_reg) c31,
                c32 = inout(ymm_reg) c32,
                options(nostack, readonly),
            );
        }
        [[c00, c01, c02], [c10, c11, c12], [c20, c21, c22], [c30, c31, c32]]
    }

    /// Reduction over rows read in place at `base + offsets[l]`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn indexed(kc: usize, a: *const f32, base: *const f32, offsets: *const usize) -> Acc {
        let z = _mm256_setzero_ps();
        let (mut c00, mut c01, mut c02, mut c10, mut c11, mut c12) = (z, z, z, z, z, z);
        let (mut c20, mut c21, mut c22, mut c30, mut c31, mut c32) = (z, z, z, z, z, z);
        if kc > 0 {
            std::arch::asm!(
                "2:",
                "mov {o}, qword ptr [{off}]",
                "vmovups {b0}, ymmword ptr [{base} + 4 * {o}]",
                "vmovups {b1}, ymmword ptr [{base} + 4 * {o} + 32]",
                "vmovups {b2}, ymmword ptr [{base} + 4 * {o} + 64]",
                fma_rows!(),
                "add {off}, 8",
                "dec {k}",
                "jnz 2b",
                a = inout(reg) a => _,
                off = inout(reg) offsets => _,
                k = inout(reg) kc => _,
                o = out(reg) _,
                base = in(reg) base,
                b0 = out(ymm_reg) _,
                b1 = out(ymm_reg) _,
                b2 = out(ymm_reg) _,
                t = out(ymm_reg) _,
                c00 = inout(ymm_reg) c00,
                c01 = inout(ymm_reg) c01,
                c02 = inout(ymm_reg) c02,
                c10 = inout(ymm_reg) c10,
                c11 = inout(ymm_reg) c11,
                c12 = inout(ymm_reg) c12,
                c20 = inout(ymm_reg) c20,
                c21 = inout(ymm_reg) c21,
                c22 = inout(ymm_reg) c22,
                c30 = inout(ymm_reg) c30,
                c31 = inout(ymm_reg) c31,
                c32 = inout(ymm_reg) c32,
                options(nostack, readonly),
            );
        }
        [[c00, c01, c02], [c10, c11, c12], [c20, c21, c22], [c30, c31, c32]]
    }
}

/// The AVX-512 form of the tile for two groups of rows at once: 8 rows by 24 columns, each row a
/// 16-lane and an 8-lane accumulator, so the packed layouts (`MR` = 4, `NR` = 24) stay as they
/// are for every ISA and the convolution code does not branch on it.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{store_scalar, Epilogue, Rows, MR, NR};
    use std::arch::x86_64::*;

    const _: () = assert!(MR == 4 && NR == 24, "the AVX-512 tile is written out for 2 x 4 x 24");

    /// Per row: columns 0..16 in a 16-lane register, columns 16..24 in the low half of another.
    type Acc = [(__m512, __m512); 8];

    /// # Safety
    /// The CPU must support AVX-512F; `a` and `a + a_stride` must each hold `kc * MR` floats,
    /// and otherwise the contract of [`super::tile`] with up to `2 * MR` rows.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
    pub(super) unsafe fn tile8(
        kc: usize,
        a: *const f32,
        a_stride: usize,
        b: Rows,
        c: *mut f32,
        ldc: usize,
        rows: usize,
        cols: usize,
        ep: &Epilogue,
    ) {
        super::prefetch_output(c, ldc, rows);
        let acc = match b {
            Rows::Strided { ptr, ld } => strided(kc, a, a_stride, ptr, ld),
            Rows::Indexed { base, offsets } => indexed(kc, a, a_stride, base, offsets),
        };
        if rows == 2 * MR && cols == NR {
            let zero = _mm512_setzero_ps();
            for (r, &(lo, hi)) in acc.iter().enumerate() {
                let bias = _mm512_set1_ps(ep.bias.map_or(0.0, |b| b[r]));
                let dst = c.add(r * ldc);
                let mut lo = _mm512_add_ps(lo, bias);
                let mut hi = _mm256_add_ps(_mm512_castps512_ps256(hi), _mm512_castps512_ps256(bias));
                if ep.accumulate {
                    lo = _mm512_add_ps(lo, _mm512_loadu_ps(dst));
                    hi = _mm256_add_ps(hi, _mm256_loadu_ps(dst.add(16)));
                }
                if ep.relu {
                    lo = _mm512_max_ps(lo, zero);
                    hi = _mm256_max_ps(hi, _mm512_castps512_ps256(zero));
                }
                _mm512_storeu_ps(dst, lo);
                _mm256_storeu_ps(dst.add(16), hi);
            }
            return;
        }
        let mut spill = [[[0f32; NR]; MR]; 2];
        for (r, &(lo, hi)) in acc.iter().enumerate() {
            let row = spill[r / MR][r % MR].as_mut_ptr();
            _mm512_storeu_ps(row, lo);
            _mm256_storeu_ps(row.add(16), _mm512_castps512_ps256(hi));
        }
        store_scalar(&spill[0], c, ldc, rows.min(MR), cols, ep);
        if rows > MR {
            let second = Epilogue { bias: ep.bias.map(|b| &b[MR..]), ..*ep };
            store_scalar(&spill[1], c.add(MR * ldc), ldc, rows - MR, cols, &second);
        }
    }

    /// Reduction over a packed panel, rows `ld` floats apart.
    #[inline]
    #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
    unsafe fn strided(kc: usize, a: *const f32, a_stride: usize, b: *const f32, ld: usize) -> Acc {
        reduce(kc, a, a_stride, |l| b.add(l * ld))
    }

    /// Reduction over rows read in place at `base + offsets[l]`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
    unsafe fn indexed(kc: usize, a: *const f32, a_stride: usize, base: *const f32, offsets: *const usize) -> Acc {
        reduce(kc, a, a_stride, |l| base.add(*offsets.add(l)))
    }

    /// The eight-row reduction: per depth step, one 16-lane and one 8-lane load of the
    /// right-operand row, then for each row a broadcast and two FMAs.
    ///
    /// Written with intrinsics, unlike the AVX2 tile: 16 accumulators, two operand registers and
    /// a broadcast fit the 32 vector registers with room to spare, so the compiler keeps them all
    /// in place, and hand-written assembly for it ran out of general registers once inlined.
    #[inline]
    #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
    unsafe fn reduce(kc: usize, a: *const f32, a_stride: usize, row: impl Fn(usize) -> *const f32) -> Acc {
        let mut lo = [_mm512_setzero_ps(); 8];
        let mut hi = [_mm256_setzero_ps(); 8];
        for l in 0..kc {
            let b = row(l);
            let (b0, b1) = (_mm512_loadu_ps(b), _mm256_loadu_ps(b.add(16)));
            let (a0, a1) = (a.add(l * MR), a.add(a_stride + l * MR));
            for r in 0..8 {
                let v = if r < MR { *a0.add(r) } else { *a1.add(r - MR) };
                lo[r] = _mm512_fmadd_ps(_mm512_set1_ps(v), b0, lo[r]);
                hi[r] = _mm256_fmadd_ps(_mm256_set1_ps(v), b1, hi[r]);
            }
        }
        std::array::from_fn(|r| (lo[r], _mm512_castps256_ps512(hi[r])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761) | 1;
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state >> 8) as f32 / (1u32 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// The dispatched kernel (AVX2 where available) and the portable one agree on every
    /// epilogue and tile shape.
    #[test]
    fn dispatched_tile_matches_portable_tile() {
        let kc = 37;
        let a = values(kc * MR, 1);
        let b = values(kc * NR, 2);
        let bias = values(MR, 3);
        for (rows, cols) in [(MR, NR), (3, NR), (MR, 5), (1, 1)] {
            for (accumulate, with_bias, relu) in [(false, false, false), (true, true, true), (false, true, true)] {
                let ep = Epilogue { accumulate, bias: with_bias.then_some(&bias[..]), relu };
                let start = values(MR * NR, 4);
                let (mut fast, mut slow) = (start.clone(), start);
                // SAFETY: the buffers hold full tiles.
                unsafe {
                    tile(
                        kc,
                        a.as_ptr(),
                        Rows::Strided { ptr: b.as_ptr(), ld: NR },
                        fast.as_mut_ptr(),
                        NR,
                        rows,
                        cols,
                        &ep,
                    );
                    portable_tile(
                        kc,
                        a.as_ptr(),
                        Rows::Strided { ptr: b.as_ptr(), ld: NR },
                        slow.as_mut_ptr(),
                        NR,
                        rows,
                        cols,
                        &ep,
                    );
                }
                for (x, y) in fast.iter().zip(&slow) {
                    assert!((x - y).abs() <= 1e-4, "{x} vs {y} for {rows}x{cols}");
                }
                // Rows read in place, here in reverse order, give the same tile.
                let reversed: Vec<f32> = b.chunks_exact(NR).rev().flatten().copied().collect();
                let offsets: Vec<usize> = (0..kc).map(|l| (kc - 1 - l) * NR).collect();
                let mut indexed = values(MR * NR, 4);
                // SAFETY: every offset leaves a full row inside `reversed`.
                unsafe {
                    let rows_in_place = Rows::Indexed { base: reversed.as_ptr(), offsets: offsets.as_ptr() };
                    tile(kc, a.as_ptr(), rows_in_place, indexed.as_mut_ptr(), NR, rows, cols, &ep);
                }
                for (x, y) in indexed.iter().zip(&slow) {
                    assert!((x - y).abs() <= 1e-4, "indexed {x} vs {y} for {rows}x{cols}");
                }
            }
        }
    }

    /// Stacked groups of rows (two at a time on AVX-512) match the portable tile run group by
    /// group, for whole and partial tiles, every epilogue, and both ways of reading the rows.
    #[test]
    fn stacked_tiles_match_portable_tiles_group_by_group() {
        let kc = 29;
        let stride = kc * MR + 3;
        for total_rows in [8usize, 12, 7, 5, 3, 16] {
            let groups = total_rows.div_ceil(MR);
            let a = values(groups * stride, 5);
            let b = values(kc * NR, 6);
            let bias = values(total_rows, 7);
            let offsets: Vec<usize> = (0..kc).map(|l| (kc - 1 - l) * NR).collect();
            let reversed: Vec<f32> = b.chunks_exact(NR).rev().flatten().copied().collect();
            for cols in [NR, 5] {
                for (accumulate, with_bias, relu) in [(false, false, false), (true, true, true), (false, true, true)] {
                    let ep = Epilogue { accumulate, bias: with_bias.then_some(&bias[..]), relu };
                    let start = values(total_rows * NR, 8);
                    let mut want = start.clone();
                    for g in 0..groups {
                        let rows = MR.min(total_rows - g * MR);
                        let gep = Epilogue { bias: ep.bias.map(|b| &b[g * MR..]), ..ep };
                        // SAFETY: group g's operand and its output rows are in bounds.
                        unsafe {
                            portable_tile(
                                kc,
                                a.as_ptr().add(g * stride),
                                Rows::Strided { ptr: b.as_ptr(), ld: NR },
                                want.as_mut_ptr().add(g * MR * NR),
                                NR,
                                rows,
                                cols,
                                &gep,
                            )
                        };
                    }
                    // The 8-row AVX-512 kernel where this CPU has it, and the 4-row tiles: the
                    // same bits either way.
                    let mut outputs = Vec::new();
                    for wide in [false, crate::kernels::cpu::has_avx512f()] {
                        let (mut strided, mut indexed) = (start.clone(), start.clone());
                        // SAFETY: every group's operand and output rows are in bounds; `wide`
                        // only where the CPU runs AVX-512F.
                        unsafe {
                            let rows_b = Rows::Strided { ptr: b.as_ptr(), ld: NR };
                            let out = strided.as_mut_ptr();
                            tiles(wide, kc, a.as_ptr(), stride, rows_b, out, NR, total_rows, cols, &ep);
                            let rows_b = Rows::Indexed { base: reversed.as_ptr(), offsets: offsets.as_ptr() };
                            let out = indexed.as_mut_ptr();
                            tiles(wide, kc, a.as_ptr(), stride, rows_b, out, NR, total_rows, cols, &ep);
                        }
                        for ((x, y), z) in strided.iter().zip(&indexed).zip(&want) {
                            assert!(
                                (x - z).abs() <= 1e-4 && (y - z).abs() <= 1e-4,
                                "{x} / {y} vs {z}: {total_rows}x{cols}, wide {wide}"
                            );
                        }
                        outputs.push(strided);
                    }
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&outputs[0]), bits(&outputs[1]), "{total_rows}x{cols}");
                }
            }
        }
    }
}
