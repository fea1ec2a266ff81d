//! Agent families: Docker's state and one series per agent container.

use prometheus_client::registry::Unit;

use super::{Families, Labels, Value, bytes, bytes_per_second, labels, ratio, unique_by};
use crate::model::{AgentClass, ContainerStat, DockerStatus, Snapshot};

fn agent_labels(agent: &ContainerStat) -> Labels {
    let class = match agent.class {
        Some(AgentClass::Latency) => "latency",
        Some(AgentClass::Batch) => "batch",
        None => "",
    };
    let priority = agent.priority.map(|p| p.to_string()).unwrap_or_default();
    let short_id: String = agent.id.chars().take(12).collect();
    labels([
        ("name", &agent.name),
        ("id", &short_id),
        ("class", class),
        ("priority", &priority),
    ])
}

pub(super) fn agent_families(snap: &Snapshot, f: &mut Families) {
    let c = &snap.containers;
    let docker_up = matches!(c.status, DockerStatus::Connected { .. });
    f.gauge(
        "docker_up",
        None,
        "1 when the Docker daemon answers, else 0.",
    )
    .push(Labels::none(), docker_up);
    if matches!(c.status, DockerStatus::Disabled) {
        return;
    }
    f.gauge("agents", None, "Containers that count as agents.")
        .push(Labels::none(), c.agents.len());
    f.gauge(
        "containers",
        None,
        "Containers Docker reports, agents or not.",
    )
    .push(Labels::none(), c.total_seen);

    let labelled: Vec<(Labels, &ContainerStat)> =
        c.agents.iter().map(|a| (agent_labels(a), a)).collect();
    let all: Vec<&(Labels, &ContainerStat)> = unique_by(&labelled, |(labels, _)| labels);
    type Pick = fn(&ContainerStat) -> Option<Value>;
    let figures: [(&'static str, Option<Unit>, bool, &'static str, Pick); 10] = [
        (
            "agent_up",
            None,
            false,
            "1 when the agent's container is running, else 0.",
            |a| Some((a.state == "running").into()),
        ),
        (
            "agent_cpu",
            ratio(),
            false,
            "CPU used over the last tick, as a share of one core (can exceed 1).",
            |a| Some((a.cpu_pct / 100.0).into()),
        ),
        (
            "agent_memory",
            bytes(),
            false,
            "Memory in use minus inactive file cache (as docker stats shows).",
            |a| Some(a.mem_bytes.into()),
        ),
        (
            "agent_memory_limit",
            bytes(),
            false,
            "Memory limit; absent when unlimited.",
            |a| a.mem_limit_bytes.map(Value::from),
        ),
        (
            "agent_cpu_limit_cores",
            None,
            false,
            "CPU quota in cores (quota / period); absent when unlimited.",
            |a| a.cpu_limit_cores.map(Value::from),
        ),
        (
            "agent_cpu_throttled_periods",
            None,
            true,
            "CFS periods in which the agent was throttled.",
            |a| Some(a.throttled_periods_total.into()),
        ),
        (
            "agent_pressure_cpu_some_avg10",
            ratio(),
            false,
            "Share of wall time the agent's tasks waited for CPU, 10 s average (cgroup PSI).",
            |a| a.pressure.cpu.map(|p| (p.some.avg10 / 100.0).into()),
        ),
        (
            "agent_cpu_weight",
            None,
            false,
            "cpu.weight (cgroup v2) or cpu.shares (v1) as read.",
            |a| a.cpu_weight.map(Value::from),
        ),
        (
            "agent_pids",
            None,
            false,
            "Tasks in the agent's cgroup.",
            |a| Some(a.pids.into()),
        ),
        (
            "agent_io_read",
            bytes_per_second(),
            false,
            "Block I/O bytes read per second over the last tick.",
            |a| Some(a.io_read_bytes_per_sec.into()),
        ),
    ];
    for (name, unit, counter, help, pick) in figures {
        let family = f.add(name, unit, counter, help);
        for (labels, agent) in &all {
            if let Some(value) = pick(agent) {
                family.push(labels.clone(), value);
            }
        }
    }
    let written = f.gauge(
        "agent_io_written",
        bytes_per_second(),
        "Block I/O bytes written per second over the last tick.",
    );
    for (labels, agent) in &all {
        written.push(labels.clone(), agent.io_write_bytes_per_sec);
    }
}

/// The coordinator's plan: agents per state, and per agent the CPUs it was allocated.
pub(super) fn coordinator_families(snap: &Snapshot, f: &mut Families) {
    let Some(view) = &snap.coordinator else {
        return;
    };
    let states = f.gauge(
        "coordinator_agents",
        None,
        "Running agents by the coordinator's state: exclusive, shared, pending, misdeclared.",
    );
    for state in ["exclusive", "shared", "pending", "misdeclared"] {
        let n = view
            .agents
            .iter()
            .filter(|a| a.state.label() == state)
            .count();
        states.push(labels([("state", state)]), n);
    }
    f.gauge(
        "coordinator_reserved_cpus",
        None,
        "CPUs kept for the system ([coordinator] reserved_cpus, those online).",
    )
    .push(Labels::none(), view.reserved.len());
    f.gauge("coordinator_shared_cpus", None, "CPUs in the shared pool.")
        .push(Labels::none(), view.shared.len());
    f.gauge(
        "coordinator_off_plan_agents",
        None,
        "Agents whose settings are not yet what the plan says.",
    )
    .push(Labels::none(), view.out_of_place().count());
    let rebalanced = f.gauge(
        "coordinator_rebalanced_cpus",
        None,
        "Exclusive CPUs rebalancing moved from what was declared: lent to the shared pool \
         (direction=lent) or given from it (direction=given).",
    );
    let moved = |sign: i32| -> i32 {
        view.agents
            .iter()
            .map(|a| (a.rebalanced * sign).max(0))
            .sum()
    };
    rebalanced.push(labels([("direction", "lent")]), moved(-1));
    rebalanced.push(labels([("direction", "given")]), moved(1));
    let by_id: std::collections::HashMap<&str, &ContainerStat> = snap
        .containers
        .agents
        .iter()
        .map(|a| (a.id.as_str(), a))
        .collect();
    let allocated = f.gauge(
        "agent_allocated_cpus",
        None,
        "CPUs the coordinator allocated to the agent (its own when exclusive, else the shared \
         pool's; 0 means every CPU), with its state.",
    );
    for a in &view.agents {
        let Some(stat) = by_id.get(a.id.as_str()) else {
            continue;
        };
        let mut pairs = agent_labels(stat).0.to_vec();
        pairs.push(("state", super::LabelValue(a.state.label().to_string())));
        allocated.push(Labels(pairs.into()), a.cpus.len());
    }
}
