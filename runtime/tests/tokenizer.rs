//! Image tokenizers end to end through the runtime: tokenize, detokenize, classify by semantic
//! tokens, and the errors of tokens that do not fit the model.

use tandem_runtime::image::GrayImage;
use tandem_runtime::testing::write_tiny_tokenizer_bundle;
use tandem_runtime::{Error, Runtime, RuntimeConfig, TokenGrid};

fn runtime() -> (tempfile::TempDir, Runtime, String) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_tiny_tokenizer_bundle(tmp.path(), "tok").unwrap();
    let rt = Runtime::new(RuntimeConfig { cache_capacity: 0, ..Default::default() });
    let id = rt.load(&dir).unwrap().id;
    (tmp, rt, id)
}

fn image(seed: u32) -> GrayImage {
    let pixels = (0..28 * 28).map(|i| ((i as u32 * 37 + seed * 101) % 256) as f32).collect();
    GrayImage::from_pixels(28, 28, pixels).unwrap()
}

#[tokio::test]
async fn tokens_round_trip_to_an_image_of_the_model_size() {
    let (_tmp, rt, id) = runtime();
    let out = rt.tokenize(&id, vec![image(1), image(2)]).await.unwrap();
    assert_eq!(out.tokens.len(), 2);
    let t = &out.tokens[0];
    assert_eq!(t.grid, TokenGrid { height: 7, width: 7, depth: 2 });
    assert_eq!(t.pixel_tokens.len(), 98);
    assert_eq!(t.semantic_tokens.as_ref().map(Vec::len), Some(98));
    assert!(t.pixel_tokens.iter().all(|&c| c < 64));
    let alone = rt.tokenize(&id, vec![image(2)]).await.unwrap();
    assert_eq!(alone.tokens[0], out.tokens[1], "an image's tokens do not depend on its company");

    let tokens: Vec<i64> = t.pixel_tokens.iter().map(|&c| i64::from(c)).collect();
    let back = rt.detokenize(&id, &tokens, t.grid).await.unwrap();
    assert_eq!((back.image.width, back.image.height, back.image.pixels.len()), (28, 28, 784));
    assert_eq!(&back.image.png[1..4], b"PNG");
    let again = rt.detokenize(&id, &tokens, t.grid).await.unwrap();
    assert_eq!(again.image.pixels, back.image.pixels, "decoding is deterministic");

    let classes = rt.classify_by_tokens(&id, vec![image(1)], 3).await.unwrap();
    assert_eq!(classes.predictions[0].len(), 3);
    let probs = rt.token_class_probabilities(&id, vec![image(1)]).await.unwrap();
    assert!((probs.probabilities[0].iter().sum::<f32>() - 1.0).abs() < 1e-4);
}

#[tokio::test]
async fn tokens_that_do_not_fit_the_model_are_invalid_input() {
    let (_tmp, rt, id) = runtime();
    let grid = rt.token_grid(&id).unwrap();
    let ok = vec![0i64; grid.len()];
    for (tokens, grid, what) in [
        (ok.clone(), TokenGrid { depth: 3, ..grid }, "a grid of another depth"),
        (ok[1..].to_vec(), grid, "one token short"),
        ([vec![64i64], ok[1..].to_vec()].concat(), grid, "an id past the codebook"),
        ([vec![-1i64], ok[1..].to_vec()].concat(), grid, "a negative id"),
    ] {
        match rt.detokenize(&id, &tokens, grid).await {
            Err(Error::InvalidInput(_)) => {}
            other => panic!("{what}: expected invalid input, got {:?}", other.map(|r| r.model)),
        }
    }
    assert!(matches!(rt.tokenize(&id, vec![]).await, Err(Error::InvalidInput(_))));
}
