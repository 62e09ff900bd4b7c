//! The dynamic batcher: one queue and one worker thread per model.
//!
//! Callers enqueue items with a deadline and await a oneshot reply. The worker owns the queue: it
//! waits for a first item, takes every item of the same group already queued, then waits for more
//! until the batch holds `max_batch_size` items, its cost (see [`Family::batch_cost`]) reaches
//! `max_batch_tokens`, or `max_batch_delay` has passed since the first item arrived (the
//! [`DelayPolicy`] decides whether to wait at all). Items whose caller
//! went away are skipped, and items past their deadline are answered with [`Error::Timeout`] without
//! running. The model runs on the worker thread, never on the async executor.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::batch_delay::{DelayPolicy, WaitPayoff};
use crate::family::Family;
use crate::{Error, Result};

/// Batching knobs, per model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Most items in one batch.
    pub max_batch_size: usize,
    /// Largest cost of one batch as [`Family::batch_cost`] counts it: padded tokens for text. An
    /// item that alone exceeds it still runs, alone.
    pub max_batch_tokens: usize,
    /// Longest wait for more items after the first one arrives.
    pub max_batch_delay: Duration,
    /// Items that may wait in the queue; beyond this, submissions fail with `Overloaded`.
    pub queue_capacity: usize,
    /// How long an item may wait for its result before it fails with `Timeout`.
    pub request_timeout: Duration,
    /// When the worker holds a batch open for `max_batch_delay`.
    pub delay_policy: DelayPolicy,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_batch_size: 64,
            max_batch_tokens: 16_384,
            max_batch_delay: Duration::from_millis(2),
            queue_capacity: 1024,
            request_timeout: Duration::from_secs(30),
            delay_policy: DelayPolicy::Adaptive,
        }
    }
}

struct Job<F: Family> {
    item: F::Item,
    deadline: Instant,
    enqueued: Instant,
    reply: oneshot::Sender<Result<Done<F::Output>>>,
}

/// The receiving end of one queued item's result.
pub type Pending<O> = oneshot::Receiver<Result<Done<O>>>;

/// One item's output, with where its time went: what a `Server-Timing` header reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Done<O> {
    /// The model's output for the item.
    pub output: O,
    /// From enqueue to the start of the item's batch.
    pub queued: Duration,
    /// The whole batch's run time, which the item shared.
    pub ran: Duration,
}

/// A handle to one model's queue and worker. Dropping it stops the worker after the queue drains.
pub struct Batcher<F: Family> {
    tx: Option<SyncSender<Vec<Job<F>>>>,
    depth: Arc<AtomicUsize>,
    worker: Option<JoinHandle<()>>,
    config: BatchConfig,
    label: String,
}

impl<F: Family> Batcher<F> {
    /// Starts the worker thread for `family`. `label` names the model in metrics and logs.
    pub fn new(family: Arc<F>, config: BatchConfig, label: String) -> Batcher<F> {
        let (tx, rx) = sync_channel(config.queue_capacity.max(1));
        let depth = Arc::new(AtomicUsize::new(0));
        let worker = Worker {
            family,
            rx,
            depth: depth.clone(),
            config,
            label: label.clone(),
            pending: VecDeque::new(),
            payoff: WaitPayoff::new(),
        };
        let handle = std::thread::Builder::new()
            .name(format!("tandem-worker-{label}"))
            .spawn(move || worker.run())
            .expect("spawning a worker thread failed. This is a bug.");
        Batcher { tx: Some(tx), depth, worker: Some(handle), config, label }
    }

