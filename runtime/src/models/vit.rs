//! A small vision transformer: the shared encoder of the image tokenizers, and the classifier
//! that, trained first and then frozen, is their semantic teacher.
//!
//! Pre-norm blocks (layer norm → multi-head self-attention → residual, layer norm → GELU MLP →
//! residual) over non-overlapping patches with learned position embeddings; the head is a final
//! layer norm, a mean over positions, and a linear classifier. Every op carries a gradient (the
//! layer norms and softmax are the differentiable ones), so the same struct trains and serves.
//!
//! Layers are counted from 1: "the hidden state after layer k" is the output of block k, and
//! layer 0 is the patch embedding. The tokenizers tap and replace hidden states by that number.
//!
//! Tensor names: `patch`, `position`, `blocks.{i}.{norm1,qkv,proj,norm2,fc1,fc2}`, `norm`, `head`.

use candle_core::{bail, DType, Device, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::layers::differentiable::{softmax_last_dim, LayerNorm};

/// The architecture of a [`Vit`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VitConfig {
    /// `[channels, height, width]` of the input images.
    pub image_shape: [usize; 3],
    /// Side of the square patches; it divides the height and the width.
    pub patch: usize,
    /// Width of every token.
    pub dim: usize,
    /// Transformer blocks.
    pub depth: usize,
    /// Attention heads; they divide `dim`.
    pub heads: usize,
    /// Hidden width of the MLP as a multiple of `dim`.
    pub mlp_ratio: usize,
    /// Classes of the head.
    pub num_classes: usize,
}

impl VitConfig {
    /// The CPU-scale encoder of DualToken's reproduction notes: 6 blocks of width 64 over 4×4
    /// patches, 4 heads, MLP ×2.
    pub fn small(image_shape: [usize; 3], num_classes: usize) -> VitConfig {
        VitConfig { image_shape, patch: 4, dim: 64, depth: 6, heads: 4, mlp_ratio: 2, num_classes }
    }

    /// Patches per side: `(rows, columns)`.
    pub fn grid(&self) -> (usize, usize) {
        (self.image_shape[1] / self.patch.max(1), self.image_shape[2] / self.patch.max(1))
    }

    /// Tokens per image.
    pub fn positions(&self) -> usize {
        let (h, w) = self.grid();
        h * w
    }

    /// Values per patch.
    pub fn patch_dim(&self) -> usize {
        self.image_shape[0] * self.patch * self.patch
    }

    /// Refuses configs that cannot build; the message names the field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let [c, h, w] = self.image_shape;
        if c == 0 || h == 0 || w == 0 {
            return Err(format!("image_shape: every dimension must be positive, found {:?}", self.image_shape));
        }
        if self.patch == 0 || h % self.patch != 0 || w % self.patch != 0 {
            return Err(format!("patch: {} must divide the image's {h}x{w}", self.patch));
        }
        if self.dim == 0 || self.heads == 0 || !self.dim.is_multiple_of(self.heads) {
            return Err(format!("heads: {} must divide dim {}", self.heads, self.dim));
        }
        if self.depth == 0 || self.mlp_ratio == 0 || self.num_classes < 2 {
            return Err("depth and mlp_ratio must be positive and num_classes at least 2".into());
        }
        Ok(())
    }
}

/// One pre-norm transformer block.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    norm1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
}

impl Block {
    /// A block of width `d` with `heads` heads and an MLP of `mlp_ratio`·`d`.
    pub(crate) fn new(d: usize, heads: usize, mlp_ratio: usize, vb: VarBuilder) -> Result<Block> {
        Ok(Block {
            norm1: LayerNorm::load(d, 1e-6, vb.pp("norm1"))?,
            qkv: candle_nn::linear(d, 3 * d, vb.pp("qkv"))?,
            proj: candle_nn::linear(d, d, vb.pp("proj"))?,
            norm2: LayerNorm::load(d, 1e-6, vb.pp("norm2"))?,
            fc1: candle_nn::linear(d, d * mlp_ratio, vb.pp("fc1"))?,
            fc2: candle_nn::linear(d * mlp_ratio, d, vb.pp("fc2"))?,
            heads,
        })
    }

