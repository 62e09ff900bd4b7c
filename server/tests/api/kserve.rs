//! The Open Inference Protocol (`/v2`) in-process: health, metadata and readiness, inference for
//! the tiny classifier and the tiny embedder in JSON and in hand-built binary bodies, held against
//! Tandem's own routes, and every error path in the protocol's error shape, each answer held to
//! the spec's documented codes.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};
use tandem_server::{app, AppState, ServerConfig};

use crate::common::*;

const INFER: &str = "/v2/models/{name}/infer";
const VERSION_INFER: &str = "/v2/models/{name}/versions/{version}/infer";

/// Two distinct 8x8 images as pixel rows, and the same pixels flat.
fn two_images() -> (Vec<Vec<Vec<f64>>>, Vec<f64>) {
    let images = vec![pixel_rows(8, 3.0), pixel_rows(8, 100.0)];
    let flat = images.iter().flatten().flatten().copied().collect();
    (images, flat)
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn floats(value: &Value) -> Vec<f32> {
    value.as_array().expect("numbers").iter().map(|x| x.as_f64().expect("a number") as f32).collect()
}

/// `BYTES` elements as the binary extension writes them: a 4-byte little-endian length, then the bytes.
fn byte_elements(texts: &[&[u8]]) -> Vec<u8> {
    texts.iter().flat_map(|t| (t.len() as u32).to_le_bytes().into_iter().chain(t.iter().copied())).collect()
}

/// A binary-extension request as Triton's client sends it: no content type, the JSON header's
/// length in `Inference-Header-Content-Length`, then the raw tensors.
async fn post_binary(app: &axum::Router, uri: &str, header: &Value, raw: &[u8]) -> Reply {
    let mut body = serde_json::to_vec(header).expect("serializes");
    let n = body.len();
    body.extend_from_slice(raw);
    let req = Request::post(uri).header("inference-header-content-length", n).body(Body::from(body)).expect("request");
    send(app, req).await
}

/// The JSON header and the raw bytes of a binary answer.
fn split_binary(reply: &Reply) -> (Value, Vec<u8>) {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.headers["content-type"], "application/octet-stream");
    let n: usize = reply.headers["inference-header-content-length"].to_str().expect("ascii").parse().expect("a length");
    let header = serde_json::from_slice(&reply.body[..n]).expect("the header is JSON");
    (header, reply.body[n..].to_vec())
}

/// Full probability vectors from Tandem's own classify route, rebuilt in label order.
async fn classify_reference(app: &axum::Router, images: &[Vec<Vec<f64>>]) -> Vec<f32> {
    let inputs: Vec<Value> = images.iter().map(|rows| json!({"pixels": rows})).collect();
    let reply = post_json(app, "/v1/models/digits/classify", &json!({"inputs": inputs, "top_k": 10})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let mut flat = Vec::new();
    for predictions in reply.json()["predictions"].as_array().expect("predictions") {
        let mut probabilities = vec![f32::NAN; 10];
        for p in predictions.as_array().expect("a list") {
            let label: usize = p["label"].as_str().expect("label").parse().expect("the tiny model's labels are 0..9");
            probabilities[label] = p["score"].as_f64().expect("score") as f32;
        }
        flat.extend(probabilities);
    }
    flat
}

#[track_caller]
fn assert_close(served: &[f32], reference: &[f32]) {
    assert_eq!(served.len(), reference.len());
    for (i, (s, r)) in served.iter().zip(reference).enumerate() {
        assert!((s - r).abs() <= 1e-6, "element {i}: served {s}, reference {r}");
    }
}

#[tokio::test]
async fn health_readiness_and_server_metadata_speak_the_protocol() {
    let fx = fixture();
    let state = AppState::new(fx.runtime.clone(), &ServerConfig::default());
    let app = app(state.clone());

    let live = get(&app, "/v2/health/live").await;
    assert_eq!(live.status, StatusCode::OK);
    assert_eq!(live.json(), json!({"live": true}));
    assert_documented("/v2/health/live", "GET", live.status);

    let ready = get(&app, "/v2/health/ready").await;
    ready.assert_inference_error(503, "unavailable");
    assert_documented("/v2/health/ready", "GET", ready.status);
    let model = get(&app, "/v2/models/digits/ready").await;
    model.assert_inference_error(503, "unavailable");
    assert_documented("/v2/models/{name}/ready", "GET", model.status);

    state.set_ready(true);
    let ready = get(&app, "/v2/health/ready").await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.json(), json!({"ready": true}));
    assert_documented("/v2/health/ready", "GET", ready.status);

    let meta = get(&app, "/v2").await;
    assert_eq!(meta.status, StatusCode::OK);
    assert_documented("/v2", "GET", meta.status);
    let meta = meta.json();
    assert_eq!(meta["name"], "tandem");
    assert!(meta["version"].as_str().is_some_and(|v| !v.is_empty()), "{meta}");
    assert_eq!(meta["extensions"], json!(["binary_tensor_data"]));

    get(&app, "/v2/nothing").await.assert_inference_error(404, "not_found");
}