    /// Queues `item` and waits for its output, up to the configured request timeout.
    pub async fn submit(&self, item: F::Item) -> Result<F::Output> {
        let deadline = Instant::now() + self.config.request_timeout;
        let rx = self.enqueue(item, deadline)?;
        match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(Ok(res)) => res.map(|done| done.output),
            Ok(Err(_)) => Err(Error::Unavailable(format!("model {} stopped", self.label))),
            Err(_) => Err(Error::Timeout),
        }
    }

    /// Queues `item` with an explicit deadline and returns the receiver of its result.
    pub fn enqueue(&self, item: F::Item, deadline: Instant) -> Result<Pending<F::Output>> {
        let mut receivers = self.enqueue_all(vec![item], deadline)?;
        Ok(receivers.pop().expect("one item gives one receiver. This is a bug."))
    }

    /// Queues a request's items together and returns their receivers, in item order.
    ///
    /// The worker receives them in one message, so a batch never closes between two items of one
    /// request: with a short batching delay, items sent one by one could be split over several
    /// small batches. Either every item is queued or none is.
    pub fn enqueue_all(&self, items: Vec<F::Item>, deadline: Instant) -> Result<Vec<Pending<F::Output>>> {
        let n = items.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let enqueued = Instant::now();
        let (jobs, receivers): (Vec<_>, Vec<_>) = items
            .into_iter()
            .map(|item| {
                let (reply, rx) = oneshot::channel();
                (Job { item, deadline, enqueued, reply }, rx)
            })
            .unzip();
        let tx = self.tx.as_ref().expect("sender lives until drop. This is a bug.");
        // Count before sending so that the worker's decrement can never run first; the count, not
        // the channel, bounds the items waiting.
        let depth = self.depth.fetch_add(n, Ordering::SeqCst) + n;
        if depth > self.config.queue_capacity.max(1) {
            self.depth.fetch_sub(n, Ordering::SeqCst);
            return Err(Error::Overloaded);
        }
        match tx.try_send(jobs) {
            Ok(()) => {
                metrics::gauge!("tandem_queue_depth", "model" => self.label.clone()).set(depth as f64);
                Ok(receivers)
            }
            Err(e) => {
                self.depth.fetch_sub(n, Ordering::SeqCst);
                match e {
                    TrySendError::Full(_) => Err(Error::Overloaded),
                    TrySendError::Disconnected(_) => Err(Error::Unavailable(format!("model {} stopped", self.label))),
                }
            }
        }
    }

    /// Items waiting in the queue right now.
    pub fn queue_depth(&self) -> usize {
        self.depth.load(Ordering::SeqCst)
    }
}

impl<F: Family> Drop for Batcher<F> {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(handle) = self.worker.take() {
            let _ = handle.join();
        }
    }
}

/// What a batch being formed holds so far, for [`Family::batch_cost`].
#[derive(Debug, Clone, Copy, Default)]
struct Budget {
    n: usize,
    max_cost: usize,
    sum_cost: usize,
}

impl Budget {
    fn with(self, cost: usize) -> Budget {
        Budget { n: self.n + 1, max_cost: self.max_cost.max(cost), sum_cost: self.sum_cost + cost }
    }
}

struct Worker<F: Family> {
    family: Arc<F>,
    rx: Receiver<Vec<Job<F>>>,
    depth: Arc<AtomicUsize>,
    config: BatchConfig,
    label: String,
    /// Items received but not yet run, e.g. of another group than the batch being formed.
    pending: VecDeque<Job<F>>,
    /// What recent waits for more items brought, for [`DelayPolicy::Adaptive`].
    payoff: WaitPayoff,
}

impl<F: Family> Worker<F> {
    fn run(mut self) {
        let mut open = true;
        while open || !self.pending.is_empty() {
            if self.pending.is_empty() {
                match self.rx.recv() {
                    Ok(jobs) => self.pending.extend(jobs),
                    Err(_) => break,
                }
            }
            open = self.gather();
            let batch = self.take_batch();
            if !batch.is_empty() {
                self.execute(batch);
            }
        }
    }

