//! A fix as a strategy proposes it: intents (target, knob, value), a risk, and the figure
//! that should improve. How a figure is read from a snapshot is the eliminator's
//! (`impl Measure` in `eliminator::strategy`).

use serde::{Deserialize, Serialize};

use super::change::Knob;
use super::mode::Mode;

/// How much could go wrong; the mode decides which risks may be proposed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    Low,
    Medium,
    High,
}

impl Risk {
    /// Conservative: low only. Balanced: up to medium. Aggressive: everything.
    pub fn allowed_in(self, mode: Mode) -> bool {
        match mode {
            Mode::Conservative => self == Risk::Low,
            Mode::Balanced => self <= Risk::Medium,
            Mode::Aggressive => true,
        }
    }
}

/// What one change of a fix acts on, before its `before` is read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum IntentTarget {
    /// Every thread of the container's main process (pid as Docker reports it).
    ContainerProcess {
        container: String,
        name: String,
        pid: i32,
    },
    Container {
        id: String,
        name: String,
    },
    /// A host file, relative to the roots ("sys/kernel/mm/ksm/run").
    HostFile {
        path: String,
    },
    /// A cgroup directory the engine keeps (the coordinator's shared parent), relative to
    /// the sys root; the knob names the file.
    Cgroup {
        path: std::path::PathBuf,
    },
    /// An agent that is plain processes: a container's knobs turn its own cgroups' files,
    /// and its CPUs fall back to every thread's affinity where its cpuset cgroup is shared.
    ProcessAgent {
        id: String,
        name: String,
        process: super::process_agent::ProcessAgent,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Intent {
    pub target: IntentTarget,
    pub knob: Knob,
    /// The value the snapshot shows now (for display; the journal records the real one).
    pub expected_before: String,
    pub after: String,
}

/// One proposed fix.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Fix {
    pub strategy: String,
    pub summary: String,
    pub risk: Risk,
    /// The figure that should improve, e.g. "host PSI cpu some avg10".
    pub metric: String,
    /// How to read that figure from a snapshot (lower is better), for validation.
    pub measure: Measure,
    pub intents: Vec<Intent>,
}

/// A figure read from each snapshot to judge whether a fix helped; lower is better for all.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "figure", rename_all = "snake_case")]
pub enum Measure {
    HostPsiCpuSome,
    HostPsiMemorySome,
    HostPsiIoFull,
    HostMemoryUsedPct,
    /// Mean cgroup PSI cpu some avg10 of the latency-class agents.
    LatencyAgentsPsiCpuSome,
    /// Mean run-queue wait of the latency-class agents' tasks, as a percent of their run
    /// time (schedstat; where cgroup PSI is missing).
    LatencyAgentsWaitPctOfRun,
    ContainerCpuPct {
        id: String,
    },
    ContainerThrottledPeriods {
        id: String,
    },
    ContainerMemoryOfLimitPct {
        id: String,
    },
    /// Percent of the container's memory on NUMA nodes its CPUs are not on.
    ContainerRemoteMemoryPct {
        id: String,
    },
}
