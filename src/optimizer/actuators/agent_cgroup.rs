//! A container's knobs on an agent that is plain processes (`[[agents]]`): each becomes a
//! control file of the agent's own cgroup, in the kernel's notation for its cgroup version.
//! Where the agent's cpuset cgroup holds other processes too, its CPUs are set through every
//! thread's affinity instead; any other knob on a shared cgroup is refused, naming why.

use std::path::Path;

use super::cgroup_file::plan_cgroup;
use super::container::{parse_bytes, parse_cores, parse_shares};
use super::thread::plan_process;
use super::{Actuator, CgroupFileActuator, invalid};
use crate::host::HostRoots;
use crate::model::{Change, Knob, ProcessAgent, Target};
use crate::optimizer::change::ActuatorError;

/// The period written with a v2 quota (the kernel's default).
const V2_PERIOD_US: i64 = 100_000;

/// The changes that set a container knob on the process agent `name`, `before` read now.
pub fn plan_process_agent(
    roots: &HostRoots,
    name: &str,
    agent: &ProcessAgent,
    knob: &Knob,
    after: &str,
) -> Result<Vec<Change>, ActuatorError> {
    let cgroups = &agent.cgroups;
    let shared = |controller: &str| {
        let why = agent
            .shared
            .iter()
            .find(|line| line.starts_with(controller))
            .cloned()
            .unwrap_or_else(|| format!("{controller}: no cgroup of its own"));
        ActuatorError::Refused(format!(
            "agent {name}: its {why}; run it in a cgroup of its own (a systemd service, or \
             systemd-run --scope) to let this knob be changed"
        ))
    };
    let one = |dir: &Path, file: &str, value: &str| plan_cgroup(roots, dir, file, value);
    let change = match knob {
        Knob::ContainerCpusetCpus | Knob::ContainerCpusetMems => {
            let file = if *knob == Knob::ContainerCpusetCpus {
                "cpuset.cpus"
            } else {
                "cpuset.mems"
            };
            let Some(dir) = &cgroups.cpuset else {
                if *knob == Knob::ContainerCpusetMems {
                    return Err(shared("cpuset"));
                }
                return affinity_of_every_process(roots, agent, after);
            };
            one(
                dir,
                file,
                &everything_spelled(roots, cgroups.v2, dir, file, after)?,
            )?
        }
        Knob::ContainerCpuShares => {
            let dir = cgroups.cpu.as_ref().ok_or_else(|| shared("cpu"))?;
            let shares = parse_shares(after).map_err(|why| invalid(knob, after, why))?;
            if cgroups.v2 {
                // runc's conversion, so a process agent weighs as a container would.
                let weight = 1 + ((shares - 2) * 9999) / 262_142;
                one(dir, "cpu.weight", &weight.to_string())?
            } else {
                one(dir, "cpu.shares", &shares.to_string())?
            }
        }
        Knob::ContainerMemoryLimit => {
            let dir = cgroups.memory.as_ref().ok_or_else(|| shared("memory"))?;
            let bytes = parse_bytes(after).map_err(|why| invalid(knob, after, why))?;
            match (cgroups.v2, bytes) {
                (true, Some(b)) => one(dir, "memory.max", &b.to_string())?,
                (true, None) => one(dir, "memory.max", "max")?,
                (false, Some(b)) => one(dir, "memory.limit_in_bytes", &b.to_string())?,
                (false, None) => one(dir, "memory.limit_in_bytes", "-1")?,
            }
        }
        Knob::ContainerCpuQuota => {
            let dir = cgroups.cpu.as_ref().ok_or_else(|| shared("cpu"))?;
            let nanos = parse_cores(after).map_err(|why| invalid(knob, after, why))?;
            if cgroups.v2 {
                let value = match nanos {
                    Some(n) => format!("{} {V2_PERIOD_US}", n * V2_PERIOD_US / 1_000_000_000),
                    None => format!("max {V2_PERIOD_US}"),
                };
                one(dir, "cpu.max", &value)?
            } else {
                let period = read_file(roots, dir, "cpu.cfs_period_us")?
                    .parse::<i64>()
                    .map_err(|_| ActuatorError::Io("cpu.cfs_period_us is not a number".into()))?;
                let quota = nanos.map_or(-1, |n| n * period / 1_000_000_000);
                one(dir, "cpu.cfs_quota_us", &quota.to_string())?
            }
        }
        other => {
            return Err(ActuatorError::Unsupported(format!(
                "{other:?} is not a knob of an agent's cgroup"
            )));
        }
    };
    Ok(vec![change])
}

