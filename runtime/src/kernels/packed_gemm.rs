//! Linear layers on weights packed once, for inference: `y = act(x · Wᵀ + b)`.
//!
//! [`super::sgemm`] packs its right operand on every call, which is cheap next to a large
//! product but dominates when the left operand is a handful of token vectors: one short sentence
//! through a BERT layer multiplies 14 rows by weights of 384 x 1536, and re-packing those weights
//! costs as much as using them. A [`PackedLinear`] lays the weight out at load time in exactly
//! the panels the tile kernels stream (`NR` output columns by the full depth), so a call only
//! reads it.
//!
//! The kernel is chosen once per process: the AVX-512 tile of `tile512.rs` where the CPU has
//! AVX-512F, else the AVX2+FMA tile of `microkernel.rs`, else its portable version. The AVX-512
//! tile reads activations in place; the other two read them from a small packed copy per call,
//! as `microkernel::tile` requires. Bias and activation are applied to each finished tile while
//! it is still in L1, so no extra pass over the output is made.
//!
//! Work is split over rayon's threads by column panels (every thread reads only its share of
//! the weight, which is what matters for few rows) and, for many rows, by row blocks as well.

use std::cell::RefCell;

use candle_core::{bail, Result};
use rayon::prelude::*;

use super::cpu::{self, Aligned, SharedMut};
use super::microkernel::{self, Epilogue, Rows};
use super::tile512::{self, Strided};
use super::vmath;

/// The element-wise function applied to a product's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Activation {
    /// None: the output is the affine map itself.
    #[default]
    Identity,
    /// `max(x, 0)`.
    Relu,
    /// Exact GELU with the error function (Hugging Face `gelu`).
    Gelu,
    /// GELU's tanh approximation (Hugging Face `gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
}

/// The tile kernel a packed operand is laid out for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// The AVX2 tile's portable version, for CPUs without AVX2+FMA.
    Portable,
    /// The AVX2+FMA tile of `microkernel.rs`: 4 x 24.
    Avx2,
    /// The AVX-512 tile of `tile512.rs`: 12 x 32.
    Avx512,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    pub(crate) fn best() -> Kernel {
        if cpu::has_avx512f() {
            Kernel::Avx512
        } else if cpu::has_avx2_fma() {
            Kernel::Avx2
        } else {
            Kernel::Portable
        }
    }

    /// Every kernel this CPU runs, so tests can check each against a reference.
    #[cfg(test)]
    pub(crate) fn supported() -> Vec<Kernel> {
        let mut all = vec![Kernel::Portable];
        if cpu::has_avx2_fma() {
            all.push(Kernel::Avx2);
        }
        if cpu::has_avx512f() {
            all.push(Kernel::Avx512);
        }
        all
    }

    /// Columns of one tile, the width of a packed panel.
    pub(crate) fn nr(self) -> usize {
        match self {
            Kernel::Avx512 => tile512::NR,
            Kernel::Avx2 | Kernel::Portable => microkernel::NR,
        }
    }

    /// Rows of one tile.
    pub(crate) fn mr(self) -> usize {
        match self {
            Kernel::Avx512 => tile512::MR,
            Kernel::Avx2 | Kernel::Portable => microkernel::MR,
        }
    }

    /// The most tiles of rows per task of a large product: enough to reuse each weight panel
    /// from L1 many times, few enough that the activations of a depth block stay in L2.
    fn row_block_groups(self) -> usize {
        match self {
            Kernel::Avx512 => 8,
            Kernel::Avx2 | Kernel::Portable => 32,
        }
    }
}

