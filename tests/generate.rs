//! Image generation end to end: `POST /v1/models/{id}/generate` of a live `tandem serve` over tiny
//! random `diffusion` and `consistency` bundles (PNGs in JSON or raw, determinism by seed, the
//! generation limits from a flag and a variable, and every refusal in the error shape).

use base64::Engine;
use serde_json::{json, Value};

use crate::common::*;

/// The `--max-generate-steps` of the served models; the diffusion default of 10 steps fits.
const MAX_STEPS: usize = 12;
/// The `TANDEM_MAX_GENERATE_IMAGES` of the served models.
const MAX_IMAGES: usize = 4;

/// A server with `ddpm@1` (diffusion), `cm@1` (consistency) and `digits@1` (a classifier).
fn serve(dir: &std::path::Path) -> Server {
    let ddpm = tandem_runtime::testing::write_tiny_diffusion_bundle(dir, "ddpm").expect("a tiny diffusion bundle");
    let cm = tandem_runtime::testing::write_tiny_consistency_bundle(dir, "cm").expect("a tiny consistency bundle");
    let digits =
        tandem_runtime::testing::write_tiny_classifier_bundle(dir, "digits", "1").expect("a tiny classifier bundle");
    let images = MAX_IMAGES.to_string();
    Server::start_with(&[("TANDEM_MAX_GENERATE_IMAGES", images.as_str())], |cmd| {
        for bundle in [&ddpm, &cm, &digits] {
            cmd.arg("--model").arg(bundle);
        }
        let port = free_port();
        cmd.args(["--max-generate-steps", &MAX_STEPS.to_string(), "--port", &port.to_string()]);
        port
    })
}

fn post(http: &Http, server: &Server, path: &str, body: &Value) -> Reply {
    http.ok(http.client().post(server.url(path)).json(body))
}

/// The images of a JSON answer, decoded from base64 PNG, checked to be 28x28 grayscale.
#[track_caller]
fn pngs(reply: &Reply) -> Vec<Vec<u8>> {
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    let images = body["images"].as_array().expect("images");
    images
        .iter()
        .map(|image| {
            let png = base64::engine::general_purpose::STANDARD
                .decode(image["png_base64"].as_str().expect("png_base64"))
                .expect("standard base64");
            let decoded = image::load_from_memory_with_format(&png, image::ImageFormat::Png).expect("a PNG");
            assert_eq!((decoded.width(), decoded.height()), (28, 28));
            png
        })
        .collect()
}

#[test]
fn generate_answers_pngs_in_json_or_raw_the_same_for_the_same_seed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = serve(dir.path());
    let http = Http::new();
    let path = "/v1/models/ddpm/generate";

    let body = json!({
        "class": 3, "n": 3, "steps": 3, "sampler": "dpmpp2m", "seed": 42, "guidance": 2.0,
        "dualfast": {"tau": "first", "c_max": 0.3, "schedule": "linear", "space": "eps"}
    });
    let first = post(&http, &server, path, &body);
    let images = pngs(&first);
    assert_eq!(images.len(), 3);
    assert_eq!((first.json()["model"].as_str(), first.json()["nfe"].as_u64()), (Some("ddpm@1"), Some(3)));
    assert_ne!(images[0], images[1], "two images, two noises");
    assert_eq!(pngs(&post(&http, &server, path, &body)), images, "the same seed gives the same bytes");
    let reseeded = json!({"class": 3, "n": 3, "steps": 3, "seed": 43, "guidance": 2.0, "dualfast": {}});
    assert_ne!(pngs(&post(&http, &server, path, &reseeded))[0], images[0], "another seed, another image");

    // One image and `Accept: image/png`: the PNG itself, image 0 of the same request.
    let one = json!({"class": 3, "n": 1, "steps": 3, "seed": 42, "guidance": 2.0, "dualfast": {}});
    let raw = http.ok(http.client().post(server.url(path)).header("accept", "image/png").json(&one));
    assert_eq!(raw.status, 200, "{}", raw.text());
    assert_eq!(raw.header("content-type").as_deref(), Some("image/png"));
    assert_eq!(raw.body, images[0]);
    // JSON when the client prefers it, or when there is more than one image.
    let json_first = "application/json, image/png;q=0.5";
    let preferred = http.ok(http.client().post(server.url(path)).header("accept", json_first).json(&one));
    assert_eq!(pngs(&preferred), [images[0].clone()]);
    let many = http.ok(http.client().post(server.url(path)).header("accept", "image/png").json(&body));
    assert_eq!(pngs(&many), images);

    // Every field has a default: one unconditional image, 10 dpmpp2m steps or 1 consistency step.
    let defaults = post(&http, &server, path, &json!({}));
    assert_eq!((pngs(&defaults).len(), defaults.json()["nfe"].as_u64()), (1, Some(10)));
    let consistency = post(&http, &server, "/v1/models/cm/generate", &json!({}));
    assert_eq!((pngs(&consistency).len(), consistency.json()["nfe"].as_u64()), (1, Some(1)));
    let two = post(&http, &server, "/v1/models/cm/generate", &json!({"class": 1, "n": 2, "sigmas": [80.0, 0.8]}));
    assert_eq!((pngs(&two).len(), two.json()["nfe"].as_u64()), (2, Some(2)));

    // The model lists the route, and the limits hold exactly at their values.
    let detail = http.ok(http.client().get(server.url("/v1/models/cm"))).json();
    assert_eq!(detail["routes"], json!(["POST /v1/models/{id}/generate"]), "{detail}");
    let at_limits = json!({"n": MAX_IMAGES, "steps": MAX_STEPS, "sampler": "ddim"});
    assert_eq!(pngs(&post(&http, &server, path, &at_limits)).len(), MAX_IMAGES);
}

