//! CPU plumbing shared by the kernels: feature detection, scratch buffers, shared output.

use std::sync::OnceLock;

use rayon::prelude::*;

/// The instruction sets the kernels can dispatch to, from the most capable down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum IsaLevel {
    /// Plain Rust, vectorised by the compiler for the baseline target.
    Portable,
    /// AVX2 with FMA: 8-lane vectors, 16 registers.
    Avx2Fma,
    /// AVX-512F and VL on top of AVX2+FMA: 16-lane vectors, 32 registers, and the 8-lane forms
    /// of its instructions on registers 16 to 31.
    Avx512,
}

impl IsaLevel {
    /// The name `isa_name` reports and `TANDEM_ISA` accepts.
    pub fn name(self) -> &'static str {
        match self {
            IsaLevel::Portable => "portable",
            IsaLevel::Avx2Fma => "avx2+fma",
            IsaLevel::Avx512 => "avx512",
        }
    }

    /// Parses a `TANDEM_ISA` value; `avx2` is accepted for `avx2+fma`.
    pub fn parse(text: &str) -> Option<IsaLevel> {
        match text.trim().to_ascii_lowercase().as_str() {
            "portable" => Some(IsaLevel::Portable),
            "avx2" | "avx2+fma" => Some(IsaLevel::Avx2Fma),
            "avx512" => Some(IsaLevel::Avx512),
            _ => None,
        }
    }
}

/// The environment variable that caps the instruction set the kernels use, e.g. `avx2` on an
/// AVX-512 host: how CI tests the AVX2 path on any host, and how users rule out a kernel.
pub const ISA_VARIABLE: &str = "TANDEM_ISA";

/// The most capable instruction set this CPU supports, ignoring `TANDEM_ISA`.
pub fn detected_isa() -> IsaLevel {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx2") && has!("fma") {
            return if has!("avx512f") && has!("avx512vl") { IsaLevel::Avx512 } else { IsaLevel::Avx2Fma };
        }
    }
    IsaLevel::Portable
}

/// The instruction set the kernels dispatch to: the detected one, capped by `TANDEM_ISA`.
///
/// Read once, because code paths must not change under a running model. A value the CPU
/// cannot run is capped at what it can, and an unknown value is ignored, both with a warning.
pub fn active_isa() -> IsaLevel {
    static ACTIVE: OnceLock<IsaLevel> = OnceLock::new();
    *ACTIVE.get_or_init(|| {
        let detected = detected_isa();
        let Ok(wanted) = std::env::var(ISA_VARIABLE) else { return detected };
        match IsaLevel::parse(&wanted) {
            Some(level) if level <= detected => level,
            Some(level) => {
                tracing::warn!(
                    "{ISA_VARIABLE}={} asks for more than this CPU supports; using {}",
                    level.name(),
                    detected.name()
                );
                detected
            }
            None => {
                tracing::warn!(
                    "{ISA_VARIABLE}={wanted:?} is not one of avx512, avx2, portable; using {}",
                    detected.name()
                );
                detected
            }
        }
    })
}

/// Whether the kernels take the AVX2+FMA code paths (also true on AVX-512 hosts).
#[inline]
pub(crate) fn has_avx2_fma() -> bool {
    active_isa() >= IsaLevel::Avx2Fma
}

/// Whether the kernels take the AVX-512 code paths.
#[inline]
pub(crate) fn has_avx512f() -> bool {
    active_isa() >= IsaLevel::Avx512
}

/// The instruction set the kernels dispatch to on this CPU: `avx512`, `avx2+fma` or `portable`.
pub fn isa_name() -> &'static str {
    active_isa().name()
}

/// Compiles `$body` twice, once for AVX2+FMA and once for the baseline ISA, and runs the
/// variant the CPU supports. Loops in the body are then vectorised eight wide where possible.
///
/// With `isa => body`, `isa` names a type implementing [`Isa`] inside the body, so it can
/// also use explicit vector helpers. Each variant gets its own closure with a single call
/// site, which the compiler inlines into the feature-enabled function.
macro_rules! dispatch {
    ($isa:ident => $body:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2,fma")]
            unsafe fn fast<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            if $crate::kernels::cpu::has_avx2_fma() {
                #[allow(dead_code)]
                type $isa = $crate::kernels::cpu::Avx2;
                let f = || $body;
                // SAFETY: the CPU supports the enabled features.
                unsafe { fast(f) }
            } else {
                #[allow(dead_code)]
                type $isa = $crate::kernels::cpu::Portable;
                let f = || $body;
                $crate::kernels::cpu::call(f)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            #[allow(dead_code)]
            type $isa = $crate::kernels::cpu::Portable;
            let f = || $body;
            $crate::kernels::cpu::call(f)
        }
    }};
    ($body:expr) => {
        $crate::kernels::cpu::dispatch!(_Isa => $body)
    };
}
pub(crate) use dispatch;

/// Runs a closure by value; the baseline branch of [`dispatch`].
#[inline(always)]
pub(crate) fn call<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Short vector helpers with one implementation per instruction set, for use inside
/// [`dispatch`] bodies.
pub(crate) trait Isa {
    /// Copies `n` floats from `src` to `dst`, possibly writing up to 7 more floats past
    /// `dst + n`; never reads past `src + n`. The overrun lets the short, variable-length
    /// runs of an im2col row use whole vectors instead of a call into `memcpy`.
    ///
    /// # Safety
    /// `src` must be readable for `n` floats and `dst` writable for `n + 7`.
    unsafe fn copy_over(dst: *mut f32, src: *const f32, n: usize);

