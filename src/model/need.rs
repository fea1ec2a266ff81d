//! What an agent declares it needs (cores, exclusivity, memory, a NUMA node), and what the
//! coordinator allocated to it. The declaration is parsed here from label-like key/value
//! pairs, so Docker labels and config entries mean the same; a value that makes no sense is
//! an error naming its key, and the agent is shown as misdeclared, never silently dropped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The keys of a declaration (Docker labels; the config uses the part after the dot).
pub const CPUS_KEY: &str = "sutazai.cpus";
pub const EXCLUSIVE_KEY: &str = "sutazai.exclusive";
pub const MEMORY_KEY: &str = "sutazai.memory";
pub const NUMA_KEY: &str = "sutazai.numa";
pub const GPU_MEMORY_KEY: &str = "sutazai.gpu_memory";

/// The most CPUs one agent may ask for: more than any host has is a typo, not a need.
const MAX_CPUS: f64 = 4096.0;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Need {
    /// CPUs asked for; a whole number may be given whole cores of its own.
    pub cpus: Option<f64>,
    /// Cores of its own, not shared with anyone.
    pub exclusive: bool,
    pub memory_bytes: Option<u64>,
    /// The NUMA node to run on; `None` means any.
    pub numa: Option<u32>,
    /// Recorded and shown: this host has no GPU to give.
    pub gpu_memory_bytes: Option<u64>,
}

impl Need {
    /// The whole CPUs an exclusive need asks for.
    pub fn exclusive_cpus(&self) -> Option<usize> {
        self.cpus.filter(|_| self.exclusive).map(|c| c as usize)
    }

    /// "2 exclusive CPUs, 4.0 GiB, node 0" for panes and reasons.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        match (self.cpus, self.exclusive) {
            (Some(cpus), true) => parts.push(format!("{cpus} exclusive CPUs")),
            (Some(cpus), false) => parts.push(format!("{cpus} shared CPUs")),
            (None, _) => {}
        }
        if let Some(bytes) = self.memory_bytes {
            parts.push(format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64));
        }
        if let Some(node) = self.numa {
            parts.push(format!("node {node}"));
        }
        if let Some(bytes) = self.gpu_memory_bytes {
            parts.push(format!("{} MiB GPU (none here)", bytes >> 20));
        }
        if parts.is_empty() {
            "nothing declared".to_string()
        } else {
            parts.join(", ")
        }
    }
}

/// The declaration in `labels` (keys as in [`CPUS_KEY`] and the others); `Ok(None)` when
/// nothing is declared. Exclusivity defaults to true for a latency agent asking for whole
/// CPUs, false otherwise.
pub fn need_from_labels(
    labels: &BTreeMap<String, String>,
    latency: bool,
) -> Result<Option<Need>, String> {
    let get = |key: &str| labels.get(key).map(|v| v.trim());
    let keys = [
        CPUS_KEY,
        EXCLUSIVE_KEY,
        MEMORY_KEY,
        NUMA_KEY,
        GPU_MEMORY_KEY,
    ];
    if keys.iter().all(|k| get(k).is_none()) {
        return Ok(None);
    }
    let cpus = get(CPUS_KEY).map(parse_cpus).transpose()?;
    let whole = cpus.is_some_and(|c| c.fract() == 0.0);
    let exclusive = match get(EXCLUSIVE_KEY) {
        None => whole && latency,
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => true,
            "false" | "no" | "0" => false,
            _ => return Err(format!("{EXCLUSIVE_KEY} = {v:?}: give true or false")),
        },
    };
    if exclusive && !whole {
        return Err(format!(
            "{EXCLUSIVE_KEY} = true needs a whole number in {CPUS_KEY} (got {})",
            get(CPUS_KEY).unwrap_or("nothing")
        ));
    }
    let memory_bytes = get(MEMORY_KEY)
        .map(|v| parse_size(v).map_err(|why| format!("{MEMORY_KEY} = {v:?}: {why}")))
        .transpose()?;
    let gpu_memory_bytes = get(GPU_MEMORY_KEY)
        .map(|v| parse_size(v).map_err(|why| format!("{GPU_MEMORY_KEY} = {v:?}: {why}")))
        .transpose()?;
    let numa = match get(NUMA_KEY) {
        None => None,
        Some(v) if v.eq_ignore_ascii_case("any") => None,
        Some(v) => Some(
            v.parse::<u32>()
                .map_err(|_| format!("{NUMA_KEY} = {v:?}: give a node number or any"))?,
        ),
    };
    Ok(Some(Need {
        cpus,
        exclusive,
        memory_bytes,
        numa,
        gpu_memory_bytes,
    }))
}

