//! What a change is: a target, a knob, and the values before and after.
//!
//! Values are strings in the kernel's own notation (a CPU list "0-3", a policy name
//! "SCHED_BATCH", a nice "5", an I/O priority "be/4", a file's content), so a journal entry
//! reads like what an operator would type, and `before` can be written back verbatim.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What a change acts on. Identities survive reuse: a thread by (pid, tid, the process's
/// start time), so a recycled tid is never touched; a container by its full id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    Thread {
        pid: i32,
        tid: i32,
        start_time: u64,
    },
    Container {
        id: String,
    },
    /// A host-wide knob: the file is named by the knob.
    Host,
    /// A whole process (its memory is shared by every thread), by pid and start time.
    Process {
        pid: i32,
        start_time: u64,
    },
    /// A cgroup directory, for agents that are plain processes: the path is relative to the
    /// sys root ("fs/cgroup/system.slice/agent.service", "fs/cgroup/cpu,cpuacct/agents/x").
    Cgroup {
        path: PathBuf,
    },
}

/// Which setting a change turns.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "knob", rename_all = "snake_case")]
pub enum Knob {
    /// CPU affinity of one thread, as a CPU list ("0-3,8").
    Affinity,
    /// Scheduling policy of one thread: SCHED_OTHER, SCHED_BATCH or SCHED_IDLE.
    Policy,
    /// Nice value of one thread, -20..=19.
    Nice,
    /// I/O priority of one thread: "rt/N", "be/N" (N 0..=7), "idle" or "none".
    IoPriority,
    /// A sysfs or procfs file (THP, KSM, vm.*, cpufreq governor), path relative to the
    /// host's sys or proc root as the actuator's roots say ("sys/kernel/mm/ksm/run").
    HostFile { path: PathBuf },
    /// A container's cpuset CPUs, as a CPU list; "" means every CPU (Docker's default).
    ContainerCpusetCpus,
    /// A container's cpuset memory nodes, as a node list; "" means every node.
    ContainerCpusetMems,
    /// A container's CPU shares (cgroup v1 weight, 2..=262144; Docker's default is 1024).
    ContainerCpuShares,
    /// A container's CPU quota in cores as a decimal ("1.5"), or "max" for none
    /// (Docker's NanoCpus).
    ContainerCpuQuota,
    /// A container's memory limit in bytes, or "max" for none.
    ContainerMemoryLimit,
    /// The NUMA nodes holding a process's pages, as a node list ("0", "0-1"); applying
    /// migrates the pages there (migrate_pages).
    MemoryNodes,
    /// One control file of a cgroup target, by name, in the kernel's own notation: v2
    /// "cpu.weight", "cpu.max", "memory.high", "memory.max"; v1 "cpu.shares",
    /// "cpu.cfs_quota_us", "memory.limit_in_bytes", "memory.soft_limit_in_bytes".
    CgroupFile { file: String },
}

/// One reversible change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub target: Target,
    pub knob: Knob,
    /// The value read from the host before applying.
    pub before: String,
    /// The value to apply.
    pub after: String,
}

impl Change {
    /// The change that undoes this one.
    pub fn inverse(&self) -> Change {
        Change {
            target: self.target.clone(),
            knob: self.knob.clone(),
            before: self.after.clone(),
            after: self.before.clone(),
        }
    }
}
