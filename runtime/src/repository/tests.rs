//! The models directory against real tiny bundles: swaps, refused bundles, the watcher's pass,
//! and paths that must stay inside.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;

use super::*;
use crate::bundle::{Bundle, WEIGHTS_FILE};
use crate::families::classifier::Classifier;
use crate::family::Family;
use crate::image::GrayImage;
use crate::testing::write_tiny_classifier_bundle_at;
use crate::RuntimeConfig;

struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    runtime: Arc<Runtime>,
    repo: Arc<Repository>,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("models");
    std::fs::create_dir(&root).unwrap();
    let runtime = Arc::new(Runtime::new(RuntimeConfig::default()));
    let repo = Repository::open(runtime.clone(), &root).unwrap();
    Setup { _tmp: tmp, root, runtime, repo }
}

fn image(seed: u32) -> GrayImage {
    let rows: Vec<Vec<f64>> =
        (0..8).map(|r| (0..8).map(|c| f64::from((seed * 37 + r * 11 + c * 5) % 256)).collect()).collect();
    GrayImage::from_rows(&rows).unwrap()
}

/// The probabilities of the bundle in `dir`, computed in this test without the runtime.
fn reference(dir: &Path, img: &GrayImage) -> Vec<f32> {
    let classifier = Classifier::from_bundle(&Bundle::load(dir).unwrap(), &Device::Cpu).unwrap();
    classifier.run_batch(&[classifier.prepare(img)]).unwrap()[0].to_vec()
}

async fn served(runtime: &Runtime, id: &str, img: &GrayImage) -> Vec<f32> {
    runtime.class_probabilities(id, vec![img.clone()]).await.unwrap().probabilities.remove(0)
}

#[track_caller]
fn assert_close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6), "{a:?} != {b:?}");
}