/// Runs `$body` compiled for the instruction set of `$kernel` (a [`Kernel`]), so that the
/// [`vmath`] loops inside it vectorise for that ISA. Each variant gets its own closure with a
/// single call site, which the compiler inlines into the feature-enabled function.
macro_rules! on_isa {
    ($kernel:expr => $body:expr) => {{
        match $kernel {
            #[cfg(target_arch = "x86_64")]
            $crate::kernels::packed_gemm::Kernel::Avx512 => {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn run<R>(f: impl FnOnce() -> R) -> R {
                    f()
                }
                let f = || $body;
                // SAFETY: `Kernel::Avx512` is only chosen on CPUs with AVX-512F, AVX2 and FMA.
                unsafe { run(f) }
            }
            #[cfg(target_arch = "x86_64")]
            $crate::kernels::packed_gemm::Kernel::Avx2 => {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn run<R>(f: impl FnOnce() -> R) -> R {
                    f()
                }
                let f = || $body;
                // SAFETY: `Kernel::Avx2` is only chosen on CPUs with AVX2 and FMA.
                unsafe { run(f) }
            }
            _ => {
                let f = || $body;
                $crate::kernels::cpu::call(f)
            }
        }
    }};
}
pub(crate) use on_isa;

/// A right operand laid out in panels: row `l` (depth) of panel `j` is at `ptr + j * ps + l * ld`
/// and holds the kernel's `NR` readable floats.
#[derive(Clone, Copy)]
pub(crate) struct Panels {
    /// Row 0 of panel 0.
    pub ptr: *const f32,
    /// Floats between panels.
    pub ps: usize,
    /// Floats between rows of a panel.
    pub ld: usize,
}

/// What happens to a finished output tile.
#[derive(Clone, Copy, Default)]
pub(crate) struct Finish<'a> {
    /// Added per column, from the product's first column on; at least as long as the columns
    /// rounded up to whole panels.
    pub bias: Option<&'a [f32]>,
    /// Applied after the bias.
    pub act: Activation,
}

/// Depth of one block of the reduction: it bounds what a tile streams (a `KC x NR` sliver of the
/// weights, `MR x KC` of the activations) to what stays in L1 while it is reused.
const KC: usize = microkernel::KC;

/// `c = A · B` (or `c += A · B` with `accumulate`), then `finish`, for `m` rows and `n` columns
/// over depth `k`, on the calling thread. `scratch` holds the packed left operand of the
/// kernels that need one.
///
/// # Safety
/// `a` must be readable at every `(i, l)` with `i < m`, `l < k`; `b` must hold
/// `ceil(n / NR)` panels of `k` rows for `kernel`'s `NR`; `c` must be valid for `m` rows of `n`
/// floats spaced `ldc` apart, and no other thread may touch them.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn product(
    kernel: Kernel,
    (m, n, k): (usize, usize, usize),
    a: Strided,
    b: Panels,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    finish: Finish,
    scratch: &mut Vec<f32>,
) {
    if m == 0 || n == 0 {
        return;
    }
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => {
            // SAFETY: the caller's contract; the kernel is only chosen where AVX-512F runs.
            unsafe { product_avx512(m, n, k, a, b, c, ldc, accumulate, finish, scratch) }
        }
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => {
            // SAFETY: as above, for AVX2+FMA.
            unsafe { product_avx2(m, n, k, a, b, c, ldc, accumulate, finish, scratch) }
        }
        _ => {
            // SAFETY: the caller's contract.
            unsafe { product_packed_a::<false>(m, n, k, a, b, c, ldc, accumulate, finish, scratch) }
        }
    }
}

/// The reduction split into blocks of at most [`KC`], of near-equal depth (384 becomes two
/// blocks of 192, not 256 and 128); a zero depth still gives one (empty) block so that the
/// output is written.
fn depth_blocks(k: usize) -> impl Iterator<Item = (usize, usize)> {
    let blocks = k.div_ceil(KC).max(1);
    let per = k.div_ceil(blocks);
    (0..blocks).map(move |i| (i * per, per.min(k.saturating_sub(i * per))))
}

/// Whether the rows of a left operand that the AVX-512 tile reads in place fall into the same
/// L1 sets. Rows a multiple of 4 KiB apart map to one set, and a tile's twelve rows then evict
/// each other in every 8-way L1 (AMD Zen 4's), so every broadcast goes to L2; a 1024-wide
/// product on two threads ran at 155 GFLOP/s there, against about 195 for 1000 or 1040.
fn rows_share_l1_sets(a: Strided) -> bool {
    const SET_SPAN_FLOATS: usize = 4096 / std::mem::size_of::<f32>();
    a.cs == 1 && a.rs.is_multiple_of(SET_SPAN_FLOATS)
}

