//! Loss functions of the training methods.

use candle_core::{Result, Tensor, D};
use candle_nn::ops::{log_softmax, softmax};

/// Mean cross-entropy against integer labels.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    candle_nn::loss::cross_entropy(logits, labels)
}

/// Mean cross-entropy against soft targets (rows summing to one).
pub fn soft_cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    (targets * log_softmax(logits, D::Minus1)?)?.sum(D::Minus1)?.neg()?.mean_all()
}

/// Hinton's distillation term: `T² · KL(softmax(t/T) ‖ softmax(s/T))`, averaged over the batch.
///
/// The `T²` keeps the gradient scale comparable to cross-entropy as the temperature changes.
pub fn kd_kl(student: &Tensor, teacher: &Tensor, temperature: f64) -> Result<Tensor> {
    let p_t = softmax(&(teacher / temperature)?, D::Minus1)?;
    let log_p_t = log_softmax(&(teacher / temperature)?, D::Minus1)?;
    let log_p_s = log_softmax(&(student / temperature)?, D::Minus1)?;
    let kl = (p_t * (log_p_t - log_p_s)?)?.sum(D::Minus1)?.mean_all()?;
    kl * (temperature * temperature)
}

/// DHKD's BinaryKL-Norm: `T² · (1/N) · Σ_{n,c} KL(Bern(½) ‖ Bern(d))` with `d = σ((z_aux − z_T)/T)`.
///
/// Each class is a binary problem whose target is "student and teacher logits agree", so the
/// auxiliary head is pulled towards the teacher's raw logits, not just their softmax; the
/// softmax-invariant shift of the logits is not free here. The sum over classes and mean over
/// the batch follow the reference implementation. Written with `|u|` so that no exponential can
/// overflow: `KL(Bern(½) ‖ Bern(σ(u))) = |u|/2 + ln(1 + e^{−|u|}) − ln 2`.
pub fn binary_kl_norm(aux: &Tensor, teacher: &Tensor, temperature: f64) -> Result<Tensor> {
    let n = aux.dim(0)?.max(1) as f64;
    let u = ((aux - teacher)? / temperature)?.abs()?;
    let log_term = u.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
    let per_class = (u.affine(0.5, -std::f64::consts::LN_2)? + log_term)?;
    per_class.sum_all()? * (temperature * temperature / n)
}

/// CPRD's Plackett–Luce term over rows of student scores `[n, k]`, each row's candidates in the
/// teacher's order, best first: row `i` sums, over its first `kept[i]` candidates `j`,
/// `−log softmax(s_j, s_{j+1}, …, s_k)[0]` (each kept candidate against every candidate the teacher
/// ranks below it, kept or not); the result is the sum over rows divided by `n`. The suffix
/// log-sum-exps come from one product with an upper-triangular matrix, so a batch costs a few
/// tensor operations rather than one per candidate.
pub fn partial_ranking_loss(ordered: &Tensor, kept: &[usize]) -> Result<Tensor> {
    let (n, k) = ordered.dims2()?;
    let device = ordered.device();
    let below: Vec<f32> = (0..k * k).map(|idx| f32::from(u8::from(idx / k >= idx % k))).collect();
    let below = Tensor::from_vec(below, (k, k), device)?;
    let max = ordered.max_keepdim(D::Minus1)?.detach();
    let suffix_sums = ordered.broadcast_sub(&max)?.exp()?.matmul(&below)?;
    let log_sum_exp = suffix_sums.log()?.broadcast_add(&max)?;
    let mask: Vec<f32> = kept.iter().flat_map(|&m| (0..k).map(move |j| f32::from(u8::from(j < m)))).collect();
    let mask = Tensor::from_vec(mask, (n, k), device)?;
    ((log_sum_exp - ordered)? * mask)?.sum_all()? / n.max(1) as f64
}

