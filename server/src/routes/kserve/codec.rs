//! The Open Inference Protocol's bytes: a request body split into its JSON header and the raw
//! tensors that follow it, tensor elements read from JSON or from little-endian bytes and checked
//! against their shape, and answers written as JSON or as a JSON header plus raw outputs.
//!
//! Nothing here knows a model: the handlers decide which inputs a model takes, this module only
//! reads and writes what the binary tensor data extension defines.

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::error::{ApiError, ErrorType};
use crate::wire::kserve::{Datatype, InferInput, InferOutput, InferRequest, InferResponse, OutputTensorParameters};

/// Header giving the length of the JSON part of a body that carries binary tensors.
pub(crate) const HEADER_LENGTH: &str = "inference-header-content-length";

/// A request header and, per input in request order, its raw bytes when it came binary.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub(crate) request: InferRequest,
    pub(crate) binary: Vec<Option<Bytes>>,
}

/// The JSON header's length from `Inference-Header-Content-Length`, or `None` for a body that is
/// all JSON.
pub(crate) fn header_length(headers: &HeaderMap) -> Result<Option<usize>, ApiError> {
    let Some(value) = headers.get(HEADER_LENGTH) else {
        return Ok(None);
    };
    let parsed = value.to_str().ok().and_then(|v| v.trim().parse::<usize>().ok());
    parsed.map(Some).ok_or_else(|| {
        ApiError::new(
            ErrorType::BadRequest,
            format!("Inference-Header-Content-Length must be a whole number of bytes, got {value:?}"),
        )
    })
}

/// Compressed bodies are refused by name: read as JSON they would only fail with a syntax error.
pub(crate) fn refuse_content_encoding(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase()) {
        None => Ok(()),
        Some(encoding) if encoding.is_empty() || encoding == "identity" => Ok(()),
        Some(encoding) => Err(ApiError::new(
            ErrorType::UnsupportedMediaType,
            format!("content encoding {encoding:?} is not supported: send the body uncompressed"),
        )),
    }
}

/// Splits `body` into its JSON header and the raw bytes of each binary input.
///
/// The content type is not consulted: Triton's client sends none, and the header tells the two
/// body forms apart.
pub(crate) fn decode(body: Bytes, header_length: Option<usize>) -> Result<Decoded, ApiError> {
    let (json, mut rest) = match header_length {
        None => (body, Bytes::new()),
        Some(n) if n > body.len() => {
            return Err(ApiError::new(
                ErrorType::BadRequest,
                format!("Inference-Header-Content-Length is {n}, but the body has only {} bytes", body.len()),
            ))
        }
        Some(n) => {
            let mut json = body;
            let rest = json.split_off(n);
            (json, rest)
        }
    };
    let request: InferRequest = serde_json::from_slice(&json).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            ApiError::new(ErrorType::InvalidInput, format!("invalid request body: {e}"))
        }
        _ => ApiError::new(ErrorType::InvalidJson, format!("malformed json: {e}")),
    })?;
    let mut binary = Vec::with_capacity(request.inputs.len());
    for input in &request.inputs {
        let size = input.parameters.as_ref().and_then(|p| p.binary_data_size);
        binary.push(match (size, &input.data) {
            (Some(_), Some(_)) => {
                return Err(invalid(input, "set either data or parameters.binary_data_size, not both".into()))
            }
            (None, None) => {
                return Err(invalid(
                    input,
                    "has no data: send data, or raw bytes with parameters.binary_data_size".into(),
                ))
            }
            (None, Some(_)) => None,
            (Some(size), None) => {
                let size = usize::try_from(size).unwrap_or(usize::MAX);
                if size > rest.len() {
                    return Err(ApiError::new(
                        ErrorType::BadRequest,
                        format!(
                            "input {:?}: binary_data_size is {size}, but only {} bytes of binary data are left \
                             (the binary part starts after Inference-Header-Content-Length bytes)",
                            input.name,
                            rest.len()
                        ),
                    ));
                }
                Some(rest.split_to(size))
            }
        });
    }
    if !rest.is_empty() {
        return Err(ApiError::new(
            ErrorType::BadRequest,
            format!("{} bytes follow the last binary input; binary_data_size must cover them all", rest.len()),
        ));
    }
    Ok(Decoded { request, binary })
}

