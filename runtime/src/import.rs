//! Importing a sentence-transformers directory as an `embedder` bundle.
//!
//! The weights keep their values and dtypes bit for bit; only the tensors the encoder never reads
//! (the pooler head, the `position_ids` buffer) are dropped, so that the bundle holds exactly what
//! its architecture builds. The source files' digests are recorded in the provenance.

use std::collections::BTreeMap;
use std::path::Path;

use crate::bundle::{
    now_rfc3339, sha256_hex, write_bundle_files, Bundle, EmbedderSpec, FamilySpec, Manifest, Provenance,
    SCHEMA_VERSION, WEIGHTS_FILE,
};
use crate::hf::{read_sentence_transformers_dir, TOKENIZER_FILE};
use crate::models::sentence_encoder::is_unused_checkpoint_tensor;
use crate::{Error, Result};

/// The bundle's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOptions {
    /// Model name, the first half of `name@version`.
    pub name: String,
    /// Model version, the second half of `name@version`.
    pub version: String,
}

/// Writes the sentence-transformers model in `src` as an embedder bundle in `out`, loads it back
/// to validate it, and returns it.
pub fn import_sentence_transformers(src: &Path, out: &Path, options: &ImportOptions) -> Result<Bundle> {
    let st = read_sentence_transformers_dir(src)?;
    let read =
        |path: &Path| std::fs::read(path).map_err(|e| Error::Bundle(format!("{}: cannot read: {e}", path.display())));
    let source_weights = read(&st.weights)?;
    let tokenizer = read(&st.tokenizer)?;
    let weights = used_tensors_only(&source_weights)?;
    let hyperparameters = BTreeMap::from([
        ("source_format".to_owned(), serde_json::json!("sentence-transformers")),
        ("source_weights_sha256".to_owned(), serde_json::json!(sha256_hex(&source_weights))),
        ("source_tokenizer_sha256".to_owned(), serde_json::json!(sha256_hex(&tokenizer))),
    ]);
    let manifest = Manifest {
        schema_version: SCHEMA_VERSION,
        name: options.name.clone(),
        version: options.version.clone(),
        family: FamilySpec::Embedder(EmbedderSpec {
            architecture: st.bert.clone(),
            tokenizer: TOKENIZER_FILE.to_owned(),
            pooling: st.pooling,
            normalize: st.normalize,
            max_seq_length: st.max_seq_length,
        }),
        files: Vec::new(),
        provenance: Provenance {
            dataset: "none".to_owned(),
            dataset_sha256: String::new(),
            recipe: "import-hf".to_owned(),
            hyperparameters,
            teacher: None,
        },
        metrics: BTreeMap::from([
            ("params".to_owned(), st.bert.num_params() as f64),
            ("dimension".to_owned(), st.dimension as f64),
        ]),
        created_at: now_rfc3339(),
    };
    write_bundle_files(out, &manifest, &[(WEIGHTS_FILE, &weights), (TOKENIZER_FILE, &tokenizer)])?;
    Bundle::load(out)
}

/// The safetensors bytes without the tensors the encoder never reads; the input itself when it
/// has none, so a clean checkpoint is copied byte for byte.
fn used_tensors_only(bytes: &[u8]) -> Result<Vec<u8>> {
    let bad = |e: safetensors::SafeTensorError| Error::Bundle(format!("{WEIGHTS_FILE}: {e}"));
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(bad)?;
    let names = st.names();
    if !names.iter().any(|n| is_unused_checkpoint_tensor(n)) {
        return Ok(bytes.to_vec());
    }
    let (_, metadata) = safetensors::SafeTensors::read_metadata(bytes).map_err(bad)?;
    let kept: Vec<(String, safetensors::tensor::TensorView)> =
        st.tensors().into_iter().filter(|(name, _)| !is_unused_checkpoint_tensor(name)).collect();
    safetensors::serialize(kept, metadata.metadata().clone()).map_err(bad)
}
