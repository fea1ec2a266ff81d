//! Floor 3: the resource coordinator. Agents declare what they need (Docker labels
//! `sutazai.cpus`, `.exclusive`, `.memory`, `.numa`, or `POST /api/agents`, kept by
//! `registry`); the allocator turns the declarations into a plan (`allocate`, pure); the
//! plan is offered as one fix of container settings, applied all or nothing through the
//! optimizer's journal like any other fix, and undone by `rollback`. The engine plans every
//! tick, and at once when an agent starts or stops.

pub mod allocate;
pub mod config;
pub mod rebalance;
pub mod registry;

use std::time::Instant;

pub use config::CoordinatorConfig;

use crate::host::{format_cpu_list, parse_cpu_list};
use crate::model::{
    Allocation, AllocationState, Bottleneck, BottleneckKind, ContainerStat, CoordinatorSnapshot,
    Declaration, Evidence, Fix, Intent, IntentTarget, Knob, Measure, Risk, SharedParent, Snapshot,
    Subject, UsageSource,
};
use allocate::{Grant, Request, allocate};

/// The strategy name on the fixes the coordinator offers.
pub const STRATEGY: &str = "coordinator";

/// Whether fixes of `strategy` carry a whole plan (the declared one, or one rebalanced), so
/// that applying one replaces the plan before it.
pub fn is_plan(strategy: &str) -> bool {
    strategy == STRATEGY || strategy == rebalance::STRATEGY
}

/// The plan for the running agents `snap` shows, and whether each is in place.
pub fn plan(snap: &Snapshot, config: &CoordinatorConfig) -> CoordinatorSnapshot {
    plan_with(snap, config, &[])
}

/// As `plan`, with the declarations registered through the API. One naming no running
/// agent holds its CPUs all the same (registering is reserving), so the agents that share
/// are moved off them before it starts.
pub fn plan_with(
    snap: &Snapshot,
    config: &CoordinatorConfig,
    declared: &[Declaration],
) -> CoordinatorSnapshot {
    let inputs = Inputs {
        declared,
        ..Inputs::default()
    };
    plan_from(snap, config, &inputs)
}

/// What a plan is made from besides the snapshot and the config.
#[derive(Debug, Default)]
pub struct Inputs<'a> {
    /// Declarations registered through the API.
    pub declared: &'a [Declaration],
    /// Exclusive CPUs changed by rebalancing.
    pub adjustments: rebalance::Adjustments,
    /// The shared parent cgroup as read; the plan fills in its CPUs.
    pub parent: Option<SharedParent>,
}

/// An agent started under the shared parent (`--cgroup-parent`): its CPUs can only be the
/// shared pool's.
fn under(parent: Option<&SharedParent>, stat: &ContainerStat) -> bool {
    let (Some(parent), Some(cgroup)) = (parent, &stat.cgroup) else {
        return false;
    };
    cgroup
        .strip_prefix(parent.cgroup.trim_end_matches('/'))
        .is_some_and(|rest| rest.starts_with('/'))
}

