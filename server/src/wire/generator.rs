//! JSON shapes of the image generation route, `POST /v1/models/{id}/generate`, which serves the
//! `diffusion` and `consistency` families.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tandem_runtime::diffusion::{CSchedule, DualFastTau, MixSpace, Solver};
use tandem_runtime::families::generator::CONSISTENCY_SAMPLER;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::ToSchema;

/// Body of `POST /v1/models/{id}/generate`. Every field is optional: `{}` generates one image of
/// the model's unconditional class with its default sampler.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "class": 3, "n": 4, "steps": 5, "sampler": "dpmpp2m", "seed": 42, "guidance": 2.0,
    "dualfast": {"tau": "first", "c_max": 0.3, "schedule": "linear", "space": "eps"}
}))]
pub struct GenerateRequest {
    /// The class index to generate (`0` to the number of labels less one); absent: unconditional.
    #[serde(default, deserialize_with = "crate::whole::optional_size", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u32>, minimum = 0)]
    pub class: Option<u64>,
    /// Images to generate (default 1), at most the server's `max_generate_images`.
    #[serde(default, deserialize_with = "crate::whole::optional_count", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub n: Option<usize>,
    /// Model evaluations per image, at most the server's `max_generate_steps`. Default 10 for
    /// `diffusion` models; for `consistency` models the length of `sigmas` when given, else 1.
    #[serde(default, deserialize_with = "crate::whole::optional_count", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub steps: Option<usize>,
    /// The sampler; see the schema's list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = sampler_schema)]
    pub sampler: Option<String>,
    /// Seeds the noise (default 0): the same request with the same seed gives the same images,
    /// and image `i` of a request is the same whatever `n` is.
    #[serde(default, deserialize_with = "crate::whole::optional_size", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u64>, minimum = 0)]
    pub seed: Option<u64>,
    /// Classifier-free guidance scale (diffusion only); default the model's own. 1 is the
    /// conditional model alone, 0 the unconditional one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 50)]
    pub guidance: Option<f64>,
    /// Wrap the ODE solver in DualFast (diffusion only); `{}` takes every default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dualfast: Option<DualFastOptions>,
    /// The noise levels σ to sample at (consistency only), strictly decreasing, one per step;
    /// default the model's own list for `steps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_items = 1)]
    pub sigmas: Option<Vec<f64>>,
}

/// DualFast's settings; each one left out takes its default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DualFastOptions {
    /// Which cached prediction to extrapolate away from: `first` (default) or `previous`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = tau_schema)]
    pub tau: Option<String>,
    /// The largest mixing coefficient c (default 0.3); 0 turns DualFast off exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = -1, maximum = 1)]
    pub c_max: Option<f64>,
    /// How c grows over the evaluations: `linear` (default) or `constant`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schedule_schema)]
    pub schedule: Option<String>,
    /// What is mixed: `eps` (default) or `x0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = space_schema)]
    pub space: Option<String>,
}

/// Answer of `POST /v1/models/{id}/generate` in JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"model": "digits-ddpm@1", "nfe": 5, "images": [{"png_base64": "iVBORw0KGgo..."}]}))]
pub struct GenerateResponse {
    /// `name@version` of the model that answered.
    pub model: String,
    /// Network evaluations per image.
    pub nfe: usize,
    /// One image per requested one, in order.
    pub images: Vec<GeneratedImage>,
}

/// One generated image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GeneratedImage {
    /// The image as a PNG file, in standard base64.
    pub png_base64: String,
}

/// Every sampler name a model of some kind takes.
pub(crate) fn sampler_names() -> Vec<&'static str> {
    Solver::ALL.iter().map(|s| s.as_str()).chain([CONSISTENCY_SAMPLER]).collect()
}

/// A nullable string out of `names`: a closed list that clients and validators can read.
fn names_schema(names: &[&str], description: String) -> ObjectBuilder {
    let values = names.iter().map(|n| Value::from(*n)).chain([Value::Null]);
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([Type::String, Type::Null]))
        .enum_values(Some(values))
        .description(Some(description))
}

fn sampler_schema() -> ObjectBuilder {
    let solvers: Vec<&str> = Solver::ALL.iter().map(|s| s.as_str()).collect();
    names_schema(
        &sampler_names(),
        format!(
            "The sampler: for `diffusion` models an ODE solver, {} (default `dpmpp2m`); for `consistency` \
             models `{CONSISTENCY_SAMPLER}` (the default).",
            solvers.join(", ")
        ),
    )
}

fn tau_schema() -> ObjectBuilder {
    let names = [DualFastTau::First, DualFastTau::Previous].map(DualFastTau::as_str);
    names_schema(&names, "Which cached prediction to extrapolate away from (default `first`).".to_owned())
}

fn schedule_schema() -> ObjectBuilder {
    let names = [CSchedule::Linear, CSchedule::Constant].map(CSchedule::as_str);
    names_schema(&names, "How c grows over the evaluations (default `linear`).".to_owned())
}

fn space_schema() -> ObjectBuilder {
    let names = [MixSpace::Eps, MixSpace::X0].map(MixSpace::as_str);
    names_schema(&names, "What is mixed: ε or the x₀ predictions (default `eps`).".to_owned())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(value: serde_json::Value) -> Result<GenerateRequest, String> {
        serde_json::from_value(value).map_err(|e| e.to_string())
    }

    #[test]
    fn every_field_is_optional_and_unknown_ones_are_refused() {
        assert_eq!(parse(json!({})).expect("empty body"), GenerateRequest::default());
        let full = parse(json!({
            "class": 3, "n": 4.0, "steps": 5, "sampler": "ddim", "seed": 42, "guidance": 2.0,
            "dualfast": {}, "sigmas": [80.0, 0.8]
        }))
        .expect("full body");
        assert_eq!((full.class, full.n, full.steps, full.seed), (Some(3), Some(4), Some(5), Some(42)));
        assert_eq!(full.dualfast, Some(DualFastOptions::default()));
        assert!(parse(json!({"samples": 2})).unwrap_err().contains("unknown field"));
        assert!(parse(json!({"dualfast": {"c": 0.1}})).unwrap_err().contains("unknown field"));
        assert!(parse(json!({"steps": 0})).unwrap_err().contains("at least 1"));
        assert!(parse(json!({"class": -1})).unwrap_err().contains("at least 0"));
    }

    #[test]
    fn sampler_names_are_every_solver_and_consistency() {
        assert_eq!(sampler_names(), ["ddim", "dpmpp2m", "dpmpp3m", "unipc", "unipc-bh1", "consistency"]);
    }
}
