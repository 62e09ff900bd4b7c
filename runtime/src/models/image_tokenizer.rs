//! The image tokenizers: DualToken's two vocabularies over one ViT encoder, and the two
//! single-codebook baselines it is measured against, as one network with a layout switch.
//!
//! - **Pixel stream** (`dual`, `pixel_only`): the hidden state after a shallow layer, plus a
//!   weighted shortcut from an earlier one, each layer-normed and projected to the code width,
//!   quantised by residual VQ and decoded to an image.
//! - **Semantic stream** (`dual`, `unified`): the hidden state after a deep layer, projected and
//!   quantised the same way; its de-quantised codes, projected back to the encoder's width,
//!   *replace* that hidden state and run through the remaining layers and the head.
//! - `unified` is the single codebook with both objectives: the decoder reads the semantic stream.
//!
//! The decoder is a transformer over the code grid (so each patch sees the whole image) and then a
//! convolutional up-sampler: a 3×3 convolution, and per doubling a nearest-neighbour up-sample, a
//! convolution, group norm and SiLU, ending in a convolution to the image's channels.
//!
//! Tensor names: `encoder.*` (the [`Vit`]), `{pixel,semantic}.{norm,proj,shortcut_norm,
//! shortcut_proj}` and `{pixel,semantic}.quantizer.codebook`, `semantic.up`, `decoder.{up,
//! blocks.{i},stem,stages.{s}.{conv,norm},out}`.

use candle_core::{bail, DType, Device, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::layers::differentiable::LayerNorm;
use crate::layers::{conv2d, group_norm, Conv2d, Conv2dConfig, GroupNorm};
use crate::models::rvq::ResidualQuantizer;
use crate::models::vit::{Block, Vit, VitConfig};

/// Which streams a tokenizer has and which one the decoder reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenizerLayout {
    /// DualToken: a pixel stream for the decoder and a semantic stream for the head.
    Dual,
    /// One codebook on the shallow features, trained on reconstruction alone.
    PixelOnly,
    /// One codebook on the deep features that both the decoder and the head read.
    Unified,
}

impl TokenizerLayout {
    /// The wire and command-line name.
    pub fn name(self) -> &'static str {
        match self {
            TokenizerLayout::Dual => "dual",
            TokenizerLayout::PixelOnly => "pixel_only",
            TokenizerLayout::Unified => "unified",
        }
    }

    /// Whether the layout has a pixel stream of its own.
    pub fn has_pixel_stream(self) -> bool {
        self != TokenizerLayout::Unified
    }

    /// Whether the layout has a semantic stream (one the head reads).
    pub fn has_semantic_stream(self) -> bool {
        self != TokenizerLayout::PixelOnly
    }
}

/// The full architecture of an image tokenizer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ImageTokenizerConfig {
    /// The shared encoder (and, through its head, the semantic classifier).
    pub encoder: VitConfig,
    /// Streams and which one is decoded.
    pub layout: TokenizerLayout,
    /// The layer whose output the pixel stream quantises.
    pub pixel_layer: usize,
    /// An earlier layer added to the pixel features through its own projection, if any.
    pub shortcut_layer: Option<usize>,
    /// The shortcut's weight (DualToken: 0.6).
    pub shortcut_weight: f64,
    /// The layer whose output the semantic stream quantises and replaces.
    pub semantic_layer: usize,
    /// Width of a code vector.
    pub code_dim: usize,
    /// Entries per codebook.
    pub codebook_size: usize,
    /// Codes per position in each stream.
    pub depth: usize,
    /// Transformer blocks of the decoder over the code grid.
    pub decoder_blocks: usize,
    /// Channels of the decoder's convolutions.
    pub decoder_channels: usize,
}

impl ImageTokenizerConfig {
    /// The CPU-scale DualToken of the reproduction notes: the 6-layer ViT, pixel stream from
    /// layer 2 with a 0.6 shortcut from layer 1, semantic stream from layer 5, 512 codes of width
    /// 16 at depth 2, a 2-block decoder with 32 channels.
    pub fn small(image_shape: [usize; 3], num_classes: usize, layout: TokenizerLayout) -> ImageTokenizerConfig {
        ImageTokenizerConfig {
            encoder: VitConfig::small(image_shape, num_classes),
            layout,
            pixel_layer: 2,
            shortcut_layer: Some(1),
            shortcut_weight: 0.6,
            semantic_layer: 5,
            code_dim: 16,
            codebook_size: 512,
            depth: 2,
            decoder_blocks: 2,
            decoder_channels: 32,
        }
    }