#[tokio::test]
async fn model_metadata_and_readiness_name_each_familys_tensors() {
    let (fx, _dir) = fixture_with_embedder();
    let (app, _) = ready_app(&fx, &ServerConfig::default());

    let classifier = json!({
        "name": "digits", "versions": ["1.0.0"], "platform": "tandem_classifier",
        "inputs": [{"name": "images", "datatype": "FP32", "shape": [-1, 1, 8, 8]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]
    });
    for (uri, template) in [
        ("/v2/models/digits", "/v2/models/{name}"),
        ("/v2/models/digits/versions/1.0.0", "/v2/models/{name}/versions/{version}"),
    ] {
        let reply = get(&app, uri).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_documented(template, "GET", reply.status);
        assert_eq!(reply.json(), classifier);
    }
    let embedder = get(&app, "/v2/models/texts").await.json();
    assert_eq!(
        embedder,
        json!({
            "name": "texts", "versions": ["1"], "platform": "tandem_embedder",
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": "embeddings", "datatype": "FP32", "shape": [-1, 32]}]
        })
    );

    for (uri, template) in [
        ("/v2/models/ghost", "/v2/models/{name}"),
        ("/v2/models/digits/versions/9", "/v2/models/{name}/versions/{version}"),
        ("/v2/models/ghost/ready", "/v2/models/{name}/ready"),
        ("/v2/models/digits/versions/9/ready", "/v2/models/{name}/versions/{version}/ready"),
    ] {
        let reply = get(&app, uri).await;
        reply.assert_inference_error(404, "not_found");
        assert_documented(template, "GET", reply.status);
    }

    for (uri, template, name) in [
        ("/v2/models/texts/ready", "/v2/models/{name}/ready", "texts"),
        ("/v2/models/digits/versions/1.0.0/ready", "/v2/models/{name}/versions/{version}/ready", "digits"),
    ] {
        let reply = get(&app, uri).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_documented(template, "GET", reply.status);
        assert_eq!(reply.json(), json!({"name": name, "ready": true}));
    }

    let routes = get(&app, "/v1/models/texts").await.json()["routes"].clone();
    assert!(routes.as_array().expect("routes").contains(&json!("POST /v2/models/{name}/infer")), "{routes}");
}

#[tokio::test]
async fn classifier_infer_in_json_matches_the_classify_route() {
    let fx = fixture();
    let (app, _) = ready_app(&fx, &ServerConfig::default());
    let (images, flat) = two_images();
    let reference = classify_reference(&app, &images).await;

    let body =
        json!({"id": "req-1", "inputs": [{"name": "images", "shape": [2, 1, 8, 8], "datatype": "FP32", "data": flat}]});
    let reply = post_json(&app, "/v2/models/digits/infer", &body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_documented(INFER, "POST", reply.status);
    assert!(reply.headers.get("inference-header-content-length").is_none());
    let answer = reply.json();
    assert_eq!(answer["model_name"], "digits");
    assert_eq!(answer["model_version"], "1.0.0");
    assert_eq!(answer["id"], "req-1");
    let outputs = answer["outputs"].as_array().expect("outputs");
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0]["name"], "probabilities");
    assert_eq!(outputs[0]["datatype"], "FP32");
    assert_eq!(outputs[0]["shape"], json!([2, 10]));
    assert_close(&floats(&outputs[0]["data"]), &reference);

    // UINT8, nested row-major data, the versioned path, an explicit output, no content type.
    let nested: Vec<Vec<Vec<Vec<u8>>>> =
        images.iter().map(|rows| vec![rows.iter().map(|r| r.iter().map(|&v| v as u8).collect()).collect()]).collect();
    let body = json!({
        "inputs": [{"name": "images", "shape": [2, 1, 8, 8], "datatype": "UINT8", "data": nested}],
        "outputs": [{"name": "probabilities"}]
    });
    let req =
        Request::post("/v2/models/digits/versions/1.0.0/infer").body(Body::from(body.to_string())).expect("request");
    let reply = send(&app, req).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_documented(VERSION_INFER, "POST", reply.status);
    let answer = reply.json();
    assert!(answer.get("id").is_none(), "{answer}");
    assert_close(&floats(&answer["outputs"][0]["data"]), &reference);
}

