//! In-process tests through `oneshot`: every route, both classify body forms and every error path.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};
use tandem_server::{app, AppState, ServerConfig};

use crate::common::*;

const CLASSIFY: &str = "/v1/models/{id}/classify";

#[tokio::test]
async fn liveness_is_always_ok() {
    let fx = fixture();
    let state = AppState::new(fx.runtime.clone(), &ServerConfig::default());
    let reply = get(&app(state), "/health/live").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), json!({"status": "live"}));
    assert_documented("/health/live", "GET", reply.status);
}

#[tokio::test]
async fn readiness_follows_warmup_and_drain() {
    let fx = fixture();
    let state = AppState::new(fx.runtime.clone(), &ServerConfig::default());
    let app = app(state.clone());

    let before = get(&app, "/health/ready").await;
    before.assert_error(503, "unavailable");
    assert_documented("/health/ready", "GET", before.status);

    state.set_ready(true);
    let after = get(&app, "/health/ready").await;
    assert_eq!(after.status, StatusCode::OK);
    assert_eq!(after.json(), json!({"status": "ready"}));

    state.set_ready(false);
    get(&app, "/health/ready").await.assert_error(503, "unavailable");
}

#[tokio::test]
async fn models_are_listed_with_their_identity() {
    let fx = fixture();
    let (app, _) = ready_app(&fx, &ServerConfig::default());
    let reply = get(&app, "/v1/models").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_documented("/v1/models", "GET", reply.status);
    let body = reply.json();
    let models = body["models"].as_array().expect("models array");
    assert_eq!(models.len(), 1);
    let m = &models[0];
    assert_eq!(m["id"], format!("{MODEL_NAME}@{MODEL_VERSION}"));
    assert_eq!(m["name"], MODEL_NAME);
    assert_eq!(m["version"], MODEL_VERSION);
    assert_eq!(m["kind"], "classifier");
    assert!(m["bundle_id"].as_str().expect("string").starts_with("sha256:"));
    assert_eq!((&m["state"], &m["error"]), (&json!("ready"), &Value::Null), "{m}");
}

#[tokio::test]
async fn model_detail_by_name_and_by_id() {
    let fx = fixture();
    let (app, _) = ready_app(&fx, &ServerConfig::default());
    for id in [MODEL_NAME.to_owned(), fx.model_id.clone()] {
        let reply = get(&app, &format!("/v1/models/{id}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let d = reply.json();
        assert_eq!(d["id"], fx.model_id);
        assert_eq!(d["method"], "random-init");
        assert_eq!(d["teacher"], Value::Null);
        assert_eq!(d["labels"].as_array().expect("labels").len(), 10);
        assert_eq!(d["input"]["shape"], json!([1, 8, 8]));
        assert!(d["metrics"].is_object());
        assert!(d["params"].as_u64().expect("params") > 0);
        assert!(!d["created_at"].as_str().expect("created_at").is_empty());
    }
    let missing = get(&app, "/v1/models/nope@9").await;
    missing.assert_error(404, "not_found");
    assert_documented("/v1/models/{id}", "GET", missing.status);
}

fn assert_predictions(body: &Value, model: &str, inputs: usize, k: usize) {
    assert_eq!(body["model"], model);
    let predictions = body["predictions"].as_array().expect("predictions");
    assert_eq!(predictions.len(), inputs);
    for preds in predictions {
        let preds = preds.as_array().expect("per-input list");
        assert_eq!(preds.len(), k, "{body}");
        let scores: Vec<f64> = preds.iter().map(|p| p["score"].as_f64().expect("score")).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
        assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)), "{scores:?}");
        let mut labels: Vec<&str> = preds.iter().map(|p| p["label"].as_str().expect("label")).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), k, "labels repeat: {body}");
    }
}

