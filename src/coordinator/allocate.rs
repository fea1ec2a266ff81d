//! The allocator: a pure function from the topology, the agents' declarations and the
//! config to a plan. No I/O, so it is tested exhaustively on fixture and random topologies.
//!
//! The model is Kubernetes' static CPU manager with `single-numa-node` placement:
//! - reserved CPUs are never given away;
//! - exclusive agents, higher priority first, get whole physical cores (SMT siblings
//!   together where the count allows) on one NUMA node, the fullest node that still fits
//!   (so the emptier ones stay whole for bigger asks); their memory nodes follow their CPUs;
//! - everyone else shares what is left, never fewer than `min_shared_cpus`, weighted by
//!   priority (once anything is declared or reserved; a host that declares nothing is left
//!   as it is), with a memory limit a headroom above any declared need;
//! - what does not fit is pending, with the reason in words, and runs in the shared pool.

use std::collections::{BTreeMap, BTreeSet};

use super::config::CoordinatorConfig;
use crate::model::{AllocationState, Need, Topology};

/// One agent as the allocator sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: String,
    pub name: String,
    pub priority: Option<i32>,
    pub need: Option<Need>,
    /// Why the declaration was refused (it is then misdeclared).
    pub need_error: Option<String>,
}

/// What one agent gets.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub state: AllocationState,
    /// Empty means every CPU (nothing is reserved or exclusive, so no cpuset is needed).
    pub cpus: Vec<u32>,
    /// Empty means every node.
    pub mems: Vec<u32>,
    pub cpu_shares: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub reserved: Vec<u32>,
    pub shared: Vec<u32>,
    /// One per request, in the requests' order.
    pub grants: Vec<Grant>,
}

/// cpu.shares at the default priority (5): Docker's default weight.
const SHARES_AT_DEFAULT: u64 = 1024;
const DEFAULT_PRIORITY: i64 = 5;

/// CPU weight proportional to priority: 1024 at priority 5, 2048 at 10, 204 at 1 (0 and
/// below count as 1; cgroup v1's bounds are 2..=262144).
pub fn shares_for(priority: i32) -> u64 {
    let p = i64::from(priority).clamp(1, 1280) as u64;
    (p * SHARES_AT_DEFAULT / DEFAULT_PRIORITY as u64).clamp(2, 262_144)
}

/// What the allocator decided for one agent: its state, its exclusive CPUs, the memory it
/// claimed.
type Decided = (AllocationState, Vec<u32>, Option<u64>);

/// One physical core's online threads on a node.
struct Core {
    node: u32,
    threads: Vec<u32>,
}