/// The plan, from everything it is made from.
pub fn plan_from(
    snap: &Snapshot,
    config: &CoordinatorConfig,
    inputs: &Inputs,
) -> CoordinatorSnapshot {
    let started = Instant::now();
    let (declared, adjustments) = (inputs.declared, &inputs.adjustments);
    let parent = inputs.parent.as_ref();
    let running: Vec<&ContainerStat> = snap
        .containers
        .agents
        .iter()
        .filter(|a| a.state == "running")
        .collect();
    let waiting: Vec<&Declaration> = declared
        .iter()
        .filter(|d| !running.iter().any(|s| registry::names(&d.agent, s)))
        .collect();
    let requests: Vec<Request> = running
        .iter()
        .map(|a| {
            let mut need =
                rebalance::adjusted(a.need.clone(), adjustments.get(&a.id).copied().unwrap_or(0));
            if under(parent, a)
                && let Some(need) = &mut need
            {
                need.exclusive = false; // pending below, with the reason
            }
            Request {
                id: a.id.clone(),
                name: a.name.clone(),
                priority: a.priority,
                need,
                need_error: a.need_error.clone(),
            }
        })
        .chain(waiting.iter().map(|d| Request {
            id: format!("declared:{}", d.agent),
            name: d.agent.clone(),
            priority: d.priority,
            need: Some(d.need.clone()),
            need_error: None,
        }))
        .collect();
    let plan = allocate(&snap.topology, &requests, config);
    let all = Everything::of(snap);
    let mut grants = plan.grants.into_iter();
    let mut agents: Vec<Allocation> = running
        .iter()
        .zip(grants.by_ref())
        .map(|(stat, mut grant)| {
            let exclusive = stat.need.as_ref().is_some_and(|n| n.exclusive);
            if exclusive && under(parent, stat) {
                grant.state = AllocationState::Pending {
                    why: format!(
                        "asks for CPUs of its own, but runs under the shared parent {} \
                         (--cgroup-parent), which holds only the shared pool; start it \
                         without --cgroup-parent",
                        parent.map_or("", |p| p.cgroup.as_str())
                    ),
                };
            }
            (stat, grant)
        })
        .map(|(stat, grant)| Allocation {
            in_place: settings(stat, &grant, &all, false).is_empty(),
            id: stat.id.clone(),
            name: stat.name.clone(),
            priority: stat.priority.unwrap_or(0),
            need: stat.need.clone(),
            state: grant.state,
            cpus: grant.cpus,
            mems: grant.mems,
            cpu_shares: grant.cpu_shares,
            memory_limit_bytes: grant.memory_limit_bytes,
            waiting: false,
            rebalanced: adjustments.get(&stat.id).copied().unwrap_or(0),
        })
        .collect();
    agents.extend(
        requests[running.len()..]
            .iter()
            .zip(grants)
            .map(|(r, grant)| Allocation {
                id: r.id.clone(),
                name: r.name.clone(),
                priority: r.priority.unwrap_or(0),
                need: r.need.clone(),
                state: grant.state,
                cpus: grant.cpus,
                mems: grant.mems,
                cpu_shares: grant.cpu_shares,
                memory_limit_bytes: grant.memory_limit_bytes,
                // No container to change yet.
                in_place: true,
                waiting: true,
                rebalanced: 0,
            }),
    );
    agents.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then_with(|| a.name.cmp(&b.name))
    });
    let parent = parent
        .filter(|_| !plan.shared.is_empty())
        .map(|p| SharedParent {
            cpus: plan.shared.clone(),
            ..p.clone()
        });
    CoordinatorSnapshot {
        enforce: config.enforce,
        reserved: plan.reserved,
        shared: plan.shared,
        agents,
        plan_us: started.elapsed().as_micros() as u64,
        declared: declared.to_vec(),
        parent,
    }
}

/// The bottleneck that says the plan is not in place yet; `None` when it is.
pub fn off_plan(view: &CoordinatorSnapshot, since_seq: u64) -> Option<Bottleneck> {
    let n = view.out_of_place().count();
    let mut evidence = Vec::new();
    if n > 0 {
        evidence.push(Evidence {
            metric: "agents not as the coordinator planned".to_string(),
            value: n as f64,
            threshold: 0.0,
            unit: "agents".to_string(),
        });
    }
    if let Some(parent) = view.parent.as_ref().filter(|p| !p.in_place()) {
        // Before any agent runs, when a need was registered ahead: what makes it prevention.
        evidence.push(Evidence {
            metric: format!(
                "CPUs of the shared parent {} beyond the shared pool",
                parent.cgroup
            ),
            value: parent
                .cpus_read
                .iter()
                .filter(|c| !parent.cpus.contains(c))
                .count() as f64,
            threshold: 0.0,
            unit: "CPUs".to_string(),
        });
    }
    if evidence.is_empty() {
        return None;
    }
    Some(Bottleneck {
        kind: BottleneckKind::OffPlan,
        subject: Subject::Host,
        evidence,
        since_seq,
    })
}

