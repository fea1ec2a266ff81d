//! From a fix's intents to journaled changes: read each target's real `before` now.
//!
//! Blocking, and it may talk to Docker through the container actuator's own runtime: call it
//! from a plain thread, never from inside the async runtime.

use crate::host::HostRoots;
use crate::model::{Change, Knob, Target};
use crate::model::{Intent, IntentTarget};
use crate::optimizer::actuators::{
    Actuator, ContainerActuator, HostFileActuator, plan_cgroup, plan_container_with,
    plan_memory_nodes, plan_process, plan_process_agent,
};
use crate::optimizer::change::ActuatorError;

/// The changes that carry out `intents`, with `before` read from the host; those already
/// in place are left out.
pub fn plan(
    intents: &[Intent],
    roots: &HostRoots,
    docker_endpoint: &str,
) -> Result<Vec<Change>, ActuatorError> {
    let mut changes = plan_all(intents, roots, docker_endpoint)?;
    // Nothing to do is not a change: drop changes whose value is already in place.
    changes.retain(|c| c.before.trim() != c.after.trim());
    Ok(changes)
}

/// As `plan`, keeping the changes already in place (a plan that replaces another needs
/// them: see `Optimizer::supersede`).
pub fn plan_all(
    intents: &[Intent],
    roots: &HostRoots,
    docker_endpoint: &str,
) -> Result<Vec<Change>, ActuatorError> {
    let containers = ContainerActuator::new(docker_endpoint, roots.clone());
    let host_files = HostFileActuator::new(roots.clone());
    let mut changes = Vec::new();
    for intent in intents {
        match &intent.target {
            // A process's memory is shared by its threads: one change for the whole process.
            IntentTarget::ContainerProcess { pid, .. } if intent.knob == Knob::MemoryNodes => {
                changes.push(plan_memory_nodes(roots, *pid, &intent.after)?);
            }
            IntentTarget::ContainerProcess { pid, .. } => {
                changes.extend(plan_process(
                    roots,
                    *pid,
                    intent.knob.clone(),
                    &intent.after,
                )?);
            }
            IntentTarget::Container { id, .. } => {
                changes.push(plan_container_with(
                    &containers,
                    id,
                    intent.knob.clone(),
                    &intent.after,
                )?);
            }
            IntentTarget::ProcessAgent { name, process, .. } => {
                changes.extend(plan_process_agent(
                    roots,
                    name,
                    process,
                    &intent.knob,
                    &intent.after,
                )?);
            }
            IntentTarget::Cgroup { path } => {
                let Knob::CgroupFile { file } = &intent.knob else {
                    return Err(ActuatorError::Unsupported(format!(
                        "{:?} is not a cgroup file",
                        intent.knob
                    )));
                };
                changes.push(plan_cgroup(roots, path, file, &intent.after)?);
            }
            IntentTarget::HostFile { .. } => {
                let before = host_files.read(&Target::Host, &intent.knob)?;
                changes.push(Change {
                    target: Target::Host,
                    knob: intent.knob.clone(),
                    before,
                    after: intent.after.clone(),
                });
            }
        }
    }
    // A knob changed twice in one batch (a parent cpuset grown for its children, then
    // shrunk) starts the second time where the first left it, so undoing in reverse
    // order passes through the same values.
    for later in 1..changes.len() {
        let earlier = changes[..later]
            .iter()
            .rev()
            .find(|c| c.target == changes[later].target && c.knob == changes[later].knob);
        if let Some(earlier) = earlier {
            changes[later].before = earlier.after.clone();
        }
    }
    Ok(changes)
}
