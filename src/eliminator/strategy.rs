//! Strategies: how a bottleneck becomes proposed fixes.
//!
//! A strategy is pure over (bottleneck, snapshot): it names *intents* — a target, a knob and
//! the value to set — with the value it expects to replace (from the snapshot, for display),
//! a risk and the metric that should improve. The true `before` is read from the host only
//! when the operator approves (see `plan`), so proposing never touches the host and a value
//! that moved since is journaled as it really was.

use crate::model::Knob;
use crate::model::Mode;
use crate::model::{AgentClass, ContainerStat, Snapshot};
use crate::model::{Bottleneck, BottleneckKind, Subject};
use crate::model::{Fix, Intent, IntentTarget, Measure, Risk};
use crate::optimizer::SchedulerPolicy;

/// Turns bottlenecks it handles into fixes.
pub trait EliminationStrategy: Send + Sync {
    fn name(&self) -> &str;
    fn handles(&self, bottleneck: &Bottleneck) -> bool;
    /// Fixes for `bottleneck` given the host as `snap` shows it; empty when nothing useful
    /// can be done (already applied, target not running...).
    fn propose(&self, bottleneck: &Bottleneck, snap: &Snapshot, context: &Context) -> Vec<Fix>;
}

/// What strategies may depend on beyond the snapshot (config keys of the original design).
#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    /// The policy proposed for batch agents (`scheduler_policy`, default SCHED_BATCH).
    pub batch_policy: SchedulerPolicy,
    /// Whether THP changes may be proposed (`enable_transparent_hugepages`, default false).
    pub thp_allowed: bool,
    /// Whether a KSM file exists on this host (sys/kernel/mm/ksm/run).
    pub ksm_available: bool,
    /// Whether NUMA fixes may be proposed (`enable_numa`, default true).
    pub numa_allowed: bool,
}

impl Default for Context {
    fn default() -> Self {
        Context {
            batch_policy: SchedulerPolicy::SchedBatch,
            thp_allowed: false,
            ksm_available: false,
            numa_allowed: true,
        }
    }
}

/// Every fix the strategies propose for `bottleneck`, keeping only those `mode` allows.
pub fn propose_all(
    strategies: &[Box<dyn EliminationStrategy>],
    bottleneck: &Bottleneck,
    snap: &Snapshot,
    context: &Context,
    mode: Mode,
) -> Vec<Fix> {
    strategies
        .iter()
        .filter(|s| s.handles(bottleneck))
        .flat_map(|s| s.propose(bottleneck, snap, context))
        .map(without_unsettable)
        .filter(|fix| fix.risk.allowed_in(mode) && !fix.intents.is_empty())
        .collect()
}

/// The fix without the intents a process agent cannot take (a knob of a cgroup it shares
/// with other processes): proposing them would only fail at apply.
fn without_unsettable(mut fix: Fix) -> Fix {
    fix.intents.retain(|intent| match &intent.target {
        IntentTarget::ProcessAgent { process, .. } => process.can_set(&intent.knob),
        _ => true,
    });
    fix
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The CPU shares a batch agent is lowered to (a quarter of Docker's default 1024).
const BATCH_SHARES: u64 = 256;

pub(super) fn running(snap: &Snapshot) -> impl Iterator<Item = &ContainerStat> {
    snap.containers
        .agents
        .iter()
        .filter(|c| c.state == "running")
}

fn batch_agents(snap: &Snapshot) -> impl Iterator<Item = &ContainerStat> {
    running(snap).filter(|c| c.class == Some(AgentClass::Batch))
}

fn container_of<'a>(snap: &'a Snapshot, bottleneck: &Bottleneck) -> Option<&'a ContainerStat> {
    match &bottleneck.subject {
        Subject::Container { id, .. } => running(snap).find(|c| &c.id == id),
        _ => None,
    }
}