    /// Zeroes `n` floats at `dst`, possibly up to 7 more past `dst + n`.
    ///
    /// # Safety
    /// `dst` must be writable for `n + 7` floats.
    unsafe fn zero_over(dst: *mut f32, n: usize);
}

/// The baseline instruction set.
pub(crate) struct Portable;

impl Isa for Portable {
    #[inline(always)]
    unsafe fn copy_over(dst: *mut f32, src: *const f32, n: usize) {
        // SAFETY: the caller's contract.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, n) }
    }

    #[inline(always)]
    unsafe fn zero_over(dst: *mut f32, n: usize) {
        // SAFETY: the caller's contract.
        unsafe { std::ptr::write_bytes(dst, 0, n) }
    }
}

/// AVX2; only ever named inside the AVX2 branch of [`dispatch`].
#[cfg(target_arch = "x86_64")]
pub(crate) struct Avx2;

#[cfg(target_arch = "x86_64")]
impl Isa for Avx2 {
    #[inline(always)]
    unsafe fn copy_over(dst: *mut f32, src: *const f32, n: usize) {
        use std::arch::x86_64::*;
        let mut i = 0;
        // SAFETY: the caller's contract; this type is only used where AVX2 is available.
        unsafe {
            while i + 8 <= n {
                let v = std::ptr::read_unaligned(src.add(i) as *const __m256);
                std::ptr::write_unaligned(dst.add(i) as *mut __m256, v);
                i += 8;
            }
            if i < n {
                let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((n - i) as i32), lanes);
                let v = _mm256_maskload_ps(src.add(i), mask);
                std::ptr::write_unaligned(dst.add(i) as *mut __m256, v);
            }
        }
    }

    #[inline(always)]
    unsafe fn zero_over(dst: *mut f32, n: usize) {
        use std::arch::x86_64::*;
        let mut i = 0;
        while i < n {
            // SAFETY: the caller's contract.
            unsafe { std::ptr::write_unaligned(dst.add(i) as *mut __m256, _mm256_setzero_ps()) };
            i += 8;
        }
    }
}

/// A zeroed, 64-byte (cache line) aligned float buffer, so packed panels load without line
/// splits, also with 64-byte AVX-512 vectors.
pub(crate) struct Aligned {
    raw: Vec<f32>,
    start: usize,
    len: usize,
}

impl Aligned {
    /// Allocates `len` zeroed floats.
    pub(crate) fn zeros(len: usize) -> Self {
        let raw = vec![0f32; len + 16];
        let misalign = (raw.as_ptr() as usize / 4) % 16;
        let start = (16 - misalign) % 16;
        Self { raw, start, len }
    }

    /// The usable part, read-only.
    pub(crate) fn as_slice(&self) -> &[f32] {
        &self.raw[self.start..self.start + self.len]
    }

    /// The usable part as a slice.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

/// A raw output pointer handed to worker threads that write disjoint parts of it.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(pub *mut f32);

// SAFETY: every user writes a region no other thread touches, which the callers document.
unsafe impl Send for SharedMut {}
// SAFETY: as above.
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer advanced by `offset` floats.
    ///
    /// # Safety
    /// `offset` must stay inside the allocation.
    #[inline]
    pub(crate) unsafe fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: the caller's contract.
        unsafe { self.0.add(offset) }
    }
}

/// An output buffer of floats that the kernels fill completely before handing it out.
///
/// Skipping the zero fill matters for large activations, which the kernels overwrite.
pub(crate) struct Output {
    buf: Vec<std::mem::MaybeUninit<f32>>,
}

impl Output {
    /// Reserves `len` floats without initialising them.
    pub(crate) fn new(len: usize) -> Self {
        let mut buf = Vec::with_capacity(len);
        buf.resize_with(len, std::mem::MaybeUninit::uninit);
        Self { buf }
    }

    /// Where the kernels write.
    pub(crate) fn ptr(&mut self) -> SharedMut {
        SharedMut(self.buf.as_mut_ptr().cast())
    }

    /// Takes the filled buffer.
    ///
    /// # Safety
    /// Every element must have been written through [`Output::ptr`].
    pub(crate) unsafe fn assume_init(self) -> Vec<f32> {
        let mut buf = std::mem::ManuallyDrop::new(self.buf);
        let (ptr, len, cap) = (buf.as_mut_ptr(), buf.len(), buf.capacity());
        // SAFETY: MaybeUninit<f32> has f32's layout and the caller vouches every element is
        // initialised.
        unsafe { Vec::from_raw_parts(ptr.cast::<f32>(), len, cap) }
    }
}

/// Below this many multiply-adds (or element visits) a call runs on the calling thread:
/// waking sleeping workers costs tens of microseconds, more than splitting saves, which is
/// what single-image inference would otherwise pay on every layer.
pub(crate) const PARALLEL_MIN_WORK: usize = 1 << 22;

/// Whether a call with this much work should be spread over the worker threads.
pub(crate) fn worth_splitting(work: usize) -> bool {
    work >= PARALLEL_MIN_WORK && threads() > 1
}

/// Runs `f(&mut state, i)` for every `i < n`, on the worker threads (each with its own
/// `init()` state) when `work` makes that worthwhile, else in order on this thread.
pub(crate) fn for_each_task<S, I, F>(n: usize, work: usize, init: I, f: F)
where
    I: Fn() -> S + Sync + Send,
    F: Fn(&mut S, usize) + Sync + Send,
{
    if worth_splitting(work) {
        (0..n).into_par_iter().for_each_init(init, f);
    } else {
        let mut state = init();
        (0..n).for_each(|i| f(&mut state, i));
    }
}

/// Number of worker threads the kernels spread work over.
pub(crate) fn threads() -> usize {
    rayon::current_num_threads().max(1)
}
