//! `tandem tokenize` and `tandem detokenize` on a tiny random `image_tokenizer` bundle: tokens in
//! the tokenize route's JSON shape, read back into a PNG of the model's size, and bad bundles,
//! images, files and tokens refused with a message and an exit status of 1, never a panic.

use std::path::Path;
use std::process::Output;

use serde_json::{json, Value};

use crate::common::*;

/// Insists that a command failed the ordinary way (an error, exit status 1, not a panic) with a
/// message that holds `says`.
#[track_caller]
fn assert_refused(out: &Output, says: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", show(out));
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains(says), "{stderr:?} does not hold {says:?}");
}

fn detokenize(bundle: &Path, tokens: &Path, out: &Path) -> std::process::Command {
    let mut cmd = tandem();
    cmd.arg("detokenize").arg("--model").arg(bundle).arg(tokens).arg("--out").arg(out);
    cmd
}

#[test]
fn tokenize_then_detokenize_writes_a_png_of_the_model_size() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bundle = tandem_runtime::testing::write_tiny_tokenizer_bundle(dir.path(), "tok").expect("a tiny tokenizer");
    let pixels: Vec<u8> = (0..28 * 28).map(|i| (i * 7 % 256) as u8).collect();
    let (first, second) = (dir.path().join("a.png"), dir.path().join("b.png"));
    std::fs::write(&first, png(&pixels, 28, 28)).expect("write a.png");
    let other: Vec<u8> = pixels.iter().map(|p| 255 - p).collect();
    std::fs::write(&second, png(&other, 28, 28)).expect("write b.png");

    let out = run_ok(tandem().args(["tokenize", "--json", "--model"]).arg(&bundle).arg(&first).arg(&second));
    let answer = stdout_json(&out);
    assert_eq!(answer["model"], "tok@1");
    let tokens = answer["tokens"].as_array().expect("tokens");
    assert_eq!(tokens.len(), 2);
    for entry in tokens {
        assert_eq!(entry["shape"], json!({"height": 7, "width": 7, "depth": 2}));
        for stream in ["pixel_tokens", "semantic_tokens"] {
            let ids = entry[stream].as_array().expect("ids");
            assert_eq!(ids.len(), 98, "{stream}");
            assert!(ids.iter().all(|id| id.as_u64().is_some_and(|id| id < 64)), "{entry}");
        }
    }
    // The same tokens as the runtime's, through which the server answers too.
    let image = tandem_runtime::image::GrayImage::decode(&png(&pixels, 28, 28)).expect("decodes");
    let runtime = tandem_runtime::Runtime::new(tandem_runtime::RuntimeConfig::default());
    let id = runtime.load(&bundle).expect("loads").id;
    let direct = tokio::runtime::Runtime::new()
        .expect("a tokio runtime")
        .block_on(runtime.tokenize(&id, vec![image]))
        .expect("tokenizes");
    assert_eq!(tokens[0]["pixel_tokens"], json!(direct.tokens[0].pixel_tokens));

    // Without --json: one block per image.
    let text = run_ok(tandem().args(["tokenize", "--model"]).arg(&bundle).arg(&first));
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        text.contains("7x7x2 tokens of tok@1") && text.contains("  pixel: ") && text.contains("  semantic: "),
        "{text}"
    );

    // The detokenize request shape, and the whole tokenize answer (its first entry): the same PNG.
    let request = dir.path().join("request.json");
    let request_body = json!({"pixel_tokens": tokens[0]["pixel_tokens"], "shape": tokens[0]["shape"]});
    std::fs::write(&request, request_body.to_string()).expect("write request.json");
    let answer_file = dir.path().join("answer.json");
    std::fs::write(&answer_file, &out.stdout).expect("write answer.json");
    let mut written = Vec::new();
    for (input, name) in [(&request, "from-request.png"), (&answer_file, "from-answer.png")] {
        let target = dir.path().join(name);
        let out = run_ok(&mut detokenize(&bundle, input, &target));
        assert!(String::from_utf8_lossy(&out.stdout).contains("28x28"), "{}", show(&out));
        let bytes = std::fs::read(&target).expect("the PNG was written");
        let decoded = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png).expect("a PNG");
        assert_eq!((decoded.width(), decoded.height()), (28, 28));
        written.push(bytes);
    }
    assert_eq!(written[0], written[1]);
}

#[test]
fn bad_bundles_images_files_and_tokens_are_refused_without_a_panic() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bundle = tandem_runtime::testing::write_tiny_tokenizer_bundle(dir.path(), "tok").expect("a tiny tokenizer");
    let classifier =
        tandem_runtime::testing::write_tiny_classifier_bundle(dir.path(), "digits", "1").expect("a tiny classifier");
    let image = dir.path().join("a.png");
    std::fs::write(&image, png(&[0; 28 * 28], 28, 28)).expect("write a.png");
    let out_png = dir.path().join("out.png");

    let wrong_kind = run_failing(tandem().args(["tokenize", "--model"]).arg(&classifier).arg(&image));
    assert_refused(&wrong_kind, "is a `classifier` bundle");
    let not_image = dir.path().join("notes.png");
    std::fs::write(&not_image, "not an image").expect("write notes.png");
    assert_refused(&run_failing(tandem().args(["tokenize", "--model"]).arg(&bundle).arg(&not_image)), "notes.png");
    let missing = dir.path().join("missing.png");
    assert_refused(&run_failing(tandem().args(["tokenize", "--model"]).arg(&bundle).arg(&missing)), "cannot read");

    let file = |name: &str, body: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, body).expect("write a token file");
        path
    };
    let shape = json!({"height": 7, "width": 7, "depth": 2});
    let ids = |first: Value| {
        let mut ids = vec![json!(0); 98];
        ids[0] = first;
        ids
    };
    let cases: Vec<(std::path::PathBuf, &str)> = vec![
        (file("out-of-range.json", &json!({"pixel_tokens": ids(json!(64)), "shape": shape}).to_string()), "0..64"),
        (file("negative.json", &json!({"pixel_tokens": ids(json!(-1)), "shape": shape}).to_string()), "-1"),
        (file("fraction.json", &json!({"pixel_tokens": ids(json!(0.5)), "shape": shape}).to_string()), "whole number"),
        (file("short.json", &json!({"pixel_tokens": [0, 1], "shape": shape}).to_string()), "2 pixel tokens"),
        (
            file(
                "shape.json",
                &json!({"pixel_tokens": vec![0; 49], "shape": {"height": 7, "width": 7, "depth": 1}}).to_string(),
            ),
            "token grid 7x7x2",
        ),
        (file("broken.json", "{\"pixel_tokens\": ["), "is not JSON"),
        (file("other.json", "{\"ids\": [1]}"), "holds neither"),
        (file("empty-answer.json", "{\"model\": \"tok@1\", \"tokens\": []}"), "non-empty list"),
        (dir.path().join("absent.json"), "cannot read"),
    ];
    for (path, says) in &cases {
        assert_refused(&run_failing(&mut detokenize(&bundle, path, &out_png)), says);
    }
    let fine = file("fine.json", &json!({"pixel_tokens": ids(json!(0)), "shape": shape}).to_string());
    assert_refused(&run_failing(&mut detokenize(&classifier, &fine, &out_png)), "is a `classifier` bundle");
    assert!(!out_png.exists(), "no refused command wrote an image");
}
