//! Model families, one module each, and the one place that turns a bundle into a served model.

pub mod classifier;
pub mod cross_encoder;
pub mod embedder;
pub mod generated_image;
pub mod generator;
pub mod image_text;
pub mod image_tokenizer;

use std::sync::Arc;

use candle_core::Device;

use crate::batcher::BatchConfig;
use crate::bundle::{Bundle, FamilySpec};
use crate::registry::Served;
use crate::Result;

/// Builds the served model of a validated bundle, by its family section.
pub(crate) fn load(bundle: &Bundle, device: &Device, batch: BatchConfig) -> Result<Arc<dyn Served>> {
    match &bundle.manifest.family {
        FamilySpec::Classifier(spec) => classifier::load(bundle, spec, device, batch),
        FamilySpec::Embedder(spec) => embedder::load(bundle, spec, device, batch),
        FamilySpec::Diffusion(spec) => generator::load_diffusion(bundle, spec, device, batch),
        FamilySpec::Consistency(spec) => generator::load_consistency(bundle, spec, device, batch),
        FamilySpec::ImageTokenizer(spec) => image_tokenizer::load(bundle, spec, device, batch),
        FamilySpec::CrossEncoder(spec) => cross_encoder::load(bundle, spec, device, batch),
        FamilySpec::ImageText(spec) => image_text::load(bundle, spec, device, batch),
    }
}
