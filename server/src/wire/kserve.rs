//! Wire types of the Open Inference Protocol (KServe v2), the REST dialect that Triton's, KServe's
//! and Seldon's clients and gateways speak: health, server and model metadata, and inference
//! requests and answers whose tensors travel as JSON or, with the binary tensor data extension,
//! as raw little-endian bytes after a JSON header.
//!
//! Field names, datatypes and nesting follow the protocol, not Tandem's own style, so that those
//! clients parse them unchanged.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::schema::{AnyOfBuilder, ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crate::error::ErrorType;

/// Body of every failed `/v2` request: the protocol's `{"error": string}`, plus Tandem's error
/// type, which the protocol's clients ignore.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"error": "no model named \"mnist\"", "type": "not_found"}))]
pub struct InferenceErrorBody {
    /// What went wrong; generic for 5xx responses.
    pub error: String,
    /// Stable kind of the error, from the same table as Tandem's own routes; the status code
    /// follows from it.
    #[serde(rename = "type")]
    pub kind: ErrorType,
}

/// Answer of `GET /v2/health/live`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ServerLive {
    /// Always `true`: a server that answers is live.
    pub live: bool,
}

/// Answer of `GET /v2/health/ready` when ready; not ready is a 503.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ServerReady {
    /// Always `true` in a 200.
    pub ready: bool,
}

/// Answer of `GET /v2`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"name": "tandem", "version": "0.1.0", "extensions": ["binary_tensor_data"]}))]
pub struct ServerMetadata {
    /// `tandem`.
    pub name: String,
    /// The server's version.
    pub version: String,
    /// Protocol extensions served: `binary_tensor_data`.
    pub extensions: Vec<String>,
}

/// Answer of `GET /v2/models/{name}/ready` when the model can take requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ModelReady {
    /// The model's name.
    pub name: String,
    /// Always `true` in a 200.
    pub ready: bool,
}

/// Element type of a tensor, as the protocol names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Datatype {
    /// Booleans.
    Bool,
    /// Unsigned 8-bit integers.
    Uint8,
    /// Unsigned 16-bit integers.
    Uint16,
    /// Unsigned 32-bit integers.
    Uint32,
    /// Unsigned 64-bit integers.
    Uint64,
    /// Signed 8-bit integers.
    Int8,
    /// Signed 16-bit integers.
    Int16,
    /// Signed 32-bit integers.
    Int32,
    /// Signed 64-bit integers.
    Int64,
    /// IEEE half precision.
    Fp16,
    /// IEEE single precision.
    Fp32,
    /// IEEE double precision.
    Fp64,
    /// Byte strings: UTF-8 text in JSON, 4-byte little-endian length then the bytes in binary.
    Bytes,
    /// bfloat16.
    Bf16,
}

impl Datatype {
    /// The name on the wire, e.g. `FP32`.
    pub fn as_str(self) -> &'static str {
        match self {
            Datatype::Bool => "BOOL",
            Datatype::Uint8 => "UINT8",
            Datatype::Uint16 => "UINT16",
            Datatype::Uint32 => "UINT32",
            Datatype::Uint64 => "UINT64",
            Datatype::Int8 => "INT8",
            Datatype::Int16 => "INT16",
            Datatype::Int32 => "INT32",
            Datatype::Int64 => "INT64",
            Datatype::Fp16 => "FP16",
            Datatype::Fp32 => "FP32",
            Datatype::Fp64 => "FP64",
            Datatype::Bytes => "BYTES",
            Datatype::Bf16 => "BF16",
        }
    }
}

impl fmt::Display for Datatype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One input or output a model declares; `-1` in `shape` is a dimension of any size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TensorMetadata {
    /// The tensor's name, as requests must spell it.
    pub name: String,
    /// Element type; for classifier images also `UINT8` is accepted.
    pub datatype: Datatype,
    /// Dimensions, the batch first; `-1` for any size.
    pub shape: Vec<i64>,
}

/// Answer of `GET /v2/models/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "name": "digits-student", "versions": ["1"], "platform": "tandem_classifier",
    "inputs": [{"name": "images", "datatype": "FP32", "shape": [-1, 1, 8, 8]}],
    "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]
}))]
pub struct ModelMetadata {
    /// The model's name.
    pub name: String,
    /// Every loaded version of this name.
    pub versions: Vec<String>,
    /// `tandem_` and the model's family: `tandem_classifier` or `tandem_embedder`.
    pub platform: String,
    /// What the model takes.
    pub inputs: Vec<TensorMetadata>,
    /// What the model answers.
    pub outputs: Vec<TensorMetadata>,
}

