//! CPU plumbing shared by the kernels: feature detection, scratch buffers, shared output.

use std::sync::OnceLock;

/// Whether this CPU runs the AVX2+FMA code paths; detected once because it never changes.
#[inline]
pub(crate) fn has_avx2_fma() -> bool {
    static DETECTED: OnceLock<bool> = OnceLock::new();
    *DETECTED.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> bool {
    false
}

/// Compiles `$body` twice, once for AVX2+FMA and once for the baseline ISA, and runs the
/// variant the CPU supports. Loops in the body are then vectorised eight wide where possible.
macro_rules! dispatch {
    ($body:expr) => {{
        let body = || $body;
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2,fma")]
            unsafe fn fast<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            if $crate::kernels::cpu::has_avx2_fma() {
                // SAFETY: the CPU supports the enabled features.
                unsafe { fast(body) }
            } else {
                $crate::kernels::cpu::call(body)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $crate::kernels::cpu::call(body)
        }
    }};
}
pub(crate) use dispatch;

/// Runs a closure by value; the baseline branch of [`dispatch`].
#[inline(always)]
pub(crate) fn call<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// A zeroed, 32-byte aligned float buffer, so packed panels load without line splits.
pub(crate) struct Aligned {
    raw: Vec<f32>,
    start: usize,
    len: usize,
}

impl Aligned {
    /// Allocates `len` zeroed floats.
    pub(crate) fn zeros(len: usize) -> Self {
        let raw = vec![0f32; len + 8];
        let misalign = (raw.as_ptr() as usize / 4) % 8;
        let start = (8 - misalign) % 8;
        Self { raw, start, len }
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

/// Number of worker threads the kernels spread work over.
pub(crate) fn threads() -> usize {
    rayon::current_num_threads().max(1)
}
