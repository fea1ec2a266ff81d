//! Agents that are plain processes (`[[agents]]` in the config): what matched, and which of
//! their cgroups hold only them, so that a container's knobs can be turned on their cgroup
//! files instead.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::change::Knob;

/// The id prefix of a process agent ("proc:llm-server"); Docker ids never hold a colon.
pub const PROCESS_AGENT_PREFIX: &str = "proc:";

/// Whether an agent id names a process agent rather than a container.
pub fn is_process_agent(id: &str) -> bool {
    id.starts_with(PROCESS_AGENT_PREFIX)
}

/// The cgroup directories that hold only the agent's processes, relative to the sys root
/// ("fs/cgroup/cpuset/agents/llm"); `None` where the cgroup holds others too (then its knobs
/// are not ours to turn).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCgroups {
    /// One unified hierarchy (v2) rather than one per controller (v1).
    pub v2: bool,
    pub cpuset: Option<PathBuf>,
    pub cpu: Option<PathBuf>,
    pub memory: Option<PathBuf>,
}

/// What the snapshot says of one process agent besides its usage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessAgent {
    /// How the entry matches, as configured ("comm = llama-server").
    pub matcher: String,
    /// Every process that matched, oldest first.
    pub pids: Vec<i32>,
    pub cgroups: AgentCgroups,
    /// One line per controller whose cgroup is shared ("cpu: /user.slice holds 41 other
    /// processes"), which is why that controller's knobs are left alone.
    pub shared: Vec<String>,
}

impl ProcessAgent {
    /// Whether its CPUs are confined by its own cpuset cgroup (else by thread affinity).
    pub fn own_cpuset(&self) -> bool {
        self.cgroups.cpuset.is_some()
    }

    /// Whether a container knob can be set on it: its CPUs always (by affinity if need be),
    /// anything else only on a cgroup of its own.
    pub fn can_set(&self, knob: &Knob) -> bool {
        match knob {
            Knob::ContainerCpusetCpus => true,
            Knob::ContainerCpusetMems => self.cgroups.cpuset.is_some(),
            Knob::ContainerCpuShares | Knob::ContainerCpuQuota => self.cgroups.cpu.is_some(),
            Knob::ContainerMemoryLimit => self.cgroups.memory.is_some(),
            _ => false,
        }
    }
}
