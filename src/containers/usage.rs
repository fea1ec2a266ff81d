//! Turning two readings of a container's cgroup counters into rates.

use std::collections::VecDeque;
use std::time::Instant;

use crate::host::cgroups::CgroupCounters;

/// Points of CPU history kept per container for its sparkline.
pub const CPU_HISTORY_POINTS: usize = 60;

/// Per-interval figures derived from two readings.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Rates {
    pub cpu_pct: f32,
    pub io_read_bytes_per_sec: f64,
    pub io_write_bytes_per_sec: f64,
    pub throttled_periods_delta: u64,
}

/// Rates between two readings `elapsed_secs` apart. A counter that went backwards (a cgroup
/// recreated under the same container) yields zero for that figure, never a wrap-around.
pub fn rates(prev: &CgroupCounters, cur: &CgroupCounters, elapsed_secs: f64) -> Rates {
    if elapsed_secs <= 0.0 {
        return Rates::default();
    }
    let per_sec = |a: u64, b: u64| b.saturating_sub(a) as f64 / elapsed_secs;
    let cpu_pct = match (prev.cpu_usage_ns, cur.cpu_usage_ns) {
        (Some(a), Some(b)) => (per_sec(a, b) / 1e7) as f32,
        _ => 0.0,
    };
    Rates {
        cpu_pct,
        io_read_bytes_per_sec: per_sec(prev.io_read_bytes, cur.io_read_bytes),
        io_write_bytes_per_sec: per_sec(prev.io_write_bytes, cur.io_write_bytes),
        throttled_periods_delta: cur.nr_throttled.saturating_sub(prev.nr_throttled),
    }
}

/// Keeps the previous reading of one container and its recent CPU history.
#[derive(Debug, Default)]
pub struct UsageTracker {
    prev: Option<(Instant, CgroupCounters)>,
    pub cpu_history: VecDeque<f32>,
    pub last: Rates,
}

impl UsageTracker {
    /// Record a reading taken at `now`; returns the rates since the previous one (zero the
    /// first time, since one reading has no interval).
    pub fn update(&mut self, now: Instant, counters: CgroupCounters) -> Rates {
        let rates = match &self.prev {
            Some((then, prev)) => rates(prev, &counters, now.duration_since(*then).as_secs_f64()),
            None => Rates::default(),
        };
        if self.prev.is_some() {
            if self.cpu_history.len() == CPU_HISTORY_POINTS {
                self.cpu_history.pop_front();
            }
            self.cpu_history.push_back(rates.cpu_pct);
        }
        self.prev = Some((now, counters));
        self.last = rates;
        rates
    }

    pub fn counters(&self) -> Option<&CgroupCounters> {
        self.prev.as_ref().map(|(_, c)| c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn counters(cpu_ns: u64, read: u64, throttled: u64) -> CgroupCounters {
        CgroupCounters {
            cpu_usage_ns: Some(cpu_ns),
            io_read_bytes: read,
            nr_throttled: throttled,
            ..CgroupCounters::default()
        }
    }

    #[test]
    fn half_a_core_for_two_seconds_is_fifty_percent() {
        let r = rates(&counters(0, 0, 3), &counters(1_000_000_000, 4096, 5), 2.0);
        assert!((r.cpu_pct - 50.0).abs() < 1e-3, "{r:?}");
        assert_eq!(r.io_read_bytes_per_sec, 2048.0);
        assert_eq!(r.throttled_periods_delta, 2);
    }

    #[test]
    fn counters_going_backwards_give_zero_not_wraparound() {
        let r = rates(&counters(5_000, 100, 9), &counters(1_000, 50, 2), 1.0);
        assert_eq!(r, Rates::default());
        assert_eq!(
            rates(&counters(0, 0, 0), &counters(9, 9, 9), 0.0),
            Rates::default()
        );
    }

    #[test]
    fn tracker_starts_at_zero_then_follows() {
        let mut t = UsageTracker::default();
        let t0 = Instant::now();
        assert_eq!(t.update(t0, counters(0, 0, 0)).cpu_pct, 0.0);
        assert!(t.cpu_history.is_empty());
        let r = t.update(t0 + Duration::from_secs(1), counters(2_000_000_000, 0, 0));
        assert!((r.cpu_pct - 200.0).abs() < 1e-3);
        assert_eq!(t.cpu_history.len(), 1);
    }
}