    /// `[n, positions, d]` to the same shape.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, p, d) = x.dims3()?;
        let hd = d / self.heads;
        // The linear layers run on `[n·positions, d]`: candle multiplies a rank-3 input by a
        // broadcast weight in n separate products, several times slower for these widths.
        let rows = x.reshape((n * p, d))?;
        let qkv = self.qkv.forward(&self.norm1.forward(&rows)?)?.reshape((n, p, 3, self.heads, hd))?;
        // Contiguous heads before every batched product: candle's batched matmul of a transposed
        // operand is where the UNet's attention went wrong, so no product here reads one.
        let part = |i: usize| qkv.narrow(2, i, 1)?.squeeze(2)?.transpose(1, 2)?.contiguous();
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        let scores = (q.matmul(&k.t()?.contiguous()?)? * (1.0 / (hd as f64).sqrt()))?;
        let mixed = softmax_last_dim(&scores)?.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((n * p, d))?;
        let rows = (rows + self.proj.forward(&mixed)?)?;
        let h = self.fc1.forward(&self.norm2.forward(&rows)?)?.gelu_erf()?;
        (&rows + self.fc2.forward(&h)?)?.reshape((n, p, d))
    }
}

/// The vision transformer.
#[derive(Debug, Clone)]
pub struct Vit {
    config: VitConfig,
    patch: Linear,
    position: Tensor,
    blocks: Vec<Block>,
    norm: LayerNorm,
    head: Linear,
}

impl Vit {
    /// Builds the network, reading (or, from a `VarMap`, creating) its tensors.
    pub fn new(config: &VitConfig, vb: VarBuilder) -> Result<Vit> {
        if let Err(e) = config.validate() {
            bail!("vit config: {e}")
        }
        let position = vb.get_with_hints(
            (1, config.positions(), config.dim),
            "position",
            candle_nn::Init::Randn { mean: 0.0, stdev: 0.02 },
        )?;
        Ok(Vit {
            config: config.clone(),
            patch: candle_nn::linear(config.patch_dim(), config.dim, vb.pp("patch"))?,
            position,
            blocks: (0..config.depth)
                .map(|i| Block::new(config.dim, config.heads, config.mlp_ratio, vb.pp(format!("blocks.{i}"))))
                .collect::<Result<_>>()?,
            norm: LayerNorm::load(config.dim, 1e-6, vb.pp("norm"))?,
            head: candle_nn::linear(config.dim, config.num_classes, vb.pp("head"))?,
        })
    }

    /// The architecture.
    pub fn config(&self) -> &VitConfig {
        &self.config
    }

    /// Layer 0: images `[n, C, H, W]` in model space cut into patches, embedded, plus positions:
    /// `[n, positions, dim]`.
    pub fn embed(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let p = self.config.patch;
        let (gh, gw) = (h / p, w / p);
        let patches = x.reshape((n, c, gh, p, gw, p))?.permute((0, 2, 4, 1, 3, 5))?.contiguous()?.reshape((
            n,
            gh * gw,
            c * p * p,
        ))?;
        self.patch.forward(&patches)?.broadcast_add(&self.position)
    }

    /// Runs blocks `from + 1 ..= to` on the hidden state after layer `from`.
    pub fn run_layers(&self, hidden: &Tensor, from: usize, to: usize) -> Result<Tensor> {
        if from > to || to > self.blocks.len() {
            bail!("layers {from}..{to} of a {}-layer vit", self.blocks.len())
        }
        self.blocks[from..to].iter().try_fold(hidden.clone(), |h, b| b.forward(&h))
    }

