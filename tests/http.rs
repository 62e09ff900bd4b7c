//! Serving through the real binary: every input form answers what the library answers in-process,
//! and SIGTERM drains in-flight work and exits cleanly.

use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use crate::common::*;

#[test]
fn served_predictions_equal_the_in_process_runtime() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bundle = train_bundle(dir.path(), "digits-small");
    let bundle_id = summary_bundle_id(&bundle);
    let server = Server::start(&["--model", bundle.to_str().expect("UTF-8 path"), "--drain-timeout-ms", "5000"]);
    let http = Http::new();
    let reference = Reference::load(&bundle);
    let ds = digits_test();

    let models = http.ok(http.client().get(server.url("/v1/models"))).json();
    let listed = models["models"].as_array().expect("models is an array");
    assert_eq!(listed.len(), 1, "{models}");
    assert_eq!(listed[0]["id"], "digits-small@1");
    assert_eq!(listed[0]["bundle_id"].as_str(), Some(bundle_id.as_str()));
    let detail = http.ok(http.client().get(server.url("/v1/models/digits-small"))).json();
    assert_eq!(detail["metrics"], manifest(&bundle)["metrics"], "details serve the manifest's metrics");

    // Raw PNG bodies, one image per request.
    let classify = server.url("/v1/models/digits-small/classify");
    for i in 0..20 {
        let body = png(ds.image(i), 8, 8);
        let req = http.client().post(format!("{classify}?top_k=3")).header("content-type", "image/png").body(body);
        let reply = http.ok(req);
        assert_eq!(reply.status, 200, "{}", reply.text());
        let answer = reply.json();
        assert_eq!(answer["model"], "digits-small@1");
        assert_eq!(answer["predictions"].as_array().map(Vec::len), Some(1), "{answer}");
        reference.assert_agrees(&gray(&ds, i), &answer["predictions"][0], 3);
    }

    // One JSON batch mixing base64 images and pixel arrays, answered in order.
    let picks = [20, 21, 22, 23, 24, 25];
    let inputs: Vec<Value> = picks
        .iter()
        .enumerate()
        .map(|(n, &i)| {
            if n % 2 == 0 {
                json!({"image": base64::engine::general_purpose::STANDARD.encode(png(ds.image(i), 8, 8))})
            } else {
                let rows: Vec<Vec<u8>> = ds.image(i).chunks(8).map(<[u8]>::to_vec).collect();
                json!({"pixels": rows})
            }
        })
        .collect();
    let reply = http.ok(http.client().post(&classify).json(&json!({"inputs": inputs, "top_k": 10})));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let answer = reply.json();
    let predictions = answer["predictions"].as_array().expect("predictions is an array");
    assert_eq!(predictions.len(), picks.len(), "{answer}");
    for (served, &i) in predictions.iter().zip(&picks) {
        reference.assert_agrees(&gray(&ds, i), served, 10);
    }

    let metrics = http.ok(http.client().get(server.url("/metrics")));
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    assert!(text.contains("tandem_http_requests_total"), "{text}");
    assert!(text.contains("tandem_batch_size"), "{text}");
    check_with_promtool(&text);

    stop_cleanly(server, &http, Duration::from_secs(5));
}

#[test]
fn sigterm_lets_an_in_flight_request_finish_then_exits_zero() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bundle = train_bundle(dir.path(), "draining");
    // A lone request waits for its batch to fill, which keeps it in flight long enough to
    // signal the server in the middle of it.
    let mut server = Server::start_with(&[("TANDEM_LOG", "info,tower_http=debug")], |cmd| {
        let port = free_port();
        cmd.arg("--model").arg(&bundle).args([
            "--max-batch-delay-ms",
            "1500",
            "--batch-delay-policy",
            "fixed",
            "--port",
            &port.to_string(),
        ]);
        port
    });
    let http = Http::new();
    let ds = digits_test();
    let body = png(ds.image(0), 8, 8);
    let req = http
        .client()
        .post(server.url("/v1/models/draining/classify"))
        .header("content-type", "image/png")
        .body(body.clone());
    let pending = http.spawn(req);
    wait_until("the classify request to reach the server", || {
        server.log().lines().any(|l| l.contains("started processing request") && l.contains("classify"))
    });
    server.child.terminate();

    let reply = http.join(pending).expect("the in-flight request gets an answer");
    assert_eq!(reply.status, 200, "the in-flight request was cut off: {}", reply.text());
    let reference = Reference::load(&bundle);
    reference.assert_agrees(&gray(&ds, 0), &reply.json()["predictions"][0], 5);
    stop_cleanly(server, &http, Duration::from_secs(10));
}

/// The bundle id the trainer recorded in its summary next to the bundle.
fn summary_bundle_id(bundle: &std::path::Path) -> String {
    let name = bundle.file_name().expect("bundle dir has a name").to_string_lossy();
    let summary_path = bundle.with_file_name(format!("{name}.summary.json"));
    let summary: Value =
        serde_json::from_slice(&std::fs::read(&summary_path).expect("the summary exists")).expect("summary is JSON");
    summary["bundle_id"].as_str().expect("bundle_id is a string").to_owned()
}

/// Sends SIGTERM unless the server already exited, checks that readiness stops answering 200, and that
/// the process exits 0 within its drain timeout, with slack for a busy machine.
#[track_caller]
fn stop_cleanly(mut server: Server, http: &Http, drain: Duration) {
    server.child.terminate();
    let url = server.url("/health/ready");
    wait_until("readiness to go 503 or the socket to close", || match http.get(&url) {
        Ok(reply) => reply.status == 503,
        Err(_) => true,
    });
    let status = server.child.wait_exit(drain + PATIENCE);
    let log = server.log();
    let status = status.unwrap_or_else(|| panic!("the server did not exit after SIGTERM:\n{log}"));
    assert!(status.success(), "the server exited with {status} after SIGTERM:\n{log}");
}

/// Runs `promtool check metrics` (from the Debian package `prometheus`) over a scrape: every
/// series needs HELP and TYPE lines and valid names. Without promtool on `PATH` (or at
/// `TANDEM_PROMTOOL`) the check is skipped with a note, unless `TANDEM_REQUIRE_PROMTOOL=1`, which
/// CI sets, makes that a failure.
fn check_with_promtool(scrape: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let promtool = std::env::var("TANDEM_PROMTOOL").unwrap_or_else(|_| "promtool".to_owned());
    let child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(err) => {
            let required = std::env::var("TANDEM_REQUIRE_PROMTOOL").is_ok_and(|v| v == "1");
            assert!(!required, "promtool is required but cannot run ({promtool}): {err}");
            eprintln!("note: skipping the promtool check, {promtool} cannot run: {err}");
            return;
        }
    };
    child.stdin.take().expect("stdin").write_all(scrape.as_bytes()).expect("write the scrape");
    let out = child.wait_with_output().expect("promtool runs");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool check metrics failed ({}):\n{report}\n{scrape}", out.status);
    assert!(report.trim().is_empty(), "promtool has lint findings:\n{report}");
}
