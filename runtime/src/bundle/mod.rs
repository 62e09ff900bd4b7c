//! Model bundles: a directory with `manifest.json` and `model.safetensors`, identified by a sha256.
//!
//! Loading validates everything before a model is built: the manifest's schema and fields, the
//! safetensors container, and each tensor's name, dtype and shape against the architecture. Errors
//! name the file and the field or tensor.

mod manifest;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use sha2::{Digest, Sha256};

pub use manifest::{Architecture, InferenceSpec, InputSpec, Manifest, ModelKind, Provenance, SCHEMA_VERSION};

use crate::fs::atomic_write;
use crate::models::cnn::Cnn;
use crate::{Error, Result};

/// File name of the manifest inside a bundle.
pub const MANIFEST_FILE: &str = "manifest.json";
/// File name of the weights inside a bundle.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// A validated bundle, read fully into memory.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Where it was loaded from.
    pub dir: PathBuf,
    /// `sha256:<hex>` over the bundle's files; changes whenever any byte does.
    pub id: String,
    /// The parsed manifest.
    pub manifest: Manifest,
    tensors: HashMap<String, Tensor>,
}

impl Bundle {
    /// Reads and validates the bundle in `dir`.
    pub fn load(dir: &Path) -> Result<Bundle> {
        let manifest_bytes = read_file(dir, MANIFEST_FILE)?;
        let weights_bytes = read_file(dir, WEIGHTS_FILE)?;
        let manifest = parse_manifest(&manifest_bytes)?;
        let tensors = parse_weights(&weights_bytes)?;
        check_tensors(&manifest, &tensors)?;
        let id = bundle_id(&manifest_bytes, &weights_bytes);
        Ok(Bundle { dir: dir.to_path_buf(), id, manifest, tensors })
    }

    /// A `VarBuilder` over the bundle's tensors on `device`.
    pub fn var_builder(&self, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_tensors(self.tensors.clone(), DType::F32, device)
    }

    /// `name@version`.
    pub fn model_id(&self) -> String {
        format!("{}@{}", self.manifest.name, self.manifest.version)
    }
}

fn read_file(dir: &Path, name: &str) -> Result<Vec<u8>> {
    std::fs::read(dir.join(name)).map_err(|e| Error::Bundle(format!("{}: cannot read {name}: {e}", dir.display())))
}

/// Parses and checks a manifest; errors name the offending field.
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest> {
    let manifest: Manifest =
        serde_json::from_slice(bytes).map_err(|e| Error::Bundle(format!("{MANIFEST_FILE}: {e}")))?;
    validate_manifest(&manifest)?;
    Ok(manifest)
}

fn validate_manifest(m: &Manifest) -> Result<()> {
    let bad = |field: &str, msg: String| Err(Error::Bundle(format!("{MANIFEST_FILE}: field `{field}`: {msg}")));
    if m.schema_version != SCHEMA_VERSION {
        return bad("schema_version", format!("expected {SCHEMA_VERSION}, found {}", m.schema_version));
    }
    for (field, value) in [("name", &m.name), ("version", &m.version)] {
        let ok = !value.is_empty() && value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !ok {
            return bad(field, format!("must be non-empty ASCII letters, digits, '-', '_' or '.', found {value:?}"));
        }
    }
    let Architecture::Cnn(cnn) = &m.architecture;
    if let Err(e) = cnn.feature_dim() {
        return bad("architecture", e);
    }
    if cnn.input_shape != m.input.shape {
        return bad(
            "input.shape",
            format!("expected {:?} (the architecture's input), found {:?}", cnn.input_shape, m.input.shape),
        );
    }
    if m.labels.len() != cnn.num_classes {
        return bad("labels", format!("expected {} labels (num_classes), found {}", cnn.num_classes, m.labels.len()));
    }
    if m.input.dtype != "f32" {
        return bad("input.dtype", format!("expected \"f32\", found {:?}", m.input.dtype));
    }
    if !(m.input.std.is_finite() && m.input.std > 0.0 && m.input.mean.is_finite()) {
        return bad(
            "input.std",
            format!("mean and std must be finite and std positive, found {} and {}", m.input.mean, m.input.std),
        );
    }
    if let InferenceSpec::HeadMixture { alpha, beta } = m.inference {
        if !cnn.aux_head {
            return bad("inference", "head_mixture needs an architecture with aux_head".into());
        }
        if !((0.0..=1.0).contains(&alpha) && beta.is_finite() && beta > 0.0) {
            return bad("inference", format!("alpha must be in [0, 1] and beta positive, found {alpha} and {beta}"));
        }
    }
    Ok(())
}

