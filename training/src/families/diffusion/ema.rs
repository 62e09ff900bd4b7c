//! An exponential moving average of a model's weights: what diffusion models are sampled and
//! exported with, because the raw weights of the last steps are noisier than their average.

use candle_core::Var;
use candle_nn::VarMap;

use crate::Result;

/// The averaged copy of a `VarMap`, with the same names.
pub struct Ema {
    average: VarMap,
    decay: f64,
    updates: u64,
}

impl Ema {
    /// Starts the average at the model's current weights; `average` must hold the same names
    /// (built by the same architecture on its own `VarMap`).
    pub fn new(model: &VarMap, average: VarMap, decay: f64) -> Result<Ema> {
        let ema = Ema { average, decay, updates: 0 };
        ema.copy_from(model)?;
        Ok(ema)
    }

    /// The averaged weights, to sample from and export.
    pub fn vars(&self) -> &VarMap {
        &self.average
    }

    /// The averaged variables by name, for the checkpoint (so a resumed run keeps its average).
    pub fn state(&self, prefix: &str) -> Vec<(String, Var)> {
        let data = self.average.data().lock().expect("varmap lock poisoned. This is a bug.");
        data.iter().map(|(name, var)| (format!("{prefix}{name}"), var.clone())).collect()
    }

    /// The decay of update `k` (0-based): warmed up as (1 + k)/(10 + k) so that the average is not
    /// dominated by the random initial weights early in a short run, capped at the configured decay.
    fn decay_at(&self, k: u64) -> f64 {
        self.decay.min((1.0 + k as f64) / (10.0 + k as f64))
    }

    /// Moves the average toward the model's current weights.
    pub fn update(&mut self, model: &VarMap) -> Result<()> {
        let d = self.decay_at(self.updates);
        self.updates += 1;
        let model = model.data().lock().expect("varmap lock poisoned. This is a bug.");
        let average = self.average.data().lock().expect("varmap lock poisoned. This is a bug.");
        for (name, avg) in average.iter() {
            if let Some(w) = model.get(name) {
                let next = ((avg.as_tensor() * d)? + (w.as_tensor().detach() * (1.0 - d))?)?;
                avg.set(&next)?;
            }
        }
        Ok(())
    }

    /// Restarts the warm-up count after a resume at `steps` optimiser steps.
    pub fn set_updates(&mut self, steps: u64) {
        self.updates = steps;
    }

    fn copy_from(&self, model: &VarMap) -> Result<()> {
        let model = model.data().lock().expect("varmap lock poisoned. This is a bug.");
        let average = self.average.data().lock().expect("varmap lock poisoned. This is a bug.");
        for (name, avg) in average.iter() {
            if let Some(w) = model.get(name) {
                avg.set(&w.as_tensor().detach())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Tensor};

    fn map(value: f32) -> VarMap {
        let vm = VarMap::new();
        let t = Tensor::full(value, 3, &Device::Cpu).unwrap();
        vm.data().lock().unwrap().insert("w".into(), Var::from_tensor(&t).unwrap());
        vm
    }

    fn value(vm: &VarMap) -> f32 {
        vm.data().lock().unwrap()["w"].as_tensor().to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap()[0]
    }

    #[test]
    fn the_average_starts_at_the_model_and_follows_it_with_warmed_up_decay() {
        let model = map(1.0);
        let mut ema = Ema::new(&model, map(0.0), 0.999).unwrap();
        assert_eq!(value(ema.vars()), 1.0);
        model.data().lock().unwrap()["w"].set(&Tensor::full(11f32, 3, &Device::Cpu).unwrap()).unwrap();
        ema.update(&model).unwrap();
        // First decay is 1/10: 0.1·1 + 0.9·11.
        assert!((value(ema.vars()) - 10.0).abs() < 1e-5, "{}", value(ema.vars()));
        ema.set_updates(1_000_000);
        ema.update(&model).unwrap();
        assert!((value(ema.vars()) - (0.999 * 10.0 + 0.001 * 11.0)).abs() < 1e-4);
    }
}
