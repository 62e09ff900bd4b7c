//! The fused group norm against a direct f64 computation, candle-nn's `GroupNorm` plus `silu`
//! (forward and autograd), and central finite differences in f64.

use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::kernels::reference_group_norm;

#[derive(Debug, Clone, Copy)]
struct Case {
    dims: &'static [usize],
    groups: usize,
    silu: bool,
    eps: f64,
    /// The input is `scale * U(-1, 1) + shift`; a zero scale makes every group constant.
    scale: f32,
    shift: f32,
}

impl Case {
    fn geometry(&self) -> GroupGeometry {
        GroupGeometry { n: self.dims[0], c: self.dims[1], groups: self.groups, plane: self.dims[2..].iter().product() }
    }
}

fn uniform(rng: &mut StdRng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn tensor(data: &[f32], dims: &[usize]) -> Tensor {
    Tensor::from_slice(data, dims, &Device::Cpu).expect("shape matches data")
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("f32 values")
}

/// Largest absolute difference, relative to the reference's largest magnitude (at least 1).
fn rel_err(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(1f64, |m, v| m.max(v.abs()));
    got.iter().zip(want).fold(0f64, |m, (&a, &b)| m.max((a as f64 - b).abs())) / scale
}

fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Group norm (and SiLU) by its definition, in f64.
fn direct(x: &[f64], gamma: &[f64], beta: &[f64], g: &GroupGeometry, eps: f64, silu: bool) -> Vec<f64> {
    let (cpg, len) = (g.channels_per_group(), g.group_len());
    let mut y = vec![0.0; x.len()];
    for task in 0..g.n * g.groups {
        let xs = &x[task * len..(task + 1) * len];
        let mean = xs.iter().sum::<f64>() / len as f64;
        let var = xs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / len as f64;
        let rstd = 1.0 / (var + eps).sqrt();
        for (j, &v) in xs.iter().enumerate() {
            let c = (task % g.groups) * cpg + j / g.plane;
            let z = (v - mean) * rstd * gamma[c] + beta[c];
            y[task * len + j] = if silu { z / (1.0 + (-z).exp()) } else { z };
        }
    }
    y
}

/// Central differences of `sum(r * direct(..))` in f64, for x, gamma and beta in turn.
fn finite_differences(x: &[f64], gamma: &[f64], beta: &[f64], r: &[f64], case: &Case) -> [Vec<f64>; 3] {
    let g = case.geometry();
    let loss = |x: &[f64], gamma: &[f64], beta: &[f64]| -> f64 {
        direct(x, gamma, beta, &g, case.eps, case.silu).iter().zip(r).map(|(y, r)| y * r).sum()
    };
    let h = 1e-6;
    let diff = |which: usize, len: usize| -> Vec<f64> {
        (0..len)
            .map(|i| {
                let mut p = [x.to_vec(), gamma.to_vec(), beta.to_vec()];
                let mut m = p.clone();
                p[which][i] += h;
                m[which][i] -= h;
                (loss(&p[0], &p[1], &p[2]) - loss(&m[0], &m[1], &m[2])) / (2.0 * h)
            })
            .collect()
    };
    [diff(0, x.len()), diff(1, gamma.len()), diff(2, beta.len())]
}

/// Runs `case` through the op and checks its output against the f64 definition (and candle's
/// ops where their f32 arithmetic is accurate enough), and its gradients against candle's
/// autograd through the unfused ops and, for small cases, central finite differences in f64.
#[track_caller]
fn check(case: Case) {
    let mut rng = StdRng::seed_from_u64(case.dims.iter().product::<usize>() as u64 + case.groups as u64);
    let g = case.geometry();
    let len: usize = case.dims.iter().product();
    let x: Vec<f32> = uniform(&mut rng, len).iter().map(|v| v * case.scale + case.shift).collect();
    let gamma: Vec<f32> = uniform(&mut rng, g.c).iter().map(|v| v + 0.5).collect();
    let beta = uniform(&mut rng, g.c);
    let r = uniform(&mut rng, len);
    let xv = Var::from_tensor(&tensor(&x, case.dims)).expect("var");
    let gv = Var::from_tensor(&tensor(&gamma, &[g.c])).expect("var");
    let bv = Var::from_tensor(&tensor(&beta, &[g.c])).expect("var");
    let (xt, gt, bt) = (xv.as_tensor(), gv.as_tensor(), bv.as_tensor());

    let got = crate::kernels::group_norm(xt, gt, bt, case.groups, case.eps, case.silu).expect("group norm");
    assert_eq!(got.dims(), case.dims);
    let want = direct(&widen(&x), &widen(&gamma), &widen(&beta), &g, case.eps, case.silu);
    let err = rel_err(&values(&got), &want);
    assert!(err <= 1e-5, "{case:?}: output differs from the f64 definition by {err:e}");
    let theirs = reference_group_norm(xt, gt, bt, case.groups, case.eps, case.silu).expect("candle");
    if case.shift.abs() <= 2.0 {
        let err = rel_err(&values(&got), &widen(&values(&theirs)));
        assert!(err <= 1e-5, "{case:?}: output differs from candle's by {err:e}");
    }

    let rt = tensor(&r, case.dims);
    let ours = (&got * &rt).and_then(|l| l.sum_all()).and_then(|l| l.backward()).expect("backward");
    let ours: Vec<Vec<f32>> = [xt, gt, bt].iter().map(|v| values(ours.get(v).expect("gradient"))).collect();
    let names = ["input", "weight", "bias"];
    if case.shift.abs() <= 2.0 {
        let grads = (&theirs * &rt).and_then(|l| l.sum_all()).and_then(|l| l.backward()).expect("backward");
        for (i, v) in [xt, gt, bt].iter().enumerate() {
            let err = rel_err(&ours[i], &widen(&values(grads.get(v).expect("gradient"))));
            assert!(err <= 1e-4, "{case:?}: {} gradient differs from candle's autograd by {err:e}", names[i]);
        }
    }
    if len <= 2048 {
        let fd = finite_differences(&widen(&x), &widen(&gamma), &widen(&beta), &widen(&r), &case);
        for i in 0..3 {
            let err = rel_err(&ours[i], &fd[i]);
            assert!(err <= 1e-4, "{case:?}: {} gradient differs from finite differences by {err:e}", names[i]);
        }
    }
}

const fn case(dims: &'static [usize], groups: usize, silu: bool) -> Case {
    Case { dims, groups, silu, eps: 1e-5, scale: 1.0, shift: 0.0 }
}

#[test]
fn matches_the_definition_candle_and_finite_differences() {
    for silu in [true, false] {
        check(case(&[2, 8, 5, 6], 4, silu));
        check(case(&[3, 6, 4, 4], 6, silu)); // one channel per group
        check(case(&[2, 6, 4, 4], 1, silu)); // one group
        check(case(&[4, 8, 1, 1], 2, silu)); // H x W = 1
        check(case(&[2, 4, 7], 2, silu)); // rank 3, as candle allows
        check(case(&[1, 4, 2, 3, 2], 2, silu)); // rank 5
        check(case(&[3, 32, 7, 7], 8, silu)); // a UNet level, past the finite-difference size
        check(case(&[2, 16, 28, 28], 8, silu)); // many blocks per group, on the worker threads
    }
}

#[test]
fn eps_and_large_means_are_handled() {
    // Constant groups: the variance is zero and eps alone sets the scale.
    check(Case { scale: 0.0, shift: 0.3, ..case(&[2, 4, 3, 3], 2, true) });
    // A spread well below sqrt(eps), so eps dominates the variance.
    check(Case { eps: 1e-2, scale: 1e-2, ..case(&[2, 4, 3, 3], 2, true) });
    check(Case { eps: 1.0, ..case(&[2, 4, 3, 3], 4, false) });
    // A mean far from zero next to its spread (candle's f32 sums are not compared here).
    check(Case { scale: 1.0, shift: 300.0, ..case(&[2, 8, 6, 6], 4, true) });
    check(Case { scale: 1.0, shift: -300.0, ..case(&[2, 8, 24, 24], 2, false) });
}

#[test]
fn a_sample_is_the_same_bits_alone_in_any_batch_and_on_any_threads() {
    let mut rng = StdRng::seed_from_u64(5);
    let dims = [9, 32, 14, 14];
    let len: usize = dims.iter().product();
    let x = tensor(&uniform(&mut rng, len), &dims);
    let dy = tensor(&uniform(&mut rng, len), &dims);
    let gamma = Var::from_tensor(&tensor(&uniform(&mut rng, 32), &[32])).expect("var");
    let beta = Var::from_tensor(&tensor(&uniform(&mut rng, 32), &[32])).expect("var");
    // Output and input gradient of `x`, through the op's autograd.
    let run = |x: &Tensor, dy: &Tensor| -> (Vec<f32>, Vec<f32>) {
        let x = Var::from_tensor(x).expect("var");
        let y = crate::kernels::group_norm(x.as_tensor(), gamma.as_tensor(), beta.as_tensor(), 8, 1e-5, true)
            .expect("group norm");
        let grads = (&y * dy).and_then(|l| l.sum_all()).and_then(|l| l.backward()).expect("backward");
        (values(&y), values(grads.get(x.as_tensor()).expect("gradient")))
    };
    let batch = run(&x, &dy);
    let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("pool");
    assert_eq!(one_thread.install(|| run(&x, &dy)), batch, "the thread count changed the results");
    let item = len / dims[0];
    for (start, count) in [(0, 1), (4, 1), (8, 1), (2, 5)] {
        let part = run(&x.narrow(0, start, count).expect("narrow"), &dy.narrow(0, start, count).expect("narrow"));
        let range = start * item..(start + count) * item;
        assert!(part.0 == batch.0[range.clone()], "items {start}+{count} differ from the batch's output");
        assert!(part.1 == batch.1[range], "items {start}+{count} differ from the batch's input gradient");
    }
}

#[test]
fn every_instruction_set_gives_the_same_bits() {
    let mut rng = StdRng::seed_from_u64(11);
    let g = GroupGeometry { n: 3, c: 12, groups: 4, plane: 37 };
    let len = g.n * g.c * g.plane;
    let (x, dy) = (uniform(&mut rng, len), uniform(&mut rng, len));
    let (gamma, beta) = (uniform(&mut rng, g.c), uniform(&mut rng, g.c));
    for silu in [true, false] {
        let run = |kernel: Kernel| {
            let (y, stats) = forward(&x, &g, &gamma, &beta, 1e-5, silu, kernel);
            let grads = backward(&x, &dy, &g, &stats, &gamma, &beta, silu, kernel);
            (y, stats.mean, stats.rstd, grads)
        };
        let portable = run(Kernel::Portable);
        for kernel in Kernel::supported() {
            assert!(run(kernel) == portable, "{kernel:?} differs from the portable code, silu {silu}");
        }
    }
}

#[test]
fn bad_shapes_are_errors() {
    let x = Tensor::zeros((2, 8, 3, 3), DType::F32, &Device::Cpu).expect("zeros");
    let c8 = Tensor::ones(8, DType::F32, &Device::Cpu).expect("ones");
    let c7 = Tensor::ones(7, DType::F32, &Device::Cpu).expect("ones");
    let row = Tensor::ones((1, 8), DType::F32, &Device::Cpu).expect("ones");
    let gn = crate::kernels::group_norm;
    assert!(gn(&x, &c8, &c8, 3, 1e-5, true).is_err(), "groups that do not divide the channels");
    assert!(gn(&x, &c8, &c8, 0, 1e-5, true).is_err(), "zero groups");
    assert!(gn(&x, &c7, &c8, 4, 1e-5, true).is_err(), "a short weight");
    assert!(gn(&x, &c8, &c7, 4, 1e-5, false).is_err(), "a short bias");
    assert!(gn(&x, &row, &c8, 4, 1e-5, false).is_err(), "a weight of rank 2");
    let flat = x.flatten_from(1).expect("flatten");
    assert!(gn(&flat, &c8.repeat(9).expect("repeat"), &c8, 4, 1e-5, false).is_err(), "rank 2");
    let x64 = x.to_dtype(DType::F64).expect("f64");
    assert!(gn(&x64, &c7, &c8, 4, 1e-5, false).is_err(), "off the fast path too");
    let empty = Tensor::zeros((0, 8, 3, 3), DType::F32, &Device::Cpu).expect("zeros");
    assert_eq!(gn(&empty, &c8, &c8, 4, 1e-5, true).expect("empty batch").dims(), &[0, 8, 3, 3]);
}

#[test]
fn other_dtypes_take_candles_ops_with_their_gradients() {
    let mut rng = StdRng::seed_from_u64(3);
    let dims = [2, 6, 4, 4];
    let x = tensor(&uniform(&mut rng, 192), &dims);
    let (gamma, beta) = (tensor(&uniform(&mut rng, 6), &[6]), tensor(&uniform(&mut rng, 6), &[6]));
    let ours = crate::kernels::group_norm(&x, &gamma, &beta, 3, 1e-5, true).expect("f32");
    let wide = |t: &Tensor| Var::from_tensor(&t.to_dtype(DType::F64).expect("f64")).expect("var");
    let (x64, g64) = (wide(&x), wide(&gamma));
    let b64 = beta.to_dtype(DType::F64).expect("f64");
    let y64 = crate::kernels::group_norm(x64.as_tensor(), g64.as_tensor(), &b64, 3, 1e-5, true).expect("f64");
    let y64 = y64.flatten_all().and_then(|t| t.to_vec1::<f64>()).expect("values");
    assert!(rel_err(&values(&ours), &y64) <= 1e-5);
    let grads = crate::kernels::group_norm(x64.as_tensor(), g64.as_tensor(), &b64, 3, 1e-5, true)
        .and_then(|y| y.sum_all())
        .and_then(|l| l.backward())
        .expect("backward");
    assert!(grads.get(x64.as_tensor()).is_some() && grads.get(g64.as_tensor()).is_some());
}

#[test]
fn only_tracked_operands_get_gradients() {
    let mut rng = StdRng::seed_from_u64(9);
    let x = Var::from_tensor(&tensor(&uniform(&mut rng, 96), &[2, 4, 3, 4])).expect("var");
    let gamma = tensor(&uniform(&mut rng, 4), &[4]);
    let beta = Var::from_tensor(&tensor(&uniform(&mut rng, 4), &[4])).expect("var");
    let y = crate::kernels::group_norm(x.as_tensor(), &gamma, beta.as_tensor(), 2, 1e-5, true).expect("op");
    let grads = y.sum_all().and_then(|l| l.backward()).expect("backward");
    assert_eq!(grads.get(x.as_tensor()).expect("input gradient").dims(), &[2, 4, 3, 4]);
    assert_eq!(grads.get(beta.as_tensor()).expect("bias gradient").dims(), &[4]);
    assert!(grads.get(&gamma).is_none());
}
