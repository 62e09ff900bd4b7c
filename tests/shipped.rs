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
        let layers = &manifest(std::path::Path::new(&shipped(bundle)))["family"]["architecture"]["layers"];
        let cfg = tandem_training::arch::preset(preset, 28, 10).expect("a known preset");
        assert_eq!(layers, &serde_json::to_value(&cfg.layers).unwrap(), "{bundle} is the {preset} preset");
    }
}

/// The weights' sha256 as trained, before manifests moved to schema 2: the rewrite kept every byte.
const WEIGHTS_SHA256: [(&str, &str); 6] = [
    ("digits-teacher", "24467a4438b359548c5759c907d3bb284795b93629935b216acb55a07926477f"),
    ("digits-student", "9fbef80299da5edf68b7ee73a38b203c40684c7542772ab46a0b7d7da180d7f5"),
    ("mnist-teacher", "499b38e3802e90f1f4dfe00ef17965fc0fa3b17b9297b92dbf8d47e69f58ccb8"),
    ("mnist-student", "5d7bf1070c6f847e863351149cfa6ba9fe2302828c1f5c5ab2a49163e13f3705"),
    ("fashion-teacher", "ef7e65ee568fe8fe879c226eeae767e0030f677ec83668d420c4a5076d7260a9"),
    ("fashion-student", "96bf4d1c0b3aca973849dd2a158f67ae404eef0bdc9a771bb93c73e775bb3d99"),
];

#[test]
fn shipped_bundles_are_schema_2_with_their_trained_weights() {
    for (bundle, expected) in WEIGHTS_SHA256 {
        let dir = std::path::PathBuf::from(shipped(bundle));
        let weights = std::fs::read(dir.join("model.safetensors")).unwrap();
        assert_eq!(tandem_runtime::bundle::sha256_hex(&weights), expected, "{bundle}: weights changed");
        let m = manifest(&dir);
        assert_eq!(m["schema_version"], 2, "{bundle}");
        assert_eq!(m["family"]["kind"], "classifier", "{bundle}");
        assert_eq!(m["files"], json!([{"path": "model.safetensors", "sha256": expected}]), "{bundle}");
        tandem_runtime::bundle::Bundle::load(&dir).unwrap();
    }
}

/// The shipped DDPM teacher: small enough to ship, its recorded score meets issue 10's target (at
/// 10 NFE, at least 80% of class-conditional samples recognised by the shipped MNIST student), and
/// `tandem serve` generates with every sampler, with and without DualFast; a live check of the
/// target on a few samples classifies them through the same server.
#[test]
fn the_shipped_ddpm_teacher_generates_recognisable_digits_with_every_sampler() {
    shipped_generator("mnist-ddpm", "diffusion", 0.8);

    let (ddpm, judge) = (shipped("mnist-ddpm"), shipped("mnist-student"));
    let server = Server::start(&["--model", ddpm.as_str(), "--model", judge.as_str()]);
    let http = Http::new();
    let generate = |body: Value| -> Value {
        http.ok(http.client().post(server.url("/v1/models/mnist-ddpm/generate")).json(&body)).json()
    };
    for sampler in ["ddim", "dpmpp2m", "dpmpp3m", "unipc", "unipc-bh1"] {
        for dualfast in [Value::Null, json!({})] {
            let mut body = json!({"class": 5, "n": 1, "steps": 4, "sampler": sampler});
            if !dualfast.is_null() {
                body["dualfast"] = dualfast;
            }
            let answer = generate(body);
            assert_eq!((answer["nfe"].as_u64(), answer["images"].as_array().map(Vec::len)), (Some(4), Some(1)));
        }
    }
    // Four samples of every class at the bundle's guidance, classified by the judge through the server.
    let recognised = recognised_by_the_judge(&server, &http, "mnist-ddpm", json!({"steps": 10, "sampler": "dpmpp2m"}));
    assert!(recognised >= 30, "{recognised} of 40 class-conditional samples were classified as their class");
}

