//! Op-level comparison of the fast CPU kernels with candle's built-in ops.
//!
//! Run with `cargo bench -p tandem-runtime --bench kernels [-- FILTER...]`; only cases whose
//! name contains one of the filters run. Each line reports the best time over several
//! repetitions and the implied GFLOP/s where that means something.

use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tandem_runtime::kernels::{self, Activation, Conv2dConfig};

fn random(rng: &mut StdRng, dims: &[usize]) -> Tensor {
    let len = dims.iter().product();
    let data: Vec<f32> = (0..len).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(data, dims, &Device::Cpu).expect("shape matches data")
}

/// Best seconds per call over a few timed batches, after a warm-up call.
fn best_secs(mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    f();
    let once = start.elapsed().as_secs_f64().max(1e-6);
    let reps = ((0.15 / once) as usize).clamp(1, 1000);
    (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..reps {
                f();
            }
            start.elapsed().as_secs_f64() / reps as f64
        })
        .fold(f64::INFINITY, f64::min)
}

/// Like [`best_secs`] for candle's side of a comparison, skipped (NaN) when
/// `KERNELS_BENCH_OURS_ONLY` is set, which keeps profiles of our side clean.
fn baseline_secs(f: impl FnMut()) -> f64 {
    if std::env::var_os("KERNELS_BENCH_OURS_ONLY").is_some() {
        return f64::NAN;
    }
    best_secs(f)
}

fn report(name: &str, ours: f64, candle: f64, flops: f64) {
    let gf = |s: f64| if flops > 0.0 { flops / s / 1e9 } else { f64::NAN };
    println!(
        "{name:<44} ours {:>9.3} ms ({:>6.1} GFLOP/s)  candle {:>9.3} ms ({:>6.1} GFLOP/s)  x{:.1}",
        ours * 1e3,
        gf(ours),
        candle * 1e3,
        gf(candle),
        candle / ours
    );
}

struct ConvCase {
    name: &'static str,
    x: [usize; 4],
    w: [usize; 4],
    cfg: Conv2dConfig,
}

fn conv_case(rng: &mut StdRng, c: &ConvCase) {
    let x = Var::from_tensor(&random(rng, &c.x)).expect("tensor");
    let w = Var::from_tensor(&random(rng, &c.w)).expect("tensor");
    let (xt, wt) = (x.as_tensor(), w.as_tensor());
    let y = kernels::conv2d(xt, wt, None, c.cfg, false).expect("conv");
    let flops = 2.0 * y.elem_count() as f64 * (c.w[1] * c.w[2] * c.w[3]) as f64;
    let ours = best_secs(|| {
        kernels::conv2d(xt, wt, None, c.cfg, false).expect("conv");
    });
    let candle = baseline_secs(|| {
        kernels::reference_conv2d(xt, wt, None, c.cfg, false).expect("conv");
    });
    report(&format!("{} forward", c.name), ours, candle, flops);

    let ours = best_secs(|| {
        let y = kernels::conv2d(xt, wt, None, c.cfg, false).expect("conv");
        y.sum_all().and_then(|t| t.backward()).expect("backward");
    });
    let candle = baseline_secs(|| {
        let y = kernels::reference_conv2d(xt, wt, None, c.cfg, false).expect("conv");
        y.sum_all().and_then(|t| t.backward()).expect("backward");
    });
    report(&format!("{} forward+backward", c.name), ours, candle, 3.0 * flops);
}

/// Case filters from the command line; cargo's own `--bench` flag is not one.
fn selected(name: &str) -> bool {
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
}

