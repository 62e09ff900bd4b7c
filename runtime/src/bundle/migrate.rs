//! In-memory migration of older manifest schemas, so bundles written before a schema change still load.
//!
//! Schema 1 knew only classifiers: `kind`, `architecture` (tagged `type: cnn`), `input`, `labels` and
//! `inference` sat at the top level, and the weights file was implied rather than listed.

use serde_json::{json, Map, Value};

use super::{Manifest, MANIFEST_FILE, SCHEMA_VERSION, WEIGHTS_FILE};
use crate::{Error, Result};

/// Top-level fields a schema-1 manifest may have; anything else is refused as it was then.
const SCHEMA_1_FIELDS: [&str; 11] = [
    "schema_version",
    "name",
    "version",
    "kind",
    "architecture",
    "input",
    "labels",
    "inference",
    "provenance",
    "metrics",
    "created_at",
];

/// Rewrites a schema-1 manifest as the current schema; `weights_sha256` lists the implied weights.
pub(super) fn from_schema_1(value: Value, weights_sha256: String) -> Result<Manifest> {
    let bad = |field: &str, msg: &str| Error::Bundle(format!("{MANIFEST_FILE}: field `{field}`: {msg}"));
    let Value::Object(mut old) = value else {
        return Err(Error::Bundle(format!("{MANIFEST_FILE}: expected a JSON object")));
    };
    if let Some(unknown) = old.keys().find(|k| !SCHEMA_1_FIELDS.contains(&k.as_str())) {
        return Err(bad(unknown, "unknown field in a schema-1 manifest"));
    }
    match old.remove("kind") {
        Some(Value::String(kind)) if kind == "classifier" => {}
        Some(_) => return Err(bad("kind", "schema 1 knows only `classifier`")),
        None => return Err(bad("kind", "missing field")),
    }
    let mut architecture = match old.remove("architecture") {
        Some(Value::Object(a)) => a,
        _ => return Err(bad("architecture", "missing or not an object")),
    };
    match architecture.remove("type") {
        Some(Value::String(t)) if t == "cnn" => {}
        _ => return Err(bad("architecture", "schema 1 knows only `type: cnn`")),
    }
    let mut family = Map::new();
    family.insert("kind".into(), json!("classifier"));
    family.insert("architecture".into(), Value::Object(architecture));
    for field in ["input", "labels", "inference"] {
        if let Some(v) = old.remove(field) {
            family.insert(field.into(), v);
        }
    }
    old.insert("schema_version".into(), json!(SCHEMA_VERSION));
    old.insert("family".into(), Value::Object(family));
    old.insert("files".into(), json!([{"path": WEIGHTS_FILE, "sha256": weights_sha256}]));
    serde_json::from_value(Value::Object(old)).map_err(|e| Error::Bundle(format!("{MANIFEST_FILE}: {e}")))
}