/// The directory and manifest of shipped bundle `name`, after checking that it fits the 20 MB
/// budget of a shipped model.
fn shipped_within_budget(name: &str) -> (std::path::PathBuf, Value) {
    let dir = std::path::PathBuf::from(shipped(name));
    let size: u64 = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    assert!(size <= 20 << 20, "{name}: {size} bytes");
    let m = manifest(&dir);
    (dir, m)
}

/// The vectors `model` on `server` answers for `inputs`.
fn embeddings(server: &Server, http: &Http, model: &str, inputs: Value) -> Vec<Vec<f64>> {
    let url = server.url(&format!("/v1/models/{model}/embed"));
    let reply = http.ok(http.client().post(url).json(&json!({ "inputs": inputs }))).json();
    let rows = reply["embeddings"].as_array().unwrap_or_else(|| panic!("no embeddings: {reply}"));
    rows.iter().map(|v| v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()).collect()
}

/// Which of `candidates` has the largest dot product with `vectors[query]`.
fn nearest_of(vectors: &[Vec<f64>], query: usize, candidates: std::ops::Range<usize>) -> Option<usize> {
    let dot = |i: usize| vectors[query].iter().zip(&vectors[i]).map(|(x, y)| x * y).sum::<f64>();
    candidates.max_by(|&a, &b| dot(a).total_cmp(&dot(b)))
}

/// The manifest of shipped generative bundle `name`, after checking that it fits the 20 MB budget,
/// is of `kind`, and records a judged sample accuracy of at least `min_accuracy` on 1,000 samples.
fn shipped_generator(name: &str, kind: &str, min_accuracy: f64) -> Value {
    let (_, m) = shipped_within_budget(name);
    assert_eq!(m["family"]["kind"], kind, "{name}");
    let recorded = m["metrics"]["test_accuracy"].as_f64().unwrap();
    assert!(recorded >= min_accuracy, "{name}: recorded sample accuracy {recorded}");
    assert_eq!(m["metrics"]["test_n"].as_f64(), Some(1000.0), "{name}");
    m
}

/// How many of four samples per class (seed 11) that `model` generates with `settings` the
/// shipped MNIST student, served beside it, classifies as their class.
fn recognised_by_the_judge(server: &Server, http: &Http, model: &str, settings: Value) -> usize {
    let mut recognised = 0;
    for class in 0..10 {
        let mut body = json!({"class": class, "n": 4, "seed": 11});
        body.as_object_mut().unwrap().extend(settings.as_object().unwrap().clone());
        let url = server.url(&format!("/v1/models/{model}/generate"));
        let answer: Value = http.ok(http.client().post(url).json(&body)).json();
        let inputs: Vec<Value> =
            answer["images"].as_array().unwrap().iter().map(|i| json!({"image": i["png_base64"]})).collect();
        let url = server.url("/v1/models/mnist-student/classify");
        let ranked = http.ok(http.client().post(url).json(&json!({ "inputs": inputs }))).json();
        let labels = ranked["predictions"].as_array().unwrap().iter().map(|p| p[0]["label"].clone());
        let want = class.to_string();
        recognised += labels.filter(|label| label.as_str() == Some(want.as_str())).count();
    }
    recognised
}

/// The shipped consistency student (CD from `mnist-ddpm`): small enough to ship, served at 1, 2
/// and 4 steps, and its two-step samples recognised as their class as often as issue 10 asks (its
/// manifest records 0.786 on 1,000 samples; the target is 0.70), checked live on 40 samples with a
/// margin for their small number.
#[test]
fn the_shipped_consistency_student_generates_in_one_two_and_four_steps() {
    let m = shipped_generator("mnist-consistency", "consistency", 0.7);
    assert_eq!(m["family"]["parametrization"]["type"], "from_eps");

    let (student, judge) = (shipped("mnist-consistency"), shipped("mnist-student"));
    let server = Server::start(&["--model", student.as_str(), "--model", judge.as_str()]);
    let http = Http::new();
    for steps in [1, 2, 4] {
        let body = json!({"class": 3, "n": 2, "steps": steps, "sampler": "consistency"});
        let answer: Value =
            http.ok(http.client().post(server.url("/v1/models/mnist-consistency/generate")).json(&body)).json();
        assert_eq!((answer["nfe"].as_u64(), answer["images"].as_array().map(Vec::len)), (Some(steps), Some(2)));
    }
    let recognised =
        recognised_by_the_judge(&server, &http, "mnist-consistency", json!({"steps": 2, "sampler": "consistency"}));
    assert!(recognised >= 24, "{recognised} of 40 two-step samples were classified as their class");
}

