//! The OpenAPI 3.1 document, generated from the handlers' annotations plus the error table.
//!
//! Error responses are not written per handler by hand: each route names the [`ErrorType`]s it can
//! produce and [`ErrorResponses`] turns them into responses through [`ErrorType::status`], the same
//! mapping that builds the actual responses.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref};
use utoipa::{Modify, OpenApi};

use crate::error::{ErrorShape, ErrorType};
use crate::routes::{
    self, admin, classifier, docs, embedder, generator, health, image_text, image_tokenizer, kserve, metrics, models,
};
use crate::wire::kserve::InferenceErrorBody;
use crate::wire::{ErrorBody, ErrorDetail};

/// Name of the bearer-token security scheme in the document.
const BEARER_SCHEME: &str = "bearer_auth";

/// Errors any route can answer with: produced by the layers every request passes through.
pub(crate) const GLOBAL_ERRORS: &[ErrorType] = &[
    ErrorType::MethodNotAllowed,
    ErrorType::UriTooLong,
    ErrorType::HeadersTooLarge,
    ErrorType::Timeout,
    ErrorType::Internal,
];

/// Errors every `/v1` and `/v2/models` route can answer with: API-key auth, the body read before
/// the concurrency limit (its size and timeout), and load shedding.
pub(crate) const API_ERRORS: &[ErrorType] =
    &[ErrorType::Unauthorized, ErrorType::PayloadTooLarge, ErrorType::RequestTimeout, ErrorType::Overloaded];

/// Whether `path` is served behind the API key and the concurrency limit (`app`'s `api` router).
fn behind_api_layers(path: &str) -> bool {
    path.starts_with("/v1/") || path.starts_with("/v2/models/")
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tandem",
        description = "Serves compact student models distilled from bigger teachers.\n\n\
            Every failure answers with `{\"error\":{\"type\":\"...\",\"message\":\"...\"}}`; \
            the `type` decides the status code. The Open Inference Protocol's routes (`/v2`, \
            KServe v2, as Triton's and KServe's clients speak it) answer failures with \
            `{\"error\":\"...\",\"type\":\"...\"}` instead: the protocol makes `error` a string, \
            and the `type` and status come from the same table. When the server has an API key, \
            `/v1` and `/v2/models` routes need `Authorization: Bearer <key>`; health, metrics, \
            docs and `/v2` server metadata stay open.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0")
    ),
    paths(
        health::live,
        health::ready,
        models::list_models,
        models::get_model,
        admin::load_model,
        admin::unload_model,
        admin::reload_model,
        classifier::classify,
        embedder::openai_embeddings,
        embedder::compat_rerank,
        embedder::embed,
        embedder::rerank,
        embedder::similarity,
        generator::generate,
        image_tokenizer::tokenize,
        image_tokenizer::detokenize,
        kserve::server_live,
        kserve::server_ready,
        kserve::server_metadata,
        kserve::model_metadata,
        kserve::model_version_metadata,
        kserve::model_ready,
        kserve::model_version_ready,
        kserve::model_infer,
        kserve::model_version_infer,
        metrics::metrics,
        docs::openapi_spec,
        docs::swagger_ui,
    ),
    components(schemas(ErrorBody, ErrorDetail, ErrorType, InferenceErrorBody)),
    modifiers(&ErrorResponses, &BearerAuth),
    tags(
        (name = "health", description = "probes for orchestrators"),
        (name = "models", description = "what is loaded, and loading, reloading and unloading bundles of the models directory"),
        (name = "inference", description = "running models"),
        (name = "open inference", description = "the Open Inference Protocol (KServe v2): Triton's, KServe's and Seldon's clients"),
        (name = "operations", description = "metrics and documentation"),
    )
)]
struct ApiDoc;