/// JSON header of an inference request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "id": "42",
    "inputs": [{"name": "images", "shape": [1, 1, 2, 2], "datatype": "FP32", "data": [0, 255, 255, 0]}],
    "outputs": [{"name": "probabilities"}]
}))]
pub struct InferRequest {
    /// Echoed in the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Request parameters; `binary_data_output` is read, others are accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<RequestParameters>,
    /// The input tensors: exactly the ones the model's metadata lists.
    #[schema(min_items = 1)]
    pub inputs: Vec<InferInput>,
    /// The outputs wanted and how; absent or empty means every output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<RequestedOutput>>,
}

/// Parameters of a whole request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RequestParameters {
    /// Answer every output as raw bytes after the JSON header, unless the output says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_data_output: Option<bool>,
    /// Other parameters (Triton's `priority`, `timeout`, ...), accepted and ignored.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// One input tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InferInput {
    /// The input's name from the model's metadata.
    pub name: String,
    /// Dimensions, the batch first.
    #[serde(deserialize_with = "crate::whole::dimensions")]
    pub shape: Vec<u64>,
    /// Element type.
    pub datatype: Datatype,
    /// `binary_data_size` when the elements come as raw bytes after the JSON header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<InputParameters>,
    /// The elements in row-major order, flat or nested; absent when sent as raw bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<TensorData>,
}

/// Parameters of one input tensor.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InputParameters {
    /// Bytes of this input in the binary part of the body, inputs in request order.
    #[serde(default, deserialize_with = "crate::whole::optional_size", skip_serializing_if = "Option::is_none")]
    pub binary_data_size: Option<u64>,
    /// Other parameters, accepted and ignored unless they ask for an unsupported extension.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// One output wanted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestedOutput {
    /// The output's name from the model's metadata.
    pub name: String,
    /// `binary_data` to have it as raw bytes (or not), whatever the request's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<OutputParameters>,
}

/// Parameters of one output wanted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OutputParameters {
    /// Answer this output as raw bytes after the JSON header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_data: Option<bool>,
    /// Other parameters, accepted and ignored unless they ask for an unsupported extension.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// Tensor elements as JSON: numbers, booleans or strings, flat or nested in row-major order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TensorData(pub Value);

/// Written by hand because the elements may nest to any depth: an array of scalars or of arrays
/// of the same kind.
impl PartialSchema for TensorData {
    fn schema() -> RefOr<Schema> {
        let element = AnyOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::Number))
            .item(ObjectBuilder::new().schema_type(Type::String))
            .item(ObjectBuilder::new().schema_type(Type::Boolean))
            .item(Ref::from_schema_name("TensorData"));
        ArrayBuilder::new()
            .items(element)
            .description(Some("Elements in row-major order, flat or nested; strings for `BYTES`."))
            .into()
    }
}

impl ToSchema for TensorData {}

/// Answer of an inference request (its JSON header, when outputs travel as raw bytes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "model_name": "digits-student", "model_version": "1", "id": "42",
    "outputs": [{
        "name": "probabilities", "datatype": "FP32", "shape": [1, 10],
        "data": [0.9, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.02, 0.01]
    }]
}))]
pub struct InferResponse {
    /// The model's name.
    pub model_name: String,
    /// The version that answered.
    pub model_version: String,
    /// The request's `id`, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The outputs, in the order requested.
    pub outputs: Vec<InferOutput>,
}

/// One output tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InferOutput {
    /// The output's name from the model's metadata.
    pub name: String,
    /// Element type: `FP32`.
    pub datatype: Datatype,
    /// Dimensions, the batch first.
    pub shape: Vec<u64>,
    /// `binary_data_size` when the elements follow the JSON header as raw bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<OutputTensorParameters>,
    /// The elements, flat in row-major order; absent when sent as raw bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Vec<f32>>,
}

/// Parameters of one output tensor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OutputTensorParameters {
    /// Bytes of this output in the binary part of the body, outputs in answer order.
    pub binary_data_size: u64,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn datatypes_have_the_protocols_names() {
        for (datatype, name) in [(Datatype::Fp32, "FP32"), (Datatype::Uint8, "UINT8"), (Datatype::Bf16, "BF16")] {
            assert_eq!(serde_json::to_value(datatype).expect("serializes"), json!(name));
            assert_eq!(datatype.as_str(), name);
        }
        assert!(serde_json::from_value::<Datatype>(json!("FLOAT")).is_err());
    }

    #[test]
    fn requests_keep_unknown_parameters_and_refuse_unknown_fields() {
        let request: InferRequest = serde_json::from_value(json!({
            "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"],
                        "parameters": {"binary_data_size": null}}],
            "parameters": {"binary_data_output": true, "priority": 1}
        }))
        .expect("parses");
        let parameters = request.parameters.expect("parameters");
        assert_eq!(parameters.binary_data_output, Some(true));
        assert_eq!(parameters.other["priority"], json!(1));
        let typo = serde_json::from_value::<InferRequest>(json!({"inputs": [], "output": []}));
        assert!(typo.expect_err("unknown field").to_string().contains("unknown field `output`"));
    }
}
