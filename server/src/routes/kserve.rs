//! The Open Inference Protocol (KServe v2) next to Tandem's own routes, so that Triton's, KServe's
//! and Seldon's clients and gateways work unchanged: health, server and model metadata, model
//! readiness, and inference in JSON or with the binary tensor data extension.
//!
//! Each family maps onto one named input and one named output. A classifier takes `images`
//! (`FP32` or `UINT8`, `[-1, C, H, W]`, pixels on the 0–255 scale as Tandem's classify route takes
//! them; normalising is the model's job) and answers `probabilities` (`FP32`, `[-1, labels]`, in
//! the manifest's label order). An embedder takes `text` (`BYTES`, `[-1]`) and answers
//! `embeddings` (`FP32`, `[-1, dim]`), as its embed route would with default options. Errors
//! answer `{"error": "...", "type": "..."}`, the protocol's shape (see `crate::error::ErrorShape`).

mod codec;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use tandem_runtime::image::GrayImage;
use tandem_runtime::ModelInfo;

pub(crate) use self::codec::HEADER_LENGTH;
use self::codec::{invalid, Decoded};
use crate::error::{ApiError, ErrorType};
use crate::extract::Path;
use crate::state::AppState;
use crate::wire::kserve::{
    Datatype, InferInput, InferRequest, InferResponse, ModelMetadata, ModelReady, ServerLive, ServerMetadata,
    ServerReady, TensorMetadata,
};

/// The kinds the protocol maps; a model of another kind gets a 422 naming its own routes.
const KINDS: &[&str] = &["classifier", "embedder"];

/// The protocol extensions `GET /v2` announces.
const EXTENSIONS: &[&str] = &["binary_tensor_data"];

/// The inference route, listed among the routes of every kind that [`KINDS`] maps.
pub(crate) const INFER_ROUTE: &str = "POST /v2/models/{name}/infer";

/// Errors `GET /v2/health/ready` answers with besides the global ones.
pub(crate) const SERVER_READY_ERRORS: &[ErrorType] = &[ErrorType::Unavailable];

/// Errors of the model metadata routes besides the global and API ones.
pub(crate) const METADATA_ERRORS: &[ErrorType] = &[ErrorType::BadRequest, ErrorType::NotFound, ErrorType::InvalidInput];

/// Errors of the model readiness routes besides the global and API ones.
pub(crate) const MODEL_READY_ERRORS: &[ErrorType] =
    &[ErrorType::BadRequest, ErrorType::NotFound, ErrorType::InvalidInput, ErrorType::Unavailable];

/// Probes and server metadata, open like `/health`: orchestrators need no secret.
pub(crate) fn open_router() -> Router<AppState> {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(server_live))
        .route("/v2/health/ready", get(server_ready))
}

/// Model routes, behind the API key and the concurrency limit like `/v1`.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/versions/{version}", get(model_version_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/versions/{version}/ready", get(model_version_ready))
        .route("/v2/models/{name}/infer", post(model_infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(model_version_infer))
}

/// Liveness in the protocol's terms: the process is up and answering.
#[utoipa::path(
    get,
    path = "/v2/health/live",
    tag = "open inference",
    responses((status = 200, description = "the process is up", body = ServerLive))
)]
pub(crate) async fn server_live() -> Json<ServerLive> {
    Json(ServerLive { live: true })
}

/// Readiness in the protocol's terms, the same as `/health/ready`: models are warmed up and the
/// server is not draining.
#[utoipa::path(
    get,
    path = "/v2/health/ready",
    tag = "open inference",
    responses((status = 200, description = "models are warmed up; send traffic", body = ServerReady))
)]
pub(crate) async fn server_ready(State(state): State<AppState>) -> Result<Json<ServerReady>, ApiError> {
    if !state.is_ready() {
        return Err(not_ready());
    }
    Ok(Json(ServerReady { ready: true }))
}

/// The server's name, version and protocol extensions.
#[utoipa::path(
    get,
    path = "/v2",
    tag = "open inference",
    responses((status = 200, description = "the server", body = ServerMetadata))
)]
pub(crate) async fn server_metadata() -> Json<ServerMetadata> {
    Json(ServerMetadata {
        name: "tandem".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        extensions: EXTENSIONS.iter().map(|e| (*e).to_owned()).collect(),
    })
}

