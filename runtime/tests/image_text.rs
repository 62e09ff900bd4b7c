//! The image–text family on the tiny bundle: texts and images embedded through the shared
//! request path (batching, caching) equal to the model run directly, zero-shot classification
//! against the bundle's class names or a request's labels, and the kind and input checks.

use std::path::Path;
use std::time::Duration;

use candle_core::{Device, Tensor};
use tandem_runtime::bundle::Bundle;
use tandem_runtime::image::GrayImage;
use tandem_runtime::models::image_text::ImageText;
use tandem_runtime::testing::{write_tiny_classifier_bundle, write_tiny_image_text_bundle};
use tandem_runtime::text::TextTokenizer;
use tandem_runtime::{
    BatchConfig, ClassifyRequest, DelayPolicy, EmbedRequest, Error, ImageTextEmbedRequest, ImageTextInput, Runtime,
    RuntimeConfig, ZeroShotRequest,
};

/// A runtime serving the tiny bundle `tmp/clip`, written first unless it exists.
fn runtime(tmp: &Path, max_batch_size: usize, cache_capacity: u64) -> Runtime {
    let batch = BatchConfig {
        max_batch_size,
        max_batch_delay: Duration::from_millis(20),
        delay_policy: DelayPolicy::Fixed,
        ..Default::default()
    };
    let rt = Runtime::new(RuntimeConfig { batch, cache_capacity });
    let dir = tmp.join("clip");
    if !dir.exists() {
        write_tiny_image_text_bundle(tmp, "clip").unwrap();
    }
    rt.load(&dir).unwrap();
    rt
}

/// A 28×28 image whose pixels depend on `seed`.
fn image(seed: usize) -> GrayImage {
    let pixels = (0..28 * 28).map(|i| ((i * (seed + 3) * 37 + seed * 11) % 256) as f32).collect();
    GrayImage::from_pixels(28, 28, pixels).unwrap()
}

fn inputs() -> Vec<ImageTextInput> {
    vec![
        ImageTextInput::Text("a photo of a sneaker".into()),
        ImageTextInput::Image(image(0)),
        ImageTextInput::Text("bag".into()),
        ImageTextInput::Image(image(1)),
        ImageTextInput::Image(image(2)),
    ]
}

fn embed_request(inputs: Vec<ImageTextInput>) -> ImageTextEmbedRequest {
    ImageTextEmbedRequest { inputs, truncate: true, normalize: None, dimensions: None }
}

/// The bundle's model run directly on each input alone.
fn direct(dir: &Path, inputs: &[ImageTextInput]) -> Vec<Vec<f32>> {
    let bundle = Bundle::load(dir).unwrap();
    let spec = bundle.manifest.image_text().unwrap();
    let model = ImageText::new(&spec.architecture, bundle.var_builder(&Device::Cpu)).unwrap();
    let tokenizer = TextTokenizer::from_bytes(bundle.file(&spec.tokenizer).unwrap(), spec.max_seq_length).unwrap();
    inputs
        .iter()
        .map(|input| match input {
            ImageTextInput::Text(text) => model.embed_texts(&[&tokenizer.encode(text, true).unwrap().ids]).unwrap(),
            ImageTextInput::Image(image) => {
                let x: Vec<f32> = image.resized(28, 28).iter().map(|p| (p / 255.0 - 0.5) / 0.5).collect();
                model.embed_images(&Tensor::from_vec(x, (1, 1, 28, 28), &Device::Cpu).unwrap()).unwrap()
            }
        })
        .map(|mut v| v.remove(0))
        .collect()
}

#[track_caller]
fn assert_close(got: &[Vec<f32>], want: &[Vec<f32>]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        let diff = g.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(diff < 1e-5, "{g:?} against {w:?}");
    }
}

#[tokio::test]
async fn texts_and_images_embed_as_the_model_computes_them_whatever_the_batching() {
    let tmp = tempfile::tempdir().unwrap();
    let small_batches = runtime(tmp.path(), 2, 0);
    let direct = direct(&tmp.path().join("clip"), &inputs());
    let res = small_batches.embed_image_text("clip", embed_request(inputs())).await.unwrap();
    assert_eq!(res.model, "clip@1");
    assert_close(&res.embeddings, &direct);
    let rt = runtime(tmp.path(), 64, 100);
    let first = rt.embed_image_text("clip", embed_request(inputs())).await.unwrap();
    assert_close(&first.embeddings, &direct);
    assert!(first.usage.n_tokens > 0 && first.usage.n_truncated == 0, "{:?}", first.usage);
    for v in &first.embeddings {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "unit length, found {norm}");
    }
    let misses = rt.cache_stats().misses;
    let again = rt.embed_image_text("clip", embed_request(inputs())).await.unwrap();
    assert_eq!(again.embeddings, first.embeddings);
    assert_eq!(rt.cache_stats().misses, misses, "the second request is answered from the cache");

    let cut = ImageTextEmbedRequest { dimensions: Some(3), ..embed_request(inputs()) };
    let cut = rt.embed_image_text("clip", cut).await.unwrap();
    assert!(cut.embeddings.iter().all(|v| v.len() == 3 && (v.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5));
}

