//! Named architecture presets: plain configs of the runtime's CNN, sized for each dataset, and the
//! trainable network of a config.
//!
//! Presets only choose numbers; the network itself is defined once, in the runtime.

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use tandem_runtime::models::cnn::{Cnn, CnnConfig, LayerSpec};

use crate::{Error, Result};

/// The preset names, for help texts.
pub const PRESETS: &[&str] =
    &["teacher", "teacher-wide", "student", "student-shallow", "student-sep", "student-wide", "tiny"];

/// The compact students, all under 15,000 parameters on 28×28 even with the auxiliary head.
pub const STUDENTS: &[&str] = &["student", "student-shallow", "student-sep", "student-wide"];

fn conv(out_channels: usize, kernel: usize, padding: usize) -> LayerSpec {
    LayerSpec::Conv { out_channels, kernel, stride: 1, padding, batch_norm: true, relu: true }
}

fn sep(out_channels: usize) -> LayerSpec {
    LayerSpec::Separable { out_channels, kernel: 3, stride: 1, padding: 1, batch_norm: true }
}

/// The 28x28 student's layers with every width multiplied by `scale`: one design for the student
/// and its teacher, so the teacher differs in capacity only.
fn deep(scale: usize) -> Vec<LayerSpec> {
    let [a, b, squeeze, c, d, e] = [12, 16, 12, 20, 24, 24].map(|w| w * scale);
    vec![
        conv(a, 3, 0),
        conv(b, 3, 0),
        LayerSpec::MaxPool { size: 2 },
        conv(squeeze, 1, 0),
        conv(c, 3, 0),
        conv(d, 3, 0),
        conv(e, 3, 0),
        LayerSpec::GlobalAvgPool,
    ]
}

/// The preset `name` for square grayscale inputs of side `side` (8 for digits, 28 for MNIST).
pub fn preset(name: &str, side: usize, num_classes: usize) -> Result<CnnConfig> {
    let pool = LayerSpec::MaxPool { size: 2 };
    let layers = match (name, side) {
        // About 0.2M parameters: wide enough to be a useful teacher on 8x8 digits.
        ("teacher", 8) => vec![
            conv(32, 3, 1),
            conv(64, 3, 1),
            pool,
            conv(128, 3, 1),
            LayerSpec::Flatten,
            LayerSpec::Linear { out_features: 128, relu: true },
        ],
        // The student's design at twice its widths: four times its parameters and compute.
        ("teacher", _) => deep(2),
        // Three times the student's widths (nine times its parameters): the Fashion-MNIST teacher,
        // where `teacher` stops at 92.8% with its training accuracy barely above validation.
        ("teacher-wide", 8) => return preset("teacher", side, num_classes),
        ("teacher-wide", _) => deep(3),
        // About 5k parameters on 8x8: one plain convolution, then depthwise-separable blocks.
        ("student", 8) => vec![conv(16, 3, 1), sep(32), pool, sep(48), LayerSpec::GlobalAvgPool],
        // 14,158 parameters on 28x28 (14,408 with the auxiliary head), 1.8M multiply-adds. Unpadded
        // convolutions spend the budget on depth at low resolution: two at 26 and 24 pixels, a 1x1
        // squeeze after the only pool, three more down to 6x6, then global pooling.
        ("student", _) => deep(1),
        // The first 28x28 student: padded convolutions of 16, 32 and 32 channels with a pool between each. Kept as the
        // baseline of the architecture search (BENCHMARKS.md).
        ("student-shallow", _) => {
            vec![conv(16, 3, 1), pool.clone(), conv(32, 3, 1), pool, conv(32, 3, 1), LayerSpec::GlobalAvgPool]
        }
        // Depthwise-separable all the way: four blocks, 128 features for the head.
        ("student-sep", 8) => vec![conv(16, 3, 1), sep(32), sep(48), pool, sep(128), LayerSpec::GlobalAvgPool],
        ("student-sep", _) => {
            vec![conv(16, 3, 1), pool.clone(), sep(32), sep(48), pool, sep(128), LayerSpec::GlobalAvgPool]
        }
        // Fewer, wider blocks: 32 full-convolution channels at the input resolution.
        ("student-wide", 8) => vec![conv(32, 3, 1), sep(64), pool, sep(128), LayerSpec::GlobalAvgPool],
        ("student-wide", _) => {
            vec![conv(32, 3, 1), pool.clone(), sep(64), pool, sep(128), LayerSpec::GlobalAvgPool]
        }
        ("tiny", _) => vec![conv(4, 3, 1), pool, LayerSpec::GlobalAvgPool],
        _ => {
            return Err(Error::InvalidArgument(format!(
                "unknown architecture preset {name:?}; known: {}",
                PRESETS.join(", ")
            )))
        }
    };
    Ok(CnnConfig { input_shape: [1, side, side], num_classes, layers, aux_head: false })
}

/// A preset name, or a path to a JSON file holding a full `CnnConfig`.
pub fn resolve(spec: &str, side: usize, num_classes: usize) -> Result<CnnConfig> {
    if spec.ends_with(".json") {
        let bytes = std::fs::read(spec).map_err(|e| Error::io(spec, e))?;
        let cfg: CnnConfig =
            serde_json::from_slice(&bytes).map_err(|e| Error::InvalidArgument(format!("{spec}: {e}")))?;
        if cfg.input_shape != [1, side, side] || cfg.num_classes != num_classes {
            return Err(Error::InvalidArgument(format!(
                "{spec}: input_shape {:?} / num_classes {} do not match the dataset ([1, {side}, {side}] / {num_classes})",
                cfg.input_shape, cfg.num_classes
            )));
        }
        cfg.feature_dim().map_err(|e| Error::InvalidArgument(format!("{spec}: {e}")))?;
        return Ok(cfg);
    }
    preset(spec, side, num_classes)
}

/// The network of `cfg` over fresh trainable variables, with candle's initialisation (which
/// [`crate::init::seeded_init`] replaces by a seeded one).
pub fn build(cfg: &CnnConfig, device: &Device) -> Result<(VarMap, Cnn)> {
    let vars = VarMap::new();
    let net = Cnn::new(cfg, VarBuilder::from_varmap(&vars, DType::F32, device))?;
    Ok((vars, net))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_students_are_small() {
        for side in [8, 28] {
            for name in PRESETS {
                let cfg = preset(name, side, 10).unwrap();
                cfg.feature_dim().unwrap();
            }
        }
        for side in [8, 28] {
            for name in STUDENTS {
                let mut cfg = preset(name, side, 10).unwrap();
                cfg.aux_head = true;
                let n = cfg.num_params().unwrap();
                assert!(n <= 15_000, "{name} on {side}x{side}: {n}");
            }
        }
        let teacher = preset("teacher", 28, 10).unwrap().num_params().unwrap();
        assert!(teacher > 3 * preset("student", 28, 10).unwrap().num_params().unwrap(), "{teacher}");
    }
}
