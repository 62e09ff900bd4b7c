//! A config-driven, class-conditional UNet for diffusion: the ε-predicting DDPM teacher and the
//! consistency students are this one network with other configs and other training.
//!
//! The layout follows the DDPM / ADM UNets, cut down to what 28×28 images on a CPU need: a
//! sinusoidal timestep embedding through a two-layer MLP, plus a learned class embedding whose last
//! row is the "null" class of classifier-free guidance; residual blocks with group norm and SiLU
//! that add the embedding between their two convolutions; self-attention only at the resolutions
//! the config names (attention is quadratic in positions, so it pays only at the lowest ones);
//! strided-convolution down-sampling and nearest-neighbour up-sampling with a convolution.
//! Convolutions and group norms (fused with the SiLU that follows them) run on Tandem's kernels
//! (with their gradients), the rest on candle ops, all of which carry gradients, so the same struct
//! trains and serves.
//!
//! Tensor names: `time.lin1`, `time.lin2`, `class_embedding`, `input`, `down.{l}.res.{b}`,
//! `down.{l}.attn.{b}`, `down.{l}.downsample`, `mid.res1`, `mid.attn`, `mid.res2`,
//! `up.{l}.res.{b}`, `up.{l}.attn.{b}`, `up.{l}.upsample`, `out.norm`, `out.conv`.

use candle_core::{bail, DType, Device, Module, Result, Tensor, D};
use candle_nn::{Embedding, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::layers::{conv2d, group_norm, Conv2d, Conv2dConfig, GroupNorm};

/// The full architecture of a diffusion UNet.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UNetConfig {
    /// `[channels, height, width]` of the images the model generates.
    pub image_shape: [usize; 3],
    /// The square side the images are padded to inside the network (a multiple of
    /// `2^(levels − 1)`), so that every down-sampling halves exactly.
    pub padded_size: usize,
    /// Channels of the first level; level `l` has `base_channels * channel_mults[l]`.
    pub base_channels: usize,
    /// One multiplier per resolution level, from the full resolution down.
    pub channel_mults: Vec<usize>,
    /// Residual blocks per level on the way down (the way up has one more, for the skip of the
    /// down-sampling).
    pub blocks_per_level: usize,
    /// The levels (indices into `channel_mults`) whose blocks are followed by self-attention.
    #[serde(default)]
    pub attention_levels: Vec<usize>,
    /// Attention heads; must divide the channels of every attended level.
    #[serde(default = "one")]
    pub attention_heads: usize,
    /// Groups of every group norm; must divide every level's channels.
    pub norm_groups: usize,
    /// Classes of the conditioning (0 for an unconditional model); the embedding has one more row,
    /// the null class that classifier-free guidance trains and samples with.
    pub num_classes: usize,
    /// Dropout inside the residual blocks, active in training only.
    #[serde(default)]
    pub dropout: f32,
}

fn one() -> usize {
    1
}

impl UNetConfig {
    /// The width of the timestep and class embedding.
    pub fn embedding_dim(&self) -> usize {
        4 * self.base_channels
    }

    /// The number of resolution levels.
    pub fn levels(&self) -> usize {
        self.channel_mults.len()
    }

    /// Pixels of one image, `C*H*W`, as generated (before padding).
    pub fn image_dim(&self) -> usize {
        self.image_shape.iter().product()
    }