/// Docker spells "every CPU" as an empty cpuset. v2 reads an empty file the same way
/// (inherit the parent's); v1 would read it as no CPU at all, so there it is the parent's.
fn everything_spelled(
    roots: &HostRoots,
    v2: bool,
    dir: &Path,
    file: &str,
    after: &str,
) -> Result<String, ActuatorError> {
    if !after.trim().is_empty() || v2 {
        return Ok(after.to_string());
    }
    let parent = dir
        .parent()
        .ok_or_else(|| ActuatorError::Refused(format!("{} has no parent", dir.display())))?;
    read_file(roots, parent, file)
}

fn read_file(roots: &HostRoots, dir: &Path, file: &str) -> Result<String, ActuatorError> {
    CgroupFileActuator::new(roots.clone()).read(
        &Target::Cgroup {
            path: dir.to_path_buf(),
        },
        &Knob::CgroupFile {
            file: file.to_string(),
        },
    )
}

/// A cpuset on a shared cgroup: the affinity of every thread of every matched process.
/// "" (every CPU) becomes the CPUs online. A process that left meanwhile is skipped.
fn affinity_of_every_process(
    roots: &HostRoots,
    agent: &ProcessAgent,
    after: &str,
) -> Result<Vec<Change>, ActuatorError> {
    let cpus = if after.trim().is_empty() {
        std::fs::read_to_string(roots.sys.join("devices/system/cpu/online"))
            .map_err(|err| ActuatorError::Io(format!("reading the online CPUs: {err}")))?
            .trim()
            .to_string()
    } else {
        after.to_string()
    };
    let mut changes = Vec::new();
    for &pid in &agent.pids {
        match plan_process(roots, pid, Knob::Affinity, &cpus) {
            Ok(more) => changes.extend(more),
            Err(ActuatorError::Gone(why)) => tracing::debug!(pid, why, "process left"),
            Err(other) => return Err(other),
        }
    }
    if changes.is_empty() {
        return Err(ActuatorError::Gone("none of its processes is left".into()));
    }
    Ok(changes)
}

/// The coordinator's shared parent cgroup `name` at the root of the v1 cpuset hierarchy,
/// created when missing with the root's CPUs and memory nodes (a new v1 cpuset has none, and
/// nothing could run in it). Returns its target path ("fs/cgroup/cpuset/sutazai-shared").
///
/// Creating it is not journaled: the empty directory changes nothing for any process until
/// an operator starts agents under it, and it is the engine's own, as its state dir is. Its
/// CPUs are set by the coordinator's plans, through the journal.
pub fn ensure_shared_parent(roots: &HostRoots, name: &str) -> Result<std::path::PathBuf, String> {
    let mounts = crate::host::cgroups::CgroupMounts::detect(roots);
    let Some(mount) = mounts.v1.get("cpuset") else {
        return Err(
            "no v1 cpuset hierarchy: a shared parent needs cgroup v1 (cgroupfs) for now".into(),
        );
    };
    let target = mount
        .strip_prefix(&roots.sys)
        .map_err(|_| format!("{} is not under the sys root", mount.display()))?
        .join(name);
    let dir = roots.sys.join(&target);
    match std::fs::symlink_metadata(&dir) {
        Ok(meta) if meta.is_dir() => return Ok(target),
        Ok(_) => return Err(format!("{} exists and is not a cgroup", dir.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(format!("{}: {err}", dir.display())),
    }
    std::fs::create_dir(&dir).map_err(|err| format!("creating {}: {err}", dir.display()))?;
    for file in ["cpuset.mems", "cpuset.cpus"] {
        let from_root = std::fs::read_to_string(mount.join(file))
            .map_err(|err| format!("reading {}: {err}", mount.join(file).display()))?;
        std::fs::write(dir.join(file), from_root.trim())
            .map_err(|err| format!("writing {}: {err}", dir.join(file).display()))?;
    }
    tracing::info!(cgroup = %dir.display(), "created the shared parent cgroup");
    Ok(target)
}