/// A model's inputs and outputs: names, datatypes and shapes (`-1` is any size).
#[utoipa::path(
    get,
    path = "/v2/models/{name}",
    tag = "open inference",
    params(("name" = String, Path, description = "the model's name, for its highest version")),
    responses((status = 200, description = "the model's tensors", body = ModelMetadata))
)]
pub(crate) async fn model_metadata(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ModelMetadata>, ApiError> {
    metadata(&state, &name).map(Json)
}

/// One version's inputs and outputs.
#[utoipa::path(
    get,
    path = "/v2/models/{name}/versions/{version}",
    tag = "open inference",
    params(
        ("name" = String, Path, description = "the model's name"),
        ("version" = String, Path, description = "the model's version")
    ),
    responses((status = 200, description = "the model's tensors", body = ModelMetadata))
)]
pub(crate) async fn model_version_metadata(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<ModelMetadata>, ApiError> {
    metadata(&state, &versioned(&name, &version)).map(Json)
}

/// Whether a model takes requests: loaded, and the server ready.
#[utoipa::path(
    get,
    path = "/v2/models/{name}/ready",
    tag = "open inference",
    params(("name" = String, Path, description = "the model's name, for its highest version")),
    responses((status = 200, description = "the model takes requests", body = ModelReady))
)]
pub(crate) async fn model_ready(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ModelReady>, ApiError> {
    readiness(&state, &name).map(Json)
}

/// Whether one version takes requests.
#[utoipa::path(
    get,
    path = "/v2/models/{name}/versions/{version}/ready",
    tag = "open inference",
    params(
        ("name" = String, Path, description = "the model's name"),
        ("version" = String, Path, description = "the model's version")
    ),
    responses((status = 200, description = "the model takes requests", body = ModelReady))
)]
pub(crate) async fn model_version_ready(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<ModelReady>, ApiError> {
    readiness(&state, &versioned(&name, &version)).map(Json)
}

/// Runs the model on tensors, the Open Inference Protocol's way.
///
/// The body is JSON, or, with the binary tensor data extension, `Inference-Header-Content-Length`
/// bytes of JSON followed by the raw little-endian bytes of every input whose
/// `parameters.binary_data_size` is set, in input order (`BYTES` elements as a 4-byte
/// little-endian length and the bytes). Any content type is accepted; Triton's client sends none.
/// Outputs asked for in binary (`outputs[].parameters.binary_data`, or the request's
/// `parameters.binary_data_output`) follow the answer's JSON the same way, with
/// `Inference-Header-Content-Length` on the response and `binary_data_size` in their parameters.
#[utoipa::path(
    post,
    path = "/v2/models/{name}/infer",
    tag = "open inference",
    params(("name" = String, Path, description = "the model's name, for its highest version")),
    request_body(
        description = "the JSON request, or its JSON header followed by binary tensors",
        content((InferRequest = "application/json"), ("application/octet-stream"))
    ),
    responses((
        status = 200,
        description = "the outputs, as JSON or as a JSON header followed by binary tensors",
        content((InferResponse = "application/json"), ("application/octet-stream")),
        headers((
            "inference-header-content-length" = u64,
            description = "bytes of JSON before the binary outputs, when there are any"
        ))
    ))
)]
pub(crate) async fn model_infer(
    State(state): State<AppState>,
    Path(name): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    infer(&state, &name, request).await
}

/// Runs one version of the model on tensors; see `POST /v2/models/{name}/infer`.
#[utoipa::path(
    post,
    path = "/v2/models/{name}/versions/{version}/infer",
    tag = "open inference",
    params(
        ("name" = String, Path, description = "the model's name"),
        ("version" = String, Path, description = "the model's version")
    ),
    request_body(
        description = "the JSON request, or its JSON header followed by binary tensors",
        content((InferRequest = "application/json"), ("application/octet-stream"))
    ),
    responses((
        status = 200,
        description = "the outputs, as JSON or as a JSON header followed by binary tensors",
        content((InferResponse = "application/json"), ("application/octet-stream")),
        headers((
            "inference-header-content-length" = u64,
            description = "bytes of JSON before the binary outputs, when there are any"
        ))
    ))
)]
pub(crate) async fn model_version_infer(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    infer(&state, &versioned(&name, &version), request).await
}

/// A family as the protocol sees it.
#[derive(Debug, Clone, Copy)]
enum Family {
    /// Images of `[channels, height, width]`.
    Classifier([usize; 3]),
    Embedder,
}

/// A model's one input and one output in the protocol's terms.
struct Contract {
    family: Family,
    input: TensorMetadata,
    /// Datatypes the input accepts; the first is the one the metadata shows.
    accepts: &'static [Datatype],
    output: TensorMetadata,
}

fn tensor(name: &str, datatype: Datatype, shape: &[usize]) -> TensorMetadata {
    let dims = shape.iter().map(|&d| i64::try_from(d).unwrap_or(i64::MAX));
    TensorMetadata { name: name.to_owned(), datatype, shape: std::iter::once(-1).chain(dims).collect() }
}

