//! Actuators: the code that reads and writes each knob, and nothing else that changes the host.
//!
//! An [`Actuator`] reads a knob's current value and writes a new one, both as the strings of
//! [`Change`]. `apply` writes `after` and reads it back, so a write the kernel silently
//! adjusted (a cpuset that trims an affinity, a sysfs file that ignores a word) is reported
//! as `NotVerified` rather than believed; `undo` is `apply` of the inverse change.
//!
//! - [`ThreadActuator`]: affinity, scheduling policy, nice and I/O priority of one thread,
//!   identified by (pid, tid, process start time) so a recycled tid is never touched.
//! - [`HostFileActuator`]: one sysfs or procfs file (THP, KSM, vm.*, cpufreq governor),
//!   never written through a symlink or a world-writable path.
//! - [`ContainerActuator`]: cpuset, shares, quota and memory limit of a container, through
//!   Docker's update API (connected on first use).
//! - [`NumaActuator`]: the NUMA nodes holding a whole process's pages (migrate_pages),
//!   identified by (pid, process start time).
//! - [`CgroupFileActuator`]: whitelisted control files (cpu.weight, cpu.max, memory.max,
//!   cpu.shares, memory.limit_in_bytes, cpuset...) of the cgroup of an agent that is a plain
//!   process, under the host-file safety rules.
//! - [`HostActuators`]: routes a change to whichever of them handles it.

mod agent_cgroup;
mod cgroup_file;
mod container;
mod host_file;
mod numa;
mod thread;

pub use agent_cgroup::{ensure_shared_parent, plan_process_agent};
pub use cgroup_file::{CgroupFileActuator, cgroup_file_names, plan_cgroup, process_cgroup};
use container::is_container_knob;
pub use container::{ContainerActuator, plan_container, plan_container_with};
pub use host_file::HostFileActuator;
pub use numa::{NumaActuator, parse_numa_maps, plan_memory_nodes};
pub use thread::{ThreadActuator, plan_process};

use std::sync::Arc;

use nix::errno::Errno;

use crate::host::HostRoots;
use crate::model::{Change, Knob, Target};
use crate::optimizer::change::ActuatorError;

/// Reads and writes knobs on one kind of target.
pub trait Actuator {
    /// The knob's current value, in the notation `write` accepts.
    fn read(&self, target: &Target, knob: &Knob) -> Result<String, ActuatorError>;

    /// Set the knob to `value`. Invalid values are rejected before anything is touched.
    fn write(&self, target: &Target, knob: &Knob, value: &str) -> Result<(), ActuatorError>;

    /// Whether a value read back means what was written. The default compares words, so
    /// a trailing newline or doubled space is not a mismatch; actuators whose values have
    /// several spellings ("0,1" and "0-1") override it.
    fn same_value(&self, knob: &Knob, wrote: &str, read: &str) -> bool {
        let _ = knob;
        wrote.split_whitespace().eq(read.split_whitespace())
    }

    /// Write `change.after` and verify it by reading it back.
    fn apply(&self, change: &Change) -> Result<(), ActuatorError> {
        self.write(&change.target, &change.knob, &change.after)?;
        let read = self.read(&change.target, &change.knob)?;
        if self.same_value(&change.knob, &change.after, &read) {
            Ok(())
        } else {
            Err(ActuatorError::NotVerified {
                wrote: change.after.clone(),
                read,
            })
        }
    }

    /// Put `change.before` back, verified the same way.
    fn undo(&self, change: &Change) -> Result<(), ActuatorError> {
        self.apply(&change.inverse())
    }
}

/// Every actuator of this module behind one value: threads go to [`ThreadActuator`], host
/// files to [`HostFileActuator`], containers to [`ContainerActuator`], cgroup files to
/// [`CgroupFileActuator`]; anything else is `Unsupported`.
#[derive(Debug, Clone)]
pub struct HostActuators {
    pub thread: ThreadActuator,
    pub host_file: HostFileActuator,
    pub cgroup_file: CgroupFileActuator,
    /// Shared, since it owns a runtime and a connection; Docker is contacted only when a
    /// container change is read or applied, so hosts without Docker are unaffected.
    pub container: Arc<ContainerActuator>,
    pub numa: NumaActuator,
}

impl HostActuators {
    pub fn new(roots: HostRoots) -> Self {
        HostActuators {
            thread: ThreadActuator {
                roots: roots.clone(),
            },
            host_file: HostFileActuator {
                roots: roots.clone(),
            },
            cgroup_file: CgroupFileActuator {
                roots: roots.clone(),
            },
            container: Arc::new(ContainerActuator::new("", roots.clone())),
            numa: NumaActuator::new(roots),
        }
    }

