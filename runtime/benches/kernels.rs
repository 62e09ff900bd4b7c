//! Op-level comparison of the fast CPU kernels with candle's built-in ops.
//!
//! Run with `cargo bench -p tandem-runtime --bench kernels`. Each line reports the best
//! time over several repetitions and the implied GFLOP/s where that means something.

use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tandem_runtime::kernels::{self, Conv2dConfig};

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
    let candle = best_secs(|| {
        kernels::reference_conv2d(xt, wt, None, c.cfg, false).expect("conv");
    });
    report(&format!("{} forward", c.name), ours, candle, flops);

    let r = random(rng, y.dims());
    let ours = best_secs(|| {
        let y = kernels::conv2d(xt, wt, None, c.cfg, false).expect("conv");
        (y * &r).and_then(|t| t.sum_all()).and_then(|t| t.backward()).expect("backward");
    });
    let candle = best_secs(|| {
        let y = kernels::reference_conv2d(xt, wt, None, c.cfg, false).expect("conv");
        (y * &r).and_then(|t| t.sum_all()).and_then(|t| t.backward()).expect("backward");
    });
    report(&format!("{} forward+backward", c.name), ours, candle, 3.0 * flops);
}

fn main() {
    let mut rng = StdRng::seed_from_u64(1);
    println!("threads: {}", rayon::current_num_threads());
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
            name: "conv 64x32x28x28 * 64x32x3x3 pad 1",
            x: [64, 32, 28, 28],
            w: [64, 32, 3, 3],
            cfg: Conv2dConfig {
                padding: 1,
                ..Conv2dConfig::default()
            },
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
            cfg: Conv2dConfig {
                padding: 1,
                groups: 32,
                ..Conv2dConfig::default()
            },
        },
        ConvCase {
            name: "conv 64x32x28x28 * 64x32x3x3 stride 2",
            x: [64, 32, 28, 28],
            w: [64, 32, 3, 3],
            cfg: Conv2dConfig {
                stride: 2,
                padding: 1,
                ..Conv2dConfig::default()
            },
        },
    ];
    for c in &cases {
        conv_case(&mut rng, c);
    }

    let x = Var::from_tensor(&random(&mut rng, &[128, 32, 24, 24])).expect("tensor");
    let ours = best_secs(|| {
        kernels::max_pool2d(x.as_tensor(), 2).expect("pool");
    });
    let candle = best_secs(|| {
        x.as_tensor().max_pool2d(2).expect("pool");
    });
    report("max_pool2d 128x32x24x24 forward", ours, candle, 0.0);
    let ours = best_secs(|| {
        let y = kernels::max_pool2d(x.as_tensor(), 2).expect("pool");
        y.sum_all().and_then(|t| t.backward()).expect("backward");
    });
    let candle = best_secs(|| {
        let y = x.as_tensor().max_pool2d(2).expect("pool");
        y.sum_all().and_then(|t| t.backward()).expect("backward");
    });
    report("max_pool2d 128x32x24x24 forward+backward", ours, candle, 0.0);

    for n in [256, 1024] {
        let a = random(&mut rng, &[n, n]);
        let b = random(&mut rng, &[n, n]);
        let (av, bv) = (
            a.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("vec"),
            b.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("vec"),
        );
        let mut c = vec![0f32; n * n];
        let ours = best_secs(|| kernels::sgemm(n, n, n, &av, &bv, &mut c).expect("sgemm"));
        let candle = best_secs(|| {
            a.matmul(&b).expect("matmul");
        });
        report(&format!("gemm {n}^3"), ours, candle, 2.0 * (n as f64).powi(3));
    }
}