    /// Receives more items until the first pending item's group is full or its delay ran out.
    /// Returns false once every sender is gone.
    ///
    /// Whatever is already queued is taken first, whether or not the delay has run out: under
    /// load every item has waited longer than the delay while the previous batch ran, and
    /// closing the batch on the delay alone would run one item at a time however deep the
    /// queue. So the batch grows with the load, and the delay only matters when the queue is
    /// short.
    fn gather(&mut self) -> bool {
        let Some(first) = self.pending.front() else { return true };
        let close_at = first.enqueued + self.config.max_batch_delay;
        let group = self.family.group(&first.item);
        let mut budget = Budget::default();
        let mut seen = 0;
        let (mut waited, mut brought) = (false, false);
        loop {
            for job in self.pending.iter().skip(seen).filter(|j| self.family.group(&j.item) == group) {
                budget = budget.with(self.family.cost(&job.item));
            }
            seen = self.pending.len();
            if budget.n >= self.config.max_batch_size
                || self.family.batch_cost(budget.n, budget.max_cost, budget.sum_cost) >= self.config.max_batch_tokens
            {
                return true;
            }
            match self.rx.try_recv() {
                Ok(jobs) => {
                    self.pending.extend(jobs);
                    continue;
                }
                Err(TryRecvError::Disconnected) => return false,
                Err(TryRecvError::Empty) => {}
            }
            let now = Instant::now();
            if now >= close_at {
                return true;
            }
            if !waited && !self.payoff.should_wait(self.config.delay_policy) {
                return true;
            }
            waited = true;
            // Once the batch has company, the adaptive policy waits on only while items keep
            // coming: a gap of an eighth of the delay closes the batch. Closed-loop clients that
            // were answered together send again together, and then nothing more can come until
            // this batch is answered; waiting out the whole delay for them capped throughput at
            // clients / delay.
            let company = brought || budget.n > 1;
            let limit = match self.config.delay_policy {
                DelayPolicy::Adaptive if company => (close_at - now).min(self.config.max_batch_delay / 8),
                _ => close_at - now,
            };
            match self.rx.recv_timeout(limit) {
                Ok(jobs) => {
                    if !brought {
                        brought = true;
                        self.payoff.record(true);
                    }
                    self.pending.extend(jobs);
                }
                Err(RecvTimeoutError::Timeout) => {
                    if !brought {
                        self.payoff.record(false);
                    }
                    return true;
                }
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
    }

    /// Removes the next batch from `pending`: live items of the first live item's group, within budget.
    fn take_batch(&mut self) -> Vec<Job<F>> {
        let now = Instant::now();
        let mut batch = Vec::new();
        let mut kept = VecDeque::with_capacity(self.pending.len());
        let mut group = None;
        let mut budget = Budget::default();
        for job in self.pending.drain(..) {
            // Work nobody waits for any more is dropped here, before it costs any compute.
            if job.reply.is_closed() {
                self.depth.fetch_sub(1, Ordering::SeqCst);
                metrics::counter!("tandem_dropped_items_total", "model" => self.label.clone(), "reason" => "abandoned")
                    .increment(1);
                continue;
            }
            if job.deadline <= now {
                self.depth.fetch_sub(1, Ordering::SeqCst);
                metrics::counter!("tandem_dropped_items_total", "model" => self.label.clone(), "reason" => "expired")
                    .increment(1);
                let _ = job.reply.send(Err(Error::Timeout));
                continue;
            }
            let g = self.family.group(&job.item);
            let c = self.family.cost(&job.item);
            let grown = budget.with(c);
            let fits = group.is_none()
                || (group == Some(g)
                    && grown.n <= self.config.max_batch_size
                    && self.family.batch_cost(grown.n, grown.max_cost, grown.sum_cost) <= self.config.max_batch_tokens);
            if fits {
                group = Some(g);
                budget = grown;
                self.depth.fetch_sub(1, Ordering::SeqCst);
                batch.push(job);
            } else {
                kept.push_back(job);
            }
        }
        self.pending = kept;
        metrics::gauge!("tandem_queue_depth", "model" => self.label.clone())
            .set(self.depth.load(Ordering::SeqCst) as f64);
        batch
    }

    fn execute(&self, batch: Vec<Job<F>>) {
        let _span = tracing::debug_span!("batch", model = %self.label, size = batch.len()).entered();
        let started = Instant::now();
        for job in &batch {
            metrics::histogram!("tandem_queue_wait_seconds", "model" => self.label.clone())
                .record((started - job.enqueued).as_secs_f64());
        }
        let (items, replies): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|j| (j.item, (j.reply, started - j.enqueued))).unzip();
        // A panicking model must not take the worker, and with it every later request, down.
        let res = std::panic::catch_unwind(AssertUnwindSafe(|| self.family.run_batch(&items)))
            .unwrap_or_else(|_| Err(Error::Internal("the model panicked while running a batch".into())));
        metrics::histogram!("tandem_batch_size", "model" => self.label.clone()).record(items.len() as f64);
        metrics::histogram!("tandem_inference_seconds", "model" => self.label.clone())
            .record(started.elapsed().as_secs_f64());
        let ran = started.elapsed();
        match res {
            Ok(outputs) if outputs.len() == replies.len() => {
                for ((reply, queued), output) in replies.into_iter().zip(outputs) {
                    let _ = reply.send(Ok(Done { output, queued, ran }));
                }
            }
            Ok(outputs) => {
                let msg = format!("the model returned {} outputs for {} items", outputs.len(), replies.len());
                tracing::error!(model = %self.label, "{msg}");
                for (reply, _) in replies {
                    let _ = reply.send(Err(Error::Internal(msg.clone())));
                }
            }
            Err(e) => {
                tracing::error!(model = %self.label, error = %e, "batch failed");
                let msg = e.to_string();
                for (reply, _) in replies {
                    let _ = reply.send(Err(Error::Internal(msg.clone())));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Doubles numbers, records the batch sizes it saw, and can be slowed down.
    struct Doubler {
        batches: Mutex<Vec<usize>>,
        delay: Duration,
    }

    impl Family for Doubler {
        const KIND: &'static str = "doubler";
        type Item = (u64, i64);
        type Output = i64;
        fn group(&self, item: &Self::Item) -> u64 {
            item.0
        }
        fn cache_key(&self, _item: &Self::Item) -> Option<u64> {
            None
        }
        fn run_batch(&self, items: &[Self::Item]) -> Result<Vec<i64>> {
            std::thread::sleep(self.delay);
            self.batches.lock().unwrap().push(items.len());
            if items.iter().any(|i| i.1 < 0) {
                panic!("negative input");
            }
            Ok(items.iter().map(|i| i.1 * 2).collect())
        }
        fn warmup_item(&self) -> Self::Item {
            (0, 0)
        }
    }

    fn batcher(config: BatchConfig, delay: Duration) -> (Arc<Doubler>, Batcher<Doubler>) {
        let family = Arc::new(Doubler { batches: Mutex::new(Vec::new()), delay });
        (family.clone(), Batcher::new(family, config, "test".into()))
    }

    fn config(max_batch_size: usize, delay_ms: u64, queue: usize) -> BatchConfig {
        BatchConfig {
            max_batch_size,
            max_batch_tokens: usize::MAX,
            max_batch_delay: Duration::from_millis(delay_ms),
            queue_capacity: queue,
            request_timeout: Duration::from_secs(5),
            delay_policy: DelayPolicy::Fixed,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_batches_and_get_their_own_results() {
        let (family, b) = batcher(config(8, 50, 64), Duration::ZERO);
        let b = Arc::new(b);
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move { (i, b.submit((0, i)).await.unwrap()) })
            })
            .collect();
        for t in tasks {
            let (i, out) = t.await.unwrap();
            assert_eq!(out, i * 2);
        }
        let batches = family.batches.lock().unwrap().clone();
        assert_eq!(batches.iter().sum::<usize>(), 20);
        assert!(batches.iter().all(|&n| n <= 8), "{batches:?}");
        assert!(batches.len() < 20, "no batching happened: {batches:?}");
    }

    #[tokio::test]
    async fn items_of_different_groups_never_share_a_batch() {
        let (family, b) = batcher(config(8, 30, 64), Duration::ZERO);
        let deadline = Instant::now() + Duration::from_secs(5);
        let rxs: Vec<_> = (0..6).map(|i| b.enqueue((i % 2, i as i64), deadline).unwrap()).collect();
        for (i, rx) in rxs.into_iter().enumerate() {
            assert_eq!(rx.await.unwrap().unwrap().output, 2 * i as i64);
        }
        let batches = family.batches.lock().unwrap().clone();
        assert_eq!(batches, vec![3, 3]);
    }

    #[tokio::test]
    async fn a_full_queue_is_overloaded() {
        let (_family, b) = batcher(config(1, 0, 2), Duration::from_millis(200));
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut results = Vec::new();
        for i in 0..6 {
            results.push(b.enqueue((0, i), deadline));
        }
        assert!(results.iter().any(|r| matches!(r, Err(Error::Overloaded))));
    }

    #[tokio::test]
    async fn an_expired_item_times_out_without_running() {
        let (family, b) = batcher(config(1, 0, 8), Duration::from_millis(100));
        let far = Instant::now() + Duration::from_secs(5);
        let first = b.enqueue((0, 1), far).unwrap();
        let expired = b.enqueue((0, 2), Instant::now() + Duration::from_millis(10)).unwrap();
        assert_eq!(first.await.unwrap().unwrap().output, 2);
        assert!(matches!(expired.await.unwrap(), Err(Error::Timeout)));
        assert_eq!(family.batches.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_cancelled_caller_is_skipped() {
        let (family, b) = batcher(config(1, 0, 8), Duration::from_millis(100));
        let far = Instant::now() + Duration::from_secs(5);
        let first = b.enqueue((0, 1), far).unwrap();
        drop(b.enqueue((0, 2), far).unwrap());
        let third = b.enqueue((0, 3), far).unwrap();
        assert_eq!(first.await.unwrap().unwrap().output, 2);
        assert_eq!(third.await.unwrap().unwrap().output, 6);
        assert_eq!(family.batches.lock().unwrap().len(), 2);
        assert_eq!(b.queue_depth(), 0);
    }

    #[tokio::test]
    async fn a_panicking_batch_fails_its_items_and_the_worker_survives() {
        let (_family, b) = batcher(config(1, 0, 8), Duration::ZERO);
        assert!(matches!(b.submit((0, -1)).await, Err(Error::Internal(_))));
        assert_eq!(b.submit((0, 4)).await.unwrap(), 8);
    }

    #[tokio::test]
    async fn a_requests_items_share_a_batch_even_without_delay() {
        let (family, b) = batcher(config(64, 0, 64), Duration::ZERO);
        let deadline = Instant::now() + Duration::from_secs(5);
        let rxs = b.enqueue_all((0..32).map(|i| (0, i)).collect(), deadline).unwrap();
        for (i, rx) in rxs.into_iter().enumerate() {
            assert_eq!(rx.await.unwrap().unwrap().output, 2 * i as i64);
        }
        assert_eq!(family.batches.lock().unwrap().clone(), vec![32]);
        let too_many = b.enqueue_all((0..65).map(|i| (0, i)).collect(), deadline);
        assert!(matches!(too_many, Err(Error::Overloaded)));
        assert_eq!(b.queue_depth(), 0, "a refused request leaves nothing queued");
    }

    /// Closed-loop clients answered together send again together, and nothing else can come:
    /// the adaptive policy closes their batch once arrivals stop (an eighth of the delay), where
    /// the fixed policy waits out the whole delay every round. With a 2 s delay, three rounds of
    /// four clients would take at least 6 s under the fixed policy; the margin below is wide.
    #[tokio::test]
    async fn the_adaptive_delay_closes_a_batch_once_arrivals_stop() {
        let cfg = BatchConfig { delay_policy: DelayPolicy::Adaptive, ..config(64, 2000, 64) };
        let (family, b) = batcher(cfg, Duration::ZERO);
        let b = Arc::new(b);
        let started = Instant::now();
        let tasks: Vec<_> = (0..4i64)
            .map(|c| {
                let b = b.clone();
                tokio::spawn(async move {
                    for i in 0..3 {
                        assert_eq!(b.submit((0, c * 10 + i)).await.unwrap(), 2 * (c * 10 + i));
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_secs(4), "12 items took {elapsed:?}: the delay was waited out");
        let batches = family.batches.lock().unwrap().clone();
        assert!(batches.iter().sum::<usize>() == 12 && batches.iter().any(|&n| n > 1), "{batches:?}");
    }

    /// Mean batch size when `clients` callers each submit `per_client` items one after another,
    /// against a model that takes 5 ms per batch, with no batching delay: by the time a batch
    /// finishes, every item queued during it has waited longer than any delay would be.
    async fn mean_batch_under_load(clients: i64, per_client: i64) -> f64 {
        let (family, b) = batcher(config(64, 0, 1024), Duration::from_millis(5));
        let b = Arc::new(b);
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let b = b.clone();
                tokio::spawn(async move {
                    for i in 0..per_client {
                        assert_eq!(b.submit((0, c * 1000 + i)).await.unwrap(), 2 * (c * 1000 + i));
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let batches = family.batches.lock().unwrap().clone();
        assert_eq!(batches.iter().sum::<usize>() as i64, clients * per_client);
        (clients * per_client) as f64 / batches.len() as f64
    }

    /// A probe found 8,095 items run in 8,072 batches at 64 connections: the batch closed on the
    /// first item's delay, which had always passed by the time the previous batch finished.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_mean_batch_size_grows_with_concurrency() {
        let alone = mean_batch_under_load(1, 20).await;
        let crowded = mean_batch_under_load(16, 20).await;
        assert_eq!(alone, 1.0, "one client at a time has nothing to batch with");
        assert!(crowded >= 4.0, "16 concurrent clients ran in batches of {crowded:.2} on average");
    }

    /// Charges every item the longest item's cost, like padded text.
    struct Padded {
        batches: Mutex<Vec<usize>>,
    }

    impl Family for Padded {
        const KIND: &'static str = "padded";
        type Item = usize;
        type Output = usize;
        fn cost(&self, item: &usize) -> usize {
            *item
        }
        fn batch_cost(&self, n: usize, max_cost: usize, _sum_cost: usize) -> usize {
            n * max_cost
        }
        fn cache_key(&self, _item: &usize) -> Option<u64> {
            None
        }
        fn run_batch(&self, items: &[usize]) -> Result<Vec<usize>> {
            self.batches.lock().unwrap().push(items.len());
            Ok(items.to_vec())
        }
        fn warmup_item(&self) -> usize {
            1
        }
    }

    #[tokio::test]
    async fn the_token_budget_counts_padding() {
        let family = Arc::new(Padded { batches: Mutex::new(Vec::new()) });
        let config = BatchConfig { max_batch_tokens: 10, ..config(64, 50, 64) };
        let b = Batcher::new(family.clone(), config, "test".into());
        let deadline = Instant::now() + Duration::from_secs(5);
        // 1 + 4 would sum to 5 but pads to 2 x 4 = 8; a third item would pad to 12 > 10. A 20-token
        // item exceeds the budget alone and still runs, alone.
        let rxs: Vec<_> = [1, 4, 4, 20].into_iter().map(|c| b.enqueue(c, deadline).unwrap()).collect();
        for (rx, c) in rxs.into_iter().zip([1, 4, 4, 20]) {
            assert_eq!(rx.await.unwrap().unwrap().output, c);
        }
        assert_eq!(family.batches.lock().unwrap().clone(), vec![2, 1, 1]);
    }
}
