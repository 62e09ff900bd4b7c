//! The one request path every family shares: cache lookup, enqueue, wait under the deadline, cache
//! insert. A family's typed entry point prepares its items and calls [`Runtime::infer`]; nothing
//! else about queues, deadlines or caching is written per family.

use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

use crate::cache::ResultCache;
use crate::family::Family;
use crate::registry::Loaded;
use crate::{Error, Result, Runtime};

/// What the shared cache stores: any family's output, found again by downcasting. Keys are scoped
/// by bundle id, so an entry is only ever read back by the family that wrote it.
pub(crate) type CachedOutput = Arc<dyn Any + Send + Sync>;

/// Preparation this small (pixels, or characters of text) runs inline. For a 28×28 image the
/// runtime's whole cached call fell from 37.7 to 3.7 µs when it stopped using the blocking pool
/// (`tandem bench serve`'s breakdown); 4,096 units (a 64×64 image, or a few sentences) is a
/// judgement above that, not a measured crossover.
pub const INLINE_PREPARE_UNITS: usize = 4096;

enum Slot<F: Family> {
    Ready(F::Output),
    /// A miss, queued with the request's other misses; its cache key, if it may be cached.
    Miss(Option<u64>),
}

impl Runtime {
    /// Runs prepared items on `model`, answering from the cache where it can; outputs are in item order.
    ///
    /// Everything is looked up first and every miss is enqueued in one message, so that one
    /// request's items share batches however short the batching delay.
    pub(crate) async fn infer<F: Family>(&self, model: &Loaded<F>, items: Vec<F::Item>) -> Result<Vec<F::Output>> {
        let deadline = Instant::now() + self.config().batch.request_timeout;
        let mut slots: Vec<Slot<F>> = Vec::with_capacity(items.len());
        let mut misses = Vec::new();
        for item in items {
            let key = model.family.cache_key(&item).map(|k| ResultCache::<CachedOutput>::key(&model.info.bundle_id, k));
            let hit = key
                .and_then(|k| self.cache.get(k, &model.info.id))
                .and_then(|value| value.downcast_ref::<F::Output>().cloned());
            match hit {
                Some(output) => slots.push(Slot::Ready(output)),
                None => {
                    slots.push(Slot::Miss(key));
                    misses.push(item);
                }
            }
        }
        let mut receivers = model.batcher.enqueue_all(misses, deadline)?.into_iter();
        let mut outputs = Vec::with_capacity(slots.len());
        for slot in slots {
            let output = match slot {
                Slot::Ready(output) => output,
                Slot::Miss(key) => {
                    let rx = receivers.next().expect("one receiver per miss. This is a bug.");
                    let output = match tokio::time::timeout_at(deadline.into(), rx).await {
                        Ok(Ok(res)) => {
                            let done = res?;
                            crate::timing::record(done.queued, done.ran);
                            done.output
                        }
                        Ok(Err(_)) => return Err(Error::Unavailable(format!("model {} stopped", model.info.id))),
                        Err(_) => return Err(Error::Timeout),
                    };
                    if let Some(k) = key {
                        self.cache.insert(k, Arc::new(output.clone()));
                    }
                    output
                }
            };
            outputs.push(output);
        }
        Ok(outputs)
    }

    /// Runs request preparation (decoding, resizing, tokenizing) on the blocking pool, so that CPU
    /// work never stalls the async executor that other connections share; `units` (pixels, or
    /// characters of text) up to [`INLINE_PREPARE_UNITS`] run on the calling task instead.
    ///
    /// The hand-off to the pool and back costs tens of microseconds: for a 28×28 image that was
    /// most of a cached request's time in the runtime (`tandem bench serve`'s breakdown), while
    /// the work itself takes a few.
    pub(crate) async fn prepare<T, P>(units: usize, prepare: P) -> Result<T>
    where
        T: Send + 'static,
        P: FnOnce() -> Result<T> + Send + 'static,
    {
        if units <= INLINE_PREPARE_UNITS {
            return prepare();
        }
        tokio::task::spawn_blocking(prepare)
            .await
            .map_err(|e| Error::Internal(format!("preparation task failed: {e}")))?
    }
}
