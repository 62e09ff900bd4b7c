//! Training methods: the loss recipes, and the state some of them keep beside the network.
//!
//! | name         | teacher | heads | what it adds                                                 |
//! |--------------|---------|-------|--------------------------------------------------------------|
//! | `supervised` | no      | 1     | cross-entropy on the labels                                  |
//! | `kd`         | yes     | 1     | Hinton KD on the one head                                    |
//! | `dhkd`       | yes     | 2     | CE on the main head, BinaryKL-Norm on the auxiliary head     |
//! | `dho`        | yes     | 2     | labels for a fraction only; KD on all images; head mixture   |
//! | `pskd`       | no      | 1     | the network's own last-epoch predictions as soft targets     |
//! | `dual-io`    | no      | 1     | two branches on plain and distorted images, merged, unfrozen |
//!
//! These are the methods of the CNN classifier family. [`Method`] is a recipe as the command line
//! and provenance name it; [`build`] turns it into the [`ClassifierMethod`] that trains it, the one
//! place that matches on it. Each method's module owns its loss and the state it keeps beside the
//! student: the batch-local recipes ([`Method::loss`]) keep none; [`dho`] samples labeled and
//! unlabeled images together and searches a head mixture after training; [`pskd`] keeps every
//! image's last prediction; [`dual_io`] trains two branches, merges them and unfreezes the merged
//! network in stages.

pub mod dho;
pub mod dual_io;
pub mod pskd;
mod run;
mod teacher;

use candle_core::Tensor;
use rand::rngs::StdRng;
use tandem_runtime::models::cnn::CnnOutput;

use crate::losses::{binary_kl_norm, cross_entropy, kd_kl};
use crate::sampling::StepBatch;
use crate::trainer::StepOutput;
use crate::{Error, Result};

pub use dho::DhoWeights;
pub use dual_io::MergeRule;
pub use run::{ClassifierMethod, ClassifierRun, Finish, Forward};
pub use teacher::Teacher;

/// The method that trains `method` in `run`.
pub fn build(method: &Method, run: &ClassifierRun) -> Result<Box<dyn ClassifierMethod>> {
    Ok(match *method {
        Method::Supervised | Method::Kd { .. } | Method::Dhkd { .. } => Box::new(BatchLocal(method.clone())),
        Method::Dho { temperature, weights, .. } => Box::new(dho::Dho::new(temperature, weights)),
        Method::Pskd { alpha } => Box::new(pskd::Pskd::new(alpha, run)?),
        Method::DualIo { merge, stage_epochs } => Box::new(dual_io::DualIo::new(merge, stage_epochs, run)?),
    })
}

/// A loss recipe.
#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    /// Cross-entropy on the labels.
    Supervised,
    /// Hinton knowledge distillation: `(1 - alpha) * CE + alpha * T² KL(teacher ‖ student)`.
    Kd {
        /// Softening temperature.
        temperature: f64,
        /// Weight of the distillation term.
        alpha: f64,
    },
    /// Dual-head KD (Yang et al. 2024): `gamma * CE(main) + alpha * BinaryKL-Norm(aux, teacher)`.
    /// Two losses that fight inside one linear classifier get a head each; serving uses the main head.
    Dhkd {
        /// Temperature of BinaryKL-Norm.
        temperature: f64,
        /// Weight of the BinaryKL-Norm term.
        alpha: f64,
        /// Weight of the cross-entropy term.
        gamma: f64,
    },
    /// Dual-head optimisation (Kang et al. 2025), semi-supervised: CE on the labeled images via the
    /// main head, `T² KL(teacher ‖ aux)` on labeled and unlabeled images, and a head mixture
    /// chosen on validation data for serving.
    Dho {
        /// Softening temperature of the KD terms.
        temperature: f64,
        /// Fraction of the training split that keeps its labels (fixed by the seed, per class).
        labeled_fraction: f64,
        /// Weights of the CE and KD terms.
        weights: DhoWeights,
    },
    /// Progressive self-knowledge distillation (Kim et al. 2021): the targets of epoch `e` mix the
    /// label with the network's own previous-epoch prediction, with weight `alpha * (e + 1) / E`.
    Pskd {
        /// Final weight of the self-prediction (`α_T`).
        alpha: f64,
    },
    /// Dual-input-output training (Isong 2025): two identical branches trained jointly on plain and
    /// strongly augmented images, merged into one network, then fine-tuned with progressive
    /// unfreezing.
    DualIo {
        /// How the branches become one network.
        merge: MergeRule,
        /// Epochs of each unfreezing stage (head only, then one more block per stage).
        stage_epochs: usize,
    },
}

