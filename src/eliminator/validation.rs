//! Did a fix help? Its own figure before and after, and guard figures that must not get
//! much worse meanwhile.
//!
//! The baseline is taken from the ticks just before the fix was approved (the book keeps the
//! last few snapshots), so a fix applied the moment it is proposed — auto-fix — still has a
//! baseline of several readings. After applying, every tick adds a reading until the window
//! closes; then the means are compared. A fix that moved its own figure the right way but
//! made a guard figure much worse (host memory or I/O pressure, the latency agents' CPU
//! pressure) is judged a regression and rolled back like one that did not help.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::model::Measure;
use crate::model::Snapshot;
use crate::model::{Guard, Validation, Verdict};

/// Snapshots kept for baselines (the last this many ticks).
pub const BASELINE_POINTS: usize = 10;
/// A figure below this (PSI %, CPU %...) is "nothing to improve" and cannot prove a fix.
const MEASURABLE_FLOOR: f64 = 0.5;
/// Readings a baseline needs before auto-fix may act on a proposal: a fix applied on one
/// reading has nothing to be judged against.
pub const MIN_BASELINE: usize = 5;
/// With at least `MIN_SAMPLES` readings on each side, a fall must also be this many standard
/// errors (Welch's t) to count: PSI over one tick is noisy, and a 5 % dip within the noise
/// proves nothing.
const MIN_T: f64 = 2.0;
const MIN_SAMPLES: usize = 3;
/// A guard figure regressed when its mean rose by at least this many points...
pub const REGRESSION_POINTS: f64 = 10.0;
/// ...and to at least this multiple of its baseline. Both, so neither a small figure's
/// jitter (0.5 → 1.5 is 3x) nor a large figure's noise (60 → 71) counts.
pub const REGRESSION_FACTOR: f64 = 1.5;

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// Welch's t for "before is higher than after": the fall in standard errors. `None` when a
/// side has too few readings to estimate its spread, or neither side varies at all (then the
/// means alone decide).
fn welch_t(before: &[f64], after: &[f64]) -> Option<f64> {
    if before.len() < MIN_SAMPLES || after.len() < MIN_SAMPLES {
        return None;
    }
    let variance = |values: &[f64], m: f64| {
        values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (values.len() - 1) as f64
    };
    let (mb, ma) = (mean(before)?, mean(after)?);
    let standard_error = (variance(before, mb) / before.len() as f64
        + variance(after, ma) / after.len() as f64)
        .sqrt();
    (standard_error > 0.0).then(|| (mb - ma) / standard_error)
}

/// The host-wide figures a fix must not make much worse, other than its own. A fix for the
/// latency agents may move CPU waiting onto batch agents — that is its purpose — so the
/// host's CPU pressure does not guard it.
fn guard_measures(own: &Measure) -> Vec<(&'static str, Measure)> {
    let mut guards = vec![
        ("host PSI memory some", Measure::HostPsiMemorySome),
        ("host PSI io full", Measure::HostPsiIoFull),
        (
            "latency agents' PSI cpu some",
            Measure::LatencyAgentsPsiCpuSome,
        ),
    ];
    let for_latency_agents = matches!(
        own,
        Measure::LatencyAgentsPsiCpuSome | Measure::LatencyAgentsWaitPctOfRun
    );
    if !for_latency_agents {
        guards.push(("host PSI cpu some", Measure::HostPsiCpuSome));
    }
    guards.retain(|(_, measure)| measure != own);
    guards
}

impl Validation {
    /// The baseline of `own` and of its guards over `recent` snapshots (oldest first).
    pub fn baseline(own: &Measure, recent: &RecentSnapshots) -> Validation {
        let readings = |measure: &Measure| -> Vec<f64> {
            let snaps: Vec<&Snapshot> = recent.iter().collect();
            match snaps.as_slice() {
                [only] => measure.value(only).into_iter().collect(),
                _ => snaps
                    .windows(2)
                    .filter_map(|pair| measure.interval_value(Some(pair[0]), pair[1]))
                    .collect(),
            }
        };
        Validation {
            before: readings(own),
            guards: guard_measures(own)
                .into_iter()
                .map(|(figure, measure)| Guard {
                    figure: figure.to_string(),
                    before: readings(&measure),
                    after: Vec::new(),
                    measure,
                })
                .collect(),
            ..Validation::default()
        }
    }

    /// Add the readings over the interval from `prev` (the tick before) to `snap`, after
    /// applying.
    pub fn record(&mut self, own: &Measure, prev: Option<&Snapshot>, snap: &Snapshot) {
        if let Some(value) = own.interval_value(prev, snap) {
            self.after.push(value);
        }
        for guard in &mut self.guards {
            if let Some(value) = guard.measure.interval_value(prev, snap) {
                guard.after.push(value);
            }
        }
    }

