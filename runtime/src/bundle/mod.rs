//! Model bundles: a directory with `manifest.json` and the files it lists, identified by a sha256.
//!
//! Loading validates everything before a model is built: the manifest's schema and fields, each
//! listed file's digest, the safetensors container, and each tensor's name, dtype and shape against
//! the family's architecture. Errors name the file and the field or tensor.

mod manifest;
mod migrate;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use sha2::{Digest, Sha256};

pub use manifest::{
    ClassifierSpec, ConsistencySpec, CrossEncoderSpec, DiffusionSpec, EmbedderSpec, FamilySpec, FileEntry,
    ImageTextSpec, ImageTokenizerSpec, InferenceSpec, InputSpec, Manifest, Provenance, SCHEMA_VERSION,
};

use crate::fs::atomic_write;
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
    /// `sha256:<hex>` over the manifest and every listed file; changes whenever any byte does.
    pub id: String,
    /// The parsed manifest (schema-1 manifests are migrated to the current schema in memory).
    pub manifest: Manifest,
    tensors: HashMap<String, Tensor>,
    /// Listed files other than the weights, e.g. `tokenizer.json`, by their listed path.
    extra_files: BTreeMap<String, Vec<u8>>,
}

impl Bundle {
    /// Reads and validates the bundle in `dir`.
    pub fn load(dir: &Path) -> Result<Bundle> {
        let manifest_bytes = read_file(dir, MANIFEST_FILE)?;
        let manifest = parse_manifest_in(&manifest_bytes, dir)?;
        let mut files = BTreeMap::new();
        for entry in &manifest.files {
            let bytes = read_file(dir, &entry.path)?;
            let found = sha256_hex(&bytes);
            if found != entry.sha256 {
                return Err(Error::Bundle(format!(
                    "{}: sha256 mismatch: the manifest lists {}, the file has {found}",
                    entry.path, entry.sha256
                )));
            }
            files.insert(entry.path.clone(), bytes);
        }
        let weights = files.remove(WEIGHTS_FILE).expect("validation requires the weights file. This is a bug.");
        let tensors = parse_weights(&weights)?;
        check_tensors(&manifest, &tensors)?;
        files.insert(WEIGHTS_FILE.to_owned(), weights);
        let id =
            bundle_id(&manifest_bytes, manifest.files.iter().map(|f| (f.path.as_str(), files[&f.path].as_slice())));
        files.remove(WEIGHTS_FILE);
        Ok(Bundle { dir: dir.to_path_buf(), id, manifest, tensors, extra_files: files })
    }

    /// A `VarBuilder` over the bundle's tensors (F32) on `device`.
    pub fn var_builder(&self, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_tensors(self.tensors.clone(), DType::F32, device)
    }

    /// The bytes of a listed file other than the weights, e.g. the tokenizer.
    pub fn file(&self, path: &str) -> Result<&[u8]> {
        self.extra_files
            .get(path)
            .map(Vec::as_slice)
            .ok_or_else(|| Error::Bundle(format!("{MANIFEST_FILE}: field `files`: {path} is not listed")))
    }

    /// `name@version`.
    pub fn model_id(&self) -> String {
        format!("{}@{}", self.manifest.name, self.manifest.version)
    }
}

fn read_file(dir: &Path, name: &str) -> Result<Vec<u8>> {
    std::fs::read(dir.join(name)).map_err(|e| Error::Bundle(format!("{}: cannot read {name}: {e}", dir.display())))
}

/// Parses and checks a current-schema manifest; errors name the offending field.
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest> {
    let manifest: Manifest =
        serde_json::from_slice(bytes).map_err(|e| Error::Bundle(format!("{MANIFEST_FILE}: {e}")))?;
    validate_manifest(&manifest)?;
    Ok(manifest)
}