impl Method {
    /// Every recipe name, for help texts.
    pub const NAMES: [&'static str; 6] = ["supervised", "kd", "dhkd", "dho", "pskd", "dual-io"];

    /// The recipe `name` with its default hyperparameters: KD T = 4, α = 0.7; DHKD T = 2, α = 1,
    /// γ = 1; DHO T = 2, 10% labels, few-shot weights; PS-KD α_T = 0.8; dual-io averaging with one
    /// epoch per unfreezing stage.
    pub fn with_defaults(name: &str) -> Result<Method> {
        Ok(match name {
            "supervised" => Method::Supervised,
            "kd" => Method::Kd { temperature: 4.0, alpha: 0.7 },
            "dhkd" => Method::Dhkd { temperature: 2.0, alpha: 1.0, gamma: 1.0 },
            "dho" => Method::Dho { temperature: 2.0, labeled_fraction: 0.1, weights: DhoWeights::FewShot },
            "pskd" => Method::Pskd { alpha: 0.8 },
            "dual-io" => Method::DualIo { merge: MergeRule::Average, stage_epochs: 1 },
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unknown method {other:?}; known: {}",
                    Method::NAMES.join(", ")
                )))
            }
        })
    }

    /// The recipe name recorded in provenance and accepted by `--method`.
    pub fn name(&self) -> &'static str {
        match self {
            Method::Supervised => "supervised",
            Method::Kd { .. } => "kd",
            Method::Dhkd { .. } => "dhkd",
            Method::Dho { .. } => "dho",
            Method::Pskd { .. } => "pskd",
            Method::DualIo { .. } => "dual-io",
        }
    }

    /// Whether the loss needs teacher logits.
    pub fn needs_teacher(&self) -> bool {
        matches!(self, Method::Kd { .. } | Method::Dhkd { .. } | Method::Dho { .. })
    }

    /// Whether the student needs the auxiliary head; the trainer sets `aux_head` accordingly.
    pub fn uses_aux_head(&self) -> bool {
        matches!(self, Method::Dhkd { .. } | Method::Dho { .. })
    }

    /// Rejects hyperparameters outside their meaningful range.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::InvalidArgument(msg));
        let positive = |t: f64| t.is_finite() && t > 0.0;
        let weight = |w: f64| w.is_finite() && w >= 0.0;
        match *self {
            Method::Supervised => Ok(()),
            Method::Kd { temperature, alpha } if !(positive(temperature) && (0.0..=1.0).contains(&alpha)) => {
                bad(format!("kd needs a positive temperature and alpha in [0, 1], found {temperature} and {alpha}"))
            }
            Method::Dhkd { temperature, alpha, gamma }
                if !(positive(temperature) && weight(alpha) && weight(gamma)) =>
            {
                bad(format!(
                    "dhkd needs a positive temperature and non-negative alpha and gamma, found {temperature}, {alpha} and {gamma}"
                ))
            }
            Method::Dho { temperature, .. } if !positive(temperature) => {
                bad(format!("dho needs a positive temperature, found {temperature}"))
            }
            Method::Dho { labeled_fraction, .. } if !(labeled_fraction > 0.0 && labeled_fraction <= 1.0) => {
                bad(format!("the labeled fraction must be in (0, 1], found {labeled_fraction}"))
            }
            Method::Pskd { alpha } if !(0.0..=1.0).contains(&alpha) => {
                bad(format!("pskd needs alpha in [0, 1], found {alpha}"))
            }
            Method::DualIo { stage_epochs: 0, .. } => bad("dual-io needs at least one epoch per stage".into()),
            _ => Ok(()),
        }
    }

    /// The method's own hyperparameters, for provenance.
    pub fn hyperparameters(&self) -> Vec<(String, serde_json::Value)> {
        let kv = |k: &str, v: serde_json::Value| (k.to_owned(), v);
        match self {
            Method::Supervised => vec![],
            Method::Kd { temperature, alpha } => {
                vec![kv("temperature", (*temperature).into()), kv("alpha", (*alpha).into())]
            }
            Method::Dhkd { temperature, alpha, gamma } => vec![
                kv("temperature", (*temperature).into()),
                kv("alpha", (*alpha).into()),
                kv("gamma", (*gamma).into()),
            ],
            Method::Dho { temperature, labeled_fraction, weights } => vec![
                kv("temperature", (*temperature).into()),
                kv("labeled_fraction", (*labeled_fraction).into()),
                kv("dho_weights", weights.name().into()),
                kv("ce_weight", weights.ce().into()),
                kv("kd_weight", weights.kd().into()),
                kv("dho_batching", "labeled and unlabeled mini-batches of batch_size each".into()),
            ],
            Method::Pskd { alpha } => vec![kv("alpha", (*alpha).into())],
            Method::DualIo { merge, stage_epochs } => {
                let aug = serde_json::to_value(crate::augment::StrongAugment::default())
                    .expect("augment settings serialise. This is a bug.");
                vec![
                    kv("merge", merge.name().into()),
                    kv("stage_epochs", (*stage_epochs).into()),
                    kv("finetune_lr_factor", dual_io::STAGE_LR_FACTOR.into()),
                    kv("branch_a_augment", "none".into()),
                    kv("branch_b_augment", aug),
                    kv("branch_init", "shared".into()),
                ]
            }
        }
    }

    /// The batch loss of the batch-local recipes (`supervised`, `kd`, `dhkd`) on a batch whose
    /// first `labels.len()` images are labeled and the rest are not (semi-supervised runs):
    /// cross-entropy sees the labeled images, distillation terms see every image the teacher
    /// labelled. The other recipes keep state beyond a batch (see their modules) and are refused here.
    pub fn loss(&self, out: &CnnOutput, labels: &Tensor, teacher: Option<&Tensor>) -> Result<Tensor> {
        let teacher = || teacher.expect("the trainer loads a teacher for methods that need one. This is a bug.");
        let labeled = |logits: &Tensor| logits.narrow(0, 0, labels.dim(0)?);
        match self {
            Method::Supervised => Ok(cross_entropy(&labeled(&out.logits)?, labels)?),
            Method::Kd { temperature, alpha } => {
                let ce = cross_entropy(&labeled(&out.logits)?, labels)?;
                let kd = kd_kl(&out.logits, teacher(), *temperature)?;
                Ok(((ce * (1.0 - alpha))? + (kd * *alpha)?)?)
            }
            Method::Dhkd { temperature, alpha, gamma } => {
                let aux = out.aux_logits.as_ref().ok_or_else(|| {
                    Error::InvalidArgument("dhkd needs a network with the auxiliary head (aux_head)".into())
                })?;
                let ce = cross_entropy(&labeled(&out.logits)?, labels)?;
                let bkn = binary_kl_norm(aux, teacher(), *temperature)?;
                Ok(((ce * *gamma)? + (bkn * *alpha)?)?)
            }
            Method::Dho { .. } | Method::Pskd { .. } | Method::DualIo { .. } => Err(Error::InvalidArgument(format!(
                "method {} keeps state beyond a batch; train it with `train`",
                self.name()
            ))),
        }
    }

    /// Whether the recipe can learn from images without labels (with `--labeled-fraction`):
    /// the distillation recipes take the teacher's word for them; supervised training simply
    /// leaves them out.
    pub fn accepts_labeled_fraction(&self) -> bool {
        matches!(self, Method::Supervised | Method::Kd { .. } | Method::Dhkd { .. } | Method::Dho { .. })
    }
}