fn status_of(repo: &Repository, location: &str) -> ModelStatus {
    repo.statuses().into_iter().find(|s| s.location.to_string() == location).expect("the location is listed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_swaps_new_requests_to_the_new_bundle_while_held_ones_finish_on_the_old() {
    let s = setup();
    let dir = s.root.join("digits");
    write_tiny_classifier_bundle_at(&dir, "digits", "1").unwrap();
    let report = s.repo.poll().await.unwrap();
    assert_eq!(report.loaded, ["digits@1"]);
    let img = image(3);
    let old_probs = reference(&dir, &img);
    // Served once, so that the cache holds the old answer for this image.
    assert_close(&served(&s.runtime, "digits", &img).await, &old_probs);
    // A request in flight holds the model it resolved, as every entry point does.
    let in_flight = s.runtime.typed::<Classifier>("digits").unwrap();
    let old_id = in_flight.info.bundle_id.clone();

    write_tiny_classifier_bundle_at(&dir, "digits", "1").unwrap();
    let new_probs = reference(&dir, &img);
    assert!(old_probs.iter().zip(&new_probs).any(|(a, b)| (a - b).abs() > 1e-4), "new weights differ");
    let info = s.repo.reload("digits@1".into()).await.unwrap();
    assert_ne!(info.bundle_id, old_id);

    // New lookups get the new bundle, and the cache (keyed by bundle id) does not answer for it.
    assert_close(&served(&s.runtime, "digits", &img).await, &new_probs);
    // The held model still answers, with the old weights.
    let out = s.runtime.infer(&in_flight, vec![in_flight.family.prepare(&img)]).await.unwrap();
    assert_close(&out[0], &old_probs);
    let status = status_of(&s.repo, "digits");
    assert_eq!((status.state, status.error), (ModelState::Ready, None));
}

/// Ways a bundle on disk can go bad, each applied to a serving bundle `dir`.
#[derive(Debug, Clone, Copy)]
enum Damage {
    TruncatedWeights,
    FlippedByte,
    IncompatibleManifest,
    WrongName,
    ManifestMissing,
}

fn damage(dir: &Path, how: Damage) {
    let weights = dir.join(WEIGHTS_FILE);
    let manifest = dir.join("manifest.json");
    match how {
        Damage::TruncatedWeights => {
            let bytes = std::fs::read(&weights).unwrap();
            std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
        }
        Damage::FlippedByte => {
            let mut bytes = std::fs::read(&weights).unwrap();
            let at = bytes.len() - 3;
            bytes[at] ^= 0x40;
            std::fs::write(&weights, bytes).unwrap();
        }
        Damage::IncompatibleManifest => {
            let mut value: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
            value["family"]["architecture"]["num_classes"] = 3.into();
            value["family"]["labels"] = serde_json::json!(["a", "b", "c"]);
            std::fs::write(&manifest, serde_json::to_vec(&value).unwrap()).unwrap();
        }
        Damage::WrongName => {
            let mut value: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
            value["name"] = "other".into();
            std::fs::write(&manifest, serde_json::to_vec(&value).unwrap()).unwrap();
        }
        Damage::ManifestMissing => std::fs::remove_file(&manifest).unwrap(),
    }
}

/// Damages the serving bundle, reloads it both ways (on request and by the watcher's pass), and
/// checks that it is refused with `expect` in the error while the old bundle keeps serving; then
/// repairs it and checks that the next pass serves the repair.
async fn check_refused(how: Damage, expect: &str) {
    let s = setup();
    let dir = s.root.join("m");
    write_tiny_classifier_bundle_at(&dir, "m", "1").unwrap();
    s.repo.poll().await.unwrap();
    let old = s.runtime.model("m").unwrap();
    let img = image(5);
    let old_probs = reference(&dir, &img);
    damage(&dir, how);

    let err = s.repo.reload("m".into()).await.expect_err("a damaged bundle is refused").to_string();
    assert!(err.contains(expect), "{how:?}: {err}");
    assert!(!err.contains(&s.root.display().to_string()), "{how:?}: errors name paths relative to the dir: {err}");
    let report = s.repo.poll().await.unwrap();
    assert!(report.is_empty(), "{how:?}: an unchanged refused bundle is not tried again: {report:?}");
    assert_eq!(s.runtime.model("m").unwrap().bundle_id, old.bundle_id, "{how:?}");
    assert_close(&served(&s.runtime, "m", &img).await, &old_probs);
    let status = status_of(&s.repo, "m");
    assert_eq!(status.state, ModelState::Ready, "{how:?}");
    assert!(status.error.as_deref().is_some_and(|e| e.contains(expect)), "{how:?}: {status:?}");

    write_tiny_classifier_bundle_at(&dir, "m", "1").unwrap();
    let report = s.repo.poll().await.unwrap();
    assert_eq!(report.reloaded, ["m@1"], "{how:?}: {report:?}");
    assert_close(&served(&s.runtime, "m", &img).await, &reference(&dir, &img));
    assert_eq!(status_of(&s.repo, "m").error, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_bundles_are_refused_and_the_old_version_keeps_serving() {
    check_refused(Damage::TruncatedWeights, "sha256 mismatch").await;
    check_refused(Damage::FlippedByte, "sha256 mismatch").await;
    check_refused(Damage::IncompatibleManifest, "expected shape").await;
    check_refused(Damage::WrongName, "names the model \"other\"").await;
    check_refused(Damage::ManifestMissing, "m: cannot read manifest.json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_load_new_versions_unload_removed_ones_and_retry_only_changed_ones() {
    let s = setup();
    write_tiny_classifier_bundle_at(&s.root.join("m/1"), "m", "1").unwrap();
    assert_eq!(s.repo.poll().await.unwrap().loaded, ["m@1"]);

    // A new version directory whose weights are not there yet fails, then loads once they are.
    let two = s.root.join("m/2");
    write_tiny_classifier_bundle_at(&two, "m", "2").unwrap();
    let weights = std::fs::read(two.join(WEIGHTS_FILE)).unwrap();
    std::fs::remove_file(two.join(WEIGHTS_FILE)).unwrap();
    let report = s.repo.poll().await.unwrap();
    assert_eq!(report.failed.len(), 1, "{report:?}");
    let status = status_of(&s.repo, "m/2");
    assert_eq!((status.state, status.id.as_str(), status.model.is_none()), (ModelState::Failed, "m@2", true));
    assert_eq!(s.runtime.model("m").unwrap().id, "m@1");
    std::fs::write(two.join(WEIGHTS_FILE), weights).unwrap();
    assert_eq!(s.repo.poll().await.unwrap().loaded, ["m@2"]);
    assert_eq!(s.runtime.model("m").unwrap().id, "m@2", "a bare name is the highest version");

    assert!(s.repo.poll().await.unwrap().is_empty(), "nothing changed, nothing is done");
    std::fs::remove_dir_all(s.root.join("m/1")).unwrap();
    assert_eq!(s.repo.poll().await.unwrap().unloaded, ["m@1"]);
    assert!(matches!(s.runtime.model("m@1"), Err(Error::NotFound(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_the_version_replaces_the_old_id_in_one_step() {
    let s = setup();
    let dir = s.root.join("m");
    write_tiny_classifier_bundle_at(&dir, "m", "1").unwrap();
    s.repo.load("m".into(), None).await.unwrap();
    write_tiny_classifier_bundle_at(&dir, "m", "2").unwrap();
    assert_eq!(s.repo.reload("m@1".into()).await.unwrap().id, "m@2");
    assert!(matches!(s.runtime.model("m@1"), Err(Error::NotFound(_))));
    assert_eq!(s.runtime.models().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_are_idempotent_and_unloads_stick_until_the_next_load() {
    let s = setup();
    write_tiny_classifier_bundle_at(&s.root.join("m"), "m", "1").unwrap();
    let first = s.repo.load("m".into(), Some("1".into())).await.unwrap();
    let again = s.repo.load("m".into(), None).await.unwrap();
    assert_eq!((first.created, again.created), (true, false));
    assert!(matches!(s.repo.load("m".into(), Some("2".into())).await, Err(Error::NotFound(_))));

    s.repo.unload("m".into()).await.unwrap();
    assert!(s.runtime.models().is_empty());
    assert!(s.repo.statuses().is_empty());
    assert!(s.repo.poll().await.unwrap().is_empty(), "the watcher leaves an unloaded bundle alone");
    assert!(matches!(s.repo.unload("m".into()).await, Err(Error::NotFound(_))));
    assert!(s.repo.load("m".into(), None).await.unwrap().created);
}

#[track_caller]
fn check_outside(res: Result<LoadOutcome>, expect: &str) {
    match res {
        Err(Error::InvalidInput(msg)) => assert!(msg.contains(expect), "{msg}"),
        other => panic!("expected an invalid-input error with {expect:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_symlinks_leading_outside_are_refused() {
    let s = setup();
    let outside = s.root.parent().unwrap().join("outside");
    write_tiny_classifier_bundle_at(&outside, "evil", "1").unwrap();
    check_outside(s.repo.load("../outside".into(), None).await, "must be 1 to 128 ASCII letters");
    check_outside(s.repo.load(outside.display().to_string(), None).await, "must be 1 to 128 ASCII letters");
    check_outside(s.repo.load("m".into(), Some("../1".into())).await, "version \"../1\"");

    std::os::unix::fs::symlink(&outside, s.root.join("evil")).unwrap();
    check_outside(s.repo.load("evil".into(), None).await, "evil resolves outside the models directory");
    let report = s.repo.poll().await.unwrap();
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(status_of(&s.repo, "evil").state, ModelState::Failed);

    // A bundle whose weights are a symlink to a file outside is refused as a bad bundle.
    let dir = s.root.join("m");
    write_tiny_classifier_bundle_at(&dir, "m", "1").unwrap();
    std::fs::remove_file(dir.join(WEIGHTS_FILE)).unwrap();
    std::os::unix::fs::symlink(outside.join(WEIGHTS_FILE), dir.join(WEIGHTS_FILE)).unwrap();
    let err = s.repo.load("m".into(), None).await.expect_err("refused");
    assert!(matches!(&err, Error::Bundle(msg) if msg.contains("m/model.safetensors resolves outside")), "{err}");
    assert!(s.runtime.models().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_loaded_elsewhere_are_neither_reloaded_nor_unloaded_nor_shadowed() {
    let s = setup();
    let pinned = s.root.parent().unwrap().join("pinned");
    write_tiny_classifier_bundle_at(&pinned, "p", "1").unwrap();
    s.runtime.load(&pinned).unwrap();
    assert!(matches!(s.repo.reload("p".into()).await, Err(Error::Conflict(_))));
    assert!(matches!(s.repo.unload("p@1".into()).await, Err(Error::Conflict(_))));

    write_tiny_classifier_bundle_at(&s.root.join("p"), "p", "1").unwrap();
    let err = s.repo.load("p".into(), None).await.expect_err("refused");
    assert!(
        matches!(&err, Error::Conflict(msg) if msg.contains("already served by a model loaded from elsewhere")),
        "{err}"
    );
    assert_eq!(s.runtime.model("p").unwrap().bundle_id, Bundle::load(&pinned).unwrap().id);
}