/// The tensors of a model of a mapped family; a 422 for other families.
fn contract(info: &ModelInfo) -> Result<Contract, ApiError> {
    if let Some(spec) = info.manifest.classifier() {
        return Ok(Contract {
            family: Family::Classifier(spec.input.shape),
            input: tensor("images", Datatype::Fp32, &spec.input.shape),
            accepts: &[Datatype::Fp32, Datatype::Uint8],
            output: tensor("probabilities", Datatype::Fp32, &[spec.labels.len()]),
        });
    }
    if let Some(spec) = info.manifest.embedder() {
        return Ok(Contract {
            family: Family::Embedder,
            input: tensor("text", Datatype::Bytes, &[]),
            accepts: &[Datatype::Bytes],
            output: tensor("embeddings", Datatype::Fp32, &[spec.architecture.hidden_size]),
        });
    }
    Err(ApiError::wrong_kind(&info.id, &info.kind, KINDS))
}

/// The id `name@version` that the runtime resolves.
fn versioned(name: &str, version: &str) -> String {
    format!("{name}@{version}")
}

fn not_ready() -> ApiError {
    ApiError::new(ErrorType::Unavailable, "not ready: warming up or draining")
}

fn metadata(state: &AppState, id: &str) -> Result<ModelMetadata, ApiError> {
    let info = state.runtime.model(id)?;
    let contract = contract(&info)?;
    let versions = state.runtime.models().into_iter().filter(|m| m.name == info.name).map(|m| m.version).collect();
    Ok(ModelMetadata {
        name: info.name,
        versions,
        platform: format!("tandem_{}", info.kind),
        inputs: vec![contract.input],
        outputs: vec![contract.output],
    })
}

fn readiness(state: &AppState, id: &str) -> Result<ModelReady, ApiError> {
    let info = state.runtime.model(id)?;
    contract(&info)?;
    if !state.is_ready() {
        return Err(not_ready());
    }
    Ok(ModelReady { name: info.name, ready: true })
}

/// Decode, check against the model's tensors, run the family's runtime entry point, encode.
async fn infer(state: &AppState, id: &str, request: Request) -> Result<Response, ApiError> {
    super::on_model_of(state, id, KINDS, |info| async move {
        let header_length = codec::header_length(request.headers())?;
        codec::refuse_content_encoding(request.headers())?;
        let body = Bytes::from_request(request, state).await?;
        let decoded = codec::decode(body, header_length)?;
        let contract = contract(&info)?;
        let binary = binary_output(&decoded.request, &contract)?;
        let (input, raw) = the_input(&decoded, &contract)?;
        let batch = batch_size(state, input, &contract)?;
        // By the id as requested, like `on_model`: a hot reload may have swapped `name@1` for
        // `name@2` since `info` was read.
        let (width, data) = match contract.family {
            Family::Classifier(shape) => classify(state, id, shape, input, raw).await?,
            Family::Embedder => embed(state, id, input, raw).await?,
        };
        let output = codec::Output { name: contract.output.name, shape: vec![batch, width], data, binary };
        codec::encode(info.name, info.version, decoded.request.id, vec![output])
    })
    .await
}

/// Whether the one output is wanted as raw bytes; a 422 for outputs the model does not have.
fn binary_output(request: &InferRequest, contract: &Contract) -> Result<bool, ApiError> {
    let mut binary = request.parameters.as_ref().and_then(|p| p.binary_data_output).unwrap_or(false);
    let name = &contract.output.name;
    for (i, output) in request.outputs.iter().flatten().enumerate() {
        if &output.name != name {
            return Err(ApiError::new(
                ErrorType::InvalidInput,
                format!("output {:?} is not an output of this model, which answers {name:?}", output.name),
            ));
        }
        if i > 0 {
            return Err(ApiError::new(ErrorType::InvalidInput, format!("output {name:?} is asked for twice")));
        }
        if let Some(parameters) = &output.parameters {
            refuse_extensions(&format!("output {name:?}"), parameters.other.keys())?;
            binary = parameters.binary_data.unwrap_or(binary);
        }
    }
    Ok(binary)
}

/// The model's one input and its raw bytes, with a datatype it accepts; a 422 for unknown,
/// repeated or missing inputs.
fn the_input<'a>(decoded: &'a Decoded, contract: &Contract) -> Result<(&'a InferInput, Option<&'a Bytes>), ApiError> {
    let name = &contract.input.name;
    let mut found = None;
    for (input, raw) in decoded.request.inputs.iter().zip(&decoded.binary) {
        if &input.name != name {
            return Err(invalid(input, format!("is not an input of this model, which takes {name:?}")));
        }
        if found.is_some() {
            return Err(invalid(input, "is sent twice".to_owned()));
        }
        if let Some(parameters) = &input.parameters {
            refuse_extensions(&format!("input {name:?}"), parameters.other.keys())?;
        }
        if !contract.accepts.contains(&input.datatype) {
            let accepted: Vec<&str> = contract.accepts.iter().map(|d| d.as_str()).collect();
            return Err(invalid(
                input,
                format!("datatype {} is not accepted; send {}", input.datatype, accepted.join(" or ")),
            ));
        }
        found = Some((input, raw.as_ref()));
    }
    found.ok_or_else(|| ApiError::new(ErrorType::InvalidInput, format!("inputs must hold the input {name:?}")))
}