#[tokio::test]
async fn classifier_binary_request_and_response_built_by_hand() {
    let fx = fixture();
    let (app, _) = ready_app(&fx, &ServerConfig::default());
    let (images, flat) = two_images();
    let reference = classify_reference(&app, &images).await;
    let pixels: Vec<f32> = flat.iter().map(|&v| v as f32).collect();

    let header = json!({
        "inputs": [
            {"name": "images", "shape": [2, 1, 8, 8], "datatype": "FP32", "parameters": {"binary_data_size": 2 * 64 * 4}}
        ],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": true}}]
    });
    let reply = post_binary(&app, "/v2/models/digits/infer", &header, &f32_bytes(&pixels)).await;
    assert_documented(INFER, "POST", reply.status);
    let (answer, raw) = split_binary(&reply);
    let output = &answer["outputs"][0];
    assert_eq!(output["shape"], json!([2, 10]));
    assert_eq!(output["parameters"], json!({"binary_data_size": 80}));
    assert!(output.get("data").is_none(), "{answer}");
    assert_eq!(raw.len(), 80);
    assert_close(&f32s(&raw), &reference);

    // UINT8 bytes in, every output binary by the request's default.
    let header = json!({
        "inputs": [
            {"name": "images", "shape": [2, 1, 8, 8], "datatype": "UINT8", "parameters": {"binary_data_size": 128}}
        ],
        "parameters": {"binary_data_output": true, "priority": 3}
    });
    let bytes: Vec<u8> = flat.iter().map(|&v| v as u8).collect();
    let (_, raw) = split_binary(&post_binary(&app, "/v2/models/digits/versions/1.0.0/infer", &header, &bytes).await);
    assert_close(&f32s(&raw), &reference);

    // An output's own `binary_data: false` wins over the request's default.
    let body = json!({
        "inputs": [{"name": "images", "shape": [2, 1, 8, 8], "datatype": "FP32", "data": flat}],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": false}}],
        "parameters": {"binary_data_output": true}
    });
    let reply = post_json(&app, "/v2/models/digits/infer", &body).await;
    assert_eq!(reply.headers["content-type"], "application/json");
    assert_close(&floats(&reply.json()["outputs"][0]["data"]), &reference);
}