fn parse_weights(bytes: &[u8]) -> Result<HashMap<String, Tensor>> {
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| Error::Bundle(format!("{WEIGHTS_FILE}: {e}")))?;
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(Error::Bundle(format!(
                "{WEIGHTS_FILE}: tensor `{name}`: expected dtype F32, found {:?}",
                view.dtype()
            )));
        }
        let data: Vec<f32> =
            view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        if let Some(bad) = data.iter().position(|v| !v.is_finite()) {
            return Err(Error::Bundle(format!(
                "{WEIGHTS_FILE}: tensor `{name}`: non-finite value at flat index {bad}"
            )));
        }
        let tensor = Tensor::from_vec(data, view.shape(), &Device::Cpu)?;
        tensors.insert(name, tensor);
    }
    Ok(tensors)
}

/// Compares the file's tensors with the ones the architecture builds: same names, same shapes.
fn check_tensors(manifest: &Manifest, tensors: &HashMap<String, Tensor>) -> Result<()> {
    let expected = expected_shapes(manifest)?;
    for (name, shape) in &expected {
        match tensors.get(name) {
            None => {
                return Err(Error::Bundle(format!(
                    "{WEIGHTS_FILE}: missing tensor `{name}` (expected shape {shape:?})"
                )))
            }
            Some(t) if t.dims() != shape.as_slice() => {
                return Err(Error::Bundle(format!(
                    "{WEIGHTS_FILE}: tensor `{name}`: expected shape {shape:?}, found {:?}",
                    t.dims()
                )))
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = tensors.keys().find(|k| !expected.contains_key(*k)) {
        return Err(Error::Bundle(format!("{WEIGHTS_FILE}: unexpected tensor `{extra}` for this architecture")));
    }
    Ok(())
}

fn expected_shapes(manifest: &Manifest) -> Result<BTreeMap<String, Vec<usize>>> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let Architecture::Cnn(cfg) = &manifest.architecture;
    Cnn::new(cfg, vb)?;
    let data = varmap.data().lock().expect("varmap lock poisoned. This is a bug.");
    Ok(data.iter().map(|(k, v)| (k.clone(), v.dims().to_vec())).collect())
}

/// `sha256:<hex>` over each file's name, length and bytes, in a fixed order.
pub fn bundle_id(manifest: &[u8], weights: &[u8]) -> String {
    let mut hasher = Sha256::new();
    for (name, bytes) in [(MANIFEST_FILE, manifest), (WEIGHTS_FILE, weights)] {
        hasher.update(name.as_bytes());
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    }
    let hex: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Writes a bundle atomically, file by file, and returns its id.
///
/// Running statistics of batch norm are weights too: they are saved with the trainable variables.
pub fn write_bundle(dir: &Path, manifest: &Manifest, varmap: &VarMap) -> Result<String> {
    validate_manifest(manifest)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::Bundle(format!("{}: {e}", dir.display())))?;
    let weights = serialize_varmap(varmap)?;
    let manifest_bytes = serde_json::to_vec_pretty(manifest).map_err(|e| Error::Internal(e.to_string()))?;
    let io = |e: std::io::Error| Error::Bundle(format!("{}: {e}", dir.display()));
    atomic_write(&dir.join(WEIGHTS_FILE), &weights).map_err(io)?;
    atomic_write(&dir.join(MANIFEST_FILE), &manifest_bytes).map_err(io)?;
    Ok(bundle_id(&manifest_bytes, &weights))
}

/// Serialises every variable of `varmap` as F32 safetensors bytes.
pub fn serialize_varmap(varmap: &VarMap) -> Result<Vec<u8>> {
    let data = varmap.data().lock().expect("varmap lock poisoned. This is a bug.");
    let tensors: Vec<(String, Tensor)> = data
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.as_tensor().to_dtype(DType::F32)?.to_device(&Device::Cpu)?)))
        .collect::<Result<_>>()?;
    safetensors::serialize(tensors.iter().map(|(k, v)| (k.as_str(), v)), None)
        .map_err(|e| Error::Internal(e.to_string()))
}

/// The current time in RFC 3339, for `created_at`.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