/// Copies rows `0..rows`, depths `0..kc` of `a` into `buf` with a row stride of `kc` plus one
/// cache line, so that consecutive rows land in different L1 sets, and returns the view of the
/// copy. The values and their order are unchanged, so the product's results are too.
///
/// # Safety
/// `a` must be readable at every `(r, l)` with `r < rows`, `l < kc`.
unsafe fn pack_rows_apart(a: Strided, rows: usize, kc: usize, buf: &mut Vec<f32>) -> Strided {
    let rs = kc + 16;
    if buf.len() < rows * rs {
        buf.resize(rows * rs, 0.0);
    }
    for (r, dst) in buf.chunks_exact_mut(rs).take(rows).enumerate() {
        // SAFETY: the caller's contract; `a.cs == 1` where this is used, so a row is contiguous.
        let src = unsafe { std::slice::from_raw_parts(a.ptr.add(r * a.rs), kc) };
        dst[..kc].copy_from_slice(src);
    }
    Strided { ptr: buf.as_ptr(), rs, cs: 1 }
}

/// [`product`] with the AVX-512 tile.
///
/// # Safety
/// As for [`product`], and the CPU must support AVX-512F, AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn product_avx512(
    m: usize,
    n: usize,
    k: usize,
    a: Strided,
    b: Panels,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    finish: Finish,
    scratch: &mut Vec<f32>,
) {
    use tile512::{MR, NR};
    let last = k.div_ceil(KC).max(1) - 1;
    let panels = n.div_ceil(NR);
    let pack = rows_share_l1_sets(a);
    // Each tile: rows i.. (read through `rows_at`, the left operand from row i and depth k0 on),
    // panel j, depth block (k0, kc).
    let tile_at = |rows_at: Strided, i: usize, j: usize, blk: usize, k0: usize, kc: usize| {
        let (rows, col, cols) = (MR.min(m - i), j * NR, NR.min(n - j * NR));
        let bp = b.ptr.wrapping_add(j * b.ps + k0 * b.ld);
        // SAFETY: the caller's contract covers these rows, columns and depths.
        unsafe {
            let ct = c.add(i * ldc + col);
            tile512::tile(kc, rows_at, bp, b.ld, ct, ldc, rows, cols, accumulate || k0 > 0);
            if blk == last {
                finish_tile(ct, ldc, rows, cols, col, finish);
            }
        }
    };
    // The left operand from row i0 and depth k0 on, for `rows` rows: in place, or copied apart.
    let mut rows_from = |i0: usize, rows: usize, k0: usize, kc: usize| {
        let at = Strided { ptr: a.ptr.wrapping_add(i0 * a.rs + k0 * a.cs), ..a };
        // SAFETY: the caller's contract covers these rows and depths.
        if pack {
            unsafe { pack_rows_apart(at, rows, kc, scratch) }
        } else {
            at
        }
    };
    for (blk, (k0, kc)) in depth_blocks(k).enumerate() {
        if m > 2 * MR {
            // Many rows: a 12-row sliver of the activations stays in L1 while the weight panels
            // of this depth block stream past it from L2, in order, which the prefetchers follow.
            // (Panel-major order re-reads the twelve strided activation rows from L2 instead.)
            for i in (0..m).step_by(MR) {
                let sliver = rows_from(i, MR.min(m - i), k0, kc);
                (0..panels).for_each(|j| tile_at(sliver, i, j, blk, k0, kc));
            }
        } else {
            // A row or two of tiles: panel-major, so the weights are read once.
            let all = rows_from(0, m, k0, kc);
            for j in 0..panels {
                (0..m).step_by(MR).for_each(|i| {
                    let sliver = Strided { ptr: all.ptr.wrapping_add(i * all.rs), ..all };
                    tile_at(sliver, i, j, blk, k0, kc)
                });
            }
        }
    }
}