/// One training step of the benchmark CNN (conv 1->16, conv 16->32, pool, linear) at
/// batch 128, using the kernels or candle's ops.
fn cnn_train_step(rng: &mut StdRng) {
    let mut vars: Vec<Var> =
        [vec![16, 1, 3, 3], vec![16], vec![32, 16, 3, 3], vec![32], vec![10, 32 * 12 * 12], vec![10]]
            .iter()
            .map(|d| Var::from_tensor(&(random(rng, d) * 0.1).expect("scale")).expect("var"))
            .collect();
    let x = random(rng, &[128, 1, 28, 28]);
    let labels: Vec<u32> = (0..128).map(|i| i % 10).collect();
    let labels = Tensor::new(labels.as_slice(), &Device::Cpu).expect("labels");
    let cfg = Conv2dConfig::default();
    let mut step = |fast: bool| {
        let t: Vec<&Tensor> = vars.iter().map(|v| v.as_tensor()).collect();
        let conv = |x: &Tensor, w: &Tensor, b: &Tensor| {
            if fast {
                kernels::conv2d(x, w, Some(b), cfg, true)
            } else {
                kernels::reference_conv2d(x, w, Some(b), cfg, true)
            }
        };
        let h = conv(&x, t[0], t[1]).expect("conv1");
        let h = if fast {
            kernels::conv2d_max_pool(&h, t[2], Some(t[3]), cfg, true, 2)
        } else {
            conv(&h, t[2], t[3]).and_then(|h| h.max_pool2d(2))
        }
        .expect("conv2 and pool");
        let logits =
            h.flatten_from(1).and_then(|h| h.matmul(&t[4].t()?)).and_then(|h| h.broadcast_add(t[5])).expect("linear");
        let loss = candle_nn::loss::cross_entropy(&logits, &labels).expect("loss");
        let grads = loss.backward().expect("backward");
        for v in vars.iter_mut() {
            let g = grads.get(v.as_tensor()).expect("gradient");
            v.set(&(v.as_tensor() - (g * 1e-3).expect("scale")).expect("sgd")).expect("update");
        }
    };
    let ours = best_secs(|| step(true));
    let candle = baseline_secs(|| step(false));
    report("cnn train step b128 (sgd)", ours, candle, 0.0);
}

/// Inference of the benchmark CNN at batch 1, 8 and 64, with the kernels or candle's ops.
fn cnn_infer(rng: &mut StdRng) {
    let t: Vec<Tensor> = [vec![16, 1, 3, 3], vec![16], vec![32, 16, 3, 3], vec![32], vec![10, 32 * 12 * 12], vec![10]]
        .iter()
        .map(|d| (random(rng, d) * 0.1).expect("scale"))
        .collect();
    let cfg = Conv2dConfig::default();
    for batch in [1, 8, 64] {
        let x = random(rng, &[batch, 1, 28, 28]);
        let run = |fast: bool| {
            let h = if fast {
                kernels::conv2d(&x, &t[0], Some(&t[1]), cfg, true)
                    .and_then(|h| kernels::conv2d_max_pool(&h, &t[2], Some(&t[3]), cfg, true, 2))
            } else {
                kernels::reference_conv2d(&x, &t[0], Some(&t[1]), cfg, true)
                    .and_then(|h| kernels::reference_conv2d(&h, &t[2], Some(&t[3]), cfg, true))
                    .and_then(|h| h.max_pool2d(2))
            }
            .expect("convolutions");
            h.flatten_from(1).and_then(|h| h.matmul(&t[4].t()?)).and_then(|h| h.broadcast_add(&t[5])).expect("linear");
        };
        let ours = best_secs(|| run(true));
        let candle = baseline_secs(|| run(false));
        report(&format!("cnn inference b{batch}"), ours, candle, 0.0);
    }
}

