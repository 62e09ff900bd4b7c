//! Training methods: each decides only the loss of a batch.

use std::path::Path;

use candle_core::{Device, Tensor};
use tandem_runtime::bundle::{Architecture, Bundle, InputSpec};
use tandem_runtime::models::cnn::{Cnn, CnnOutput};

use crate::data::Dataset;
use crate::losses::{cross_entropy, kd_kl};
use crate::trainer::teacher_input;
use crate::{Error, Result};

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
}

impl Method {
    /// The recipe name recorded in provenance and accepted by `--method`.
    pub fn name(&self) -> &'static str {
        match self {
            Method::Supervised => "supervised",
            Method::Kd { .. } => "kd",
        }
    }

    /// Whether the loss needs teacher logits.
    pub fn needs_teacher(&self) -> bool {
        !matches!(self, Method::Supervised)
    }

    /// The method's own hyperparameters, for provenance.
    pub fn hyperparameters(&self) -> Vec<(String, serde_json::Value)> {
        match self {
            Method::Supervised => vec![],
            Method::Kd { temperature, alpha } => {
                vec![("temperature".into(), (*temperature).into()), ("alpha".into(), (*alpha).into())]
            }
        }
    }

    /// The batch loss.
    pub fn loss(&self, out: &CnnOutput, labels: &Tensor, teacher: Option<&Tensor>) -> Result<Tensor> {
        match self {
            Method::Supervised => Ok(cross_entropy(&out.logits, labels)?),
            Method::Kd { temperature, alpha } => {
                let teacher = teacher.expect("the trainer loads a teacher for methods that need one. This is a bug.");
                let ce = cross_entropy(&out.logits, labels)?;
                let kd = kd_kl(&out.logits, teacher, *temperature)?;
                Ok(((ce * (1.0 - alpha))? + (kd * *alpha)?)?)
            }
        }
    }
}

/// A frozen teacher loaded from a bundle, run in inference mode on the student's batches.
pub struct Teacher {
    net: Cnn,
    input: InputSpec,
    device: Device,
    /// The teacher bundle's id, recorded in the student's provenance.
    pub bundle_id: String,
}

impl Teacher {
    /// Loads the teacher and checks that it sees the same images and classes as the student.
    pub fn load(dir: &Path, train_set: &Dataset, device: &Device) -> Result<Teacher> {
        let bundle = Bundle::load(dir)?;
        let Architecture::Cnn(cfg) = &bundle.manifest.architecture;
        if cfg.input_shape != [1, train_set.height, train_set.width] || cfg.num_classes != train_set.num_classes() {
            return Err(Error::InvalidArgument(format!(
                "teacher {} takes {:?} with {} classes; the dataset has [1, {}, {}] with {}",
                bundle.model_id(),
                cfg.input_shape,
                cfg.num_classes,
                train_set.height,
                train_set.width,
                train_set.num_classes()
            )));
        }
        let net = Cnn::new(cfg, bundle.var_builder(device))
            .map_err(|e| Error::Runtime(tandem_runtime::Error::Bundle(e.to_string())))?
            .fused_for_inference()?;
        Ok(Teacher { net, input: bundle.manifest.input.clone(), device: device.clone(), bundle_id: bundle.id })
    }

    /// Main-head logits for `b` raw images (the same augmented pixels the student sees).
    pub fn logits(&self, pixels: &[u8], b: usize) -> Result<Tensor> {
        let x = teacher_input(pixels, b, self.input.shape, &self.input, &self.device)?;
        Ok(self.net.forward_t(&x, false)?.logits.detach())
    }
}
