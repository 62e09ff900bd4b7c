//! A frozen teacher loaded from a bundle, run in inference mode on the student's batches.

use std::path::Path;

use candle_core::{Device, Tensor};
use tandem_runtime::bundle::{Bundle, InputSpec};
use tandem_runtime::families::classifier::inference_cnn;
use tandem_runtime::models::cnn::Cnn;

use crate::data::{pixels_to_tensor, Dataset, Normalization};
use crate::{Error, Result};

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
        let Some(spec) = bundle.manifest.classifier() else {
            return Err(Error::InvalidArgument(format!(
                "teacher {} is a {} model; distillation needs a classifier",
                bundle.model_id(),
                bundle.manifest.kind()
            )));
        };
        let cfg = &spec.architecture;
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
        let input = spec.input.clone();
        let net = inference_cnn(&bundle, device)?;
        Ok(Teacher { net, input, device: device.clone(), bundle_id: bundle.id })
    }

    /// Main-head logits for `b` raw images (the same augmented pixels the student sees).
    pub fn logits(&self, pixels: &[u8], b: usize) -> Result<Tensor> {
        // The teacher normalises with its own statistics, recorded in its bundle.
        let norm = Normalization { mean: self.input.mean, std: self.input.std };
        let [_, h, w] = self.input.shape;
        let x = pixels_to_tensor(pixels, b, h, w, norm, &self.device)?;
        Ok(self.net.forward_t(&x, false)?.logits.detach())
    }
}
