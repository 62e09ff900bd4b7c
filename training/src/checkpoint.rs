//! Training checkpoints: one safetensors file holding the weights, the optimiser moments and the
//! loop state, replaced atomically at the end of every epoch.
//!
//! A single file (state JSON in the safetensors metadata) means a kill can never leave weights from
//! one epoch beside state from another.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use crate::optim::AdamW;
use crate::report::EpochRecord;
use crate::{Error, Result};

const STATE_KEY: &str = "tandem.state";

/// Loop state saved with the tensors.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckpointState {
    /// Epochs completed.
    pub epochs_done: usize,
    /// Optimiser steps taken.
    pub steps: usize,
    /// Fingerprint of the run's settings; a resume with other settings is refused.
    pub fingerprint: String,
    /// Per-epoch records so far.
    pub history: Vec<EpochRecord>,
    /// Wall time spent training so far, in seconds.
    pub train_seconds: f64,
}

/// Writes the checkpoint atomically.
pub fn save(path: &Path, varmap: &VarMap, optimizer: &AdamW, state: &CheckpointState) -> Result<()> {
    let mut tensors: Vec<(String, Tensor)> = {
        let data = varmap.data().lock().expect("varmap lock poisoned. This is a bug.");
        data.iter()
            .map(|(k, v)| Ok((format!("model.{k}"), v.as_tensor().to_device(&Device::Cpu)?)))
            .collect::<Result<_>>()?
    };
    for (k, t) in optimizer.state() {
        tensors.push((k, t.to_device(&Device::Cpu)?));
    }
    let meta = HashMap::from([(
        STATE_KEY.to_owned(),
        serde_json::to_string(state).expect("state serialises. This is a bug."),
    )]);
    let bytes = safetensors::serialize(tensors.iter().map(|(k, v)| (k.as_str(), v)), Some(meta))
        .map_err(|e| Error::InvalidData { file: path.display().to_string(), reason: e.to_string() })?;
    tandem_runtime::fs::atomic_write(path, &bytes).map_err(|e| Error::io(path, e))
}

/// Loads a checkpoint into `varmap` and `optimizer`, returning the loop state.
pub fn restore(path: &Path, varmap: &VarMap, optimizer: &mut AdamW) -> Result<CheckpointState> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |reason: String| Error::InvalidData { file: path.display().to_string(), reason };
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let state_json = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(STATE_KEY))
        .ok_or_else(|| bad(format!("no {STATE_KEY} metadata")))?;
    let state: CheckpointState = serde_json::from_str(state_json).map_err(|e| bad(e.to_string()))?;
    let device = varmap
        .data()
        .lock()
        .expect("varmap lock poisoned. This is a bug.")
        .values()
        .next()
        .map(|v| v.device().clone())
        .unwrap_or(Device::Cpu);
    let tensors = candle_core::safetensors::load_buffer(&bytes, &device)?;
    {
        let data = varmap.data().lock().expect("varmap lock poisoned. This is a bug.");
        for (name, var) in data.iter() {
            let t = tensors.get(&format!("model.{name}")).ok_or_else(|| bad(format!("missing tensor model.{name}")))?;
            if t.dims() != var.dims() {
                return Err(bad(format!("tensor model.{name}: expected shape {:?}, found {:?}", var.dims(), t.dims())));
            }
            var.set(t)?;
        }
    }
    optimizer.restore(&tensors, state.steps)?;
    Ok(state)
}
