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