#[tokio::test]
async fn zero_shot_classification_scores_the_bundles_classes_or_the_requests_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path(), 8, 100);
    let images = vec![image(0), image(1)];
    let request = |labels: Option<Vec<String>>, top_k| ZeroShotRequest { images: images.clone(), labels, top_k };
    let all = rt.classify_zero_shot("clip", request(None, 100)).await.unwrap();
    assert_eq!(all.predictions.len(), 2);
    for predictions in &all.predictions {
        assert_eq!(predictions.len(), 10, "top_k is capped at the number of labels");
        let sum: f32 = predictions.iter().map(|p| p.score).sum();
        assert!((sum - 1.0).abs() < 1e-4, "probabilities sum to 1, found {sum}");
        assert!(predictions.windows(2).all(|w| w[0].score >= w[1].score));
        assert!(predictions.iter().any(|p| p.label == "Ankle boot"));
    }

    // Free-text labels: the probabilities are the softmax of s·cos with the labels' embeddings.
    let labels: Vec<String> = ["a photo of a bag", "trouser"].map(String::from).to_vec();
    let res = rt.classify_zero_shot("clip", request(Some(labels.clone()), 1)).await.unwrap();
    assert_eq!(res.predictions[0].len(), 1);
    let texts: Vec<ImageTextInput> = labels.iter().cloned().map(ImageTextInput::Text).collect();
    let vectors = rt.embed_image_text("clip", embed_request(texts)).await.unwrap().embeddings;
    let image_vector = rt.embed_image_text("clip", embed_request(vec![ImageTextInput::Image(image(0))])).await;
    let image_vector = image_vector.unwrap().embeddings.remove(0);
    let bundle = Bundle::load(&tmp.path().join("clip")).unwrap();
    let spec = bundle.manifest.image_text().unwrap();
    let scale = ImageText::new(&spec.architecture, bundle.var_builder(&Device::Cpu)).unwrap().logit_scale();
    let logits: Vec<f32> =
        vectors.iter().map(|t| scale * t.iter().zip(&image_vector).map(|(a, b)| a * b).sum::<f32>()).collect();
    let best = if logits[0] >= logits[1] { 0 } else { 1 };
    let p = 1.0 / (1.0 + (logits[1 - best] - logits[best]).exp());
    assert_eq!(res.predictions[0][0].label, labels[best]);
    assert!((res.predictions[0][0].score - p).abs() < 1e-4, "{} against {p}", res.predictions[0][0].score);
}

#[tokio::test]
async fn wrong_kinds_and_bad_inputs_are_refused_with_what_to_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path(), 8, 0);
    rt.load(&write_tiny_classifier_bundle(tmp.path(), "digits", "1").unwrap()).unwrap();

    let wrong = rt.embed_image_text("digits", embed_request(inputs())).await.unwrap_err();
    assert!(matches!(wrong, Error::WrongKind { .. }), "{wrong}");
    let text_only = EmbedRequest { texts: vec!["bag".into()], truncate: true, normalize: None, dimensions: None };
    let wrong = rt.embed("clip", text_only).await.unwrap_err();
    assert!(matches!(wrong, Error::WrongKind { .. }), "{wrong}");
    let wrong = rt.classify("clip", ClassifyRequest { images: vec![image(0)], top_k: 1 }).await.unwrap_err();
    assert!(matches!(wrong, Error::WrongKind { .. }), "{wrong}");

    #[track_caller]
    fn invalid(res: tandem_runtime::Result<impl std::fmt::Debug>, expect: &str) {
        match res {
            Err(Error::InvalidInput(message)) => assert!(message.contains(expect), "{message:?} lacks {expect:?}"),
            other => panic!("expected invalid input about {expect:?}, got {other:?}"),
        }
    }
    invalid(rt.embed_image_text("clip", embed_request(Vec::new())).await, "at least one input");
    let dimensions = ImageTextEmbedRequest { dimensions: Some(9), ..embed_request(inputs()) };
    invalid(rt.embed_image_text("clip", dimensions).await, "dimensions must be between 1 and 8");
    let long = ImageTextInput::Text(["a bag"; 40].join(" "));
    let refused =
        ImageTextEmbedRequest { truncate: false, ..embed_request(vec![ImageTextInput::Image(image(0)), long]) };
    invalid(rt.embed_image_text("clip", refused).await, "input 1");
    let zero_shot = |labels: Vec<&str>, top_k| ZeroShotRequest {
        images: vec![image(0)],
        labels: Some(labels.into_iter().map(String::from).collect()),
        top_k,
    };
    invalid(rt.classify_zero_shot("clip", zero_shot(vec![], 1)).await, "at least one label");
    invalid(rt.classify_zero_shot("clip", zero_shot(vec!["bag", ""], 1)).await, "labels[1] is blank");
    invalid(rt.classify_zero_shot("clip", zero_shot(vec!["bag"], 0)).await, "top_k");
    let no_images = ZeroShotRequest { images: Vec::new(), labels: None, top_k: 1 };
    invalid(rt.classify_zero_shot("clip", no_images).await, "at least one image");
}
