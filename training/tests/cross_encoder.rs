//! The cross-encoder family on the tiny WordNet fixture: a tiny imported embedder starts the model
//! and mines its hard negatives, the listwise loss trains it through the shared loop, and the
//! exported `cross_encoder` bundle reranks the miner's candidates as served.

use std::path::Path;

use tandem_runtime::bundle::{Bundle, FamilySpec};
use tandem_runtime::import::{import_sentence_transformers, ImportOptions};
use tandem_runtime::models::sentence_encoder::Pooling;
use tandem_runtime::testing_text::write_tiny_sentence_transformers_dir;
use tandem_training::families::cross_encoder::{self, CrossEncoderConfig};
use tandem_training::families::embedder::WordNetSource;

#[test]
fn a_tiny_cross_encoder_trains_on_mined_negatives_and_exports_a_served_reranker() {
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("hf");
    write_tiny_sentence_transformers_dir(&hf, 1, Pooling::Mean, true).unwrap();
    let init = dir.path().join("tiny");
    import_sentence_transformers(&hf, &init, &ImportOptions { name: "tiny".into(), version: "1".into() }).unwrap();

    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wordnet");
    let out = dir.path().join("pairs");
    let mut cfg = CrossEncoderConfig::new(init.clone(), init.clone(), WordNetSource::Dir(fixture), out.clone());
    (cfg.run.common.epochs, cfg.run.common.batch_size, cfg.run.common.progress) = (12, 4, false);
    (cfg.mining.per_query, cfg.mining.depth) = (3, 10);
    (cfg.run.val_queries, cfg.run.val_corpus, cfg.rerank_top) = (50, 100, 5);
    cfg.run.common.optim.lr = 3e-3;
    let summary = cross_encoder::train(&cfg).unwrap();
    let losses: Vec<f64> = summary.history.iter().map(|r| r.train_loss).collect();
    assert!(losses.last().unwrap() < &(losses[0] * 0.7), "the listwise loss falls: {losses:?}");

    let bundle = Bundle::load(&out).unwrap();
    let FamilySpec::CrossEncoder(spec) = &bundle.manifest.family else { panic!("a cross_encoder bundle") };
    assert_eq!((spec.pooling, spec.max_seq_length), (Pooling::Mean, 24));
    assert!(bundle.file(&spec.tokenizer).is_ok(), "the tokenizer ships in the bundle");
    let init_id = Bundle::load(&init).unwrap().id;
    assert_eq!(bundle.manifest.provenance.teacher.as_deref(), Some(init_id.as_str()));
    assert_eq!(bundle.manifest.provenance.hyperparameters["miner"], init_id.as_str());
    for key in ["test_accuracy", "test_recall_at_10", "val_ndcg_at_10", "params"] {
        assert!(bundle.manifest.metrics.contains_key(key), "{key} in {:?}", bundle.manifest.metrics);
    }

    let refused = CrossEncoderConfig {
        mining: tandem_training::retrieval::MiningOptions { per_query: 0, ..cfg.mining.clone() },
        ..cfg.clone()
    };
    assert!(cross_encoder::train(&refused).unwrap_err().to_string().contains("--negatives"));
    // A cross-encoder may start another (AR2 continues its ranker); an image model may not.
    let classifier = tandem_runtime::testing::write_tiny_classifier_bundle(dir.path(), "digits", "1").unwrap();
    let mut not_text = CrossEncoderConfig { init: classifier, ..cfg };
    not_text.run.common.out = dir.path().join("again");
    let err = cross_encoder::train(&not_text).unwrap_err().to_string();
    assert!(err.contains("is a classifier bundle, not an embedder or a cross_encoder"), "{err}");
}