/// Parses a manifest of any known schema; older schemas are migrated with the help of `dir`'s files.
fn parse_manifest_in(bytes: &[u8], dir: &Path) -> Result<Manifest> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| Error::Bundle(format!("{MANIFEST_FILE}: {e}")))?;
    match value.get("schema_version").and_then(serde_json::Value::as_u64) {
        Some(1) => {
            let weights = read_file(dir, WEIGHTS_FILE)?;
            let manifest = migrate::from_schema_1(value, sha256_hex(&weights))?;
            validate_manifest(&manifest)?;
            Ok(manifest)
        }
        _ => parse_manifest(bytes),
    }
}

fn bad<T>(field: &str, msg: impl std::fmt::Display) -> Result<T> {
    Err(Error::Bundle(format!("{MANIFEST_FILE}: field `{field}`: {msg}")))
}

fn validate_manifest(m: &Manifest) -> Result<()> {
    if m.schema_version != SCHEMA_VERSION {
        return bad("schema_version", format!("expected 1 or {SCHEMA_VERSION}, found {}", m.schema_version));
    }
    for (field, value) in [("name", &m.name), ("version", &m.version)] {
        let ok = !value.is_empty() && value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !ok {
            return bad(field, format!("must be non-empty ASCII letters, digits, '-', '_' or '.', found {value:?}"));
        }
    }
    validate_files(&m.files)?;
    let res = match &m.family {
        FamilySpec::Classifier(spec) => crate::families::classifier::validate_spec(spec),
        FamilySpec::Embedder(spec) => crate::families::embedder::validate_spec(spec, &m.files),
        FamilySpec::Diffusion(spec) => crate::families::generator::validate_diffusion(spec),
        FamilySpec::Consistency(spec) => crate::families::generator::validate_consistency(spec),
        FamilySpec::ImageTokenizer(spec) => crate::families::image_tokenizer::validate_spec(spec),
        FamilySpec::CrossEncoder(spec) => crate::families::cross_encoder::validate_spec(spec, &m.files),
        FamilySpec::ImageText(spec) => crate::families::image_text::validate_spec(spec, &m.files),
    };
    if let Err((field, msg)) = res {
        return bad(&format!("family.{field}"), msg);
    }
    Ok(())
}

/// Listed paths stay inside the bundle, appear once, and include the weights.
fn validate_files(files: &[FileEntry]) -> Result<()> {
    for (i, entry) in files.iter().enumerate() {
        let path = Path::new(&entry.path);
        let inside = !entry.path.is_empty()
            && path.components().all(|c| matches!(c, std::path::Component::Normal(_)))
            && entry.path != MANIFEST_FILE;
        if !inside {
            return bad("files", format!("{:?} must be a relative path inside the bundle", entry.path));
        }
        if files[..i].iter().any(|f| f.path == entry.path) {
            return bad("files", format!("{:?} is listed twice", entry.path));
        }
        let hex = entry.sha256.len() == 64 && entry.sha256.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'));
        if !hex {
            return bad("files", format!("{}: sha256 must be 64 lowercase hex digits", entry.path));
        }
    }
    if !files.iter().any(|f| f.path == WEIGHTS_FILE) {
        return bad("files", format!("{WEIGHTS_FILE} must be listed"));
    }
    Ok(())
}

/// Reads every tensor as F32: F16 and BF16 files are widened on load, since models compute in F32
/// on the CPU.
fn parse_weights(bytes: &[u8]) -> Result<HashMap<String, Tensor>> {
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| Error::Bundle(format!("{WEIGHTS_FILE}: {e}")))?;
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        let data = decode_f32(view.dtype(), view.data()).ok_or_else(|| {
            Error::Bundle(format!(
                "{WEIGHTS_FILE}: tensor `{name}`: expected dtype F32, F16 or BF16, found {:?}",
                view.dtype()
            ))
        })?;
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