/// [`product`] with the AVX2 tile, compiled for AVX2 so that the finishing loops vectorise.
///
/// # Safety
/// As for [`product`], and the CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn product_avx2(
    m: usize,
    n: usize,
    k: usize,
    a: Strided,
    b: Panels,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    finish: Finish,
    scratch: &mut Vec<f32>,
) {
    // SAFETY: the caller's contract.
    unsafe { product_packed_a::<true>(m, n, k, a, b, c, ldc, accumulate, finish, scratch) }
}

/// [`product`] with the tile of `microkernel.rs`, which reads its left operand packed as groups
/// of `MR` rows: the dispatching `tile` when `DISPATCHED`, else its portable version.
///
/// # Safety
/// As for [`product`]; with `DISPATCHED`, the tile picks its ISA itself.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn product_packed_a<const DISPATCHED: bool>(
    m: usize,
    n: usize,
    k: usize,
    a: Strided,
    b: Panels,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    finish: Finish,
    scratch: &mut Vec<f32>,
) {
    use microkernel::{MR, NR};
    let groups = m.div_ceil(MR);
    let last = k.div_ceil(KC).max(1) - 1;
    for (blk, (k0, kc)) in depth_blocks(k).enumerate() {
        let need = groups * kc * MR;
        if scratch.len() < need {
            scratch.resize(need, 0.0);
        }
        let packed = &mut scratch[..need];
        for (g, group) in packed.chunks_exact_mut((kc * MR).max(1)).enumerate().take(groups) {
            for (l, dst) in group.chunks_exact_mut(MR).enumerate() {
                for (r, d) in dst.iter_mut().enumerate() {
                    let i = g * MR + r;
                    // SAFETY: row i < m and depth k0 + l < k are readable by the contract.
                    *d = if i < m { unsafe { *a.ptr.add(i * a.rs + (k0 + l) * a.cs) } } else { 0.0 };
                }
            }
        }
        let ep = Epilogue { accumulate: accumulate || k0 > 0, ..Epilogue::default() };
        for j in 0..n.div_ceil(NR) {
            let (col, cols) = (j * NR, NR.min(n - j * NR));
            let rows_b = Rows::Strided { ptr: b.ptr.wrapping_add(j * b.ps + k0 * b.ld), ld: b.ld };
            for g in 0..groups {
                let rows = MR.min(m - g * MR);
                // SAFETY: the packed group holds kc * MR floats, the panel rows are readable by
                // the contract, and the tile covers rows and columns inside `c`.
                unsafe {
                    let ct = c.add(g * MR * ldc + col);
                    let ap = scratch.as_ptr().add(g * kc * MR);
                    if DISPATCHED {
                        microkernel::tile(kc, ap, rows_b, ct, ldc, rows, cols, &ep);
                    } else {
                        microkernel::portable_tile(kc, ap, rows_b, ct, ldc, rows, cols, &ep);
                    }
                    if blk == last {
                        finish_tile(ct, ldc, rows, cols, col, finish);
                    }
                }
            }
        }
    }
}

/// Adds the bias of columns `col ..` to a finished tile and applies the activation.
///
/// # Safety
/// `c` must be valid for `rows` rows of `cols` floats spaced `ldc` apart.
#[inline(always)]
unsafe fn finish_tile(c: *mut f32, ldc: usize, rows: usize, cols: usize, col: usize, finish: Finish) {
    if finish.bias.is_none() && finish.act == Activation::Identity {
        return;
    }
    for r in 0..rows {
        // SAFETY: the caller's contract.
        let row = unsafe { std::slice::from_raw_parts_mut(c.add(r * ldc), cols) };
        if let Some(bias) = finish.bias {
            for (v, b) in row.iter_mut().zip(&bias[col..col + cols]) {
                *v += b;
            }
        }
        apply(row, finish.act);
    }
}

/// Applies `act` to every element of `x`.
#[inline(always)]
pub(crate) fn apply(x: &mut [f32], act: Activation) {
    match act {
        Activation::Identity => {}
        Activation::Relu => x.iter_mut().for_each(|v| *v = if *v < 0.0 { 0.0 } else { *v }),
        Activation::Gelu => x.iter_mut().for_each(|v| *v = vmath::gelu(*v)),
        Activation::GeluTanh => x.iter_mut().for_each(|v| *v = vmath::gelu_tanh(*v)),
    }
}

