//! Running the benchmarks' Python anchors (ONNX Runtime, numpy) as scripts that print one JSON
//! object, so their figures come from the same run as Tandem's.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Where a benchmark script lives: next to the sources when built from a checkout, else
/// relative to the working directory.
pub fn bench_script(name: &str) -> PathBuf {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches").join(name);
    if built.exists() {
        built
    } else {
        Path::new("benches").join(name)
    }
}

/// Runs a benchmark script that prints one JSON object; `Err` carries a note on why not.
pub fn run_python_json(script: &str, args: &[String]) -> std::result::Result<Value, String> {
    let out = Command::new("python3")
        .arg(bench_script(script))
        .args(args)
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let parsed: Value = serde_json::from_str(stdout.trim())
        .map_err(|_| format!("{script} failed: {}", String::from_utf8_lossy(&out.stderr).trim()))?;
    match parsed.get("error").and_then(Value::as_str) {
        Some(e) => Err(e.to_string()),
        None => Ok(parsed),
    }
}
