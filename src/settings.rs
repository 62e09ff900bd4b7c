//! Serve settings, layered: a TOML file, then `TANDEM_*` environment variables, then flags.
//!
//! One struct is both the clap argument set and the file's schema, so a setting has a single name
//! everywhere: `--max-batch-size`, `TANDEM_MAX_BATCH_SIZE`, `max_batch_size = 64`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use tandem_runtime::{BatchConfig, DelayPolicy, RuntimeConfig};
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
    /// When a batch is held open for the delay: `fixed` (always) or `adaptive` (only while
    /// waiting has recently brought more items) [default: adaptive].
    #[arg(long, env = "TANDEM_BATCH_DELAY_POLICY")]
    pub batch_delay_policy: Option<DelayPolicy>,
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
    /// Require `Authorization: Bearer <key>` on /v1 and /v2/models routes. Prefer the
    /// `TANDEM_API_KEY` variable or `--api-keys-file`: a flag shows in the process list.
    #[arg(long, env = "TANDEM_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// A file of API keys, one per line (`#` comments), re-read on SIGHUP.
    #[arg(long, env = "TANDEM_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,
    /// Serve /metrics without the API key (it names models and their traffic) [default: false].
    #[arg(long, env = "TANDEM_PUBLIC_METRICS", num_args = 0..=1, default_missing_value = "true")]
    pub public_metrics: Option<bool>,
    /// How long in-flight requests may finish after a shutdown signal, in milliseconds [default: 10000].
    #[arg(long, env = "TANDEM_DRAIN_TIMEOUT_MS")]
    pub drain_timeout_ms: Option<u64>,
    /// After a shutdown signal, keep accepting this long while readiness answers 503, e.g. `5s`,
    /// `500ms`; a bare number is seconds [default: 0s].
    #[arg(long, env = "TANDEM_DRAIN_GRACE", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "deserialize_duration")]
    pub drain_grace: Option<Duration>,
    /// Most pixels one image may declare; larger ones get 413 before decoding [default: 4194304].
    #[arg(long, env = "TANDEM_MAX_IMAGE_PIXELS")]
    pub max_image_pixels: Option<u64>,
    /// Most decoded pixels of all images of one request together [default: 16777216].
    #[arg(long, env = "TANDEM_MAX_REQUEST_PIXELS")]
    pub max_request_pixels: Option<u64>,
    /// How long a request body may take to arrive, in milliseconds; past it, 408 [default: 10000].
    #[arg(long, env = "TANDEM_BODY_READ_TIMEOUT_MS")]
    pub body_read_timeout_ms: Option<u64>,
    /// How long a request head may take to arrive, in milliseconds [default: 10000].
    #[arg(long, env = "TANDEM_HEADER_READ_TIMEOUT_MS")]
    pub header_read_timeout_ms: Option<u64>,
    /// How long a keep-alive connection may sit idle, in milliseconds [default: 75000].
    #[arg(long, env = "TANDEM_IDLE_TIMEOUT_MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Connections open at once; lowered to fit the open-file limit [default: 4096].
    #[arg(long, env = "TANDEM_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Largest total size of a request's headers in bytes; larger get 431 [default: 32768].
    #[arg(long, env = "TANDEM_MAX_HEADER_BYTES")]
    pub max_header_bytes: Option<usize>,
    /// Most sampler steps one generate request may ask for; more get 422 [default: 100].
    #[arg(long, env = "TANDEM_MAX_GENERATE_STEPS")]
    pub max_generate_steps: Option<usize>,
    /// Most images one generate request may ask for; more get 422 [default: 16].
    #[arg(long, env = "TANDEM_MAX_GENERATE_IMAGES")]
    pub max_generate_images: Option<usize>,
}

/// Reads a duration such as `5s`, `500ms` or `1m 30s` (humantime's syntax), or a bare number of
/// seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"));
    }
    humantime::parse_duration(text).map_err(|e| format!("{text:?} is not a duration such as 5s or 500ms: {e}"))
}

/// A duration in the settings file: a string such as `"5s"`, or a number of seconds.
fn deserialize_duration<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Seconds(f64),
        Text(String),
    }
    let text = match Text::deserialize(deserializer)? {
        Text::Seconds(s) => s.to_string(),
        Text::Text(t) => t,
    };
    parse_duration(&text).map(Some).map_err(serde::de::Error::custom)
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
            batch_delay_policy: self.batch_delay_policy.or(base.batch_delay_policy),
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
            api_keys_file: self.api_keys_file.or(base.api_keys_file),
            public_metrics: self.public_metrics.or(base.public_metrics),
            drain_grace: self.drain_grace.or(base.drain_grace),
            max_image_pixels: self.max_image_pixels.or(base.max_image_pixels),
            max_request_pixels: self.max_request_pixels.or(base.max_request_pixels),
            body_read_timeout_ms: self.body_read_timeout_ms.or(base.body_read_timeout_ms),
            header_read_timeout_ms: self.header_read_timeout_ms.or(base.header_read_timeout_ms),
            idle_timeout_ms: self.idle_timeout_ms.or(base.idle_timeout_ms),
            max_connections: self.max_connections.or(base.max_connections),
            max_header_bytes: self.max_header_bytes.or(base.max_header_bytes),
            max_generate_steps: self.max_generate_steps.or(base.max_generate_steps),
            max_generate_images: self.max_generate_images.or(base.max_generate_images),
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
                delay_policy: self.batch_delay_policy.unwrap_or(b.delay_policy),
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
            drain_grace: self.drain_grace.unwrap_or(d.drain_grace),
            max_image_pixels: self.max_image_pixels.unwrap_or(d.max_image_pixels),
            max_request_pixels: self.max_request_pixels.unwrap_or(d.max_request_pixels),
            body_read_timeout: self.body_read_timeout_ms.map_or(d.body_read_timeout, Duration::from_millis),
            header_read_timeout: self.header_read_timeout_ms.map_or(d.header_read_timeout, Duration::from_millis),
            idle_timeout: self.idle_timeout_ms.map_or(d.idle_timeout, Duration::from_millis),
            max_connections: self.max_connections.unwrap_or(d.max_connections),
            max_uri_bytes: d.max_uri_bytes,
            max_header_bytes: self.max_header_bytes.unwrap_or(d.max_header_bytes),
            api_keys_file: self.api_keys_file.clone().or(d.api_keys_file),
            public_metrics: self.public_metrics.unwrap_or(d.public_metrics),
            max_generate_steps: self.max_generate_steps.unwrap_or(d.max_generate_steps),
            max_generate_images: self.max_generate_images.unwrap_or(d.max_generate_images),
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
    fn generation_limits_layer_like_the_rest() {
        let defaults = ServeSettings::default().server_config();
        assert_eq!((defaults.max_generate_steps, defaults.max_generate_images), (100, 16));
        let file: ServeSettings = toml::from_str("max_generate_steps = 20\nmax_generate_images = 4").unwrap();
        let cli = ServeSettings { max_generate_images: Some(8), ..Default::default() };
        let config = cli.over(file).server_config();
        assert_eq!((config.max_generate_steps, config.max_generate_images), (20, 8));
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        assert!(toml::from_str::<ServeSettings>("prot = 1").is_err());
    }

    #[test]
    fn durations_read_with_units_in_flags_and_files() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
        let file: ServeSettings = toml::from_str("drain_grace = \"3s\"").unwrap();
        assert_eq!(file.server_config().drain_grace, Duration::from_secs(3));
        let file: ServeSettings = toml::from_str("drain_grace = 4").unwrap();
        assert_eq!(file.server_config().drain_grace, Duration::from_secs(4));
    }
}
