//! Dual-input-output training's pieces outside the loss: merging the two branches into one
//! network, and the progressive-unfreezing plan of the fine-tuning that follows.
//!
//! Both branches start from the same initial weights. They then see the same images in the same
//! order, branch A the original images and branch B strongly distorted copies
//! ([`crate::augment::StrongAugment`]), so their units stay in correspondence and averaging
//! matching weights is meaningful; from independent starts it would mix unrelated units. The merge
//! rule of the paper is not known; [`MergeRule`] names the two candidates. Fine-tuning the merged
//! network uses the run's ordinary augmentation, with constant learning rates that halve per stage.

use std::str::FromStr;

use candle_nn::VarMap;
use tandem_runtime::models::cnn::{CnnConfig, LayerSpec};

use crate::{Error, Result};

/// Learning-rate factor from one fine-tuning stage to the next; the first stage runs at the peak
/// learning rate times this factor.
pub const STAGE_LR_FACTOR: f64 = 0.5;

/// How the two trained branches become one network of the same architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeRule {
    /// The mean of every pair of matching tensors, batch-norm running statistics included.
    Average,
    /// Branch A (trained on plain images) alone: the baseline that shows what averaging adds.
    A,
}

impl MergeRule {
    /// The names `--merge` accepts.
    pub const NAMES: [&'static str; 2] = ["average", "a"];

    /// The name as the CLI and provenance spell it.
    pub fn name(&self) -> &'static str {
        match self {
            MergeRule::Average => "average",
            MergeRule::A => "a",
        }
    }
}

impl FromStr for MergeRule {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "average" => Ok(MergeRule::Average),
            "a" => Ok(MergeRule::A),
            other => Err(Error::InvalidArgument(format!(
                "unknown merge rule {other:?}; known: {}",
                MergeRule::NAMES.join(", ")
            ))),
        }
    }
}

/// Writes the merge of branches `a` and `b` into every variable of `into`; all three hold the
/// same architecture under the same names.
pub fn merge(a: &VarMap, b: &VarMap, into: &VarMap, rule: MergeRule) -> Result<()> {
    let a = a.data().lock().expect("varmap lock poisoned. This is a bug.");
    let b = b.data().lock().expect("varmap lock poisoned. This is a bug.");
    let into = into.data().lock().expect("varmap lock poisoned. This is a bug.");
    for (name, dst) in into.iter() {
        let (Some(va), Some(vb)) = (a.get(name), b.get(name)) else {
            return Err(Error::InvalidArgument(format!("branch tensor {name} is missing")));
        };
        let merged = match rule {
            MergeRule::Average => ((va.as_tensor() + vb.as_tensor())? * 0.5)?,
            MergeRule::A => va.as_tensor().clone(),
        };
        dst.set(&merged)?;
    }
    Ok(())
}

/// Variable-name prefixes trained in each fine-tuning stage: stage 0 trains the heads only, and
/// each later stage adds the next block with parameters, from the top of the body down, until
/// the last stage trains everything.
pub fn unfreeze_stages(cfg: &CnnConfig) -> Vec<Vec<String>> {
    let blocks: Vec<usize> = cfg
        .layers
        .iter()
        .enumerate()
        .filter(|(_, l)| matches!(l, LayerSpec::Conv { .. } | LayerSpec::Separable { .. } | LayerSpec::Linear { .. }))
        .map(|(i, _)| i)
        .collect();
    let mut prefixes = vec!["head.".to_owned(), "head_aux.".to_owned()];
    let mut stages = vec![prefixes.clone()];
    for i in blocks.into_iter().rev() {
        prefixes.push(format!("layers.{i}."));
        stages.push(prefixes.clone());
    }
    stages
}

/// Whether the variable `name` trains under `prefixes` (one stage of [`unfreeze_stages`]).
pub fn in_stage(name: &str, prefixes: &[String]) -> bool {
    prefixes.iter().any(|p| name.starts_with(p.as_str()))
}

/// The constant learning rate of fine-tuning stage `stage`.
pub fn stage_lr(peak: f64, stage: usize) -> f64 {
    peak * STAGE_LR_FACTOR.powi(i32::try_from(stage + 1).unwrap_or(i32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn stages_unfreeze_from_the_head_down() {
        let cfg = crate::arch::preset("student-shallow", 28, 10).unwrap();
        let stages = unfreeze_stages(&cfg);
        // student-shallow: conv, pool, conv, pool, conv, gap — three blocks with parameters.
        assert_eq!(stages.len(), 4);
        assert!(in_stage("head.weight", &stages[0]));
        assert!(!in_stage("layers.4.conv.weight", &stages[0]));
        assert!(in_stage("layers.4.conv_bn.bias", &stages[1]));
        assert!(!in_stage("layers.2.conv.weight", &stages[1]));
        assert!(in_stage("layers.0.conv.weight", &stages[3]));
        assert!(!in_stage("layers.1.conv.weight", &stages[3]));
        assert!((stage_lr(1.0, 0) - 0.5).abs() < 1e-12);
        assert!((stage_lr(1.0, 2) - 0.125).abs() < 1e-12);
    }

    #[test]
    fn merges_average_or_keep_branch_a() {
        let make = |v: f32| {
            let m = VarMap::new();
            m.get((2, 2), "w", candle_nn::Init::Const(f64::from(v)), DType::F32, &Device::Cpu).unwrap();
            m
        };
        let (a, b, into) = (make(1.0), make(3.0), make(0.0));
        let read =
            |m: &VarMap| m.data().lock().unwrap()["w"].as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        merge(&a, &b, &into, MergeRule::Average).unwrap();
        assert_eq!(read(&into), vec![2.0; 4]);
        merge(&a, &b, &into, MergeRule::A).unwrap();
        assert_eq!(read(&into), vec![1.0; 4]);
        let other = VarMap::new();
        other.get(1, "v", candle_nn::Init::Const(0.0), DType::F32, &Device::Cpu).unwrap();
        assert!(merge(&a, &b, &other, MergeRule::A).is_err());
        assert_eq!("average".parse::<MergeRule>().unwrap(), MergeRule::Average);
        assert!("concat".parse::<MergeRule>().is_err());
    }
}
