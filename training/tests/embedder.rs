//! The text embedder family on the tiny WordNet fixture: an imported random BERT fine-tuned with
//! in-batch negatives through the shared loop, exported with its tokenizer, evaluated as served.

use std::path::Path;

use tandem_runtime::bundle::{Bundle, FamilySpec};
use tandem_runtime::import::{import_sentence_transformers, ImportOptions};
use tandem_runtime::models::sentence_encoder::Pooling;
use tandem_runtime::testing_text::{write_tiny_cross_encoder_bundle, write_tiny_sentence_transformers_dir};
use tandem_training::families::cross_encoder::CrossEncoderConfig;
use tandem_training::families::embedder::ar2::{self, Ar2Config};
use tandem_training::families::embedder::distill::{self, DistillConfig};
use tandem_training::families::embedder::rank_distill::{self, RankDistillConfig, RankMethod, Validity};
use tandem_training::families::embedder::student::StudentShape;
use tandem_training::families::embedder::{self, EmbedderConfig, ScoreTeacher, WordNetSource};
use tandem_training::retrieval::MiningOptions;

/// A tiny random BERT of `layers` layers imported as the embedder bundle `<dir>/<name>`.
fn tiny_embedder(dir: &Path, name: &str, layers: usize) -> std::path::PathBuf {
    let hf = dir.join(format!("{name}-hf"));
    write_tiny_sentence_transformers_dir(&hf, layers, Pooling::Mean, true).unwrap();
    let out = dir.join(name);
    let options = ImportOptions { name: name.into(), version: "1".into() };
    import_sentence_transformers(&hf, &out, &options).unwrap();
    out
}

#[test]
fn a_tiny_embedder_fine_tunes_on_wordnet_pairs_and_exports_a_served_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let init = tiny_embedder(dir.path(), "tiny", 1);

    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wordnet");
    let out = dir.path().join("tuned");
    let mut cfg = EmbedderConfig::new(init.clone(), WordNetSource::Dir(fixture), out.clone());
    (cfg.run.common.epochs, cfg.run.common.batch_size, cfg.run.common.progress) = (20, 4, false);
    (cfg.run.val_queries, cfg.run.val_corpus) = (50, 100);
    cfg.run.common.optim.lr = 1e-2;
    let summary = embedder::train(&cfg).unwrap();
    let losses: Vec<f64> = summary.history.iter().map(|r| r.train_loss).collect();
    assert!(losses.last().unwrap() < &(losses[0] * 0.7), "in-batch loss falls: {losses:?}");

    assert!(!summary.history[0].extra.contains_key("hard_negatives_per_pair"), "no mining unless asked");

    // With mining, each epoch mines hard negatives with the current weights, and they join the
    // batch's columns.
    let mined_out = dir.path().join("mined");
    let mut mined = EmbedderConfig::new(init.clone(), cfg.run.wordnet.clone(), mined_out.clone());
    (mined.run.common.epochs, mined.run.common.batch_size, mined.run.common.progress) = (2, 4, false);
    (mined.run.val_queries, mined.run.val_corpus) = (50, 100);
    mined.mining = MiningOptions { per_query: 2, depth: 6, skip_top: 0, corpus_limit: None };
    mined.run.half = true;
    let summary_mined = embedder::train(&mined).unwrap();
    for record in &summary_mined.history {
        let per_pair = record.extra["hard_negatives_per_pair"];
        assert!(per_pair > 0.0 && per_pair <= 2.0, "{record:?}");
    }
    // `half` keeps a fine-tuned student in F16, and the counts keep the embeddings apart.
    let weights = std::fs::read(mined_out.join("model.safetensors")).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&weights).unwrap();
    assert!(tensors.tensors().iter().all(|(_, t)| t.dtype() == safetensors::Dtype::F16), "half stores F16");
    let metrics = Bundle::load(&mined_out).unwrap().manifest.metrics;
    assert_eq!(metrics["params"], metrics["params_embeddings"] + metrics["params_layers"]);

    let bundle = Bundle::load(&out).unwrap();
    let FamilySpec::Embedder(spec) = &bundle.manifest.family else { panic!("an embedder bundle") };
    assert!(bundle.file(&spec.tokenizer).is_ok(), "the tokenizer ships in the bundle");
    assert_eq!(bundle.manifest.provenance.teacher.as_deref(), Some(Bundle::load(&init).unwrap().id.as_str()));
    assert!(bundle.manifest.metrics.contains_key("test_recall_at_10"));
    assert_ne!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        std::fs::read(init.join("model.safetensors")).unwrap(),
        "the weights moved"
    );
}

