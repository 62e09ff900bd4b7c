//! Packed linear layers against nested loops on every kernel this CPU runs, the thread split,
//! the operand checks, and the AVX-512 path's copy of rows that share L1 sets.

use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn random(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

/// `act(x · Wᵀ + b) (+ y0)` by nested loops in f64.
fn reference(x: &[f32], w: &[f32], b: &[f32], m: usize, n: usize, k: usize, act: Activation) -> Vec<f32> {
    let mut y = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let dot: f64 = (0..k).map(|l| x[i * k + l] as f64 * w[j * k + l] as f64).sum();
            let v = (dot + b[j] as f64) as f32;
            let mut one = [v];
            apply(&mut one, act);
            y[i * n + j] = one[0];
        }
    }
    y
}

fn assert_close(got: &[f32], want: &[f32], k: usize, what: &str) {
    let tol = 1e-5 * (k as f32).sqrt().max(1.0) * 4.0;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * w.abs().max(1.0), "{what}: element {i}: {g} vs {w}");
    }
}

#[test]
fn packed_linear_matches_nested_loops_for_odd_sizes_on_every_kernel() {
    let mut rng = StdRng::seed_from_u64(7);
    // 30 x 1024 and 5 x 2048: rows 4 KiB apart, which the AVX-512 path copies apart first.
    let mut shapes = vec![
        (1, 1, 1),
        (14, 384, 384),
        (3, 0, 5),
        (13, 300, 97),
        (200, 45, 33),
        (5, 517, 61),
        (30, 1024, 40),
        (5, 2048, 33),
    ];
    for _ in 0..20 {
        shapes.push((rng.random_range(1..60), rng.random_range(1..300), rng.random_range(1..80)));
    }
    for kernel in Kernel::supported() {
        for &(m, k, n) in &shapes {
            let (x, w, b) = (random(&mut rng, m * k), random(&mut rng, n * k), random(&mut rng, n));
            let lin = PackedLinear::with_kernel(kernel, &w, Some(&b), n, k).unwrap();
            for act in [Activation::Identity, Activation::Relu, Activation::Gelu, Activation::GeluTanh] {
                let mut y = vec![f32::NAN; m * n];
                lin.forward(&x, m, &mut y, act).unwrap();
                let want = reference(&x, &w, &b, m, n, k, act);
                assert_close(&y, &want, k, &format!("{kernel:?} {m}x{k}x{n} {act:?}"));
            }
            let y0 = random(&mut rng, m * n);
            let mut y = y0.clone();
            lin.forward_add(&x, m, &mut y).unwrap();
            let want: Vec<f32> =
                reference(&x, &w, &b, m, n, k, Activation::Identity).iter().zip(&y0).map(|(a, b)| a + b).collect();
            assert_close(&y, &want, k, &format!("{kernel:?} {m}x{k}x{n} accumulate"));
        }
    }
}

/// Copying rows that share L1 sets apart moves values, not arithmetic: the same product read
/// from rows 4 KiB apart (copied first) and from rows one cache line further apart (read in
/// place) gives the same bits.
#[test]
fn rows_copied_apart_give_the_same_bits_as_rows_read_in_place() {
    let (m, k, n) = (29, 1024, 70);
    let mut rng = StdRng::seed_from_u64(11);
    let (x, w) = (random(&mut rng, m * k), random(&mut rng, n * k));
    let wide = k + 16;
    let mut x_wide = vec![0.0; m * wide];
    for (dst, src) in x_wide.chunks_exact_mut(wide).zip(x.chunks_exact(k)) {
        dst[..k].copy_from_slice(src);
    }
    for kernel in Kernel::supported() {
        let lin = PackedLinear::with_kernel(kernel, &w, None, n, k).unwrap();
        let b = Panels { ptr: lin.panels.as_slice().as_ptr(), ps: k * kernel.nr(), ld: kernel.nr() };
        let run = |ptr: *const f32, rs: usize| {
            let mut y = vec![f32::NAN; m * n];
            let a = Strided { ptr, rs, cs: 1 };
            assert_eq!(rows_share_l1_sets(a), rs == k);
            let mut scratch = Vec::new();
            // SAFETY: `a` holds m rows of k floats at stride rs, the panels cover n columns
            // at depth k, and `y` holds m x n floats.
            unsafe { product(kernel, (m, n, k), a, b, y.as_mut_ptr(), n, false, Finish::default(), &mut scratch) };
            y
        };
        let (apart, in_place) = (run(x.as_ptr(), k), run(x_wide.as_ptr(), wide));
        assert!(apart.iter().zip(&in_place).all(|(p, q)| p.to_bits() == q.to_bits()), "{kernel:?}");
    }
}

#[test]
fn packed_linear_splits_large_products_over_threads_without_changing_results() {
    let mut rng = StdRng::seed_from_u64(3);
    let (m, k, n) = (301, 129, 259);
    let (x, w) = (random(&mut rng, m * k), random(&mut rng, n * k));
    let lin = PackedLinear::new(&w, None, n, k).unwrap();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
    let mut y = vec![0f32; m * n];
    pool.install(|| lin.forward(&x, m, &mut y, Activation::Identity)).unwrap();
    assert_close(&y, &reference(&x, &w, &vec![0.0; n], m, n, k, Activation::Identity), k, "threads");
    // Row by row, as a single sentence would go through, gives the same rows.
    for i in [0, 150, 300] {
        let mut row = vec![0f32; n];
        lin.forward(&x[i * k..(i + 1) * k], 1, &mut row, Activation::Identity).unwrap();
        assert_close(&row, &y[i * n..(i + 1) * n], k, "one row");
    }
}

#[test]
fn packed_linear_checks_its_operands() {
    assert!(PackedLinear::new(&[0.0; 6], None, 2, 4).is_err());
    assert!(PackedLinear::new(&[0.0; 8], Some(&[0.0; 3]), 2, 4).is_err());
    let lin = PackedLinear::new(&[0.0; 8], None, 2, 4).unwrap();
    assert_eq!((lin.in_features(), lin.out_features()), (4, 2));
    let mut y = [0f32; 2];
    assert!(lin.forward(&[0.0; 3], 1, &mut y, Activation::Identity).is_err());
    assert!(lin.forward(&[0.0; 4], 1, &mut [0f32; 3], Activation::Identity).is_err());
}