/// One bottleneck per pending agent, its reason in words as the evidence's metric, so the
/// alerts and the Proposals pane carry it. `since` gives the first tick each was pending.
pub fn pending(view: &CoordinatorSnapshot, mut since: impl FnMut(&str) -> u64) -> Vec<Bottleneck> {
    view.agents
        .iter()
        .filter_map(|a| match &a.state {
            AllocationState::Pending { why } => Some(Bottleneck {
                kind: BottleneckKind::AllocationPending,
                subject: Subject::Container {
                    id: a.id.clone(),
                    name: a.name.clone(),
                },
                evidence: vec![Evidence {
                    metric: why.clone(),
                    value: a.need.as_ref().and_then(|n| n.cpus).unwrap_or(0.0),
                    threshold: 0.0,
                    unit: "CPUs asked".to_string(),
                }],
                since_seq: since(&a.id),
            }),
            _ => None,
        })
        .collect()
}

/// The fix that puts the plan in place, `None` when it is. It carries the whole plan (every
/// setting the plan gives any agent, and every setting that differs), not only what differs
/// now (see `settings`).
pub fn fix(view: &CoordinatorSnapshot, snap: &Snapshot) -> Option<Fix> {
    let to_change = view.out_of_place().count();
    if to_change == 0 && !view.parent_out_of_place() {
        return None;
    }
    let all = Everything::of(snap);
    let mut intents = Vec::new();
    for allocation in &view.agents {
        let Some(stat) = snap
            .containers
            .agents
            .iter()
            .find(|a| a.id == allocation.id)
        else {
            continue;
        };
        for (knob, before, after) in settings(stat, &grant_of(allocation), &all, true) {
            intents.push(Intent {
                target: stat.intent_target(),
                knob,
                expected_before: before,
                after,
            });
        }
    }
    if let Some(parent) = &view.parent {
        intents = around_parent(parent, intents, snap, &all);
    }
    if intents.is_empty() {
        return None;
    }
    let count = |label: &str| {
        view.agents
            .iter()
            .filter(|a| a.state.label() == label)
            .count()
    };
    Some(Fix {
        strategy: STRATEGY.to_string(),
        summary: format!(
            "allocate as declared: {to_change} agents to change ({} exclusive, {} pending, \
             shared pool {})",
            count("exclusive"),
            count("pending"),
            format_cpu_list(&view.shared)
        ),
        // What the operator declared; every setting is journaled and undone by rollback.
        risk: Risk::Low,
        metric: "latency agents' PSI cpu some avg10".to_string(),
        measure: Measure::LatencyAgentsPsiCpuSome,
        intents,
    })
}

/// The agents' intents with the shared parent's CPUs set around them. A v1 cpuset keeps a
/// child's CPUs within its parent's, so when the pool moves the parent first grows to every
/// CPU (always allowed), the agents inside move, then it shrinks to the pool; a rollback
/// undoes it in reverse, through the same values.
fn around_parent(
    parent: &SharedParent,
    agents: Vec<Intent>,
    snap: &Snapshot,
    all: &Everything,
) -> Vec<Intent> {
    let set_to = |cpus: &[u32]| Intent {
        target: IntentTarget::Cgroup {
            path: parent.target.clone(),
        },
        knob: Knob::CgroupFile {
            file: "cpuset.cpus".to_string(),
        },
        expected_before: format_cpu_list(&parent.cpus_read),
        after: format_cpu_list(cpus),
    };
    let inside = |intent: &Intent| match &intent.target {
        IntentTarget::Container { id, .. } => snap
            .containers
            .agents
            .iter()
            .any(|a| a.id == *id && under(Some(parent), a)),
        _ => false,
    };
    let grows = !parent.cpus.iter().all(|c| parent.cpus_read.contains(c));
    let moves = agents
        .iter()
        .any(|i| i.knob == Knob::ContainerCpusetCpus && inside(i));
    let mut intents = Vec::with_capacity(agents.len() + 2);
    if grows || moves {
        intents.push(set_to(&all.cpus));
    }
    intents.extend(agents);
    intents.push(set_to(&parent.cpus));
    intents
}