/// Batch agents the bottleneck points at: its subject when that is a batch agent; every
/// batch agent for a starved latency agent (its noisy neighbours) or a host-wide bottleneck.
fn batch_targets<'a>(snap: &'a Snapshot, bottleneck: &Bottleneck) -> Vec<&'a ContainerStat> {
    match container_of(snap, bottleneck) {
        Some(c) if c.class == Some(AgentClass::Batch) => vec![c],
        Some(_) if bottleneck.kind == BottleneckKind::NoisyNeighbour => {
            batch_agents(snap).collect()
        }
        Some(_) => Vec::new(),
        None => batch_agents(snap).collect(),
    }
}

/// What easing batch agents' CPU should improve: the latency agents' own CPU pressure when
/// there are any (they are who the fix is for; the host stays busy either way), else the
/// host's.
fn cpu_relief_metric(snap: &Snapshot) -> (&'static str, Measure) {
    let latency = || running(snap).filter(|c| c.class == Some(AgentClass::Latency));
    if latency().any(|c| c.pressure.cpu.is_some()) {
        (
            "latency agents' cgroup PSI cpu some avg10",
            Measure::LatencyAgentsPsiCpuSome,
        )
    } else if latency().any(|c| c.run_delay.is_some()) {
        (
            "latency agents' run-queue wait, % of their run time",
            Measure::LatencyAgentsWaitPctOfRun,
        )
    } else {
        ("host PSI cpu some avg10", Measure::HostPsiCpuSome)
    }
}

/// The same knob on the main process (every thread) of each of `targets`.
fn main_process_intents(
    targets: &[&ContainerStat],
    knob: Knob,
    expected_before: &str,
    after: &str,
) -> Vec<Intent> {
    targets
        .iter()
        .filter_map(|c| {
            Some(Intent {
                target: IntentTarget::ContainerProcess {
                    container: c.id.clone(),
                    name: c.name.clone(),
                    pid: c.pid?,
                },
                knob: knob.clone(),
                expected_before: expected_before.to_string(),
                after: after.to_string(),
            })
        })
        .collect()
}

fn names(containers: &[&ContainerStat]) -> String {
    let mut names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    match names.len() {
        0..=3 => names.join(", "),
        n => format!("{} and {} more", names[..3].join(", "), n - 3),
    }
}

fn online_cpus(snap: &Snapshot) -> Vec<u32> {
    snap.topology
        .cpus
        .iter()
        .filter(|c| c.online)
        .map(|c| c.id)
        .collect()
}