    /// Code grid `(rows, columns)`: one position per patch.
    pub fn grid(&self) -> (usize, usize) {
        self.encoder.grid()
    }

    /// Codes per image in each stream.
    pub fn codes_per_stream(&self) -> usize {
        self.encoder.positions() * self.depth
    }

    /// Refuses configs that cannot build; the message names the field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.encoder.validate().map_err(|e| format!("encoder.{e}"))?;
        let depth = self.encoder.depth;
        if self.pixel_layer == 0 || self.pixel_layer > depth {
            return Err(format!("pixel_layer: must be in 1..={depth}, found {}", self.pixel_layer));
        }
        if self.semantic_layer == 0 || self.semantic_layer >= depth {
            return Err(format!(
                "semantic_layer: must be in 1..{depth} (a later layer must remain to run), found {}",
                self.semantic_layer
            ));
        }
        if self.shortcut_layer.is_some_and(|s| s >= self.pixel_layer) {
            return Err("shortcut_layer: must come before pixel_layer".into());
        }
        if !self.shortcut_weight.is_finite() {
            return Err("shortcut_weight: must be finite".into());
        }
        if self.code_dim == 0 || self.codebook_size < 2 || self.depth == 0 {
            return Err("code_dim and depth must be positive and codebook_size at least 2".into());
        }
        if !self.encoder.patch.is_power_of_two() {
            return Err(format!(
                "encoder.patch: the decoder doubles resolution, so {} must be a power of two",
                self.encoder.patch
            ));
        }
        if self.decoder_channels < 8 || !self.decoder_channels.is_multiple_of(8) {
            return Err(format!(
                "decoder_channels: a positive multiple of 8 (group norm), found {}",
                self.decoder_channels
            ));
        }
        Ok(())
    }
}

/// One stream: features of a layer (plus an optional shortcut) projected to code width, and
/// their quantizer.
#[derive(Debug, Clone)]
struct Stream {
    norm: LayerNorm,
    proj: Linear,
    shortcut: Option<(LayerNorm, Linear)>,
    quantizer: ResidualQuantizer,
}

impl Stream {
    fn new(cfg: &ImageTokenizerConfig, shortcut: bool, vb: VarBuilder) -> Result<Stream> {
        let d = cfg.encoder.dim;
        let shortcut = if shortcut {
            Some((
                LayerNorm::load(d, 1e-6, vb.pp("shortcut_norm"))?,
                candle_nn::linear(d, cfg.code_dim, vb.pp("shortcut_proj"))?,
            ))
        } else {
            None
        };
        Ok(Stream {
            norm: LayerNorm::load(d, 1e-6, vb.pp("norm"))?,
            proj: candle_nn::linear(d, cfg.code_dim, vb.pp("proj"))?,
            shortcut,
            quantizer: ResidualQuantizer::load(cfg.codebook_size, cfg.code_dim, cfg.depth, vb.pp("quantizer"))?,
        })
    }

    fn latent(&self, main: &Tensor, shortcut: Option<(&Tensor, f64)>) -> Result<Tensor> {
        let z = self.proj.forward(&self.norm.forward(main)?)?;
        match (&self.shortcut, shortcut) {
            (Some((norm, proj)), Some((h, w))) => z + (proj.forward(&norm.forward(h)?)? * w)?,
            _ => Ok(z),
        }
    }
}

/// The decoder: code vectors on the grid to an image in model space.
#[derive(Debug, Clone)]
struct Decoder {
    up: Linear,
    blocks: Vec<Block>,
    stem: Conv2d,
    stages: Vec<(Conv2d, GroupNorm)>,
    out: Conv2d,
}