    fn route(&self, target: &Target, knob: &Knob) -> Result<&dyn Actuator, ActuatorError> {
        match (target, knob) {
            (Target::Thread { .. }, _) => Ok(&self.thread),
            (Target::Host, Knob::HostFile { .. }) => Ok(&self.host_file),
            (Target::Cgroup { .. }, Knob::CgroupFile { .. }) => Ok(&self.cgroup_file),
            (Target::Container { .. }, knob) if is_container_knob(knob) => Ok(&*self.container),
            (Target::Process { .. }, Knob::MemoryNodes) => Ok(&self.numa),
            _ => Err(unsupported(target, knob)),
        }
    }
}

impl Actuator for HostActuators {
    fn read(&self, target: &Target, knob: &Knob) -> Result<String, ActuatorError> {
        self.route(target, knob)?.read(target, knob)
    }

    fn write(&self, target: &Target, knob: &Knob, value: &str) -> Result<(), ActuatorError> {
        self.route(target, knob)?.write(target, knob, value)
    }

    fn same_value(&self, knob: &Knob, wrote: &str, read: &str) -> bool {
        match knob {
            Knob::HostFile { .. } => self.host_file.same_value(knob, wrote, read),
            Knob::CgroupFile { .. } => self.cgroup_file.same_value(knob, wrote, read),
            knob if is_container_knob(knob) => self.container.same_value(knob, wrote, read),
            Knob::MemoryNodes => self.numa.same_value(knob, wrote, read),
            _ => self.thread.same_value(knob, wrote, read),
        }
    }
}

/// The error for a target/knob pair an actuator does not handle.
fn unsupported(target: &Target, knob: &Knob) -> ActuatorError {
    ActuatorError::Unsupported(format!(
        "{} on {}",
        knob_name(knob),
        match target {
            Target::Thread { .. } => "a thread",
            Target::Container { .. } => "a container",
            Target::Host => "the host",
            Target::Process { .. } => "a process",
            Target::Cgroup { .. } => "a cgroup",
        }
    ))
}

/// A knob's short name for messages.
fn knob_name(knob: &Knob) -> String {
    match knob {
        Knob::Affinity => "affinity".to_string(),
        Knob::Policy => "policy".to_string(),
        Knob::Nice => "nice".to_string(),
        Knob::IoPriority => "ioprio".to_string(),
        Knob::HostFile { path } => path.display().to_string(),
        Knob::ContainerCpusetCpus => "cpuset.cpus".to_string(),
        Knob::ContainerCpusetMems => "cpuset.mems".to_string(),
        Knob::ContainerCpuShares => "cpu shares".to_string(),
        Knob::ContainerCpuQuota => "cpu quota".to_string(),
        Knob::ContainerMemoryLimit => "memory limit".to_string(),
        Knob::MemoryNodes => "memory nodes".to_string(),
        Knob::CgroupFile { file } => file.clone(),
    }
}

/// A CPU or node list to write, strictly: every part "N" or "A-B" with A <= B <= `max`, at
/// least one id; sorted, without repeats. `what` names the list in errors ("CPU", "node").
fn parse_strict_list(
    knob: &Knob,
    value: &str,
    max: u32,
    what: &str,
) -> Result<Vec<u32>, ActuatorError> {
    let mut ids = Vec::new();
    for part in value.trim().split(',') {
        let part = part.trim();
        let range = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<u32>(), b.trim().parse::<u32>()),
            None => (part.parse::<u32>(), part.parse::<u32>()),
        };
        match range {
            (Ok(a), Ok(b)) if a <= b && b <= max => ids.extend(a..=b),
            _ if value.trim().is_empty() => {
                return Err(invalid(knob, value, format!("empty {what} list")));
            }
            _ => {
                return Err(invalid(
                    knob,
                    value,
                    format!("not a {what} list such as \"0\" or \"0-3,8\" (ids up to {max})"),
                ));
            }
        }
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

fn invalid(knob: &Knob, value: &str, why: impl Into<String>) -> ActuatorError {
    ActuatorError::InvalidValue {
        knob: knob_name(knob),
        value: value.to_string(),
        why: why.into(),
    }
}

/// A failed system call as an actuator error: permission problems are `Denied`, a vanished
/// thread is `Gone`, the rest `Io`. `what` names the call and its target.
fn errno_error(errno: Errno, what: &str) -> ActuatorError {
    match errno {
        Errno::EPERM | Errno::EACCES => ActuatorError::Denied(format!("{what}: {}", errno.desc())),
        Errno::ESRCH => ActuatorError::Gone(format!("{what}: {}", errno.desc())),
        _ => ActuatorError::Io(format!("{what}: {}", errno.desc())),
    }
}