fn grant_of(allocation: &Allocation) -> Grant {
    Grant {
        state: allocation.state.clone(),
        cpus: allocation.cpus.clone(),
        mems: allocation.mems.clone(),
        cpu_shares: allocation.cpu_shares,
        memory_limit_bytes: allocation.memory_limit_bytes,
    }
}

/// Every online CPU and every node: what an empty cpuset means.
struct Everything {
    cpus: Vec<u32>,
    nodes: Vec<u32>,
}

impl Everything {
    fn of(snap: &Snapshot) -> Everything {
        Everything {
            cpus: snap
                .topology
                .cpus
                .iter()
                .filter(|c| c.online)
                .map(|c| c.id)
                .collect(),
            nodes: snap.topology.nodes.iter().map(|n| n.id).collect(),
        }
    }
}

/// The settings of `stat` against `grant`, as (knob, as read, as planned): each that
/// differs, and with `whole_plan` each the plan gives as well (a plan replaces the one
/// before, whose batch is rolled back first, so what it had set must be set again).
fn settings(
    stat: &ContainerStat,
    grant: &Grant,
    all: &Everything,
    whole_plan: bool,
) -> Vec<(Knob, String, String)> {
    let mut out = Vec::new();
    // A process agent's shared cgroups are not ours to set (the pane says why).
    let settable = |knob: &Knob| stat.process.as_ref().is_none_or(|p| p.can_set(knob));
    let mut add = |knob: Knob, differs: bool, given: bool, read: String, planned: String| {
        if (differs || (whole_plan && given)) && settable(&knob) {
            out.push((knob, read, planned));
        }
    };
    add(
        Knob::ContainerCpusetCpus,
        !same_set(&stat.cpuset_cpus, &grant.cpus, &all.cpus),
        !grant.cpus.is_empty(),
        stat.cpuset_cpus.clone(),
        format_cpu_list(&grant.cpus),
    );
    add(
        Knob::ContainerCpusetMems,
        !same_set(&stat.cpuset_mems, &grant.mems, &all.nodes),
        !grant.mems.is_empty(),
        stat.cpuset_mems.clone(),
        format_cpu_list(&grant.mems),
    );
    if let Some(shares) = grant.cpu_shares {
        add(
            Knob::ContainerCpuShares,
            stat.cpu_weight != Some(weight_as_read(shares, stat.source)),
            true,
            stat.cpu_weight.map(|w| w.to_string()).unwrap_or_default(),
            shares.to_string(),
        );
    }
    if let Some(limit) = grant.memory_limit_bytes {
        add(
            Knob::ContainerMemoryLimit,
            stat.mem_limit_bytes.map(|l| l / 4096) != Some(limit / 4096),
            true,
            stat.mem_limit_bytes
                .map_or("max".to_string(), |l| l.to_string()),
            limit.to_string(),
        );
    }
    out
}

/// A CPU or node list as read against one as planned; empty means everything on both sides.
fn same_set(read: &str, planned: &[u32], everything: &[u32]) -> bool {
    let mut read = parse_cpu_list(read);
    if read.is_empty() {
        read = everything.to_vec();
    }
    let mut planned = if planned.is_empty() {
        everything.to_vec()
    } else {
        planned.to_vec()
    };
    read.sort_unstable();
    planned.sort_unstable();
    read == planned
}

/// cpu.shares as the cgroup shows it: v1 as is; v2 as cpu.weight, converted the way runc
/// converts Docker's shares.
fn weight_as_read(shares: u64, source: UsageSource) -> u64 {
    match source {
        UsageSource::CgroupV2 => 1 + (shares.saturating_sub(2) * 9999) / 262_142,
        _ => shares,
    }
}

#[cfg(test)]
mod tests;