/// The mean PSNR of the shipped tokenizer's reconstructions of the whole Fashion-MNIST test split
/// (`tandem eval --task tokenizer`, BENCHMARKS.md): 22.42 dB.
const SHIPPED_TOKENIZER_TEST_PSNR: f64 = 22.42;

/// The shipped DualToken tokenizer (Fashion-MNIST): small enough to ship, and over HTTP real test
/// images (eight from the test split, in `tests/fixtures/fashion`) round-trip through tokenize and
/// detokenize about as well as the whole split does, while the head on their semantic tokens names
/// their classes.
#[test]
fn the_shipped_tokenizer_round_trips_real_images_over_http() {
    use base64::Engine;
    let name = "fashion-dualtoken";
    let (dir, m) = shipped_within_budget(name);
    assert_eq!(
        (m["family"]["kind"].as_str(), m["family"]["architecture"]["layout"].as_str()),
        (Some("image_tokenizer"), Some("dual"))
    );
    let recorded_psnr = SHIPPED_TOKENIZER_TEST_PSNR;

    let server = Server::start(&["--model", dir.to_str().unwrap()]);
    let http = Http::new();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fashion");
    let (mut psnr_sum, mut named, mut n) = (0.0, 0, 0);
    for entry in std::fs::read_dir(fixtures).unwrap() {
        let path = entry.unwrap().path();
        let class: usize = path.file_stem().unwrap().to_str().unwrap().rsplit('-').next().unwrap().parse().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let original = image::load_from_memory(&bytes).unwrap().to_luma8();
        let url = server.url(&format!("/v1/models/{name}/tokenize"));
        let tokens = http.ok(http.client().post(url).header("content-type", "image/png").body(bytes.clone())).json();
        let entry = &tokens["tokens"][0];
        assert_eq!(entry["shape"], json!({"height": 7, "width": 7, "depth": 2}));
        let url = server.url(&format!("/v1/models/{name}/detokenize"));
        let image = http.ok(http.client().post(url).json(entry)).json();
        let png = base64::engine::general_purpose::STANDARD.decode(image["png_base64"].as_str().unwrap()).unwrap();
        let back = image::load_from_memory(&png).unwrap().to_luma8();
        assert_eq!(back.dimensions(), (28, 28));
        let mse = original
            .as_raw()
            .iter()
            .zip(back.as_raw())
            .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
            .sum::<f64>()
            / 784.0;
        psnr_sum += 10.0 * (255.0f64 * 255.0 / mse.max(1e-9)).log10();
        let url = server.url(&format!("/v1/models/{name}/classify"));
        let ranked = http.ok(http.client().post(url).header("content-type", "image/png").body(bytes)).json();
        let labels = m["family"]["labels"].as_array().unwrap();
        named += usize::from(ranked["predictions"][0][0]["label"] == labels[class]);
        n += 1;
    }
    let psnr = psnr_sum / n as f64;
    assert!(n == 8 && psnr > recorded_psnr - 3.0, "mean PSNR {psnr:.2} dB on {n} images, recorded {recorded_psnr:.2}");
    assert!(named >= 5, "the head on the semantic tokens named {named} of {n} classes");
}

