//! Uniform weight averaging ("model soup"): the bundle whose every weight is the mean of the same
//! weight in several bundles of one architecture.
//!
//! Students fine-tuned from one start on different samples of the data land in one basin of the
//! loss, and the mean of their weights often ranks better than any of them: each saw a different
//! slice of the pairs, and averaging keeps what they agree on while cancelling part of each one's
//! noise. Averaging bundles that did not start from one model gives garbage, which no check here
//! can see; what is checked is that the ingredients are interchangeable: one family section, the
//! same tokenizer and other files, and the same tensors with the same shapes and types.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::json;
use tandem_runtime::bundle::{self, Bundle, Manifest, Provenance, WEIGHTS_FILE};

use crate::{Error, Result};

/// What [`average_bundles`] wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AverageSummary {
    /// The new bundle's directory.
    pub bundle_dir: PathBuf,
    /// Its `sha256:` id.
    pub bundle_id: String,
    /// Its `name@version`.
    pub model: String,
    /// The ingredients' bundle ids, in the order given.
    pub ingredients: Vec<String>,
    /// Tensors averaged.
    pub tensors: usize,
}

/// One ingredient: the validated bundle and its weights in their stored types.
struct Ingredient {
    bundle: Bundle,
    weights: HashMap<String, Tensor>,
}

impl Ingredient {
    fn load(dir: &Path) -> Result<Ingredient> {
        let bundle = Bundle::load(dir)?;
        // The bundle holds its weights widened to F32; the soup keeps the stored type, so read it.
        let path = dir.join(WEIGHTS_FILE);
        let weights = candle_core::safetensors::load(&path, &Device::Cpu)
            .map_err(|e| Error::InvalidData { file: path.display().to_string(), reason: e.to_string() })?;
        Ok(Ingredient { bundle, weights })
    }
}

/// Writes to `out` the bundle `name@version` whose weights are the elementwise mean of the
/// bundles in `dirs` (summed in F32 in the order given, then stored in the first one's types).
pub fn average_bundles(dirs: &[PathBuf], out: &Path, name: &str, version: &str) -> Result<AverageSummary> {
    if dirs.len() < 2 {
        return Err(Error::InvalidArgument(format!("averaging needs two bundles or more, got {}", dirs.len())));
    }
    let ingredients = dirs.iter().map(|d| Ingredient::load(d)).collect::<Result<Vec<_>>>()?;
    let first = &ingredients[0];
    for (dir, other) in dirs.iter().zip(&ingredients).skip(1) {
        check_interchangeable(first, other, &dirs[0], dir)?;
    }
    let mut names: Vec<&String> = first.weights.keys().collect();
    names.sort();
    let mut averaged = Vec::with_capacity(names.len());
    for name in names {
        let mut sum = first.weights[name].to_dtype(DType::F32)?;
        for other in &ingredients[1..] {
            sum = (sum + other.weights[name].to_dtype(DType::F32)?)?;
        }
        let mean = (sum / ingredients.len() as f64)?.to_dtype(first.weights[name].dtype())?;
        averaged.push((name.clone(), mean));
    }
    let weights = safetensors::serialize(averaged.iter().map(|(k, v)| (k.as_str(), v)), None)
        .map_err(|e| Error::InvalidData { file: WEIGHTS_FILE.into(), reason: e.to_string() })?;

    let manifest = soup_manifest(&ingredients, name, version);
    let extra: Vec<(&str, &[u8])> = first
        .bundle
        .manifest
        .files
        .iter()
        .filter(|f| f.path != WEIGHTS_FILE)
        .map(|f| Ok((f.path.as_str(), first.bundle.file(&f.path)?)))
        .collect::<Result<_>>()?;
    let files: Vec<(&str, &[u8])> = std::iter::once((WEIGHTS_FILE, weights.as_slice())).chain(extra).collect();
    let bundle_id = bundle::write_bundle_files(out, &manifest, &files)?;
    Ok(AverageSummary {
        bundle_dir: out.to_path_buf(),
        bundle_id,
        model: format!("{name}@{version}"),
        ingredients: ingredients.iter().map(|i| i.bundle.id.clone()).collect(),
        tensors: averaged.len(),
    })
}

