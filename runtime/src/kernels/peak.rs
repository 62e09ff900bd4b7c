//! The machine's measured single-precision FMA peak, for reporting kernels as a fraction of it.
//!
//! A figure written into the code would be wrong on the next CPU: the same machine class comes
//! with AVX2 parts (two 8-lane FMA ports) and AVX-512 parts (one or two 16-lane ports), at
//! different clocks. So the peak is measured with a loop that does nothing but independent
//! FMAs on registers, on the instruction set the kernels dispatch to, on every kernel thread at
//! once (the clock under all-core vector load is what the kernels get).

use std::time::Instant;

use rayon::prelude::*;

use super::cpu::{active_isa, threads, IsaLevel};

/// Independent accumulator chains: enough to cover FMA latency (4 cycles) times two ports.
const CHAINS: usize = 12;

/// GFLOP/s of FMA-only work on all kernel threads for about `seconds`, with the active ISA.
///
/// Each thread runs batches of register-only FMAs until the time is up; the figure counts two
/// flops per lane per FMA. The best of three rounds is kept, so a short disturbance on a shared
/// machine does not lower it.
pub fn measured_peak_gflops(seconds: f64) -> f64 {
    let isa = active_isa();
    let round = |budget: f64| {
        let threads = threads();
        let start = Instant::now();
        let flops: f64 = (0..threads)
            .into_par_iter()
            .map(|_| {
                let mut done = 0.0;
                while start.elapsed().as_secs_f64() < budget {
                    done += fma_batch(isa, 1 << 16);
                }
                done
            })
            .sum();
        flops / start.elapsed().as_secs_f64() / 1e9
    };
    round(0.05);
    (0..3).map(|_| round(seconds / 3.0)).fold(0.0, f64::max)
}

/// The least speed-up of 16-lane over 8-lane FMAs, per flop, for which [`wide_fma_pays`] holds.
/// CPUs with two 512-bit FMA ports measure about 1.8 (Intel Xeon); those that split a 512-bit
/// FMA into two 256-bit halves, or have one 512-bit port, about 1.0 (AMD Zen 4).
const WIDE_FMA_MIN_SPEEDUP: f64 = 1.4;

/// Whether 16-lane FMAs do more arithmetic per second than 8-lane ones on this CPU, measured
/// once per process on the calling thread (well under a millisecond).
///
/// Kernels whose only gain from AVX-512 is the vector width use it to pick their 8-lane form
/// where the wide one is no faster: the convolution's 8-row AVX-512 tile ran conv2 at 172-187
/// GFLOP/s on Zen 4 against 195-200 for the AVX2 tile. Both tiles compute the same products in
/// the same order, so the choice changes speed only, never a result, and a measurement
/// disturbed by a busy neighbour costs at most that difference.
pub(crate) fn wide_fma_pays() -> bool {
    static PAYS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PAYS.get_or_init(|| active_isa() >= IsaLevel::Avx512 && wide_fma_speedup() >= WIDE_FMA_MIN_SPEEDUP)
}

/// Flops per second of 16-lane FMAs over those of 8-lane FMAs on one thread: the fastest of
/// seven interleaved short batches of each, so a preemption in one batch does not decide it.
fn wide_fma_speedup() -> f64 {
    let rate = |isa: IsaLevel| {
        let start = Instant::now();
        let flops = fma_batch(isa, 1 << 12);
        flops / start.elapsed().as_secs_f64().max(1e-9)
    };
    let (mut wide, mut narrow) = (0f64, 0f64);
    for _ in 0..7 {
        wide = wide.max(rate(IsaLevel::Avx512));
        narrow = narrow.max(rate(IsaLevel::Avx2Fma));
    }
    wide / narrow.max(1e-9)
}

