//! Reading a fix's figure from snapshots: the value now, or over the interval between two.

use super::strategy::running;
use crate::model::{AgentClass, Measure, Pressure, PsiLine, Snapshot};

/// Stall percent between two readings of one PSI line, from the kernel's cumulative
/// `total` (µs): exact over the interval, where avg10 lags a change by tens of seconds.
fn psi_interval_pct(prev: &PsiLine, now: &PsiLine, elapsed_ms: u64) -> Option<f64> {
    let stalled_us = now.total_us.checked_sub(prev.total_us)?;
    (elapsed_ms > 0).then(|| (stalled_us as f64 / (elapsed_ms as f64 * 10.0)).min(100.0))
}

/// A pressure figure over one interval, or the news that nothing was read since.
enum Interval {
    Pct(f64),
    SameReading,
}

/// The stall percent of the line `pick` takes, between two pressure readings. The interval
/// is the time between the two reads when both carry it, else between the snapshots.
fn pressure_interval(
    prev: &Pressure,
    now: &Pressure,
    pick: fn(&Pressure) -> Option<PsiLine>,
    prev_snap: &Snapshot,
    now_snap: &Snapshot,
) -> Option<Interval> {
    let elapsed_ms = if prev.read_at_ms > 0 && now.read_at_ms > 0 {
        if now.read_at_ms <= prev.read_at_ms {
            return Some(Interval::SameReading);
        }
        now.read_at_ms - prev.read_at_ms
    } else {
        now_snap.taken_at_ms.saturating_sub(prev_snap.taken_at_ms)
    };
    psi_interval_pct(&pick(prev)?, &pick(now)?, elapsed_ms).map(Interval::Pct)
}

impl Measure {
    /// The figure over the interval from `prev` to `now`: for pressure figures the stall
    /// share over exactly that interval (from the kernel's totals), for the others the value
    /// in `now`. Without a usable `prev` (first tick, a counter reset), the value in `now`.
    /// Validation compares means of these, so a fix is judged by what happened while it was
    /// in force, not by a 10-second average still remembering the time before it.
    pub fn interval_value(&self, prev: Option<&Snapshot>, now: &Snapshot) -> Option<f64> {
        let Some(prev) = prev.filter(|p| p.taken_at_ms < now.taken_at_ms) else {
            return self.value(now);
        };
        let host = |pick: fn(&Pressure) -> Option<PsiLine>| {
            pressure_interval(&prev.pressure, &now.pressure, pick, prev, now)
        };
        let interval = match self {
            Measure::HostPsiCpuSome => host(|p| p.cpu.map(|r| r.some)),
            Measure::HostPsiMemorySome => host(|p| p.memory.map(|r| r.some)),
            Measure::HostPsiIoFull => host(|p| p.io.and_then(|r| r.full)),
            Measure::LatencyAgentsPsiCpuSome => {
                let values: Vec<Interval> = running(now)
                    .filter(|c| c.class == Some(AgentClass::Latency))
                    .filter_map(|c| {
                        let before = prev.containers.agents.iter().find(|p| p.id == c.id)?;
                        pressure_interval(
                            &before.pressure,
                            &c.pressure,
                            |p| p.cpu.map(|r| r.some),
                            prev,
                            now,
                        )
                    })
                    .collect();
                if values.iter().any(|v| matches!(v, Interval::SameReading)) {
                    Some(Interval::SameReading)
                } else {
                    let pcts: Vec<f64> = values
                        .iter()
                        .filter_map(|v| match v {
                            Interval::Pct(p) => Some(*p),
                            Interval::SameReading => None,
                        })
                        .collect();
                    (!pcts.is_empty())
                        .then(|| Interval::Pct(pcts.iter().sum::<f64>() / pcts.len() as f64))
                }
            }
            _ => None,
        };
        match interval {
            Some(Interval::Pct(pct)) => Some(pct),
            // The sampler has not read the files again since: no new interval to judge.
            Some(Interval::SameReading) => None,
            None => self.value(now),
        }
    }

    /// The figure in `snap`, `None` when it cannot be read (container gone, no PSI).
    pub fn value(&self, snap: &Snapshot) -> Option<f64> {
        let container = |id: &str| snap.containers.agents.iter().find(|c| c.id == id);
        match self {
            Measure::HostPsiCpuSome => snap.pressure.cpu.map(|r| f64::from(r.some.avg10)),
            Measure::HostPsiMemorySome => snap.pressure.memory.map(|r| f64::from(r.some.avg10)),
            Measure::HostPsiIoFull => snap
                .pressure
                .io
                .and_then(|r| r.full)
                .map(|f| f64::from(f.avg10)),
            Measure::HostMemoryUsedPct => {
                (snap.memory.total_kb > 0).then(|| snap.memory.used_fraction() * 100.0)
            }
            Measure::LatencyAgentsPsiCpuSome => {
                let values: Vec<f64> = running(snap)
                    .filter(|c| c.class == Some(AgentClass::Latency))
                    .filter_map(|c| c.pressure.cpu.map(|r| f64::from(r.some.avg10)))
                    .collect();
                (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
            }
            Measure::LatencyAgentsWaitPctOfRun => {
                let values: Vec<f64> = running(snap)
                    .filter(|c| c.class == Some(AgentClass::Latency))
                    .filter_map(|c| c.run_delay.map(|d| d.wait_per_run * 100.0))
                    .collect();
                (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
            }
            Measure::ContainerCpuPct { id } => container(id).map(|c| f64::from(c.cpu_pct)),
            Measure::ContainerThrottledPeriods { id } => {
                container(id).map(|c| c.throttled_periods_delta as f64)
            }
            Measure::ContainerMemoryOfLimitPct { id } => container(id).and_then(|c| {
                let limit = c.mem_limit_bytes.filter(|&l| l > 0)?;
                Some(c.mem_bytes as f64 * 100.0 / limit as f64)
            }),
            Measure::ContainerRemoteMemoryPct { id } => {
                container(id).and_then(|c| super::numa::remote_memory_pct(&snap.topology, c))
            }
        }
    }
}
