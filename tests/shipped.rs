//! The bundles shipped in `models/`: served by the real binary, they keep the compact-students
//! contract (at most 15,000 parameters, the accuracy their manifests record, the teacher they name).

use serde_json::{json, Value};

use crate::common::*;

/// Parameter budget of a compact student.
const MAX_STUDENT_PARAMS: u64 = 15_000;

fn shipped(name: &str) -> String {
    format!("{}/models/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A 28×28 image with one thick vertical stroke: a "1" in MNIST's style.
fn one() -> Vec<Vec<f64>> {
    (0..28)
        .map(|y| (0..28).map(|x| if (5..23).contains(&y) && (13..16).contains(&x) { 255.0 } else { 0.0 }).collect())
        .collect()
}

#[test]
fn shipped_students_are_small_accurate_and_name_their_teachers() {
    let models = ["mnist-student", "mnist-teacher", "fashion-student", "fashion-teacher"].map(shipped);
    let mut args = Vec::new();
    for m in &models {
        args.extend(["--model", m.as_str()]);
    }
    let server = Server::start(&args);
    let http = Http::new();
    let detail = |name: &str| -> Value { http.ok(http.client().get(server.url(&format!("/v1/models/{name}")))).json() };

    // (student, teacher, dataset, student's target test accuracy, teacher's, method)
    for (student, teacher, dataset, target, teacher_target, method) in [
        ("mnist-student", "mnist-teacher", "mnist", 0.993, 0.995, "kd"),
        ("fashion-student", "fashion-teacher", "fashion-mnist", 0.905, 0.93, "supervised"),
    ] {
        let s = detail(student);
        let t = detail(teacher);
        assert_eq!(s["dataset"], dataset, "{s}");
        assert_eq!(s["method"], method, "{s}");
        assert!(s["params"].as_u64().unwrap() <= MAX_STUDENT_PARAMS, "{s}");
        assert!(t["params"].as_u64().unwrap() > 3 * s["params"].as_u64().unwrap(), "{t}");
        let accuracy = s["metrics"]["test_accuracy"].as_f64().unwrap();
        assert!(accuracy >= target, "{student}: {accuracy} < {target}");
        assert_eq!(s["metrics"]["test_n"].as_f64(), Some(10_000.0), "{s}");
        let teacher_accuracy = t["metrics"]["test_accuracy"].as_f64().unwrap();
        assert!(teacher_accuracy >= teacher_target, "{teacher}: {teacher_accuracy} < {teacher_target}");
        assert!(teacher_accuracy > accuracy, "the teacher is the stronger model");
        if method == "kd" {
            assert_eq!(s["teacher"], t["bundle_id"], "{student} names the shipped teacher");
        }
    }

    for model in ["mnist-student", "mnist-teacher"] {
        let url = server.url(&format!("/v1/models/{model}/classify?top_k=10"));
        let answer = http.ok(http.client().post(url).json(&json!({"inputs": [{"pixels": one()}]}))).json();
        let ranked = answer["predictions"][0].as_array().expect("one ranking per image");
        assert_eq!(ranked.len(), 10, "{answer}");
        let total: f64 = ranked.iter().map(|p| p["score"].as_f64().unwrap()).sum();
        assert!((total - 1.0).abs() < 1e-3, "{answer}");
        assert_eq!(ranked[0]["label"], "1", "{model}: {answer}");
    }
}

#[test]
fn shipped_bundles_are_the_presets_they_document() {
    for (bundle, preset) in [
        ("mnist-student", "student"),
        ("mnist-teacher", "teacher"),
        ("fashion-student", "student"),
        ("fashion-teacher", "teacher-wide"),
    ] {
        let layers = &manifest(std::path::Path::new(&shipped(bundle)))["architecture"]["layers"];
        let cfg = tandem_training::arch::preset(preset, 28, 10).expect("a known preset");
        assert_eq!(layers, &serde_json::to_value(&cfg.layers).unwrap(), "{bundle} is the {preset} preset");
    }
}
