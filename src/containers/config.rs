//! The `[docker]` config section: whether and where to watch containers, and which are agents.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    /// Watch Docker containers at all.
    pub enabled: bool,
    /// Docker endpoint; empty means DOCKER_HOST, else the local socket.
    pub endpoint: String,
    /// A container is an agent when it carries this label.
    pub agent_label: String,
    /// Treat every container as an agent, labelled or not.
    pub all_containers_are_agents: bool,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            enabled: true,
            endpoint: String::new(),
            agent_label: "sutazai.agent".to_string(),
            all_containers_are_agents: false,
        }
    }
}

/// One `[[agents]]` entry: plain processes that count as one agent, matched by command
/// name, command line or cgroup (every key given must match), with the declaration a
/// container would carry in its labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawAgentEntry", into = "RawAgentEntry")]
pub struct AgentEntry {
    pub name: String,
    pub matcher: ProcessMatcher,
    /// The same keys and values as a container's labels ("sutazai.cpus" = "2").
    pub labels: std::collections::BTreeMap<String, String>,
}

/// How an entry finds its processes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessMatcher {
    /// The kernel's command name (/proc/<pid>/comm), exactly.
    pub comm: Option<String>,
    /// A piece of the command line, its words joined by spaces.
    pub cmdline: Option<String>,
    /// A cgroup path as /proc/<pid>/cgroup shows it; processes in it or below it match.
    pub cgroup: Option<String>,
}

impl ProcessMatcher {
    /// "comm = llama-server, cmdline = \"--model\"" for panes.
    pub fn describe(&self) -> String {
        let parts = [
            ("comm", &self.comm),
            ("cmdline", &self.cmdline),
            ("cgroup", &self.cgroup),
        ];
        parts
            .iter()
            .filter_map(|(key, value)| value.as_ref().map(|v| format!("{key} = {v:?}")))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A NUMA node as a number, or "any".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NumaKey {
    Node(u32),
    Word(String),
}

/// The entry as written in the file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgentEntry {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclusive: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa: Option<NumaKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory: Option<String>,
}

/// The kernel keeps 15 bytes of a command name.
const COMM_MAX: usize = 15;
/// Longest agent name: it is shown in a column and used in ids.
const NAME_MAX: usize = 64;

impl TryFrom<RawAgentEntry> for AgentEntry {
    type Error = String;

    fn try_from(raw: RawAgentEntry) -> Result<Self, String> {
        let name = raw.name.trim().to_string();
        let named = |why: String| format!("[[agents]] name = {name:?}: {why}");
        let fine = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
        if name.is_empty() || name.len() > NAME_MAX || !name.chars().all(fine) {
            return Err(format!(
                "[[agents]] name = {name:?}: give 1 to {NAME_MAX} letters, digits, '.', '_' or '-'"
            ));
        }
        let non_empty = |key: &str, value: Option<String>| match value {
            Some(v) if v.trim().is_empty() => Err(named(format!("{key} is empty"))),
            other => Ok(other),
        };
        let matcher = ProcessMatcher {
            comm: non_empty("comm", raw.comm.clone())?,
            cmdline: non_empty("cmdline", raw.cmdline.clone())?,
            cgroup: non_empty("cgroup", raw.cgroup.clone())?,
        };
        if matcher.comm.is_none() && matcher.cmdline.is_none() && matcher.cgroup.is_none() {
            return Err(named(
                "give comm, cmdline or cgroup to match its processes".into(),
            ));
        }
        if let Some(comm) = &matcher.comm
            && comm.len() > COMM_MAX
        {
            return Err(named(format!(
                "comm = {comm:?} is longer than the kernel keeps ({COMM_MAX} bytes); \
                 give its first {COMM_MAX}, or match with cmdline"
            )));
        }
        if let Some(cgroup) = &matcher.cgroup
            && (!cgroup.starts_with('/')
                || cgroup.trim_end_matches('/').is_empty()
                || cgroup.split('/').any(|p| p == ".." || p == "."))
        {
            return Err(named(format!(
                "cgroup = {cgroup:?}: give an absolute path as /proc/<pid>/cgroup shows it, \
                 below the root (the root holds every process)"
            )));
        }
        let labels = labels_of(&raw);
        let latency = match raw.class.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("batch") => false,
            Some("latency") => true,
            Some(other) => return Err(named(format!("class = {other:?}: give latency or batch"))),
        };
        // The declaration is checked as a container's labels are; the message names the
        // config key rather than the label.
        crate::model::need::need_from_labels(&labels, latency)
            .map_err(|why| named(why.replace("sutazai.", "")))?;
        Ok(AgentEntry {
            name,
            matcher,
            labels,
        })
    }
}

/// The labels a container declaring the same would carry.
fn labels_of(raw: &RawAgentEntry) -> std::collections::BTreeMap<String, String> {
    use crate::model::need::{CPUS_KEY, EXCLUSIVE_KEY, GPU_MEMORY_KEY, MEMORY_KEY, NUMA_KEY};
    let numa = raw.numa.as_ref().map(|n| match n {
        NumaKey::Node(node) => node.to_string(),
        NumaKey::Word(word) => word.clone(),
    });
    [
        (super::agent::CLASS_LABEL, raw.class.clone()),
        (
            super::agent::PRIORITY_LABEL,
            raw.priority.map(|p| p.to_string()),
        ),
        (CPUS_KEY, raw.cpus.map(|c| c.to_string())),
        (EXCLUSIVE_KEY, raw.exclusive.map(|e| e.to_string())),
        (MEMORY_KEY, raw.memory.clone()),
        (NUMA_KEY, numa),
        (GPU_MEMORY_KEY, raw.gpu_memory.clone()),
    ]
    .into_iter()
    .filter_map(|(key, value)| Some((key.to_string(), value?)))
    .collect()
}

impl From<AgentEntry> for RawAgentEntry {
    fn from(entry: AgentEntry) -> Self {
        use crate::model::need::{CPUS_KEY, EXCLUSIVE_KEY, GPU_MEMORY_KEY, MEMORY_KEY, NUMA_KEY};
        let get = |key: &str| entry.labels.get(key).cloned();
        RawAgentEntry {
            name: entry.name.clone(),
            comm: entry.matcher.comm.clone(),
            cmdline: entry.matcher.cmdline.clone(),
            cgroup: entry.matcher.cgroup.clone(),
            class: get(super::agent::CLASS_LABEL),
            priority: get(super::agent::PRIORITY_LABEL).and_then(|p| p.parse().ok()),
            cpus: get(CPUS_KEY).and_then(|c| c.parse().ok()),
            exclusive: get(EXCLUSIVE_KEY).and_then(|e| e.parse().ok()),
            memory: get(MEMORY_KEY),
            numa: get(NUMA_KEY).map(|n| match n.parse() {
                Ok(node) => NumaKey::Node(node),
                Err(_) => NumaKey::Word(n),
            }),
            gpu_memory: get(GPU_MEMORY_KEY),
        }
    }
}