/// `supervised`, `kd` and `dhkd`: the loss of a batch depends on that batch alone.
struct BatchLocal(Method);

impl ClassifierMethod for BatchLocal {
    fn step(&mut self, run: &ClassifierRun, _epoch: usize, batch: &StepBatch, rng: &mut StdRng) -> Result<StepOutput> {
        // Without a teacher, unlabeled images teach nothing: supervised runs on a label budget
        // take the same labeled batches as the distillation runs, and no more.
        let forward = run.forward(batch, self.0.needs_teacher(), rng)?;
        let loss = self.0.loss(&forward.out, &forward.labels, forward.teacher.as_ref())?;
        forward.output(loss)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn names_and_defaults_round_trip() {
        for name in Method::NAMES {
            let m = Method::with_defaults(name).unwrap();
            assert_eq!(m.name(), name);
            m.validate().unwrap();
        }
        assert!(Method::with_defaults("fitnet").unwrap_err().to_string().contains("dual-io"));
        assert!(Method::Pskd { alpha: 1.5 }.validate().is_err());
        assert!(Method::Dho { temperature: 2.0, labeled_fraction: 0.0, weights: DhoWeights::FewShot }
            .validate()
            .is_err());
        assert!(Method::DualIo { merge: MergeRule::A, stage_epochs: 0 }.validate().is_err());
    }

    #[test]
    fn dhkd_loss_is_cross_entropy_when_the_aux_head_matches_the_teacher() {
        let main = Tensor::new(&[[1f32, 2., 0.5], [0., 1., 3.]], &Device::Cpu).unwrap();
        let teacher = Tensor::new(&[[3f32, -1., 0.], [0., 2., 5.]], &Device::Cpu).unwrap();
        let labels = Tensor::new(&[1u32, 2], &Device::Cpu).unwrap();
        let out = CnnOutput { logits: main.clone(), aux_logits: Some(teacher.clone()) };
        let m = Method::Dhkd { temperature: 2.0, alpha: 1.0, gamma: 0.5 };
        let loss = m.loss(&out, &labels, Some(&teacher)).unwrap().to_scalar::<f32>().unwrap();
        let ce = cross_entropy(&main, &labels).unwrap().to_scalar::<f32>().unwrap();
        assert!((loss - 0.5 * ce).abs() < 1e-6);
        let single = CnnOutput { logits: main, aux_logits: None };
        assert!(m.loss(&single, &labels, Some(&teacher)).is_err());
        assert!(Method::Pskd { alpha: 0.8 }.loss(&out, &labels, None).is_err());
    }
}