#[test]
fn a_score_teachers_in_batch_kl_joins_the_loss_and_vanishes_when_the_teacher_is_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let init = tiny_embedder(dir.path(), "tiny", 1);
    let other = tiny_embedder(dir.path(), "other", 2);
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wordnet");
    // One epoch at a rate too small to move the weights far: the term is the teachers' disagreement.
    let first_loss = |name: &str, teacher: Option<&Path>| {
        let out = dir.path().join(name);
        let mut cfg = EmbedderConfig::new(init.clone(), WordNetSource::Dir(fixture.clone()), out.clone());
        (cfg.run.common.epochs, cfg.run.common.batch_size, cfg.run.common.progress) = (1, 4, false);
        (cfg.run.val_queries, cfg.run.val_corpus) = (20, 50);
        cfg.run.common.optim.lr = 1e-6;
        cfg.teacher = teacher.map(|bundle| ScoreTeacher { bundle: bundle.into(), weight: 1.0, temperature: 1.0 });
        let loss = embedder::train(&cfg).unwrap().history[0].train_loss;
        (loss, Bundle::load(&out).unwrap().manifest.provenance)
    };
    let (plain, _) = first_loss("plain", None);
    let (itself, _) = first_loss("itself", Some(&init));
    let (taught, provenance) = first_loss("taught", Some(&other));
    assert!(taught - plain > 0.01, "another model's scores disagree: {plain} {taught}");
    assert!(
        (itself - plain).abs() < 0.05 * (taught - plain),
        "the model's own scores add nothing: {plain} {itself} {taught}"
    );
    assert_eq!(provenance.recipe, "finetune-in-batch-negatives-score-distill");
    assert_eq!(provenance.teacher.as_deref(), Some(Bundle::load(&other).unwrap().id.as_str()));
    assert_eq!(provenance.hyperparameters["teacher_weight"], 1.0);
}

#[test]
fn a_narrow_student_cut_from_a_tiny_teacher_distils_its_vectors_and_ships_in_half_precision() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = tiny_embedder(dir.path(), "teacher", 2);

    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wordnet");
    let out = dir.path().join("student");
    let shape = StudentShape { layers: vec![1], vocab: Some(40), intermediate: Some(32) };
    let mut cfg = DistillConfig::new(teacher.clone(), WordNetSource::Dir(fixture), shape, out.clone());
    (cfg.run.common.epochs, cfg.run.common.batch_size, cfg.run.common.progress, cfg.run.half) = (15, 8, false, true);
    (cfg.run.val_queries, cfg.run.val_corpus) = (50, 100);
    cfg.run.common.optim.lr = 1e-2;
    let summary = distill::distill(&cfg).unwrap();
    let losses: Vec<f64> = summary.history.iter().map(|r| r.train_loss).collect();
    assert!(losses.last().unwrap() < &(losses[0] * 0.7), "the distillation loss falls: {losses:?}");

    let bundle = Bundle::load(&out).unwrap();
    let FamilySpec::Embedder(spec) = &bundle.manifest.family else { panic!("an embedder bundle") };
    let a = &spec.architecture;
    assert_eq!((a.num_hidden_layers, a.vocab_size, a.intermediate_size), (1, 40, 32));
    let metrics = &bundle.manifest.metrics;
    assert_eq!(metrics["params"], metrics["params_embeddings"] + metrics["params_layers"]);
    assert_eq!(metrics["params"] as usize, spec.architecture.num_params());
    assert!(metrics.contains_key("test_recall_at_10"));
    let weights = std::fs::read(out.join("model.safetensors")).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&weights).unwrap();
    assert!(tensors.tensors().iter().all(|(_, t)| t.dtype() == safetensors::Dtype::F16), "--half stores F16");
    // A second start finds the teacher's vectors beside the run instead of embedding them again.
    assert_eq!(
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| { e.as_ref().unwrap().file_name().to_string_lossy().starts_with("student.teacher-") })
            .count(),
        1
    );
}

