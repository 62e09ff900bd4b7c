//! Serve settings, layered: a TOML file, then `TANDEM_*` environment variables, then flags.
//!
//! One struct is both the clap argument set and the file's schema, so a setting has a single name
//! everywhere: `--max-batch-size`, `TANDEM_MAX_BATCH_SIZE`, `max_batch_size = 64`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use tandem_runtime::{BatchConfig, RuntimeConfig};
use tandem_server::ServerConfig;

/// Every serve setting; `None` means "not given at this layer".
#[derive(clap::Args, Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct ServeSettings {
    /// Bundle directories to serve; the admin API never unloads or reloads these.
    #[arg(long = "model", env = "TANDEM_MODELS", value_delimiter = ',')]
    #[serde(default)]
    pub models: Vec<PathBuf>,
    /// A models directory: every bundle under it (`<name>/` or `<name>/<version>/`) is served at
    /// start, and the admin API loads, reloads and unloads from it.
    #[arg(long, env = "TANDEM_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
    /// Poll the models directory and load new, reload changed and unload removed bundles
    /// [default: false].
    #[arg(long, env = "TANDEM_WATCH", num_args = 0..=1, default_missing_value = "true")]
    pub watch: Option<bool>,
    /// How often `--watch` looks at the models directory, in milliseconds [default: 2000].
    #[arg(long, env = "TANDEM_WATCH_INTERVAL_MS")]
    pub watch_interval_ms: Option<u64>,
    /// Interface to bind [default: 127.0.0.1].
    #[arg(long, env = "TANDEM_HOST")]
    pub host: Option<String>,
    /// Port to bind [default: 8080].
    #[arg(long, env = "TANDEM_PORT")]
    pub port: Option<u16>,
    /// Largest batch the model runs [default: 64].
    #[arg(long, env = "TANDEM_MAX_BATCH_SIZE")]
    pub max_batch_size: Option<usize>,
    /// Largest padded token count (longest text x texts) of one text batch [default: 16384].
    #[arg(long, env = "TANDEM_MAX_BATCH_TOKENS")]
    pub max_batch_tokens: Option<usize>,
    /// Longest wait for a batch to fill, in milliseconds [default: 2].
    #[arg(long, env = "TANDEM_MAX_BATCH_DELAY_MS")]
    pub max_batch_delay_ms: Option<u64>,
    /// Requests that may wait per model before new ones get 429 [default: 1024].
    #[arg(long, env = "TANDEM_QUEUE_CAPACITY")]
    pub queue_capacity: Option<usize>,
    /// Cached results; 0 turns the cache off [default: 10000].
    #[arg(long, env = "TANDEM_CACHE_CAPACITY")]
    pub cache_capacity: Option<u64>,
    /// Deadline of a request, in milliseconds [default: 30000].
    #[arg(long, env = "TANDEM_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
    /// Largest request body in bytes [default: 4194304].
    #[arg(long, env = "TANDEM_BODY_LIMIT_BYTES")]
    pub body_limit_bytes: Option<usize>,
    /// API requests in flight before shedding with 429 [default: 256].
    #[arg(long, env = "TANDEM_CONCURRENCY_LIMIT")]
    pub concurrency_limit: Option<usize>,
    /// Most inputs (images or texts) in one request [default: 256].
    #[arg(long, env = "TANDEM_MAX_INPUTS")]
    pub max_inputs: Option<usize>,
    /// Most characters in one text input; longer ones get 422 [default: 32768].
    #[arg(long, env = "TANDEM_MAX_INPUT_CHARS")]
    pub max_input_chars: Option<usize>,
    /// Allowed CORS origins, comma separated; `*` for any [default: none].
    #[arg(long = "cors-origin", env = "TANDEM_CORS_ORIGINS", value_delimiter = ',')]
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// Require `Authorization: Bearer <key>` on /v1 routes.
    #[arg(long, env = "TANDEM_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// How long in-flight requests may finish after a shutdown signal, in milliseconds [default: 10000].
    #[arg(long, env = "TANDEM_DRAIN_TIMEOUT_MS")]
    pub drain_timeout_ms: Option<u64>,
}

