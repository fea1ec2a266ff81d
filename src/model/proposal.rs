//! A proposal: a bottleneck, the fix proposed for it, where it stands, and how its
//! validation went. How the figures are judged is the eliminator's (`impl Validation` in
//! `eliminator::validation`).

use serde::{Deserialize, Serialize};

use super::bottleneck::Bottleneck;
use super::fix::{Fix, Measure};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ProposalStatus {
    Proposed,
    /// Approved; the changes are being planned and applied.
    Applying,
    Applied {
        batch: u64,
    },
    RolledBack {
        batch: u64,
    },
    /// No longer applicable (bottleneck cleared, mode lowered, target gone).
    Stale {
        why: String,
    },
    /// Applying failed. The batch was undone; if undoing failed too, the batch stays open
    /// and is listed among the active batches, to be rolled back.
    Failed {
        why: String,
    },
    Dismissed,
}

impl ProposalStatus {
    pub fn label(&self) -> &'static str {
        match self {
            ProposalStatus::Proposed => "proposed",
            ProposalStatus::Applying => "applying",
            ProposalStatus::Applied { .. } => "applied",
            ProposalStatus::RolledBack { .. } => "rolled back",
            ProposalStatus::Stale { .. } => "stale",
            ProposalStatus::Failed { .. } => "failed",
            ProposalStatus::Dismissed => "dismissed",
        }
    }

    /// Still waiting for the operator.
    pub fn is_open(&self) -> bool {
        matches!(self, ProposalStatus::Proposed)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Proposal {
    pub id: u64,
    pub bottleneck: Bottleneck,
    pub fix: Fix,
    pub status: ProposalStatus,
    /// Snapshot seq when it was proposed.
    pub proposed_seq: u64,
    pub validation: Validation,
}

/// Readings of the fix's measure before approval and over the window after it, and the
/// verdict: kept if it helped, rolled back on its own if it did not or if a guard regressed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Validation {
    /// Readings over the ticks before it was approved (the baseline).
    pub before: Vec<f64>,
    /// Readings since it was applied.
    pub after: Vec<f64>,
    /// Host-wide figures watched beside the fix's own.
    pub guards: Vec<Guard>,
    pub applied_at_ms: Option<u64>,
    pub verdict: Option<Verdict>,
}

/// One guard figure, before and after.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Guard {
    pub figure: String,
    pub measure: Measure,
    pub before: Vec<f64>,
    pub after: Vec<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    Helped {
        before: f64,
        after: f64,
        improvement_pct: f64,
    },
    DidNotHelp {
        before: f64,
        after: f64,
    },
    /// Its own figure improved (or could not be judged) but a guard figure got much worse.
    Regressed {
        figure: String,
        before: f64,
        after: f64,
    },
    /// The figure could not be read, or was already near zero: kept, but not proven.
    Unmeasurable,
}

impl Verdict {
    /// Whether the fix is rolled back for it.
    pub fn rolls_back(&self) -> bool {
        matches!(self, Verdict::DidNotHelp { .. } | Verdict::Regressed { .. })
    }

    /// Operator words: "helped 42 % (30.1 -> 17.5)".
    pub fn describe(&self) -> String {
        match self {
            Verdict::Helped {
                before,
                after,
                improvement_pct,
            } => format!("helped {improvement_pct:.0}% ({before:.1} -> {after:.1})"),
            Verdict::DidNotHelp { before, after } => {
                format!("did not help ({before:.1} -> {after:.1})")
            }
            Verdict::Regressed {
                figure,
                before,
                after,
            } => format!("made {figure} worse ({before:.1} -> {after:.1})"),
            Verdict::Unmeasurable => "kept, not measurable".to_string(),
        }
    }
}
