//! The OpenAPI contract: committed spec matches the code, is well-formed 3.1, documents every
//! route and error, and every documented operation is really routed.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::Value;
use tandem_server::{ErrorType, ServerConfig};

use crate::common::*;

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/openapi.json");

fn spec() -> Value {
    serde_json::from_str(&tandem_server::openapi_json()).expect("spec is JSON")
}

fn operations(spec: &Value) -> Vec<(String, String, Value)> {
    let mut ops = Vec::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            ops.push((path.clone(), method.clone(), op.clone()));
        }
    }
    ops
}

#[test]
fn committed_spec_matches_the_code() {
    let generated = tandem_server::openapi_json();
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
    assert!(
        committed.trim_end() == generated.trim_end(),
        "openapi/openapi.json is out of date with the server code; regenerate it from the \
         repository root with `cargo run -- openapi > openapi/openapi.json` and commit the result"
    );
}

#[test]
fn spec_is_openapi_3_1_with_every_route() {
    let spec = spec();
    assert_eq!(spec["openapi"], "3.1.0");
    assert!(spec["info"]["title"].is_string());
    assert!(spec["info"]["version"].is_string());
    let paths: BTreeSet<&str> = spec["paths"].as_object().expect("paths").keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = [
        "/health/live",
        "/health/ready",
        "/v1/models",
        "/v1/models/{id}",
        "/v1/models/{id}/classify",
        "/v1/models/{id}/reload",
        "/v1/embeddings",
        "/v1/rerank",
        "/v1/models/{id}/embed",
        "/v1/models/{id}/rerank",
        "/v1/models/{id}/similarity",
        "/v1/models/{id}/generate",
        "/v1/models/{id}/tokenize",
        "/v1/models/{id}/detokenize",
        "/metrics",
        "/openapi.json",
        "/docs",
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{name}",
        "/v2/models/{name}/ready",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}",
        "/v2/models/{name}/versions/{version}/ready",
        "/v2/models/{name}/versions/{version}/infer",
    ]
    .into();
    assert_eq!(paths, expected);

    let classify = &spec["paths"]["/v1/models/{id}/classify"]["post"];
    let content = classify["requestBody"]["content"].as_object().expect("request body content");
    let types: BTreeSet<&str> = content.keys().map(String::as_str).collect();
    assert_eq!(types, ["application/json", "image/jpeg", "image/png"].into());
    assert_eq!(content["application/json"]["schema"]["$ref"], "#/components/schemas/ClassifyRequest");
    let params: Vec<&str> = classify["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    assert_eq!(params, ["id", "top_k"]);
}

