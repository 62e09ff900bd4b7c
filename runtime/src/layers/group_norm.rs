//! Group normalisation, alone or followed by SiLU, on the fused group-norm kernel.

use candle_core::{bail, Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::kernels;

/// A group norm over `[n, c, ...]` tensors with a learned weight and bias per channel.
///
/// The same parameters, names (`weight`, `bias`), initialisation and results as candle-nn's
/// `GroupNorm`, so bundles written with either load into the other.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

/// Builds a group norm over `channels` channels in `groups` groups, named `weight` and `bias`
/// under `vb` and initialised to one and zero, as candle-nn's `group_norm`.
pub fn group_norm(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<GroupNorm> {
    if groups == 0 || !channels.is_multiple_of(groups) {
        bail!("group norm over {groups} groups cannot split {channels} channels")
    }
    let weight = vb.get_with_hints(channels, "weight", candle_nn::Init::Const(1.0))?;
    let bias = vb.get_with_hints(channels, "bias", candle_nn::Init::Const(0.0))?;
    GroupNorm::new(weight, bias, groups, eps)
}

impl GroupNorm {
    /// Wraps existing parameters, e.g. loaded from a checkpoint; `weight` and `bias` are `[c]`.
    pub fn new(weight: Tensor, bias: Tensor, groups: usize, eps: f64) -> Result<Self> {
        let channels = weight.elem_count();
        if weight.dims() != [channels] || bias.dims() != [channels] {
            bail!("group norm weight {:?} and bias {:?} must both be [channels]", weight.dims(), bias.dims())
        }
        if groups == 0 || !channels.is_multiple_of(groups) {
            bail!("group norm over {groups} groups cannot split {channels} channels")
        }
        Ok(Self { weight, bias, groups, eps })
    }

    /// Group norm, then SiLU, in one pass over the activation (and one graph node).
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        kernels::group_norm(x, &self.weight, &self.bias, self.groups, self.eps, true)
    }

    /// The weight, `[c]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias, `[c]`.
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    /// Number of groups.
    pub fn groups(&self) -> usize {
        self.groups
    }

    /// The constant added to the variance.
    pub fn eps(&self) -> f64 {
        self.eps
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        kernels::group_norm(x, &self.weight, &self.bias, self.groups, self.eps, false)
    }
}