pub fn allocate(topology: &Topology, requests: &[Request], config: &CoordinatorConfig) -> Plan {
    let online: BTreeSet<u32> = topology
        .cpus
        .iter()
        .filter(|c| c.online)
        .map(|c| c.id)
        .collect();
    if online.is_empty() {
        // Nothing to plan with: every declaration waits, and nothing is changed.
        let why = "the CPU topology could not be read; nothing is planned".to_string();
        let grants = requests
            .iter()
            .map(|_| Grant {
                state: AllocationState::Pending { why: why.clone() },
                cpus: vec![],
                mems: vec![],
                cpu_shares: None,
                memory_limit_bytes: None,
            })
            .collect();
        return Plan {
            reserved: vec![],
            shared: vec![],
            grants,
        };
    }
    let reserved: BTreeSet<u32> = config
        .reserved()
        .into_iter()
        .filter(|c| online.contains(c))
        .collect();
    let mut free: BTreeSet<u32> = online.difference(&reserved).copied().collect();
    let all_reserved = free.is_empty();
    if all_reserved {
        // Never an empty shared pool: the reservation gives way, and nothing is exclusive.
        free = online.clone();
    }
    let cores = cores_of(topology);
    let memory_total: u64 = topology
        .nodes
        .iter()
        .map(|n| n.mem_total_kb.saturating_mul(1024))
        .sum();
    let mut memory_left = memory_total;
    let node_ids: Vec<u32> = topology.nodes.iter().map(|n| n.id).collect();

    let mut order: Vec<usize> = (0..requests.len()).collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (&requests[a], &requests[b]);
        rb.priority
            .unwrap_or(0)
            .cmp(&ra.priority.unwrap_or(0))
            .then_with(|| ra.name.cmp(&rb.name))
            .then_with(|| ra.id.cmp(&rb.id))
    });
    let mut states: Vec<Option<Decided>> = vec![None; requests.len()];
    for i in order {
        let r = &requests[i];
        let (state, cpus, memory) = match (&r.need_error, &r.need) {
            (Some(why), _) => (
                AllocationState::Misdeclared { why: why.clone() },
                vec![],
                None,
            ),
            (None, None) => (AllocationState::Shared, vec![], None),
            (None, Some(need)) => {
                let asked = Asked {
                    need,
                    online: online.len(),
                    node_ids: &node_ids,
                    memory_total,
                };
                match asked.misdeclared() {
                    Some(why) => (AllocationState::Misdeclared { why }, vec![], None),
                    None => grant(
                        need,
                        &cores,
                        &mut free,
                        &mut memory_left,
                        config,
                        all_reserved,
                    ),
                }
            }
        };
        states[i] = Some((state, cpus, memory));
    }

    // Weights by priority only once the operator coordinates anything (a declaration or a
    // reservation): a host that declares nothing is left as it is.
    let coordinating = !reserved.is_empty() || requests.iter().any(|r| r.need.is_some());
    let shared: Vec<u32> = free.iter().copied().collect();
    let shared_is_everything = shared.len() == online.len();
    let node_of: BTreeMap<u32, u32> = topology.cpus.iter().map(|c| (c.id, c.node)).collect();
    let grants = requests
        .iter()
        .zip(states)
        .map(|(r, state)| {
            let (state, exclusive_cpus, memory) =
                state.unwrap_or((AllocationState::Shared, vec![], None));
            let (cpus, mems) = if state == AllocationState::Exclusive {
                let mems: BTreeSet<u32> = exclusive_cpus
                    .iter()
                    .filter_map(|c| node_of.get(c))
                    .copied()
                    .collect();
                (exclusive_cpus, mems.into_iter().collect())
            } else if shared_is_everything {
                (vec![], vec![])
            } else {
                (shared.clone(), vec![])
            };
            let memory_limit_bytes =
                memory.map(|m| m.saturating_mul(100 + u64::from(config.memory_headroom_pct)) / 100);
            Grant {
                state,
                cpus,
                mems,
                cpu_shares: r.priority.filter(|_| coordinating).map(shares_for),
                memory_limit_bytes,
            }
        })
        .collect();
    Plan {
        reserved: reserved.into_iter().collect(),
        shared,
        grants,
    }
}

/// A declaration checked against the host: what makes no sense here at all.
struct Asked<'a> {
    need: &'a Need,
    online: usize,
    node_ids: &'a [u32],
    memory_total: u64,
}

