//! The fast CPU kernels agree with candle's reference ops, forward and backward.

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{BatchNorm, ModuleT, Optimizer, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tandem_runtime::kernels::{self, Conv2dConfig};
use tandem_runtime::layers;

fn random(rng: &mut StdRng, dims: &[usize]) -> Tensor {
    let len = dims.iter().product();
    let data: Vec<f32> = (0..len).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(data, dims, &Device::Cpu).expect("shape matches data")
}

/// Largest absolute difference, relative to the reference's largest magnitude (at least 1).
fn rel_err(got: &Tensor, want: &Tensor) -> f32 {
    assert_eq!(got.dims(), want.dims());
    let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
    let diff = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    diff / scale
}

#[derive(Debug, Clone, Copy)]
struct Case {
    n: usize,
    c_in: usize,
    c_out: usize,
    h: usize,
    w: usize,
    k: usize,
    cfg: Conv2dConfig,
    bias: bool,
    relu: bool,
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Gradients from plain loops over every index, accumulated in f64: the ground truth where
/// candle's own backward fails (it mis-sizes the input gradient whenever the stride does not
/// divide the padded input evenly).
fn naive_grads(x: &Tensor, w: &Tensor, b: Option<&Tensor>, r: &Tensor, case: &Case) -> [Tensor; 3] {
    let (xv, wv, rv) = (values(x), values(w), values(r));
    let bv = b.map(values);
    let Case { n, c_in, c_out, h, w: iw, k, cfg, relu, .. } = *case;
    let (oh, ow) = (r.dims()[2], r.dims()[3]);
    let (cg, mg) = (c_in / cfg.groups, c_out / cfg.groups);
    let mut dx = vec![0f64; xv.len()];
    let mut dw = vec![0f64; wv.len()];
    let mut db = vec![0f64; c_out];
    // Visits every (output, tap) pair that reads a real input element.
    let visit = |f: &mut dyn FnMut(usize, usize, usize)| {
        for ni in 0..n {
            for o in 0..c_out {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let out = ((ni * c_out + o) * oh + oy) * ow + ox;
                        for ci in 0..cg {
                            let c = (o / mg) * cg + ci;
                            for ky in 0..k {
                                for kx in 0..k {
                                    let iy = (oy * cfg.stride + ky * cfg.dilation) as isize - cfg.padding as isize;
                                    let ix = (ox * cfg.stride + kx * cfg.dilation) as isize - cfg.padding as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= iw as isize {
                                        continue;
                                    }
                                    let xi = ((ni * c_in + c) * h + iy as usize) * iw + ix as usize;
                                    let wi = ((o * cg + ci) * k + ky) * k + kx;
                                    f(out, xi, wi);
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    let mut pre = vec![0f64; rv.len()];
    visit(&mut |out, xi, wi| pre[out] += xv[xi] as f64 * wv[wi] as f64);
    let plane = oh * ow;
    let dy: Vec<f64> = (0..rv.len())
        .map(|i| {
            let bias = bv.as_ref().map_or(0.0, |b| b[(i / plane) % c_out] as f64);
            if relu && pre[i] + bias <= 0.0 {
                0.0
            } else {
                rv[i] as f64
            }
        })
        .collect();
    visit(&mut |out, xi, wi| {
        dx[xi] += wv[wi] as f64 * dy[out];
        dw[wi] += xv[xi] as f64 * dy[out];
    });
    for (i, d) in dy.iter().enumerate() {
        db[(i / plane) % c_out] += d;
    }
    let t = |v: Vec<f64>, dims: &[usize]| {
        let v: Vec<f32> = v.into_iter().map(|x| x as f32).collect();
        Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
    };
    [t(dx, x.dims()), t(dw, w.dims()), t(db, &[c_out])]
}

/// Runs one case through both implementations and compares output and all gradients.
fn check_case(rng: &mut StdRng, case: Case) {
    let x = Var::from_tensor(&random(rng, &[case.n, case.c_in, case.h, case.w])).unwrap();
    let w = Var::from_tensor(&random(rng, &[case.c_out, case.c_in / case.cfg.groups, case.k, case.k])).unwrap();
    let b = Var::from_tensor(&random(rng, &[case.c_out])).unwrap();
    let bias = case.bias.then(|| b.as_tensor());

    let want = kernels::reference_conv2d(x.as_tensor(), w.as_tensor(), bias, case.cfg, case.relu).unwrap();
    let got = kernels::conv2d(x.as_tensor(), w.as_tensor(), bias, case.cfg, case.relu).unwrap();
    let err = rel_err(&got, &want);
    assert!(err <= 1e-4, "forward error {err} for {case:?}");

    // A fixed random projection makes the output gradient dense and non-uniform.
    let r = random(rng, want.dims());
    let gg = (&got * &r).unwrap().sum_all().unwrap().backward().unwrap();
    // candle's backward sizes the input gradient from the output, which only recovers the
    // input size when the stride divides the padded extent exactly (and underflows otherwise).
    let span = case.cfg.dilation * (case.k - 1) + 1;
    let pad2 = 2 * case.cfg.padding;
    let candle_ok = (case.h + pad2 - span).is_multiple_of(case.cfg.stride)
        && (case.w + pad2 - span).is_multiple_of(case.cfg.stride);
    let candle = candle_ok.then(|| (&want * &r).unwrap().sum_all().unwrap().backward().unwrap());
    let naive = naive_grads(x.as_tensor(), w.as_tensor(), bias, &r, &case);
    for (i, (name, var)) in [("input", &x), ("weight", &w), ("bias", &b)].into_iter().enumerate() {
        if name == "bias" && !case.bias {
            continue;
        }
        let got = gg.get(var.as_tensor()).expect("kernel gradient exists");
        let err = rel_err(got, &naive[i]);
        assert!(err <= 1e-4, "{name} gradient error {err} against loops for {case:?}");
        if let Some(want) = candle.as_ref().and_then(|g| g.get(var.as_tensor())) {
            let err = rel_err(got, want);
            assert!(err <= 1e-4, "{name} gradient error {err} against candle for {case:?}");
        }
    }
}

#[test]
fn conv2d_matches_candle_on_random_shapes() {
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..60 {
        let groups = [1, 1, 1, 2, 3][rng.random_range(0..5)];
        let k = rng.random_range(1..=4);
        let dilation = rng.random_range(1..=2);
        let padding = rng.random_range(0..=2);
        let stride = rng.random_range(1..=3);
        let span: usize = dilation * (k - 1) + 1;
        let min_side = span.saturating_sub(2 * padding).max(1);
        let case = Case {
            n: rng.random_range(1..=3),
            c_in: groups * rng.random_range(1..=5),
            c_out: groups * rng.random_range(1..=7),
            h: rng.random_range(min_side..min_side + 9),
            w: rng.random_range(min_side..min_side + 30),
            k,
            cfg: Conv2dConfig { stride, padding, dilation, groups },
            bias: rng.random_bool(0.7),
            relu: rng.random_bool(0.5),
        };
        check_case(&mut rng, case);
    }
}

#[test]
fn depthwise_conv2d_matches_candle() {
    let mut rng = StdRng::seed_from_u64(11);
    for _ in 0..30 {
        let c = rng.random_range(1..=6);
        let mult = [1, 1, 2][rng.random_range(0..3)];
        let k = [1, 3, 3, 5][rng.random_range(0..4)];
        let dilation = rng.random_range(1..=2);
        let padding = rng.random_range(0..=2);
        let span: usize = dilation * (k - 1) + 1;
        let min_side = span.saturating_sub(2 * padding).max(1);
        let case = Case {
            n: rng.random_range(1..=3),
            c_in: c,
            c_out: c * mult,
            h: rng.random_range(min_side..min_side + 10),
            w: rng.random_range(min_side..min_side + 20),
            k,
            cfg: Conv2dConfig { stride: rng.random_range(1..=2), padding, dilation, groups: c },
            bias: rng.random_bool(0.5),
            relu: rng.random_bool(0.5),
        };
        check_case(&mut rng, case);
    }
}

#[test]
fn large_reductions_span_several_blocks() {
    // More than 256 (channel, tap) rows and more than 256 positions exercise the blocked
    // accumulation paths in every direction.
    let mut rng = StdRng::seed_from_u64(3);
    let case = Case {
        n: 2,
        c_in: 40,
        c_out: 9,
        h: 19,
        w: 17,
        k: 3,
        cfg: Conv2dConfig { padding: 1, ..Conv2dConfig::default() },
        bias: true,
        relu: true,
    };
    check_case(&mut rng, case);
    // Wide rows: whole stretches of 24 positions are read in place, the rest packed.
    let wide = Case { n: 3, c_in: 5, c_out: 6, h: 5, w: 53, bias: false, relu: false, ..case };
    check_case(&mut rng, wide);
}

#[test]
fn large_problems_take_the_threaded_paths() {
    // Above the size where the kernels spread work over threads: split by image, and a
    // single image split by bands of output rows.
    let mut rng = StdRng::seed_from_u64(41);
    let cfg = Conv2dConfig { padding: 1, ..Conv2dConfig::default() };
    for (n, c_in, side) in [(4, 16, 20), (1, 32, 24)] {
        let case = Case { n, c_in, c_out: 32, h: side, w: side, k: 3, cfg, bias: true, relu: true };
        check_case(&mut rng, case);
        let x = random(&mut rng, &[n, c_in, side, side]);
        let w = random(&mut rng, &[32, c_in, 3, 3]);
        let got = kernels::conv2d_max_pool(&x, &w, None, cfg, true, 2).unwrap();
        let want = kernels::reference_conv2d(&x, &w, None, cfg, true).and_then(|y| y.max_pool2d(2)).unwrap();
        assert!(rel_err(&got, &want) <= 1e-4);
    }
    let x = random(&mut rng, &[4, 64, 128, 130]);
    let got = kernels::max_pool2d(&x, 2).unwrap();
    assert_eq!(rel_err(&got, &x.max_pool2d(2).unwrap()), 0.0);
}

#[test]
fn input_without_gradient_is_skipped() {
    let mut rng = StdRng::seed_from_u64(5);
    let x = random(&mut rng, &[2, 3, 8, 8]);
    let w = Var::from_tensor(&random(&mut rng, &[4, 3, 3, 3])).unwrap();
    let y = kernels::conv2d(&x, w.as_tensor(), None, Conv2dConfig::default(), false).unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&x).is_none());
    assert!(grads.get(w.as_tensor()).is_some());
}

#[test]
fn bad_shapes_are_errors() {
    let mut rng = StdRng::seed_from_u64(9);
    let x = random(&mut rng, &[1, 3, 4, 4]);
    let cfg = Conv2dConfig::default();
    let wrong_channels = random(&mut rng, &[2, 2, 3, 3]);
    assert!(kernels::conv2d(&x, &wrong_channels, None, cfg, false).is_err());
    let too_big = random(&mut rng, &[2, 3, 5, 5]);
    assert!(kernels::conv2d(&x, &too_big, None, cfg, false).is_err());
    let w = random(&mut rng, &[2, 3, 3, 3]);
    let bad_bias = random(&mut rng, &[3]);
    assert!(kernels::conv2d(&x, &w, Some(&bad_bias), cfg, false).is_err());
    assert!(kernels::max_pool2d(&x, 5).is_err());
    assert!(kernels::max_pool2d(&x, 0).is_err());
}

#[test]
fn non_contiguous_input_is_accepted() {
    let mut rng = StdRng::seed_from_u64(13);
    let x = random(&mut rng, &[2, 3, 6, 7]).transpose(2, 3).unwrap();
    let w = random(&mut rng, &[4, 3, 3, 3]);
    let cfg = Conv2dConfig::default();
    let got = kernels::conv2d(&x, &w, None, cfg, false).unwrap();
    let want = kernels::reference_conv2d(&x, &w, None, cfg, false).unwrap();
    assert!(rel_err(&got, &want) <= 1e-4);
}

/// The exact max-pool derivative: each window's gradient split evenly between the inputs
/// equal to its maximum.
fn naive_pool_grad(x: &Tensor, k: usize, r: &Tensor) -> Tensor {
    let (xv, rv) = (values(x), values(r));
    let &[n, c, h, w] = x.dims() else { unreachable!() };
    let (oh, ow) = (h / k, w / k);
    let mut dx = vec![0f32; xv.len()];
    for p in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let idx: Vec<usize> = (0..k * k).map(|t| p * h * w + (oy * k + t / k) * w + ox * k + t % k).collect();
                let m = idx.iter().map(|&i| xv[i]).fold(f32::NEG_INFINITY, f32::max);
                let ties: Vec<_> = idx.into_iter().filter(|&i| xv[i] == m).collect();
                for &i in &ties {
                    dx[i] = rv[(p * oh + oy) * ow + ox] / ties.len() as f32;
                }
            }
        }
    }
    Tensor::from_vec(dx, x.dims(), &Device::Cpu).unwrap()
}

#[test]
fn max_pool_matches_candle_forward_and_exact_backward() {
    let mut rng = StdRng::seed_from_u64(17);
    for i in 0..20 {
        let k = rng.random_range(1..=3);
        let dims =
            [rng.random_range(1..=3), rng.random_range(1..=4), rng.random_range(k..k + 9), rng.random_range(k..k + 9)];
        let mut x = random(&mut rng, &dims);
        if i % 4 == 0 {
            // Rounded values create ties, as ReLU outputs do.
            x = (x * 2.0).unwrap().round().unwrap();
        }
        let x = Var::from_tensor(&x).unwrap();
        let want = x.as_tensor().max_pool2d(k).unwrap();
        let got = kernels::max_pool2d(x.as_tensor(), k).unwrap();
        assert_eq!(rel_err(&got, &want), 0.0);

        // candle's own max-pool backward scales every gradient by 1 / k^2, so the reference
        // here is the exact derivative.
        let r = random(&mut rng, want.dims());
        let gg = (&got * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let err = rel_err(gg.get(x.as_tensor()).unwrap(), &naive_pool_grad(x.as_tensor(), k, &r));
        assert!(err <= 1e-6, "max pool gradient error {err} for {dims:?} window {k}");
    }
}

#[test]
fn fused_conv_max_pool_matches_the_two_ops() {
    let mut rng = StdRng::seed_from_u64(31);
    for (n, relu, bias, size, padding) in
        [(6, true, true, 2, 0), (1, true, false, 2, 1), (5, false, true, 3, 1), (8, true, true, 2, 1)]
    {
        let cfg = Conv2dConfig { padding, ..Conv2dConfig::default() };
        let x = Var::from_tensor(&random(&mut rng, &[n, 3, 11, 10])).unwrap();
        let w = Var::from_tensor(&random(&mut rng, &[8, 3, 3, 3])).unwrap();
        let b = Var::from_tensor(&random(&mut rng, &[8])).unwrap();
        let bias = bias.then(|| b.as_tensor());
        let want = kernels::conv2d(x.as_tensor(), w.as_tensor(), bias, cfg, relu)
            .and_then(|y| kernels::max_pool2d(&y, size))
            .unwrap();
        let got = kernels::conv2d_max_pool(x.as_tensor(), w.as_tensor(), bias, cfg, relu, size).unwrap();
        let reference = kernels::reference_conv2d(x.as_tensor(), w.as_tensor(), bias, cfg, relu)
            .and_then(|y| y.max_pool2d(size))
            .unwrap();
        assert!(rel_err(&got, &want) <= 1e-6);
        assert!(rel_err(&got, &reference) <= 1e-4);

        let r = random(&mut rng, want.dims());
        let gw = (&want * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let gg = (&got * &r).unwrap().sum_all().unwrap().backward().unwrap();
        for var in [&x, &w, &b] {
            match (gg.get(var.as_tensor()), gw.get(var.as_tensor())) {
                (Some(g), Some(w)) => assert!(rel_err(g, w) <= 1e-5, "gradient differs for n={n} relu={relu}"),
                (None, None) => {}
                _ => panic!("gradients disagree on which operands have one"),
            }
        }
    }
}

/// A batch norm whose parameters and running statistics are set from `rng`.
fn random_batch_norm(rng: &mut StdRng, c: usize) -> (BatchNorm, VarMap) {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let cfg = candle_nn::BatchNormConfig { eps: 1e-5, remove_mean: true, affine: true, momentum: 0.1 };
    let bn = candle_nn::batch_norm(c, cfg, vb).unwrap();
    let mut names: Vec<_> = vm.data().lock().unwrap().keys().cloned().collect();
    names.sort();
    for name in names {
        let var = vm.data().lock().unwrap()[&name].clone();
        let t = if name.contains("var") {
            (random(rng, var.dims()).abs().unwrap() + 0.5).unwrap()
        } else {
            random(rng, var.dims())
        };
        var.set(&t).unwrap();
    }
    (bn, vm)
}

#[test]
fn batch_norm_train_matches_candle() {
    for (dims, relu) in [([4, 3, 5, 6], true), ([2, 5, 7, 3], false), ([16, 8, 4, 4], true)] {
        let mut rng = StdRng::seed_from_u64(37);
        let (ours, ours_vm) = random_batch_norm(&mut rng, dims[1]);
        let mut rng = StdRng::seed_from_u64(37);
        let (theirs, theirs_vm) = random_batch_norm(&mut rng, dims[1]);
        // A non-zero mean per channel checks that the statistics are centred properly.
        let x = Var::from_tensor(&random(&mut rng, &dims).affine(3.0, 2.0).unwrap()).unwrap();

        let got = layers::batch_norm_train(&ours, x.as_tensor(), relu).unwrap();
        let want = theirs.forward_t(x.as_tensor(), true).unwrap();
        let want = if relu { want.relu().unwrap() } else { want };
        assert!(rel_err(&got, &want) <= 1e-4, "output differs for {dims:?}");
        assert!(rel_err(ours.running_mean(), theirs.running_mean()) <= 1e-5);
        assert!(rel_err(ours.running_var(), theirs.running_var()) <= 1e-5);

        let r = random(&mut rng, &dims);
        let gg = (&got * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let gw = (&want * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let err = rel_err(gg.get(x.as_tensor()).unwrap(), gw.get(x.as_tensor()).unwrap());
        assert!(err <= 1e-4, "input gradient error {err} for {dims:?}");
        let (ov, tv) = (ours_vm.data().lock().unwrap().clone(), theirs_vm.data().lock().unwrap().clone());
        for name in ["weight", "bias"] {
            let err = rel_err(gg.get(ov[name].as_tensor()).unwrap(), gw.get(tv[name].as_tensor()).unwrap());
            assert!(err <= 1e-4, "{name} gradient error {err} for {dims:?}");
        }
    }
}

#[test]
fn sgemm_matches_naive_product() {
    let mut rng = StdRng::seed_from_u64(19);
    for (m, k, n) in [(1, 1, 1), (5, 7, 3), (33, 300, 50), (130, 20, 70), (4, 513, 24)] {
        let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut c = vec![f32::NAN; m * n];
        kernels::sgemm(m, k, n, &a, &b, &mut c).unwrap();
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|l| a[i * k + l] * b[l * n + j]).sum();
                let got = c[i * n + j];
                assert!((got - want).abs() <= 1e-4 * want.abs().max(1.0), "{m}x{k}x{n} at {i},{j}");
            }
        }
    }
    assert!(kernels::sgemm(2, 2, 2, &[0.0; 3], &[0.0; 4], &mut [0.0; 4]).is_err());
}

#[test]
fn folded_batch_norm_matches_conv_then_norm() {
    let mut rng = StdRng::seed_from_u64(23);
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let cfg = Conv2dConfig { padding: 1, ..Conv2dConfig::default() };
    for with_bias in [true, false] {
        let conv = if with_bias {
            layers::conv2d(3, 5, 3, cfg, vb.pp(format!("c{with_bias}"))).unwrap()
        } else {
            layers::conv2d_no_bias(3, 5, 3, cfg, vb.pp(format!("c{with_bias}"))).unwrap()
        };
        let mean = random(&mut rng, &[5]);
        let var = (random(&mut rng, &[5]).abs().unwrap() + 0.5).unwrap();
        let gamma = random(&mut rng, &[5]);
        let beta = random(&mut rng, &[5]);
        let bn = BatchNorm::new(5, mean, var, gamma, beta, 1e-5).unwrap();
        let x = random(&mut rng, &[2, 3, 6, 6]);
        let want = bn.forward_t(&conv.forward(&x).unwrap(), false).unwrap().relu().unwrap();
        let got = conv.fold_batch_norm(&bn).unwrap().forward_relu(&x).unwrap();
        assert!(rel_err(&got, &want) <= 1e-4);
    }
}

#[test]
fn layer_constructors_reject_bad_groups() {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let cfg = Conv2dConfig { groups: 2, ..Conv2dConfig::default() };
    assert!(layers::conv2d(3, 4, 3, cfg, vb.pp("a")).is_err());
    let zero = Conv2dConfig { groups: 0, ..Conv2dConfig::default() };
    assert!(layers::conv2d_no_bias(4, 4, 3, zero, vb.pp("b")).is_err());
}

/// The benchmark's CNN, built either on the kernels or on candle's ops.
struct TinyCnn {
    c1: layers::Conv2d,
    c2: layers::Conv2d,
    fc: candle_nn::Linear,
}

impl TinyCnn {
    fn new(vb: VarBuilder) -> Self {
        let cfg = Conv2dConfig::default();
        Self {
            c1: layers::conv2d(1, 4, 3, cfg, vb.pp("c1")).unwrap(),
            c2: layers::conv2d(4, 8, 3, cfg, vb.pp("c2")).unwrap(),
            fc: candle_nn::linear(8 * 3 * 3, 10, vb.pp("fc")).unwrap(),
        }
    }

    fn forward(&self, x: &Tensor, fast: bool) -> Tensor {
        let h = if fast {
            let h = self.c1.forward_relu(x).unwrap();
            self.c2.forward_relu_max_pool(&h, 2).unwrap()
        } else {
            let cfg = Conv2dConfig::default();
            let conv =
                |c: &layers::Conv2d, x: &Tensor| kernels::reference_conv2d(x, c.weight(), c.bias(), cfg, true).unwrap();
            candle_max_pool2(&conv(&self.c2, &conv(&self.c1, x)))
        };
        self.fc.forward(&h.flatten_from(1).unwrap()).unwrap()
    }
}

/// 2x2 max pooling from candle reductions, whose backward is exact (candle's `max_pool2d`
/// backward is not, see above).
fn candle_max_pool2(x: &Tensor) -> Tensor {
    let (n, c, h, w) = x.dims4().unwrap();
    x.reshape((n, c, h / 2, 2, w / 2, 2)).and_then(|t| t.max(5)).and_then(|t| t.max(3)).unwrap()
}

fn train_losses(fast: bool) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(29);
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let model = TinyCnn::new(vb);
    // Same seed for the weights in both runs: overwrite the random init deterministically.
    let mut names: Vec<_> = vm.data().lock().unwrap().keys().cloned().collect();
    names.sort();
    for name in names {
        let var = vm.data().lock().unwrap()[&name].clone();
        let t = (random(&mut rng, var.dims()) * 0.3).unwrap();
        var.set(&t).unwrap();
    }
    let mut opt =
        candle_nn::AdamW::new(vm.all_vars(), candle_nn::ParamsAdamW { lr: 1e-2, ..Default::default() }).unwrap();
    let x = random(&mut rng, &[16, 1, 10, 10]);
    let labels: Vec<u32> = (0..16).map(|i| (i * 7 % 10) as u32).collect();
    let labels = Tensor::new(labels.as_slice(), &Device::Cpu).unwrap();
    let mut losses = Vec::new();
    for _ in 0..8 {
        let logits = model.forward(&x, fast);
        let loss = candle_nn::loss::cross_entropy(&logits, &labels).unwrap();
        losses.push(loss.to_scalar::<f32>().unwrap());
        opt.backward_step(&loss).unwrap();
    }
    losses
}

#[test]
fn tiny_cnn_trains_like_candle() {
    let fast = train_losses(true);
    let slow = train_losses(false);
    assert!(fast.last() < fast.first(), "loss did not fall: {fast:?}");
    for (a, b) in fast.iter().zip(&slow) {
        assert!((a - b).abs() <= 1e-3 * b.abs().max(1.0), "{fast:?} vs {slow:?}");
    }
}

/// `TANDEM_ISA` caps the kernels' instruction set, which is how CI runs the AVX2 path of these
/// tests on an AVX-512 host; without it the kernels take the best the CPU has.
#[test]
fn the_isa_setting_caps_the_kernels() {
    let detected = kernels::detected_isa();
    let wanted = std::env::var(kernels::ISA_VARIABLE).ok().and_then(|v| kernels::IsaLevel::parse(&v));
    let expected = wanted.map_or(detected, |w| w.min(detected));
    assert_eq!(kernels::active_isa(), expected);
    assert_eq!(kernels::isa_name(), expected.name());
    println!("kernels run {} on a CPU that supports {}", kernels::isa_name(), detected.name());
}