impl Decoder {
    fn new(cfg: &ImageTokenizerConfig, vb: VarBuilder) -> Result<Decoder> {
        let (d, ch) = (cfg.encoder.dim, cfg.decoder_channels);
        let same = Conv2dConfig { padding: 1, ..Default::default() };
        let stages = (0..cfg.encoder.patch.trailing_zeros() as usize)
            .map(|s| {
                let vb = vb.pp(format!("stages.{s}"));
                Ok((conv2d(ch, ch, 3, same, vb.pp("conv"))?, group_norm(8, ch, 1e-5, vb.pp("norm"))?))
            })
            .collect::<Result<_>>()?;
        Ok(Decoder {
            up: candle_nn::linear(cfg.code_dim, d, vb.pp("up"))?,
            blocks: (0..cfg.decoder_blocks)
                .map(|i| Block::new(d, cfg.encoder.heads, cfg.encoder.mlp_ratio, vb.pp(format!("blocks.{i}"))))
                .collect::<Result<_>>()?,
            stem: conv2d(d, ch, 3, same, vb.pp("stem"))?,
            stages,
            out: conv2d(ch, cfg.encoder.image_shape[0], 3, same, vb.pp("out"))?,
        })
    }

    fn forward(&self, codes: &Tensor, grid: (usize, usize)) -> Result<Tensor> {
        let (n, p, _) = codes.dims3()?;
        let h = self.blocks.iter().try_fold(self.up.forward(codes)?, |h, b| b.forward(&h))?;
        let d = h.dim(2)?;
        let mut x = self.stem.forward(&h.transpose(1, 2)?.contiguous()?.reshape((n, d, grid.0, grid.1))?)?;
        debug_assert_eq!(p, grid.0 * grid.1);
        for (conv, norm) in &self.stages {
            let (_, _, gh, gw) = x.dims4()?;
            x = norm.forward_silu(&conv.forward(&x.upsample_nearest2d(2 * gh, 2 * gw)?)?)?;
        }
        self.out.forward(&x)
    }
}

/// An image tokenizer: the encoder, its streams, the decoder, and the semantic stream's way back
/// into the encoder.
#[derive(Debug, Clone)]
pub struct ImageTokenizer {
    config: ImageTokenizerConfig,
    encoder: Vit,
    pixel: Option<Stream>,
    semantic: Option<Stream>,
    semantic_up: Option<Linear>,
    decoder: Decoder,
}

/// The continuous features of a batch before quantisation, with the encoder's hidden states.
#[derive(Debug, Clone)]
pub struct Latents {
    /// Hidden states after layers 0 to the deepest tapped one.
    pub hidden: Vec<Tensor>,
    /// The pixel stream's `[n, positions, code_dim]`, when the layout has one.
    pub pixel: Option<Tensor>,
    /// The semantic stream's, when the layout has one.
    pub semantic: Option<Tensor>,
}

/// The codes of a batch: `[n, positions, depth]` `u32` per stream.
#[derive(Debug, Clone)]
pub struct Codes {
    /// The stream the decoder reads (the semantic one in the `unified` layout).
    pub pixel: Tensor,
    /// The stream the head reads, when the layout has one.
    pub semantic: Option<Tensor>,
}

impl ImageTokenizer {
    /// Builds the network, reading (or, from a `VarMap`, creating) its tensors.
    pub fn new(config: &ImageTokenizerConfig, vb: VarBuilder) -> Result<ImageTokenizer> {
        if let Err(e) = config.validate() {
            bail!("image tokenizer config: {e}")
        }
        let layout = config.layout;
        let pixel = match layout.has_pixel_stream() {
            true => Some(Stream::new(config, config.shortcut_layer.is_some(), vb.pp("pixel"))?),
            false => None,
        };
        let semantic = match layout.has_semantic_stream() {
            true => Some(Stream::new(config, false, vb.pp("semantic"))?),
            false => None,
        };
        let semantic_up = match layout.has_semantic_stream() {
            true => Some(candle_nn::linear(config.code_dim, config.encoder.dim, vb.pp("semantic.up"))?),
            false => None,
        };
        Ok(ImageTokenizer {
            config: config.clone(),
            encoder: Vit::new(&config.encoder, vb.pp("encoder"))?,
            pixel,
            semantic,
            semantic_up,
            decoder: Decoder::new(config, vb.pp("decoder"))?,
        })
    }