impl Asked<'_> {
    fn misdeclared(&self) -> Option<String> {
        let need = self.need;
        if let Some(cpus) = need.cpus
            && cpus > self.online as f64
        {
            return Some(format!(
                "sutazai.cpus = {cpus} is more than the host's {} online CPUs",
                self.online
            ));
        }
        if let Some(node) = need.numa
            && !self.node_ids.contains(&node)
        {
            return Some(format!(
                "sutazai.numa = {node}: the host has nodes {}",
                crate::host::format_cpu_list(self.node_ids)
            ));
        }
        if let Some(bytes) = need.memory_bytes
            && self.memory_total > 0
            && bytes > self.memory_total
        {
            return Some(format!(
                "sutazai.memory = {} is more than the host's {}",
                gib(bytes),
                gib(self.memory_total)
            ));
        }
        None
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Memory first (it is claimed only once the CPUs are found too), then the CPUs.
fn grant(
    need: &Need,
    cores: &[Core],
    free: &mut BTreeSet<u32>,
    memory_left: &mut u64,
    config: &CoordinatorConfig,
    all_reserved: bool,
) -> Decided {
    let pending = |why: String| (AllocationState::Pending { why }, vec![], None);
    if let Some(bytes) = need.memory_bytes
        && bytes > *memory_left
    {
        return pending(format!(
            "wants {} of memory; {} is left undeclared by agents of higher priority",
            gib(bytes),
            gib(*memory_left)
        ));
    }
    let mut cpus = Vec::new();
    if let Some(n) = need.exclusive_cpus() {
        if all_reserved {
            return pending("reserved_cpus leaves no CPU to give".to_string());
        }
        let left = free.len().saturating_sub(n);
        if left < config.min_shared_cpus {
            return pending(format!(
                "wants {n} exclusive CPUs; that would leave the shared pool {left} of {} free \
                 (min_shared_cpus = {})",
                free.len(),
                config.min_shared_cpus
            ));
        }
        match pick(cores, free, n, need.numa) {
            Ok(picked) => cpus = picked,
            Err(why) => return pending(why),
        }
        for cpu in &cpus {
            free.remove(cpu);
        }
    }
    if let Some(bytes) = need.memory_bytes {
        *memory_left -= bytes;
    }
    let state = if cpus.is_empty() {
        AllocationState::Shared
    } else {
        AllocationState::Exclusive
    };
    (state, cpus, need.memory_bytes)
}

/// Online CPUs grouped by physical core (package, core id), in CPU order.
fn cores_of(topology: &Topology) -> Vec<Core> {
    let mut by_core: BTreeMap<(u32, u32, u32), Vec<u32>> = BTreeMap::new();
    for cpu in topology.cpus.iter().filter(|c| c.online) {
        by_core
            .entry((cpu.node, cpu.package, cpu.core))
            .or_default()
            .push(cpu.id);
    }
    let mut cores: Vec<Core> = by_core
        .into_iter()
        .map(|((node, _, _), mut threads)| {
            threads.sort_unstable();
            Core { node, threads }
        })
        .collect();
    cores.sort_by_key(|c| c.threads.first().copied());
    cores
}

/// `n` free CPUs for an exclusive agent: on its declared node, else on the fullest node that
/// fits; across nodes only when `n` is more than any node has.
fn pick(
    cores: &[Core],
    free: &BTreeSet<u32>,
    n: usize,
    node: Option<u32>,
) -> Result<Vec<u32>, String> {
    let mut free_on: BTreeMap<u32, usize> = BTreeMap::new();
    let mut size_of: BTreeMap<u32, usize> = BTreeMap::new();
    for core in cores {
        *size_of.entry(core.node).or_default() += core.threads.len();
        let f = free_on.entry(core.node).or_default();
        *f += core.threads.iter().filter(|t| free.contains(t)).count();
    }
    let fits = |id: &u32| free_on.get(id).copied().unwrap_or(0) >= n;
    if let Some(node) = node {
        if fits(&node) {
            return Ok(take_on_node(cores, free, n, node));
        }
        return Err(format!(
            "wants {n} exclusive CPUs on node {node}; {} free there",
            free_on.get(&node).copied().unwrap_or(0)
        ));
    }
    // The fullest node that still fits, lowest id on a tie.
    if let Some((&best, _)) = free_on
        .iter()
        .filter(|(id, _)| fits(id))
        .min_by_key(|&(&id, &f)| (f, id))
    {
        return Ok(take_on_node(cores, free, n, best));
    }
    let largest_node = size_of.values().copied().max().unwrap_or(0);
    let total_free: usize = free_on.values().sum();
    if n > largest_node && total_free >= n {
        // Too big for any node: the fewest nodes, most free first.
        let mut nodes: Vec<(u32, usize)> = free_on.iter().map(|(&id, &f)| (id, f)).collect();
        nodes.sort_by_key(|&(id, f)| (std::cmp::Reverse(f), id));
        let mut taken = Vec::new();
        for (id, f) in nodes {
            let want = (n - taken.len()).min(f);
            let more = take_on_node(cores, free, want, id);
            taken.extend(more);
            if taken.len() == n {
                break;
            }
        }
        taken.sort_unstable();
        return Ok(taken);
    }
    let on_each: Vec<String> = free_on
        .iter()
        .map(|(id, f)| format!("{f} on node {id}"))
        .collect();
    Err(format!(
        "wants {n} exclusive CPUs on one node; free: {}",
        on_each.join(", ")
    ))
}

/// `n` free CPUs on `node` (which has them): whole free cores first, the remainder from a
/// core already split if there is one, else from a whole core.
fn take_on_node(cores: &[Core], free: &BTreeSet<u32>, n: usize, node: u32) -> Vec<u32> {
    let on_node: Vec<(Vec<u32>, bool)> = cores
        .iter()
        .filter(|c| c.node == node)
        .map(|c| {
            let f: Vec<u32> = c
                .threads
                .iter()
                .copied()
                .filter(|t| free.contains(t))
                .collect();
            let whole = f.len() == c.threads.len();
            (f, whole)
        })
        .filter(|(f, _)| !f.is_empty())
        .collect();
    let mut taken = Vec::with_capacity(n);
    let mut used = vec![false; on_node.len()];
    for (i, (threads, whole)) in on_node.iter().enumerate() {
        if *whole && threads.len() <= n - taken.len() {
            taken.extend(threads);
            used[i] = true;
        }
    }
    // The remainder: split cores first (their other threads are gone already), then whole.
    for want_whole in [false, true] {
        for (i, (threads, whole)) in on_node.iter().enumerate() {
            if taken.len() == n {
                break;
            }
            if used[i] || *whole != want_whole {
                continue;
            }
            let want = (n - taken.len()).min(threads.len());
            taken.extend(&threads[..want]);
            used[i] = true;
        }
    }
    taken.sort_unstable();
    taken
}