/// A 422 about one input, named as the request named it.
pub(crate) fn invalid(input: &InferInput, message: String) -> ApiError {
    ApiError::new(ErrorType::InvalidInput, format!("input {:?}: {message}", input.name))
}

/// Elements the shape holds, refusing shapes whose product overflows.
pub(crate) fn element_count(input: &InferInput) -> Result<usize, ApiError> {
    input
        .shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?))
        .ok_or_else(|| invalid(input, format!("shape {:?} holds more elements than can be addressed", input.shape)))
}

/// The elements of an `FP32` or `UINT8` input as `f32`, as many as its shape holds.
pub(crate) fn numbers(input: &InferInput, raw: Option<&Bytes>) -> Result<Vec<f32>, ApiError> {
    let count = element_count(input)?;
    let values = match (raw, input.datatype) {
        (Some(bytes), Datatype::Fp32) => {
            expect_size(input, bytes.len(), count, 4)?;
            bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
        }
        (Some(bytes), Datatype::Uint8) => {
            expect_size(input, bytes.len(), count, 1)?;
            bytes.iter().map(|&b| f32::from(b)).collect()
        }
        (None, datatype @ (Datatype::Fp32 | Datatype::Uint8)) => {
            let mut values = Vec::with_capacity(count.min(1 << 20));
            flatten(input, json_data(input), &mut |v| {
                let number = match (datatype, v) {
                    // Whole floats count too: JSON (and JSON Schema) has one number type.
                    (Datatype::Uint8, Value::Number(n)) => {
                        n.as_f64().filter(|n| n.fract() == 0.0 && (0.0..=255.0).contains(n)).map(|n| n as f32)
                    }
                    (_, Value::Number(n)) => n.as_f64().map(|n| n as f32),
                    _ => None,
                };
                values.push(number.ok_or_else(|| {
                    invalid(input, format!("element {} is {v}, not a {datatype} value", values.len()))
                })?);
                Ok(())
            })?;
            values
        }
        (_, other) => return Err(invalid(input, format!("datatype {other} cannot be read as numbers"))),
    };
    expect_count(input, values.len(), count)?;
    Ok(values)
}

/// The elements of a `BYTES` input, as many as its shape holds.
pub(crate) fn byte_strings(input: &InferInput, raw: Option<&Bytes>) -> Result<Vec<Vec<u8>>, ApiError> {
    let count = element_count(input)?;
    let mut values = Vec::new();
    match raw {
        Some(bytes) => {
            let mut rest: &[u8] = bytes;
            while !rest.is_empty() {
                let Some((length, tail)) = rest.split_first_chunk::<4>() else {
                    return Err(invalid(input, format!("element {} has a cut 4-byte length", values.len())));
                };
                let length = u32::from_le_bytes(*length) as usize;
                if length > tail.len() {
                    return Err(invalid(
                        input,
                        format!(
                            "element {} is {length} bytes long, but only {} bytes are left",
                            values.len(),
                            tail.len()
                        ),
                    ));
                }
                let (element, tail) = tail.split_at(length);
                values.push(element.to_vec());
                rest = tail;
            }
        }
        None => flatten(input, json_data(input), &mut |v| match v {
            Value::String(s) => {
                values.push(s.as_bytes().to_vec());
                Ok(())
            }
            other => Err(invalid(input, format!("element {} is {other}, not a string", values.len()))),
        })?,
    }
    expect_count(input, values.len(), count)?;
    Ok(values)
}

/// The JSON `data` of an input that `decode` found to have it.
fn json_data(input: &InferInput) -> &Value {
    input.data.as_ref().map_or(&Value::Null, |d| &d.0)
}