/// Runs `iterations` rounds of [`CHAINS`] FMAs with `isa` and returns the flops done.
fn fma_batch(isa: IsaLevel, iterations: usize) -> f64 {
    let lanes = match isa {
        #[cfg(target_arch = "x86_64")]
        IsaLevel::Avx512 => {
            // SAFETY: `active_isa` only reports AVX-512 where the CPU runs it.
            std::hint::black_box(unsafe { x86::fma512(iterations) });
            16
        }
        #[cfg(target_arch = "x86_64")]
        IsaLevel::Avx2Fma => {
            // SAFETY: `active_isa` only reports AVX2+FMA where the CPU runs it.
            std::hint::black_box(unsafe { x86::fma256(iterations) });
            8
        }
        _ => {
            std::hint::black_box(portable(iterations));
            8
        }
    };
    (iterations * CHAINS * lanes * 2) as f64
}

/// The baseline ISA's best effort: eight-wide arrays the compiler may vectorise.
fn portable(iterations: usize) -> f32 {
    let mut acc = [[1f32; 8]; CHAINS];
    let (a, b) = (std::hint::black_box(0.999_f32), std::hint::black_box(1e-7_f32));
    for _ in 0..iterations {
        for chain in acc.iter_mut() {
            for x in chain.iter_mut() {
                *x = x.mul_add(a, b);
            }
        }
    }
    acc.iter().flatten().sum()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::CHAINS;

    /// `CHAINS` chains of 16-lane FMAs; returns a lane so nothing is optimised away.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn fma512(iterations: usize) -> f32 {
        let a = _mm512_set1_ps(std::hint::black_box(0.999));
        let b = _mm512_set1_ps(std::hint::black_box(1e-7));
        let mut acc = [_mm512_set1_ps(1.0); CHAINS];
        for _ in 0..iterations {
            for x in acc.iter_mut() {
                *x = _mm512_fmadd_ps(*x, a, b);
            }
        }
        let mut sum = _mm512_setzero_ps();
        for x in acc {
            sum = _mm512_add_ps(sum, x);
        }
        _mm512_reduce_add_ps(sum)
    }

    /// `CHAINS` chains of 8-lane FMAs; returns a lane so nothing is optimised away.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn fma256(iterations: usize) -> f32 {
        let a = _mm256_set1_ps(std::hint::black_box(0.999));
        let b = _mm256_set1_ps(std::hint::black_box(1e-7));
        let mut acc = [_mm256_set1_ps(1.0); CHAINS];
        for _ in 0..iterations {
            for x in acc.iter_mut() {
                *x = _mm256_fmadd_ps(*x, a, b);
            }
        }
        let mut sum = _mm256_setzero_ps();
        for x in acc {
            sum = _mm256_add_ps(sum, x);
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), sum);
        lanes.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The speed-up is a real ratio of two timings where AVX-512 runs, and AVX-512 tiles are
    /// never picked where the kernels may not use it.
    #[test]
    fn the_wide_fma_check_measures_a_ratio_and_respects_the_isa() {
        if active_isa() >= IsaLevel::Avx512 {
            let speedup = wide_fma_speedup();
            assert!(speedup.is_finite() && speedup > 0.2 && speedup < 5.0, "{speedup}");
        } else {
            assert!(!wide_fma_pays());
        }
    }

    /// The loop does the arithmetic it counts: the chains converge to the fixed point
    /// b / (1 - a) = 1e-4 from 1.0, so a loop that skipped iterations would return more.
    #[test]
    fn the_fma_loops_do_every_iteration() {
        let isa = active_isa();
        let flops = fma_batch(isa, 100_000);
        assert!(flops > 0.0);
        let lanes = match isa {
            IsaLevel::Avx512 => 16.0,
            _ => 8.0,
        };
        let chains = (CHAINS as f32) * lanes;
        let got = match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the active ISA runs here.
            IsaLevel::Avx512 => unsafe { x86::fma512(100_000) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            IsaLevel::Avx2Fma => unsafe { x86::fma256(100_000) },
            _ => portable(100_000),
        };
        let per_lane = got / chains;
        assert!((per_lane - 1e-4).abs() < 2e-5, "each lane should reach 1e-4, got {per_lane}");
        let few = portable(10) / (CHAINS as f32 * 8.0);
        assert!(few > 0.98, "ten iterations leave about 0.99, got {few}");
    }
}
