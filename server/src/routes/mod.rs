//! One module per route group; each exposes `router()` plus its handlers for the OpenAPI document.
//!
//! Inference routes come one module per model family, named after the family's `kind`
//! (`classifier.rs`, ...), each with the list of routes it serves; `generator.rs` serves the two
//! image generation kinds, `diffusion` and `consistency`, with one route; `classifier.rs`'s route
//! serves `image_tokenizer` and `image_text` models as well as classifiers, `embedder.rs`'s rerank
//! routes serve `cross_encoder` models as well as embedders, and its embed route `image_text`
//! models. Every inference handler goes
//! through [`on_model`], so resolving the model, refusing other kinds and per-model metrics are
//! written once. `kserve.rs` speaks the Open Inference Protocol (`/v2`) for every family it maps.

pub(crate) mod admin;
pub(crate) mod classifier;
pub(crate) mod cross_encoder;
pub(crate) mod docs;
pub(crate) mod embedder;
pub(crate) mod generator;
pub(crate) mod health;
pub(crate) mod image_text;
pub(crate) mod image_tokenizer;
pub(crate) mod kserve;
pub(crate) mod metrics;
pub(crate) mod models;

use std::future::Future;

use tandem_runtime::ModelInfo;

use crate::error::{ApiError, ErrorType};
use crate::state::AppState;

/// Errors a JSON inference route (the embedder routes, `/v2` infer) answers with besides the
/// global and API ones; the classify route adds `invalid_image`.
pub(crate) const INFERENCE_ERRORS: &[ErrorType] = &[
    ErrorType::BadRequest,
    ErrorType::InvalidJson,
    ErrorType::NotFound,
    ErrorType::PayloadTooLarge,
    ErrorType::TooManyInputs,
    ErrorType::UnsupportedMediaType,
    ErrorType::InvalidInput,
    ErrorType::Overloaded,
    ErrorType::Unavailable,
];

/// The routes that serve models of `kind`: one line per family.
pub(crate) fn routes_for_kind(kind: &str) -> &'static [&'static str] {
    match kind {
        "classifier" => classifier::ROUTES,
        "embedder" => embedder::ROUTES,
        "diffusion" | "consistency" => generator::ROUTES,
        "image_tokenizer" => image_tokenizer::ROUTES,
        "cross_encoder" => cross_encoder::ROUTES,
        "image_text" => image_text::ROUTES,
        _ => &[],
    }
}

/// Resolves `id` to a model of `kind`, runs `run` with `id` itself, and counts the request against
/// the resolved model (or `unknown`) with its final status.
///
/// A model of another kind is refused here, before the body is read, with a 422 that names the
/// routes the model does serve.
///
/// `run` gets the id as the client wrote it, not the `name@version` it resolved to: a hot reload
/// that changes a bare name's version replaces `name@1` by `name@2` in one swap, and a request
/// that resolved `name@1` just before it must still find a model. The runtime resolves the id
/// again and answers with the `name@version` that really ran.
pub(crate) async fn on_model<T, Fut>(
    state: &AppState,
    id: &str,
    kind: &'static str,
    run: impl FnOnce(String) -> Fut,
) -> Result<T, ApiError>
where
    Fut: Future<Output = Result<T, ApiError>>,
{
    on_model_of(state, id, &[kind], |_| run(id.to_owned())).await
}

/// [`on_model`] for routes that serve several kinds (the Open Inference Protocol's): `run` gets
/// the model's whole info, to pick its family by `kind`.
pub(crate) async fn on_model_of<T, Fut>(
    state: &AppState,
    id: &str,
    kinds: &[&'static str],
    run: impl FnOnce(ModelInfo) -> Fut,
) -> Result<T, ApiError>
where
    Fut: Future<Output = Result<T, ApiError>>,
{
    let info = match state.runtime.model(id) {
        Ok(info) => info,
        Err(err) => {
            let err = ApiError::from(err);
            crate::metrics::record_model_request("unknown", err.status().as_u16());
            return Err(err);
        }
    };
    let model = info.id.clone();
    let result = if kinds.contains(&info.kind.as_str()) {
        run(info).await
    } else {
        Err(ApiError::wrong_kind(&info.id, &info.kind, kinds))
    };
    let status = result.as_ref().map_or_else(|e| e.status().as_u16(), |_| 200);
    crate::metrics::record_model_request(&model, status);
    result
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use tandem_runtime::bundle::FamilySpec;

    /// Adding a family to the runtime without its route module, its OpenAPI entries or its line
    /// in the architecture map fails here, naming what is missing.
    #[test]
    fn every_kind_has_its_route_module_openapi_entries_and_map_entry() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let spec = crate::openapi::openapi();
        let map = std::fs::read_to_string(root.join("../ARCHITECTURE.md")).expect("ARCHITECTURE.md is readable");
        for kind in FamilySpec::KINDS {
            // Kinds that share their routes share a module named after what they have in common.
            let name = if super::generator::KINDS.contains(&kind) { "generator" } else { kind };
            let module = root.join(format!("src/routes/{name}.rs"));
            let module_dir = root.join(format!("src/routes/{name}/mod.rs"));
            assert!(module.exists() || module_dir.exists(), "kind {kind}: no route module src/routes/{name}.rs");
            let routes = super::routes_for_kind(kind);
            assert!(!routes.is_empty(), "kind {kind}: routes_for_kind lists no routes");
            for route in routes {
                let (method, path) = route.split_once(' ').expect("routes are written `METHOD /path`");
                let item =
                    spec.paths.paths.get(path).unwrap_or_else(|| panic!("kind {kind}: {path} is not in the spec"));
                let operation = match method {
                    "GET" => &item.get,
                    "POST" => &item.post,
                    other => panic!("kind {kind}: unexpected method {other}"),
                };
                assert!(operation.is_some(), "kind {kind}: {route} is not in the spec");
            }
            assert!(map.contains(&format!("`{kind}`")), "kind {kind}: ARCHITECTURE.md does not mention `{kind}`");
        }
    }
}
