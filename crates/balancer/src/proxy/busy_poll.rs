//! Busy polling: when the proxy's thread runs out of work, it keeps polling for events
//! for a moment (`busy_poll_us`) before it goes to sleep, as HAProxy's `busy-polling`
//! does, but only while that pays.
//!
//! Why: a thread that sleeps must be woken. In a VM, waking an idle virtual CPU costs an
//! interrupt and a VM entry, tens of microseconds before the proxy reads the answer that
//! woke it. And on a machine shared with the load, the woken proxy is often placed on a busy
//! CPU while another one idles. Against a backend that answers within a few tens of
//! microseconds, polling through the wait is both faster and cheaper than sleeping.
//!
//! It is adaptive, so it costs nothing where it cannot help. It learns how often the gaps
//! between two steps of the request path (a request read, an answer sent) are short —
//! polled through within the window, or slept through within twice the window (the sleep
//! includes a wake-up that polling would not pay) — and polls only while at least two gaps
//! in three are. A proxy in front of slow backends (an LLM answering in seconds), or
//! serving a trickle of requests (a short wait for the backend, then a long one for the next
//! request: one gap in two), sleeps at once, as it did before.
//!
//! Runs as one task on the proxy's single-threaded runtime. Each turn yields to the
//! scheduler, which then polls the kernel for events without blocking and runs whatever
//! became ready. Only the fast path's steps count: the hyper path (h2c and the rest) and
//! WebSocket tunnels neither start nor extend polling. A multi-threaded runtime
//! (`worker_threads` > 1) does not use it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::snapshot::BusyPollSnapshot;

/// Poll while at least this share of the recent gaps was shorter than the window.
const POLL_WHEN_SHORT: f32 = 2.0 / 3.0;
/// The weight of each new gap in that share (a moving average over about eight gaps).
const GAP_WEIGHT: f32 = 1.0 / 8.0;

/// Shared between the poller and the request path, which tells it of its progress.
#[derive(Debug)]
pub struct BusyPoll {
    window: Duration,
    /// Bumped by the request path at each step (a request read, an answer sent).
    progress: AtomicU64,
    /// The poller is waiting for `wake`.
    asleep: AtomicBool,
    wake: Notify,
    paid: AtomicU64,
    wasted: AtomicU64,
    polling_ns: AtomicU64,
}

