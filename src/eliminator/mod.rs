//! The bottleneck eliminator, part one: detection.
//!
//! A [`Detector`] sees every snapshot once, asks one small pure detector per kind
//! ([`detect`]) which conditions hold on this tick, and applies hysteresis: a condition
//! becomes a [`Bottleneck`] only after it held `hold_ticks` consecutive ticks, and a
//! bottleneck is cleared only after it has been absent `hold_ticks` consecutive ticks, so a
//! single spike never raises one and a single dip never drops one. Evidence is numbers.

pub mod config;
pub mod detect;
pub mod holt;
mod measure;
pub mod numa;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Bottleneck, BottleneckKind, Evidence, Snapshot, Subject};
pub use config::DetectConfig;

pub use detect::{Condition, Thresholds};

type TrackKey = (BottleneckKind, String);

/// Hysteresis state of one (kind, subject).
#[derive(Debug, Clone)]
struct Track {
    subject: Subject,
    evidence: Vec<Evidence>,
    held: u32,
    absent: u32,
    streak_start_seq: u64,
    /// `Some(since_seq)` once raised.
    raised_since: Option<u64>,
}

/// Sees each snapshot once per tick and reports the bottlenecks that hold.
#[derive(Debug, Clone)]
pub struct Detector {
    config: DetectConfig,
    thresholds: Thresholds,
    trends: detect::TrendState,
    tracks: BTreeMap<TrackKey, Track>,
    last_seq: Option<u64>,
    last_report: Vec<Bottleneck>,
}

impl Detector {
    pub fn new(config: DetectConfig) -> Self {
        let thresholds = Thresholds::from_config(&config);
        Detector::with_thresholds(config, thresholds)
    }

    /// A detector with thresholds beyond the config keys adjusted (the usage fractions and
    /// horizon in `thresholds` win over those in `config`).
    pub fn with_thresholds(config: DetectConfig, thresholds: Thresholds) -> Self {
        Detector {
            config,
            thresholds,
            trends: detect::TrendState::default(),
            tracks: BTreeMap::new(),
            last_seq: None,
            last_report: Vec::new(),
        }
    }

    pub fn config(&self) -> &DetectConfig {
        &self.config
    }

    pub fn thresholds(&self) -> &Thresholds {
        &self.thresholds
    }

    /// Feed one tick's snapshot; returns the bottlenecks raised as of this tick, ordered by
    /// kind then subject. The same snapshot (same non-zero seq) seen again is not a new
    /// tick: the previous answer is returned and no streak advances.
    pub fn observe(&mut self, snap: &Snapshot) -> Vec<Bottleneck> {
        if snap.seq != 0 && self.last_seq == Some(snap.seq) {
            return self.last_report.clone();
        }
        self.last_seq = Some(snap.seq);
        self.trends.record(snap, self.thresholds.trend_window);
        let mut conditions = detect::all(snap, &self.trends, &self.thresholds);
        conditions.extend(numa::numa_imbalance(snap, &self.thresholds));
        self.advance(conditions, snap.seq);
        self.last_report = self.raised();
        self.last_report.clone()
    }

    /// The bottlenecks raised as of the last tick.
    pub fn current(&self) -> &[Bottleneck] {
        &self.last_report
    }

    fn advance(&mut self, conditions: Vec<Condition>, seq: u64) {
        let hold = self.config.hold_ticks.max(1);
        let mut seen = BTreeSet::new();
        for condition in conditions {
            let key = (condition.kind, condition.subject.key());
            let track = self.tracks.entry(key.clone()).or_insert_with(|| Track {
                subject: condition.subject.clone(),
                evidence: Vec::new(),
                held: 0,
                absent: 0,
                streak_start_seq: seq,
                raised_since: None,
            });
            if track.held == 0 {
                track.streak_start_seq = seq;
            }
            track.held = track.held.saturating_add(1);
            track.absent = 0;
            track.subject = condition.subject;
            track.evidence = condition.evidence;
            if track.raised_since.is_none() && track.held >= hold {
                track.raised_since = Some(track.streak_start_seq);
            }
            seen.insert(key);
        }
        self.tracks.retain(|key, track| {
            if seen.contains(key) {
                return true;
            }
            track.held = 0;
            track.absent = track.absent.saturating_add(1);
            // A pending condition that breaks its run starts over; a raised one stays
            // until it has been gone for `hold` ticks.
            track.raised_since.is_some() && track.absent < hold
        });
    }

    fn raised(&self) -> Vec<Bottleneck> {
        self.tracks
            .iter()
            .filter_map(|((kind, _), track)| {
                Some(Bottleneck {
                    kind: *kind,
                    subject: track.subject.clone(),
                    evidence: track.evidence.clone(),
                    since_seq: track.raised_since?,
                })
            })
            .collect()
    }
}

pub mod plan;
pub mod proposals;
pub mod strategy;
pub mod system_knobs;
pub mod validation;

/// The built-in strategies, one or more per detector.
pub fn built_in() -> Vec<Box<dyn strategy::EliminationStrategy>> {
    vec![
        Box::new(strategy::BatchShares),
        Box::new(strategy::BatchPolicy),
        Box::new(strategy::IsolateLatency),
        Box::new(strategy::CapRunaway),
        Box::new(strategy::RaiseThrottledQuota),
        Box::new(strategy::IdleBatchIo),
        Box::new(strategy::MergeMemory),
        Box::new(strategy::RaiseMemoryLimit),
        Box::new(numa::ConfineToNode),
        Box::new(system_knobs::TransparentHugepages),
        Box::new(system_knobs::LowerSwappiness),
        Box::new(system_knobs::LowerDirtyRatios),
        Box::new(system_knobs::PerformanceGovernor),
    ]
}
