//! Explicit float vectors of 8 (AVX2) and 16 (AVX-512) lanes, for direct kernels whose inner
//! loops the compiler does not block well on its own: depthwise convolution and pooling.
//!
//! Each kernel is written once, generic over [`Lanes`], and [`with_lanes`] compiles it for the
//! instruction set it is asked to run. Every operation is a single IEEE operation per lane
//! (no fused multiply-add), so a kernel gives the same bits at either width as a scalar loop
//! that does the same operations in the same order.

use super::cpu::IsaLevel;

/// A vector of `LANES` floats. Loads and stores take a count `n <= LANES` of lanes to touch;
/// the other lanes read as zero and are never written, so rows of any length need no padding.
///
/// Every method is `unsafe`: it may only run on a CPU with the type's instruction set, which
/// [`with_lanes`] guarantees, and pointer arguments must be valid for the lanes they touch.
pub(crate) trait Lanes: Copy {
    /// Floats per vector.
    const LANES: usize;
    /// Every lane `v`.
    unsafe fn splat(v: f32) -> Self;
    /// Reads `n` consecutive floats.
    unsafe fn load(p: *const f32, n: usize) -> Self;
    /// Reads `n` floats `stride` apart.
    unsafe fn load_strided(p: *const f32, stride: usize, n: usize) -> Self;
    /// Reads `len <= 2 * LANES` consecutive floats and splits them into the even-indexed and
    /// the odd-indexed ones.
    unsafe fn load_pairs(p: *const f32, len: usize) -> (Self, Self);
    /// Writes the first `n` lanes to consecutive floats.
    unsafe fn store(self, p: *mut f32, n: usize);
    /// Interleaves `even` and `odd` and writes the first `len <= 2 * LANES` floats of the result.
    unsafe fn store_pairs(p: *mut f32, even: Self, odd: Self, len: usize);
    /// `self + b`.
    unsafe fn add(self, b: Self) -> Self;
    /// `self * b`.
    unsafe fn mul(self, b: Self) -> Self;
    /// `self / b`.
    unsafe fn div(self, b: Self) -> Self;
    /// `b` where `b > self`, else `self` (candle's max-pool tie rule: the first maximum wins,
    /// and a NaN in `b` is skipped).
    unsafe fn max_keep(self, b: Self) -> Self;
    /// `f32::max(self, 0.0)` as the compiler lowers it: everything not greater than zero,
    /// `-0.0` and NaN included, becomes `+0.0`.
    unsafe fn relu(self) -> Self;
    /// `x` where `self == b`, else `+0.0`.
    unsafe fn where_eq(self, b: Self, x: Self) -> Self;
    /// `x` where `self > b`, else `+0.0`.
    unsafe fn where_gt(self, b: Self, x: Self) -> Self;
}

/// Copies `src` into `dst`, of the same length, a vector at a time: for rows of a few dozen
/// floats, a call into `memcpy` costs more than the copy.
///
/// # Safety
/// The CPU must run `V`'s instruction set.
#[inline(always)]
pub(crate) unsafe fn copy<V: Lanes>(dst: &mut [f32], src: &[f32]) {
    assert_eq!(dst.len(), src.len());
    for i in (0..src.len()).step_by(V::LANES) {
        let n = (src.len() - i).min(V::LANES);
        // SAFETY: both slices hold `n` floats from `i`.
        unsafe { V::load(src.as_ptr().add(i), n).store(dst.as_mut_ptr().add(i), n) };
    }
}

/// Runs `$simd` with `$V` naming the [`Lanes`] type of instruction set `$isa`, compiled with
/// that instruction set enabled, and runs `$portable` for [`IsaLevel::Portable`] and on other
/// architectures.
///
/// `$isa` must be at most what the CPU supports: [`supported`] checks it.
macro_rules! with_lanes {
    ($isa:expr, $V:ident => $simd:expr, portable => $portable:expr) => {{
        let isa: $crate::kernels::cpu::IsaLevel = $isa;
        debug_assert!($crate::kernels::simd::supported(isa), "{isa:?} runs on this CPU");
        match isa {
            #[cfg(target_arch = "x86_64")]
            $crate::kernels::cpu::IsaLevel::Avx512 => {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn run<R>(f: impl FnOnce() -> R) -> R {
                    f()
                }
                #[allow(dead_code)]
                type $V = $crate::kernels::simd::F32x16;
                let f = || $simd;
                // SAFETY: the CPU supports AVX-512F (the caller's contract, checked above).
                unsafe { run(f) }
            }
            #[cfg(target_arch = "x86_64")]
            $crate::kernels::cpu::IsaLevel::Avx2Fma => {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn run<R>(f: impl FnOnce() -> R) -> R {
                    f()
                }
                #[allow(dead_code)]
                type $V = $crate::kernels::simd::F32x8;
                let f = || $simd;
                // SAFETY: the CPU supports AVX2 (the caller's contract, checked above).
                unsafe { run(f) }
            }
            _ => $portable,
        }
    }};
}
pub(crate) use with_lanes;