fn main() {
    // As the `tandem` binary does at start-up, before any thread exists: without it candle's
    // matmul counts the CPU's cores in /proc/cpuinfo on every call, a quarter of the CNN's
    // time at batch 1, which is not what the binary pays.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
    if std::env::var_os("KERNELS_BENCH_DEFAULT_MALLOC").is_none() {
        kernels::keep_freed_memory();
    }
    let mut rng = StdRng::seed_from_u64(1);
    println!("threads: {}", rayon::current_num_threads());
    if selected("cnn train step") {
        cnn_train_step(&mut rng);
    }
    if selected("cnn inference") {
        cnn_infer(&mut rng);
    }
    let cases = [
        ConvCase {
            name: "conv 128x1x28x28 * 16x1x3x3",
            x: [128, 1, 28, 28],
            w: [16, 1, 3, 3],
            cfg: Conv2dConfig::default(),
        },
        ConvCase {
            name: "conv 128x16x26x26 * 32x16x3x3",
            x: [128, 16, 26, 26],
            w: [32, 16, 3, 3],
            cfg: Conv2dConfig::default(),
        },
        ConvCase {
            name: "conv 128x16x26x26 * 4x16x3x3 (packing-bound)",
            x: [128, 16, 26, 26],
            w: [4, 16, 3, 3],
            cfg: Conv2dConfig::default(),
        },
        ConvCase {
            name: "conv 64x32x28x28 * 64x32x3x3 pad 1",
            x: [64, 32, 28, 28],
            w: [64, 32, 3, 3],
            cfg: Conv2dConfig { padding: 1, ..Conv2dConfig::default() },
        },
        ConvCase {
            name: "conv 64x32x28x28 * 64x32x1x1",
            x: [64, 32, 28, 28],
            w: [64, 32, 1, 1],
            cfg: Conv2dConfig::default(),
        },
        ConvCase {
            name: "depthwise 64x32x28x28 3x3 pad 1",
            x: [64, 32, 28, 28],
            w: [32, 1, 3, 3],
            cfg: Conv2dConfig { padding: 1, groups: 32, ..Conv2dConfig::default() },
        },
        // Small enough to stay in cache: the kernel's own speed rather than memory's.
        ConvCase {
            name: "depthwise 4x32x28x28 3x3 pad 1",
            x: [4, 32, 28, 28],
            w: [32, 1, 3, 3],
            cfg: Conv2dConfig { padding: 1, groups: 32, ..Conv2dConfig::default() },
        },
        ConvCase {
            name: "conv 64x32x28x28 * 64x32x3x3 stride 2",
            x: [64, 32, 28, 28],
            w: [64, 32, 3, 3],
            cfg: Conv2dConfig { stride: 2, padding: 1, ..Conv2dConfig::default() },
        },
    ];
    for c in cases.iter().filter(|c| selected(c.name)) {
        conv_case(&mut rng, c);
    }

    // The second size stays in cache: the kernel's own speed rather than memory's.
    for n in [128, 4] {
        if selected(&format!("max_pool2d {n}x")) {
            max_pool(&mut rng, n);
        }
    }
    if selected("batch_norm") {
        batch_norm(&mut rng);
    }
    // The group norms of a unet-small training step at batch 64: level 0 (32 channels, 28x28)
    // and the lowest level (64 channels, 7x7), each with the SiLU that follows it.
    for dims in [[64, 32, 28, 28], [64, 64, 7, 7]] {
        let name = format!("group_norm+silu {}x{}x{}x{} g8", dims[0], dims[1], dims[2], dims[3]);
        if selected(&name) {
            group_norm(&mut rng, &name, dims);
        }
    }
    for n in [256, 1024] {
        if selected(&format!("gemm {n}")) {
            gemm(&mut rng, n);
        }
    }
    // The linear layers of all-MiniLM-L6-v2 at one short sentence (14 tokens) and at 32 texts
    // of 128 tokens: packed once against candle's matmul with its per-call packing.
    for (m, k, n, act) in [
        (14, 384, 1152, Activation::Identity),
        (14, 384, 1536, Activation::Gelu),
        (14, 1536, 384, Activation::Identity),
        (4096, 384, 1152, Activation::Identity),
        (4096, 384, 1536, Activation::Gelu),
        (4096, 1536, 384, Activation::Identity),
    ] {
        let name = format!("linear {m}x{k} * {n}x{k}T {act:?}");
        if selected(&name) {
            linear(&mut rng, &name, (m, k, n), act);
        }
    }
}

fn linear(rng: &mut StdRng, name: &str, (m, k, n): (usize, usize, usize), act: Activation) {
    let (x, w, b) = (random(rng, &[m, k]), random(rng, &[n, k]), random(rng, &[n]));
    let vec = |t: &Tensor| t.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("vec");
    let packed = kernels::PackedLinear::new(&vec(&w), Some(&vec(&b)), n, k).expect("pack");
    let xv = vec(&x);
    let mut y = vec![0f32; m * n];
    let ours = best_secs(|| packed.forward(&xv, m, &mut y, act).expect("linear"));
    let lin = candle_nn::Linear::new(w, Some(b));
    let candle = baseline_secs(|| {
        let y = candle_nn::Module::forward(&lin, &x).expect("linear");
        if act == Activation::Gelu {
            y.gelu_erf().expect("gelu");
        }
    });
    report(name, ours, candle, 2.0 * (m * k * n) as f64);
}

