//! `tandem bench kernels`: the CPU kernels against candle's built-ins and ONNX Runtime.
//!
//! Everything is measured in one process and one run, so the ratios compare like with like
//! on whatever machine runs it. The reference CNN is the MNIST-sized network the students
//! start from: conv(1->16, 3x3) ReLU conv(16->32, 3x3) ReLU maxpool 2 linear(4608->10).

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use tandem_runtime::candle_core::{DType, Device, Module, Tensor};
use tandem_runtime::candle_nn::{self, Optimizer, VarBuilder, VarMap};
use tandem_runtime::kernels::{self, Conv2dConfig};
use tandem_runtime::layers::{self, Conv2d};

use super::python::run_python_json;

/// Batch sizes for inference throughput.
const INFER_BATCHES: [usize; 3] = [1, 8, 64];
/// Batch size of a training step.
const TRAIN_BATCH: usize = 128;
/// Side of the square matrix product.
const GEMM_N: usize = 1024;
/// Wall-clock budget per throughput figure.
const BUDGET_SECS: f64 = 1.0;

/// Which convolution and pooling implementation a forward pass uses.
#[derive(Clone, Copy)]
enum Impl {
    Ours,
    Candle,
}

/// The benchmark network.
struct Cnn {
    c1: Conv2d,
    c2: Conv2d,
    fc: candle_nn::Linear,
}

impl Cnn {
    fn new(vb: VarBuilder) -> Result<Self> {
        let cfg = Conv2dConfig::default();
        Ok(Self {
            c1: layers::conv2d(1, 16, 3, cfg, vb.pp("c1"))?,
            c2: layers::conv2d(16, 32, 3, cfg, vb.pp("c2"))?,
            fc: candle_nn::linear(32 * 12 * 12, 10, vb.pp("fc"))?,
        })
    }

    /// The same weights without gradient tracking, as a served model holds them.
    fn detached(&self) -> Self {
        let conv = |c: &Conv2d| Conv2d::new(c.weight().detach(), c.bias().map(Tensor::detach), c.config());
        Self {
            c1: conv(&self.c1),
            c2: conv(&self.c2),
            fc: candle_nn::Linear::new(self.fc.weight().detach(), self.fc.bias().map(Tensor::detach)),
        }
    }

    fn forward(&self, x: &Tensor, path: Impl) -> Result<Tensor> {
        let h = match path {
            Impl::Ours => {
                let h = self.c1.forward_relu(x)?;
                self.c2.forward_relu_max_pool(&h, 2)?
            }
            Impl::Candle => {
                let cfg = Conv2dConfig::default();
                let conv = |c: &Conv2d, x: &Tensor| kernels::reference_conv2d(x, c.weight(), c.bias(), cfg, true);
                conv(&self.c2, &conv(&self.c1, x)?)?.max_pool2d(2)?
            }
        };
        Ok(self.fc.forward(&h.flatten_from(1)?)?)
    }

    fn tensors(&self) -> HashMap<String, Tensor> {
        let mut map = HashMap::new();
        for (name, conv) in [("c1", &self.c1), ("c2", &self.c2)] {
            map.insert(format!("{name}.weight"), conv.weight().clone());
            if let Some(b) = conv.bias() {
                map.insert(format!("{name}.bias"), b.clone());
            }
        }
        map.insert("fc.weight".into(), self.fc.weight().clone());
        if let Some(b) = self.fc.bias() {
            map.insert("fc.bias".into(), b.clone());
        }
        map
    }
}

/// The largest difference between the logits of our kernels and of candle's reference ops on
/// `input`: the correctness row of the benchmark.
fn max_abs_diff_vs_candle(model: &Cnn, input: &Tensor) -> Result<f32> {
    let (ours, reference) = (model.forward(input, Impl::Ours)?, model.forward(input, Impl::Candle)?);
    Ok((&ours - &reference)?.abs()?.max_all()?.to_scalar::<f32>()?)
}

/// Seconds per call: the best of three timed rounds, each filling a third of the budget.
fn secs_per_call(mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let start = Instant::now();
    f()?;
    let once = start.elapsed().as_secs_f64().max(1e-6);
    let reps = ((BUDGET_SECS / 3.0 / once) as usize).max(1);
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let start = Instant::now();
        for _ in 0..reps {
            f()?;
        }
        best = best.min(start.elapsed().as_secs_f64() / reps as f64);
    }
    Ok(best)
}

