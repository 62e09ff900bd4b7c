//! Shapes of a convolution, validated once so the kernels can index without checks.

use candle_core::{bail, Result};

/// Geometry of a convolution beyond its kernel size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dConfig {
    /// Step between output positions.
    pub stride: usize,
    /// Zero padding on every side.
    pub padding: usize,
    /// Spacing between kernel taps.
    pub dilation: usize,
    /// Channel groups; equal to the input channels for a depthwise convolution.
    pub groups: usize,
}

impl Default for Conv2dConfig {
    fn default() -> Self {
        Self { stride: 1, padding: 0, dilation: 1, groups: 1 }
    }
}

/// Every size the kernels need, derived from the operand shapes and the configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    pub n: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
    pub dil: usize,
    pub groups: usize,
    pub oh: usize,
    pub ow: usize,
}

impl Geometry {
    /// Checks that input `[n, c, h, w]` and weight `[o, c / groups, kh, kw]` fit together.
    pub(crate) fn new(x: &[usize], weight: &[usize], cfg: &Conv2dConfig) -> Result<Self> {
        let (&[n, c_in, h, w], &[c_out, cin_g, kh, kw]) = (x, weight) else {
            bail!("conv2d expects a 4d input and a 4d weight, got {x:?} and {weight:?}")
        };
        if cfg.stride == 0 || cfg.dilation == 0 || cfg.groups == 0 {
            bail!("conv2d stride, dilation and groups must be positive, got {cfg:?}")
        }
        if !c_in.is_multiple_of(cfg.groups) || !c_out.is_multiple_of(cfg.groups) {
            bail!("conv2d groups {} must divide input channels {c_in} and output channels {c_out}", cfg.groups)
        }
        if cin_g * cfg.groups != c_in {
            bail!("conv2d weight expects {} input channels, the input has {c_in}", cin_g * cfg.groups)
        }
        if kh == 0 || kw == 0 {
            bail!("conv2d kernel must not be empty, got {weight:?}")
        }
        let span_h = cfg.dilation * (kh - 1) + 1;
        let span_w = cfg.dilation * (kw - 1) + 1;
        if h + 2 * cfg.padding < span_h || w + 2 * cfg.padding < span_w {
            bail!("conv2d input {h}x{w} with padding {} is smaller than the kernel span {span_h}x{span_w}", cfg.padding)
        }
        Ok(Self {
            n,
            c_in,
            h,
            w,
            c_out,
            kh,
            kw,
            stride: cfg.stride,
            pad: cfg.padding,
            dil: cfg.dilation,
            groups: cfg.groups,
            oh: (h + 2 * cfg.padding - span_h) / cfg.stride + 1,
            ow: (w + 2 * cfg.padding - span_w) / cfg.stride + 1,
        })
    }

    /// Input channels seen by one group.
    pub(crate) fn cin_g(&self) -> usize {
        self.c_in / self.groups
    }

    /// Output channels produced by one group.
    pub(crate) fn cout_g(&self) -> usize {
        self.c_out / self.groups
    }

    /// Length of one output channel's reduction: input channels times taps.
    pub(crate) fn k_g(&self) -> usize {
        self.cin_g() * self.kh * self.kw
    }

    /// Floats in one input channel.
    pub(crate) fn in_plane(&self) -> usize {
        self.h * self.w
    }

    /// Floats in one output channel.
    pub(crate) fn out_plane(&self) -> usize {
        self.oh * self.ow
    }

    /// Floats in the whole input.
    pub(crate) fn in_len(&self) -> usize {
        self.n * self.c_in * self.in_plane()
    }

    /// Floats in the whole output.
    pub(crate) fn out_len(&self) -> usize {
        self.n * self.c_out * self.out_plane()
    }

    /// The same convolution over an input that already carries its zero padding: every
    /// unit-stride im2col run then reads a contiguous stretch of one input row.
    pub(crate) fn padded(&self) -> Geometry {
        Geometry { h: self.h + 2 * self.pad, w: self.w + 2 * self.pad, pad: 0, ..*self }
    }

    /// Whether the direct depthwise kernels should run: each output channel reads exactly
    /// one input channel and few outputs share it. With a single input channel but many
    /// outputs (a first layer on grey images) the matrix product wins again, since each
    /// packed input value then feeds several output channels.
    pub(crate) fn is_depthwise(&self) -> bool {
        self.cin_g() == 1 && self.cout_g() < 4
    }
}
