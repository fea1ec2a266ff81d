//! The `[coordinator]` config section: whether plans are made and applied, and what the
//! system keeps.

use serde::{Deserialize, Deserializer, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoordinatorConfig {
    /// Plan allocations from the agents' declarations.
    pub enabled: bool,
    /// Apply a changed plan without asking (else it is a proposal to approve with `a`).
    pub enforce: bool,
    /// CPUs kept for the system, as a CPU list ("0", "0-1,32"); never given to an agent.
    #[serde(deserialize_with = "reserved_cpus")]
    pub reserved_cpus: String,
    /// The shared pool never gets fewer CPUs than this: exclusive grants wait instead.
    #[serde(deserialize_with = "min_shared_cpus")]
    pub min_shared_cpus: usize,
    /// A declared memory need becomes a limit this much above it, in percent.
    #[serde(deserialize_with = "memory_headroom_pct")]
    pub memory_headroom_pct: u32,
    /// Propose a new plan when the load says this one is wrong (see `rebalance`).
    pub rebalance: bool,
    /// How long an imbalance must hold before a rebalance is proposed, and between two
    /// steps, in seconds.
    #[serde(deserialize_with = "rebalance_window_secs")]
    pub rebalance_window_secs: u64,
    /// A cgroup (as Docker's `--cgroup-parent` names it, "sutazai-shared") kept to the
    /// shared pool's CPUs, so agents started under it are born confined; "" for none.
    #[serde(deserialize_with = "shared_parent")]
    pub shared_parent: String,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            enabled: true,
            enforce: false,
            reserved_cpus: String::new(),
            min_shared_cpus: 1,
            memory_headroom_pct: 10,
            rebalance: true,
            rebalance_window_secs: 30,
            shared_parent: String::new(),
        }
    }
}

impl CoordinatorConfig {
    /// The reserved CPUs (the list was checked when the config was read).
    pub fn reserved(&self) -> Vec<u32> {
        strict_cpu_list(&self.reserved_cpus).unwrap_or_default()
    }
}

/// A CPU list, every part checked (`host::parse_id_list`), sorted: "8,0-3" → [0, 1, 2, 3, 8].
pub fn strict_cpu_list(text: &str) -> Result<Vec<u32>, String> {
    let mut out = crate::host::parse_id_list(text)?.unwrap_or_default();
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn reserved_cpus<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    strict_cpu_list(&text)
        .map(|_| text)
        .map_err(|why| serde::de::Error::custom(format!("reserved_cpus: {why}")))
}

fn min_shared_cpus<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    sutazai_config_check::in_range(d, "min_shared_cpus", 1..=4096)
}

fn memory_headroom_pct<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    sutazai_config_check::in_range(d, "memory_headroom_pct", 0..=100)
}

/// One plain directory name below the hierarchy's root: the engine creates it there.
fn shared_parent<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    let name = text.trim().trim_start_matches('/');
    let fine = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
    if name.is_empty() && text.trim().is_empty() {
        return Ok(String::new());
    }
    if name.is_empty() || name.len() > 64 || !name.chars().all(fine) || name.starts_with('.') {
        return Err(serde::de::Error::custom(format!(
            "shared_parent = {text:?}: give one cgroup name of letters, digits, '.', '_' or '-' \
             (as in --cgroup-parent /sutazai-shared), or \"\" for none"
        )));
    }
    Ok(name.to_string())
}

fn rebalance_window_secs<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    sutazai_config_check::in_range(d, "rebalance_window_secs", 5..=3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_are_checked_part_by_part() {
        assert_eq!(strict_cpu_list("0-2, 8,8"), Ok(vec![0, 1, 2, 8]));
        assert_eq!(strict_cpu_list(""), Ok(vec![]));
        assert!(strict_cpu_list("3-1").is_err());
        assert!(strict_cpu_list("a").unwrap_err().contains("\"a\""));
        assert!(strict_cpu_list("0-99999").is_err());
    }
}