impl BusyPoll {
    /// Polls for at most `window` at a time; zero: never.
    pub fn new(window: Duration) -> BusyPoll {
        BusyPoll {
            window,
            progress: AtomicU64::new(0),
            asleep: AtomicBool::new(false),
            wake: Notify::new(),
            paid: AtomicU64::new(0),
            wasted: AtomicU64::new(0),
            polling_ns: AtomicU64::new(0),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.window.is_zero()
    }

    /// The request path moved on. Costs an add and a load while the poller is awake.
    #[inline]
    pub fn progress(&self) {
        if !self.enabled() {
            return;
        }
        self.progress.fetch_add(1, Ordering::Relaxed);
        if self.asleep.load(Ordering::Relaxed) && self.asleep.swap(false, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }

    pub fn figures(&self) -> BusyPollSnapshot {
        BusyPollSnapshot {
            window_us: self.window.as_micros() as u64,
            paid_total: self.paid.load(Ordering::Relaxed),
            wasted_total: self.wasted.load(Ordering::Relaxed),
            polling_ns_total: self.polling_ns.load(Ordering::Relaxed),
        }
    }

    /// The poller; runs until its runtime ends.
    pub async fn run(&self) {
        if !self.enabled() {
            return;
        }
        // The recent share of gaps shorter than the window; none seen yet: do not poll.
        let mut short_share = 0.0;
        let mut seen = self.progress.load(Ordering::Relaxed);
        // When the current gap began: the first turn that found no progress (None: the
        // last turn found some).
        let mut idle_since: Option<Instant> = None;
        loop {
            // One turn of the scheduler: events polled without blocking, ready tasks run.
            tokio::task::yield_now().await;
            let now = self.progress.load(Ordering::Relaxed);
            if now != seen {
                seen = now;
                if let Some(since) = idle_since.take() {
                    // Polled through a gap shorter than the window.
                    self.count(&self.paid, since);
                    learn(&mut short_share, true);
                }
                continue;
            }
            let since = *idle_since.get_or_insert_with(Instant::now);
            let polling = short_share >= POLL_WHEN_SHORT;
            if polling && since.elapsed() < self.window {
                continue;
            }
            if polling {
                self.count(&self.wasted, since);
            }
            idle_since = None;
            self.sleep_until_progress(seen).await;
            // The whole gap, polled and slept. After a wasted stretch it is a long one.
            // Slept through, it includes the wake-up, which polling would not have paid:
            // up to twice the window counts as short.
            let short = !polling && since.elapsed() < 2 * self.window;
            learn(&mut short_share, short);
            seen = self.progress.load(Ordering::Relaxed);
        }
    }

    fn count(&self, outcome: &AtomicU64, since: Instant) {
        outcome.fetch_add(1, Ordering::Relaxed);
        let ns = since.elapsed().as_nanos() as u64;
        self.polling_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Wait for progress past `seen`; the runtime parks the thread meanwhile.
    async fn sleep_until_progress(&self, seen: u64) {
        let woken = self.wake.notified();
        self.asleep.store(true, Ordering::Release);
        // Progress between the last look and the flag would not have woken us.
        if self.progress.load(Ordering::Acquire) == seen {
            woken.await;
        }
        self.asleep.store(false, Ordering::Release);
    }
}

/// One more gap into the moving share of short ones.
fn learn(short_share: &mut f32, short: bool) {
    let gap = if short { 1.0 } else { 0.0 };
    *short_share += (gap - *short_share) * GAP_WEIGHT;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// Progress every `gap` (a spinning producer for short gaps, a timer for long ones),
    /// `steps` times, with the poller running beside it.
    fn figures_for(gap: Duration, steps: u32) -> BusyPollSnapshot {
        let poll = Arc::new(BusyPoll::new(Duration::from_micros(50)));
        runtime().block_on(async {
            let poller = tokio::spawn({
                let poll = poll.clone();
                async move { poll.run().await }
            });
            for _ in 0..steps {
                if gap < Duration::from_millis(1) {
                    let start = Instant::now();
                    while start.elapsed() < gap {
                        tokio::task::yield_now().await;
                    }
                } else {
                    tokio::time::sleep(gap).await;
                }
                poll.progress();
            }
            poller.abort();
        });
        poll.figures()
    }

    #[test]
    fn polls_through_short_gaps() {
        let figures = figures_for(Duration::from_micros(10), 2000);
        assert_eq!(figures.window_us, 50);
        // The first gaps are slept through (nothing is learnt yet); from then on the
        // stretches end with work. A preempted producer may waste a few.
        assert!(figures.paid_total >= 1000, "{figures:?}");
        assert!(
            figures.wasted_total * 4 <= figures.paid_total,
            "{figures:?}"
        );
        assert!(figures.polling_ns_total > 0, "{figures:?}");
    }

    #[test]
    fn sleeps_through_long_gaps() {
        let figures = figures_for(Duration::from_millis(2), 100);
        // No stretch of polling ever pays, and none is even tried: every gap slept through
        // was longer than twice the window.
        assert_eq!(figures.paid_total, 0, "{figures:?}");
        assert_eq!(figures.wasted_total, 0, "{figures:?}");
        assert_eq!(figures.polling_ns_total, 0, "{figures:?}");
    }

    #[test]
    fn stops_polling_when_the_gaps_grow() {
        let poll = Arc::new(BusyPoll::new(Duration::from_micros(50)));
        let (short, long) = runtime().block_on(async {
            let poller = tokio::spawn({
                let poll = poll.clone();
                async move { poll.run().await }
            });
            for _ in 0..2000 {
                let start = Instant::now();
                while start.elapsed() < Duration::from_micros(10) {
                    tokio::task::yield_now().await;
                }
                poll.progress();
            }
            let short = poll.figures();
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(2)).await;
                poll.progress();
            }
            poller.abort();
            (short, poll.figures())
        });
        assert!(short.paid_total >= 1000, "{short:?}");
        // From a share of short gaps of at most one, each long gap takes an eighth of what
        // is left: four long gaps bring it below two thirds. Four wasted stretches at
        // most, each about the window (a generous bound: the thread may be preempted).
        let wasted = long.wasted_total - short.wasted_total;
        assert!(wasted <= 4, "{short:?} then {long:?}");
        let polled = Duration::from_nanos(long.polling_ns_total - short.polling_ns_total);
        assert!(
            polled < Duration::from_millis(20),
            "{short:?} then {long:?}"
        );
    }

    #[test]
    fn a_trickle_of_requests_to_a_fast_backend_is_not_polled_for() {
        let poll = Arc::new(BusyPoll::new(Duration::from_micros(50)));
        let figures = runtime().block_on(async {
            let poller = tokio::spawn({
                let poll = poll.clone();
                async move { poll.run().await }
            });
            // A request read, its answer 10 µs later, the next request 2 ms later: one gap
            // in two is short, and polling would waste a window for each request.
            for _ in 0..200 {
                poll.progress();
                let start = Instant::now();
                while start.elapsed() < Duration::from_micros(10) {
                    tokio::task::yield_now().await;
                }
                poll.progress();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            poller.abort();
            poll.figures()
        });
        assert_eq!(
            (figures.paid_total, figures.wasted_total),
            (0, 0),
            "{figures:?}"
        );
    }

    #[test]
    fn off_never_polls() {
        let poll = BusyPoll::new(Duration::ZERO);
        assert!(!poll.enabled());
        runtime().block_on(poll.run());
        poll.progress();
        assert_eq!(poll.figures(), BusyPollSnapshot::default());
    }
}
