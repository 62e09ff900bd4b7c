//! Residual vector quantisation: a vector becomes `depth` code ids, each the nearest codebook entry
//! to what the earlier ones left over, and comes back as the sum of those entries.
//!
//! One codebook serves every depth, as in DualToken's code. This module is the part serving needs
//! (nearest-code search and look-up); how a codebook learns (EMA updates, dead-code restarts, the
//! commitment loss) is training's business. Nothing here carries a gradient: quantisation is a
//! discrete choice, and training passes gradients around it with the straight-through estimator.
//!
//! Tensor name: `codebook`, `[size, dim]`.

use candle_core::{bail, DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

/// A codebook and the depth of the residual codes it makes.
#[derive(Debug, Clone)]
pub struct ResidualQuantizer {
    codebook: Tensor,
    depth: usize,
}

/// What quantising a batch of vectors gives: the codes, the running sums of the chosen entries
/// after each depth, and the residual each depth was asked to quantise.
#[derive(Debug, Clone)]
pub struct Quantized {
    /// Code ids `[m, depth]`, `u32`.
    pub codes: Tensor,
    /// `partial_sums[d]` is the sum of the entries chosen at depths `0..=d`, `[m, dim]`; the last is
    /// the de-quantised vector.
    pub partial_sums: Vec<Tensor>,
    /// `residuals[d]` is what depth `d` quantised: the input minus `partial_sums[d - 1]`.
    pub residuals: Vec<Tensor>,
}

impl ResidualQuantizer {
    /// A quantizer over an existing `[size, dim]` codebook (a training variable keeps its storage,
    /// so updates to it reach this quantizer).
    pub fn new(codebook: Tensor, depth: usize) -> Result<ResidualQuantizer> {
        if codebook.rank() != 2 || codebook.dim(0)? < 2 || depth == 0 {
            bail!(
                "a residual quantizer needs a [size >= 2, dim] codebook and depth >= 1, got {:?} and {depth}",
                codebook.dims()
            )
        }
        Ok(ResidualQuantizer { codebook, depth })
    }

    /// Reads (or, from a `VarMap`, creates with unit-variance entries) the codebook.
    pub fn load(size: usize, dim: usize, depth: usize, vb: VarBuilder) -> Result<ResidualQuantizer> {
        let codebook = vb.get_with_hints((size, dim), "codebook", candle_nn::Init::Randn { mean: 0.0, stdev: 1.0 })?;
        ResidualQuantizer::new(codebook, depth)
    }

    /// The `[size, dim]` codebook.
    pub fn codebook(&self) -> &Tensor {
        &self.codebook
    }

    /// Entries in the codebook.
    pub fn size(&self) -> usize {
        self.codebook.dims()[0]
    }

    /// Width of each entry.
    pub fn dim(&self) -> usize {
        self.codebook.dims()[1]
    }

    /// Codes per vector.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// The nearest entry of each row of `rows` `[m, dim]`, by Euclidean distance: `[m]` ids.
    pub fn nearest(&self, rows: &Tensor) -> Result<Tensor> {
        let rows = rows.detach();
        let book = self.codebook.detach();
        // ‖r − c‖² = ‖r‖² − 2 r·c + ‖c‖², and ‖r‖² does not change the argmin.
        let norms = book.sqr()?.sum(D::Minus1)?.unsqueeze(0)?;
        let dots = rows.matmul(&book.t()?.contiguous()?)?;
        norms.broadcast_sub(&(dots * 2.0)?)?.argmin(D::Minus1)
    }

    /// Quantises rows `[m, dim]` to `depth` codes each.
    pub fn quantize(&self, rows: &Tensor) -> Result<Quantized> {
        let (m, dim) = rows.dims2()?;
        if dim != self.dim() {
            bail!("vectors of width {dim} for a codebook of width {}", self.dim())
        }
        let mut residual = rows.detach();
        let mut sum = Tensor::zeros((m, dim), rows.dtype(), rows.device())?;
        let (mut codes, mut partial_sums, mut residuals) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..self.depth {
            let ids = self.nearest(&residual)?;
            let chosen = self.codebook.detach().index_select(&ids, 0)?;
            residuals.push(residual.clone());
            residual = (residual - &chosen)?;
            sum = (sum + chosen)?;
            partial_sums.push(sum.clone());
            codes.push(ids.unsqueeze(1)?);
        }
        Ok(Quantized { codes: Tensor::cat(&codes, 1)?, partial_sums, residuals })
    }

    /// The sum of the entries that codes `[m, depth]` name: `[m, dim]`. Ids must be in range.
    pub fn dequantize(&self, codes: &Tensor) -> Result<Tensor> {
        let (m, depth) = codes.dims2()?;
        if depth != self.depth {
            bail!("{depth} codes per vector for a quantizer of depth {}", self.depth)
        }
        let codes = codes.to_dtype(DType::U32)?;
        let looked_up = candle_nn::Embedding::new(self.codebook.detach(), self.dim()).forward(&codes)?;
        looked_up.sum(1)?.reshape((m, self.dim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn quantizer() -> ResidualQuantizer {
        let book = Tensor::new(&[[1f32, 0.0], [0.0, 1.0], [0.1, 0.0], [0.0, 0.1]], &Device::Cpu).unwrap();
        ResidualQuantizer::new(book, 2).unwrap()
    }

    #[test]
    fn each_depth_quantises_what_the_last_left_over() {
        let q = quantizer();
        let x = Tensor::new(&[[1.1f32, 0.0], [0.0, 1.1]], &Device::Cpu).unwrap();
        let out = q.quantize(&x).unwrap();
        assert_eq!(out.codes.to_vec2::<u32>().unwrap(), vec![vec![0, 2], vec![1, 3]]);
        let back = q.dequantize(&out.codes).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(back, vec![vec![1.1, 0.0], vec![0.0, 1.1]]);
        let last = out.partial_sums[1].to_vec2::<f32>().unwrap();
        assert_eq!(last, back, "the last running sum is the de-quantised vector");
        let second = out.residuals[1].to_vec2::<f32>().unwrap();
        assert!((second[0][0] - 0.1).abs() < 1e-6 && (second[1][1] - 0.1).abs() < 1e-6, "{second:?}");
    }

    #[test]
    fn wrong_widths_and_depths_are_errors() {
        let q = quantizer();
        assert!(q.quantize(&Tensor::zeros((1, 3), DType::F32, &Device::Cpu).unwrap()).is_err());
        assert!(q.dequantize(&Tensor::zeros((1, 3), DType::U32, &Device::Cpu).unwrap()).is_err());
        assert!(ResidualQuantizer::new(Tensor::zeros((4, 2), DType::F32, &Device::Cpu).unwrap(), 0).is_err());
    }
}