/// Little-endian element bytes of a float dtype as F32 values; `None` for other dtypes.
fn decode_f32(dtype: safetensors::Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    use safetensors::Dtype;
    match dtype {
        Dtype::F32 => Some(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()),
        Dtype::F16 => Some(bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()),
        Dtype::BF16 => Some(bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect()),
        _ => None,
    }
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

/// Every tensor name and shape the family's architecture builds.
fn expected_shapes(manifest: &Manifest) -> Result<BTreeMap<String, Vec<usize>>> {
    match &manifest.family {
        FamilySpec::Classifier(spec) => crate::families::classifier::expected_shapes(spec),
        FamilySpec::Embedder(spec) => crate::families::embedder::expected_shapes(spec),
        FamilySpec::Diffusion(spec) => crate::families::generator::expected_shapes(&spec.architecture),
        FamilySpec::Consistency(spec) => crate::families::generator::expected_shapes(&spec.architecture),
        FamilySpec::ImageTokenizer(spec) => crate::families::image_tokenizer::expected_shapes(spec),
        FamilySpec::CrossEncoder(spec) => crate::families::cross_encoder::expected_shapes(spec),
        FamilySpec::ImageText(spec) => crate::families::image_text::expected_shapes(spec),
    }
}

/// The names and shapes of the variables that building a model into `varmap` created.
pub fn shapes_of(varmap: &VarMap) -> BTreeMap<String, Vec<usize>> {
    let data = varmap.data().lock().expect("varmap lock poisoned. This is a bug.");
    data.iter().map(|(k, v)| (k.clone(), v.dims().to_vec())).collect()
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// `sha256:<hex>` over the manifest and then each listed file: its name, length and bytes, in
/// listing order. A schema-1 bundle hashes to the same id as before the schema changed.
pub fn bundle_id<'a>(manifest: &'a [u8], files: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut hasher = Sha256::new();
    for (name, bytes) in std::iter::once((MANIFEST_FILE, manifest)).chain(files) {
        hasher.update(name.as_bytes());
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    }
    let hex: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Writes a bundle atomically, file by file with the manifest last, and returns its id.
///
/// `manifest.files` is replaced by the listing of `files`, so a caller cannot list a digest that
/// differs from what is written.
pub fn write_bundle_files(dir: &Path, manifest: &Manifest, files: &[(&str, &[u8])]) -> Result<String> {
    let mut manifest = manifest.clone();
    manifest.files =
        files.iter().map(|(path, bytes)| FileEntry { path: (*path).to_owned(), sha256: sha256_hex(bytes) }).collect();
    validate_manifest(&manifest)?;
    let io = |e: std::io::Error| Error::Bundle(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    for (path, bytes) in files {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        atomic_write(&target, bytes).map_err(io)?;
    }
    let manifest_bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Internal(e.to_string()))?;
    atomic_write(&dir.join(MANIFEST_FILE), &manifest_bytes).map_err(io)?;
    Ok(bundle_id(&manifest_bytes, files.iter().copied()))
}

/// Writes a bundle whose only file is the weights in `varmap`, and returns its id.
///
/// Running statistics of batch norm are weights too: they are saved with the trainable variables.
pub fn write_bundle(dir: &Path, manifest: &Manifest, varmap: &VarMap) -> Result<String> {
    let weights = serialize_varmap(varmap)?;
    write_bundle_files(dir, manifest, &[(WEIGHTS_FILE, &weights)])
}

/// Serialises every variable of `varmap` as F32 safetensors bytes.
pub fn serialize_varmap(varmap: &VarMap) -> Result<Vec<u8>> {
    serialize_varmap_as(varmap, DType::F32)
}

/// Serialises every variable of `varmap` as safetensors bytes of `dtype`: F16 or BF16 halve a
/// bundle, and loading widens them back to F32 (see [`Bundle::load`]).
pub fn serialize_varmap_as(varmap: &VarMap, dtype: DType) -> Result<Vec<u8>> {
    let data = varmap.data().lock().expect("varmap lock poisoned. This is a bug.");
    let tensors: Vec<(String, Tensor)> = data
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.as_tensor().to_dtype(dtype)?.to_device(&Device::Cpu)?)))
        .collect::<Result<_>>()?;
    safetensors::serialize(tensors.iter().map(|(k, v)| (k.as_str(), v)), None)
        .map_err(|e| Error::Internal(e.to_string()))
}

/// The current time in RFC 3339, for `created_at`.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
