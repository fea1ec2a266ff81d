//! NUMA imbalance: an agent whose memory sits away from the CPUs it runs on.
//!
//! A container's CPUs are the nodes of its cpuset CPUs (an empty cpuset means every CPU, so
//! every node); its memory per node comes from its memory cgroup's memory.numa_stat. Two
//! shapes are worth a fix:
//!
//! - *remote*: half or more of its memory is on nodes none of its CPUs are on, so most of its
//!   memory accesses cross the interconnect;
//! - *spread*: its CPUs span nodes while nearly all its memory is on one node, so its threads
//!   on the other nodes pay remote latency for everything.
//!
//! [`ConfineToNode`] fixes both the same way: CPUs and memory nodes of the container on the
//! node that already holds most of its memory (the cheapest place to converge: the least
//! memory moves), and the main process's pages migrated there.

use super::detect::{Condition, Thresholds, evidence};
use super::strategy::{Context, EliminationStrategy};
use crate::host::{format_cpu_list, parse_cpu_list};
use crate::model::Knob;
use crate::model::{Bottleneck, BottleneckKind, Evidence, Subject};
use crate::model::{ContainerStat, Snapshot, Topology};
use crate::model::{Fix, Intent, IntentTarget, Measure, Risk};

const MIB: f64 = 1024.0 * 1024.0;

/// Where one container's CPUs and memory are, by node.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// Nodes of the container's CPUs, ascending.
    pub cpu_nodes: Vec<u32>,
    /// Bytes on each node (index = node id).
    pub bytes_per_node: Vec<u64>,
    pub total_bytes: u64,
}

impl Placement {
    /// Percent of the memory on nodes outside `cpu_nodes`.
    pub fn remote_pct(&self) -> f64 {
        let remote: u64 = self
            .nodes_with_bytes()
            .filter(|(node, _)| !self.cpu_nodes.contains(node))
            .map(|(_, bytes)| bytes)
            .sum();
        percent(remote, self.total_bytes)
    }

    /// The node holding the most memory (the lowest id on a tie) and its percent of it.
    pub fn home(&self) -> Option<(u32, f64)> {
        self.nodes_with_bytes()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
            .map(|(node, bytes)| (node, percent(bytes, self.total_bytes)))
    }

    pub fn spans_nodes(&self) -> bool {
        self.cpu_nodes.len() > 1
    }

    /// The nodes holding any of the memory, as a node list ("0-1").
    pub fn memory_nodes_text(&self) -> String {
        let nodes: Vec<u32> = self
            .nodes_with_bytes()
            .filter(|(_, bytes)| *bytes > 0)
            .map(|(node, _)| node)
            .collect();
        format_cpu_list(&nodes)
    }

