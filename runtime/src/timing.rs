//! Where a request's time went inside the runtime, for callers that report it (the server's
//! `Server-Timing` header): the longest queue wait and the longest batch run among the request's
//! items. Cache hits add nothing.
//!
//! Timing is collected in a task-local scope rather than returned by every entry point, so that
//! the families' typed APIs stay as they are and callers that do not care pay nothing.

use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

tokio::task_local! {
    static TIMING: Cell<RequestTiming>;
}

/// The runtime's share of one request's time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestTiming {
    /// The longest wait of any of the request's items in its model's queue.
    pub queue: Duration,
    /// The longest batch run any of the request's items took part in.
    pub inference: Duration,
}

/// Runs `work`, collecting the timing of every runtime call it makes on this task.
pub async fn measured<F: Future>(work: F) -> (F::Output, RequestTiming) {
    TIMING
        .scope(Cell::new(RequestTiming::default()), async {
            let output = work.await;
            (output, TIMING.with(Cell::get))
        })
        .await
}

/// Notes one item's queue wait and batch run; a no-op outside [`measured`].
pub(crate) fn record(queue: Duration, inference: Duration) {
    let _ = TIMING.try_with(|cell| {
        let seen = cell.get();
        cell.set(RequestTiming { queue: seen.queue.max(queue), inference: seen.inference.max(inference) });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_longest_wait_and_run_are_kept_and_nothing_leaks_out_of_scope() {
        record(Duration::from_secs(9), Duration::from_secs(9));
        let ((), timing) = measured(async {
            record(Duration::from_millis(3), Duration::from_millis(10));
            record(Duration::from_millis(7), Duration::from_millis(4));
        })
        .await;
        assert_eq!(timing, RequestTiming { queue: Duration::from_millis(7), inference: Duration::from_millis(10) });
        let ((), empty) = measured(async {}).await;
        assert_eq!(empty, RequestTiming::default());
    }
}