    /// The hidden states after layers 0 to `upto`, in order.
    pub fn hidden_states(&self, x: &Tensor, upto: usize) -> Result<Vec<Tensor>> {
        let mut states = vec![self.embed(x)?];
        for layer in 0..upto.min(self.blocks.len()) {
            let next = self.blocks[layer].forward(&states[layer])?;
            states.push(next);
        }
        Ok(states)
    }

    /// The pooled feature of a last hidden state: the final norm, then a mean over positions.
    pub fn pool(&self, last: &Tensor) -> Result<Tensor> {
        self.norm.forward(last)?.mean(1)
    }

    /// Class logits of pooled features.
    pub fn head(&self, pooled: &Tensor) -> Result<Tensor> {
        self.head.forward(pooled)
    }

    /// The hidden state after layer `from` through the rest of the network: `(pooled, logits)`.
    pub fn finish(&self, hidden: &Tensor, from: usize) -> Result<(Tensor, Tensor)> {
        let last = self.run_layers(hidden, from, self.blocks.len())?;
        let pooled = self.pool(&last)?;
        let logits = self.head(&pooled)?;
        Ok((pooled, logits))
    }

    /// Class logits of images in model space.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.finish(&self.embed(x)?, 0)?.1)
    }
}

/// The parameters of a ViT with `config`, counted by building it.
pub fn parameter_count(config: &VitConfig) -> Result<usize> {
    let vars = VarMap::new();
    Vit::new(config, VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu))?;
    Ok(vars.all_vars().iter().map(|v| v.elem_count()).sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> VitConfig {
        VitConfig { image_shape: [1, 8, 8], patch: 4, dim: 8, depth: 3, heads: 2, mlp_ratio: 2, num_classes: 3 }
    }

    #[test]
    fn patches_are_cut_row_major_and_layers_compose() {
        let vars = VarMap::new();
        let vit = Vit::new(&tiny(), VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu)).unwrap();
        let x = Tensor::arange(0f32, 128.0, &Device::Cpu).unwrap().reshape((2, 1, 8, 8)).unwrap();
        let states = vit.hidden_states(&x, 3).unwrap();
        assert_eq!(states.len(), 4);
        assert_eq!(states[0].dims(), &[2, 4, 8]);
        let via = vit.run_layers(&states[1], 1, 3).unwrap();
        let diff = (via - &states[3]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(diff, 0.0, "running layers 2..3 from layer 1 equals the full pass");
        assert_eq!(vit.forward(&x).unwrap().dims(), &[2, 3]);
        assert!(vit.run_layers(&states[0], 2, 1).is_err());
    }

    #[test]
    fn the_second_patch_holds_the_top_right_square() {
        // With an identity-like patch projection, the embedding of patch 1 reads pixels of
        // columns 4..8 of rows 0..4: checked by giving only those pixels a value.
        let mut pixels = vec![0f32; 64];
        for r in 0..4 {
            for c in 4..8 {
                pixels[r * 8 + c] = 1.0;
            }
        }
        let x = Tensor::from_vec(pixels, (1, 1, 8, 8), &Device::Cpu).unwrap();
        let vars = VarMap::new();
        let vit = Vit::new(&tiny(), VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu)).unwrap();
        let with = vit.embed(&x).unwrap();
        let without = vit.embed(&Tensor::zeros((1, 1, 8, 8), DType::F32, &Device::Cpu).unwrap()).unwrap();
        let moved: Vec<f32> =
            (with - without).unwrap().abs().unwrap().sum(2).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert!(moved[1] > 0.0 && moved[0] == 0.0 && moved[2] == 0.0 && moved[3] == 0.0, "{moved:?}");
    }

    #[test]
    fn configs_that_cannot_build_are_refused() {
        assert!(VitConfig { patch: 3, ..tiny() }.validate().is_err());
        assert!(VitConfig { heads: 3, ..tiny() }.validate().is_err());
        assert!(parameter_count(&tiny()).unwrap() > 0);
    }
}