/// Parameters that ask for an extension Tandem does not serve are refused rather than ignored,
/// since ignoring them would answer something else than what was asked.
fn refuse_extensions<'a>(what: &str, mut keys: impl Iterator<Item = &'a String>) -> Result<(), ApiError> {
    let Some(key) = keys.find(|k| k.as_str() == "classification" || k.starts_with("shared_memory")) else {
        return Ok(());
    };
    let extension = if key == "classification" { "classification" } else { "shared memory" };
    Err(ApiError::new(
        ErrorType::InvalidInput,
        format!("{what}: parameter {key:?} asks for the {extension} extension, which this server does not serve"),
    ))
}

/// The batch size: the shape must be the metadata's, `-1` standing for 1..=`max_inputs`.
fn batch_size(state: &AppState, input: &InferInput, contract: &Contract) -> Result<u64, ApiError> {
    let expected = &contract.input.shape;
    let fits = input.shape.len() == expected.len()
        && input.shape.iter().zip(expected).skip(1).all(|(&d, &e)| i64::try_from(d) == Ok(e));
    if !fits {
        return Err(invalid(input, format!("shape {:?} does not match {expected:?} (-1: any size)", input.shape)));
    }
    let batch = input.shape[0];
    if batch == 0 {
        return Err(invalid(input, "the batch is empty: the first dimension must be at least 1".to_owned()));
    }
    let max_inputs = state.config.max_inputs;
    if batch > max_inputs as u64 {
        return Err(ApiError::new(
            ErrorType::TooManyInputs,
            format!("input {:?}: a batch of {batch}, at most {max_inputs} are accepted per request", input.name),
        ));
    }
    Ok(batch)
}

/// Images to probabilities, flat: `(labels, data)`.
async fn classify(
    state: &AppState,
    model: &str,
    [channels, height, width]: [usize; 3],
    input: &InferInput,
    raw: Option<&Bytes>,
) -> Result<(u64, Vec<f32>), ApiError> {
    let pixels = codec::numbers(input, raw)?;
    let images = pixels
        // A model's shape has no zero side; the guard keeps `chunks` from panicking all the same.
        .chunks((channels * height * width).max(1))
        .enumerate()
        .map(|(i, image)| {
            GrayImage::from_pixels(height, width, image.to_vec())
                .map_err(|e| invalid(input, format!("image {i}: {}", ApiError::from(e).message())))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let answer = state.runtime.class_probabilities(model, images).await?;
    let labels = answer.probabilities.first().map_or(0, Vec::len);
    Ok((labels as u64, answer.probabilities.concat()))
}

/// Texts to embeddings, flat: `(dimensions, data)`; the options are the embed route's defaults.
async fn embed(
    state: &AppState,
    model: &str,
    input: &InferInput,
    raw: Option<&Bytes>,
) -> Result<(u64, Vec<f32>), ApiError> {
    let texts = codec::byte_strings(input, raw)?
        .into_iter()
        .enumerate()
        .map(|(i, bytes)| {
            String::from_utf8(bytes).map_err(|_| invalid(input, format!("element {i} is not UTF-8 text")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    super::embedder::validate_texts("text", &texts, state)?;
    let request = tandem_runtime::EmbedRequest { texts, truncate: true, normalize: None, dimensions: None };
    let answer = state.runtime.embed(model, request).await?;
    let dimensions = answer.embeddings.first().map_or(0, Vec::len);
    Ok((dimensions as u64, answer.embeddings.concat()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_shapes_lead_with_any_batch() {
        assert_eq!(tensor("images", Datatype::Fp32, &[1, 8, 8]).shape, vec![-1, 1, 8, 8]);
        assert_eq!(tensor("text", Datatype::Bytes, &[]).shape, vec![-1]);
    }

    #[test]
    fn extension_parameters_are_refused_by_name() {
        let keys = ["classification".to_owned()];
        let err = refuse_extensions("output \"p\"", keys.iter()).unwrap_err();
        assert!(err.message().contains("classification extension"), "{err}");
        let keys = ["shared_memory_region".to_owned()];
        assert!(refuse_extensions("input \"x\"", keys.iter()).unwrap_err().message().contains("shared memory"));
        let keys = ["priority".to_owned()];
        assert!(refuse_extensions("input \"x\"", keys.iter()).is_ok());
    }
}
