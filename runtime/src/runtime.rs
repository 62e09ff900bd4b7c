//! The runtime facade: the registry of loaded models and the shared result cache.
//!
//! Family-specific entry points (`classify`, `embed`, ...) live beside their family in
//! `families/`, as further `impl Runtime` blocks over the shared request path in `infer.rs`.

use std::path::Path;
use std::sync::Arc;

use candle_core::Device;

use crate::batcher::BatchConfig;
use crate::bundle::{Bundle, Manifest};
use crate::cache::{CacheStats, ResultCache};
use crate::family::Family;
use crate::infer::CachedOutput;
use crate::registry::{Loaded, Registry};
use crate::Result;

/// Settings of a [`Runtime`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Batching knobs applied to every model.
    pub batch: BatchConfig,
    /// Cached per-item results; 0 turns the cache off.
    pub cache_capacity: u64,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self { batch: BatchConfig::default(), cache_capacity: 10_000 }
    }
}

/// What callers may know about a loaded model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// `name@version`.
    pub id: String,
    /// The manifest's name.
    pub name: String,
    /// The manifest's version.
    pub version: String,
    /// `sha256:<hex>` over the bundle's files.
    pub bundle_id: String,
    /// The model family, e.g. `classifier`.
    pub kind: String,
    /// Trainable parameters.
    pub params: usize,
    /// The full manifest.
    pub manifest: Arc<Manifest>,
}

impl ModelInfo {
    /// The info of a validated bundle whose model has `params` parameters.
    pub fn of(bundle: &Bundle, params: usize) -> ModelInfo {
        ModelInfo {
            id: bundle.model_id(),
            name: bundle.manifest.name.clone(),
            version: bundle.manifest.version.clone(),
            bundle_id: bundle.id.clone(),
            kind: bundle.manifest.kind().to_owned(),
            params,
            manifest: Arc::new(bundle.manifest.clone()),
        }
    }
}

/// Loaded models plus the shared result cache. Cheap to share behind an `Arc`.
pub struct Runtime {
    registry: Registry,
    pub(crate) cache: ResultCache<CachedOutput>,
    config: RuntimeConfig,
    device: Device,
}

impl Runtime {
    /// An empty runtime on the default device.
    pub fn new(config: RuntimeConfig) -> Runtime {
        Runtime {
            registry: Registry::default(),
            cache: ResultCache::new(config.cache_capacity),
            config,
            device: crate::device::default_device(),
        }
    }

    /// Loads and validates the bundle in `dir`, of any family; a bundle with the same
    /// `name@version` is replaced.
    ///
    /// Requests already holding the old model finish on it; new ones see the new one.
    pub fn load(&self, dir: &Path) -> Result<ModelInfo> {
        let bundle = Bundle::load(dir)?;
        let model = crate::families::load(&bundle, &self.device, self.config.batch)?;
        let info = model.info().clone();
        self.registry.insert(model);
        tracing::info!(model = %info.id, kind = %info.kind, bundle = %info.bundle_id, "loaded");
        Ok(info)
    }

    /// Unloads a model; in-flight requests on it still complete.
    pub fn unload(&self, id: &str) -> Result<()> {
        let key = self.registry.get(id)?.info().id.clone();
        self.registry.remove(&key);
        Ok(())
    }

    /// All loaded models, ordered by id.
    pub fn models(&self) -> Vec<ModelInfo> {
        self.registry.all().iter().map(|m| m.info().clone()).collect()
    }

    /// One model, by `name@version` or by `name` (then the highest version).
    pub fn model(&self, id: &str) -> Result<ModelInfo> {
        Ok(self.registry.get(id)?.info().clone())
    }

    /// Items waiting in a model's queue.
    pub fn queue_depth(&self, id: &str) -> Result<usize> {
        Ok(self.registry.get(id)?.queue_depth())
    }

    /// Runs one batch through every model so that the first real request does not pay for start-up.
    pub fn warmup(&self) -> Result<()> {
        for model in self.registry.all() {
            model.warmup()?;
        }
        Ok(())
    }

    /// A model of family `F`, or [`crate::Error::WrongKind`].
    pub(crate) fn typed<F: Family>(&self, id: &str) -> Result<Arc<Loaded<F>>> {
        self.registry.typed::<F>(id)
    }

    /// Cache hit and miss counts.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// The settings this runtime was built with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// The device models run on.
    pub fn device(&self) -> &Device {
        &self.device
    }
}
