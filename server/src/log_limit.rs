//! Rate-limited logging, for events that a hostile or overloaded client can make happen thousands
//! of times a second: one log line per 429 gave 100 MB of log in 30 s of overload.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lets one event through per `every`, counting the ones it holds back.
pub(crate) struct LogLimiter {
    every: Duration,
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl LogLimiter {
    pub(crate) const fn new(every: Duration) -> LogLimiter {
        LogLimiter { every, last: Mutex::new(None), suppressed: AtomicU64::new(0) }
    }

    /// `Some(n)` when this event should be logged, `n` being how many were held back since the
    /// last one that was; `None` when it should not.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = Instant::now();
        let mut last = self.last.lock().expect("log limiter lock poisoned. This is a bug.");
        if last.is_some_and(|at| now.duration_since(at) < self.every) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_period_passes_and_the_rest_are_counted() {
        let limiter = LogLimiter::new(Duration::from_secs(3600));
        assert_eq!(limiter.allow(), Some(0));
        for _ in 0..5 {
            assert_eq!(limiter.allow(), None);
        }
        let open = LogLimiter::new(Duration::ZERO);
        assert_eq!(open.allow(), Some(0));
        assert_eq!(open.allow(), Some(0));
        assert_eq!(limiter.suppressed.load(Ordering::Relaxed), 5);
    }
}