/// Fashion-MNIST's class names, the free-text labels of zero-shot classification.
const FASHION_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// The shipped image–text dual encoder: small enough to ship, of kind `image_text`, its recorded
/// zero-shot accuracy on the 10,000 test images what BENCHMARKS.md reports, and served without
/// training: real test images (`tests/fixtures/fashion`) are classified zero-shot from the class
/// names alone, and `embed` puts an image nearer its class's caption than the other classes'.
#[test]
fn the_shipped_image_text_model_classifies_real_images_zero_shot_over_http() {
    use base64::Engine;
    let name = "fashion-image-text";
    let (dir, m) = shipped_within_budget(name);
    assert_eq!(m["family"]["kind"], "image_text");
    let recorded = m["metrics"]["test_zero_shot_accuracy"].as_f64().unwrap();
    assert!(recorded >= 0.85 && m["metrics"]["test_n"].as_f64() == Some(10_000.0), "{}", m["metrics"]);

    let server = Server::start(&["--model", dir.to_str().unwrap()]);
    let http = Http::new();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fashion");
    let (mut named, mut nearest, mut n) = (0, 0, 0);
    for entry in std::fs::read_dir(fixtures).unwrap() {
        let path = entry.unwrap().path();
        let class: usize = path.file_stem().unwrap().to_str().unwrap().rsplit('-').next().unwrap().parse().unwrap();
        let image = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&path).unwrap());
        let body = json!({"inputs": [{"image": image}], "labels": FASHION_CLASSES});
        let ranked = http.ok(http.client().post(server.url(&format!("/v1/models/{name}/classify"))).json(&body)).json();
        named += usize::from(ranked["predictions"][0][0]["label"] == FASHION_CLASSES[class]);

        let mut inputs = vec![json!({"image": image})];
        inputs.extend(FASHION_CLASSES.iter().map(|c| json!(format!("a photo of a {c}"))));
        let vectors = embeddings(&server, &http, name, json!(inputs));
        nearest += usize::from(nearest_of(&vectors, 0, 1..11) == Some(class + 1));
        n += 1;
    }
    assert!(n == 8 && named >= 6, "zero-shot named {named} of {n} test images");
    assert!(nearest >= 6, "an image's nearest caption was its class's for {nearest} of {n}");
}

/// Six WordNet 3.0 lemmas and their own synsets' definitions.
const WORDNET_PAIRS: [(&str, &str); 6] = [
    ("dog", "a member of the genus Canis (probably descended from the common wolf) that has been domesticated by man since prehistoric times; occurs in many breeds"),
    ("house cat", "any domesticated member of the genus Felis"),
    ("apple", "fruit with red or yellow or green skin and sweet to tart crisp whitish flesh"),
    ("truck", "an automotive vehicle suitable for hauling"),
    ("chair", "a seat for one person, with a support for the back"),
    ("coffee", "a beverage consisting of an infusion of ground coffee beans"),
];

/// The shipped text student: an `embedder` small enough to ship, with its parameters counted
/// embeddings apart and its recorded WordNet test figures, served without training; over HTTP
/// each of six lemmas finds its own definition nearest among the six.
#[test]
fn the_shipped_text_student_embeds_and_matches_lemmas_to_their_definitions_over_http() {
    let name = "text-student";
    let (dir, m) = shipped_within_budget(name);
    assert_eq!(m["family"]["kind"], "embedder");
    let metrics = &m["metrics"];
    let params = metrics["params"].as_f64().unwrap();
    assert_eq!(params, metrics["params_embeddings"].as_f64().unwrap() + metrics["params_layers"].as_f64().unwrap());
    assert!(params < 10e6 && metrics["test_n"].as_f64() == Some(2000.0), "{metrics}");
    assert!(metrics["test_accuracy"].as_f64().unwrap() > 0.1, "nDCG@10 on the test split: {metrics}");

    let server = Server::start(&["--model", dir.to_str().unwrap()]);
    let http = Http::new();
    let inputs: Vec<&str> = WORDNET_PAIRS.map(|p| p.0).into_iter().chain(WORDNET_PAIRS.map(|p| p.1)).collect();
    let vectors = embeddings(&server, &http, name, json!(inputs));
    assert_eq!((vectors.len(), vectors[0].len()), (12, 384));
    let matched = (0..6).filter(|&q| nearest_of(&vectors, q, 6..12) == Some(q + 6)).count();
    assert!(matched >= 5, "{matched} of 6 lemmas found their own definition first");
}