#[tokio::test]
async fn classify_json_with_pixels_and_base64_images() {
    let fx = fixture();
    let (app, _) = ready_app(&fx, &ServerConfig::default());
    let body = json!({
        "inputs": [
            {"pixels": pixel_rows(8, 3.0)},
            {"image": b64(&png(8, 8, 1))},
            {"image": b64(&png(28, 20, 2))},
            {"image": b64(&jpeg(12, 12))},
        ],
        "top_k": 3
    });
    let reply = post_json(&app, &classify_uri(&fx), &body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_documented(CLASSIFY, "POST", reply.status);
    assert_predictions(&reply.json(), &fx.model_id, 4, 3);
}

#[tokio::test]
async fn classify_by_bare_name_answers_with_the_full_id() {
    let fx = fixture();
    let (app, _) = ready_app(&fx, &ServerConfig::default());
    let body = json!({"inputs": [{"pixels": pixel_rows(8, 0.0)}]});
    let reply = post_json(&app, &format!("/v1/models/{MODEL_NAME}/classify"), &body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_predictions(&reply.json(), &fx.model_id, 1, 5);
}

#[tokio::test]
async fn top_k_defaults_to_five_and_is_capped_at_the_label_count() {
    let fx = fixture();
    let (app, _) = ready_app(&fx, &ServerConfig::default());
    let one = json!({"pixels": pixel_rows(8, 9.0)});
    let reply = post_json(&app, &classify_uri(&fx), &json!({"inputs": [one.clone()]})).await;
    assert_predictions(&reply.json(), &fx.model_id, 1, 5);
    let reply = post_json(&app, &classify_uri(&fx), &json!({"inputs": [one], "top_k": 1000})).await;
    assert_predictions(&reply.json(), &fx.model_id, 1, 10);
}

/// JSON Schema counts `2.0` as an integer, so clients whose JSON writes whole numbers as floats
/// are within the contract; the query string takes the same spelling.
#[tokio::test]
async fn top_k_may_be_a_whole_number_float() {
    let fx = fixture();
    let (app, _) = ready_app(&fx, &ServerConfig::default());
    let uri = classify_uri(&fx);
    let one = json!({"pixels": pixel_rows(8, 9.0)});
    let reply = post_json(&app, &uri, &json!({"inputs": [one.clone()], "top_k": 2.0})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_predictions(&reply.json(), &fx.model_id, 1, 2);
    let reply = post_json(&app, &format!("{uri}?top_k=3.0"), &json!({"inputs": [one]})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_predictions(&reply.json(), &fx.model_id, 1, 3);
}

/// The body's `top_k` wins over the query's, but a query value outside the documented range is
/// still refused: the spec constrains the parameter whatever the body says.
#[tokio::test]
async fn body_top_k_wins_but_the_query_is_still_validated() {
    let fx = fixture();
    let (app, _) = ready_app(&fx, &ServerConfig::default());
    let uri = classify_uri(&fx);
    let body = json!({"inputs": [{"pixels": pixel_rows(8, 9.0)}], "top_k": 3});
    let reply = post_json(&app, &format!("{uri}?top_k=7"), &body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_predictions(&reply.json(), &fx.model_id, 1, 3);
    for query in ["0", "1001", "45486222980766492524544", "2.5", "-1"] {
        let reply = post_json(&app, &format!("{uri}?top_k={query}"), &body).await;
        let message = reply.assert_error(422, "invalid_input");
        assert!(message.contains("top_k: must be a whole number from 1 to 1000"), "{query}: {message}");
    }
}

#[tokio::test]
async fn classify_raw_png_and_jpeg_bodies() {
    let fx = fixture();
    let (app, _) = ready_app(&fx, &ServerConfig::default());
    let uri = format!("{}?top_k=2", classify_uri(&fx));
    let reply = post_bytes(&app, &uri, "image/png", png(8, 8, 5)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_predictions(&reply.json(), &fx.model_id, 1, 2);

    let reply = post_bytes(&app, &classify_uri(&fx), "image/jpeg", jpeg(16, 16)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_predictions(&reply.json(), &fx.model_id, 1, 5);
}

#[tokio::test]
async fn same_image_as_png_and_pixels_scores_the_same() {
    let fx = fixture();
    let (app, _) = ready_app(&fx, &ServerConfig::default());
    let img = gray(8, 8, 3);
    let rows: Vec<Vec<f64>> = img.rows().map(|row| row.map(|p| f64::from(p.0[0])).collect()).collect();
    let body = json!({"inputs": [{"pixels": rows}, {"image": b64(&png(8, 8, 3))}], "top_k": 10});
    let reply = post_json(&app, &classify_uri(&fx), &body).await;
    let body = reply.json();
    assert_eq!(body["predictions"][0], body["predictions"][1]);
}

#[tokio::test]
async fn invalid_inputs_are_422() {
    let fx = fixture();
    let (app, _) = ready_app(&fx, &ServerConfig::default());
    let uri = classify_uri(&fx);
    let px = pixel_rows(8, 0.0);
    let cases = [
        json!({"inputs": [{"pixels": px}], "top_k": 0}),
        json!({"inputs": []}),
        json!({"inputs": [{"pixels": px, "image": b64(&png(8, 8, 0))}]}),
        json!({"inputs": [{}]}),
        json!({"inputs": "nope"}),
        json!({"inputs": [{"pixels": px}], "top_k": -1}),
        json!({"inputs": [{"pixels": px}], "extra": true}),
        json!({"inputs": [{"pixels": [[0.0, 1.0], [2.0]]}]}),
        json!({"inputs": [{"pixels": [[0.0, 300.0]]}]}),
        json!({"inputs": [{"pixels": [[-1.0, 0.0]]}]}),
        json!({"inputs": [{"pixels": []}]}),
        json!({"inputs": [{"pixels": [[]]}]}),
        json!({"inputs": [{"image": null}]}),
        json!({"inputs": [{"pixels": null}]}),
        json!({"inputs": [{"image": null, "pixels": px}]}),
        json!({"inputs": [{"pixels": px}], "top_k": 2.5}),
        json!({"inputs": [{"pixels": px}], "top_k": 1001}),
        json!({"inputs": [{"pixels": px}], "top_k": 1e30}),
        json!({"inputs": [{"pixels": px}], "top_k": "3"}),
        json!([1, 2, 3]),
    ];
    for body in cases {
        let reply = post_json(&app, &uri, &body).await;
        let message = reply.assert_error(422, "invalid_input");
        assert!(!message.starts_with(char::is_uppercase), "{message}");
        assert!(!message.ends_with('.'), "{message}");
    }
    let huge = br#"{"inputs": [{"pixels": [[1]]}], "top_k": 45486222980766492524544}"#;
    post_bytes(&app, &uri, "application/json", huge.to_vec()).await.assert_error(422, "invalid_input");
    let ragged = post_json(&app, &uri, &json!({"inputs": [{"pixels": px}, {"pixels": [[1.0], []]}]})).await;
    let message = ragged.assert_error(422, "invalid_input");
    assert!(message.contains("inputs[1]"), "{message}");
    assert_documented(CLASSIFY, "POST", ragged.status);

    let zero = post_bytes(&app, &format!("{uri}?top_k=0"), "image/png", png(8, 8, 0)).await;
    zero.assert_error(422, "invalid_input");
    let junk = post_bytes(&app, &format!("{uri}?top_k=abc"), "image/png", png(8, 8, 0)).await;
    junk.assert_error(422, "invalid_input");
}

#[tokio::test]
async fn malformed_json_and_undecodable_images_are_400() {
    let fx = fixture();
    let (app, _) = ready_app(&fx, &ServerConfig::default());
    let uri = classify_uri(&fx);
    let reply = post_bytes(&app, &uri, "application/json", b"{\"inputs\": [".to_vec()).await;
    reply.assert_error(400, "invalid_json");
    assert_documented(CLASSIFY, "POST", reply.status);

    let bad_b64 = post_json(&app, &uri, &json!({"inputs": [{"image": "not base64!"}]})).await;
    let message = bad_b64.assert_error(400, "invalid_image");
    assert!(message.contains("inputs[0]"), "{message}");
    let bad_length = post_json(&app, &uri, &json!({"inputs": [{"image": "QUJDRA==="}]})).await;
    for message in [message, bad_length.assert_error(400, "invalid_image")] {
        assert!(!message.ends_with('.'), "the library's closing period leaks: {message}");
    }

    let garbage = post_json(&app, &uri, &json!({"inputs": [{"image": b64(b"GIF89a....")}]})).await;
    garbage.assert_error(400, "invalid_image");

    let mut truncated = png(8, 8, 0);
    truncated.truncate(truncated.len() / 2);
    post_bytes(&app, &uri, "image/png", truncated).await.assert_error(400, "invalid_image");
    post_bytes(&app, &uri, "image/jpeg", Vec::new()).await.assert_error(400, "invalid_image");
}

#[tokio::test]
async fn too_many_inputs_and_oversized_bodies_are_413() {
    let fx = fixture();
    let config = ServerConfig { max_inputs: 2, body_limit_bytes: 2048, ..ServerConfig::default() };
    let (app, _) = ready_app(&fx, &config);
    let uri = classify_uri(&fx);
    let one = json!({"pixels": [[1.0, 2.0], [3.0, 4.0]]});
    let reply = post_json(&app, &uri, &json!({"inputs": [one, one, one]})).await;
    reply.assert_error(413, "too_many_inputs");
    assert_documented(CLASSIFY, "POST", reply.status);

    let big = json!({"inputs": [{"pixels": pixel_rows(40, 0.0)}]});
    assert!(big.to_string().len() > 2048);
    post_json(&app, &uri, &big).await.assert_error(413, "payload_too_large");
    post_bytes(&app, &uri, "image/png", vec![0u8; 4096]).await.assert_error(413, "payload_too_large");
}

#[tokio::test]
async fn other_content_types_are_415() {
    let fx = fixture();
    let (app, _) = ready_app(&fx, &ServerConfig::default());
    let uri = classify_uri(&fx);
    let reply = post_bytes(&app, &uri, "text/plain", b"hello".to_vec()).await;
    reply.assert_error(415, "unsupported_media_type");
    assert_documented(CLASSIFY, "POST", reply.status);
    post_bytes(&app, &uri, "image/gif", b"GIF89a".to_vec()).await.assert_error(415, "unsupported_media_type");
    let no_type = Request::post(&uri).body(Body::from("{}")).expect("request");
    send(&app, no_type).await.assert_error(415, "unsupported_media_type");
}

#[tokio::test]
async fn unknown_models_and_routes_are_404() {
    let fx = fixture();
    let (app, _) = ready_app(&fx, &ServerConfig::default());
    let body = json!({"inputs": [{"pixels": pixel_rows(8, 0.0)}]});
    let reply = post_json(&app, "/v1/models/ghost/classify", &body).await;
    reply.assert_error(404, "not_found");
    assert_documented(CLASSIFY, "POST", reply.status);
    get(&app, "/v3/nothing").await.assert_error(404, "not_found");
    get(&app, "/").await.assert_error(404, "not_found");
}

#[tokio::test]
async fn wrong_methods_are_405_in_the_error_shape() {
    let fx = fixture();
    let (app, _) = ready_app(&fx, &ServerConfig::default());
    let reply = get(&app, &classify_uri(&fx)).await;
    reply.assert_error(405, "method_not_allowed");
    assert_eq!(reply.headers["allow"], "POST");
    assert_documented(CLASSIFY, "POST", reply.status);

    let delete = Request::delete("/v1/models").body(Body::empty()).expect("request");
    send(&app, delete).await.assert_error(405, "method_not_allowed");
    let post_live = Request::post("/health/live").body(Body::empty()).expect("request");
    let reply = send(&app, post_live).await;
    reply.assert_error(405, "method_not_allowed");
    assert!(reply.headers["allow"].to_str().expect("ascii").contains("GET"));
    let post_metrics = Request::post("/metrics").body(Body::empty()).expect("request");
    send(&app, post_metrics).await.assert_error(405, "method_not_allowed");
}

#[tokio::test]
async fn api_key_guards_v1_and_metrics_but_not_probes_or_docs() {
    let fx = fixture();
    let config = ServerConfig { api_key: Some("s3cret".to_owned()), ..ServerConfig::default() };
    let (app, _) = ready_app(&fx, &config);

    let reply = get(&app, "/v1/models").await;
    reply.assert_error(401, "unauthorized");
    assert_eq!(reply.headers["www-authenticate"], "Bearer");
    assert_documented("/v1/models", "GET", reply.status);

    let wrong = Request::get("/v1/models").header("authorization", "Bearer nope").body(Body::empty()).expect("request");
    send(&app, wrong).await.assert_error(401, "unauthorized");

    let body = json!({"inputs": [{"pixels": pixel_rows(8, 0.0)}]});
    let unauth = post_json(&app, &classify_uri(&fx), &body).await;
    unauth.assert_error(401, "unauthorized");
    assert_documented(CLASSIFY, "POST", unauth.status);

    let right =
        Request::get("/v1/models").header("authorization", "Bearer s3cret").body(Body::empty()).expect("request");
    assert_eq!(send(&app, right).await.status, StatusCode::OK);

    for open in ["/health/live", "/health/ready", "/openapi.json"] {
        assert_eq!(get(&app, open).await.status, StatusCode::OK, "{open}");
    }
    // Metrics name the models and their traffic: behind the key unless made public.
    let metrics = get(&app, "/metrics").await;
    metrics.assert_error(401, "unauthorized");
    assert_documented("/metrics", "GET", metrics.status);
    let scrape =
        Request::get("/metrics").header("authorization", "Bearer s3cret").body(Body::empty()).expect("request");
    assert_eq!(send(&app, scrape).await.status, StatusCode::OK);
    let public = ServerConfig { public_metrics: true, ..config };
    let (app, _) = ready_app(&fx, &public);
    assert_eq!(get(&app, "/metrics").await.status, StatusCode::OK);
}

/// The `dur` of `name` in a `Server-Timing` header, in milliseconds.
fn timing_of(reply: &Reply, name: &str) -> f64 {
    let header = reply.headers["server-timing"].to_str().expect("ascii");
    let entry = header.split(", ").find(|e| e.starts_with(&format!("{name};"))).unwrap_or_else(|| panic!("{header}"));
    entry.split_once("dur=").expect("dur").1.parse().expect("number")
}

#[tokio::test]
async fn server_timing_reports_queue_inference_and_total() {
    let fx = fixture();
    let (app, _) = ready_app(&fx, &ServerConfig::default());
    let body = json!({"inputs": [{"pixels": pixel_rows(8, 3.0)}]});
    let miss = post_json(&app, &classify_uri(&fx), &body).await;
    assert_eq!(miss.status, StatusCode::OK);
    assert!(timing_of(&miss, "inference") > 0.0);
    assert!(timing_of(&miss, "total") >= timing_of(&miss, "inference"));
    let hit = post_json(&app, &classify_uri(&fx), &body).await;
    assert_eq!(timing_of(&hit, "inference"), 0.0, "a cached answer runs nothing");
    assert_eq!(timing_of(&hit, "queue"), 0.0);
    let probe = get(&app, "/health/live").await;
    assert!(timing_of(&probe, "total") >= 0.0);
}

#[tokio::test]
async fn images_past_the_pixel_limits_are_refused_from_their_headers() {
    let fx = fixture();
    let config = ServerConfig { max_image_pixels: 64 * 64, max_request_pixels: 3 * 32 * 32, ..ServerConfig::default() };
    let (app, _) = ready_app(&fx, &config);
    let big = png(512, 512, 0);
    let reply = post_bytes(&app, &classify_uri(&fx), "image/png", big.clone()).await;
    let message = reply.assert_error(413, "image_too_large");
    assert!(message.contains("512x512"), "{message}");
    assert_documented(CLASSIFY, "POST", reply.status);
    let body = json!({"inputs": [{"image": b64(&big)}]});
    let message = post_json(&app, &classify_uri(&fx), &body).await.assert_error(413, "image_too_large");
    assert!(message.starts_with("inputs[0]: 512x512"), "{message}");
    let many = json!({"inputs": vec![json!({"image": b64(&png(32, 32, 1))}); 4]});
    let message = post_json(&app, &classify_uri(&fx), &many).await.assert_error(413, "image_too_large");
    assert!(message.contains("per request"), "{message}");
    let fits = json!({"inputs": vec![json!({"image": b64(&png(32, 32, 1))}); 3]});
    assert_eq!(post_json(&app, &classify_uri(&fx), &fits).await.status, StatusCode::OK);
}

#[tokio::test]
async fn request_ids_are_set_or_propagated() {
    let fx = fixture();
    let (app, _) = ready_app(&fx, &ServerConfig::default());
    let generated = get(&app, "/health/live").await;
    let id = generated.headers["x-request-id"].to_str().expect("ascii");
    assert_eq!(id.len(), 36, "{id}");

    let other = get(&app, "/health/live").await;
    assert_ne!(other.headers["x-request-id"], generated.headers["x-request-id"]);

    let given = Request::get("/v1/models/ghost")
        .header("x-request-id", "client-chosen-42")
        .body(Body::empty())
        .expect("request");
    let reply = send(&app, given).await;
    reply.assert_error(404, "not_found");
    assert_eq!(reply.headers["x-request-id"], "client-chosen-42");
}

#[tokio::test]
async fn cors_headers_only_when_configured() {
    let fx = fixture();
    let origin = "https://dashboard.test";
    let with_origin = || Request::get("/v1/models").header("origin", origin).body(Body::empty()).expect("request");

    let (plain, _) = ready_app(&fx, &ServerConfig::default());
    let reply = send(&plain, with_origin()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.headers.get("access-control-allow-origin").is_none());

    let config = ServerConfig { cors_origins: vec![origin.to_owned()], ..ServerConfig::default() };
    let (cors, _) = ready_app(&fx, &config);
    let reply = send(&cors, with_origin()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["access-control-allow-origin"], origin);

    let preflight = Request::options(classify_uri(&fx))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .body(Body::empty())
        .expect("request");
    let reply = send(&cors, preflight).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["access-control-allow-origin"], origin);
    let methods = reply.headers["access-control-allow-methods"].to_str().expect("ascii");
    assert!(methods.contains("POST"), "{methods}");

    let stranger =
        Request::get("/v1/models").header("origin", "https://elsewhere.test").body(Body::empty()).expect("request");
    let reply = send(&cors, stranger).await;
    assert!(reply.headers.get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn metrics_expose_http_model_and_runtime_series() {
    let fx = fixture();
    let (app, _) = ready_app(&fx, &ServerConfig::default());
    let body = json!({"inputs": [{"pixels": pixel_rows(8, 77.0)}]});
    for _ in 0..2 {
        let reply = post_json(&app, &classify_uri(&fx), &body).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    get(&app, "/v1/models/ghost").await;
    get(&app, "/no/such/route").await;

    let reply = get(&app, "/metrics").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_documented("/metrics", "GET", reply.status);
    assert_eq!(reply.headers["content-type"], "text/plain; version=0.0.4");
    let text = reply.text();
    for needle in [
        "# TYPE tandem_http_requests_total counter",
        "# TYPE tandem_http_request_duration_seconds histogram",
        "tandem_http_request_duration_seconds_bucket{",
        "route=\"/v1/models/{id}/classify\"",
        "route=\"/v1/models/{id}\"",
        "route=\"unmatched\"",
        "status=\"404\"",
        "tandem_model_requests_total{",
        &format!("model=\"{}\"", fx.model_id),
        "tandem_cache_hits_total",
        "tandem_cache_misses_total",
        "# TYPE tandem_batch_size histogram",
        "# TYPE tandem_inference_seconds histogram",
        "tandem_queue_depth",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert!(!text.contains("route=\"/no/such/route\""));
}

#[tokio::test]
async fn openapi_and_swagger_ui_are_served() {
    let fx = fixture();
    let (app, _) = ready_app(&fx, &ServerConfig::default());
    let reply = get(&app, "/openapi.json").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_documented("/openapi.json", "GET", reply.status);
    let served = reply.json();
    let generated: Value = serde_json::from_str(&tandem_server::openapi_json()).expect("spec is JSON");
    assert_eq!(served, generated);

    let reply = get(&app, "/docs").await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_documented("/docs", "GET", reply.status);
    assert_eq!(reply.headers["location"], "/docs/");
    let ui = get(&app, "/docs/").await;
    assert_eq!(ui.status, StatusCode::OK);
    assert!(ui.text().contains("swagger"), "{}", ui.text());
    let config = get(&app, "/docs/swagger-initializer.js").await;
    assert_eq!(config.status, StatusCode::OK);
    assert!(config.text().contains("/openapi.json"), "{}", config.text());
    get(&app, "/docs/no-such-file.js").await.assert_error(404, "not_found");
}