/// The request schemas state every rule the server enforces on a single field, so that a
/// validator (or fuzzer) built from the document refuses the same requests the server does.
#[test]
fn classify_request_schema_states_the_server_rules() {
    let spec = spec();
    let schemas = &spec["components"]["schemas"];
    let request = &schemas["ClassifyRequest"];
    assert_eq!(request["additionalProperties"], false);
    assert_eq!(request["properties"]["inputs"]["minItems"], 1);
    let top_k = &request["properties"]["top_k"];
    assert_eq!(top_k["minimum"], 1);
    assert_eq!(top_k["maximum"], tandem_server::MAX_TOP_K);

    let query = spec["paths"]["/v1/models/{id}/classify"]["post"]["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .find(|p| p["name"] == "top_k")
        .expect("top_k parameter")
        .clone();
    assert_eq!(query["schema"]["minimum"], 1);
    assert_eq!(query["schema"]["maximum"], tandem_server::MAX_TOP_K);

    let branches = schemas["ClassifyInput"]["oneOf"].as_array().expect("ClassifyInput is a oneOf");
    let mut fields = Vec::new();
    for branch in branches {
        assert_eq!(branch["additionalProperties"], false, "{branch}");
        let required = branch["required"].as_array().expect("required");
        assert_eq!(required.len(), 1, "{branch}");
        let field = required[0].as_str().expect("field name");
        let properties = branch["properties"].as_object().expect("properties");
        assert_eq!(properties.keys().collect::<Vec<_>>(), [field], "{branch}");
        assert!(properties[field]["type"].is_string(), "{field} must not be nullable: {branch}");
        fields.push(field.to_owned());
    }
    fields.sort();
    assert_eq!(fields, ["image", "pixels"]);

    let pixels =
        &branches.iter().find(|b| b["required"][0] == "pixels").expect("pixels branch")["properties"]["pixels"];
    assert_eq!(pixels["minItems"], 1);
    assert_eq!(pixels["items"]["minItems"], 1);
    assert_eq!(pixels["items"]["items"]["minimum"], 0);
    assert_eq!(pixels["items"]["items"]["maximum"], 255);
}

/// The inference request schema states what the server enforces field by field; which names,
/// datatypes and shapes a model takes is per model, in `GET /v2/models/{name}`.
#[test]
fn infer_schema_states_the_server_rules_and_both_body_forms() {
    let spec = spec();
    let schemas = &spec["components"]["schemas"];
    let request = &schemas["InferRequest"];
    assert_eq!(request["additionalProperties"], false);
    assert_eq!(request["properties"]["inputs"]["minItems"], 1);
    let input = &schemas["InferInput"];
    assert_eq!(input["additionalProperties"], false);
    assert_eq!(input["properties"]["shape"]["items"]["minimum"], 0);
    let datatypes: BTreeSet<&str> =
        schemas["Datatype"]["enum"].as_array().expect("enum").iter().map(|d| d.as_str().expect("name")).collect();
    assert!(datatypes.is_superset(&["FP32", "UINT8", "BYTES"].into()), "{datatypes:?}");
    for path in ["/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"] {
        let op = &spec["paths"][path]["post"];
        let types: BTreeSet<&str> =
            op["requestBody"]["content"].as_object().expect("content").keys().map(String::as_str).collect();
        assert_eq!(types, ["application/json", "application/octet-stream"].into(), "{path}");
        let ok = &op["responses"]["200"];
        assert!(ok["headers"]["inference-header-content-length"].is_object(), "{path}");
        assert_eq!(ok["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/InferResponse");
    }
}

/// The generate request's schema states the rules the server enforces on single fields, with
/// every name the runtime parses, and both answer forms.
#[test]
fn generate_schema_states_the_server_rules_and_both_answer_forms() {
    use tandem_runtime::diffusion::Solver;
    let spec = spec();
    let schemas = &spec["components"]["schemas"];
    let request = &schemas["GenerateRequest"];
    assert_eq!(request["additionalProperties"], false);
    assert!(request["required"].is_null(), "every field is optional: {request}");
    for field in ["n", "steps"] {
        assert_eq!(request["properties"][field]["minimum"], 1, "{field}");
    }
    let names = |schema: &Value| -> Vec<String> {
        schema["enum"].as_array().expect("enum").iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()
    };
    let samplers = names(&request["properties"]["sampler"]);
    for solver in Solver::ALL {
        assert!(samplers.iter().any(|s| s == solver.as_str()), "{samplers:?}");
        assert!(solver.as_str().parse::<Solver>().is_ok());
    }
    assert!(samplers.iter().any(|s| s == "consistency"), "{samplers:?}");
    let dualfast = &schemas["DualFastOptions"];
    assert_eq!(dualfast["additionalProperties"], false);
    assert_eq!(names(&dualfast["properties"]["tau"]), ["first", "previous"]);
    assert_eq!(names(&dualfast["properties"]["schedule"]), ["linear", "constant"]);
    assert_eq!(names(&dualfast["properties"]["space"]), ["eps", "x0"]);
    let ok = &spec["paths"]["/v1/models/{id}/generate"]["post"]["responses"]["200"]["content"];
    let types: BTreeSet<&str> = ok.as_object().expect("content").keys().map(String::as_str).collect();
    assert_eq!(types, ["application/json", "image/png"].into());
    assert_eq!(ok["application/json"]["schema"]["$ref"], "#/components/schemas/GenerateResponse");
    assert_eq!(schemas["GeneratedImage"]["required"], serde_json::json!(["png_base64"]));
}

/// The tokenizer routes take images in every form classify takes, and detokenize answers JSON or a
/// PNG; their request schemas are closed and state what is required.
#[test]
fn tokenizer_schemas_state_both_body_and_answer_forms() {
    let spec = spec();
    let schemas = &spec["components"]["schemas"];
    let content_types =
        |value: &Value| -> BTreeSet<String> { value.as_object().expect("content").keys().cloned().collect() };
    let tokenize = &spec["paths"]["/v1/models/{id}/tokenize"]["post"];
    let body = &tokenize["requestBody"]["content"];
    assert_eq!(content_types(body), ["application/json", "image/jpeg", "image/png"].map(String::from).into());
    assert_eq!(body["application/json"]["schema"]["$ref"], "#/components/schemas/TokenizeRequest");
    assert_eq!(schemas["TokenizeRequest"]["additionalProperties"], false);
    assert_eq!(schemas["TokenizeRequest"]["properties"]["inputs"]["minItems"], 1);
    let ok = &tokenize["responses"]["200"]["content"]["application/json"]["schema"]["$ref"];
    assert_eq!(ok, "#/components/schemas/TokenizeResponse");
    assert_eq!(schemas["ImageTokens"]["required"], serde_json::json!(["pixel_tokens", "shape"]));

    let detokenize = &spec["paths"]["/v1/models/{id}/detokenize"]["post"];
    let request = &schemas["DetokenizeRequest"];
    assert_eq!(request["additionalProperties"], false);
    assert_eq!(request["required"], serde_json::json!(["pixel_tokens", "shape"]));
    assert_eq!(schemas["TokenShape"]["additionalProperties"], false);
    assert_eq!(schemas["TokenShape"]["required"], serde_json::json!(["height", "width", "depth"]));
    let ok = &detokenize["responses"]["200"]["content"];
    assert_eq!(content_types(ok), ["application/json", "image/png"].map(String::from).into());
    assert_eq!(ok["application/json"]["schema"]["$ref"], "#/components/schemas/DetokenizeResponse");
    assert_eq!(schemas["DetokenizeResponse"]["required"], serde_json::json!(["model", "png_base64"]));
}

/// The load request's schema states the runtime's rule for names and versions, so that a client
/// or fuzzer built from the document sends only names the server then looks up.
#[test]
fn load_request_schema_states_the_name_rule() {
    use tandem_runtime::repository::{validate_segment, MAX_SEGMENT_LEN};
    let spec = spec();
    let request = &spec["components"]["schemas"]["LoadModelRequest"];
    assert_eq!(request["additionalProperties"], false);
    assert_eq!(request["required"], serde_json::json!(["name"]));
    for field in ["name", "version"] {
        let schema = &request["properties"][field];
        assert_eq!(schema["pattern"], "^[A-Za-z0-9_-][A-Za-z0-9._-]*$", "{field}");
        assert_eq!(schema["minLength"], 1, "{field}");
        assert_eq!(schema["maxLength"], MAX_SEGMENT_LEN, "{field}");
    }
    // What the pattern accepts and refuses, as the runtime decides it.
    for ok in ["digits", "a.b", "_x", "-", "1.10"] {
        assert!(validate_segment("name", ok).is_ok(), "{ok}");
    }
    for bad in [".x", "a/b", "a b", "é"] {
        assert!(validate_segment("name", bad).is_err(), "{bad}");
    }
}

/// Every `$ref` must point at something that exists, or code generators and Swagger UI break.
#[test]
fn every_reference_resolves() {
    let spec = spec();
    let mut refs = Vec::new();
    collect_refs(&spec, &mut refs);
    assert!(refs.len() > 10, "{refs:?}");
    for r in refs {
        let pointer = r.strip_prefix('#').expect("local reference");
        assert!(spec.pointer(pointer).is_some(), "dangling reference {r}");
    }
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    out.push(v.as_str().expect("ref string").to_owned());
                } else {
                    collect_refs(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// Each error response is documented under the status the live mapping gives its types, with the
/// error schema; and every status in the mapping appears somewhere.
#[test]
fn documented_error_codes_follow_the_status_mapping() {
    let spec = spec();
    let mut seen = BTreeSet::new();
    for (path, method, op) in operations(&spec) {
        let responses = op["responses"].as_object().expect("responses");
        assert!(
            responses.keys().any(|c| c.starts_with('2') || c.starts_with('3')),
            "{method} {path} has no success response"
        );
        for (code, response) in responses {
            let code: u16 = code.parse().expect("numeric status");
            if code < 400 {
                continue;
            }
            seen.insert(code);
            // The Open Inference Protocol's routes answer in its own shape, from the same table.
            let body = if path.starts_with("/v2") { "InferenceErrorBody" } else { "ErrorBody" };
            assert_eq!(
                response["content"]["application/json"]["schema"]["$ref"],
                format!("#/components/schemas/{body}"),
                "{method} {path} {code}"
            );
            let description = response["description"].as_str().expect("description");
            let kinds: Vec<ErrorType> =
                ErrorType::ALL.into_iter().filter(|k| description.contains(&format!("`{}`", k.as_str()))).collect();
            assert!(!kinds.is_empty(), "{method} {path} {code}: {description}");
            for kind in kinds {
                assert_eq!(kind.status().as_u16(), code, "{method} {path}: {kind:?}");
            }
        }
        assert!(responses.contains_key("405") && responses.contains_key("500"));
    }
    let mapped: BTreeSet<u16> = ErrorType::ALL.iter().map(|k| k.status().as_u16()).collect();
    assert_eq!(seen, mapped);
    assert_eq!(mapped, [400, 401, 404, 405, 408, 409, 413, 414, 415, 422, 429, 431, 500, 503].into());

    let v1 = &spec["paths"]["/v1/models"]["get"];
    assert!(v1["responses"]["429"]["headers"]["retry-after"].is_object());
    assert!(v1["responses"]["401"].is_object());
    assert!(spec["paths"]["/health/live"]["get"]["responses"]["401"].is_null());
    assert!(spec["paths"]["/v2/models/{name}/infer"]["post"]["responses"]["401"].is_object());
    assert!(spec["paths"]["/v2/health/ready"]["get"]["responses"]["401"].is_null());
    let inference_error = &spec["components"]["schemas"]["InferenceErrorBody"];
    assert_eq!(inference_error["properties"]["error"]["type"], "string", "Triton's client reads a string");
    assert!(spec["components"]["securitySchemes"]["bearer_auth"].is_object());

    let types = spec["components"]["schemas"]["ErrorType"]["enum"].as_array().expect("error type enum");
    assert_eq!(types.len(), ErrorType::ALL.len());
}

/// The other direction of drift: every documented operation is routed by the app.
#[tokio::test]
async fn every_documented_operation_is_routed() {
    let fx = fixture();
    let (app, _) = ready_app(&fx, &ServerConfig::default());
    for (path, method, _) in operations(&spec()) {
        let uri = path.replace("{id}", &fx.model_id).replace("{name}", MODEL_NAME).replace("{version}", MODEL_VERSION);
        let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).expect("method");
        let req = Request::builder()
            .method(method.clone())
            .uri(&uri)
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .expect("request");
        let reply = send(&app, req).await;
        assert_ne!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
        if reply.status == StatusCode::NOT_FOUND {
            let message = if uri.starts_with("/v2") {
                reply.assert_inference_error(404, "not_found")
            } else {
                reply.assert_error(404, "not_found")
            };
            assert!(!message.starts_with("no route"), "{method} {uri} is not routed");
        }
    }
}