fn max_pool(rng: &mut StdRng, n: usize) {
    let x = Var::from_tensor(&random(rng, &[n, 32, 24, 24])).expect("tensor");
    let ours = best_secs(|| {
        kernels::max_pool2d(x.as_tensor(), 2).expect("pool");
    });
    let candle = baseline_secs(|| {
        x.as_tensor().max_pool2d(2).expect("pool");
    });
    report(&format!("max_pool2d {n}x32x24x24 forward"), ours, candle, 0.0);
    let ours = best_secs(|| {
        let y = kernels::max_pool2d(x.as_tensor(), 2).expect("pool");
        y.sum_all().and_then(|t| t.backward()).expect("backward");
    });
    let candle = baseline_secs(|| {
        let y = x.as_tensor().max_pool2d(2).expect("pool");
        y.sum_all().and_then(|t| t.backward()).expect("backward");
    });
    report(&format!("max_pool2d {n}x32x24x24 forward+backward"), ours, candle, 0.0);
}

fn batch_norm(rng: &mut StdRng) {
    use candle_nn::ModuleT;
    let x = Var::from_tensor(&random(rng, &[128, 32, 24, 24])).expect("tensor");
    let vm = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&vm, candle_core::DType::F32, &Device::Cpu);
    let bn = candle_nn::batch_norm(32, candle_nn::BatchNormConfig::default(), vb).expect("batch norm");
    let ours = best_secs(|| {
        let y = tandem_runtime::layers::batch_norm_train(&bn, x.as_tensor(), true).expect("norm");
        y.sum_all().and_then(|t| t.backward()).expect("backward");
    });
    let candle = baseline_secs(|| {
        let y = bn.forward_t(x.as_tensor(), true).and_then(|y| y.relu()).expect("norm");
        y.sum_all().and_then(|t| t.backward()).expect("backward");
    });
    report("batch_norm_train+relu 128x32x24x24 fwd+bwd", ours, candle, 0.0);
}

fn group_norm(rng: &mut StdRng, name: &str, dims: [usize; 4]) {
    let x = Var::from_tensor(&random(rng, &dims)).expect("tensor");
    let gamma = Var::from_tensor(&random(rng, &[dims[1]])).expect("tensor");
    let beta = Var::from_tensor(&random(rng, &[dims[1]])).expect("tensor");
    let (xt, gt, bt) = (x.as_tensor(), gamma.as_tensor(), beta.as_tensor());
    let ours = best_secs(|| {
        kernels::group_norm(xt, gt, bt, 8, 1e-5, true).expect("norm");
    });
    let candle = baseline_secs(|| {
        kernels::reference_group_norm(xt, gt, bt, 8, 1e-5, true).expect("norm");
    });
    report(&format!("{name} forward"), ours, candle, 0.0);
    let ours = best_secs(|| {
        let y = kernels::group_norm(xt, gt, bt, 8, 1e-5, true).expect("norm");
        y.sum_all().and_then(|t| t.backward()).expect("backward");
    });
    let candle = baseline_secs(|| {
        let y = kernels::reference_group_norm(xt, gt, bt, 8, 1e-5, true).expect("norm");
        y.sum_all().and_then(|t| t.backward()).expect("backward");
    });
    report(&format!("{name} forward+backward"), ours, candle, 0.0);
}

fn gemm(rng: &mut StdRng, n: usize) {
    {
        let a = random(rng, &[n, n]);
        let b = random(rng, &[n, n]);
        let (av, bv) = (
            a.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("vec"),
            b.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("vec"),
        );
        let mut c = vec![0f32; n * n];
        let ours = best_secs(|| kernels::sgemm(n, n, n, &av, &bv, &mut c).expect("sgemm"));
        let candle = baseline_secs(|| {
            a.matmul(&b).expect("matmul");
        });
        report(&format!("gemm {n}^3"), ours, candle, 2.0 * (n as f64).powi(3));
    }
}
