//! The health board: how each sampler is doing, shown on every snapshot.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::model::SamplerHealth;

/// Shared between the samplers (writers) and the tick (reader). Critical sections are a
/// map insert or a clone, so a std mutex is fine.
#[derive(Debug, Clone, Default)]
pub struct HealthBoard {
    inner: Arc<Mutex<BTreeMap<String, SamplerHealth>>>,
}

impl HealthBoard {
    fn with_entry(&self, name: &str, f: impl FnOnce(&mut SamplerHealth)) {
        // A poisoned lock only means another sampler panicked mid-update; the data is plain.
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map
            .entry(name.to_string())
            .or_insert_with(|| SamplerHealth {
                name: name.to_string(),
                ..SamplerHealth::default()
            });
        f(entry);
    }

    /// A round succeeded in `took` (wall) costing `cpu`; `next_wait` is the pause before
    /// the next round.
    pub fn ok(&self, name: &str, took: Duration, cpu: Duration, next_wait: Duration) {
        self.with_entry(name, |h| {
            h.last_duration_us = took.as_micros() as u64;
            h.last_cpu_us = cpu.as_micros() as u64;
            h.rounds += 1;
            h.total_cpu_us += cpu.as_micros() as u64;
            h.last_error = None;
            h.failures = 0;
            h.backoff_ms = next_wait.as_millis() as u64;
        });
    }

    /// A round failed; the sampler waits `backoff` before trying again.
    pub fn failed(&self, name: &str, error: &str, backoff: Duration) {
        self.with_entry(name, |h| {
            h.last_error = Some(error.to_string());
            h.failures = h.failures.saturating_add(1);
            h.backoff_ms = backoff.as_millis() as u64;
        });
    }

    /// A round succeeded but took longer than the tick: recorded like a success, with the
    /// overrun shown as its error.
    pub fn slow(&self, name: &str, took: Duration, cpu: Duration, next_wait: Duration) {
        self.ok(name, took, cpu, next_wait);
        self.with_entry(name, |h| {
            h.last_error = Some(format!(
                "slow: round took {} ms, longer than the tick",
                took.as_millis()
            ));
        });
    }

    pub fn entries(&self) -> Vec<SamplerHealth> {
        let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.values().cloned().collect()
    }
}

/// CPU time consumed so far by the calling thread (zero if the clock is unavailable).
pub fn thread_cpu_time() -> Duration {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID) {
        Ok(ts) => Duration::new(
            ts.tv_sec().max(0) as u64,
            ts.tv_nsec().clamp(0, 999_999_999) as u32,
        ),
        Err(_) => Duration::ZERO,
    }
}