thread_local! {
    /// The packed left operand of the AVX2 and portable tiles (and of the AVX-512 tile where its
    /// rows would share L1 sets), reused across calls so that a product allocates nothing once
    /// the thread has seen its largest shape.
    static PACKED_A: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's packing scratch.
pub(crate) fn with_pack_scratch<R>(f: impl FnOnce(&mut Vec<f32>) -> R) -> R {
    PACKED_A.with(|s| f(&mut s.borrow_mut()))
}

/// Below this many multiply-adds a product runs on the calling thread. Much lower than the
/// convolutions' threshold: a transformer calls products back to back, so rayon's workers are
/// still spinning from the previous one and a split costs a few microseconds.
const SPLIT_MIN_WORK: usize = 1 << 17;

/// A linear layer's weight (and bias) packed once for the fastest tile kernel of this CPU.
///
/// The weight has PyTorch's `Linear` layout, `[out_features, in_features]`, and the layer
/// computes `y = x · Wᵀ + b` for row-major `x` of `[m, in_features]`.
pub struct PackedLinear {
    kernel: Kernel,
    n: usize,
    k: usize,
    /// `ceil(n / NR)` panels of `k` rows of `NR` floats, zero padded past `n`.
    panels: Aligned,
    /// The bias, zero padded to whole panels (zeros without a bias).
    bias: Vec<f32>,
}

impl std::fmt::Debug for PackedLinear {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedLinear")
            .field("in_features", &self.k)
            .field("out_features", &self.n)
            .field("kernel", &self.kernel)
            .finish_non_exhaustive()
    }
}

impl PackedLinear {
    /// Packs `weight` (`out_features` rows of `in_features` floats) and the optional `bias`
    /// (`out_features` floats).
    pub fn new(weight: &[f32], bias: Option<&[f32]>, out_features: usize, in_features: usize) -> Result<Self> {
        Self::with_kernel(Kernel::best(), weight, bias, out_features, in_features)
    }

    /// [`PackedLinear::new`] for a given kernel, which the CPU must support.
    pub(crate) fn with_kernel(
        kernel: Kernel,
        weight: &[f32],
        bias: Option<&[f32]>,
        n: usize,
        k: usize,
    ) -> Result<Self> {
        if weight.len() != n * k {
            bail!("linear weight holds {} floats, expected {n} x {k} = {}", weight.len(), n * k)
        }
        if let Some(b) = bias {
            if b.len() != n {
                bail!("linear bias holds {} floats, expected {n}", b.len())
            }
        }
        let nr = kernel.nr();
        let panels = n.div_ceil(nr);
        let mut packed = Aligned::zeros(panels * k * nr);
        let dst = packed.as_mut_slice();
        for (row, w) in weight.chunks_exact(k.max(1)).enumerate().take(n) {
            let (j, jj) = (row / nr, row % nr);
            for (l, &v) in w.iter().enumerate() {
                dst[(j * k + l) * nr + jj] = v;
            }
        }
        let mut padded = vec![0f32; panels * nr];
        if let Some(b) = bias {
            padded[..n].copy_from_slice(b);
        }
        Ok(PackedLinear { kernel, n, k, panels: packed, bias: padded })
    }

    /// Packs a matrix product's right operand `b`, row-major `k` x `n`, for the fastest tile of
    /// this CPU: then `forward` computes `a · b`. The same panels as a weight's, read from the
    /// other layout.
    pub fn from_right_operand(b: &[f32], k: usize, n: usize) -> Result<Self> {
        if b.len() != k * n {
            bail!("right operand holds {} floats, expected {k} x {n} = {}", b.len(), k * n)
        }
        let kernel = Kernel::best();
        let nr = kernel.nr();
        let panels = n.div_ceil(nr);
        let mut packed = Aligned::zeros(panels * k * nr);
        let dst = packed.as_mut_slice();
        for (l, row) in b.chunks_exact(n.max(1)).enumerate().take(k) {
            for (j, part) in row.chunks(nr).enumerate() {
                dst[(j * k + l) * nr..][..part.len()].copy_from_slice(part);
            }
        }
        Ok(PackedLinear { kernel, n, k, panels: packed, bias: vec![0.0; panels * nr] })
    }

