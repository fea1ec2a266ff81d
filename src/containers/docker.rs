//! Talking to Docker through bollard: connect, list, inspect, events, fallback stats.
//!
//! Only discovery goes through the API. Usage comes from each container's cgroup files (cheap,
//! and it does not freeze at 120+ containers the way one stats call per container per tick
//! does); bollard's one-shot stats are the fallback when a container's cgroup cannot be read.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerStatsResponse, EventMessage};
use bollard::query_parameters::{EventsOptions, ListContainersOptions, StatsOptions};
use futures_util::{Stream, StreamExt};

use crate::host::cgroups::CgroupCounters;
use crate::model::UsageSource;

/// How long one API call may take before the daemon counts as unresponsive.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The endpoint the engine will use: the configured one, else DOCKER_HOST, else the socket.
pub fn effective_endpoint(configured: &str) -> String {
    if !configured.trim().is_empty() {
        return configured.trim().to_string();
    }
    match std::env::var("DOCKER_HOST") {
        Ok(host) if !host.trim().is_empty() => host.trim().to_string(),
        _ => "unix:///var/run/docker.sock".to_string(),
    }
}

/// A container as listed by the daemon.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub id: String,
    pub name: String,
    pub image: String,
    pub state: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("{0}")]
    Api(#[from] bollard::errors::Error),
    #[error("no answer within {} s", CALL_TIMEOUT.as_secs())]
    Timeout,
}

/// One API call, given up after `CALL_TIMEOUT`.
pub async fn timed<T>(
    fut: impl std::future::Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<T, DockerError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(DockerError::Timeout),
    }
}

/// Connect and agree on an API version; returns the client and the daemon's version.
pub async fn connect(endpoint: &str) -> Result<(Docker, String), DockerError> {
    let docker = Docker::connect_with_host(endpoint)?;
    let docker = timed(docker.negotiate_version()).await?;
    let version = timed(docker.version()).await?;
    Ok((docker, version.version.unwrap_or_else(|| "?".to_string())))
}

/// Every container the daemon knows, running or not.
pub async fn list(docker: &Docker) -> Result<Vec<Listed>, DockerError> {
    let options = ListContainersOptions {
        all: true,
        ..Default::default()
    };
    let summaries = timed(docker.list_containers(Some(options))).await?;
    Ok(summaries
        .into_iter()
        .filter_map(|s| {
            let id = s.id?;
            let name = container_name(&id, s.names);
            Some(Listed {
                name,
                image: s.image.unwrap_or_default(),
                state: s.state.map(|st| st.to_string()).unwrap_or_default(),
                labels: s.labels.unwrap_or_default().into_iter().collect(),
                id,
            })
        })
        .collect())
}

/// The host pid of a container's main process, if it is running.
pub async fn main_pid(docker: &Docker, id: &str) -> Result<Option<i32>, DockerError> {
    let inspect = timed(docker.inspect_container(id, None)).await?;
    Ok(inspect
        .state
        .and_then(|s| s.pid)
        .and_then(|pid| i32::try_from(pid).ok())
        .filter(|pid| *pid > 0))
}

/// The daemon's container events (create, start, die, destroy...), as a stream.
pub fn container_events(
    docker: &Docker,
) -> impl Stream<Item = Result<EventMessage, bollard::errors::Error>> + use<> {
    let filters = HashMap::from([("type".to_string(), vec!["container".to_string()])]);
    docker.events(Some(EventsOptions {
        filters: Some(filters),
        ..Default::default()
    }))
}

/// Most events taken in one burst (a failed stream may keep yielding).
const MAX_EVENT_BATCH: usize = 1024;

