//! Seeded weight initialisation, so that `--seed` fixes a run from its first step.
//!
//! candle's initialisers draw from an unseedable thread RNG on CPU; this overwrites every variable
//! from a seeded generator, visiting names in sorted order.

use candle_core::{Tensor, Var};
use candle_nn::VarMap;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::Result;

/// Re-initialises all variables: weights and biases uniform in ±1/sqrt(fan_in) (PyTorch's
/// default for conv and linear layers), batch-norm scale 1, shift 0, running mean 0, variance 1.
pub fn seeded_init(varmap: &VarMap, seed: u64) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    let data = varmap.data().lock().expect("varmap lock poisoned. This is a bug.");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let values = init_values(name, var, &data, &mut rng);
        var.set(&Tensor::from_vec(values, var.shape(), var.device())?)?;
    }
    Ok(())
}

fn init_values(name: &str, var: &Var, all: &std::collections::HashMap<String, Var>, rng: &mut StdRng) -> Vec<f32> {
    let n = var.elem_count();
    let leaf = name.rsplit('.').next().unwrap_or(name);
    // Batch norm (`*_bn`), group norm (`norm`, in the UNet) and layer norm (`norm`, `norm1`,
    // `shortcut_norm`, in the ViTs; `LayerNorm`, in BERT) start as the identity.
    let is_bn = name.rsplit('.').nth(1).is_some_and(|layer| {
        layer.ends_with("_bn")
            || layer.ends_with("_norm")
            || layer == "LayerNorm"
            || layer.strip_prefix("norm").is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
    });
    match (is_bn, leaf) {
        (true, "weight") | (_, "running_var") => vec![1.0; n],
        (true, "bias") | (_, "running_mean") => vec![0.0; n],
        (false, "weight") => uniform(rng, n, fan_in(var.dims())),
        (false, "bias") => {
            // A bias takes the bound of its layer's weight.
            let weight = name.strip_suffix("bias").map(|p| format!("{p}weight"));
            let fan = weight.and_then(|w| all.get(&w)).map_or(1, |w| fan_in(w.dims()));
            uniform(rng, n, fan)
        }
        _ => uniform(rng, n, fan_in(var.dims())),
    }
}

fn fan_in(dims: &[usize]) -> usize {
    dims.iter().skip(1).product::<usize>().max(1)
}

fn uniform(rng: &mut StdRng, n: usize, fan_in: usize) -> Vec<f32> {
    let bound = 1.0 / (fan_in as f32).sqrt();
    (0..n).map(|_| rng.random_range(-bound..bound)).collect()
}