/// Walks nested arrays in row-major order, handing each scalar to `each`.
fn flatten(
    input: &InferInput,
    value: &Value,
    each: &mut dyn FnMut(&Value) -> Result<(), ApiError>,
) -> Result<(), ApiError> {
    match value {
        Value::Array(items) => items.iter().try_for_each(|item| match item {
            Value::Array(_) => flatten(input, item, each),
            scalar => each(scalar),
        }),
        other => Err(invalid(input, format!("data must be an array, got {other}"))),
    }
}

fn expect_count(input: &InferInput, found: usize, count: usize) -> Result<(), ApiError> {
    if found != count {
        return Err(invalid(input, format!("{found} elements sent, but shape {:?} holds {count}", input.shape)));
    }
    Ok(())
}

fn expect_size(input: &InferInput, size: usize, count: usize, width: usize) -> Result<(), ApiError> {
    if Some(size) != count.checked_mul(width) {
        return Err(invalid(
            input,
            format!(
                "binary_data_size is {size} bytes, but shape {:?} of {} holds {count} elements of {width} bytes",
                input.shape, input.datatype
            ),
        ));
    }
    Ok(())
}

/// One `FP32` output as computed, and whether it is wanted as raw bytes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Output {
    pub(crate) name: String,
    pub(crate) shape: Vec<u64>,
    pub(crate) data: Vec<f32>,
    pub(crate) binary: bool,
}