    /// Judge by the means before and after: helped when the figure fell by at least
    /// `min_improvement` (a fraction, e.g. 0.05) and no guard regressed.
    pub fn judge(&self, min_improvement: f64) -> Verdict {
        let own = match (mean(&self.before), mean(&self.after)) {
            (Some(before), Some(after)) if before >= MEASURABLE_FLOOR => {
                let fell_enough = after <= before * (1.0 - min_improvement);
                let beyond_noise = welch_t(&self.before, &self.after).is_none_or(|t| t >= MIN_T);
                if fell_enough && beyond_noise {
                    Verdict::Helped {
                        before,
                        after,
                        improvement_pct: (before - after) * 100.0 / before,
                    }
                } else {
                    Verdict::DidNotHelp { before, after }
                }
            }
            _ => Verdict::Unmeasurable,
        };
        if own.rolls_back() {
            return own;
        }
        self.regressed_guard().unwrap_or(own)
    }

    /// The guard that got worst past both thresholds, if any.
    fn regressed_guard(&self) -> Option<Verdict> {
        self.guards
            .iter()
            .filter_map(|g| Some((g, mean(&g.before)?, mean(&g.after)?)))
            .filter(|(_, before, after)| {
                *after >= before + REGRESSION_POINTS && *after >= before * REGRESSION_FACTOR
            })
            .max_by(|a, b| (a.2 - a.1).total_cmp(&(b.2 - b.1)))
            .map(|(g, before, after)| Verdict::Regressed {
                figure: g.figure.clone(),
                before,
                after,
            })
    }
}

/// The last few ticks' snapshots, trimmed to what measures read (no process list, no
/// proposals or journal view), for baselines.
#[derive(Debug, Clone, Default)]
pub struct RecentSnapshots {
    ring: VecDeque<Arc<Snapshot>>,
}

impl RecentSnapshots {
    pub fn push(&mut self, snap: &Snapshot) {
        let mut trimmed = snap.clone();
        trimmed.processes = Default::default();
        trimmed.proposals = Vec::new();
        trimmed.changes = Default::default();
        trimmed.bottlenecks = Vec::new();
        if self.ring.len() >= BASELINE_POINTS {
            self.ring.pop_front();
        }
        self.ring.push_back(Arc::new(trimmed));
    }

    pub fn iter(&self) -> impl Iterator<Item = &Snapshot> {
        self.ring.iter().map(|s| &**s)
    }