/// Uniform values in [0, 1) of the given shape, from a small deterministic generator that
/// keeps the bench free of extra dependencies.
fn uniform(dims: &[usize], seed: u64) -> Result<Tensor> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let len = dims.iter().product();
    let data: Vec<f32> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect();
    Ok(Tensor::from_vec(data, dims, &Device::Cpu)?)
}

/// A batch of 28x28 single-channel images.
fn images(batch: usize, seed: u64) -> Result<Tensor> {
    uniform(&[batch, 1, 28, 28], seed)
}

/// Seconds for one training step (forward, cross-entropy, backward, AdamW) at `TRAIN_BATCH`.
fn train_step_secs(path: Impl) -> Result<f64> {
    let vm = VarMap::new();
    let model = Cnn::new(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu))?;
    let mut opt = candle_nn::AdamW::new(vm.all_vars(), candle_nn::ParamsAdamW::default())?;
    let x = images(TRAIN_BATCH, 7)?;
    let labels: Vec<u32> = (0..TRAIN_BATCH as u32).map(|i| i % 10).collect();
    let labels = Tensor::new(labels.as_slice(), &Device::Cpu)?;
    secs_per_call(|| {
        let logits = model.forward(&x, path)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &labels)?;
        opt.backward_step(&loss)?;
        Ok(())
    })
}

/// GFLOP/s of our `sgemm` and of candle's matmul on `n`-cubed products.
fn gemm_gflops(n: usize) -> Result<(f64, f64)> {
    let a = uniform(&[n, n], 3)?;
    let b = uniform(&[n, n], 5)?;
    let (av, bv) = (a.flatten_all()?.to_vec1::<f32>()?, b.flatten_all()?.to_vec1::<f32>()?);
    let mut c = vec![0f32; n * n];
    let flops = 2.0 * (n as f64).powi(3);
    let ours = secs_per_call(|| Ok(kernels::sgemm(n, n, n, &av, &bv, &mut c)?))?;
    let candle = secs_per_call(|| {
        a.matmul(&b)?;
        Ok(())
    })?;
    Ok((flops / ours / 1e9, flops / candle / 1e9))
}

/// GFLOP/s of the CNN's second convolution at training batch size, ours and candle's.
fn conv2_gflops() -> Result<(f64, f64)> {
    let x = (uniform(&[TRAIN_BATCH, 16, 26, 26], 11)? - 0.5)?;
    let w = (uniform(&[32, 16, 3, 3], 13)? - 0.5)?;
    let cfg = Conv2dConfig::default();
    let flops = 2.0 * (TRAIN_BATCH * 32 * 24 * 24 * 16 * 9) as f64;
    let ours = secs_per_call(|| {
        kernels::conv2d(&x, &w, None, cfg, false)?;
        Ok(())
    })?;
    let candle = secs_per_call(|| {
        kernels::reference_conv2d(&x, &w, None, cfg, false)?;
        Ok(())
    })?;
    Ok((flops / ours / 1e9, flops / candle / 1e9))
}

