//! The eliminator's `[detect]` config section: thresholds, and how long a condition must hold.

use std::ops::Bound;

use serde::{Deserialize, Deserializer, Serialize};

/// Bottleneck detection thresholds (the original design's `max_cpu_usage` and
/// `max_memory_usage`) and how long a condition must hold before it counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    /// Host CPU busy fraction (0 < x <= 1) at which the CPU counts as saturated.
    #[serde(deserialize_with = "usage_fraction")]
    pub max_cpu_usage: f64,
    /// Used memory fraction (0 < x <= 1, cache counted as available) that counts as pressure.
    #[serde(deserialize_with = "usage_fraction")]
    pub max_memory_usage: f64,
    /// Consecutive ticks a condition must hold before it is reported, and be absent before
    /// it is cleared (at least 1), so a single spike or dip never flaps the verdict.
    #[serde(deserialize_with = "hold_ticks")]
    pub hold_ticks: u32,
    /// Report predicted exhaustion (memory reaching its limit) this many seconds ahead.
    pub predict_horizon_secs: u64,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            max_cpu_usage: 0.85,
            max_memory_usage: 0.8,
            hold_ticks: 3,
            predict_horizon_secs: 300,
        }
    }
}

/// A fraction above 0 and at most 1.
fn usage_fraction<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    sutazai_config_check::in_range(d, "usage", (Bound::Excluded(0.0), Bound::Included(1.0)))
}

fn hold_ticks<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    sutazai_config_check::in_range(d, "hold_ticks", 1..)
}
