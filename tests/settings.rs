//! Serve settings layer as documented: a TOML file, then `TANDEM_*` variables, then flags.

use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::common::*;

/// Writes a settings file naming the model, a port and a batch size of 4.
fn write_settings(dir: &Path, bundle: &Path, port: u16) -> std::path::PathBuf {
    let path = dir.join("tandem.toml");
    let text = format!("models = ['{}']\nport = {port}\nmax_batch_size = 4\n", bundle.display());
    std::fs::write(&path, text).expect("write tandem.toml");
    path
}

/// Which layers set the port.
#[derive(Clone, Copy)]
enum Layers {
    File,
    FileAndEnv,
    FileEnvAndFlag,
}

/// Starts a server whose port comes from the given layers, each with a different free port.
fn start(dir: &Path, bundle: &Path, layers: Layers) -> Server {
    Server::start_with(&[], |cmd: &mut Command| {
        let (file_port, env_port, flag_port) = (free_port(), free_port(), free_port());
        let settings = write_settings(dir, bundle, file_port);
        match layers {
            Layers::File => {
                cmd.arg("--config").arg(&settings);
                file_port
            }
            Layers::FileAndEnv => {
                cmd.env("TANDEM_CONFIG", &settings).env("TANDEM_PORT", env_port.to_string());
                env_port
            }
            Layers::FileEnvAndFlag => {
                cmd.arg("--config").arg(&settings).env("TANDEM_PORT", env_port.to_string());
                cmd.arg("--port").arg(flag_port.to_string());
                flag_port
            }
        }
    })
}

/// The value of one series in Prometheus text, e.g. `name{label="x"}`.
fn series(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn flags_beat_the_environment_which_beats_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bundle = train_bundle(dir.path(), "layered");
    for layers in [Layers::FileEnvAndFlag, Layers::FileAndEnv, Layers::File] {
        let server = start(dir.path(), &bundle, layers);
        let log = server.log();
        assert!(log.contains(&format!("serving on http://127.0.0.1:{} ", server.port)), "{log}");
    }

    // The file's other settings apply too: ten images in one request run in batches of at most 4.
    let server = start(dir.path(), &bundle, Layers::File);
    let http = Http::new();
    let inputs: Vec<_> = (0..10u8).map(|v| json!({"pixels": vec![vec![v * 20; 8]; 8]})).collect();
    let reply = http.ok(http.client().post(server.url("/v1/models/layered/classify")).json(&json!({"inputs": inputs})));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let text = http.ok(http.client().get(server.url("/metrics"))).text();
    let batches = series(&text, r#"tandem_batch_size_count{model="layered@1"}"#).expect("batch count");
    let small = series(&text, r#"tandem_batch_size_bucket{model="layered@1",le="4"}"#).expect("batch bucket");
    let images = series(&text, r#"tandem_batch_size_sum{model="layered@1"}"#).expect("batch sum");
    assert_eq!(images, 10.0, "{text}");
    assert_eq!(small, batches, "a batch was larger than max_batch_size = 4:\n{text}");
    assert!(batches >= 3.0, "{text}");
}