/// Runs ONNX Runtime on the same weights and input; `Err` carries a note on why not.
fn run_ort(model: &Cnn, input: &Tensor, threads: usize) -> std::result::Result<Value, String> {
    let dir = std::env::temp_dir().join(format!("tandem-bench-kernels-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let weights = dir.join("cnn.safetensors");
    let mut tensors = model.tensors();
    tensors.insert("input".into(), input.clone());
    let result = tandem_runtime::candle_core::safetensors::save(&tensors, &weights)
        .map_err(|e| format!("cannot write the weights: {e}"))
        .and_then(|()| {
            let batches = INFER_BATCHES.map(|b| b.to_string()).join(",");
            let args = [weights.display().to_string(), "--threads".into(), threads.to_string()]
                .into_iter()
                .chain(["--batches".into(), batches, "--seconds".into(), BUDGET_SECS.to_string()])
                .collect::<Vec<_>>();
            run_python_json("ort_cnn.py", &args)
        });
    // Best effort: a leftover temp file is harmless.
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// numpy's (OpenBLAS's) GFLOP/s on the same `n`-cubed product with the same thread count.
fn numpy_gemm_gflops(n: usize, threads: usize) -> std::result::Result<f64, String> {
    let args = ["--n".into(), n.to_string(), "--threads".into(), threads.to_string()];
    let args = [&args[..], &["--seconds".into(), BUDGET_SECS.to_string()]].concat();
    run_python_json("numpy_gemm.py", &args)?["gflops"].as_f64().ok_or_else(|| "numpy_gemm.py gave no figure".into())
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

/// Runs the whole suite and prints a table, or one JSON object with `json`.
///
/// ONNX Runtime is part of the comparison: a missing Python package is an error naming the install
/// command, unless `no_ort` skips it on purpose.
pub fn run_kernels(json: bool, no_ort: bool) -> Result<()> {
    // Process-wide and applied to both sides of every comparison below.
    kernels::keep_freed_memory();
    let threads = kernels::num_threads();
    let profile = if cfg!(debug_assertions) { "dev" } else { "release" };
    let machine = super::machine::Machine::detect();
    if !json {
        println!(
            "tandem bench kernels ({profile} build, {threads} threads, kernels on {}, convolution tile {}) | {}",
            kernels::isa_name(),
            kernels::conv_tile_name(),
            machine.describe()
        );
    }
    let vm = VarMap::new();
    let trained = Cnn::new(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu))?;
    let model = trained.detached();

    let mut ours = Vec::new();
    let mut candle = Vec::new();
    for &b in &INFER_BATCHES {
        let x = images(b, b as u64)?;
        for (path, out) in [(Impl::Ours, &mut ours), (Impl::Candle, &mut candle)] {
            let secs = secs_per_call(|| {
                model.forward(&x, path)?;
                Ok(())
            })?;
            out.push(b as f64 / secs);
        }
    }

    let train_ours = train_step_secs(Impl::Ours).context("training step with our kernels")?;
    let train_candle = train_step_secs(Impl::Candle).context("training step with candle ops")?;
    let (gemm, candle_gemm) = gemm_gflops(GEMM_N)?;
    let peak = kernels::measured_peak_gflops(BUDGET_SECS);
    let numpy_gemm = if no_ort { Err("skipped with --no-ort".to_owned()) } else { numpy_gemm_gflops(GEMM_N, threads) };
    let (conv2, candle_conv2) = conv2_gflops()?;

    let input = images(64, 99)?;
    let logits = model.forward(&input, Impl::Ours)?;
    let candle_diff = max_abs_diff_vs_candle(&model, &input)?;
    let ort = if no_ort { Err("skipped with --no-ort".to_owned()) } else { run_ort(&model, &input, threads) };
    if let (Err(note), false) = (&ort, no_ort) {
        anyhow::bail!(
            "ONNX Runtime could not run: {note} (python3 -m pip install -r benches/requirements.txt, or pass --no-ort)"
        );
    }
    let (ort_ips, ort_diff, ort_note) = match &ort {
        Ok(v) => {
            let ips: Vec<Option<f64>> =
                INFER_BATCHES.iter().map(|b| v["images_per_s"][b.to_string()].as_f64()).collect();
            let theirs: Vec<f32> = v["logits"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_f64).map(|x| x as f32).collect())
                .unwrap_or_default();
            let mine = logits.flatten_all()?.to_vec1::<f32>()?;
            let diff = (theirs.len() == mine.len())
                .then(|| mine.iter().zip(&theirs).fold(0f32, |m, (a, b)| m.max((a - b).abs())));
            (ips, diff, None)
        }
        Err(note) => (vec![None; INFER_BATCHES.len()], None, Some(note.clone())),
    };

    let b64 = INFER_BATCHES.len() - 1;
    let ort_ratio = |i: usize| ort_ips[i].map(|o| round(ours[i] / o, 3));
    let numpy_gemm = numpy_gemm.ok();
    let fraction = |gflops: f64| round(gflops / peak, 3);
    let report = json!({
        "profile": profile,
        "threads": threads,
        "cnn_infer_b1_images_per_s": round(ours[0], 1),
        "cnn_infer_b8_images_per_s": round(ours[1], 1),
        "cnn_infer_b64_images_per_s": round(ours[2], 1),
        "candle_cnn_infer_b1_images_per_s": round(candle[0], 1),
        "candle_cnn_infer_b8_images_per_s": round(candle[1], 1),
        "candle_cnn_infer_b64_images_per_s": round(candle[2], 1),
        "ort_cnn_infer_b1_images_per_s": ort_ips[0].map(|v| round(v, 1)),
        "ort_cnn_infer_b8_images_per_s": ort_ips[1].map(|v| round(v, 1)),
        "ort_cnn_infer_b64_images_per_s": ort_ips[2].map(|v| round(v, 1)),
        "cnn_infer_b1_vs_ort": ort_ratio(0),
        "cnn_infer_b8_vs_ort": ort_ratio(1),
        "cnn_infer_b64_vs_ort": ort_ratio(b64),
        "train_step_b128_ms": round(train_ours * 1e3, 2),
        "candle_train_step_b128_ms": round(train_candle * 1e3, 2),
        "train_step_speedup_vs_candle": round(train_candle / train_ours, 2),
        "gemm_gflops": round(gemm, 1),
        "candle_gemm_gflops": round(candle_gemm, 1),
        "gemm_speedup_vs_candle": round(gemm / candle_gemm, 2),
        "numpy_gemm_gflops": numpy_gemm.map(|v| round(v, 1)),
        "gemm_vs_numpy": numpy_gemm.map(|v| round(gemm / v, 3)),
        "measured_peak_gflops": round(peak, 1),
        "gemm_fraction_of_peak": fraction(gemm),
        "conv2_fraction_of_peak": fraction(conv2),
        "isa": kernels::isa_name(),
        "conv_tile": kernels::conv_tile_name(),
        "cpu_model": machine.cpu.clone(),
        "machine": machine,
        "conv2_gflops": round(conv2, 1),
        "candle_conv2_gflops": round(candle_conv2, 1),
        "max_abs_diff_vs_ort": ort_diff,
        "max_abs_diff_vs_candle": candle_diff,
        "ort_note": ort_note,
    });
    if json {
        println!("{report}");
        return Ok(());
    }
    let fmt = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.0}"));
    println!("\nCNN inference, images/s");
    println!("{:>6} {:>12} {:>12} {:>12} {:>10}", "batch", "ours", "candle", "onnxruntime", "ours/ort");
    for (i, b) in INFER_BATCHES.iter().enumerate() {
        let ratio = ort_ips[i].map_or("n/a".to_string(), |o| format!("{:.2}", ours[i] / o));
        println!("{b:>6} {:>12.0} {:>12.0} {:>12} {:>10}", ours[i], candle[i], fmt(ort_ips[i]), ratio);
    }
    println!("\nTraining step, batch {TRAIN_BATCH} (forward, backward, AdamW)");
    println!(
        "  ours {:.1} ms, candle {:.1} ms, speedup {:.2}x",
        train_ours * 1e3,
        train_candle * 1e3,
        train_candle / train_ours
    );
    println!("\nGEMM {GEMM_N}^3 and conv2 (128x16x26x26 * 32x16x3x3), GFLOP/s; measured FMA peak {peak:.1}");
    let numpy = numpy_gemm.map_or("n/a".to_string(), |v| format!("{v:.1} ({:.2}x)", gemm / v));
    println!(
        "  gemm ours {gemm:.1} ({:.0}% of peak), candle {candle_gemm:.1} ({:.2}x), numpy {numpy}",
        100.0 * gemm / peak,
        gemm / candle_gemm
    );
    println!("  conv2 ours {conv2:.1} ({:.0}% of peak), candle {candle_conv2:.1}", 100.0 * conv2 / peak);
    println!("\nOutputs: max |ours - candle| = {candle_diff:.2e}");
    match (ort_diff, ort_note) {
        (Some(d), _) => println!("Outputs: max |ours - onnxruntime| = {d:.2e}"),
        (None, Some(note)) => println!("ONNX Runtime not measured: {note}"),
        (None, None) => println!("ONNX Runtime returned no comparable outputs"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bound that BENCHMARKS.md's CPU-kernel section gives for our CNN's logits against
    /// candle's reference ops.
    fn documented_agreement_with_candle() -> f32 {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/BENCHMARKS.md"))
            .expect("BENCHMARKS.md reads");
        let section = text.split("## CPU kernels").nth(1).expect("BENCHMARKS.md has the CPU kernels section");
        let after = section.split("with candle's reference ops to ").nth(1).expect("the section states the agreement");
        let figure = after.split_whitespace().next().unwrap_or_default();
        figure.parse().unwrap_or_else(|_| panic!("the agreement {figure:?} is not a number"))
    }

    /// Issue 13's benchmarks that stay true, for the kernel row that needs no timing: fresh
    /// networks (new random weights each, as `bench kernels` draws them) must agree with candle's
    /// reference ops as closely as BENCHMARKS.md says, within a factor of 4 for the weights'
    /// draw. A kernel that computed anything else would be off by orders of magnitude more.
    #[test]
    fn the_documented_agreement_with_candle_holds() {
        let documented = documented_agreement_with_candle();
        assert!(documented > 0.0 && documented < 1e-3, "{documented}");
        for seed in 0..3 {
            let vm = VarMap::new();
            let model = Cnn::new(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap().detached();
            let diff = max_abs_diff_vs_candle(&model, &images(64, 99 + seed).unwrap()).unwrap();
            assert!(diff <= 4.0 * documented, "max |ours - candle| = {diff:e}, BENCHMARKS.md says {documented:e}");
        }
    }
}
