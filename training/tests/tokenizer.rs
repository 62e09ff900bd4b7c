//! The image tokenizer family on the embedded digits, at test scale: the teacher stage, the
//! tokenizer stage, export as an `image_tokenizer` bundle that the runtime serves, a saved teacher
//! reused by a baseline run, and resuming.

use std::path::Path;

use tandem_runtime::bundle::Bundle;
use tandem_runtime::image::GrayImage;
use tandem_runtime::models::image_tokenizer::{ImageTokenizerConfig, TokenizerLayout};
use tandem_runtime::models::vit::VitConfig;
use tandem_runtime::{Runtime, RuntimeConfig};
use tandem_training::data::{self, DatasetName, Split};
use tandem_training::families::tokenizer::{self, TokenizerConfig};

/// The test PSNR a run's bundle recorded.
fn summary_psnr(out: &Path) -> f64 {
    Bundle::load(out).unwrap().manifest.metrics["test_psnr"]
}

/// A tokenizer for the 8×8 digits: 2×2 patches on a 4×4 grid, a 3-layer ViT of width 32.
fn arch(layout: TokenizerLayout) -> ImageTokenizerConfig {
    let mut a = ImageTokenizerConfig::small([1, 8, 8], 10, layout);
    a.encoder = VitConfig { patch: 2, dim: 32, depth: 3, heads: 2, ..a.encoder };
    (a.pixel_layer, a.shortcut_layer, a.semantic_layer) = (2, Some(1), 2);
    (a.codebook_size, a.code_dim, a.decoder_channels, a.decoder_blocks) = (64, 8, 16, 1);
    a
}

fn config(out: &Path, layout: TokenizerLayout) -> TokenizerConfig {
    let mut cfg =
        TokenizerConfig::new(arch(layout), DatasetName::Digits, out.with_file_name("data"), out.to_path_buf());
    (cfg.teacher_epochs, cfg.common.epochs, cfg.common.batch_size, cfg.val_images, cfg.common.progress) =
        (4, 2, 32, 200, false);
    cfg.common.optim.lr = 2e-3;
    cfg
}

#[test]
fn a_tiny_dual_tokenizer_trains_exports_serves_and_lends_its_teacher() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("dual");
    let cfg = config(&out, TokenizerLayout::Dual);
    let summary = tokenizer::train(&cfg).unwrap();
    let stages: Vec<_> = summary.history.iter().map(|r| r.stage.clone().unwrap()).collect();
    assert_eq!(stages, ["teacher", "teacher", "teacher", "teacher", "tokenizer", "tokenizer"]);
    assert!(summary.history[3].val_accuracy > 0.5, "the teacher learns: {}", summary.history[3].val_accuracy);
    assert!(cfg.teacher_path().exists(), "the teacher is saved for other runs");
    assert!(cfg.grid_path(6).exists(), "each tokenizer epoch draws its reconstructions");

    // It learned to reconstruct: better than an untrained tokenizer of the same architecture.
    let bundle = Bundle::load(&out).unwrap();
    let psnr = bundle.manifest.metrics["val_psnr"];
    let untrained = {
        let vars = candle_nn::VarMap::new();
        let net = tandem_runtime::models::image_tokenizer::ImageTokenizer::new(
            &cfg.arch,
            candle_nn::VarBuilder::from_varmap(&vars, candle_core::DType::F32, &candle_core::Device::Cpu),
        )
        .unwrap();
        let val = data::load(DatasetName::Digits, Split::Val, Path::new("")).unwrap();
        tokenizer::measure(&net, &val, 200, &candle_core::Device::Cpu).unwrap().psnr()
    };
    eprintln!("val PSNR {psnr:.2} dB, untrained {untrained:.2}, metrics {:?}", bundle.manifest.metrics);
    assert!(psnr > untrained + 6.0, "val PSNR {psnr:.2} dB against {untrained:.2} untrained");
    assert!(bundle.manifest.metrics["val_semantic_accuracy"] > 0.3);

    // Served: tokenize, then detokenize what it gave.
    let rt = Runtime::new(RuntimeConfig::default());
    let id = rt.load(&out).unwrap().id;
    let test = data::load(DatasetName::Digits, Split::Test, Path::new("")).unwrap();
    let pixels = test.image(0).iter().map(|&p| f32::from(p)).collect();
    let image = GrayImage::from_pixels(8, 8, pixels).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let tokens = runtime.block_on(rt.tokenize(&id, vec![image])).unwrap();
    let t = &tokens.tokens[0];
    let ids: Vec<i64> = t.pixel_tokens.iter().map(|&c| i64::from(c)).collect();
    let back = runtime.block_on(rt.detokenize(&id, &ids, t.grid)).unwrap();
    assert_eq!(back.image.pixels.len(), 64);

    // The benchmark's figures of the bundle: reconstruction, semantics and codebooks.
    let judge = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/digits-teacher");
    let report =
        tokenizer::evaluate::evaluate(&out, DatasetName::Digits, Path::new(""), Split::Test, None, &judge, 500)
            .unwrap();
    assert_eq!((report.n, report.layout.as_str()), (360, "dual"));
    assert!((report.psnr - summary_psnr(&out)).abs() < 1e-9, "the test PSNR is the one the run reported");
    assert!(report.ssim > 0.0 && report.ssim < 1.0 && report.fid_cnn > 0.0);
    assert!(report.probe_semantic.unwrap() > 0.3 && report.probe_pixel > 0.3, "{report:?}");
    assert_eq!(report.codebooks["semantic"].len(), 2, "usage per depth");
    assert!(report.codebooks["pixel"].iter().all(|d| d.perplexity >= 1.0 && d.usage > 0.0));

    // A baseline starts from the saved teacher and skips the teacher stage.
    let base_out = dir.path().join("pixel");
    let mut base = config(&base_out, TokenizerLayout::PixelOnly);
    base.teacher = Some(cfg.teacher_path());
    base.common.epochs = 1;
    let summary = tokenizer::train(&base).unwrap();
    assert_eq!(summary.history.len(), 1);
    assert_eq!(summary.history[0].stage.as_deref(), Some("tokenizer"));
    assert!(!Bundle::load(&base_out).unwrap().manifest.metrics.contains_key("val_semantic_accuracy"));
}
