//! The bottleneck eliminator, part one: detection.
//!
//! A [`Detector`] sees every snapshot once, asks one small pure detector per kind
//! ([`detect`]) which conditions hold on this tick, and applies hysteresis: a condition
//! becomes a [`Bottleneck`] only after it held `hold_ticks` consecutive ticks, and a
//! bottleneck is cleared only after it has been absent `hold_ticks` consecutive ticks, so a
//! single spike never raises one and a single dip never drops one. Evidence is numbers.

pub mod detect;
pub mod holt;
pub mod numa;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::config::DetectConfig;
use crate::snapshot::{ProcessId, Snapshot};

pub use detect::{Condition, Thresholds};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum BottleneckKind {
    CpuSaturation,
    MemoryPressure,
    IoSaturation,
    ThrottledContainer,
    NoisyNeighbour,
    RunawayAgent,
    PredictedExhaustion,
    /// An agent whose memory sits mostly on a node other than the one its CPUs are on.
    NumaImbalance,
}

/// What a bottleneck is about. Containers by id and processes by (pid, start time), so
/// reuse of a name or a pid never points a fix at the wrong target.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Subject {
    Host,
    Container { id: String, name: String },
    Process { id: ProcessId, comm: String },
}

impl Subject {
    /// Short, for people: "host", the container's name, "comm (pid)".
    pub fn label(&self) -> String {
        match self {
            Subject::Host => "host".to_string(),
            Subject::Container { name, .. } => name.clone(),
            Subject::Process { id, comm } => format!("{comm} ({})", id.pid),
        }
    }

    /// Identity for hysteresis: names may change, ids do not.
    fn key(&self) -> String {
        match self {
            Subject::Host => "host".to_string(),
            Subject::Container { id, .. } => format!("container:{id}"),
            Subject::Process { id, .. } => format!("process:{}:{}", id.pid, id.start_time),
        }
    }
}

/// One measured figure against the threshold it crossed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Evidence {
    pub metric: String,
    pub value: f64,
    pub threshold: f64,
    pub unit: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Bottleneck {
    pub kind: BottleneckKind,
    pub subject: Subject,
    /// The latest tick's evidence (while clearing: the last tick the condition held).
    pub evidence: Vec<Evidence>,
    /// Snapshot seq of the first tick of the run of ticks that raised it.
    pub since_seq: u64,
}

impl BottleneckKind {
    /// The name used in JSON and in bottleneck ids ("noisy_neighbour").
    pub fn name(self) -> &'static str {
        match self {
            BottleneckKind::CpuSaturation => "cpu_saturation",
            BottleneckKind::MemoryPressure => "memory_pressure",
            BottleneckKind::IoSaturation => "io_saturation",
            BottleneckKind::ThrottledContainer => "throttled_container",
            BottleneckKind::NoisyNeighbour => "noisy_neighbour",
            BottleneckKind::RunawayAgent => "runaway_agent",
            BottleneckKind::PredictedExhaustion => "predicted_exhaustion",
            BottleneckKind::NumaImbalance => "numa_imbalance",
        }
    }
}

impl Bottleneck {
    /// A stable id while the bottleneck holds, "<kind>:<subject>", e.g.
    /// "noisy_neighbour:container:<id>" (the API's `/api/eliminate/{id}`).
    pub fn id(&self) -> String {
        format!("{}:{}", self.kind.name(), self.subject.key())
    }
}

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
        let conditions = detect::all(snap, &self.trends, &self.thresholds);
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