#[tokio::test]
async fn embedder_infer_matches_the_embed_route_in_json_and_binary() {
    let (fx, _dir) = fixture_with_embedder();
    let (app, _) = ready_app(&fx, &ServerConfig::default());
    let texts = ["the cat", "a dog sat on the mat", "émigré ☕"];
    let own = post_json(&app, "/v1/models/texts/embed", &json!({"inputs": texts})).await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.text());
    let reference: Vec<f32> =
        own.json()["embeddings"].as_array().expect("embeddings").iter().flat_map(floats).collect();

    let body = json!({"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "data": texts}]});
    let reply = post_json(&app, "/v2/models/texts/infer", &body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_documented(INFER, "POST", reply.status);
    let answer = reply.json();
    assert_eq!(answer["model_name"], "texts");
    assert_eq!(answer["model_version"], "1");
    assert_eq!(answer["outputs"][0]["name"], "embeddings");
    assert_eq!(answer["outputs"][0]["shape"], json!([3, 32]));
    assert_close(&floats(&answer["outputs"][0]["data"]), &reference);

    let raw = byte_elements(&texts.map(str::as_bytes));
    let header = json!({
        "inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "parameters": {"binary_data_size": raw.len()}}],
        "outputs": [{"name": "embeddings", "parameters": {"binary_data": true}}]
    });
    let reply = post_binary(&app, "/v2/models/texts/versions/1/infer", &header, &raw).await;
    assert_documented(VERSION_INFER, "POST", reply.status);
    let (answer, bytes) = split_binary(&reply);
    assert_eq!(answer["outputs"][0]["parameters"]["binary_data_size"], 3 * 32 * 4);
    assert_close(&f32s(&bytes), &reference);
}

/// One bad request: where, what, and the answer it must get.
struct Case {
    uri: &'static str,
    body: Value,
    status: u16,
    kind: &'static str,
    says: &'static str,
}

fn case(uri: &'static str, body: Value, status: u16, kind: &'static str, says: &'static str) -> Case {
    Case { uri, body, status, kind, says }
}

/// A bad binary request: its JSON header in `case.body`, and the raw bytes after it.
struct BinaryCase {
    case: Case,
    raw: Vec<u8>,
}

fn binary_case(
    uri: &'static str,
    header: Value,
    raw: Vec<u8>,
    status: u16,
    kind: &'static str,
    says: &'static str,
) -> BinaryCase {
    BinaryCase { case: case(uri, header, status, kind, says), raw }
}

/// `tensor` with the fields of `extra` added.
fn with(tensor: &Value, extra: Value) -> Value {
    let mut merged = tensor.clone();
    for (key, value) in extra.as_object().expect("an object") {
        merged[key] = value.clone();
    }
    merged
}

fn images_input(shape: Value, datatype: &str, data: Value) -> Value {
    json!({"inputs": [{"name": "images", "shape": shape, "datatype": datatype, "data": data}]})
}

#[tokio::test]
async fn bad_json_requests_answer_documented_errors_in_the_protocols_shape() {
    let (fx, _dir) = fixture_with_embedder();
    let config = ServerConfig { max_inputs: 3, max_input_chars: 10, ..ServerConfig::default() };
    let (app, _) = ready_app(&fx, &config);
    let ones = |n: usize| json!(vec![1.0; n]);
    let digits = "/v2/models/digits/infer";
    let texts = "/v2/models/texts/infer";
    let good = json!({"name": "images", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": ones(64)});
    let mut too_bright = vec![1.0; 64];
    too_bright[5] = 300.0;
    let cases = [
        case(
            digits,
            images_input(json!([1, 1, 8, 8]), "INT64", ones(64)),
            422,
            "invalid_input",
            "datatype INT64 is not accepted; send FP32 or UINT8",
        ),
        case(
            digits,
            images_input(json!([1, 1, 8, 8]), "FLOAT", ones(64)),
            422,
            "invalid_input",
            "unknown variant `FLOAT`",
        ),
        case(
            digits,
            images_input(json!([1, 1, 4, 4]), "FP32", ones(16)),
            422,
            "invalid_input",
            "does not match [-1, 1, 8, 8]",
        ),
        case(digits, images_input(json!([1, 8, 8]), "FP32", ones(64)), 422, "invalid_input", "does not match"),
        case(
            digits,
            images_input(json!([1, 1, 8, 8]), "FP32", ones(63)),
            422,
            "invalid_input",
            "63 elements sent, but shape [1, 1, 8, 8] holds 64",
        ),
        case(
            digits,
            images_input(json!([1, 1, 8, 8]), "FP32", json!(too_bright)),
            422,
            "invalid_input",
            "image 0: pixel 5 = 300",
        ),
        case(
            digits,
            images_input(json!([1, 1, 8, 8]), "UINT8", json!(vec![256; 64])),
            422,
            "invalid_input",
            "not a UINT8 value",
        ),
        case(
            digits,
            images_input(json!([1, 1, 8, 8]), "FP32", json!(vec!["a"; 64])),
            422,
            "invalid_input",
            "not a FP32 value",
        ),
        case(digits, images_input(json!([0, 1, 8, 8]), "FP32", json!([])), 422, "invalid_input", "the batch is empty"),
        case(
            digits,
            images_input(json!([4, 1, 8, 8]), "FP32", ones(256)),
            413,
            "too_many_inputs",
            "a batch of 4, at most 3",
        ),
        case(
            digits,
            images_input(json!([-1, 1, 8, 8]), "FP32", ones(64)),
            422,
            "invalid_input",
            "invalid request body",
        ),
        case(
            digits,
            json!({"inputs": [{"name": "pixels", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": ones(64)}]}),
            422,
            "invalid_input",
            "input \"pixels\": is not an input of this model, which takes \"images\"",
        ),
        case(digits, json!({"inputs": []}), 422, "invalid_input", "inputs must hold the input \"images\""),
        case(
            digits,
            json!({"inputs": [{"name": "images", "shape": [1, 1, 8, 8], "datatype": "FP32"}]}),
            422,
            "invalid_input",
            "has no data",
        ),
        case(
            digits,
            json!({"inputs": [with(&good, json!({"parameters": {"binary_data_size": 256}}))]}),
            422,
            "invalid_input",
            "not both",
        ),
        case(digits, json!({"input": []}), 422, "invalid_input", "unknown field `input`"),
        case(digits, json!({"inputs": [good, good]}), 422, "invalid_input", "is sent twice"),
        case(
            digits,
            json!({"inputs": [good], "outputs": [{"name": "logits"}]}),
            422,
            "invalid_input",
            "output \"logits\" is not an output of this model, which answers \"probabilities\"",
        ),
        case(
            digits,
            json!({"inputs": [good], "outputs": [{"name": "probabilities", "parameters": {"classification": 3}}]}),
            422,
            "invalid_input",
            "classification extension",
        ),
        case(
            digits,
            json!({"inputs": [good], "parameters": {"binary_data_output": "yes"}}),
            422,
            "invalid_input",
            "invalid type",
        ),
        case(
            texts,
            json!({"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]}),
            422,
            "invalid_input",
            "datatype FP32 is not accepted; send BYTES",
        ),
        case(
            texts,
            json!({"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": ["a"]}]}),
            422,
            "invalid_input",
            "does not match [-1]",
        ),
        case(
            texts,
            json!({"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a", 2]}]}),
            422,
            "invalid_input",
            "element 1 is 2, not a string",
        ),
        case(
            texts,
            json!({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["far too long a text"]}]}),
            422,
            "invalid_input",
            "text[0] is longer than 10 characters",
        ),
        case(
            "/v2/models/ghost/infer",
            images_input(json!([1, 1, 8, 8]), "FP32", ones(64)),
            404,
            "not_found",
            "no model named \"ghost\"",
        ),
        case(
            "/v2/models/digits/versions/7/infer",
            images_input(json!([1, 1, 8, 8]), "FP32", ones(64)),
            404,
            "not_found",
            "no model named \"digits@7\"",
        ),
    ];
    for Case { uri, body, status, kind, says } in cases {
        let reply = post_json(&app, uri, &body).await;
        let message = reply.assert_inference_error(status, kind);
        assert!(message.contains(says), "{uri} {body}: {message:?} does not say {says:?}");
        let template = if uri.contains("/versions/") { VERSION_INFER } else { INFER };
        assert_documented(template, "POST", reply.status);
    }

    let reply = post_bytes(&app, digits, "application/json", b"{\"inputs\": [".to_vec()).await;
    assert!(reply.assert_inference_error(400, "invalid_json").starts_with("malformed json"));
    assert_documented(INFER, "POST", reply.status);
}

#[tokio::test]
async fn bad_binary_requests_answer_documented_errors() {
    let (fx, _dir) = fixture_with_embedder();
    let (app, _) = ready_app(&fx, &ServerConfig::default());
    let digits = "/v2/models/digits/infer";
    let binary_images = |size: usize| {
        let tensor = json!({"name": "images", "shape": [1, 1, 8, 8], "datatype": "FP32"});
        json!({"inputs": [with(&tensor, json!({"parameters": {"binary_data_size": size}}))]})
    };
    let mut nan = vec![1.0f32; 64];
    nan[9] = f32::NAN;

    let texts = "/v2/models/texts/infer";
    let one_text = |size: usize| {
        let tensor = json!({"name": "text", "shape": [1], "datatype": "BYTES"});
        json!({"inputs": [with(&tensor, json!({"parameters": {"binary_data_size": size}}))]})
    };
    let cases = [
        binary_case(digits, binary_images(256), f32_bytes(&nan), 422, "invalid_input", "image 0: pixel 9 = NaN"),
        binary_case(
            digits,
            binary_images(256),
            vec![0; 200],
            400,
            "bad_request",
            "only 200 bytes of binary data are left",
        ),
        binary_case(
            digits,
            binary_images(256),
            vec![0; 260],
            400,
            "bad_request",
            "4 bytes follow the last binary input",
        ),
        binary_case(digits, binary_images(252), vec![0; 252], 422, "invalid_input", "binary_data_size is 252 bytes"),
        binary_case(
            texts,
            one_text(6),
            byte_elements(&[&[0xff, 0xfe]]),
            422,
            "invalid_input",
            "element 0 is not UTF-8 text",
        ),
        binary_case(
            texts,
            one_text(6),
            vec![9, 0, 0, 0, b'a', b'b'],
            422,
            "invalid_input",
            "element 0 is 9 bytes long, but only 2 bytes are left",
        ),
    ];
    for BinaryCase { case: Case { uri, body: header, status, kind, says }, raw } in cases {
        let reply = post_binary(&app, uri, &header, &raw).await;
        let message = reply.assert_inference_error(status, kind);
        assert!(message.contains(says), "{header}: {message:?} does not say {says:?}");
        assert_documented(INFER, "POST", reply.status);
    }

    let header = binary_images(256).to_string();
    let framed = |length: &str| {
        Request::post(digits)
            .header("inference-header-content-length", length)
            .body(Body::from(header.clone()))
            .expect("request")
    };
    let reply = send(&app, framed("many")).await;
    assert!(reply.assert_inference_error(400, "bad_request").contains("whole number of bytes"));
    let reply = send(&app, framed("100000")).await;
    assert!(reply.assert_inference_error(400, "bad_request").contains("the body has only"));

    let gzip = Request::post(digits).header("content-encoding", "gzip").body(Body::from(header)).expect("request");
    let reply = send(&app, gzip).await;
    assert!(reply.assert_inference_error(415, "unsupported_media_type").contains("\"gzip\""));
    assert_documented(INFER, "POST", reply.status);
}

#[tokio::test]
async fn layers_answer_v2_paths_in_the_protocols_shape() {
    let fx = fixture();
    let config = ServerConfig { body_limit_bytes: 1024, api_key: Some("s3cret".to_owned()), ..ServerConfig::default() };
    let (app, _) = ready_app(&fx, &config);
    let authorized = |req: axum::http::request::Builder| req.header("authorization", "Bearer s3cret");

    let reply = get(&app, "/v2/models/digits").await;
    reply.assert_inference_error(401, "unauthorized");
    assert_eq!(reply.headers["www-authenticate"], "Bearer");
    assert_documented("/v2/models/{name}", "GET", reply.status);
    let reply = post_json(&app, "/v2/models/digits/infer", &json!({"inputs": []})).await;
    reply.assert_inference_error(401, "unauthorized");
    assert_documented(INFER, "POST", reply.status);
    for open in ["/v2", "/v2/health/live", "/v2/health/ready"] {
        assert_eq!(get(&app, open).await.status, StatusCode::OK, "{open}");
    }
    let metadata = authorized(Request::get("/v2/models/digits")).body(Body::empty()).expect("request");
    assert_eq!(send(&app, metadata).await.status, StatusCode::OK);

    let big = authorized(Request::post("/v2/models/digits/infer")).body(Body::from(vec![b' '; 4096])).expect("request");
    let reply = send(&app, big).await;
    reply.assert_inference_error(413, "payload_too_large");
    assert_documented(INFER, "POST", reply.status);

    let wrong_method = authorized(Request::get("/v2/models/digits/infer")).body(Body::empty()).expect("request");
    let reply = send(&app, wrong_method).await;
    reply.assert_inference_error(405, "method_not_allowed");
    assert_eq!(reply.headers["allow"], "POST");
    assert_documented(INFER, "POST", reply.status);
}

#[tokio::test]
async fn v2_inference_is_counted_against_the_model() {
    let fx = fixture();
    let dir = tempfile::tempdir().expect("temp dir");
    let bundle = tandem_runtime::testing::write_tiny_classifier_bundle(dir.path(), "metered", "2").expect("bundle");
    fx.runtime.load(&bundle).expect("loads");
    let (app, _) = ready_app(&fx, &ServerConfig::default());
    let body = images_input(json!([1, 1, 8, 8]), "FP32", json!(vec![1.0; 64]));
    assert_eq!(post_json(&app, "/v2/models/metered/infer", &body).await.status, StatusCode::OK);
    let bad = images_input(json!([1, 1, 8, 8]), "INT8", json!(vec![1; 64]));
    post_json(&app, "/v2/models/metered/infer", &bad).await.assert_inference_error(422, "invalid_input");

    let text = get(&app, "/metrics").await.text();
    let counted = |status: &str| {
        text.lines().any(|l| {
            l.starts_with("tandem_model_requests_total{")
                && l.contains("model=\"metered@2\"")
                && l.contains(&format!("status=\"{status}\""))
        })
    };
    assert!(counted("200") && counted("422"), "{text}");
    assert!(text.contains("route=\"/v2/models/{name}/infer\""), "{text}");
}
