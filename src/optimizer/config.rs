//! The optimizer's `[optimizer]` config section: where the journal lives, what happens to
//! changes at start and on quit, and what fixes may be applied without asking.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerConfig {
    /// Where the journal of changes to the host lives (root-owned, not world-writable).
    #[serde(deserialize_with = "state_dir")]
    pub state_dir: PathBuf,
    /// At start, what to do with a batch an earlier run left half applied (it crashed or
    /// was killed mid-batch): restore it, keep it, or ask (show it and let the operator
    /// decide).
    pub on_unclean_exit: UncleanExit,
    /// On quit, roll back every change still active.
    pub rollback_on_exit: bool,
    /// The scheduler policy proposed for batch agents' processes: SCHED_BATCH (low risk)
    /// or SCHED_IDLE (high risk: the process runs only when nothing else wants the CPU).
    pub scheduler_policy: SchedulerPolicy,
    /// Apply proposals the mode allows without asking (one per cooldown).
    pub auto_fix: bool,
    /// Seconds a fix's figure is watched after applying before it is kept or rolled back.
    pub validation_secs: u64,
    /// Seconds between two automatic actions.
    pub cooldown_secs: u64,
    /// Propose NUMA fixes (cpuset mems, page migration) where the host has more than one
    /// node.
    pub enable_numa: bool,
    /// Propose transparent huge page changes (madvise in balanced mode, always in
    /// aggressive); off by default, since THP can add latency spikes on some loads.
    pub enable_transparent_hugepages: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UncleanExit {
    Restore,
    Keep,
    #[default]
    Ask,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig {
            state_dir: PathBuf::from("/var/lib/sutazai-top"),
            on_unclean_exit: UncleanExit::Ask,
            rollback_on_exit: false,
            scheduler_policy: SchedulerPolicy::SchedBatch,
            auto_fix: false,
            validation_secs: 10,
            cooldown_secs: 15,
            enable_numa: true,
            enable_transparent_hugepages: false,
        }
    }
}

/// The scheduler policy proposed for batch agents, as the kernel names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SchedulerPolicy {
    #[default]
    #[serde(rename = "SCHED_BATCH")]
    SchedBatch,
    #[serde(rename = "SCHED_IDLE")]
    SchedIdle,
}

impl SchedulerPolicy {
    pub fn name(self) -> &'static str {
        match self {
            SchedulerPolicy::SchedBatch => "SCHED_BATCH",
            SchedulerPolicy::SchedIdle => "SCHED_IDLE",
        }
    }
}

fn state_dir<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    sutazai_config_check::non_empty_path(d, "state_dir")
}
