//! Running a blocking sampler as a tokio task: one round per tick on the blocking pool,
//! the latest result published on a watch channel, failures and overruns backed off.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::host::health::{HealthBoard, thread_cpu_time};

/// Longest pause a failing sampler backs off to.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The pause before the next round after `failures` failures in a row.
pub fn backoff(interval: Duration, failures: u32) -> Duration {
    let factor = 1u32 << failures.min(6);
    (interval * factor).min(MAX_BACKOFF.max(interval))
}

/// Run `round` every `interval` until shutdown. Each round runs on the blocking pool so slow
/// /proc reads never stall the async threads or the other samplers; the tick never waits for
/// it and simply takes the latest published value.
pub async fn run<T, E, F>(
    name: &'static str,
    mut round: F,
    interval: Duration,
    out: watch::Sender<Option<T>>,
    health: HealthBoard,
    mut shutdown: watch::Receiver<bool>,
) where
    T: Send + Sync + 'static,
    E: std::fmt::Display + Send + 'static,
    F: FnMut() -> Result<T, E> + Send + 'static,
{
    let mut failures: u32 = 0;
    loop {
        let started = Instant::now();
        let joined = tokio::task::spawn_blocking(move || {
            let cpu_before = thread_cpu_time();
            let result = round();
            let cpu = thread_cpu_time().saturating_sub(cpu_before);
            (round, result, cpu)
        })
        .await;
        let (returned, result, cpu) = match joined {
            Ok(pair) => pair,
            Err(err) => {
                tracing::error!(sampler = name, %err, "sampler panicked; it stops");
                health.failed(name, "panicked; stopped", Duration::ZERO);
                return;
            }
        };
        round = returned;
        let took = started.elapsed();
        let wait = match result {
            Ok(value) => {
                out.send_replace(Some(value));
                if took > interval {
                    failures = failures.saturating_add(1);
                    let wait = backoff(interval, failures).max(took);
                    tracing::warn!(
                        sampler = name,
                        took_ms = took.as_millis() as u64,
                        "sampler slower than the tick; backing off"
                    );
                    health.slow(name, took, cpu, wait);
                    wait
                } else {
                    failures = 0;
                    health.ok(name, took, cpu, interval);
                    interval.saturating_sub(took)
                }
            }
            Err(err) => {
                failures = failures.saturating_add(1);
                let wait = backoff(interval, failures);
                tracing::warn!(sampler = name, error = %err, retry_ms = wait.as_millis() as u64, "sampler failed");
                health.failed(name, &err.to_string(), wait);
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_caps() {
        let tick = Duration::from_secs(1);
        assert_eq!(backoff(tick, 0), tick);
        assert_eq!(backoff(tick, 1), Duration::from_secs(2));
        assert_eq!(backoff(tick, 3), Duration::from_secs(8));
        assert_eq!(backoff(tick, 20), Duration::from_secs(30));
    }

    #[tokio::test]
    async fn failing_sampler_is_backed_off_and_others_keep_going() {
        let health = HealthBoard::default();
        let (stop_tx, stop_rx) = watch::channel(false);
        let (bad_tx, _bad_rx) = watch::channel::<Option<u32>>(None);
        let (good_tx, mut good_rx) = watch::channel::<Option<u32>>(None);
        let tick = Duration::from_millis(20);
        let bad = tokio::spawn(run(
            "bad",
            || Err::<u32, _>("boom"),
            tick,
            bad_tx,
            health.clone(),
            stop_rx.clone(),
        ));
        let mut n = 0;
        let good = tokio::spawn(run(
            "good",
            move || {
                n += 1;
                Ok::<u32, String>(n)
            },
            tick,
            good_tx,
            health.clone(),
            stop_rx,
        ));
        // The good sampler advances several rounds while the bad one fails.
        while good_rx.borrow_and_update().unwrap_or(0) < 5 {
            good_rx.changed().await.unwrap();
        }
        let entries = health.entries();
        let bad_health = entries.iter().find(|h| h.name == "bad").unwrap();
        assert_eq!(bad_health.last_error.as_deref(), Some("boom"));
        assert!(bad_health.backoff_ms >= 40, "{bad_health:?}");
        let good_health = entries.iter().find(|h| h.name == "good").unwrap();
        assert!(good_health.last_error.is_none());
        stop_tx.send(true).unwrap();
        bad.await.unwrap();
        good.await.unwrap();
    }
}