/// A CPU count any agent may ask for: above 0, at most `MAX_CPUS`.
fn cpus_in_range(cpus: f64) -> bool {
    cpus.is_finite() && cpus > 0.0 && cpus <= MAX_CPUS
}

fn parse_cpus(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(cpus) if cpus_in_range(cpus) => Ok(cpus),
        _ => Err(format!(
            "{CPUS_KEY} = {value:?}: give a number of CPUs above 0 and at most {MAX_CPUS}"
        )),
    }
}

/// "512m", "4g", "4GiB", "1073741824": bytes. Binary units, as Docker reads them.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let digits = lower
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits);
    let shift = match unit.trim() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err("not a size: give bytes or k, m, g, t (e.g. 512m, 4g)".to_string()),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| "not a size: give bytes or k, m, g, t (e.g. 512m, 4g)".to_string())?;
    let bytes = value * (1u64 << shift) as f64;
    if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err("out of range".to_string());
    }
    Ok(bytes as u64)
}

/// Checks a need wherever it comes from (labels, the API): CPUs within range, exclusive
/// only with whole CPUs.
pub fn check_need(need: &Need) -> Result<(), String> {
    if let Some(cpus) = need.cpus
        && !cpus_in_range(cpus)
    {
        return Err(format!(
            "cpus = {cpus}: give a number above 0 and at most {MAX_CPUS}"
        ));
    }
    if need.exclusive && !need.cpus.is_some_and(|c| c.fract() == 0.0) {
        return Err("exclusive needs a whole number of CPUs".to_string());
    }
    Ok(())
}

/// A declaration registered through the API (`POST /api/agents`) for an agent named by its
/// container name or id; it takes the place of the agent's labels.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Declaration {
    pub agent: String,
    pub need: Need,
    pub priority: Option<i32>,
}

/// Where an agent stands with the coordinator.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AllocationState {
    /// Cores of its own.
    Exclusive,
    /// The shared pool (everyone without an exclusive grant).
    Shared,
    /// Asked for what does not fit now; runs in the shared pool meanwhile.
    Pending { why: String },
    /// The declaration makes no sense on this host; runs in the shared pool.
    Misdeclared { why: String },
}

impl AllocationState {
    pub fn label(&self) -> &'static str {
        match self {
            AllocationState::Exclusive => "exclusive",
            AllocationState::Shared => "shared",
            AllocationState::Pending { .. } => "pending",
            AllocationState::Misdeclared { .. } => "misdeclared",
        }
    }

    pub fn why(&self) -> Option<&str> {
        match self {
            AllocationState::Pending { why } | AllocationState::Misdeclared { why } => Some(why),
            _ => None,
        }
    }
}

/// One agent's allocation in the plan, and whether the host already has it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Allocation {
    pub id: String,
    pub name: String,
    pub priority: i32,
    pub need: Option<Need>,
    pub state: AllocationState,
    /// The CPUs it may run on ("" in the plan's terms: every CPU, Docker's default).
    pub cpus: Vec<u32>,
    /// The memory nodes; empty means every node.
    pub mems: Vec<u32>,
    pub cpu_shares: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    /// The container's settings already match the plan.
    pub in_place: bool,
    /// Declared through the API but not running: its CPUs are held for it all the same.
    #[serde(default)]
    pub waiting: bool,
    /// Exclusive CPUs changed by rebalancing: -1 lent to the shared pool, +1 given from
    /// it; 0 as declared.
    #[serde(default)]
    pub rebalanced: i32,
}

/// The coordinator's view for the faces: who owns which CPU, and each agent's allocation.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CoordinatorSnapshot {
    /// Plans are applied without asking (`[coordinator] enforce`).
    pub enforce: bool,
    /// CPUs kept for the system, never given away.
    pub reserved: Vec<u32>,
    /// The shared pool.
    pub shared: Vec<u32>,
    /// Every agent, declared or not, in priority order.
    pub agents: Vec<Allocation>,
    /// How long planning took this tick, in microseconds.
    pub plan_us: u64,
    /// Declarations registered through the API, running agents or not.
    #[serde(default)]
    pub declared: Vec<Declaration>,
    /// The shared parent cgroup (`[coordinator] shared_parent`), kept to the shared pool so
    /// agents started under it (`--cgroup-parent`) are born confined to it.
    #[serde(default)]
    pub parent: Option<SharedParent>,
}