    /// Rejects configs that cannot be built or would panic deep inside candle.
    pub fn validate(&self) -> Result<()> {
        let [c, h, w] = self.image_shape;
        if c == 0 || h == 0 || w == 0 {
            bail!("unet image_shape {:?} has a zero dimension", self.image_shape)
        }
        if self.channel_mults.is_empty() || self.channel_mults.contains(&0) {
            bail!("unet channel_mults must be non-empty and positive, got {:?}", self.channel_mults)
        }
        if self.base_channels == 0 || self.norm_groups == 0 || self.attention_heads == 0 {
            bail!("unet base_channels, norm_groups and attention_heads must be positive")
        }
        if self.blocks_per_level == 0 {
            bail!("unet blocks_per_level must be positive")
        }
        let step = 1usize << (self.levels() - 1);
        if self.padded_size < h.max(w) || !self.padded_size.is_multiple_of(step) {
            bail!(
                "unet padded_size {} must be at least the image side {} and a multiple of {step}",
                self.padded_size,
                h.max(w)
            )
        }
        for (level, mult) in self.channel_mults.iter().enumerate() {
            let ch = self.base_channels * mult;
            if !ch.is_multiple_of(self.norm_groups) {
                bail!("unet level {level} has {ch} channels, not a multiple of norm_groups {}", self.norm_groups)
            }
            if self.attention_levels.contains(&level) && !ch.is_multiple_of(self.attention_heads) {
                bail!(
                    "unet level {level} has {ch} channels, not a multiple of attention_heads {}",
                    self.attention_heads
                )
            }
        }
        if let Some(level) = self.attention_levels.iter().find(|l| **l >= self.levels()) {
            bail!("unet attention level {level} does not exist ({} levels)", self.levels())
        }
        if !(0.0..1.0).contains(&self.dropout) {
            bail!("unet dropout must be in [0, 1), got {}", self.dropout)
        }
        Ok(())
    }
}

/// The sinusoidal embedding of (possibly fractional) timesteps, `[n, dim]`: sines then cosines of
/// `t · 10000^(−k/half)`, as in the DDPM and Transformer papers.
pub fn timestep_embedding(t: &[f32], dim: usize, device: &Device) -> Result<Tensor> {
    let half = dim / 2;
    let mut out = Vec::with_capacity(t.len() * dim);
    for &ti in t {
        let freq = |k: usize| (-(10000f64.ln()) * k as f64 / half as f64).exp();
        out.extend((0..half).map(|k| (ti as f64 * freq(k)).sin() as f32));
        out.extend((0..half).map(|k| (ti as f64 * freq(k)).cos() as f32));
        out.extend(std::iter::repeat_n(0.0, dim - 2 * half));
    }
    Tensor::from_vec(out, (t.len(), dim), device)
}

/// A linear layer over `[n, dim]`, one row at a time outside training.
///
/// The matrix product picks its kernel by the number of rows, and kernels sum in different orders:
/// five rows came out 5e-7 away from one, which changed served images with the batch they ran in.
/// Row by row, an image's embedding is the same bits in any batch; training, which needs no such
/// guarantee, keeps the one product.
fn rowwise(layer: &Linear, x: &Tensor, train: bool) -> Result<Tensor> {
    let n = x.dim(0)?;
    if train || n == 1 {
        return layer.forward(x);
    }
    let rows = (0..n).map(|i| layer.forward(&x.narrow(0, i, 1)?)).collect::<Result<Vec<_>>>()?;
    Tensor::cat(&rows, 0)
}

/// Group norm, SiLU, 3×3 convolution: the pre-activation pattern every block uses.
#[derive(Debug, Clone)]
struct NormActConv {
    norm: GroupNorm,
    conv: Conv2d,
}

