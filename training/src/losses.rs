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
