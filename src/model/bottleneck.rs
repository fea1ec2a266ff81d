//! A bottleneck: what holds (its kind), on what (its subject), and the numbers that say so.

use serde::{Deserialize, Serialize};

use super::identity::ProcessId;

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
    /// Agents whose settings are not what the coordinator planned from their declarations.
    OffPlan,
    /// An agent whose declared need does not fit now (the reason is its evidence's metric).
    AllocationPending,
    /// The plan does not fit the load: the shared pool under pressure while an exclusive
    /// agent's CPUs sit idle, or an exclusive agent saturated while the shared pool idles.
    LoadImbalance,
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
    pub fn key(&self) -> String {
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
    /// Every kind, for listings that must show each (metrics at zero included).
    pub const ALL: [BottleneckKind; 11] = [
        BottleneckKind::CpuSaturation,
        BottleneckKind::MemoryPressure,
        BottleneckKind::IoSaturation,
        BottleneckKind::ThrottledContainer,
        BottleneckKind::NoisyNeighbour,
        BottleneckKind::RunawayAgent,
        BottleneckKind::PredictedExhaustion,
        BottleneckKind::NumaImbalance,
        BottleneckKind::OffPlan,
        BottleneckKind::AllocationPending,
        BottleneckKind::LoadImbalance,
    ];

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
            BottleneckKind::OffPlan => "off_plan",
            BottleneckKind::AllocationPending => "allocation_pending",
            BottleneckKind::LoadImbalance => "load_imbalance",
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