/// Whether this CPU can run the kernels of `isa`; `TANDEM_ISA` does not enter into it, so
/// tests can compare every path the CPU has.
pub(crate) fn supported(isa: IsaLevel) -> bool {
    isa <= super::cpu::detected_isa()
}

/// Every instruction set this CPU runs, the portable one first: what tests compare.
#[cfg(test)]
pub(crate) fn supported_levels() -> Vec<IsaLevel> {
    [IsaLevel::Portable, IsaLevel::Avx2Fma, IsaLevel::Avx512].into_iter().filter(|&l| supported(l)).collect()
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{F32x16, F32x8};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::Lanes;

    /// Eight lanes in an AVX2 register.
    #[derive(Clone, Copy)]
    pub(crate) struct F32x8(__m256);

    /// Sixteen lanes in an AVX-512 register.
    #[derive(Clone, Copy)]
    pub(crate) struct F32x16(__m512);

    /// All ones in the first `n` lanes: AVX2's load and store mask.
    #[inline(always)]
    unsafe fn mask8(n: usize) -> __m256i {
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
    }

    /// The first `n` bits: AVX-512's load and store mask.
    #[inline(always)]
    fn mask16(n: usize) -> __mmask16 {
        ((1u32 << n.min(16)) - 1) as __mmask16
    }

    impl Lanes for F32x8 {
        const LANES: usize = 8;

        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            Self(_mm256_set1_ps(v))
        }

        #[inline(always)]
        unsafe fn load(p: *const f32, n: usize) -> Self {
            if n >= 8 {
                // SAFETY: the caller's contract.
                Self(unsafe { _mm256_loadu_ps(p) })
            } else {
                // SAFETY: the caller's contract; masked-off lanes are not read.
                Self(unsafe { _mm256_maskload_ps(p, mask8(n)) })
            }
        }

        #[inline(always)]
        unsafe fn load_strided(p: *const f32, stride: usize, n: usize) -> Self {
            let s = stride as i32;
            let idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(s));
            let mask = _mm256_castsi256_ps(mask8(n));
            // SAFETY: the caller's contract; masked-off lanes are not read.
            Self(unsafe { _mm256_mask_i32gather_ps::<4>(_mm256_setzero_ps(), p, idx, mask) })
        }

        #[inline(always)]
        unsafe fn load_pairs(p: *const f32, len: usize) -> (Self, Self) {
            // SAFETY: the caller's contract; the second half is only formed when it has lanes.
            let (lo, hi) = unsafe {
                let lo = Self::load(p, len).0;
                let hi = if len > 8 { Self::load(p.add(8), len - 8).0 } else { _mm256_setzero_ps() };
                (lo, hi)
            };
            // Within each 128-bit half: [lo0 lo2 hi0 hi2 | lo4 lo6 hi4 hi6]; then the 64-bit
            // blocks are put in order 0, 2, 1, 3.
            let even = _mm256_shuffle_ps::<0b10_00_10_00>(lo, hi);
            let odd = _mm256_shuffle_ps::<0b11_01_11_01>(lo, hi);
            let order = |v: __m256| _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)));
            (Self(order(even)), Self(order(odd)))
        }

        #[inline(always)]
        unsafe fn store(self, p: *mut f32, n: usize) {
            if n >= 8 {
                // SAFETY: the caller's contract.
                unsafe { _mm256_storeu_ps(p, self.0) }
            } else {
                // SAFETY: the caller's contract; masked-off lanes are not written.
                unsafe { _mm256_maskstore_ps(p, mask8(n), self.0) }
            }
        }

        #[inline(always)]
        unsafe fn store_pairs(p: *mut f32, even: Self, odd: Self, len: usize) {
            let (a, b) = (_mm256_unpacklo_ps(even.0, odd.0), _mm256_unpackhi_ps(even.0, odd.0));
            let lo = Self(_mm256_permute2f128_ps::<0x20>(a, b));
            let hi = Self(_mm256_permute2f128_ps::<0x31>(a, b));
            // SAFETY: the caller's contract; the second half is only written when it has lanes.
            unsafe {
                lo.store(p, len);
                if len > 8 {
                    hi.store(p.add(8), len - 8);
                }
            }
        }

        #[inline(always)]
        unsafe fn add(self, b: Self) -> Self {
            Self(_mm256_add_ps(self.0, b.0))
        }

        #[inline(always)]
        unsafe fn mul(self, b: Self) -> Self {
            Self(_mm256_mul_ps(self.0, b.0))
        }

        #[inline(always)]
        unsafe fn div(self, b: Self) -> Self {
            Self(_mm256_div_ps(self.0, b.0))
        }

        #[inline(always)]
        unsafe fn max_keep(self, b: Self) -> Self {
            // `vmaxps b, a` returns its second operand unless the first is greater.
            Self(_mm256_max_ps(b.0, self.0))
        }

        #[inline(always)]
        unsafe fn relu(self) -> Self {
            // `vmaxps a, 0` returns its second operand unless the first is greater.
            Self(_mm256_max_ps(self.0, _mm256_setzero_ps()))
        }

        #[inline(always)]
        unsafe fn where_eq(self, b: Self, x: Self) -> Self {
            Self(_mm256_and_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(self.0, b.0), x.0))
        }

        #[inline(always)]
        unsafe fn where_gt(self, b: Self, x: Self) -> Self {
            Self(_mm256_and_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(self.0, b.0), x.0))
        }
    }

    impl Lanes for F32x16 {
        const LANES: usize = 16;

        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            Self(_mm512_set1_ps(v))
        }

        #[inline(always)]
        unsafe fn load(p: *const f32, n: usize) -> Self {
            // SAFETY: the caller's contract; masked-off lanes are not read.
            Self(unsafe { _mm512_maskz_loadu_ps(mask16(n), p) })
        }

        #[inline(always)]
        unsafe fn load_strided(p: *const f32, stride: usize, n: usize) -> Self {
            let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
            let idx = _mm512_mullo_epi32(lanes, _mm512_set1_epi32(stride as i32));
            // SAFETY: the caller's contract; masked-off lanes are not read.
            Self(unsafe { _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), mask16(n), idx, p) })
        }

        #[inline(always)]
        unsafe fn load_pairs(p: *const f32, len: usize) -> (Self, Self) {
            // SAFETY: the caller's contract; the second half is only read when it has lanes.
            let (lo, hi) = unsafe {
                let lo = _mm512_maskz_loadu_ps(mask16(len), p);
                let hi =
                    if len > 16 { _mm512_maskz_loadu_ps(mask16(len - 16), p.add(16)) } else { _mm512_setzero_ps() };
                (lo, hi)
            };
            let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
            (Self(_mm512_permutex2var_ps(lo, even, hi)), Self(_mm512_permutex2var_ps(lo, odd, hi)))
        }

        #[inline(always)]
        unsafe fn store(self, p: *mut f32, n: usize) {
            // SAFETY: the caller's contract; masked-off lanes are not written.
            unsafe { _mm512_mask_storeu_ps(p, mask16(n), self.0) }
        }

        #[inline(always)]
        unsafe fn store_pairs(p: *mut f32, even: Self, odd: Self, len: usize) {
            let lo_idx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
            let hi_idx = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
            // SAFETY: the caller's contract; the second half is only written when it has lanes.
            unsafe {
                _mm512_mask_storeu_ps(p, mask16(len), _mm512_permutex2var_ps(even.0, lo_idx, odd.0));
                if len > 16 {
                    let hi = _mm512_permutex2var_ps(even.0, hi_idx, odd.0);
                    _mm512_mask_storeu_ps(p.add(16), mask16(len - 16), hi);
                }
            }
        }

        #[inline(always)]
        unsafe fn add(self, b: Self) -> Self {
            Self(_mm512_add_ps(self.0, b.0))
        }

        #[inline(always)]
        unsafe fn mul(self, b: Self) -> Self {
            Self(_mm512_mul_ps(self.0, b.0))
        }

        #[inline(always)]
        unsafe fn div(self, b: Self) -> Self {
            Self(_mm512_div_ps(self.0, b.0))
        }

        #[inline(always)]
        unsafe fn max_keep(self, b: Self) -> Self {
            // `vmaxps b, a` returns its second operand unless the first is greater.
            Self(_mm512_max_ps(b.0, self.0))
        }

        #[inline(always)]
        unsafe fn relu(self) -> Self {
            // `vmaxps a, 0` returns its second operand unless the first is greater.
            Self(_mm512_max_ps(self.0, _mm512_setzero_ps()))
        }

        #[inline(always)]
        unsafe fn where_eq(self, b: Self, x: Self) -> Self {
            Self(_mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_EQ_OQ>(self.0, b.0), x.0))
        }

        #[inline(always)]
        unsafe fn where_gt(self, b: Self, x: Self) -> Self {
            Self(_mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(self.0, b.0), x.0))
        }
    }
}