/// The shared parent cgroup: its CPUs as read and as planned.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SharedParent {
    /// As Docker's `--cgroup-parent` names it ("/sutazai-shared").
    pub cgroup: String,
    /// Its cpuset directory relative to the sys root ("fs/cgroup/cpuset/sutazai-shared").
    pub target: std::path::PathBuf,
    pub cpus_read: Vec<u32>,
    /// The shared pool.
    pub cpus: Vec<u32>,
}

impl SharedParent {
    pub fn in_place(&self) -> bool {
        self.cpus_read == self.cpus
    }
}

impl CoordinatorSnapshot {
    /// Whether rebalancing changed anyone's grant from what was declared.
    pub fn rebalanced(&self) -> bool {
        self.agents.iter().any(|a| a.rebalanced != 0)
    }

    /// Who owns `cpu`: "reserved", "shared", an exclusive agent's name, or "offline".
    pub fn owner_of(&self, cpu: u32) -> &str {
        if self.reserved.contains(&cpu) {
            return "reserved";
        }
        if let Some(agent) = self
            .agents
            .iter()
            .find(|a| a.state == AllocationState::Exclusive && a.cpus.contains(&cpu))
        {
            return &agent.name;
        }
        if self.shared.contains(&cpu) {
            "shared"
        } else {
            "offline"
        }
    }

    /// Agents whose allocation is not on the host yet.
    pub fn out_of_place(&self) -> impl Iterator<Item = &Allocation> {
        self.agents.iter().filter(|a| !a.in_place)
    }

    /// The shared parent's CPUs are not the shared pool yet.
    pub fn parent_out_of_place(&self) -> bool {
        self.parent.as_ref().is_some_and(|p| !p.in_place())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn declarations_parse_with_their_defaults() {
        let latency = true;
        assert_eq!(
            need_from_labels(&labels(&[("other", "1")]), latency),
            Ok(None)
        );
        let need = need_from_labels(
            &labels(&[
                ("sutazai.cpus", "2"),
                ("sutazai.memory", "4g"),
                ("sutazai.numa", "1"),
            ]),
            latency,
        )
        .unwrap()
        .unwrap();
        assert_eq!(need.cpus, Some(2.0));
        assert!(
            need.exclusive,
            "whole CPUs for a latency agent are exclusive"
        );
        assert_eq!(need.memory_bytes, Some(4 << 30));
        assert_eq!(need.numa, Some(1));
        assert_eq!(need.exclusive_cpus(), Some(2));
        let batch = need_from_labels(&labels(&[("sutazai.cpus", "2")]), false)
            .unwrap()
            .unwrap();
        assert!(!batch.exclusive);
        let half = need_from_labels(&labels(&[("sutazai.cpus", "0.5")]), latency)
            .unwrap()
            .unwrap();
        assert!(!half.exclusive);
        let any = need_from_labels(&labels(&[("sutazai.numa", "ANY")]), false)
            .unwrap()
            .unwrap();
        assert_eq!(any.numa, None);
    }

    #[test]
    fn nonsense_is_refused_naming_the_label() {
        for (pairs, says) in [
            (&[("sutazai.cpus", "4x")][..], "sutazai.cpus = \"4x\""),
            (&[("sutazai.cpus", "0")], "sutazai.cpus"),
            (&[("sutazai.cpus", "NaN")], "sutazai.cpus"),
            (&[("sutazai.memory", "4x")], "sutazai.memory = \"4x\""),
            (&[("sutazai.memory", "-1g")], "sutazai.memory"),
            (&[("sutazai.numa", "first")], "sutazai.numa"),
            (&[("sutazai.exclusive", "maybe")], "sutazai.exclusive"),
            (
                &[("sutazai.cpus", "1.5"), ("sutazai.exclusive", "true")],
                "whole number",
            ),
        ] {
            let err = need_from_labels(&labels(pairs), false).unwrap_err();
            assert!(err.contains(says), "{err} for {pairs:?}");
        }
    }

    #[test]
    fn sizes_in_binary_units() {
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert!(parse_size("").is_err());
        assert!(parse_size("g").is_err());
        assert!(parse_size("1e30g").is_err());
    }
}