    /// The architecture.
    pub fn config(&self) -> &ImageTokenizerConfig {
        &self.config
    }

    /// The shared encoder.
    pub fn encoder(&self) -> &Vit {
        &self.encoder
    }

    /// The quantizer of the stream the decoder reads.
    pub fn pixel_quantizer(&self) -> &ResidualQuantizer {
        &self.decoded_stream().quantizer
    }

    /// The quantizer of the semantic stream, when the layout has one.
    pub fn semantic_quantizer(&self) -> Option<&ResidualQuantizer> {
        self.semantic.as_ref().map(|s| &s.quantizer)
    }

    fn decoded_stream(&self) -> &Stream {
        self.pixel.as_ref().or(self.semantic.as_ref()).expect("every layout has a stream. This is a bug.")
    }

    /// The continuous stream features of images `[n, C, H, W]` in model space.
    pub fn latents(&self, x: &Tensor) -> Result<Latents> {
        let cfg = &self.config;
        let deepest = match (&self.pixel, &self.semantic) {
            (Some(_), Some(_)) => cfg.pixel_layer.max(cfg.semantic_layer),
            (Some(_), None) => cfg.pixel_layer,
            _ => cfg.semantic_layer,
        };
        let hidden = self.encoder.hidden_states(x, deepest)?;
        let pixel = match &self.pixel {
            Some(stream) => {
                let shortcut = cfg.shortcut_layer.map(|l| (&hidden[l], cfg.shortcut_weight));
                Some(stream.latent(&hidden[cfg.pixel_layer], shortcut)?)
            }
            None => None,
        };
        let semantic = match &self.semantic {
            Some(stream) => Some(stream.latent(&hidden[cfg.semantic_layer], None)?),
            None => None,
        };
        Ok(Latents { hidden, pixel, semantic })
    }

    /// The image that code vectors of the decoded stream `[n, positions, code_dim]` describe.
    pub fn decode_latent(&self, z: &Tensor) -> Result<Tensor> {
        self.decoder.forward(z, self.config.grid())
    }

    /// The semantic stream's code vectors `[n, positions, code_dim]` put back in the encoder:
    /// `(replaced hidden state, pooled feature, logits)`.
    pub fn semantic_head(&self, z: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let Some(up) = &self.semantic_up else {
            bail!("a {} tokenizer has no semantic stream", self.config.layout.name())
        };
        let hidden = up.forward(z)?;
        let (pooled, logits) = self.encoder.finish(&hidden, self.config.semantic_layer)?;
        Ok((hidden, pooled, logits))
    }

    /// The codes of images `[n, C, H, W]` in model space.
    pub fn encode(&self, x: &Tensor) -> Result<Codes> {
        let latents = self.latents(x)?;
        let codes = |stream: &Stream, z: &Tensor| -> Result<Tensor> {
            let (n, p, d) = z.dims3()?;
            stream.quantizer.quantize(&z.reshape((n * p, d))?)?.codes.reshape((n, p, stream.quantizer.depth()))
        };
        let semantic = match (&self.semantic, &latents.semantic) {
            (Some(s), Some(z)) => Some(codes(s, z)?),
            _ => None,
        };
        let pixel = match (&self.pixel, &latents.pixel) {
            (Some(s), Some(z)) => codes(s, z)?,
            _ => semantic.clone().expect("a layout without a pixel stream has a semantic one. This is a bug."),
        };
        Ok(Codes { pixel, semantic })
    }

    /// The de-quantised vectors `[n, positions, code_dim]` of codes `[n, positions, depth]` in
    /// `quantizer` (one of this tokenizer's streams).
    pub fn dequantize(quantizer: &ResidualQuantizer, codes: &Tensor) -> Result<Tensor> {
        let (n, p, depth) = codes.dims3()?;
        quantizer.dequantize(&codes.reshape((n * p, depth))?)?.reshape((n, p, quantizer.dim()))
    }

    /// The images that pixel codes `[n, positions, depth]` decode to, in model space.
    pub fn decode(&self, codes: &Tensor) -> Result<Tensor> {
        self.decode_latent(&Self::dequantize(self.pixel_quantizer(), codes)?)
    }