/// Refuses ingredients that are not the same model with other weights.
fn check_interchangeable(first: &Ingredient, other: &Ingredient, first_dir: &Path, dir: &Path) -> Result<()> {
    let mismatch = |what: String| {
        Err(Error::InvalidArgument(format!(
            "{} cannot be averaged with {}: {what}",
            dir.display(),
            first_dir.display()
        )))
    };
    let family = |m: &Manifest| serde_json::to_value(&m.family).unwrap_or_default();
    if family(&first.bundle.manifest) != family(&other.bundle.manifest) {
        return mismatch(format!(
            "the family sections differ (kinds {} and {}, or their architectures or settings)",
            first.bundle.manifest.kind(),
            other.bundle.manifest.kind()
        ));
    }
    let listing = |m: &Manifest| -> BTreeMap<String, String> {
        m.files.iter().filter(|f| f.path != WEIGHTS_FILE).map(|f| (f.path.clone(), f.sha256.clone())).collect()
    };
    if listing(&first.bundle.manifest) != listing(&other.bundle.manifest) {
        return mismatch("their files besides the weights (the tokenizer, for one) differ".into());
    }
    if first.weights.len() != other.weights.len() {
        return mismatch(format!("{} tensors against {}", other.weights.len(), first.weights.len()));
    }
    for (name, tensor) in &first.weights {
        let Some(theirs) = other.weights.get(name) else {
            return mismatch(format!("it has no tensor `{name}`"));
        };
        if (theirs.dims(), theirs.dtype()) != (tensor.dims(), tensor.dtype()) {
            return mismatch(format!(
                "tensor `{name}` is {:?} {:?} there and {:?} {:?} here",
                theirs.dtype(),
                theirs.dims(),
                tensor.dtype(),
                tensor.dims()
            ));
        }
        if !tensor.dtype().is_float() {
            return mismatch(format!("tensor `{name}` holds integers, which have no mean"));
        }
    }
    Ok(())
}

/// The first ingredient's manifest under the new name, with provenance naming every ingredient.
/// Measured metrics belong to the ingredient that was measured, so only the parameter counts,
/// which the soup shares, carry over.
fn soup_manifest(ingredients: &[Ingredient], name: &str, version: &str) -> Manifest {
    let manifests: Vec<&Manifest> = ingredients.iter().map(|i| &i.bundle.manifest).collect();
    let first = manifests[0];
    let shared = |field: fn(&Provenance) -> String| {
        let value = field(&first.provenance);
        manifests.iter().all(|m| field(&m.provenance) == value).then_some(value)
    };
    let mut manifest = first.clone();
    manifest.name = name.to_owned();
    manifest.version = version.to_owned();
    manifest.created_at = bundle::now_rfc3339();
    manifest.metrics.retain(|k, _| k.starts_with("params"));
    manifest.provenance = Provenance {
        dataset: shared(|p| p.dataset.clone()).unwrap_or_else(|| "mixed".into()),
        dataset_sha256: shared(|p| p.dataset_sha256.clone()).unwrap_or_default(),
        recipe: "uniform-weight-average".into(),
        hyperparameters: BTreeMap::from([
            ("ingredients".into(), json!(ingredients.iter().map(|i| &i.bundle.id).collect::<Vec<_>>())),
            ("ingredient_models".into(), json!(ingredients.iter().map(|i| i.bundle.model_id()).collect::<Vec<_>>())),
            (
                "ingredient_recipes".into(),
                json!(manifests.iter().map(|m| m.provenance.recipe.as_str()).collect::<Vec<_>>()),
            ),
        ]),
        teacher: shared(|p| p.teacher.clone().unwrap_or_default()).filter(|t| !t.is_empty()),
    };
    manifest
}
