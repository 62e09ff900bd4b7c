//! Help texts of the metrics the runtime records through the `metrics` facade.
//!
//! The runtime never installs a recorder (that is the embedding application's choice); it only
//! names and describes what it records, so that a Prometheus exposition carries a HELP line for
//! every series (`promtool check metrics` fails without one).

/// Describes every runtime metric to the installed recorder; call it after installing one.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!("tandem_queue_depth", "items waiting in a model's batching queue");
    describe_histogram!(
        "tandem_queue_wait_seconds",
        Unit::Seconds,
        "time an item waited in the queue before its batch ran"
    );
    describe_histogram!("tandem_batch_size", "items per batch run by a model");
    describe_histogram!("tandem_inference_seconds", Unit::Seconds, "time to run one batch through a model");
    describe_counter!("tandem_cache_hits_total", "results answered from the response cache");
    describe_counter!("tandem_cache_misses_total", "results the response cache did not hold");
    describe_counter!(
        "tandem_dropped_items_total",
        "queued items dropped before running: `expired` past their deadline, or `abandoned` by a caller that left"
    );
}