#[test]
fn score_kl_and_cprd_distil_a_tiny_cross_encoder_into_a_student() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = tiny_embedder(dir.path(), "teacher", 2);
    let cross = write_tiny_cross_encoder_bundle(dir.path(), "cross", "1").unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wordnet");

    let mut weights = Vec::new();
    for (name, method) in [
        ("kl", RankMethod::ScoreKl),
        ("cprd", RankMethod::Cprd(Validity::Threshold(f32::NEG_INFINITY))),
        ("cprd-above", RankMethod::Cprd(Validity::AbovePositive)),
    ] {
        let out = dir.path().join(name);
        let shape = StudentShape { layers: vec![0], vocab: None, intermediate: None };
        let mut base = DistillConfig::new(teacher.clone(), WordNetSource::Dir(fixture.clone()), shape, out.clone());
        (base.run.common.epochs, base.run.common.batch_size, base.run.common.progress) = (3, 4, false);
        (base.run.val_queries, base.run.val_corpus) = (50, 100);
        base.run.common.optim.lr = 1e-2;
        let cfg = RankDistillConfig {
            base,
            cross_encoder: cross.clone(),
            method,
            beta: 1.0,
            scale: 20.0,
            teacher_temperature: 1.0,
            mining: MiningOptions { per_query: 3, depth: 8, skip_top: 0, corpus_limit: None },
            max_pairs: None,
        };
        let summary = rank_distill::rank_distill(&cfg).unwrap();
        for record in &summary.history {
            let share = record.extra["negatives_above_positive"];
            assert!((0.0..=1.0).contains(&share), "{record:?}");
            assert!(record.train_loss.is_finite());
        }
        let bundle = Bundle::load(&out).unwrap();
        assert_eq!(bundle.manifest.provenance.teacher.as_deref(), Some("cross@1"));
        assert!(bundle.manifest.metrics.contains_key("test_recall_at_10"));
        weights.push(std::fs::read(out.join("model.safetensors")).unwrap());
    }
    // The two terms train the same student differently.
    assert_ne!(weights[0], weights[1]);
}

#[test]
fn an_ar2_loop_alternates_ranker_and_retriever_and_keeps_finished_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let retriever = tiny_embedder(dir.path(), "retriever", 1);
    let ranker_init = write_tiny_cross_encoder_bundle(dir.path(), "ranker", "1").unwrap();
    let fixture = WordNetSource::Dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wordnet"));
    let out = dir.path().join("ar2");
    let mining = MiningOptions { per_query: 3, depth: 8, skip_top: 0, corpus_limit: None };

    let mut ranker = CrossEncoderConfig::new(ranker_init, retriever.clone(), fixture.clone(), out.clone());
    (ranker.run.common.batch_size, ranker.run.common.progress, ranker.mining) = (4, false, mining.clone());
    (ranker.run.val_queries, ranker.run.val_corpus, ranker.rerank_top) = (20, 100, 5);
    let shape = StudentShape { layers: Vec::new(), vocab: None, intermediate: None };
    let mut base = DistillConfig::new(retriever.clone(), fixture, shape, out.clone());
    (base.run.common.batch_size, base.run.common.progress, base.run.val_queries, base.run.val_corpus) =
        (4, false, 20, 100);
    base.run.common.optim.lr = 1e-3;
    base.init = Some(retriever.clone());
    let retriever_run = RankDistillConfig {
        base,
        cross_encoder: std::path::PathBuf::new(),
        method: RankMethod::ScoreKl,
        beta: 1.0,
        scale: 20.0,
        teacher_temperature: 1.0,
        mining,
        max_pairs: None,
    };
    let cfg = Ar2Config { retriever: retriever.clone(), ranker, retriever_run, rounds: 2, out: out.clone() };
    let rounds = ar2::ar2(&cfg).unwrap();
    assert_eq!(rounds.len(), 2);
    // Round 2's ranker mined with round 1's retriever and continued round 1's ranker.
    let ranker2 = Bundle::load(&out.join("round-2-ranker")).unwrap();
    let round1_retriever = Bundle::load(&out.join("round-1-retriever")).unwrap();
    let hyper = &ranker2.manifest.provenance.hyperparameters;
    assert_eq!(hyper["miner"].as_str(), Some(round1_retriever.id.as_str()));
    let retriever2 = Bundle::load(&out.join("round-2-retriever")).unwrap();
    assert_eq!(
        retriever2.manifest.provenance.teacher.as_deref(),
        Some(format!("{}@1", ranker2.manifest.name).as_str())
    );
    // A second call keeps what is finished.
    let modified = std::fs::metadata(out.join("round-2-retriever/manifest.json")).unwrap().modified().unwrap();
    let again = ar2::ar2(&cfg).unwrap();
    assert_eq!(again[1].retriever.bundle_id, rounds[1].retriever.bundle_id);
    assert_eq!(std::fs::metadata(out.join("round-2-retriever/manifest.json")).unwrap().modified().unwrap(), modified);
}