impl NormActConv {
    fn new(in_ch: usize, out_ch: usize, groups: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm: group_norm(groups, in_ch, 1e-5, vb.pp("norm"))?,
            conv: conv2d(in_ch, out_ch, 3, padded(1), vb.pp("conv"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.conv.forward(&self.norm.forward_silu(x)?)
    }
}

fn padded(padding: usize) -> Conv2dConfig {
    Conv2dConfig { padding, ..Default::default() }
}

/// A residual block that injects the timestep and class embedding between its convolutions.
#[derive(Debug, Clone)]
struct ResBlock {
    first: NormActConv,
    embedding: Linear,
    second: NormActConv,
    skip: Option<Conv2d>,
    dropout: f32,
}

impl ResBlock {
    fn new(in_ch: usize, out_ch: usize, cfg: &UNetConfig, vb: VarBuilder) -> Result<Self> {
        let skip = if in_ch == out_ch { None } else { Some(conv2d(in_ch, out_ch, 1, padded(0), vb.pp("skip"))?) };
        Ok(Self {
            first: NormActConv::new(in_ch, out_ch, cfg.norm_groups, vb.pp("in"))?,
            embedding: candle_nn::linear(cfg.embedding_dim(), out_ch, vb.pp("embedding"))?,
            second: NormActConv::new(out_ch, out_ch, cfg.norm_groups, vb.pp("out"))?,
            skip,
            dropout: cfg.dropout,
        })
    }

    fn forward(&self, x: &Tensor, emb: &Tensor, train: bool) -> Result<Tensor> {
        let h = self.first.forward(x)?;
        let e = rowwise(&self.embedding, &candle_nn::ops::silu(emb)?, train)?.unsqueeze(2)?.unsqueeze(3)?;
        let mut h = h.broadcast_add(&e)?;
        if train && self.dropout > 0.0 {
            h = candle_nn::ops::dropout(&h, self.dropout)?;
        }
        let h = self.second.forward(&h)?;
        match &self.skip {
            Some(skip) => skip.forward(x)? + h,
            None => x + h,
        }
    }
}

/// Multi-head self-attention over the positions of a feature map, with a residual connection.
#[derive(Debug, Clone)]
struct Attention {
    norm: GroupNorm,
    qkv: Linear,
    proj: Linear,
    heads: usize,
}

impl Attention {
    fn new(ch: usize, cfg: &UNetConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm: group_norm(cfg.norm_groups, ch, 1e-5, vb.pp("norm"))?,
            qkv: candle_nn::linear(ch, 3 * ch, vb.pp("qkv"))?,
            proj: candle_nn::linear(ch, ch, vb.pp("proj"))?,
            heads: cfg.attention_heads,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let (positions, head_dim) = (h * w, c / self.heads);
        // Contiguous before the projection: candle's batched matmul of a transposed left operand
        // gave wrong results (measured by `a_batch_equals_its_items_run_alone`).
        let tokens = self.norm.forward(x)?.reshape((n, c, positions))?.transpose(1, 2)?.contiguous()?;
        let qkv = self.qkv.forward(&tokens)?.reshape((n, positions, 3, self.heads, head_dim))?;
        let part = |i: usize| qkv.narrow(2, i, 1)?.squeeze(2)?.transpose(1, 2)?.contiguous();
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        let scores = (q.matmul(&k.t()?)? * (1.0 / (head_dim as f64).sqrt()))?;
        let mixed = candle_nn::ops::softmax(&scores, D::Minus1)?.matmul(&v)?;
        let mixed = mixed.transpose(1, 2)?.reshape((n, positions, c))?;
        let out = self.proj.forward(&mixed)?.transpose(1, 2)?.reshape((n, c, h, w))?;
        x + out
    }
}

/// One level's blocks, each optionally followed by attention.
#[derive(Debug, Clone)]
struct Level {
    blocks: Vec<(ResBlock, Option<Attention>)>,
    resample: Option<Conv2d>,
}

/// The diffusion UNet. `forward` predicts the network output (ε for a DDPM teacher, the raw
/// `F_θ` for a consistency student) for images `[n, C, H, W]` at timesteps `t` and classes.
#[derive(Debug, Clone)]
pub struct UNet {
    config: UNetConfig,
    time_lin1: Linear,
    time_lin2: Linear,
    class_embedding: Option<Embedding>,
    input: Conv2d,
    down: Vec<Level>,
    mid: (ResBlock, Attention, ResBlock),
    up: Vec<Level>,
    out: NormActConv,
}

impl UNet {
    /// Builds the network under `vb`; with a fresh `VarMap`, the variables are initialised as
    /// candle initialises its layers, and the output convolution starts at zero so that the
    /// untrained network predicts ε = 0 (the DDPM / ADM recipe for a stable start).
    pub fn new(config: &UNetConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let emb = config.embedding_dim();
        let ch = |level: usize| config.base_channels * config.channel_mults[level];
        let attention = |level: usize, c: usize, vb: VarBuilder| -> Result<Option<Attention>> {
            if config.attention_levels.contains(&level) {
                Ok(Some(Attention::new(c, config, vb)?))
            } else {
                Ok(None)
            }
        };
        let input = conv2d(config.image_shape[0], config.base_channels, 3, padded(1), vb.pp("input"))?;
        let mut skips = vec![config.base_channels];
        let mut current = config.base_channels;
        let mut down = Vec::new();
        for level in 0..config.levels() {
            let vb = vb.pp(format!("down.{level}"));
            let mut blocks = Vec::new();
            for b in 0..config.blocks_per_level {
                let block = ResBlock::new(current, ch(level), config, vb.pp(format!("res.{b}")))?;
                current = ch(level);
                blocks.push((block, attention(level, current, vb.pp(format!("attn.{b}")))?));
                skips.push(current);
            }
            let resample = if level + 1 < config.levels() {
                let stride = Conv2dConfig { stride: 2, padding: 1, ..Default::default() };
                skips.push(current);
                Some(conv2d(current, current, 3, stride, vb.pp("downsample"))?)
            } else {
                None
            };
            down.push(Level { blocks, resample });
        }
        let vm = vb.pp("mid");
        let mid = (
            ResBlock::new(current, current, config, vm.pp("res1"))?,
            Attention::new(current, config, vm.pp("attn"))?,
            ResBlock::new(current, current, config, vm.pp("res2"))?,
        );
        let mut up = Vec::new();
        for level in (0..config.levels()).rev() {
            let vb = vb.pp(format!("up.{level}"));
            let mut blocks = Vec::new();
            for b in 0..=config.blocks_per_level {
                let skip = skips.pop().expect("one skip per down block and resample. This is a bug.");
                let block = ResBlock::new(current + skip, ch(level), config, vb.pp(format!("res.{b}")))?;
                current = ch(level);
                blocks.push((block, attention(level, current, vb.pp(format!("attn.{b}")))?));
            }
            let resample =
                if level > 0 { Some(conv2d(current, current, 3, padded(1), vb.pp("upsample"))?) } else { None };
            up.push(Level { blocks, resample });
        }
        let out_norm = group_norm(config.norm_groups, current, 1e-5, vb.pp("out.norm"))?;
        let zero = candle_nn::Init::Const(0.0);
        let out_w = vb.pp("out.conv").get_with_hints((config.image_shape[0], current, 3, 3), "weight", zero)?;
        let out_b = vb.pp("out.conv").get_with_hints(config.image_shape[0], "bias", zero)?;
        let out = NormActConv { norm: out_norm, conv: Conv2d::new(out_w, Some(out_b), padded(1)) };
        let class_embedding = if config.num_classes > 0 {
            Some(candle_nn::embedding(config.num_classes + 1, emb, vb.pp("class_embedding"))?)
        } else {
            None
        };
        Ok(Self {
            config: config.clone(),
            time_lin1: candle_nn::linear(config.base_channels, emb, vb.pp("time.lin1"))?,
            time_lin2: candle_nn::linear(emb, emb, vb.pp("time.lin2"))?,
            class_embedding,
            input,
            down,
            mid,
            up,
            out,
        })
    }

    /// The architecture this network was built from.
    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// The class index that means "no class": what classifier-free guidance's unconditional
    /// branch and unconditional requests use.
    pub fn null_class(&self) -> u32 {
        self.config.num_classes as u32
    }

    /// Runs the network on `x` `[n, C, H, W]` (the unpadded image size), timesteps `t` (one per
    /// image; fractional values are allowed) and classes (one per image, the null class for none).
    /// `train` turns dropout on.
    pub fn forward(&self, x: &Tensor, t: &[f32], classes: &[u32], train: bool) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let [ec, eh, ew] = self.config.image_shape;
        if (c, h, w) != (ec, eh, ew) || t.len() != n || classes.len() != n {
            bail!(
                "unet expects images {:?} with one timestep and class each, got {:?}, {} timesteps, {} classes",
                self.config.image_shape,
                x.dims(),
                t.len(),
                classes.len()
            )
        }
        if let Some(bad) = classes.iter().find(|k| **k > self.null_class()) {
            bail!("class {bad} is out of range for a model with {} classes", self.config.num_classes)
        }
        let emb = self.embedding(t, classes, x.device(), train)?;
        let side = self.config.padded_size;
        let (top, left) = ((side - h) / 2, (side - w) / 2);
        let x = x.pad_with_zeros(2, top, side - h - top)?.pad_with_zeros(3, left, side - w - left)?;

        let mut h = self.input.forward(&x)?;
        let mut skips = vec![h.clone()];
        for level in &self.down {
            for (block, attn) in &level.blocks {
                h = block.forward(&h, &emb, train)?;
                if let Some(attn) = attn {
                    h = attn.forward(&h)?;
                }
                skips.push(h.clone());
            }
            if let Some(down) = &level.resample {
                h = down.forward(&h)?;
                skips.push(h.clone());
            }
        }
        h = self.mid.0.forward(&h, &emb, train)?;
        h = self.mid.1.forward(&h)?;
        h = self.mid.2.forward(&h, &emb, train)?;
        for level in &self.up {
            for (block, attn) in &level.blocks {
                let skip = skips.pop().expect("one skip per up block. This is a bug.");
                h = block.forward(&Tensor::cat(&[&h, &skip], 1)?, &emb, train)?;
                if let Some(attn) = attn {
                    h = attn.forward(&h)?;
                }
            }
            if let Some(up) = &level.resample {
                let (_, _, hh, ww) = h.dims4()?;
                h = up.forward(&h.upsample_nearest2d(2 * hh, 2 * ww)?)?;
            }
        }
        let out = self.out.forward(&h)?;
        out.narrow(2, top, eh)?.narrow(3, left, ew)
    }

    /// The timestep embedding through its MLP, plus the class embedding.
    fn embedding(&self, t: &[f32], classes: &[u32], device: &Device, train: bool) -> Result<Tensor> {
        let sinusoid = timestep_embedding(t, self.config.base_channels, device)?;
        let hidden = candle_nn::ops::silu(&rowwise(&self.time_lin1, &sinusoid, train)?)?;
        let time = rowwise(&self.time_lin2, &hidden, train)?;
        match &self.class_embedding {
            Some(table) => {
                let ids = Tensor::from_slice(classes, classes.len(), device)?;
                time + table.forward(&ids)?
            }
            None => Ok(time),
        }
    }
}

/// A small UNet for tests and CI: two levels, attention at the lower one.
pub fn tiny_config(num_classes: usize) -> UNetConfig {
    UNetConfig {
        image_shape: [1, 28, 28],
        padded_size: 32,
        base_channels: 8,
        channel_mults: vec![1, 2],
        blocks_per_level: 1,
        attention_levels: vec![1],
        attention_heads: 2,
        norm_groups: 4,
        num_classes,
        dropout: 0.0,
    }
}

/// Counts the parameters a config has, by building it on a scratch `VarMap`.
pub fn parameter_count(config: &UNetConfig) -> Result<usize> {
    let varmap = candle_nn::VarMap::new();
    UNet::new(config, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
    Ok(varmap.all_vars().iter().map(|v| v.elem_count()).sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::VarMap;

    fn build(config: &UNetConfig) -> (VarMap, UNet) {
        let varmap = VarMap::new();
        let net = UNet::new(config, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
        (varmap, net)
    }

    /// Perturbs every variable so that the zero-initialised output layer does not hide the body.
    fn randomise(varmap: &VarMap) {
        for var in varmap.all_vars() {
            let noise = Tensor::randn(0f32, 0.1, var.shape(), &Device::Cpu).unwrap();
            var.set(&(var.as_tensor() + noise).unwrap()).unwrap();
        }
    }

    #[test]
    fn the_output_has_the_image_shape_and_starts_at_zero() {
        let (_, net) = build(&tiny_config(10));
        let x = Tensor::randn(0f32, 1.0, (3, 1, 28, 28), &Device::Cpu).unwrap();
        let out = net.forward(&x, &[0.0, 500.0, 999.0], &[0, 3, 10], false).unwrap();
        assert_eq!(out.dims(), &[3, 1, 28, 28]);
        let max = out.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(max, 0.0, "the output convolution is zero-initialised");
    }

    #[test]
    fn every_parameter_receives_a_gradient() {
        let (varmap, net) = build(&tiny_config(10));
        randomise(&varmap);
        let x = Tensor::randn(0f32, 1.0, (2, 1, 28, 28), &Device::Cpu).unwrap();
        let out = net.forward(&x, &[10.0, 700.0], &[1, 10], true).unwrap();
        let grads = out.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let data = varmap.data().lock().unwrap();
        // The null class's row is used; the other unused rows get zero gradients but are still
        // connected, so every variable must appear.
        for (name, var) in data.iter() {
            let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name} has no gradient"));
            assert_eq!(g.dims(), var.dims(), "{name}");
        }
    }

    #[test]
    fn a_batch_equals_its_items_run_alone() {
        let (varmap, net) = build(&tiny_config(10));
        randomise(&varmap);
        // Several sizes, since matrix products pick kernels by their row count.
        for n in [3usize, 5, 10, 17] {
            let x = Tensor::randn(0f32, 1.0, (n, 1, 28, 28), &Device::Cpu).unwrap();
            let t: Vec<f32> = (0..n).map(|i| (i * 97 % 1000) as f32 + 0.5).collect();
            let k: Vec<u32> = (0..n).map(|i| (i % 11) as u32).collect();
            let batch = net.forward(&x, &t, &k, false).unwrap();
            for i in [0, n / 2, n - 1] {
                let alone = net.forward(&x.narrow(0, i, 1).unwrap(), &t[i..=i], &k[i..=i], false).unwrap();
                let diff = (batch.narrow(0, i, 1).unwrap() - alone).unwrap().abs().unwrap();
                let diff = diff.max_all().unwrap().to_scalar::<f32>().unwrap();
                assert_eq!(diff, 0.0, "item {i} of {n} differs by {diff}: served images must not depend on the batch");
            }
        }
    }

    #[test]
    fn the_class_and_the_timestep_change_the_output() {
        let (varmap, net) = build(&tiny_config(10));
        randomise(&varmap);
        let x = Tensor::randn(0f32, 1.0, (1, 1, 28, 28), &Device::Cpu).unwrap();
        let base = net.forward(&x, &[100.0], &[3], false).unwrap();
        for (t, k) in [(100.0, 4), (600.0, 3)] {
            let other = net.forward(&x, &[t], &[k], false).unwrap();
            let diff = (&base - other).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff > 1e-4, "t {t} class {k} made no difference");
        }
    }

    #[test]
    fn bad_configs_and_inputs_are_errors() {
        let mut cfg = tiny_config(10);
        cfg.padded_size = 31;
        assert!(UNet::new(&cfg, VarBuilder::zeros(DType::F32, &Device::Cpu)).is_err());
        let mut cfg = tiny_config(10);
        cfg.norm_groups = 3;
        assert!(cfg.validate().is_err());
        let mut cfg = tiny_config(10);
        cfg.attention_levels = vec![5];
        assert!(cfg.validate().is_err());
        let (_, net) = build(&tiny_config(10));
        let x = Tensor::zeros((1, 1, 28, 28), DType::F32, &Device::Cpu).unwrap();
        assert!(net.forward(&x, &[1.0], &[11], false).is_err(), "class past the null class");
        assert!(net.forward(&x, &[1.0, 2.0], &[1], false).is_err(), "timesteps per image");
        let wrong = Tensor::zeros((1, 1, 20, 28), DType::F32, &Device::Cpu).unwrap();
        assert!(net.forward(&wrong, &[1.0], &[1], false).is_err());
    }

    #[test]
    fn the_timestep_embedding_is_sines_then_cosines() {
        let e = timestep_embedding(&[0.0, 1.0], 4, &Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(e[0], vec![0.0, 0.0, 1.0, 1.0]);
        let f1 = (-(10000f64.ln()) / 2.0).exp();
        let expected = [1f64.sin(), f1.sin(), 1f64.cos(), f1.cos()];
        for (a, b) in e[1].iter().zip(expected) {
            assert!((*a as f64 - b).abs() < 1e-6);
        }
    }
}
