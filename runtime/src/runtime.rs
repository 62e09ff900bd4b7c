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
use crate::registry::{Loaded, Registry, Served};
use crate::{Error, Result};

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

/// A loaded, validated and warmed-up model that no request can reach yet; see [`Runtime::stage`].
pub struct StagedModel(Arc<dyn Served>);

impl StagedModel {
    /// What the model will be served as.
    pub fn info(&self) -> &ModelInfo {
        self.0.info()
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

    /// Loads, validates and warms up the bundle in `dir` without serving it: the first half of a
    /// hot reload, run on a blocking thread while the old version keeps serving. A bundle that fails
    /// here was never visible to a request.
    pub fn stage(&self, dir: &Path) -> Result<StagedModel> {
        let bundle = Bundle::load(dir)?;
        let model = crate::families::load(&bundle, &self.device, self.config.batch)?;
        if let Err(err) = model.warmup() {
            return Err(Error::Bundle(format!("{}: warm-up batch failed: {err}", dir.display())));
        }
        Ok(StagedModel(model))
    }

    /// Serves a staged model, the second half of a hot reload: one swap of the registry's entry
    /// takes the place of any model with the same `name@version` and of `replaces` (the old id when
    /// the version changed). Requests that already hold the old model finish on it; every request
    /// that looks the model up afterwards gets the new one.
    pub fn swap_in(&self, staged: StagedModel, replaces: Option<&str>) -> ModelInfo {
        let info = staged.0.info().clone();
        let displaced = self.registry.swap(staged.0, replaces);
        tracing::info!(model = %info.id, kind = %info.kind, bundle = %info.bundle_id, replaced = displaced.len(), "serving");
        // Dropped here, outside the registry's lock: the last handle of a model joins its worker.
        drop(displaced);
        info
    }

    /// Unloads a model; in-flight requests on it still complete.
    pub fn unload(&self, id: &str) -> Result<()> {
        let key = self.registry.get(id)?.info().id.clone();
        drop(self.registry.remove(&key));
        Ok(())
    }

    /// Whether a model is served under exactly this `name@version`.
    pub fn serves(&self, id: &str) -> bool {
        self.registry.contains(id)
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