#[test]
fn generate_refuses_bad_requests_in_the_error_shape() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = serve(dir.path());
    let http = Http::new();
    let ddpm = "/v1/models/ddpm/generate";
    let cm = "/v1/models/cm/generate";

    // (path, body, what the message must hold)
    let invalid: &[(&str, Value, &str)] = &[
        (ddpm, json!({"sampler": "euler"}), "ddim, dpmpp2m, dpmpp3m, unipc, unipc-bh1"),
        (ddpm, json!({"steps": 0}), "steps"),
        (ddpm, json!({"steps": MAX_STEPS + 1}), "max_generate_steps"),
        (cm, json!({"steps": MAX_STEPS + 1}), "max_generate_steps"),
        (ddpm, json!({"n": MAX_IMAGES + 1}), "max_generate_images"),
        (ddpm, json!({"n": 0}), "n"),
        (ddpm, json!({"sampler": "consistency"}), "consistency model"),
        (cm, json!({"sampler": "ddim"}), "consistency"),
        (ddpm, json!({"class": 10}), "out of range"),
        (ddpm, json!({"class": 99_999_999_999u64}), "out of range"),
        (ddpm, json!({"dualfast": {"tau": "last"}}), "first, previous"),
        (ddpm, json!({"dualfast": {"schedule": "cosine"}}), "linear, constant"),
        (ddpm, json!({"dualfast": {"space": "v"}}), "eps, x0"),
        (ddpm, json!({"dualfast": {"c_max": 2.0}}), "c_max"),
        (ddpm, json!({"guidance": -1.0}), "guidance"),
        (ddpm, json!({"sigmas": [80.0]}), "sigmas"),
        (cm, json!({"dualfast": {}}), "diffusion models only"),
        (cm, json!({"steps": 3}), "give sigmas"),
        (ddpm, json!({"images": 2}), "unknown field"),
        (ddpm, json!({"dualfast": {"c": 0.1}}), "unknown field"),
        (ddpm, json!({"seed": "seven"}), "seed"),
    ];
    for (path, body, expect) in invalid {
        let reply = post(&http, &server, path, body);
        let message = assert_error(&reply, 422, "invalid_input");
        assert!(message.contains(expect), "{path} {body}: {message:?} does not hold {expect:?}");
    }

    // A model of another kind: 422 naming its routes, and for generators over `/v2` as well.
    let wrong = post(&http, &server, "/v1/models/digits/generate", &json!({}));
    let message = assert_error(&wrong, 422, "invalid_input");
    assert!(message.contains("POST /v1/models/{id}/classify"), "{message}");
    let inputs = json!({"inputs": [{"pixels": vec![vec![0.0; 8]; 8]}]});
    let classify = post(&http, &server, "/v1/models/ddpm/classify", &inputs);
    assert!(assert_error(&classify, 422, "invalid_input").contains("POST /v1/models/{id}/generate"));
    let tensor = json!({"inputs": [{"name": "images", "datatype": "FP32", "shape": [1], "data": [0.0]}]});
    for path in ["/v2/models/ddpm/infer", "/v2/models/cm/infer", "/v2/models/cm", "/v2/models/ddpm/ready"] {
        let reply = if path.ends_with("infer") {
            post(&http, &server, path, &tensor)
        } else {
            http.ok(http.client().get(server.url(path)))
        };
        assert_eq!(reply.status, 422, "{path}: {}", reply.text());
        let body = reply.json();
        assert_eq!(body["type"], "invalid_input", "{path}: {body}");
        let message = body["error"].as_str().expect("the protocol's error string");
        assert!(message.contains("POST /v1/models/{id}/generate"), "{path}: {message}");
    }

    let missing = post(&http, &server, "/v1/models/nothing/generate", &json!({}));
    assert_error(&missing, 404, "not_found");
    let malformed =
        http.ok(http.client().post(server.url(ddpm)).header("content-type", "application/json").body("{\"n\": "));
    assert_error(&malformed, 400, "invalid_json");
    let text = http.ok(http.client().post(server.url(ddpm)).header("content-type", "text/plain").body("{}"));
    assert_error(&text, 415, "unsupported_media_type");
}
