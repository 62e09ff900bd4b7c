//! Tandem's own layers: the one place where the architectures meet the kernels.

mod conv;
pub mod differentiable;
mod group_norm;

pub use conv::{batch_norm_train, conv2d, conv2d_no_bias, max_pool2d, Conv2d, Conv2dConfig};
pub use group_norm::{group_norm, GroupNorm};