impl ServeSettings {
    /// Reads a settings file.
    pub fn from_file(path: &Path) -> anyhow::Result<ServeSettings> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid settings in {}", path.display()))
    }

    /// `self` wins wherever it has a value.
    pub fn over(self, base: ServeSettings) -> ServeSettings {
        ServeSettings {
            models: if self.models.is_empty() { base.models } else { self.models },
            models_dir: self.models_dir.or(base.models_dir),
            watch: self.watch.or(base.watch),
            watch_interval_ms: self.watch_interval_ms.or(base.watch_interval_ms),
            host: self.host.or(base.host),
            port: self.port.or(base.port),
            max_batch_size: self.max_batch_size.or(base.max_batch_size),
            max_batch_tokens: self.max_batch_tokens.or(base.max_batch_tokens),
            max_batch_delay_ms: self.max_batch_delay_ms.or(base.max_batch_delay_ms),
            queue_capacity: self.queue_capacity.or(base.queue_capacity),
            cache_capacity: self.cache_capacity.or(base.cache_capacity),
            request_timeout_ms: self.request_timeout_ms.or(base.request_timeout_ms),
            body_limit_bytes: self.body_limit_bytes.or(base.body_limit_bytes),
            concurrency_limit: self.concurrency_limit.or(base.concurrency_limit),
            max_inputs: self.max_inputs.or(base.max_inputs),
            max_input_chars: self.max_input_chars.or(base.max_input_chars),
            cors_origins: if self.cors_origins.is_empty() { base.cors_origins } else { self.cors_origins },
            api_key: self.api_key.or(base.api_key),
            drain_timeout_ms: self.drain_timeout_ms.or(base.drain_timeout_ms),
        }
    }

    /// The runtime's share of the settings.
    pub fn runtime_config(&self) -> RuntimeConfig {
        let d = RuntimeConfig::default();
        let b = d.batch;
        RuntimeConfig {
            batch: BatchConfig {
                max_batch_size: self.max_batch_size.unwrap_or(b.max_batch_size).max(1),
                max_batch_tokens: self.max_batch_tokens.unwrap_or(b.max_batch_tokens).max(1),
                max_batch_delay: self.max_batch_delay_ms.map_or(b.max_batch_delay, Duration::from_millis),
                queue_capacity: self.queue_capacity.unwrap_or(b.queue_capacity).max(1),
                request_timeout: self.request_timeout_ms.map_or(b.request_timeout, Duration::from_millis),
            },
            cache_capacity: self.cache_capacity.unwrap_or(d.cache_capacity),
        }
    }

    /// How often to poll the models directory, when it is watched; checked against the other
    /// settings.
    pub fn watch_interval(&self) -> anyhow::Result<Option<Duration>> {
        if !self.watch.unwrap_or(false) {
            return Ok(None);
        }
        if self.models_dir.is_none() {
            anyhow::bail!("--watch needs a models directory to watch: pass --models-dir DIR");
        }
        match self.watch_interval_ms.unwrap_or(2000) {
            0 => anyhow::bail!("--watch-interval-ms must be at least 1"),
            ms => Ok(Some(Duration::from_millis(ms))),
        }
    }

    /// The server's share of the settings.
    pub fn server_config(&self) -> ServerConfig {
        let d = ServerConfig::default();
        ServerConfig {
            host: self.host.clone().unwrap_or(d.host),
            port: self.port.unwrap_or(d.port),
            body_limit_bytes: self.body_limit_bytes.unwrap_or(d.body_limit_bytes),
            request_timeout: self.request_timeout_ms.map_or(d.request_timeout, Duration::from_millis),
            concurrency_limit: self.concurrency_limit.unwrap_or(d.concurrency_limit),
            max_inputs: self.max_inputs.unwrap_or(d.max_inputs),
            max_input_chars: self.max_input_chars.unwrap_or(d.max_input_chars),
            cors_origins: if self.cors_origins.is_empty() { d.cors_origins } else { self.cors_origins.clone() },
            api_key: self.api_key.clone().or(d.api_key),
            drain_timeout: self.drain_timeout_ms.map_or(d.drain_timeout, Duration::from_millis),
        }
    }
}

/// Resolves the layers: file (when given), then the environment and flags as clap already merged them.
pub fn resolve(config_file: Option<&PathBuf>, cli: ServeSettings) -> anyhow::Result<ServeSettings> {
    let file = match config_file {
        Some(path) => ServeSettings::from_file(path)?,
        None => ServeSettings::default(),
    };
    Ok(cli.over(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_the_file_overrides_defaults() {
        let file: ServeSettings = toml::from_str("port = 9000\nmax_batch_size = 8\nmodels = [\"a\"]").unwrap();
        let cli = ServeSettings { port: Some(9100), ..Default::default() };
        let merged = cli.over(file);
        assert_eq!(merged.port, Some(9100));
        assert_eq!(merged.runtime_config().batch.max_batch_size, 8);
        assert_eq!(merged.models, vec![PathBuf::from("a")]);
        assert_eq!(merged.server_config().host, "127.0.0.1");
    }

    #[test]
    fn the_models_directory_and_its_watch_layer_like_the_rest() {
        let file: ServeSettings =
            toml::from_str("models_dir = \"models\"\nwatch = true\nwatch_interval_ms = 500").unwrap();
        let merged = ServeSettings::default().over(file.clone());
        assert_eq!(merged.models_dir, Some(PathBuf::from("models")));
        assert_eq!(merged.watch_interval().unwrap(), Some(Duration::from_millis(500)));
        let off = ServeSettings { watch: Some(false), ..Default::default() }.over(file);
        assert_eq!(off.watch_interval().unwrap(), None);
        let nowhere = ServeSettings { watch: Some(true), ..Default::default() };
        assert!(nowhere.watch_interval().unwrap_err().to_string().contains("--models-dir"));
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        assert!(toml::from_str::<ServeSettings>("prot = 1").is_err());
    }
}
