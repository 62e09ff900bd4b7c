//! Training-step time of the diffusion UNet: forward and backward of the ε-prediction loss on a
//! batch of 64 images 28×28, for the `unet-mini` and `unet-small` presets of
//! `training/src/families/diffusion/config.rs` (replicated here, since the runtime cannot depend
//! on training).
//!
//! Run with `cargo bench -p tandem-runtime --bench unet [-- FILTER...] [--reps N] [--batch N]`;
//! only presets whose name contains one of the filters run. Each line reports the median and the
//! best of `reps` steps after two warm-up steps, and the implied images per second. No optimiser
//! step is timed: it does not depend on the layers.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tandem_runtime::kernels;
use tandem_runtime::models::unet::{UNet, UNetConfig};

/// `unet_preset(name, 28, 10)` of the training crate.
fn preset(name: &str) -> UNetConfig {
    let (base, mults, blocks, heads, groups, dropout) = match name {
        "unet-mini" => (16, vec![1, 2, 2], 1, 2, 8, 0.1),
        "unet-small" => (32, vec![1, 2, 2], 1, 4, 8, 0.1),
        other => panic!("no preset {other}"),
    };
    let levels = mults.len();
    UNetConfig {
        image_shape: [1, 28, 28],
        padded_size: 28,
        base_channels: base,
        channel_mults: mults,
        blocks_per_level: blocks,
        attention_levels: vec![levels - 1],
        attention_heads: heads,
        norm_groups: groups,
        num_classes: 10,
        dropout,
    }
}

struct Args {
    filters: Vec<String>,
    reps: usize,
    batch: usize,
}

fn parse_args() -> Args {
    let mut args = Args { filters: Vec::new(), reps: 9, batch: 64 };
    let mut it = std::env::args().skip(1).filter(|a| a != "--bench");
    while let Some(arg) = it.next() {
        let mut value =
            || it.next().and_then(|v| v.parse::<usize>().ok()).unwrap_or_else(|| panic!("{arg} needs a number"));
        match arg.as_str() {
            "--reps" => args.reps = value().max(1),
            "--batch" => args.batch = value().max(1),
            _ => args.filters.push(arg),
        }
    }
    args
}

/// The CPU model from `/proc/cpuinfo`, as `tandem bench` prints it.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

fn random(rng: &mut StdRng, dims: &[usize]) -> Tensor {
    let len = dims.iter().product();
    let data: Vec<f32> = (0..len).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(data, dims, &Device::Cpu).expect("shape matches data")
}

fn train_step(rng: &mut StdRng, name: &str, args: &Args) {
    let config = preset(name);
    let varmap = VarMap::new();
    let net = UNet::new(&config, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).expect("unet");
    // Every weight away from its initial value, so no zero-initialised layer short-cuts anything.
    for var in varmap.all_vars() {
        let noise = (random(rng, var.dims()) * 0.05).expect("scale");
        var.set(&(var.as_tensor() + noise).expect("add")).expect("set");
    }
    let n = args.batch;
    let x = random(rng, &[n, 1, 28, 28]);
    let eps = random(rng, &[n, 1, 28, 28]);
    let t: Vec<f32> = (0..n).map(|_| rng.random_range(0.0..1000.0f32).floor()).collect();
    let classes: Vec<u32> = (0..n).map(|_| rng.random_range(0..=10u32)).collect();
    let step = || {
        let pred = net.forward(&x, &t, &classes, true).expect("forward");
        let loss = (pred - &eps).and_then(|d| d.sqr()).and_then(|d| d.mean_all()).expect("loss");
        loss.backward().expect("backward");
    };
    step();
    step();
    let mut secs: Vec<f64> = (0..args.reps)
        .map(|_| {
            let start = Instant::now();
            step();
            start.elapsed().as_secs_f64()
        })
        .collect();
    secs.sort_by(f64::total_cmp);
    let median = secs[secs.len() / 2];
    let params: usize = varmap.all_vars().iter().map(|v| v.elem_count()).sum();
    println!(
        "{name:<11} ({params:>9} params) train step b{n}: median {:>8.1} ms  best {:>8.1} ms  ({:>6.1} images/s at the median, {} reps)",
        median * 1e3,
        secs[0] * 1e3,
        n as f64 / median,
        secs.len()
    );
}

fn main() {
    kernels::keep_freed_memory();
    let args = parse_args();
    println!(
        "CPU: {} | ISA: {} | {} threads | CANDLE_NUM_THREADS={}",
        cpu_model(),
        kernels::isa_name(),
        kernels::num_threads(),
        std::env::var("CANDLE_NUM_THREADS").unwrap_or_else(|_| "unset".into())
    );
    let mut rng = StdRng::seed_from_u64(7);
    for name in ["unet-mini", "unet-small"] {
        if args.filters.is_empty() || args.filters.iter().any(|f| name.contains(f.as_str())) {
            train_step(&mut rng, name, &args);
        }
    }
}