/// Number of rows whose arg-max equals the label.
pub fn correct(logits: &Tensor, labels: &Tensor) -> Result<usize> {
    let pred = logits.argmax(D::Minus1)?;
    Ok(pred.eq(labels)?.to_dtype(candle_core::DType::U32)?.sum_all()?.to_scalar::<u32>()? as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn kd_is_zero_for_identical_logits_and_positive_otherwise() {
        let a = Tensor::new(&[[1f32, 2., 3.], [0., 0., 1.]], &Device::Cpu).unwrap();
        let b = Tensor::new(&[[3f32, 2., 1.], [1., 0., 0.]], &Device::Cpu).unwrap();
        let same = kd_kl(&a, &a, 4.0).unwrap().to_scalar::<f32>().unwrap();
        let diff = kd_kl(&a, &b, 4.0).unwrap().to_scalar::<f32>().unwrap();
        assert!(same.abs() < 1e-6, "{same}");
        assert!(diff > 0.01, "{diff}");
    }

    #[test]
    fn binary_kl_norm_is_zero_at_the_teacher_and_matches_the_sigmoid_form() {
        let teacher = Tensor::new(&[[1f32, -2., 3.], [0., 5., -1.]], &Device::Cpu).unwrap();
        let same = binary_kl_norm(&teacher, &teacher, 2.0).unwrap().to_scalar::<f32>().unwrap();
        assert!(same.abs() < 1e-6, "{same}");
        // A shift of all logits changes nothing under softmax, but does here.
        let shifted = (&teacher + 1.0).unwrap();
        assert!(kd_kl(&shifted, &teacher, 2.0).unwrap().to_scalar::<f32>().unwrap().abs() < 1e-5);
        let loss = binary_kl_norm(&shifted, &teacher, 2.0).unwrap().to_scalar::<f32>().unwrap();
        // Every class has u = 0.5: KL(½ ‖ σ(u)) = ½ ln(½/σ(u)) + ½ ln(½/(1 − σ(u))), summed over 3
        // classes, averaged over 2 rows, times T² = 4.
        let d = 1.0 / (1.0 + (-0.5f64).exp());
        let kl = 0.5 * (0.5 / d).ln() + 0.5 * (0.5 / (1.0 - d)).ln();
        let expected = 4.0 * 3.0 * kl;
        assert!((f64::from(loss) - expected).abs() < 1e-5, "{loss} vs {expected}");
        // Huge differences stay finite.
        let far = (&teacher * 1e4).unwrap();
        assert!(binary_kl_norm(&far, &teacher, 2.0).unwrap().to_scalar::<f32>().unwrap().is_finite());
    }

    #[test]
    fn binary_kl_norm_gradient_points_the_aux_logits_at_the_teacher() {
        let teacher = Tensor::new(&[[1f32, -2., 3.]], &Device::Cpu).unwrap();
        let aux = candle_core::Var::new(&[[0f32, 0., 0.]], &Device::Cpu).unwrap();
        let loss = binary_kl_norm(aux.as_tensor(), &teacher, 2.0).unwrap();
        let grad = loss.backward().unwrap().get(aux.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        // Descending the gradient moves each logit towards the teacher's.
        assert!(grad[0][0] < 0.0 && grad[0][1] > 0.0 && grad[0][2] < 0.0, "{grad:?}");
    }

    #[test]
    fn partial_ranking_is_a_plackett_luce_chain_over_the_kept_prefix() {
        let scores = Tensor::new(&[[3f32, 1.0, 2.0, -1.0], [0.0, 0.5, 1.0, 2.0]], &Device::Cpu).unwrap();
        let loss = partial_ranking_loss(&scores, &[2, 4]).unwrap().to_scalar::<f32>().unwrap();
        let rows = scores.to_vec2::<f32>().unwrap();
        let chain = |row: &[f32], kept: usize| -> f64 {
            (0..kept)
                .map(|j| {
                    let tail: f64 = row[j..].iter().map(|&s| f64::from(s).exp()).sum();
                    tail.ln() - f64::from(row[j])
                })
                .sum()
        };
        let expected = (chain(&rows[0], 2) + chain(&rows[1], 4)) / 2.0;
        assert!((f64::from(loss) - expected).abs() < 1e-5, "{loss} against {expected}");
        // The last candidate has nothing below it, and nothing kept costs nothing.
        let none = partial_ranking_loss(&scores, &[0, 0]).unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(none, 0.0);
        let last_only = partial_ranking_loss(&scores.narrow(1, 3, 1).unwrap(), &[1, 1]).unwrap();
        assert!(last_only.to_scalar::<f32>().unwrap().abs() < 1e-6);
    }

    #[test]
    fn soft_cross_entropy_with_one_hot_targets_is_cross_entropy() {
        let logits = Tensor::new(&[[1f32, 2., 3.], [0.5, 0., 1.]], &Device::Cpu).unwrap();
        let labels = Tensor::new(&[2u32, 0], &Device::Cpu).unwrap();
        let one_hot = Tensor::new(&[[0f32, 0., 1.], [1., 0., 0.]], &Device::Cpu).unwrap();
        let a = cross_entropy(&logits, &labels).unwrap().to_scalar::<f32>().unwrap();
        let b = soft_cross_entropy(&logits, &one_hot).unwrap().to_scalar::<f32>().unwrap();
        assert!((a - b).abs() < 1e-6);
        assert_eq!(correct(&logits, &labels).unwrap(), 1);
    }
}
