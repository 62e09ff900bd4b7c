//! The registry of loaded models: type-erased, so one map holds every family.
//!
//! A model is a [`Loaded<F>`]: its info, its family instance and its batcher. The registry stores it
//! as `Arc<dyn Served>`; typed entry points get the concrete `Loaded<F>` back with
//! [`Registry::typed`], which answers [`Error::WrongKind`] when the model belongs to another family.
//! Replacing a model swaps the `Arc`, so requests in flight finish on the old one.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::batcher::{BatchConfig, Batcher};
use crate::family::Family;
use crate::runtime::ModelInfo;
use crate::{Error, Result};

/// What the registry needs of any loaded model, whatever its family.
pub trait Served: Send + Sync + 'static {
    /// Identity, kind and manifest.
    fn info(&self) -> &ModelInfo;
    /// Runs one warm-up batch on the calling thread.
    fn warmup(&self) -> Result<()>;
    /// Items waiting in the model's queue.
    fn queue_depth(&self) -> usize;
    /// The concrete `Loaded<F>`, for downcasting.
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

/// A loaded model of family `F`: the family instance and its batcher.
pub struct Loaded<F: Family> {
    /// Identity, kind and manifest.
    pub info: ModelInfo,
    /// The model itself, shared with the batcher's worker thread.
    pub family: Arc<F>,
    /// The model's queue and worker.
    pub batcher: Batcher<F>,
}

impl<F: Family> Loaded<F> {
    /// Starts the model's worker thread.
    pub fn new(info: ModelInfo, family: F, batch: BatchConfig) -> Loaded<F> {
        let family = Arc::new(family);
        let batcher = Batcher::new(family.clone(), batch, info.id.clone());
        Loaded { info, family, batcher }
    }
}

impl<F: Family> Served for Loaded<F> {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn warmup(&self) -> Result<()> {
        self.family.run_batch(&[self.family.warmup_item()]).map(drop)
    }

    fn queue_depth(&self) -> usize {
        self.batcher.queue_depth()
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

/// Loaded models by `name@version`.
#[derive(Default)]
pub struct Registry {
    models: RwLock<BTreeMap<String, Arc<dyn Served>>>,
}

impl Registry {
    /// Adds or replaces a model under its id.
    pub fn insert(&self, model: Arc<dyn Served>) {
        let id = model.info().id.clone();
        self.models.write().expect("registry lock poisoned. This is a bug.").insert(id, model);
    }

    /// Removes a model by its exact id and returns it; in-flight requests on it still complete.
    ///
    /// The caller drops what is returned outside the lock: dropping the last handle of a model
    /// joins its worker thread.
    pub fn remove(&self, id: &str) -> Option<Arc<dyn Served>> {
        self.models.write().expect("registry lock poisoned. This is a bug.").remove(id)
    }

    /// Serves `model` in one step under the write lock: it takes the place of any model with its
    /// id, and of the model `replaces` names (a reload whose version changed), so that no request
    /// ever finds neither. Returns the models it displaced, for the caller to drop outside the lock;
    /// requests already holding them finish on them.
    pub fn swap(&self, model: Arc<dyn Served>, replaces: Option<&str>) -> Vec<Arc<dyn Served>> {
        let id = model.info().id.clone();
        let mut models = self.models.write().expect("registry lock poisoned. This is a bug.");
        let mut displaced: Vec<Arc<dyn Served>> =
            replaces.filter(|old| *old != id).and_then(|old| models.remove(old)).into_iter().collect();
        displaced.extend(models.insert(id, model));
        displaced
    }

    /// Whether a model is served under exactly this id.
    pub fn contains(&self, id: &str) -> bool {
        self.models.read().expect("registry lock poisoned. This is a bug.").contains_key(id)
    }

    /// Every loaded model, ordered by id.
    pub fn all(&self) -> Vec<Arc<dyn Served>> {
        self.models.read().expect("registry lock poisoned. This is a bug.").values().cloned().collect()
    }

    /// One model, by `name@version` or by `name` (then the highest version).
    pub fn get(&self, id: &str) -> Result<Arc<dyn Served>> {
        let models = self.models.read().expect("registry lock poisoned. This is a bug.");
        if let Some(m) = models.get(id) {
            return Ok(m.clone());
        }
        if !id.contains('@') {
            let best = models
                .values()
                .filter(|m| m.info().name == id)
                .max_by(|a, b| version_key(&a.info().version).cmp(&version_key(&b.info().version)));
            if let Some(m) = best {
                return Ok(m.clone());
            }
        }
        Err(Error::NotFound(format!("no model named {id:?}")))
    }

    /// One model of family `F`; a model of another family is [`Error::WrongKind`].
    pub fn typed<F: Family>(&self, id: &str) -> Result<Arc<Loaded<F>>> {
        let model = self.get(id)?;
        let info = model.info().clone();
        model.into_any().downcast::<Loaded<F>>().map_err(|_| Error::WrongKind {
            model: info.id,
            kind: info.kind,
            expected: F::KIND,
        })
    }
}

/// Orders versions numerically where they are numbers ("1.10" after "1.9"), else as text.
pub(crate) fn version_key(version: &str) -> Vec<(u64, String)> {
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
