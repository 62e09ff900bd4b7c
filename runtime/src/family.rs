//! The one trait every model family implements, so that batching, caching and metrics are written once.

use crate::Result;

/// A model family: what one request item is, what it produces, and how a batch of items runs.
pub trait Family: Send + Sync + 'static {
    /// The manifest `kind` this family serves, e.g. `classifier`.
    const KIND: &'static str;
    /// One unit of work: an image, a text, a generation request.
    type Item: Send + 'static;
    /// The result for one item.
    type Output: Send + Sync + Clone + 'static;

    /// How much of a batch's budget this item uses (1 per image; tokens for text).
    fn cost(&self, _item: &Self::Item) -> usize {
        1
    }

    /// The budget a batch of `n` items uses, given the largest item cost and the sum of costs.
    ///
    /// The default is the sum; families that pad every item to the longest one (text) charge
    /// `n * max_cost`, which is what the model actually computes.
    fn batch_cost(&self, _n: usize, _max_cost: usize, sum_cost: usize) -> usize {
        sum_cost
    }

    /// Only items of one group share a batch (same size, same sampler settings, similar length).
    fn group(&self, _item: &Self::Item) -> u64 {
        0
    }

    /// A key identifying the item's output, or `None` when it must never be cached.
    fn cache_key(&self, item: &Self::Item) -> Option<u64>;

    /// Runs one batch; the outputs are in item order.
    fn run_batch(&self, items: &[Self::Item]) -> Result<Vec<Self::Output>>;

    /// An item that exercises the model end to end, for warm-up.
    fn warmup_item(&self) -> Self::Item;
}