fn cores_text(cores: f64) -> String {
    let text = format!("{cores:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

/// Lower batch agents' CPU weight so latency agents win contended CPU. Low risk: weights
/// only matter under contention and never cap a container.
pub struct BatchShares;

impl EliminationStrategy for BatchShares {
    fn name(&self) -> &str {
        "batch-cpu-weight"
    }
    fn handles(&self, b: &Bottleneck) -> bool {
        matches!(
            b.kind,
            BottleneckKind::CpuSaturation | BottleneckKind::NoisyNeighbour
        )
    }
    fn propose(&self, b: &Bottleneck, snap: &Snapshot, _: &Context) -> Vec<Fix> {
        let targets: Vec<&ContainerStat> = batch_targets(snap, b)
            .into_iter()
            .filter(|c| c.cpu_weight.is_none_or(|w| w > BATCH_SHARES))
            .collect();
        let intents = targets
            .iter()
            .map(|c| Intent {
                target: c.intent_target(),
                knob: Knob::ContainerCpuShares,
                expected_before: c.cpu_weight.map(|w| w.to_string()).unwrap_or_default(),
                after: BATCH_SHARES.to_string(),
            })
            .collect();
        vec![Fix {
            strategy: self.name().to_string(),
            summary: format!(
                "lower CPU weight of batch agents {} to {BATCH_SHARES}",
                names(&targets)
            ),
            risk: Risk::Low,
            metric: cpu_relief_metric(snap).0.to_string(),
            measure: cpu_relief_metric(snap).1,
            intents,
        }]
    }
}

/// Run batch agents' main processes under the batch scheduler policy (configurable).
pub struct BatchPolicy;

impl EliminationStrategy for BatchPolicy {
    fn name(&self) -> &str {
        "batch-scheduler-policy"
    }
    fn handles(&self, b: &Bottleneck) -> bool {
        matches!(
            b.kind,
            BottleneckKind::CpuSaturation | BottleneckKind::NoisyNeighbour
        )
    }
    fn propose(&self, b: &Bottleneck, snap: &Snapshot, context: &Context) -> Vec<Fix> {
        let targets: Vec<&ContainerStat> = batch_targets(snap, b)
            .into_iter()
            .filter(|c| c.pid.is_some())
            .collect();
        let intents = main_process_intents(
            &targets,
            Knob::Policy,
            "SCHED_OTHER",
            context.batch_policy.name(),
        );
        // SCHED_IDLE starves a process whenever anything else runs: aggressive only.
        let risk = if context.batch_policy == SchedulerPolicy::SchedIdle {
            Risk::High
        } else {
            Risk::Low
        };
        vec![Fix {
            strategy: self.name().to_string(),
            summary: format!(
                "run the main process of batch agents {} as {}",
                names(&targets),
                context.batch_policy.name()
            ),
            risk,
            metric: cpu_relief_metric(snap).0.to_string(),
            measure: cpu_relief_metric(snap).1,
            intents,
        }]
    }
}

/// Give a starved latency agent CPUs of its own: batch agents confined to the upper half of
/// the online CPUs, latency agents to the lower half, so neither waits behind the other
/// (confining only the batch side still lets a latency agent's new tasks be placed behind
/// them). Medium risk: each side loses half the host's CPUs even when the other is idle.
pub struct IsolateLatency;

impl EliminationStrategy for IsolateLatency {
    fn name(&self) -> &str {
        "isolate-latency-agents"
    }
    fn handles(&self, b: &Bottleneck) -> bool {
        b.kind == BottleneckKind::NoisyNeighbour
    }
    fn propose(&self, b: &Bottleneck, snap: &Snapshot, _: &Context) -> Vec<Fix> {
        let Some(victim) = container_of(snap, b) else {
            return Vec::new();
        };
        let cpus = online_cpus(snap);
        if cpus.len() < 2 {
            return Vec::new();
        }
        let (lower, upper) = cpus.split_at(cpus.len() / 2);
        let (lower, upper) = (
            crate::host::format_cpu_list(lower),
            crate::host::format_cpu_list(upper),
        );
        let batch: Vec<&ContainerStat> = batch_targets(snap, b)
            .into_iter()
            .filter(|c| c.id != victim.id)
            .collect();
        if batch.is_empty() {
            return Vec::new();
        }
        let latency: Vec<&ContainerStat> = running(snap)
            .filter(|c| c.class == Some(AgentClass::Latency))
            .collect();
        let confine = |agents: &[&ContainerStat], after: &str| -> Vec<Intent> {
            agents
                .iter()
                .filter(|c| c.cpuset_cpus != after)
                .map(|c| Intent {
                    target: c.intent_target(),
                    knob: Knob::ContainerCpusetCpus,
                    expected_before: c.cpuset_cpus.clone(),
                    after: after.to_string(),
                })
                .collect()
        };
        let mut intents = confine(&batch, &upper);
        intents.extend(confine(&latency, &lower));
        vec![Fix {
            strategy: self.name().to_string(),
            summary: format!(
                "give latency agents {} CPUs {lower} and batch agents {} CPUs {upper}",
                names(&latency),
                names(&batch)
            ),
            risk: Risk::Medium,
            metric: cpu_relief_metric(snap).0.to_string(),
            measure: cpu_relief_metric(snap).1,
            intents,
        }]
    }
}

/// Cap a runaway agent at its fair share of the host's CPUs.
pub struct CapRunaway;

impl EliminationStrategy for CapRunaway {
    fn name(&self) -> &str {
        "cap-runaway-agent"
    }
    fn handles(&self, b: &Bottleneck) -> bool {
        b.kind == BottleneckKind::RunawayAgent
    }
    fn propose(&self, b: &Bottleneck, snap: &Snapshot, _: &Context) -> Vec<Fix> {
        let Some(c) = container_of(snap, b) else {
            return Vec::new();
        };
        let agents = running(snap).count().max(1) as f64;
        let fair = (online_cpus(snap).len().max(1) as f64 / agents).max(0.1);
        // Twice the fair share: a cap on runaways, not a squeeze on busy agents.
        let cap = (fair * 2.0 * 100.0).round() / 100.0;
        if c.cpu_limit_cores.is_some_and(|limit| limit <= cap) {
            return Vec::new();
        }
        vec![Fix {
            strategy: self.name().to_string(),
            summary: format!("cap runaway agent {} at {} CPUs", c.name, cores_text(cap)),
            risk: Risk::Medium,
            metric: format!("{} CPU %", c.name),
            measure: Measure::ContainerCpuPct { id: c.id.clone() },
            intents: vec![Intent {
                target: c.intent_target(),
                knob: Knob::ContainerCpuQuota,
                expected_before: c
                    .cpu_limit_cores
                    .map(cores_text)
                    .unwrap_or_else(|| "max".into()),
                after: cores_text(cap),
            }],
        }]
    }
}

/// A container throttled by its own quota: give it half as much again.
pub struct RaiseThrottledQuota;

impl EliminationStrategy for RaiseThrottledQuota {
    fn name(&self) -> &str {
        "raise-throttled-quota"
    }
    fn handles(&self, b: &Bottleneck) -> bool {
        b.kind == BottleneckKind::ThrottledContainer
    }
    fn propose(&self, b: &Bottleneck, snap: &Snapshot, _: &Context) -> Vec<Fix> {
        let Some(c) = container_of(snap, b) else {
            return Vec::new();
        };
        let Some(limit) = c.cpu_limit_cores else {
            return Vec::new();
        };
        let cpus = online_cpus(snap).len().max(1) as f64;
        let raised = ((limit * 1.5).min(cpus) * 100.0).round() / 100.0;
        if raised <= limit {
            return Vec::new();
        }
        vec![Fix {
            strategy: self.name().to_string(),
            summary: format!(
                "raise {}'s CPU quota from {} to {} CPUs",
                c.name,
                cores_text(limit),
                cores_text(raised)
            ),
            risk: Risk::Medium,
            metric: format!("{} throttled periods per tick", c.name),
            measure: Measure::ContainerThrottledPeriods { id: c.id.clone() },
            intents: vec![Intent {
                target: c.intent_target(),
                knob: Knob::ContainerCpuQuota,
                expected_before: cores_text(limit),
                after: cores_text(raised),
            }],
        }]
    }
}

/// Give batch agents' I/O the lowest best-effort priority while I/O is saturated.
pub struct IdleBatchIo;

impl EliminationStrategy for IdleBatchIo {
    fn name(&self) -> &str {
        "batch-io-priority"
    }
    fn handles(&self, b: &Bottleneck) -> bool {
        b.kind == BottleneckKind::IoSaturation
    }
    fn propose(&self, _: &Bottleneck, snap: &Snapshot, _: &Context) -> Vec<Fix> {
        let targets: Vec<&ContainerStat> = batch_agents(snap).filter(|c| c.pid.is_some()).collect();
        let intents = main_process_intents(&targets, Knob::IoPriority, "none", "be/7");
        vec![Fix {
            strategy: self.name().to_string(),
            summary: format!(
                "lowest best-effort I/O priority for batch agents {}",
                names(&targets)
            ),
            risk: Risk::Low,
            metric: "host PSI io full avg10".to_string(),
            measure: Measure::HostPsiIoFull,
            intents,
        }]
    }
}

/// Memory pressure with the same model weights loaded many times: let KSM merge pages.
pub struct MergeMemory;

impl EliminationStrategy for MergeMemory {
    fn name(&self) -> &str {
        "ksm-merge"
    }
    fn handles(&self, b: &Bottleneck) -> bool {
        b.kind == BottleneckKind::MemoryPressure
    }
    fn propose(&self, _: &Bottleneck, snap: &Snapshot, context: &Context) -> Vec<Fix> {
        let running = snap.memory.ksm.as_ref().map(|k| k.run);
        if !context.ksm_available || running == Some(1) {
            return Vec::new();
        }
        vec![Fix {
            strategy: self.name().to_string(),
            summary: "turn on KSM so identical pages (model weights loaded twice) are merged"
                .to_string(),
            // KSM scans cost CPU and only merges MADV_MERGEABLE memory: aggressive only.
            risk: Risk::High,
            metric: "host memory used %".to_string(),
            measure: Measure::HostMemoryUsedPct,
            intents: vec![Intent {
                target: IntentTarget::HostFile {
                    path: "sys/kernel/mm/ksm/run".to_string(),
                },
                knob: Knob::HostFile {
                    path: "sys/kernel/mm/ksm/run".into(),
                },
                expected_before: running.map(|r| r.to_string()).unwrap_or_default(),
                after: "1".to_string(),
            }],
        }]
    }
}

/// A container predicted to hit its memory limit: raise the limit by a quarter.
pub struct RaiseMemoryLimit;

impl EliminationStrategy for RaiseMemoryLimit {
    fn name(&self) -> &str {
        "raise-memory-limit"
    }
    fn handles(&self, b: &Bottleneck) -> bool {
        b.kind == BottleneckKind::PredictedExhaustion
            && matches!(b.subject, Subject::Container { .. })
    }
    fn propose(&self, b: &Bottleneck, snap: &Snapshot, _: &Context) -> Vec<Fix> {
        let Some(c) = container_of(snap, b) else {
            return Vec::new();
        };
        let Some(limit) = c.mem_limit_bytes else {
            return Vec::new();
        };
        let raised = limit.saturating_add(limit / 4);
        vec![Fix {
            strategy: self.name().to_string(),
            summary: format!(
                "raise {}'s memory limit from {} MiB to {} MiB before it is reached",
                c.name,
                limit >> 20,
                raised >> 20
            ),
            risk: Risk::Medium,
            metric: format!("{} memory as % of its limit", c.name),
            measure: Measure::ContainerMemoryOfLimitPct { id: c.id.clone() },
            intents: vec![Intent {
                target: c.intent_target(),
                knob: Knob::ContainerMemoryLimit,
                expected_before: limit.to_string(),
                after: raised.to_string(),
            }],
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eliminator::built_in;
    use crate::model::Evidence;
    use crate::model::{LogicalCpu, Topology};
    use std::sync::Arc;

    fn agent(id: &str, class: AgentClass, weight: u64) -> ContainerStat {
        ContainerStat {
            id: id.into(),
            name: format!("agent-{id}"),
            state: "running".into(),
            class: Some(class),
            pid: Some(100),
            cpu_weight: Some(weight),
            cpuset_cpus: "0-3".into(),
            ..ContainerStat::default()
        }
    }

    fn host(agents: Vec<ContainerStat>) -> Snapshot {
        let mut snap = Snapshot {
            topology: Arc::new(Topology {
                cpus: (0..4)
                    .map(|id| LogicalCpu {
                        id,
                        online: true,
                        ..LogicalCpu::default()
                    })
                    .collect(),
                ..Topology::default()
            }),
            ..Snapshot::default()
        };
        snap.containers.agents = agents;
        snap
    }

    fn bottleneck(kind: BottleneckKind, subject: Subject) -> Bottleneck {
        Bottleneck {
            kind,
            subject,
            evidence: vec![Evidence {
                metric: "x".into(),
                value: 1.0,
                threshold: 0.5,
                unit: "%".into(),
            }],
            since_seq: 1,
        }
    }

    fn noisy(id: &str) -> Bottleneck {
        bottleneck(
            BottleneckKind::NoisyNeighbour,
            Subject::Container {
                id: id.into(),
                name: format!("agent-{id}"),
            },
        )
    }

    #[test]
    fn modes_gate_risks() {
        assert!(Risk::Low.allowed_in(Mode::Conservative));
        assert!(!Risk::Medium.allowed_in(Mode::Conservative));
        assert!(Risk::Medium.allowed_in(Mode::Balanced));
        assert!(!Risk::High.allowed_in(Mode::Balanced));
        assert!(Risk::High.allowed_in(Mode::Aggressive));
    }

    #[test]
    fn a_starved_latency_agent_gets_weight_policy_and_isolation_of_its_batch_neighbours_by_mode() {
        let snap = host(vec![
            agent("b", AgentClass::Batch, 1024),
            agent("l", AgentClass::Latency, 1024),
            agent("c", AgentClass::Batch, 1024),
        ]);
        let all = built_in();
        let ctx = Context::default();
        let conservative = propose_all(&all, &noisy("l"), &snap, &ctx, Mode::Conservative);
        let strategies: Vec<&str> = conservative.iter().map(|f| f.strategy.as_str()).collect();
        assert_eq!(strategies, ["batch-cpu-weight", "batch-scheduler-policy"]);
        let weight = &conservative[0].intents[0];
        assert_eq!(weight.knob, Knob::ContainerCpuShares);
        assert_eq!(
            (weight.expected_before.as_str(), weight.after.as_str()),
            ("1024", "256")
        );
        assert_eq!(conservative[1].intents[0].after, "SCHED_BATCH");
        // Every batch agent at once, never the latency agent.
        for fix in &conservative {
            let targets: Vec<String> = fix
                .intents
                .iter()
                .map(|i| format!("{:?}", i.target))
                .collect();
            assert_eq!(targets.len(), 2, "{targets:?}");
            assert!(
                targets.iter().all(|t| !t.contains("agent-l")),
                "{targets:?}"
            );
        }

        let balanced = propose_all(&all, &noisy("l"), &snap, &ctx, Mode::Balanced);
        let isolate = balanced
            .iter()
            .find(|f| f.strategy == "isolate-latency-agents")
            .expect("balanced isolates");
        let afters: Vec<&str> = isolate.intents.iter().map(|i| i.after.as_str()).collect();
        // Batch agents b and c on the upper half, latency agent l on the lower.
        assert_eq!(afters, ["2-3", "2-3", "0-1"]);
        assert_eq!(isolate.risk, Risk::Medium);
        assert!(
            isolate.summary.contains(
                "latency agents agent-l CPUs 0-1 and batch agents agent-b, agent-c CPUs 2-3"
            ),
            "{}",
            isolate.summary
        );
    }

    #[test]
    fn cpu_relief_is_judged_by_the_latency_agents_when_there_are_any() {
        let mut latency = agent("l", AgentClass::Latency, 1024);
        let only_batch = host(vec![agent("b", AgentClass::Batch, 1024)]);
        let fixes = propose_all(
            &built_in(),
            &noisy("b"),
            &only_batch,
            &Context::default(),
            Mode::Conservative,
        );
        assert_eq!(fixes[0].measure, Measure::HostPsiCpuSome);
        latency.pressure.cpu = Some(Default::default());
        let with_latency = host(vec![agent("b", AgentClass::Batch, 1024), latency]);
        let fixes = propose_all(
            &built_in(),
            &noisy("b"),
            &with_latency,
            &Context::default(),
            Mode::Conservative,
        );
        assert_eq!(fixes[0].measure, Measure::LatencyAgentsPsiCpuSome);
    }

    #[test]
    fn an_applied_weight_or_agents_already_apart_yield_nothing() {
        let mut latency = agent("l", AgentClass::Latency, 1024);
        let snap = host(vec![latency.clone(), agent("b", AgentClass::Batch, 256)]);
        let all = built_in();
        let ctx = Context::default();
        let fixes = propose_all(&all, &noisy("l"), &snap, &ctx, Mode::Balanced);
        assert!(
            fixes.iter().all(|f| f.strategy != "batch-cpu-weight"),
            "{fixes:?}"
        );
        assert!(fixes.iter().any(|f| f.strategy == "isolate-latency-agents"));
        // Already isolated: nothing left to change.
        latency.cpuset_cpus = "0-1".into();
        let mut batch = agent("b", AgentClass::Batch, 1024);
        batch.cpuset_cpus = "2-3".into();
        let snap = host(vec![latency, batch]);
        let fixes = propose_all(&all, &noisy("l"), &snap, &ctx, Mode::Balanced);
        assert!(
            fixes.iter().all(|f| f.strategy != "isolate-latency-agents"),
            "{fixes:?}"
        );
    }

    #[test]
    fn idle_policy_is_high_risk_and_runaway_cap_is_twice_the_fair_share() {
        let snap = host(vec![
            agent("b", AgentClass::Batch, 1024),
            agent("c", AgentClass::Batch, 1024),
        ]);
        let ctx = Context {
            batch_policy: SchedulerPolicy::SchedIdle,
            ..Context::default()
        };
        let all = built_in();
        let fixes = propose_all(&all, &noisy("b"), &snap, &ctx, Mode::Balanced);
        assert!(fixes.iter().all(|f| f.strategy != "batch-scheduler-policy"));
        let runaway = bottleneck(
            BottleneckKind::RunawayAgent,
            Subject::Container {
                id: "b".into(),
                name: "agent-b".into(),
            },
        );
        let fixes = propose_all(&all, &runaway, &snap, &ctx, Mode::Balanced);
        // 4 CPUs, 2 agents: fair share 2 CPUs, cap 4 — no cap below what the host has.
        assert_eq!(fixes[0].intents[0].after, "4");
    }

    #[test]
    fn throttled_and_predicted_exhaustion_raise_their_limits() {
        let mut throttled = agent("t", AgentClass::Latency, 1024);
        throttled.cpu_limit_cores = Some(0.5);
        throttled.mem_limit_bytes = Some(400 << 20);
        let snap = host(vec![throttled]);
        let subject = Subject::Container {
            id: "t".into(),
            name: "agent-t".into(),
        };
        let all = built_in();
        let ctx = Context::default();
        let fixes = propose_all(
            &all,
            &bottleneck(BottleneckKind::ThrottledContainer, subject.clone()),
            &snap,
            &ctx,
            Mode::Balanced,
        );
        assert_eq!(
            (
                fixes[0].intents[0].expected_before.as_str(),
                fixes[0].intents[0].after.as_str()
            ),
            ("0.5", "0.75")
        );
        let fixes = propose_all(
            &all,
            &bottleneck(BottleneckKind::PredictedExhaustion, subject),
            &snap,
            &ctx,
            Mode::Balanced,
        );
        assert_eq!(fixes[0].intents[0].after, (500u64 << 20).to_string());
    }

    #[test]
    fn ksm_only_where_it_exists_and_only_when_aggressive() {
        let snap = host(vec![]);
        let pressure = bottleneck(BottleneckKind::MemoryPressure, Subject::Host);
        let all = built_in();
        let without = Context::default();
        assert!(propose_all(&all, &pressure, &snap, &without, Mode::Aggressive).is_empty());
        let with = Context {
            ksm_available: true,
            ..Context::default()
        };
        assert!(propose_all(&all, &pressure, &snap, &with, Mode::Balanced).is_empty());
        let fixes = propose_all(&all, &pressure, &snap, &with, Mode::Aggressive);
        assert_eq!(fixes[0].intents[0].after, "1");
    }
}