    fn nodes_with_bytes(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.bytes_per_node
            .iter()
            .enumerate()
            .filter_map(|(node, bytes)| Some((u32::try_from(node).ok()?, *bytes)))
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// The container's placement, `None` when its per-node memory is unknown (or zero).
pub fn placement(topology: &Topology, c: &ContainerStat) -> Option<Placement> {
    let total_bytes: u64 = c.numa_memory_bytes.iter().sum();
    if total_bytes == 0 {
        return None;
    }
    Some(Placement {
        cpu_nodes: cpu_nodes(topology, &c.cpuset_cpus),
        bytes_per_node: c.numa_memory_bytes.clone(),
        total_bytes,
    })
}

/// Nodes of the CPUs in `cpuset` ("" = every CPU, so every node).
pub fn cpu_nodes(topology: &Topology, cpuset: &str) -> Vec<u32> {
    let mut nodes: Vec<u32> = if cpuset.trim().is_empty() {
        topology.nodes.iter().map(|n| n.id).collect()
    } else {
        let cpus = parse_cpu_list(cpuset);
        topology
            .cpus
            .iter()
            .filter(|cpu| cpus.contains(&cpu.id))
            .map(|cpu| cpu.node)
            .collect()
    };
    nodes.sort_unstable();
    nodes.dedup();
    nodes
}

/// The container's memory share off its CPUs' nodes, percent; `None` without per-node data.
pub fn remote_memory_pct(topology: &Topology, c: &ContainerStat) -> Option<f64> {
    placement(topology, c).map(|p| p.remote_pct())
}

fn is_multi_node(snap: &Snapshot) -> bool {
    snap.topology.nodes.len() > 1
}

/// Containers whose memory is mostly remote, or whose CPUs span nodes while their memory
/// sits on one. Only on hosts with more than one node, only for running containers with at
/// least `numa_min_memory_mib` of known per-node memory.
pub fn numa_imbalance(snap: &Snapshot, t: &Thresholds) -> Vec<Condition> {
    if !is_multi_node(snap) {
        return Vec::new();
    }
    snap.containers
        .agents
        .iter()
        .filter(|c| c.state == "running")
        .filter_map(|c| {
            let p = placement(&snap.topology, c)?;
            let total_mib = p.total_bytes as f64 / MIB;
            if total_mib < t.numa_min_memory_mib {
                return None;
            }
            let mut evidence = imbalance_evidence(&p, t);
            if evidence.is_empty() {
                return None;
            }
            evidence.extend(per_node_evidence(&p, t));
            Some(Condition {
                kind: BottleneckKind::NumaImbalance,
                subject: Subject::Container {
                    id: c.id.clone(),
                    name: c.name.clone(),
                },
                evidence,
            })
        })
        .collect()
}

/// The figures that crossed a threshold: remote share, or one node's share while the CPUs
/// span nodes. Empty when neither holds.
fn imbalance_evidence(p: &Placement, t: &Thresholds) -> Vec<Evidence> {
    let mut found = Vec::new();
    let remote = p.remote_pct();
    if remote >= t.numa_remote_pct {
        found.push(evidence(
            "numa_remote_memory_pct",
            remote,
            t.numa_remote_pct,
            "%",
        ));
    }
    if p.spans_nodes()
        && let Some((node, share)) = p.home()
        && share >= t.numa_one_node_pct
    {
        found.push(evidence(
            format!("memory_on_node{node}_pct"),
            share,
            t.numa_one_node_pct,
            "%",
        ));
    }
    found
}

/// MiB on each node, against the floor below which a container is not judged.
fn per_node_evidence<'a>(
    p: &'a Placement,
    t: &'a Thresholds,
) -> impl Iterator<Item = Evidence> + 'a {
    p.nodes_with_bytes().map(|(node, bytes)| {
        evidence(
            format!("memory_node{node}_mib"),
            bytes as f64 / MIB,
            t.numa_min_memory_mib,
            "MiB",
        )
    })
}

/// Confine a NUMA-imbalanced container to the node holding most of its memory: its cpuset
/// CPUs to that node's online CPUs, its cpuset memory nodes to that node (set before the
/// migration, since the kernel only moves pages onto nodes the cpuset allows), then its main
/// process's pages migrated there. Medium risk: the container loses the CPUs of the other
/// nodes.
pub struct ConfineToNode;

impl EliminationStrategy for ConfineToNode {
    fn name(&self) -> &str {
        "confine-to-numa-node"
    }

    fn handles(&self, b: &Bottleneck) -> bool {
        b.kind == BottleneckKind::NumaImbalance && matches!(b.subject, Subject::Container { .. })
    }

    fn propose(&self, b: &Bottleneck, snap: &Snapshot, context: &Context) -> Vec<Fix> {
        if !context.numa_allowed || !is_multi_node(snap) {
            return Vec::new();
        }
        let Subject::Container { id, .. } = &b.subject else {
            return Vec::new();
        };
        let Some(c) = snap
            .containers
            .agents
            .iter()
            .find(|c| &c.id == id && c.state == "running")
        else {
            return Vec::new();
        };
        confine(self.name(), snap, c).into_iter().collect()
    }
}

/// The fix for one container, `None` when it is already confined or nothing is known.
fn confine(strategy: &str, snap: &Snapshot, c: &ContainerStat) -> Option<Fix> {
    let p = placement(&snap.topology, c)?;
    let (home, _) = p.home()?;
    let cpus = node_online_cpus(&snap.topology, home);
    if cpus.is_empty() {
        return None;
    }
    let cpus = format_cpu_list(&cpus);
    let mems = home.to_string();
    let target = c.intent_target();
    let mut intents = Vec::new();
    if c.cpuset_cpus != cpus {
        intents.push(intent(
            target.clone(),
            Knob::ContainerCpusetCpus,
            &c.cpuset_cpus,
            &cpus,
        ));
    }
    if c.cpuset_mems != mems {
        intents.push(intent(
            target,
            Knob::ContainerCpusetMems,
            &c.cpuset_mems,
            &mems,
        ));
    }
    let memory_nodes = p.memory_nodes_text();
    if let Some(pid) = c.pid
        && memory_nodes != mems
    {
        let process = IntentTarget::ContainerProcess {
            container: c.id.clone(),
            name: c.name.clone(),
            pid,
        };
        intents.push(intent(process, Knob::MemoryNodes, &memory_nodes, &mems));
    }
    if intents.is_empty() {
        return None;
    }
    Some(Fix {
        strategy: strategy.to_string(),
        summary: format!(
            "confine {} to NUMA node {home} (CPUs {cpus}) and move its memory there",
            c.name
        ),
        risk: Risk::Medium,
        metric: format!("{} memory off its CPUs' nodes %", c.name),
        measure: Measure::ContainerRemoteMemoryPct { id: c.id.clone() },
        intents,
    })
}