/// The errors an operation can answer with, by operation id (the handler's name).
pub(crate) fn operation_errors(path: &str, operation_id: &str) -> Vec<ErrorType> {
    let specific: &[ErrorType] = match operation_id {
        "ready" => health::READY_ERRORS,
        "metrics" => metrics::METRICS_ERRORS,
        "get_model" => models::GET_MODEL_ERRORS,
        "load_model" => admin::LOAD_ERRORS,
        "unload_model" => admin::UNLOAD_ERRORS,
        "reload_model" => admin::RELOAD_ERRORS,
        "classify" => classifier::CLASSIFY_ERRORS,
        "openai_embeddings" | "compat_rerank" | "rerank" | "similarity" => routes::INFERENCE_ERRORS,
        "embed" => image_text::EMBED_ERRORS,
        "generate" => generator::GENERATE_ERRORS,
        "tokenize" => image_tokenizer::TOKENIZE_ERRORS,
        "detokenize" => image_tokenizer::DETOKENIZE_ERRORS,
        "server_ready" => kserve::SERVER_READY_ERRORS,
        "model_metadata" | "model_version_metadata" => kserve::METADATA_ERRORS,
        "model_ready" | "model_version_ready" => kserve::MODEL_READY_ERRORS,
        "model_infer" | "model_version_infer" => routes::INFERENCE_ERRORS,
        _ => &[],
    };
    let api: &[ErrorType] = if behind_api_layers(path) { API_ERRORS } else { &[] };
    let mut errors: Vec<ErrorType> = Vec::new();
    for kind in GLOBAL_ERRORS.iter().chain(api).chain(specific) {
        if !errors.contains(kind) {
            errors.push(*kind);
        }
    }
    errors
}

/// Adds one response per error status to every operation, from [`operation_errors`].
struct ErrorResponses;

impl Modify for ErrorResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [&mut item.get, &mut item.post, &mut item.put, &mut item.delete, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                add_error_responses(path, operation);
            }
        }
    }
}

fn add_error_responses(path: &str, operation: &mut Operation) {
    let id = operation.operation_id.clone().unwrap_or_default();
    let mut by_status: BTreeMap<u16, Vec<ErrorType>> = BTreeMap::new();
    for kind in operation_errors(path, &id) {
        by_status.entry(kind.status().as_u16()).or_default().push(kind);
    }
    for (status, kinds) in by_status {
        let description =
            kinds.iter().map(|k| format!("`{}`: {}", k.as_str(), k.description())).collect::<Vec<_>>().join("; ");
        let body = match ErrorShape::for_path(path) {
            ErrorShape::Tandem => "ErrorBody",
            ErrorShape::OpenInference => "InferenceErrorBody",
        };
        let content = ContentBuilder::new().schema(Some(Ref::from_schema_name(body))).build();
        let mut response = ResponseBuilder::new().description(description).content("application/json", content);
        if kinds.contains(&ErrorType::Overloaded) {
            response = response.header(
                "retry-after",
                HeaderBuilder::new()
                    .schema(Some(ObjectBuilder::new().schema_type(Type::Integer)))
                    .description(Some("seconds to wait before retrying"))
                    .build(),
            );
        }
        if kinds.contains(&ErrorType::Unauthorized) {
            response = response.header(
                "www-authenticate",
                HeaderBuilder::new()
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                    .description(Some("`Bearer`"))
                    .build(),
            );
        }
        if kinds.contains(&ErrorType::MethodNotAllowed) {
            response = response.header(
                "allow",
                HeaderBuilder::new()
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                    .description(Some("methods the path accepts"))
                    .build(),
            );
        }
        operation.responses.responses.insert(status.to_string(), response.build().into());
    }
}

/// Declares the optional bearer token on the operations behind the API key: optional because auth
/// is off unless the server is started with an API key.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(BEARER_SCHEME, SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !behind_api_layers(path) && path != metrics::PATH {
                continue;
            }
            for operation in [&mut item.get, &mut item.post, &mut item.delete].into_iter().flatten() {
                operation.security = Some(vec![
                    SecurityRequirement::default(),
                    SecurityRequirement::new(BEARER_SCHEME, Vec::<String>::new()),
                ]);
            }
        }
    }
}

/// The API's OpenAPI 3.1 document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as pretty JSON, exactly as committed in `openapi/openapi.json`.
pub fn openapi_json() -> String {
    openapi().to_pretty_json().expect("the generated document always serializes. This is a bug.")
}

/// The JSON built once per process, since `/openapi.json` may be fetched often.
pub(crate) fn cached_json() -> String {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(openapi_json).clone()
}