/// `first` and every event already waiting behind it: a burst (131 containers starting)
/// arrives as hundreds of events, and is one re-list, not one per event. Whether any of them
/// may have changed the membership; `Err` says why the stream cannot go on.
pub fn take_event_burst<S>(
    first: Option<Result<EventMessage, bollard::errors::Error>>,
    events: &mut S,
) -> Result<bool, String>
where
    S: Stream<Item = Result<EventMessage, bollard::errors::Error>> + Unpin,
{
    use futures_util::FutureExt;
    let mut batch = vec![first];
    while batch.len() < MAX_EVENT_BATCH
        && matches!(batch.last(), Some(Some(Ok(_))))
        && let Some(more) = events.next().now_or_never()
    {
        batch.push(more);
    }
    let mut changed = false;
    for event in batch {
        match event {
            Some(Ok(message)) => {
                let action = message.action.unwrap_or_default();
                tracing::debug!(%action, "container event");
                changed |= event_changes_membership(&action);
            }
            Some(Err(err)) => return Err(format!("event stream failed: {err}")),
            None => return Err("event stream ended".to_string()),
        }
    }
    Ok(changed)
}

/// Events after which the list of containers or their processes may have changed.
pub fn event_changes_membership(action: &str) -> bool {
    // Docker appends details to some actions ("exec_start: sh", "health_status: healthy").
    let verb = action.split(':').next().unwrap_or(action).trim();
    matches!(
        verb,
        "create"
            | "start"
            | "restart"
            | "die"
            | "kill"
            | "stop"
            | "destroy"
            | "pause"
            | "unpause"
            | "rename"
            | "update"
    )
}

/// One stats reading through the API, as counters: the fallback when cgroup files cannot be
/// read (for example a cgroup namespace that hides them).
pub async fn stats_counters(docker: &Docker, id: &str) -> Result<CgroupCounters, DockerError> {
    let options = StatsOptions {
        stream: false,
        one_shot: true,
    };
    let mut stream = docker.stats(id, Some(options));
    match tokio::time::timeout(CALL_TIMEOUT, stream.next()).await {
        Ok(Some(Ok(stats))) => Ok(counters_from_stats(&stats)),
        Ok(Some(Err(err))) => Err(err.into()),
        Ok(None) | Err(_) => Err(DockerError::Timeout),
    }
}

fn counters_from_stats(stats: &ContainerStatsResponse) -> CgroupCounters {
    let memory = stats.memory_stats.as_ref();
    let inactive_file = memory
        .and_then(|m| m.stats.as_ref())
        .and_then(|s| {
            s.get("total_inactive_file")
                .or_else(|| s.get("inactive_file"))
        })
        .copied()
        .unwrap_or(0);
    let cpu = stats.cpu_stats.as_ref();
    let throttling = cpu.and_then(|c| c.throttling_data.as_ref());
    CgroupCounters {
        source: UsageSource::DockerStats,
        cpu_usage_ns: cpu
            .and_then(|c| c.cpu_usage.as_ref())
            .and_then(|u| u.total_usage),
        memory_usage_bytes: memory.and_then(|m| m.usage).unwrap_or(0),
        inactive_file_bytes: inactive_file,
        memory_limit_bytes: memory.and_then(|m| m.limit),
        pids: stats
            .pids_stats
            .as_ref()
            .and_then(|p| p.current)
            .unwrap_or(0),
        nr_periods: throttling.and_then(|t| t.periods).unwrap_or(0),
        nr_throttled: throttling.and_then(|t| t.throttled_periods).unwrap_or(0),
        ..CgroupCounters::default()
    }
}

/// A container's name as Docker lists it ("/name"), or its short id when it has none.
pub fn container_name(id: &str, names: Option<Vec<String>>) -> String {
    names
        .and_then(|names| names.into_iter().next())
        .map(|n| n.trim_start_matches('/').to_string())
        .unwrap_or_else(|| id.chars().take(12).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_events() {
        assert!(event_changes_membership("destroy"));
        assert!(event_changes_membership("start"));
        assert!(!event_changes_membership("exec_start: sh -c true"));
        assert!(!event_changes_membership("health_status: healthy"));
        assert!(!event_changes_membership("attach"));
    }

    #[test]
    fn configured_endpoint_wins() {
        assert_eq!(effective_endpoint(" unix:///x.sock "), "unix:///x.sock");
    }
}