fn intent(target: IntentTarget, knob: Knob, expected_before: &str, after: &str) -> Intent {
    Intent {
        target,
        knob,
        expected_before: expected_before.to_string(),
        after: after.to_string(),
    }
}

/// Online CPUs of `node`, ascending.
fn node_online_cpus(topology: &Topology, node: u32) -> Vec<u32> {
    let mut cpus: Vec<u32> = topology
        .cpus
        .iter()
        .filter(|cpu| cpu.online && cpu.node == node)
        .map(|cpu| cpu.id)
        .collect();
    cpus.sort_unstable();
    cpus
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::eliminator::built_in;
    use crate::eliminator::strategy::propose_all;
    use crate::model::Mode;
    use crate::model::{LogicalCpu, NumaNode};

    const MIB_BYTES: u64 = 1 << 20;

    /// Two nodes: CPUs 0-3 on node 0, 4-7 on node 1.
    fn two_nodes() -> Topology {
        Topology {
            cpus: (0..8)
                .map(|id| LogicalCpu {
                    id,
                    online: true,
                    node: id / 4,
                    ..LogicalCpu::default()
                })
                .collect(),
            nodes: (0..2)
                .map(|id| NumaNode {
                    id,
                    cpus: (id * 4..id * 4 + 4).collect(),
                    ..NumaNode::default()
                })
                .collect(),
            ..Topology::default()
        }
    }

    fn one_node() -> Topology {
        let mut topology = two_nodes();
        topology.cpus.iter_mut().for_each(|cpu| cpu.node = 0);
        topology.nodes.truncate(1);
        topology
    }

    fn agent(cpuset: &str, mib_per_node: &[u64]) -> ContainerStat {
        ContainerStat {
            id: "c1".into(),
            name: "agent-1".into(),
            state: "running".into(),
            pid: Some(4242),
            cpuset_cpus: cpuset.into(),
            numa_memory_bytes: mib_per_node.iter().map(|m| m * MIB_BYTES).collect(),
            ..ContainerStat::default()
        }
    }

    fn snap(topology: Topology, agents: Vec<ContainerStat>) -> Snapshot {
        let mut snap = Snapshot {
            topology: Arc::new(topology),
            ..Snapshot::default()
        };
        snap.containers.agents = agents;
        snap
    }

    fn metrics(condition: &Condition) -> Vec<(&str, f64)> {
        condition
            .evidence
            .iter()
            .map(|e| (e.metric.as_str(), e.value))
            .collect()
    }

    fn bottleneck_for(condition: &Condition) -> Bottleneck {
        Bottleneck {
            kind: condition.kind,
            subject: condition.subject.clone(),
            evidence: condition.evidence.clone(),
            since_seq: 1,
        }
    }

    #[test]
    fn mostly_remote_memory_is_an_imbalance_with_numbers() {
        // CPUs on node 0, 300 of 400 MiB on node 1.
        let s = snap(two_nodes(), vec![agent("0-3", &[100, 300])]);
        let found = numa_imbalance(&s, &Thresholds::default());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].kind, BottleneckKind::NumaImbalance);
        assert_eq!(
            metrics(&found[0]),
            [
                ("numa_remote_memory_pct", 75.0),
                ("memory_node0_mib", 100.0),
                ("memory_node1_mib", 300.0)
            ]
        );
    }

    #[test]
    fn cpus_spanning_nodes_with_memory_on_one_is_an_imbalance() {
        // No cpuset: every CPU, both nodes; 90 % of the memory on node 1.
        let s = snap(two_nodes(), vec![agent("", &[10, 90])]);
        let found = numa_imbalance(&s, &Thresholds::default());
        assert_eq!(found.len(), 1);
        assert_eq!(metrics(&found[0])[0], ("memory_on_node1_pct", 90.0));
    }

    #[test]
    fn under_the_thresholds_nothing_is_found() {
        let t = Thresholds::default();
        let cases = [
            // 40 % remote only.
            agent("0-3", &[60, 40]),
            // Spans nodes, 70 % on one: under 80 %.
            agent("", &[70, 30]),
            // Entirely remote, but only 32 MiB in all.
            agent("0-3", &[0, 32]),
            // Unknown per-node memory.
            agent("0-3", &[]),
        ];
        for c in cases {
            let found = numa_imbalance(&snap(two_nodes(), vec![c.clone()]), &t);
            assert!(found.is_empty(), "{:?}: {found:?}", c.numa_memory_bytes);
        }
        let mut stopped = agent("0-3", &[0, 500]);
        stopped.state = "exited".into();
        assert!(numa_imbalance(&snap(two_nodes(), vec![stopped]), &t).is_empty());
    }

    #[test]
    fn a_single_node_host_never_has_an_imbalance() {
        let s = snap(one_node(), vec![agent("0-3", &[0, 500]), agent("", &[500])]);
        assert!(numa_imbalance(&s, &Thresholds::default()).is_empty());
        let condition = Condition {
            kind: BottleneckKind::NumaImbalance,
            subject: Subject::Container {
                id: "c1".into(),
                name: "agent-1".into(),
            },
            evidence: Vec::new(),
        };
        let fixes = ConfineToNode.propose(&bottleneck_for(&condition), &s, &Context::default());
        assert!(fixes.is_empty());
    }

    #[test]
    fn the_fix_confines_to_the_node_holding_the_memory() {
        let s = snap(two_nodes(), vec![agent("0-3", &[100, 300])]);
        let found = numa_imbalance(&s, &Thresholds::default());
        let fixes = propose_all(
            &built_in(),
            &bottleneck_for(&found[0]),
            &s,
            &Context::default(),
            Mode::Balanced,
        );
        assert_eq!(fixes.len(), 1, "{fixes:?}");
        let fix = &fixes[0];
        assert_eq!(fix.strategy, "confine-to-numa-node");
        assert_eq!(fix.risk, Risk::Medium);
        assert_eq!(
            fix.measure,
            Measure::ContainerRemoteMemoryPct { id: "c1".into() }
        );
        let container = IntentTarget::Container {
            id: "c1".into(),
            name: "agent-1".into(),
        };
        assert_eq!(
            fix.intents,
            vec![
                intent(container.clone(), Knob::ContainerCpusetCpus, "0-3", "4-7"),
                intent(container, Knob::ContainerCpusetMems, "", "1"),
                intent(
                    IntentTarget::ContainerProcess {
                        container: "c1".into(),
                        name: "agent-1".into(),
                        pid: 4242,
                    },
                    Knob::MemoryNodes,
                    "0-1",
                    "1"
                ),
            ]
        );
        // Medium risk: not in conservative mode.
        let conservative = propose_all(
            &built_in(),
            &bottleneck_for(&found[0]),
            &s,
            &Context::default(),
            Mode::Conservative,
        );
        assert!(conservative.is_empty());
    }

    #[test]
    fn numa_not_allowed_means_no_fix() {
        let s = snap(two_nodes(), vec![agent("0-3", &[100, 300])]);
        let found = numa_imbalance(&s, &Thresholds::default());
        let context = Context {
            numa_allowed: false,
            ..Context::default()
        };
        assert!(
            ConfineToNode
                .propose(&bottleneck_for(&found[0]), &s, &context)
                .is_empty()
        );
    }

    #[test]
    fn an_already_confined_container_gets_no_fix() {
        let mut c = agent("4-7", &[0, 300]);
        c.cpuset_mems = "1".into();
        let s = snap(two_nodes(), vec![c]);
        let condition = Condition {
            kind: BottleneckKind::NumaImbalance,
            subject: Subject::Container {
                id: "c1".into(),
                name: "agent-1".into(),
            },
            evidence: Vec::new(),
        };
        let fixes = ConfineToNode.propose(&bottleneck_for(&condition), &s, &Context::default());
        assert!(fixes.is_empty(), "{fixes:?}");
    }

    #[test]
    fn the_measure_is_the_remote_share() {
        let s = snap(two_nodes(), vec![agent("0-3", &[100, 300])]);
        let measure = Measure::ContainerRemoteMemoryPct { id: "c1".into() };
        assert_eq!(measure.value(&s), Some(75.0));
        let confined = snap(two_nodes(), vec![agent("4-7", &[100, 300])]);
        assert_eq!(measure.value(&confined), Some(25.0));
        let unknown = snap(two_nodes(), vec![agent("0-3", &[])]);
        assert_eq!(measure.value(&unknown), None);
        assert_eq!(
            Measure::ContainerRemoteMemoryPct { id: "gone".into() }.value(&s),
            None
        );
    }

    #[test]
    fn cpu_nodes_follow_the_cpuset() {
        let topology = two_nodes();
        assert_eq!(cpu_nodes(&topology, ""), vec![0, 1]);
        assert_eq!(cpu_nodes(&topology, "0-1"), vec![0]);
        assert_eq!(cpu_nodes(&topology, "3-4"), vec![0, 1]);
        assert_eq!(cpu_nodes(&topology, "6"), vec![1]);
    }
}