    /// Floats per input row.
    pub fn in_features(&self) -> usize {
        self.k
    }

    /// Floats per output row.
    pub fn out_features(&self) -> usize {
        self.n
    }

    /// `y = act(x · Wᵀ + b)` for the `m` rows of `x` (`[m, in_features]`) into `y`
    /// (`[m, out_features]`), both row-major.
    pub fn forward(&self, x: &[f32], m: usize, y: &mut [f32], act: Activation) -> Result<()> {
        self.run(x, m, y, false, act)
    }

    /// `y += x · Wᵀ + b`: a linear layer feeding a residual connection, without a separate pass
    /// to add the residual.
    pub fn forward_add(&self, x: &[f32], m: usize, y: &mut [f32]) -> Result<()> {
        self.run(x, m, y, true, Activation::Identity)
    }

    fn run(&self, x: &[f32], m: usize, y: &mut [f32], accumulate: bool, act: Activation) -> Result<()> {
        let (n, k) = (self.n, self.k);
        if x.len() != m * k || y.len() != m * n {
            bail!(
                "linear operands hold {} and {} floats, expected {m} x {k} = {} and {m} x {n} = {}",
                x.len(),
                y.len(),
                m * k,
                m * n
            )
        }
        if m == 0 || n == 0 {
            return Ok(());
        }
        let (kernel, nr) = (self.kernel, self.kernel.nr());
        let panels = n.div_ceil(nr);
        // Row blocks of near-equal numbers of whole tiles (121 rows become 60 and 61, not 96 and
        // 25), so that tasks are of similar size and no tile is needlessly short.
        let (mr, groups) = (kernel.mr(), m.div_ceil(kernel.mr()));
        let threads = cpu::threads();
        let split = threads > 1 && m * n * k >= SPLIT_MIN_WORK;
        let mut row_blocks = groups.div_ceil(kernel.row_block_groups());
        if split && row_blocks > 1 {
            // A multiple of the threads: 11 equal tasks on 2 threads take as long as 12.
            row_blocks = row_blocks.div_ceil(threads).saturating_mul(threads).min(groups);
        }
        let block = |rb: usize| ((rb * groups / row_blocks) * mr).min(m);
        // A few tasks per thread so that a thread slowed by others still finishes in time; a
        // single row block is split only by columns, so each thread reads only its panels.
        let col_chunks = if split { (4 * threads).div_ceil(row_blocks).clamp(1, panels) } else { 1 };
        let per = panels.div_ceil(col_chunks);
        let col_chunks = panels.div_ceil(per);
        let (xp, wp, yp) = (x.as_ptr() as usize, self.panels.as_slice().as_ptr() as usize, SharedMut(y.as_mut_ptr()));
        let task = |t: usize| {
            let (rb, cc) = (t / col_chunks, t % col_chunks);
            let (r0, p0) = (block(rb), cc * per);
            let rows = block(rb + 1) - r0;
            let col0 = p0 * nr;
            let cols = ((p0 + per) * nr).min(n) - col0;
            let a = Strided { ptr: (xp as *const f32).wrapping_add(r0 * k), rs: k, cs: 1 };
            let b = Panels { ptr: (wp as *const f32).wrapping_add(p0 * k * nr), ps: k * nr, ld: nr };
            let finish = Finish { bias: Some(&self.bias[col0..]), act };
            with_pack_scratch(|scratch| {
                // SAFETY: `x` holds m rows of k floats and the weight `panels` panels of k rows;
                // task t writes only rows r0.. and columns col0.. of `y`, which no other task
                // touches.
                unsafe { product(kernel, (rows, cols, k), a, b, yp.at(r0 * n + col0), n, accumulate, finish, scratch) }
            });
        };
        let tasks = row_blocks * col_chunks;
        if split {
            (0..tasks).into_par_iter().for_each(task);
        } else {
            (0..tasks).for_each(task);
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "packed_gemm_tests.rs"]
mod tests;
