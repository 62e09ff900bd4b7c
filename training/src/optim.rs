//! AdamW with decoupled weight decay, gradient clipping, and a warm-up plus cosine learning-rate
//! schedule.
//!
//! candle-nn's `AdamW` keeps its moment estimates private, so a checkpoint could not carry them and
//! a resumed run would restart its moments from zero. This one stores them as named tensors.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use candle_nn::VarMap;

use crate::Result;

/// AdamW hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// Decoupled weight decay, applied to weight matrices and kernels only (not biases or norms).
    pub weight_decay: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator floor.
    pub eps: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self { lr: 3e-3, weight_decay: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8 }
    }
}

struct Slot {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
    decay: bool,
    /// Updates this variable has received; bias correction counts these, not the optimiser's
    /// steps, so a variable unfrozen late starts with a correctly scaled first update.
    t: usize,
    trainable: bool,
    /// This variable's learning rate relative to the schedule's (1 unless a family sets it).
    lr_scale: f64,
}

/// The optimiser state over the trainable variables of a `VarMap`.
pub struct AdamW {
    slots: Vec<Slot>,
    config: AdamWConfig,
    step: usize,
}

impl AdamW {
    /// Covers every variable except batch-norm running statistics, which are not trained by gradient.
    pub fn new(varmap: &VarMap, config: AdamWConfig) -> Result<AdamW> {
        let data = varmap.data().lock().expect("varmap lock poisoned. This is a bug.");
        let mut names: Vec<&String> = data.keys().filter(|k| !k.contains("running_")).collect();
        names.sort();
        let slots = names
            .into_iter()
            .map(|name| {
                let var = data[name].clone();
                let zeros = var.zeros_like()?;
                Ok(Slot {
                    name: name.clone(),
                    decay: var.rank() >= 2,
                    m: zeros.clone(),
                    v: zeros,
                    var,
                    t: 0,
                    trainable: true,
                    lr_scale: 1.0,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AdamW { slots, config, step: 0 })
    }

    /// Restricts updates to the variables whose name satisfies `trainable` (progressive
    /// unfreezing); the others keep their values and moments until they are let in again.
    pub fn set_trainable(&mut self, trainable: impl Fn(&str) -> bool) {
        for slot in &mut self.slots {
            slot.trainable = trainable(&slot.name);
        }
    }

    /// Sets each variable's learning rate relative to the schedule's (a parameter group): a head
    /// that starts at zero on a pretrained body needs a far larger step than the body, or it is
    /// still near zero when the schedule ends. Weight decay scales with it, as in a PyTorch group.
    pub fn set_lr_scale(&mut self, scale: impl Fn(&str) -> f64) {
        for slot in &mut self.slots {
            slot.lr_scale = scale(&slot.name);
        }
    }

    /// Names of the variables that [`AdamW::step`] currently updates.
    pub fn trainable_names(&self) -> Vec<&str> {
        self.slots.iter().filter(|s| s.trainable).map(|s| s.name.as_str()).collect()
    }

    /// One update at learning rate `lr`; frozen variables and those without a gradient are left alone.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.step += 1;
        let c = self.config;
        for slot in &mut self.slots {
            if !slot.trainable {
                continue;
            }
            let Some(g) = grads.get(slot.var.as_tensor()) else { continue };
            // A gradient that a custom op's backward computed from tracked tensors carries their
            // graph; kept in the moments, it would chain every step's graph to the next (measured:
            // 230 MB a step on the ViT). The values are the same either way.
            let g = g.detach();
            let g = &g;
            let lr = lr * slot.lr_scale;
            slot.t += 1;
            let t = i32::try_from(slot.t).unwrap_or(i32::MAX);
            let bias1 = 1.0 - c.beta1.powi(t);
            let bias2 = 1.0 - c.beta2.powi(t);
            slot.m = ((&slot.m * c.beta1)? + (g * (1.0 - c.beta1))?)?;
            slot.v = ((&slot.v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let update = ((&slot.m / bias1)? / ((&slot.v / bias2)?.sqrt()? + c.eps)?)?;
            let decayed = if slot.decay {
                (slot.var.as_tensor() * (1.0 - lr * c.weight_decay))?
            } else {
                slot.var.as_tensor().clone()
            };
            slot.var.set(&(decayed - (update * lr)?)?)?;
        }
        Ok(())
    }

    /// Rescales the gradients of the trainable variables in `grads` so that their global L2 norm
    /// is at most `max_norm` (PyTorch's `clip_grad_norm_`, with its 1e-6 guard); returns the norm
    /// before clipping. Gradients below the bound are left untouched, bit for bit.
    pub fn clip_grad_norm(&self, grads: &mut GradStore, max_norm: f64) -> Result<f64> {
        let mut sum = 0.0;
        for slot in self.slots.iter().filter(|s| s.trainable) {
            if let Some(g) = grads.get(slot.var.as_tensor()) {
                sum += g.to_dtype(DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()?;
            }
        }
        let norm = sum.sqrt();
        if norm > max_norm {
            let scale = max_norm / (norm + 1e-6);
            for slot in self.slots.iter().filter(|s| s.trainable) {
                if let Some(g) = grads.remove(slot.var.as_tensor()) {
                    grads.insert(slot.var.as_tensor(), (g * scale)?);
                }
            }
        }
        Ok(norm)
    }

    /// Steps taken so far.
    pub fn steps(&self) -> usize {
        self.step
    }

    /// Moments and per-variable update counts as named tensors (`adam.m.<var>`, `adam.v.<var>`,
    /// `adam.t.<var>`), for checkpoints.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(3 * self.slots.len());
        for s in &self.slots {
            out.push((format!("adam.m.{}", s.name), s.m.clone()));
            out.push((format!("adam.v.{}", s.name), s.v.clone()));
            let t = u32::try_from(s.t).unwrap_or(u32::MAX);
            let t =
                Tensor::new(&[t], &candle_core::Device::Cpu).expect("a one-element CPU tensor builds. This is a bug.");
            out.push((format!("adam.t.{}", s.name), t));
        }
        out
    }

    /// Restores moments and step counts written by [`AdamW::state`]. Checkpoints written before
    /// per-variable counts existed give every variable the optimiser's step count, which is what
    /// it was then.
    pub fn restore(&mut self, tensors: &HashMap<String, Tensor>, step: usize) -> Result<()> {
        for slot in &mut self.slots {
            slot.t = match tensors.get(&format!("adam.t.{}", slot.name)) {
                Some(t) => t.flatten_all()?.to_vec1::<u32>()?.first().map_or(step, |&t| t as usize),
                None => step,
            };
            for (prefix, dst) in [("adam.m.", &mut slot.m), ("adam.v.", &mut slot.v)] {
                let key = format!("{prefix}{}", slot.name);
                let t = tensors.get(&key).ok_or_else(|| crate::Error::InvalidData {
                    file: "checkpoint".into(),
                    reason: format!("missing {key}"),
                })?;
                *dst = t.to_device(slot.var.device())?;
            }
        }
        self.step = step;
        Ok(())
    }
}

/// Linear warm-up to `peak` over `warmup` steps, then cosine decay to `peak * floor` at `total`.
pub fn cosine_lr(step: usize, total: usize, warmup: usize, peak: f64, floor: f64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1);
    let progress = ((step - warmup) as f64 / span as f64).min(1.0);
    let cos = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
    peak * (floor + (1.0 - floor) * cos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        assert!((cosine_lr(0, 100, 10, 1.0, 0.0) - 0.1).abs() < 1e-12);
        assert!((cosine_lr(9, 100, 10, 1.0, 0.0) - 1.0).abs() < 1e-12);
        assert!((cosine_lr(10, 100, 10, 1.0, 0.0) - 1.0).abs() < 1e-12);
        assert!(cosine_lr(55, 100, 10, 1.0, 0.0) < 0.6);
        assert!((cosine_lr(100, 100, 10, 1.0, 0.01) - 0.01).abs() < 1e-12);
    }

    #[test]
    fn adamw_minimises_a_quadratic() {
        let varmap = VarMap::new();
        let x = varmap.get((2, 2), "w", candle_nn::Init::Const(3.0), DType::F32, &Device::Cpu).unwrap();
        let mut opt = AdamW::new(&varmap, AdamWConfig { lr: 0.1, weight_decay: 0.0, ..Default::default() }).unwrap();
        for _ in 0..200 {
            let loss = x.sqr().unwrap().sum_all().unwrap();
            opt.step(&loss.backward().unwrap(), 0.1).unwrap();
        }
        let left = x.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(left < 0.05, "{left}");
    }

    #[test]
    fn a_variable_with_a_larger_lr_scale_moves_that_much_further() {
        let varmap = VarMap::new();
        let head = varmap.get(2, "head.w", candle_nn::Init::Const(1.0), DType::F32, &Device::Cpu).unwrap();
        let body = varmap.get(2, "body.w", candle_nn::Init::Const(1.0), DType::F32, &Device::Cpu).unwrap();
        let mut opt = AdamW::new(&varmap, AdamWConfig { lr: 0.01, weight_decay: 0.0, ..Default::default() }).unwrap();
        opt.set_lr_scale(|name| if name.starts_with("head.") { 10.0 } else { 1.0 });
        let loss = (head.sum_all().unwrap() + body.sum_all().unwrap()).unwrap();
        opt.step(&loss.backward().unwrap(), 0.01).unwrap();
        // Adam's first step moves every weight by the learning rate, whatever the gradient's size.
        let moved = |v: &Tensor| 1.0 - v.to_vec1::<f32>().unwrap()[0];
        assert!((moved(&head) - 0.1).abs() < 1e-5 && (moved(&body) - 0.01).abs() < 1e-6);
    }

    #[test]
    fn the_moments_keep_no_graph_from_a_gradient_that_carries_one() {
        // A custom op's backward (the differentiable layer norm's) computes the input's gradient
        // from tracked tensors, so that gradient carries a graph; the moments must not keep it.
        let varmap = VarMap::new();
        let x = varmap
            .get((2, 4), "x", candle_nn::Init::Randn { mean: 0.0, stdev: 1.0 }, DType::F32, &Device::Cpu)
            .unwrap();
        let (w, b) =
            (Tensor::ones(4, DType::F32, &Device::Cpu).unwrap(), Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap());
        let mut opt = AdamW::new(&varmap, AdamWConfig::default()).unwrap();
        let loss = tandem_runtime::layers::differentiable::layer_norm(&x, &w, &b, 1e-5)
            .unwrap()
            .powf(3.0)
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        assert!(grads.get(&x).unwrap().track_op(), "this gradient carries a graph, or the test proves nothing");
        opt.step(&grads, 0.1).unwrap();
        assert!(!opt.slots[0].m.track_op() && !opt.slots[0].v.track_op());
    }

    #[test]
    fn clipping_bounds_the_global_norm_of_trainable_gradients_only() {
        let varmap = VarMap::new();
        let a = varmap.get(2, "a", candle_nn::Init::Const(0.0), DType::F32, &Device::Cpu).unwrap();
        let b = varmap.get(1, "b", candle_nn::Init::Const(0.0), DType::F32, &Device::Cpu).unwrap();
        let mut opt = AdamW::new(&varmap, AdamWConfig::default()).unwrap();
        // d/da of 3a0 + 4a1 is (3, 4), norm 5; b's gradient is 12.
        let loss = || {
            let wa = Tensor::new(&[3f32, 4.], &Device::Cpu).unwrap();
            ((&a * &wa).unwrap().sum_all().unwrap() + (&b * 12.0).unwrap().sum_all().unwrap()).unwrap()
        };
        let grad = |g: &GradStore, v: &Tensor| g.get(v).unwrap().to_vec1::<f32>().unwrap();
        let mut grads = loss().backward().unwrap();
        assert!((opt.clip_grad_norm(&mut grads, 100.0).unwrap() - 13.0).abs() < 1e-9);
        assert_eq!(grad(&grads, &a), vec![3.0, 4.0]);
        let norm = opt.clip_grad_norm(&mut grads, 1.3).unwrap();
        assert!((norm - 13.0).abs() < 1e-9);
        let clipped = [grad(&grads, &a), grad(&grads, &b)].concat();
        let expected = [0.3, 0.4, 1.2];
        assert!(clipped.iter().zip(expected).all(|(g, e)| (g - e).abs() < 1e-6), "{clipped:?}");
        // Frozen variables neither count towards the norm nor get scaled.
        opt.set_trainable(|name| name == "a");
        let mut grads = loss().backward().unwrap();
        assert!((opt.clip_grad_norm(&mut grads, 1.0).unwrap() - 5.0).abs() < 1e-9);
        assert_eq!(grad(&grads, &b), vec![12.0]);
        assert!((grad(&grads, &a)[1] - 0.8).abs() < 1e-6);
    }

    #[test]
    fn frozen_variables_keep_their_values_and_count_their_own_updates() {
        let varmap = VarMap::new();
        let a = varmap.get(2, "a", candle_nn::Init::Const(1.0), DType::F32, &Device::Cpu).unwrap();
        let b = varmap.get(2, "b", candle_nn::Init::Const(1.0), DType::F32, &Device::Cpu).unwrap();
        let mut opt = AdamW::new(&varmap, AdamWConfig { lr: 0.1, weight_decay: 0.0, ..Default::default() }).unwrap();
        opt.set_trainable(|name| name == "a");
        assert_eq!(opt.trainable_names(), vec!["a"]);
        for _ in 0..3 {
            let loss = (a.sqr().unwrap().sum_all().unwrap() + b.sqr().unwrap().sum_all().unwrap()).unwrap();
            opt.step(&loss.backward().unwrap(), 0.1).unwrap();
        }
        assert_eq!(b.to_vec1::<f32>().unwrap(), vec![1.0, 1.0]);
        assert!(a.to_vec1::<f32>().unwrap()[0] < 0.75);
        // The first update of a newly unfrozen variable is a full bias-corrected step of size lr.
        opt.set_trainable(|_| true);
        let loss = b.sqr().unwrap().sum_all().unwrap();
        opt.step(&loss.backward().unwrap(), 0.1).unwrap();
        let moved = 1.0 - b.to_vec1::<f32>().unwrap()[0];
        assert!((moved - 0.1).abs() < 1e-4, "{moved}");
        let state = opt.state();
        let t_b = state.iter().find(|(k, _)| k == "adam.t.b").unwrap().1.to_vec1::<u32>().unwrap();
        assert_eq!(t_b, vec![1]);
        // Counts survive a restore.
        let tensors: HashMap<String, Tensor> = state.into_iter().collect();
        let mut fresh = AdamW::new(&varmap, AdamWConfig::default()).unwrap();
        fresh.restore(&tensors, opt.steps()).unwrap();
        assert_eq!(fresh.state().iter().find(|(k, _)| k == "adam.t.a").unwrap().1.to_vec1::<u32>().unwrap(), vec![3]);
    }
}