    /// The head's logits on semantic codes `[n, positions, depth]`.
    pub fn classify(&self, codes: &Tensor) -> Result<Tensor> {
        let Some(quantizer) = self.semantic_quantizer() else {
            bail!("a {} tokenizer has no semantic stream", self.config.layout.name())
        };
        Ok(self.semantic_head(&Self::dequantize(quantizer, codes)?)?.2)
    }
}

/// The parameters of a tokenizer with `config`, counted by building it (codebooks included).
pub fn parameter_count(config: &ImageTokenizerConfig) -> Result<usize> {
    let vars = VarMap::new();
    ImageTokenizer::new(config, VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu))?;
    Ok(vars.all_vars().iter().map(|v| v.elem_count()).sum())
}

/// Pixels on the 0–255 scale to the model's [−1, 1].
pub fn to_model_space(pixel: f32) -> f32 {
    pixel / 127.5 - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(layout: TokenizerLayout) -> ImageTokenizerConfig {
        let mut cfg = ImageTokenizerConfig::small([1, 8, 8], 3, layout);
        cfg.encoder = VitConfig { dim: 16, depth: 3, heads: 2, ..cfg.encoder };
        cfg.pixel_layer = 2;
        cfg.semantic_layer = 2;
        cfg.codebook_size = 8;
        cfg.code_dim = 4;
        cfg.decoder_channels = 8;
        cfg.decoder_blocks = 1;
        cfg
    }

    fn images(n: usize) -> Tensor {
        Tensor::rand(-1f32, 1.0, (n, 1, 8, 8), &Device::Cpu).unwrap()
    }

    #[test]
    fn every_layout_encodes_decodes_and_classifies_what_it_has() {
        for layout in [TokenizerLayout::Dual, TokenizerLayout::PixelOnly, TokenizerLayout::Unified] {
            let vars = VarMap::new();
            let cfg = tiny(layout);
            let tok = ImageTokenizer::new(&cfg, VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu)).unwrap();
            let codes = tok.encode(&images(2)).unwrap();
            assert_eq!(codes.pixel.dims(), &[2, 4, 2], "{layout:?}");
            assert!(codes.pixel.flatten_all().unwrap().to_vec1::<u32>().unwrap().iter().all(|&c| c < 8));
            assert_eq!(tok.decode(&codes.pixel).unwrap().dims(), &[2, 1, 8, 8]);
            match &codes.semantic {
                Some(s) => assert_eq!(tok.classify(s).unwrap().dims(), &[2, 3]),
                None => assert!(layout == TokenizerLayout::PixelOnly && tok.classify(&codes.pixel).is_err()),
            }
            if layout == TokenizerLayout::Unified {
                let same = codes.pixel.to_vec3::<u32>().unwrap() == codes.semantic.unwrap().to_vec3::<u32>().unwrap();
                assert!(same, "the unified decoder reads the semantic stream");
            }
        }
    }

    #[test]
    fn the_tokens_of_an_image_do_not_depend_on_its_batch() {
        let vars = VarMap::new();
        let tok =
            ImageTokenizer::new(&tiny(TokenizerLayout::Dual), VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu))
                .unwrap();
        let x = images(3);
        let all = tok.encode(&x).unwrap().pixel.to_vec3::<u32>().unwrap();
        let one = tok.encode(&x.narrow(0, 1, 1).unwrap()).unwrap().pixel.to_vec3::<u32>().unwrap();
        assert_eq!(all[1], one[0]);
    }

    #[test]
    fn configs_that_cannot_build_are_refused() {
        let ok = tiny(TokenizerLayout::Dual);
        assert!(ok.validate().is_ok());
        assert!(ImageTokenizerConfig { semantic_layer: 3, ..ok.clone() }.validate().is_err(), "no layer left");
        assert!(ImageTokenizerConfig { shortcut_layer: Some(2), ..ok.clone() }.validate().is_err());
        assert!(ImageTokenizerConfig { decoder_channels: 12, ..ok }.validate().is_err());
        assert!(
            parameter_count(&tiny(TokenizerLayout::Dual)).unwrap()
                > parameter_count(&tiny(TokenizerLayout::PixelOnly)).unwrap()
        );
    }
}
