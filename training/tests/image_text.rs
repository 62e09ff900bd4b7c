//! The image–text family on the embedded digits, at test scale: a tiny dual encoder trains on
//! the digits and their template captions, exports an `image_text` bundle that the runtime serves,
//! and measures it on the test split through the serving path.

use std::path::Path;

use tandem_runtime::bundle::Bundle;
use tandem_runtime::image::GrayImage;
use tandem_runtime::testing_text::tiny_spelling_tokenizer_json;
use tandem_runtime::{ImageTextEmbedRequest, ImageTextInput, Runtime, RuntimeConfig, ZeroShotRequest};
use tandem_training::arch;
use tandem_training::data::{self, Augment, DatasetName, Split};
use tandem_training::families::image_text::{self, CprdSettings, ImageTextTrainConfig, TextTower};

fn config(dir: &Path) -> ImageTextTrainConfig {
    let tokenizer = dir.join("tokenizer.json");
    std::fs::write(&tokenizer, tiny_spelling_tokenizer_json()).unwrap();
    let image_arch = arch::preset("student", 8, 16).unwrap();
    let out = dir.join("clip");
    let mut cfg = ImageTextTrainConfig::new(DatasetName::Digits, dir.join("data"), tokenizer, image_arch, out);
    cfg.text = TextTower { hidden: 32, layers: 1, heads: 2, intermediate: 64 };
    (cfg.max_seq_length, cfg.common.epochs, cfg.common.batch_size, cfg.val_images, cfg.common.progress) =
        (16, 4, 64, 180, false);
    cfg.augment = Augment::default();
    cfg.common.optim.lr = 3e-3;
    cfg
}

#[test]
fn a_tiny_dual_encoder_trains_on_digit_captions_and_exports_a_served_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let summary = image_text::train(&cfg).unwrap();
    let losses: Vec<f64> = summary.history.iter().map(|r| r.train_loss).collect();
    assert!(losses.last().unwrap() < &(losses[0] * 0.8), "the contrastive loss falls: {losses:?}");
    let last = summary.history.last().unwrap();
    assert!(last.val_accuracy > 0.5, "zero-shot accuracy on validation, chance 0.1: {last:?}");
    assert!(last.extra["i2t_r@1"] > 0.5 && last.extra["t2i_r@5"] > 0.5, "{last:?}");

    let bundle = Bundle::load(&cfg.common.out).unwrap();
    let spec = bundle.manifest.image_text().unwrap();
    assert_eq!(spec.labels, DatasetName::Digits.classes());
    assert!(bundle.file(&spec.tokenizer).is_ok(), "the cut tokenizer ships in the bundle");
    let metrics = &bundle.manifest.metrics;
    for key in ["test_i2t_r@1", "test_i2t_r@5", "test_t2i_r@1", "test_t2i_r@5", "test_zero_shot_accuracy"] {
        assert!((0.0..=1.0).contains(&metrics[key]), "{key}: {metrics:?}");
    }
    assert_eq!(metrics["test_n"], 360.0);
    assert!(metrics["test_i2t_r@5"] >= metrics["test_i2t_r@1"]);

    // Served: a digit's image is nearer its own digit's caption than another's, most of the time,
    // and the zero-shot answer takes free-text labels.
    let rt = Runtime::new(RuntimeConfig::default());
    let id = rt.load(&cfg.common.out).unwrap().id;
    let test = data::load(DatasetName::Digits, Split::Test, Path::new("")).unwrap();
    let executor = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let image = |i: usize| GrayImage::from_pixels(8, 8, test.image(i).iter().map(|&p| f32::from(p)).collect()).unwrap();
    let inputs = vec![
        ImageTextInput::Image(image(0)),
        ImageTextInput::Text(format!("a photo of a {}", test.labels[0])),
        ImageTextInput::Text(format!("a photo of a {}", (test.labels[0] + 1) % 10)),
    ];
    let request = ImageTextEmbedRequest { inputs, truncate: true, normalize: None, dimensions: None };
    let vectors = executor.block_on(rt.embed_image_text(&id, request)).unwrap().embeddings;
    assert!(vectors.iter().all(|v| v.len() == 16));
    let labels: Vec<String> = (0..10).map(|d| format!("a picture of a {d}")).collect();
    let hits = (0..20)
        .filter(|&i| {
            let request = ZeroShotRequest { images: vec![image(i)], labels: Some(labels.clone()), top_k: 1 };
            let answer = executor.block_on(rt.classify_zero_shot(&id, request)).unwrap();
            answer.predictions[0][0].label == labels[usize::from(test.labels[i])]
        })
        .count();
    assert!(hits >= 10, "{hits} of 20 test digits classified by their caption");
}

#[test]
fn cprd_trains_a_matcher_first_then_distils_its_rankings_and_a_saved_matcher_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.cprd = Some(CprdSettings {
        teacher_arch: arch::preset("student", 8, 16).unwrap(),
        teacher_hidden: 32,
        teacher_epochs: 4,
        teacher: None,
        negatives: 4,
        beta: 1.0,
    });
    let summary = image_text::train(&cfg).unwrap();
    let stages: Vec<_> = summary.history.iter().map(|r| r.stage.clone().unwrap()).collect();
    assert_eq!(stages, ["teacher", "teacher", "teacher", "teacher", "student", "student", "student", "student"]);
    assert!(summary.history[3].extra["teacher_zero_shot_accuracy"] > 0.3, "the matcher learns: {:?}", summary.history);
    assert!(cfg.teacher_path().exists(), "the matcher is saved for other runs");
    assert_eq!(summary.method, "clip-multi-positive-cprd");
    assert!(summary.history[7].val_accuracy > 0.5, "{:?}", summary.history[7]);
    assert!(Bundle::load(&cfg.common.out).unwrap().manifest.metrics.contains_key("test_zero_shot_accuracy"));

    // Another run distils the saved matcher without training one.
    let mut again = config(dir.path());
    again.common.epochs = 1;
    again.common.out = dir.path().join("clip-again");
    again.cprd = cfg.cprd.clone().map(|c| CprdSettings { teacher: Some(cfg.teacher_path()), ..c });
    let summary = image_text::train(&again).unwrap();
    let stages: Vec<_> = summary.history.iter().map(|r| r.stage.clone().unwrap()).collect();
    assert_eq!(stages, ["student"]);

    // A matcher of another architecture is refused with what to fix.
    let mut wrong = config(dir.path());
    wrong.common.out = dir.path().join("clip-wrong");
    wrong.cprd = again.cprd.clone().map(|c| CprdSettings { teacher_hidden: 8, ..c });
    let err = image_text::train(&wrong).err().unwrap().to_string();
    assert!(err.contains("another architecture"), "{err}");
}