    /// The newest snapshot taken before `snap`.
    pub fn before(&self, snap: &Snapshot) -> Option<&Snapshot> {
        self.ring
            .iter()
            .rev()
            .map(|s| &**s)
            .find(|s| s.taken_at_ms < snap.taken_at_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PsiLine, PsiResource};

    fn psi(avg10: f32) -> Option<PsiResource> {
        Some(PsiResource {
            some: PsiLine {
                avg10,
                ..PsiLine::default()
            },
            full: Some(PsiLine {
                avg10,
                ..PsiLine::default()
            }),
        })
    }

    fn host(cpu: f32, memory: f32, io: f32) -> Snapshot {
        let mut snap = Snapshot::default();
        snap.pressure.cpu = psi(cpu);
        snap.pressure.memory = psi(memory);
        snap.pressure.io = psi(io);
        snap
    }

    fn validated(before: &[Snapshot], after: &[Snapshot]) -> Verdict {
        let mut recent = RecentSnapshots::default();
        for snap in before {
            recent.push(snap);
        }
        let mut validation = Validation::baseline(&Measure::HostPsiCpuSome, &recent);
        for snap in after {
            validation.record(&Measure::HostPsiCpuSome, None, snap);
        }
        validation.judge(0.05)
    }

    #[test]
    fn the_baseline_is_the_recent_ticks_and_a_helping_fix_is_kept() {
        // Untimed snapshots: each reading is the snapshot's own figure (the first one only
        // opens the first interval).
        let before = [
            host(10.0, 1.0, 1.0),
            host(40.0, 1.0, 1.0),
            host(60.0, 1.0, 1.0),
        ];
        let after = [host(20.0, 1.0, 1.0), host(30.0, 2.0, 1.0)];
        let verdict = validated(&before, &after);
        assert!(
            matches!(verdict, Verdict::Helped { improvement_pct, .. } if (improvement_pct - 50.0).abs() < 1e-9),
            "{verdict:?}"
        );
    }

    #[test]
    fn a_guard_that_got_much_worse_rolls_the_fix_back_even_when_its_own_figure_improved() {
        let before = [
            host(50.0, 4.0, 1.0),
            host(50.0, 4.0, 1.0),
            host(50.0, 4.0, 1.0),
        ];
        // CPU pressure halved, memory pressure 4 -> 30: a regression.
        let after = [
            host(25.0, 30.0, 1.0),
            host(25.0, 30.0, 1.0),
            host(25.0, 30.0, 1.0),
        ];
        assert_eq!(
            validated(&before, &after),
            Verdict::Regressed {
                figure: "host PSI memory some".to_string(),
                before: 4.0,
                after: 30.0,
            }
        );
    }

    #[test]
    fn small_or_proportionally_small_guard_rises_are_noise() {
        let before = [
            host(50.0, 0.5, 60.0),
            host(50.0, 0.5, 60.0),
            host(50.0, 0.5, 60.0),
        ];
        // Memory 0.5 -> 3 (6x but 2.5 points), io 60 -> 75 (15 points but 1.25x).
        let after = [
            host(25.0, 3.0, 75.0),
            host(25.0, 3.0, 75.0),
            host(25.0, 3.0, 75.0),
        ];
        assert!(matches!(validated(&before, &after), Verdict::Helped { .. }));
    }

    #[test]
    fn a_fix_for_latency_agents_is_not_guarded_by_host_cpu_pressure() {
        let own = Measure::LatencyAgentsPsiCpuSome;
        let figures: Vec<&str> = guard_measures(&own).iter().map(|(f, _)| *f).collect();
        assert!(!figures.contains(&"host PSI cpu some"), "{figures:?}");
        assert!(!figures.contains(&"latency agents' PSI cpu some"));
        let figures: Vec<&str> = guard_measures(&Measure::HostPsiCpuSome)
            .iter()
            .map(|(f, _)| *f)
            .collect();
        assert!(figures.contains(&"latency agents' PSI cpu some"));
        assert!(!figures.contains(&"host PSI cpu some"));
    }

    #[test]
    fn no_readings_or_a_near_zero_figure_is_unmeasurable_and_kept() {
        assert_eq!(
            validated(&[host(0.1, 0.0, 0.0)], &[host(0.0, 0.0, 0.0)]),
            Verdict::Unmeasurable
        );
        assert_eq!(
            validated(&[host(50.0, 0.0, 0.0)], &[]),
            Verdict::Unmeasurable
        );
        assert!(!Verdict::Unmeasurable.rolls_back());
    }

    /// A host snapshot at `at_ms` whose CPU stall total is `total_us` and whose avg10 says
    /// `avg10` (lagging on purpose).
    fn timed(at_ms: u64, total_us: u64, avg10: f32) -> Snapshot {
        let mut snap = host(avg10, 0.0, 0.0);
        snap.taken_at_ms = at_ms;
        if let Some(cpu) = snap.pressure.cpu.as_mut() {
            cpu.some.total_us = total_us;
        }
        snap
    }

    #[test]
    fn pressure_is_judged_over_the_interval_from_the_kernels_totals_not_by_a_lagging_avg10() {
        let mut recent = RecentSnapshots::default();
        // Before: 500 ms stalled per second (50 %), while avg10 still remembers a calm past.
        for tick in 0..5u64 {
            recent.push(&timed(tick * 1000, tick * 500_000, 5.0));
        }
        let mut validation = Validation::baseline(&Measure::HostPsiCpuSome, &recent);
        assert_eq!(validation.before, vec![50.0; 4]);
        // After: 100 ms per second (10 %), while avg10 is still climbing.
        let mut prev = timed(4000, 2_000_000, 30.0);
        for tick in 5..10u64 {
            let now = timed(tick * 1000, 2_000_000 + (tick - 4) * 100_000, 40.0);
            validation.record(&Measure::HostPsiCpuSome, Some(&prev), &now);
            prev = now;
        }
        assert_eq!(validation.after, vec![10.0; 5]);
        assert!(matches!(
            validation.judge(0.05),
            Verdict::Helped { improvement_pct, .. } if (improvement_pct - 80.0).abs() < 1e-9
        ));
        // A counter that went backwards (a recreated cgroup) falls back to the plain value.
        let reset = timed(11_000, 0, 7.0);
        assert_eq!(
            Measure::HostPsiCpuSome.interval_value(Some(&prev), &reset),
            Some(7.0)
        );
    }

    #[test]
    fn a_dip_within_the_noise_does_not_count_as_help() {
        let judge = |before: &[f64], after: &[f64]| {
            Validation {
                before: before.to_vec(),
                after: after.to_vec(),
                ..Validation::default()
            }
            .judge(0.05)
        };
        // 6 % lower on average, but the readings swing by ±10: not proven.
        let noisy_before = [60.0, 40.0, 55.0, 45.0, 50.0];
        let noisy_after = [57.0, 38.0, 52.0, 41.0, 47.0, 46.0];
        assert!(matches!(
            judge(&noisy_before, &noisy_after),
            Verdict::DidNotHelp { .. }
        ));
        // The same fall with steady readings is help.
        let steady_before = [50.0, 50.5, 49.5, 50.0, 50.0];
        let steady_after = [47.0, 46.5, 47.5, 47.0, 47.0, 47.0];
        assert!(matches!(
            judge(&steady_before, &steady_after),
            Verdict::Helped { .. }
        ));
        assert!(welch_t(&[1.0, 2.0], &[0.0, 0.0, 0.0]).is_none());
    }

    #[test]
    fn the_ring_keeps_the_newest_points() {
        let mut recent = RecentSnapshots::default();
        for i in 0..25 {
            recent.push(&host(i as f32, 0.0, 0.0));
        }
        let values: Vec<f64> = recent
            .iter()
            .filter_map(|s| Measure::HostPsiCpuSome.value(s))
            .collect();
        assert_eq!(values.len(), BASELINE_POINTS);
        assert_eq!(values.first(), Some(&15.0));
        assert_eq!(values.last(), Some(&24.0));
    }
}
