//! The models directory through the real binary: everything in it serves at start, the admin API
//! sits behind the API key, `--watch` follows the directory, and a bad bundle stops the start.

use std::path::Path;

use serde_json::json;
use tandem_runtime::testing::write_tiny_classifier_bundle_at;

use crate::common::*;

const KEY: &str = "k";

/// The ids `GET /v1/models` lists with `state`.
fn listed(http: &Http, server: &Server, state: &str) -> Vec<String> {
    let reply = http.ok(http.client().get(server.url("/v1/models")).bearer_auth(KEY));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    let models = body["models"].as_array().expect("models").clone();
    models.iter().filter(|m| m["state"] == state).map(|m| m["id"].as_str().expect("id").to_owned()).collect()
}

#[test]
fn the_models_directory_serves_at_start_and_the_watcher_follows_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("models");
    write_tiny_classifier_bundle_at(&root.join("a"), "a", "1").expect("a@1");
    write_tiny_classifier_bundle_at(&root.join("b").join("1"), "b", "1").expect("b@1");
    let models = root.to_str().expect("UTF-8 path").to_owned();
    // The directory comes from the environment and the watch settings from flags, as any setting.
    let server = Server::start_with(&[("TANDEM_MODELS_DIR", &models)], |cmd| {
        let port = free_port();
        cmd.args(["--watch", "--watch-interval-ms", "50", "--api-key", KEY, "--port", &port.to_string()]);
        port
    });
    let http = Http::new();
    let c = http.client();
    assert_eq!(listed(&http, &server, "ready"), ["a@1", "b@1"]);
    assert!(server.log().contains("watching"), "{}", server.log());

    let unauthorized = http.ok(c.delete(server.url("/v1/models/a")));
    assert_error(&unauthorized, 401, "unauthorized");
    let reply = http.ok(c.delete(server.url("/v1/models/a")).bearer_auth(KEY));
    assert_eq!(reply.status, 204, "{}", reply.text());
    let reply = http.ok(c.post(server.url("/v1/models")).bearer_auth(KEY).json(&json!({"name": "nope"})));
    assert_error(&reply, 404, "not_found");

    write_tiny_classifier_bundle_at(&root.join("b").join("2"), "b", "2").expect("b@2");
    wait_until("the watcher to serve b@2", || listed(&http, &server, "ready").contains(&"b@2".to_owned()));
    let body = json!({"inputs": [{"pixels": vec![vec![9; 8]; 8]}]});
    let reply = http.ok(c.post(server.url("/v1/models/b/classify")).bearer_auth(KEY).json(&body));
    assert_eq!(reply.json()["model"], "b@2", "{}", reply.text());
    assert!(!listed(&http, &server, "ready").contains(&"a@1".to_owned()), "an unloaded bundle stays unloaded");
}

fn serve_failing(args: &[&str]) -> String {
    let out = run_failing(tandem().arg("serve").args(args).args(["--port", "0"]));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_bad_models_directory_stops_the_start_with_the_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("models");
    write_tiny_classifier_bundle_at(&root.join("good"), "good", "1").expect("good@1");
    write_tiny_classifier_bundle_at(&root.join("bad"), "bad", "1").expect("bad@1");
    flip_last_byte(&root.join("bad").join("model.safetensors"));
    let models = root.to_str().expect("UTF-8 path");
    let log = serve_failing(&["--models-dir", models]);
    assert!(log.contains("cannot load the models directory") && log.contains("bad: "), "{log}");
    assert!(log.contains("sha256 mismatch"), "{log}");

    let log = serve_failing(&["--models-dir", &dir.path().join("nowhere").display().to_string()]);
    assert!(log.contains("cannot open the models directory"), "{log}");
    let log = serve_failing(&["--model", &root.join("good").display().to_string(), "--watch"]);
    assert!(log.contains("--watch needs a models directory"), "{log}");
}

fn flip_last_byte(path: &Path) {
    let mut bytes = std::fs::read(path).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(path, bytes).expect("write");
}
