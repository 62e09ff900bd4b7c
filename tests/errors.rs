//! Every documented error status through the real binary over a socket, each with the one JSON
//! error shape.

use serde_json::{json, Value};

use crate::common::*;

const KEY: &str = "k";

fn pixels(value: u8) -> Value {
    json!({"pixels": vec![vec![value; 8]; 8]})
}

#[test]
fn client_errors_have_their_status_and_the_error_shape() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bundle = train_bundle(dir.path(), "guarded");
    let path = bundle.to_str().expect("UTF-8 path");
    let server = Server::start(&[
        "--model",
        path,
        "--api-key",
        KEY,
        "--body-limit-bytes",
        "1000",
        "--max-inputs",
        "2",
        "--max-image-pixels",
        "4096",
        "--body-read-timeout-ms",
        "500",
    ]);
    let http = Http::new();
    let c = http.client();
    let classify = server.url("/v1/models/guarded/classify");
    let authed = |req: reqwest::RequestBuilder| req.bearer_auth(KEY);
    let json_body =
        |text: &str| authed(c.post(&classify)).header("content-type", "application/json").body(text.to_owned());

    // The key works, and the probes and docs stay open without it; metrics need it.
    let ok = http.ok(authed(c.post(&classify)).json(&json!({"inputs": [pixels(7)]})));
    assert_eq!(ok.status, 200, "{}", ok.text());
    for open in ["/health/live", "/health/ready", "/openapi.json"] {
        assert_eq!(http.ok(c.get(server.url(open))).status, 200, "{open} needs no key");
    }
    assert_error(&http.ok(c.get(server.url("/metrics"))), 401, "unauthorized");
    assert_eq!(http.ok(authed(c.get(server.url("/metrics")))).status, 200);

    // 400
    assert_error(&http.ok(json_body(r#"{"inputs": [{"pixels": [[1, 2]"#)), 400, "invalid_json");
    assert_error(&http.ok(json_body(r#"{"inputs": [{"image": "***not base64***"}]}"#)), 400, "invalid_image");
    let garbage = authed(c.post(&classify)).header("content-type", "image/png").body(b"not a png".to_vec());
    assert_error(&http.ok(garbage), 400, "invalid_image");

    // 401
    let reply = http.ok(c.post(&classify).json(&json!({"inputs": [pixels(7)]})));
    assert_error(&reply, 401, "unauthorized");
    assert_eq!(reply.header("www-authenticate").as_deref(), Some("Bearer"));
    assert_error(&http.ok(c.get(server.url("/v1/models")).bearer_auth("wrong")), 401, "unauthorized");

    // 404
    let unknown_model = authed(c.post(server.url("/v1/models/nope/classify"))).json(&json!({"inputs": [pixels(7)]}));
    assert_error(&http.ok(unknown_model), 404, "not_found");
    assert_error(&http.ok(authed(c.get(server.url("/v1/models/nope")))), 404, "not_found");
    assert_error(&http.ok(c.get(server.url("/no/such/route"))), 404, "not_found");

    // 405
    let reply = http.ok(authed(c.get(&classify)));
    assert_error(&reply, 405, "method_not_allowed");
    assert!(reply.header("allow").is_some_and(|allow| allow.contains("POST")), "{:?}", reply.headers);

    // 413
    let big = json!({"inputs": [{"pixels": [vec![0; 600]]}]});
    assert_error(&http.ok(authed(c.post(&classify)).json(&big)), 413, "payload_too_large");
    let big_png = authed(c.post(&classify)).header("content-type", "image/png").body(vec![0u8; 4000]);
    assert_error(&http.ok(big_png), 413, "payload_too_large");
    let three = json!({"inputs": [pixels(1), pixels(2), pixels(3)]});
    assert_error(&http.ok(authed(c.post(&classify)).json(&three)), 413, "too_many_inputs");
    let wide = png(&[0; 128 * 64], 128, 64);
    assert!(wide.len() < 1000, "a blank image compresses to a small body: {}", wide.len());
    let wide = authed(c.post(&classify)).header("content-type", "image/png").body(wide);
    assert_error(&http.ok(wide), 413, "image_too_large");

    // 408: a body that stops arriving.
    let mut upload = std::net::TcpStream::connect(server.url("").trim_start_matches("http://")).expect("connect");
    let head = format!(
        "POST /v1/models/guarded/classify HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"inputs\""
    );
    std::io::Write::write_all(&mut upload, head.as_bytes()).expect("send a head and part of a body");
    upload.set_read_timeout(Some(std::time::Duration::from_secs(30))).expect("read timeout");
    let mut answer = String::new();
    let mut chunk = [0u8; 1024];
    while !answer.contains("request_timeout") {
        let n = std::io::Read::read(&mut upload, &mut chunk).expect("the server answers");
        assert!(n > 0, "closed without an answer: {answer}");
        answer.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""type":"request_timeout""#), "{answer}");

    // 414 and 431, still in the JSON shape.
    let long = server.url(&format!("/v1/models/{}", "a".repeat(9000)));
    assert_error(&http.ok(authed(c.get(long))), 414, "uri_too_long");
    let stuffed = c.get(server.url("/health/live")).header("x-padding", "p".repeat(40_000));
    assert_error(&http.ok(stuffed), 431, "headers_too_large");

    // 415
    let text = authed(c.post(&classify)).header("content-type", "text/plain").body("seven");
    assert_error(&http.ok(text), 415, "unsupported_media_type");
    assert_error(&http.ok(authed(c.post(&classify)).body("{}")), 415, "unsupported_media_type");

    // 422
    for body in [
        json!({"inputs": [{"pixels": [[1, 2, 3], [4, 5]]}]}),
        json!({"inputs": [{"pixels": [[300, 0], [0, 0]]}]}),
        json!({"inputs": [pixels(7)], "top_k": 0}),
        json!({"inputs": []}),
        json!({"inputs": [{}]}),
        json!({"inputs": [pixels(7)], "unexpected": true}),
    ] {
        assert_error(&http.ok(authed(c.post(&classify)).json(&body)), 422, "invalid_input");
    }
    let zero_k =
        authed(c.post(format!("{classify}?top_k=0"))).header("content-type", "image/png").body(png(&[0; 64], 8, 8));
    assert_error(&http.ok(zero_k), 422, "invalid_input");
}

#[test]
fn a_full_server_sheds_load_with_429_and_retry_after() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bundle = train_bundle(dir.path(), "busy");
    let path = bundle.to_str().expect("UTF-8 path");
    let server = Server::start(&[
        "--model",
        path,
        "--queue-capacity",
        "1",
        "--max-batch-delay-ms",
        "200",
        "--batch-delay-policy",
        "fixed",
        "--max-batch-size",
        "1",
        "--concurrency-limit",
        "1",
    ]);
    let http = Http::new();
    let classify = server.url("/v1/models/busy/classify");

    // Distinct images, so that no answer comes from the cache; a bounded number of bursts.
    let mut shed = None;
    let mut served = 0;
    for round in 0..8u8 {
        let burst: Vec<_> = (0..16u8)
            .map(|n| {
                let body = json!({"inputs": [pixels(round * 16 + n)]});
                http.spawn(http.client().post(&classify).json(&body))
            })
            .collect();
        for pending in burst {
            let reply = http.join(pending).expect("every request gets an answer");
            match reply.status {
                200 => served += 1,
                429 => shed = Some(reply),
                other => panic!("unexpected {other}: {}", reply.text()),
            }
        }
        if shed.is_some() {
            break;
        }
    }
    let reply = shed.expect("a burst of concurrent requests against a limit of one was never shed");
    assert_error(&reply, 429, "overloaded");
    let retry_after = reply.header("retry-after").expect("429 carries Retry-After");
    assert!(retry_after.parse::<u64>().is_ok_and(|s| s >= 1), "Retry-After: {retry_after}");
    assert!(served >= 1, "at least the first request of a burst is served");
}

#[test]
fn a_request_past_its_deadline_gets_503() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bundle = train_bundle(dir.path(), "slow");
    let path = bundle.to_str().expect("UTF-8 path");
    // A lone request waits up to a second for its batch to fill, far past its 1 ms deadline.
    let server = Server::start(&[
        "--model",
        path,
        "--request-timeout-ms",
        "1",
        "--max-batch-delay-ms",
        "1000",
        "--batch-delay-policy",
        "fixed",
        "--max-batch-size",
        "64",
    ]);
    let http = Http::new();
    let reply =
        http.ok(http.client().post(server.url("/v1/models/slow/classify")).json(&json!({"inputs": [pixels(9)]})));
    assert_error(&reply, 503, "timeout");
}
