//! Peak-EWMA latency estimate (Finagle's `PeakEwma`, linkerd/tower's `peak_ewma`): the input of
//! the predictive "power of two choices" picker.
//!
//! "Peak" means a sample above the estimate replaces it at once, so a backend that turns slow is
//! avoided from its very next answer, while a backend that turns fast again earns trust back
//! only gradually (exponential decay with a time constant, 10 s by default). While no sample
//! arrives the estimate also decays toward zero, so an idle slow backend is eventually tried
//! again instead of being starved forever on one bad sample.
//!
//! Lock-free: the estimate is an `f64` stored as bits in an `AtomicU64`, updated by CAS; the
//! time of the last update is nanoseconds since a process-wide monotonic origin.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Default round-trip estimate for a backend nothing is known about yet (linkerd's default).
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// Default decay time constant: after this long a sample's weight has fallen to 1/e.
pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);

/// Nanoseconds since a process-wide monotonic origin (the first call). One origin for every
/// estimate so a picker can read the clock once and compare costs of different backends.
pub fn monotonic_ns() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A lock-free peak-EWMA round-trip-time estimate for one backend.
#[derive(Debug)]
pub struct PeakEwma {
    /// The estimate in nanoseconds as of `last_ns`, as `f64` bits.
    estimate_bits: AtomicU64,
    /// When `estimate_bits` was last written, in [`monotonic_ns`] time.
    last_ns: AtomicU64,
    decay_ns: f64,
}

impl PeakEwma {
    /// A fresh estimate starting at `default_rtt` (use [`DEFAULT_RTT`], [`DEFAULT_DECAY`]).
    /// A zero `decay` is treated as 1 ns (the estimate then simply follows the last sample).
    pub fn new(default_rtt: Duration, decay: Duration) -> PeakEwma {
        Self::new_at(default_rtt, decay, monotonic_ns())
    }

    /// As [`PeakEwma::new`], with the creation time given (for deterministic tests).
    pub fn new_at(default_rtt: Duration, decay: Duration, now_ns: u64) -> PeakEwma {
        PeakEwma {
            estimate_bits: AtomicU64::new(nanos(default_rtt).to_bits()),
            last_ns: AtomicU64::new(now_ns),
            decay_ns: nanos(decay).max(1.0),
        }
    }

    /// Records one observed round trip (time to the response headers).
    pub fn observe(&self, rtt: Duration) {
        self.observe_at(rtt, monotonic_ns());
    }

    /// Records `rtt` as observed at `now_ns` ([`monotonic_ns`] time). A sample above the
    /// current (decayed) estimate replaces it; a lower one is blended in with weight
    /// `1 - exp(-dt / decay)`, so a burst of fast answers within a few ms barely moves it.
    pub fn observe_at(&self, rtt: Duration, now_ns: u64) {
        let rtt_ns = nanos(rtt);
        let mut current_bits = self.estimate_bits.load(Ordering::Acquire);
        loop {
            let stored = f64::from_bits(current_bits);
            let weight = self.weight_since(now_ns);
            let decayed = stored * weight;
            let next = if rtt_ns > decayed {
                rtt_ns
            } else {
                decayed + rtt_ns * (1.0 - weight)
            };
            match self.estimate_bits.compare_exchange_weak(
                current_bits,
                next.to_bits(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => current_bits = actual,
            }
        }
        // Racing observers may store their timestamps out of order: never move time back.
        self.last_ns.fetch_max(now_ns, Ordering::AcqRel);
    }

    /// The current estimate.
    pub fn estimate(&self) -> Duration {
        self.estimate_at(monotonic_ns())
    }

    /// The estimate as of `now_ns`, decayed toward zero since the last sample.
    pub fn estimate_at(&self, now_ns: u64) -> Duration {
        Duration::from_nanos(self.estimate_ns_at(now_ns) as u64)
    }

    /// The predicted cost of sending one more request: estimate × (in_flight + 1), in
    /// nanoseconds (only comparisons between backends matter). Counting the queued requests
    /// makes a fast backend with a long queue lose against a slightly slower idle one.
    pub fn cost(&self, in_flight: u32) -> f64 {
        self.cost_at(in_flight, monotonic_ns())
    }

    /// [`PeakEwma::cost`] as of `now_ns` (read the clock once per pick).
    pub fn cost_at(&self, in_flight: u32, now_ns: u64) -> f64 {
        self.estimate_ns_at(now_ns) * (f64::from(in_flight) + 1.0)
    }

    fn estimate_ns_at(&self, now_ns: u64) -> f64 {
        f64::from_bits(self.estimate_bits.load(Ordering::Acquire)) * self.weight_since(now_ns)
    }

    /// exp(-dt / decay): how much of the stored estimate still counts at `now_ns`.
    fn weight_since(&self, now_ns: u64) -> f64 {
        let last = self.last_ns.load(Ordering::Acquire);
        let elapsed = now_ns.saturating_sub(last) as f64;
        (-elapsed / self.decay_ns).exp()
    }
}

impl Default for PeakEwma {
    fn default() -> Self {
        PeakEwma::new(DEFAULT_RTT, DEFAULT_DECAY)
    }
}

fn nanos(d: Duration) -> f64 {
    d.as_nanos() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const SEC: u64 = 1_000_000_000;
    const MS: u64 = 1_000_000;

    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1000.0
    }

