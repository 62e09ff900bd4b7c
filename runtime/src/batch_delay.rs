//! When the batcher's worker holds a batch open for the batching delay: the policies and the
//! adaptive policy's memory of whether waiting paid.

/// When a batch that could still grow is held open for the batching delay.
///
/// Whatever is already queued always joins the batch; the policy only decides whether to wait
/// for items that have not arrived yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DelayPolicy {
    /// Always wait up to `max_batch_delay` after the first item.
    Fixed,
    /// Wait only while waiting has recently brought more items, and once a batch has company
    /// only while items keep coming: one client at a time (whose next request cannot come
    /// before this one is answered) stops paying the delay after a few batches, and a periodic
    /// probe wait notices when company arrives. The default: against `Fixed` it served a lone
    /// client 3.1x and four closed-loop clients 1.8x faster, and was level from 16 clients up
    /// (BENCHMARKS.md, `tandem bench serve`).
    #[default]
    Adaptive,
}

impl std::str::FromStr for DelayPolicy {
    type Err = String;
    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text {
            "fixed" => Ok(DelayPolicy::Fixed),
            "adaptive" => Ok(DelayPolicy::Adaptive),
            other => Err(format!("{other:?} is not a batch delay policy: fixed or adaptive")),
        }
    }
}

/// The adaptive policy's memory: how often recent waits brought more items.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WaitPayoff {
    /// Moving average of "the wait brought at least one item", 1 at start.
    rate: f32,
    /// Batches closed without waiting since the last wait.
    skipped: u32,
}

impl WaitPayoff {
    /// Below this rate of useful waits, the worker stops waiting.
    const WORTH_IT: f32 = 0.1;
    /// Weight of the latest wait in the average.
    const WEIGHT: f32 = 0.2;
    /// A wait is tried at least this often, so that rising load is noticed.
    const PROBE_EVERY: u32 = 32;

    pub(crate) fn new() -> WaitPayoff {
        WaitPayoff { rate: 1.0, skipped: 0 }
    }

    /// Whether to wait for this batch.
    pub(crate) fn should_wait(&mut self, policy: DelayPolicy) -> bool {
        if policy == DelayPolicy::Fixed || self.rate >= Self::WORTH_IT || self.skipped + 1 >= Self::PROBE_EVERY {
            self.skipped = 0;
            true
        } else {
            self.skipped += 1;
            false
        }
    }

    /// Records whether a wait brought more items.
    pub(crate) fn record(&mut self, brought_items: bool) {
        self.rate = (1.0 - Self::WEIGHT) * self.rate + Self::WEIGHT * f32::from(u8::from(brought_items));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The adaptive policy stops waiting once waits bring nothing, still probes now and then, and
    /// waits again as soon as a probe brings company; the fixed policy always waits.
    #[test]
    fn the_adaptive_delay_waits_only_while_waiting_pays() {
        let mut payoff = WaitPayoff::new();
        let mut waits = 0;
        for _ in 0..200 {
            if payoff.should_wait(DelayPolicy::Adaptive) {
                waits += 1;
                payoff.record(false);
            }
        }
        // About ten waits until the average drops below the threshold, then one probe per 32.
        assert!((10..=25).contains(&waits), "{waits} waits in 200 lone batches");
        let mut probes = 0;
        while !payoff.should_wait(DelayPolicy::Adaptive) {
            probes += 1;
        }
        assert!(probes < WaitPayoff::PROBE_EVERY, "a probe came after {probes} skipped batches");
        payoff.record(true);
        assert!(payoff.should_wait(DelayPolicy::Adaptive), "a wait that paid brings waiting back");
        let mut fixed = WaitPayoff { rate: 0.0, skipped: 0 };
        assert!((0..100).all(|_| fixed.should_wait(DelayPolicy::Fixed)));
    }
}
