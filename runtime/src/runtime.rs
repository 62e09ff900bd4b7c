//! The runtime facade: a registry of loaded models, each with its batcher, and the shared cache.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use candle_core::Device;

use crate::batcher::{BatchConfig, Batcher};
use crate::bundle::{Bundle, Manifest};
use crate::cache::{CacheStats, ResultCache};
use crate::families::classifier::{top_k, Classifier, ClassifyRequest, ClassifyResponse};
use crate::family::Family;
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

struct LoadedModel {
    info: ModelInfo,
    classifier: Arc<Classifier>,
    batcher: Batcher<Classifier>,
}

/// Loaded models plus the shared result cache. Cheap to share behind an `Arc`.
pub struct Runtime {
    models: RwLock<BTreeMap<String, Arc<LoadedModel>>>,
    cache: ResultCache<Arc<Vec<f32>>>,
    config: RuntimeConfig,
    device: Device,
}

impl Runtime {
    /// An empty runtime on the default device.
    pub fn new(config: RuntimeConfig) -> Runtime {
        Runtime {
            models: RwLock::new(BTreeMap::new()),
            cache: ResultCache::new(config.cache_capacity),
            config,
            device: crate::device::default_device(),
        }
    }

    /// Loads and validates the bundle in `dir`; a bundle with the same `name@version` is replaced.
    ///
    /// Requests already holding the old model finish on it; new ones see the new one.
    pub fn load(&self, dir: &Path) -> Result<ModelInfo> {
        let bundle = Bundle::load(dir)?;
        let classifier = Arc::new(Classifier::from_bundle(&bundle, &self.device)?);
        let manifest = Arc::new(bundle.manifest.clone());
        let crate::bundle::Architecture::Cnn(cfg) = &manifest.architecture;
        let info = ModelInfo {
            id: bundle.model_id(),
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            bundle_id: bundle.id.clone(),
            kind: manifest.kind.as_str().to_owned(),
            params: cfg.num_params().map_err(Error::Bundle)?,
            manifest: manifest.clone(),
        };
        let batcher = Batcher::new(classifier.clone(), self.config.batch, info.id.clone());
        let loaded = Arc::new(LoadedModel { info: info.clone(), classifier, batcher });
        self.models.write().expect("registry lock poisoned. This is a bug.").insert(info.id.clone(), loaded);
        tracing::info!(model = %info.id, bundle = %info.bundle_id, "loaded");
        Ok(info)
    }

    /// Unloads a model; in-flight requests on it still complete.
    pub fn unload(&self, id: &str) -> Result<()> {
        let key = self.resolve(id)?.info.id.clone();
        self.models.write().expect("registry lock poisoned. This is a bug.").remove(&key);
        Ok(())
    }

    /// All loaded models, ordered by id.
    pub fn models(&self) -> Vec<ModelInfo> {
        self.models.read().expect("registry lock poisoned. This is a bug.").values().map(|m| m.info.clone()).collect()
    }

    /// One model, by `name@version` or by `name` (then the highest version).
    pub fn model(&self, id: &str) -> Result<ModelInfo> {
        Ok(self.resolve(id)?.info.clone())
    }

    fn resolve(&self, id: &str) -> Result<Arc<LoadedModel>> {
        let models = self.models.read().expect("registry lock poisoned. This is a bug.");
        if let Some(m) = models.get(id) {
            return Ok(m.clone());
        }
        if !id.contains('@') {
            let best = models
                .values()
                .filter(|m| m.info.name == id)
                .max_by(|a, b| version_key(&a.info.version).cmp(&version_key(&b.info.version)));
            if let Some(m) = best {
                return Ok(m.clone());
            }
        }
        Err(Error::NotFound(format!("no model named {id:?}")))
    }

    /// Runs one batch through every model so that the first real request does not pay for start-up.
    pub fn warmup(&self) -> Result<()> {
        let models: Vec<_> =
            self.models.read().expect("registry lock poisoned. This is a bug.").values().cloned().collect();
        for m in models {
            let item = m.classifier.warmup_item();
            m.classifier.run_batch(&[item])?;
        }
        Ok(())
    }

    /// Classifies images with the model `id`.
    pub async fn classify(&self, id: &str, request: ClassifyRequest) -> Result<ClassifyResponse> {
        if request.images.is_empty() {
            return Err(Error::InvalidInput("at least one image is required".into()));
        }
        if request.top_k == 0 {
            return Err(Error::InvalidInput("top_k must be at least 1".into()));
        }
        let model = self.resolve(id)?;
        let classifier = &model.classifier;
        let k = request.top_k.min(classifier.labels().len());
        let items: Vec<_> = request.images.iter().map(|img| classifier.prepare(img)).collect();

        // Look everything up first and enqueue all misses at once, so that one request's images
        // can share a batch.
        let mut slots = Vec::with_capacity(items.len());
        let deadline = std::time::Instant::now() + self.config.batch.request_timeout;
        for item in items {
            let key = classifier.cache_key(&item).map(|k| ResultCache::<Arc<Vec<f32>>>::key(&model.info.bundle_id, k));
            match key.and_then(|k| self.cache.get(k, &model.info.id)) {
                Some(probs) => slots.push(Slot::Ready(probs)),
                None => slots.push(Slot::Waiting(key, model.batcher.enqueue(item, deadline)?)),
            }
        }
        let mut predictions = Vec::with_capacity(slots.len());
        for slot in slots {
            let probs = match slot {
                Slot::Ready(p) => p,
                Slot::Waiting(key, rx) => {
                    let probs = match tokio::time::timeout_at(deadline.into(), rx).await {
                        Ok(Ok(res)) => res?,
                        Ok(Err(_)) => return Err(Error::Unavailable(format!("model {} stopped", model.info.id))),
                        Err(_) => return Err(Error::Timeout),
                    };
                    if let Some(k) = key {
                        self.cache.insert(k, probs.clone());
                    }
                    probs
                }
            };
            predictions.push(top_k(classifier.labels(), &probs, k));
        }
        Ok(ClassifyResponse { model: model.info.id.clone(), predictions })
    }

    /// Cache hit and miss counts.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// The settings this runtime was built with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }
}

enum Slot {
    Ready(Arc<Vec<f32>>),
    Waiting(Option<u64>, tokio::sync::oneshot::Receiver<Result<Arc<Vec<f32>>>>),
}

/// Orders versions numerically where they are numbers ("1.10" after "1.9"), else as text.
fn version_key(version: &str) -> Vec<(u64, String)> {
    version.split(['.', '-']).map(|part| (part.parse().unwrap_or(0), part.to_owned())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_numerically() {
        assert!(version_key("1.10") > version_key("1.9"));
        assert!(version_key("2") > version_key("1.9.9"));
    }
}