    fn fresh() -> PeakEwma {
        PeakEwma::new_at(DEFAULT_RTT, DEFAULT_DECAY, 0)
    }

    #[test]
    fn starts_at_the_default_rtt() {
        let e = fresh();
        assert_eq!(e.estimate_at(0), Duration::from_millis(30));
        assert!((e.cost_at(0, 0) - 30.0 * MS as f64).abs() < 1.0);
    }

    #[test]
    fn a_spike_is_taken_at_once() {
        let e = fresh();
        e.observe_at(Duration::from_millis(500), 1);
        assert!((ms(e.estimate_at(1)) - 500.0).abs() < 0.01);
    }

    #[test]
    fn a_spike_decays_with_the_time_constant() {
        let e = fresh();
        e.observe_at(Duration::from_millis(500), SEC);
        // One time constant later, with a fast sample: 500·e⁻¹ + 10·(1 − e⁻¹).
        e.observe_at(Duration::from_millis(10), 11 * SEC);
        let w = (-1.0f64).exp();
        let expected = 500.0 * w + 10.0 * (1.0 - w);
        assert!((ms(e.estimate_at(11 * SEC)) - expected).abs() < 0.01);
        // Without samples it keeps decaying toward zero (idle backends get retried).
        let later = ms(e.estimate_at(21 * SEC));
        assert!((later - expected * w).abs() < 0.01, "{later}");
    }

    #[test]
    fn fast_samples_close_together_barely_move_a_peak() {
        let e = fresh();
        e.observe_at(Duration::from_millis(200), 0);
        for i in 1..=10 {
            e.observe_at(Duration::from_millis(1), i * MS);
        }
        // 10 ms of 1 ms answers against a 10 s constant: still ~199.8 ms.
        let est = ms(e.estimate_at(10 * MS));
        assert!(est > 199.0 && est < 200.0, "{est}");
    }

    #[test]
    fn steady_samples_converge_to_their_value() {
        let e = fresh();
        e.observe_at(Duration::from_millis(100), 0);
        for i in 1..=60 {
            e.observe_at(Duration::from_millis(5), i * SEC);
        }
        let est = ms(e.estimate_at(60 * SEC));
        assert!((est - 5.0).abs() < 0.05, "{est}");
    }

    #[test]
    fn cost_grows_with_in_flight() {
        let e = fresh();
        assert!((e.cost_at(3, 0) / e.cost_at(0, 0) - 4.0).abs() < 1e-9);
    }

    #[test]
    fn time_going_backwards_does_not_inflate() {
        let e = fresh();
        e.observe_at(Duration::from_millis(50), 5 * SEC);
        e.observe_at(Duration::from_millis(10), 4 * SEC); // late observer: dt saturates to 0
        assert!((ms(e.estimate_at(5 * SEC)) - 50.0).abs() < 0.01);
        assert_eq!(e.last_ns.load(Ordering::Relaxed), 5 * SEC);
    }

    #[test]
    fn concurrent_observers_keep_the_peak() {
        let e = Arc::new(PeakEwma::new(DEFAULT_RTT, DEFAULT_DECAY));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let e = Arc::clone(&e);
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        let rtt = if t == 0 && i == 5_000 { 900 } else { 1 };
                        e.observe(Duration::from_millis(rtt));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("observer thread");
        }
        // The 900 ms peak arrived well under a second ago: most of it must remain.
        assert!(ms(e.estimate()) > 500.0, "{:?}", e.estimate());
    }

    #[test]
    fn real_clock_observe_and_estimate() {
        let e = PeakEwma::default();
        e.observe(Duration::from_millis(80));
        let est = ms(e.estimate());
        assert!(est > 79.0 && est <= 80.0, "{est}");
    }
}
