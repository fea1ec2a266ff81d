//! The shared-memory object store, served by an engine that runs for the host: its socket,
//! its pools from the config, and which agent each client process belongs to.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::config::EngineConfig;
use crate::host::HostRoots;
use crate::host::cgroups::read_proc_cgroups;
use crate::model::Snapshot;

/// The socket agents connect to: `[object_store] socket`, else `pools.sock` in the runtime dir.
pub fn socket_path(config: &EngineConfig) -> PathBuf {
    match config.object_store.socket.as_os_str().is_empty() {
        true => config.runtime_dir.join("pools.sock"),
        false => config.object_store.socket.clone(),
    }
}

/// Serve the store, naming clients' agents from the latest snapshot. `Err` says why not.
pub fn start(
    config: &EngineConfig,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    roots: HostRoots,
) -> Result<sutazai_pools::Server, String> {
    let store = &config.object_store;
    let socket = socket_path(config);
    // The socket's directory follows the rule of every owned path (created 0700 if missing:
    // root only; for a group, point `socket` into a directory of mode 0750 or 0755).
    sutazai_owned_paths::OwnedDir::of(&socket)
        .map_err(|e| format!("[object_store] socket {}: {e}", socket.display()))?;
    let group = match store.socket_group.as_str() {
        "" => None,
        name => match nix::unistd::Group::from_name(name) {
            Ok(Some(group)) => Some(group.gid.as_raw()),
            Ok(None) => {
                return Err(format!(
                    "[object_store] socket_group {name:?}: no such group"
                ));
            }
            Err(e) => return Err(format!("[object_store] socket_group {name:?}: {e}")),
        },
    };
    let agent_of: sutazai_pools::AgentOf =
        Arc::new(move |pid| agent_of(&snapshots.borrow(), &roots, pid));
    let server = sutazai_pools::Server::start(&sutazai_pools::ServerConfig {
        socket,
        mode: store.socket_mode,
        group,
        pools: store.pools(&config.pools),
        max_held_per_client: store.max_objects_per_client,
        cold_after: Duration::from_secs(store.cold_after_secs),
        agent_of,
    })
    .map_err(|e| e.to_string())?;
    tracing::info!(socket = %server.socket().display(), "memory pools served");
    Ok(server)
}

/// The agent a client process belongs to: the process agent listing its pid, else the
/// container whose cgroup holds it; `None` for a process of no agent (the store then names
/// it by its pid and comm).
pub fn agent_of(snapshot: &Snapshot, roots: &HostRoots, pid: i32) -> Option<String> {
    let agents = &snapshot.containers.agents;
    if let Some(agent) = agents
        .iter()
        .find(|a| a.process.as_ref().is_some_and(|p| p.pids.contains(&pid)))
    {
        return Some(agent.name.clone());
    }
    let cgroups = read_proc_cgroups(roots, pid).ok()?;
    agents
        .iter()
        .filter_map(|a| Some((a, a.cgroup.as_deref().filter(|c| *c != "/")?)))
        .find(|(_, cgroup)| cgroups.within(cgroup))
        .map(|(a, _)| a.name.clone())
}