/// The answer: plain JSON, or, when any output is wanted binary, a JSON header followed by those
/// outputs' little-endian bytes in answer order, with `Inference-Header-Content-Length`.
pub(crate) fn encode(
    model_name: String,
    model_version: String,
    id: Option<String>,
    outputs: Vec<Output>,
) -> Result<Response, ApiError> {
    let binary = outputs.iter().any(|o| o.binary);
    let mut raw = Vec::new();
    let outputs = outputs
        .into_iter()
        .map(|output| {
            let (parameters, data) = if output.binary {
                let size = output.data.len() * 4;
                raw.extend(output.data.iter().flat_map(|v| v.to_le_bytes()));
                (Some(OutputTensorParameters { binary_data_size: size as u64 }), None)
            } else {
                (None, Some(output.data))
            };
            InferOutput { name: output.name, datatype: Datatype::Fp32, shape: output.shape, parameters, data }
        })
        .collect();
    let response = InferResponse { model_name, model_version, id, outputs };
    let json = serde_json::to_vec(&response)
        .map_err(|e| ApiError::new(ErrorType::Internal, format!("the answer does not serialize: {e}")))?;
    let mut headers = HeaderMap::new();
    if !binary {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return Ok((StatusCode::OK, headers, json).into_response());
    }
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(HEADER_LENGTH, HeaderValue::from(json.len()));
    let mut body = json;
    body.extend_from_slice(&raw);
    Ok((StatusCode::OK, headers, Body::from(body)).into_response())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn body(header: &Value, raw: &[u8]) -> (Bytes, Option<usize>) {
        let mut bytes = serde_json::to_vec(header).unwrap();
        let n = bytes.len();
        bytes.extend_from_slice(raw);
        (Bytes::from(bytes), Some(n))
    }

    fn input(value: Value) -> InferInput {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn binary_inputs_take_their_bytes_in_order() {
        let header = json!({"inputs": [
            {"name": "a", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}},
            {"name": "b", "shape": [1], "datatype": "UINT8", "data": [7]},
            {"name": "c", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 11}},
        ]});
        let mut raw: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        raw.extend(2u32.to_le_bytes());
        raw.extend(b"hi");
        raw.extend(1u32.to_le_bytes());
        raw.extend(b"!");
        let (bytes, n) = body(&header, &raw);
        let decoded = decode(bytes, n).unwrap();
        let inputs = &decoded.request.inputs;
        assert_eq!(numbers(&inputs[0], decoded.binary[0].as_ref()).unwrap(), vec![1.5, -2.0]);
        assert_eq!(numbers(&inputs[1], decoded.binary[1].as_ref()).unwrap(), vec![7.0]);
        assert_eq!(byte_strings(&inputs[2], decoded.binary[2].as_ref()).unwrap(), vec![b"hi".to_vec(), b"!".to_vec()]);
    }

    #[test]
    fn framing_errors_are_400s_naming_the_cause() {
        let header =
            json!({"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}]});
        let (bytes, n) = body(&header, &[0, 0]);
        let err = decode(bytes, n).unwrap_err();
        assert_eq!(err.error_type(), ErrorType::BadRequest);
        assert!(err.message().contains("only 2 bytes"), "{err}");
        let (bytes, n) = body(&header, &[0; 6]);
        assert!(decode(bytes, n).unwrap_err().message().starts_with("2 bytes follow"));
        let (bytes, _) = body(&header, &[]);
        assert!(decode(bytes.clone(), Some(bytes.len() + 1)).unwrap_err().message().contains("only"));
        let err = decode(Bytes::from_static(b"{\"inputs\": ["), None).unwrap_err();
        assert_eq!(err.error_type(), ErrorType::InvalidJson);
        let err = decode(Bytes::from_static(b"{\"inputs\": 3}"), None).unwrap_err();
        assert_eq!(err.error_type(), ErrorType::InvalidInput);
    }

    #[test]
    fn json_elements_are_checked_against_shape_and_datatype() {
        let nested = input(json!({"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4.5]]}));
        assert_eq!(numbers(&nested, None).unwrap(), vec![1.0, 2.0, 3.0, 4.5]);
        let short = input(json!({"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [1, 2]}));
        assert!(numbers(&short, None).unwrap_err().message().contains("2 elements sent, but shape [2, 3] holds 6"));
        let wide = input(json!({"name": "x", "shape": [1], "datatype": "UINT8", "data": [256]}));
        assert!(numbers(&wide, None).unwrap_err().message().contains("not a UINT8 value"));
        let whole = input(json!({"name": "x", "shape": [2], "datatype": "UINT8", "data": [3.0, 255]}));
        assert_eq!(numbers(&whole, None).unwrap(), vec![3.0, 255.0]);
        let fraction = input(json!({"name": "x", "shape": [1], "datatype": "UINT8", "data": [2.5]}));
        assert!(numbers(&fraction, None).is_err());
        let text = input(json!({"name": "x", "shape": [1], "datatype": "FP32", "data": ["a"]}));
        assert!(numbers(&text, None).is_err());
        let huge = input(json!({"name": "x", "shape": [u64::MAX, 4], "datatype": "FP32", "data": [1]}));
        assert!(numbers(&huge, None).unwrap_err().message().contains("more elements"));
        let size = Bytes::from_static(&[0; 6]);
        let fp = input(json!({"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 6}}));
        assert!(numbers(&fp, Some(&size)).unwrap_err().message().contains("holds 2 elements of 4 bytes"));
        let strings = input(json!({"name": "t", "shape": [2], "datatype": "BYTES", "data": ["a", 1]}));
        assert!(byte_strings(&strings, None).unwrap_err().message().contains("element 1 is 1, not a string"));
    }

    #[test]
    fn binary_answers_carry_their_header_length() {
        let outputs = vec![
            Output { name: "p".into(), shape: vec![1, 2], data: vec![0.25, 0.75], binary: true },
            Output { name: "q".into(), shape: vec![1], data: vec![1.0], binary: false },
        ];
        let response = encode("m".into(), "1".into(), Some("7".into()), outputs).unwrap();
        let n: usize = response.headers()[HEADER_LENGTH].to_str().unwrap().parse().unwrap();
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/octet-stream");
        let bytes = futures_body(response);
        let header: Value = serde_json::from_slice(&bytes[..n]).unwrap();
        assert_eq!(header["outputs"][0]["parameters"], json!({"binary_data_size": 8}));
        assert!(header["outputs"][0].get("data").is_none());
        assert_eq!(header["outputs"][1]["data"], json!([1.0]));
        assert_eq!(header["id"], "7");
        assert_eq!(&bytes[n..], [0.25f32, 0.75].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>());
    }

    fn futures_body(response: Response) -> Bytes {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(axum::body::to_bytes(response.into_body(), usize::MAX)).unwrap()
    }
}
