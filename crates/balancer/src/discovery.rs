//! Backends discovered from a container runtime: every running container labelled
//! `sutazai.backend.port` (as Pingora's `ServiceDiscovery`: the source is a trait, and the
//! app implements it for Docker, so this crate never talks to a daemon).
//!
//! [`run`] asks a [`ServiceDiscovery`] for the labelled containers whenever it says they may
//! have changed (every tick, every membership event), works out which backends they stand for
//! ([`backend_for`]), compares them with the discovered backends the balancer has ([`plan`])
//! and adds or removes the difference. Backends from config or the API are never touched. Traffic only ever goes to a loopback
//! address: a container on the host network is reached on 127.0.0.1, a container that
//! publishes the labelled port on the host's loopback (or on every host address) through
//! that published port; a container reachable only on a bridge IP is not used, and says why
//! once in the log.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::{BalancerConfig, DEFAULT_MAX_CONNECTIONS, MAX_BACKEND_WEIGHT};
use crate::{BackendSource, BackendSpec, Balancer, BalancerError};

/// The container port the backend serves on (required).
pub const PORT_LABEL: &str = "sutazai.backend.port";
/// The pool it joins (default: the default pool).
pub const POOL_LABEL: &str = "sutazai.backend.pool";
pub const WEIGHT_LABEL: &str = "sutazai.backend.weight";
pub const MAX_CONNECTIONS_LABEL: &str = "sutazai.backend.max_connections";

/// Longest wait between reconnection attempts.
const MAX_RETRY: Duration = Duration::from_secs(30);
const TARGET: &str = "sutazai_top::balancer";

/// What discovery needs to know of one running container.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Candidate {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Docker's network mode (`host`, `bridge`, `none`, a network's name...).
    pub network_mode: String,
    pub ports: Vec<Published>,
}

/// A container port as Docker lists it; `host_port` is set when it is published.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Published {
    /// The host address it is published on (`127.0.0.1`, `0.0.0.0`, `::`), or empty.
    pub host_ip: String,
    pub container_port: u16,
    pub host_port: Option<u16>,
    pub tcp: bool,
}

/// Membership changes for the Docker-sourced backends, and the containers left out.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    pub to_add: Vec<BackendSpec>,
    pub to_remove: Vec<BackendSpec>,
    /// (container id, why it is not a backend), the text naming the container.
    pub skipped: Vec<(String, String)>,
}

/// The backend a labelled container stands for, or why it cannot be one (the text names the
/// container and the label or the network).
pub fn backend_for(container: &Candidate) -> Result<BackendSpec, String> {
    let name = &container.name;
    let port: u16 = label_number(container, PORT_LABEL, 1, 65535)?
        .ok_or_else(|| format!("container {name}: no {PORT_LABEL} label"))?
        .try_into()
        .map_err(|_| format!("container {name}: {PORT_LABEL} is out of range"))?;
    let weight = label_number(container, WEIGHT_LABEL, 1, u64::from(MAX_BACKEND_WEIGHT))?;
    let max_connections = label_number(container, MAX_CONNECTIONS_LABEL, 1, u64::from(u32::MAX))?;
    let pool = match container.labels.get(POOL_LABEL).map(|p| p.trim()) {
        None | Some("") => BalancerConfig::DEFAULT_POOL.to_string(),
        Some(pool) => pool.to_string(),
    };
    let (host, port) = loopback_address(container, port)?;
    Ok(BackendSpec {
        host,
        port,
        // Both bounded by `label_number` above.
        weight: weight.map_or(1, |w| w as u32),
        max_connections: max_connections.map_or(DEFAULT_MAX_CONNECTIONS, |m| m as u32),
        pool,
        source: BackendSource::Docker {
            container: name.clone(),
        },
    })
}

/// A label's value as a whole number in `min..=max`; `None` when the label is absent.
fn label_number(
    container: &Candidate,
    label: &str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, String> {
    let Some(value) = container.labels.get(label) else {
        return Ok(None);
    };
    match value.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
        _ => Err(format!(
            "container {}: label {label} = {value:?} is not a whole number from {min} to {max}",
            container.name
        )),
    }
}

/// Where on the host's loopback the container's `port` answers.
fn loopback_address(container: &Candidate, port: u16) -> Result<(String, u16), String> {
    if container.network_mode == "host" {
        return Ok(("127.0.0.1".to_string(), port));
    }
    let published: Vec<(IpAddr, u16)> = container
        .ports
        .iter()
        .filter(|p| p.tcp && p.container_port == port)
        .filter_map(|p| Some((p.host_ip.parse::<IpAddr>().ok()?, p.host_port?)))
        .collect();
    // Docker lists `-p 8080:80` once per address family; a loopback binding is the most
    // specific, a wildcard one answers on loopback too; IPv4 first.
    let rank = |ip: &IpAddr| match ip {
        IpAddr::V4(v4) if v4.is_loopback() => Some(0),
        IpAddr::V4(v4) if v4.is_unspecified() => Some(1),
        IpAddr::V6(v6) if v6.is_loopback() => Some(2),
        IpAddr::V6(v6) if v6.is_unspecified() => Some(3),
        _ => None,
    };
    let best = published
        .iter()
        .filter_map(|(ip, host_port)| rank(ip).map(|r| (r, *ip, *host_port)))
        .min_by_key(|(r, _, _)| *r);
    match best {
        Some((_, ip, host_port)) => {
            let host = match ip {
                IpAddr::V4(v4) if v4.is_unspecified() => "127.0.0.1".to_string(),
                IpAddr::V6(v6) if v6.is_unspecified() => "::1".to_string(),
                ip => ip.to_string(),
            };
            Ok((host, host_port))
        }
        None => Err(format!(
            "container {}: port {port} is neither on the host network nor published on a \
             loopback address (network {:?}); traffic only goes to loopback, so it is not a \
             backend",
            container.name, container.network_mode
        )),
    }
}

/// What to change so the balancer's Docker-sourced backends are exactly the labelled
/// containers'. `current` is every backend of the balancer, whatever its source: one from
/// config or the API is never removed, and a container claiming its address is skipped.
pub fn plan(current: &[BackendSpec], containers: &[Candidate]) -> Plan {
    let key = |b: &BackendSpec| (b.pool.clone(), b.host.clone(), b.port);
    let not_docker: HashMap<_, &BackendSpec> = current
        .iter()
        .filter(|b| !is_docker(b))
        .map(|b| (key(b), b))
        .collect();
    let mut result = Plan::default();
    let mut wanted: Vec<BackendSpec> = Vec::new();
    let mut claimed: HashMap<(String, String, u16), String> = HashMap::new();
    for container in containers {
        let spec = match backend_for(container) {
            Ok(spec) => spec,
            Err(reason) => {
                result.skipped.push((container.id.clone(), reason));
                continue;
            }
        };
        let address = format!("{}:{} in pool {:?}", spec.host, spec.port, spec.pool);
        if let Some(other) = not_docker.get(&key(&spec)) {
            let reason = format!(
                "container {}: {address} is already a backend from {}; left as it is",
                container.name,
                source_name(&other.source)
            );
            result.skipped.push((container.id.clone(), reason));
            continue;
        }
        if let Some(first) = claimed.get(&key(&spec)) {
            let reason = format!(
                "container {}: {address} is already container {first}'s backend",
                container.name
            );
            result.skipped.push((container.id.clone(), reason));
            continue;
        }
        claimed.insert(key(&spec), container.name.clone());
        wanted.push(spec);
    }
    let present: Vec<&BackendSpec> = current.iter().filter(|b| is_docker(b)).collect();
    result.to_remove = present
        .iter()
        .filter(|b| !wanted.contains(b))
        .map(|b| (*b).clone())
        .collect();
    result.to_add = wanted
        .into_iter()
        .filter(|w| !present.contains(&w))
        .collect();
    result
}

fn is_docker(spec: &BackendSpec) -> bool {
    matches!(spec.source, BackendSource::Docker { .. })
}

fn source_name(source: &BackendSource) -> String {
    match source {
        BackendSource::Config => "config".to_string(),
        BackendSource::Api => "the API".to_string(),
        BackendSource::Docker { container } => format!("container {container}"),
    }
}

impl Balancer {
    /// Every backend of every pool, as a spec naming its pool.
    pub fn backends(&self) -> Vec<BackendSpec> {
        let mut all = Vec::new();
        for pool in self.shared.pools() {
            for b in &pool.members().backends {
                all.push(BackendSpec {
                    host: b.host.clone(),
                    port: b.port,
                    weight: b.weight(),
                    max_connections: b.max_connections,
                    pool: pool.name.clone(),
                    source: b.source.clone(),
                });
            }
        }
        all
    }
}

/// Reasons already logged, per container: each is logged once while the container lives.
#[derive(Debug, Default)]
struct Reported(HashMap<String, HashSet<String>>);

impl Reported {
    fn warn_once(&mut self, container_id: &str, reason: &str) {
        if self
            .0
            .entry(container_id.to_string())
            .or_default()
            .insert(reason.to_string())
        {
            tracing::warn!(target: TARGET, "{reason}");
        }
    }

    /// Every reason held for the containers present, sorted (for the snapshot).
    fn reasons(&self) -> Vec<String> {
        let mut all: Vec<String> = self.0.values().flatten().cloned().collect();
        all.sort();
        all
    }

    /// Forget containers that are gone, so one that comes back is reported again.
    fn keep_only(&mut self, present: &HashSet<&str>) {
        self.0.retain(|id, _| present.contains(id.as_str()));
    }
}

/// Make the balancer's Docker-sourced backends follow `plan`.
fn apply(balancer: &Balancer, plan: Plan, containers: &[Candidate], reported: &mut Reported) {
    for (id, reason) in &plan.skipped {
        reported.warn_once(id, reason);
    }
    for gone in &plan.to_remove {
        match balancer.remove_backend(&gone.pool, &gone.host, gone.port) {
            Ok(_) => {
                tracing::info!(target: TARGET, backend = %format!("{}:{}", gone.host, gone.port),
                pool = %gone.pool, source = %source_name(&gone.source), "Docker backend removed")
            }
            Err(err) => tracing::warn!(target: TARGET, %err, "cannot remove a Docker backend"),
        }
    }
    for spec in plan.to_add {
        let container = match &spec.source {
            BackendSource::Docker { container } => container.clone(),
            _ => String::new(),
        };
        let id = containers
            .iter()
            .find(|c| c.name == container)
            .map_or(container.clone(), |c| c.id.clone());
        let (address, pool) = (format!("{}:{}", spec.host, spec.port), spec.pool.clone());
        match balancer.add_backend(spec) {
            Ok(()) => tracing::info!(target: TARGET, backend = %address, %pool,
                %container, "Docker backend added"),
            Err(err) => {
                let why = match err {
                    BalancerError::UnknownPool(name) => {
                        format!("label {POOL_LABEL} = {name:?} names no pool")
                    }
                    other => other.to_string(),
                };
                reported.warn_once(
                    &id,
                    &format!("container {container}: {address} not added: {why}"),
                );
            }
        }
    }
    let present: HashSet<&str> = containers.iter().map(|c| c.id.as_str()).collect();
    reported.keep_only(&present);
    balancer.set_discovery_skipped(reported.reasons());
}

/// Where the labelled containers come from (the app implements it for Docker).
pub trait ServiceDiscovery: Send {
    /// Wait until the containers may have changed: a tick, or a membership event. An error
    /// says the source is away; [`run`] then waits and asks again, with backoff.
    fn changed(&mut self) -> impl Future<Output = Result<(), String>> + Send;
    /// The running containers carrying [`PORT_LABEL`], now.
    fn candidates(&mut self) -> impl Future<Output = Result<Vec<Candidate>, String>> + Send;
    /// Where the source is, for the log.
    fn describe(&self) -> String;
}

/// Follow `source` until `shutdown`: sync whenever it says the containers may have changed,
/// back off while it is away (its backends stay meanwhile: the containers are probably still
/// serving, and health checks judge them).
pub async fn run<S: ServiceDiscovery>(
    balancer: Arc<Balancer>,
    mut source: S,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut reported = Reported::default();
    let mut retry = Duration::from_secs(1);
    loop {
        let synced = tokio::select! {
            changed = source.changed() => match changed {
                Ok(()) => source.candidates().await,
                Err(why) => Err(why),
            },
            _ = shutdown.changed() => return,
        };
        match synced {
            Ok(containers) => {
                retry = Duration::from_secs(1);
                let plan = plan(&balancer.backends(), &containers);
                apply(&balancer, plan, &containers, &mut reported);
                continue;
            }
            // The containers sampler shows the daemon's state; here it is only a detail.
            Err(failure) => tracing::debug!(target: TARGET, source = %source.describe(),
                error = %failure, "backend discovery paused"),
        }
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = shutdown.changed() => return,
        }
        retry = (retry * 2).min(MAX_RETRY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(name: &str, labels: &[(&str, &str)], network_mode: &str) -> Candidate {
        Candidate {
            id: format!("id-{name}"),
            name: name.to_string(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            network_mode: network_mode.to_string(),
            ports: Vec::new(),
        }
    }

    fn published(ip: &str, container_port: u16, host_port: u16) -> Published {
        Published {
            host_ip: ip.to_string(),
            container_port,
            host_port: Some(host_port),
            tcp: true,
        }
    }

    fn docker_spec(name: &str, host: &str, port: u16) -> BackendSpec {
        BackendSpec {
            pool: "default".to_string(),
            source: BackendSource::Docker {
                container: name.to_string(),
            },
            ..BackendSpec::new(host, port)
        }
    }

    #[test]
    fn host_network_is_reached_on_loopback_with_the_labels() {
        let c = container(
            "web",
            &[
                (PORT_LABEL, "9001"),
                (WEIGHT_LABEL, "3"),
                (MAX_CONNECTIONS_LABEL, "50"),
                (POOL_LABEL, "compute"),
            ],
            "host",
        );
        let spec = backend_for(&c).unwrap();
        assert_eq!((spec.host.as_str(), spec.port), ("127.0.0.1", 9001));
        assert_eq!((spec.weight, spec.max_connections), (3, 50));
        assert_eq!(spec.pool, "compute");
        assert_eq!(
            spec.source,
            BackendSource::Docker {
                container: "web".to_string()
            }
        );
    }

    #[test]
    fn defaults_when_only_the_port_is_labelled() {
        let spec = backend_for(&container("web", &[(PORT_LABEL, " 80 ")], "host")).unwrap();
        assert_eq!(spec.weight, 1);
        assert_eq!(spec.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(spec.pool, BalancerConfig::DEFAULT_POOL);
    }

    #[test]
    fn bad_labels_name_the_container_and_the_label() {
        for (label, value) in [
            (PORT_LABEL, "abc"),
            (PORT_LABEL, "0"),
            (PORT_LABEL, "65536"),
            (WEIGHT_LABEL, "0"),
            (WEIGHT_LABEL, "1001"),
            (MAX_CONNECTIONS_LABEL, "-1"),
        ] {
            let mut labels = vec![(PORT_LABEL, "9001")];
            labels.retain(|(l, _)| *l != label);
            labels.push((label, value));
            let err = backend_for(&container("web-7", &labels, "host")).unwrap_err();
            assert!(err.contains("web-7"), "{err}");
            assert!(err.contains(label), "{err}");
            assert!(err.contains(&format!("{value:?}")), "{err}");
        }
    }

    #[test]
    fn a_published_loopback_port_is_used_and_a_bridge_ip_is_not() {
        let mut c = container("pub", &[(PORT_LABEL, "80")], "bridge");
        c.ports = vec![
            Published {
                host_ip: String::new(),
                container_port: 80,
                host_port: None,
                tcp: true,
            },
            published("::1", 80, 18081),
            published("127.0.0.2", 80, 18080),
            published("127.0.0.1", 81, 18082),
        ];
        let spec = backend_for(&c).unwrap();
        assert_eq!((spec.host.as_str(), spec.port), ("127.0.0.2", 18080));

        c.ports = vec![published("::", 80, 18083), published("0.0.0.0", 80, 18083)];
        let spec = backend_for(&c).unwrap();
        assert_eq!((spec.host.as_str(), spec.port), ("127.0.0.1", 18083));

        // Only on a bridge IP (not published, or published on a non-loopback address).
        c.ports = vec![
            Published {
                host_ip: String::new(),
                container_port: 80,
                host_port: None,
                tcp: true,
            },
            published("192.168.1.5", 80, 18084),
        ];
        let err = backend_for(&c).unwrap_err();
        assert!(
            err.contains("container pub") && err.contains("loopback"),
            "{err}"
        );

        // UDP is not HTTP.
        c.ports = vec![Published {
            tcp: false,
            ..published("127.0.0.1", 80, 18085)
        }];
        assert!(backend_for(&c).is_err());
    }

    #[test]
    fn plan_adds_new_removes_gone_and_keeps_the_rest() {
        let kept = docker_spec("a", "127.0.0.1", 9001);
        let gone = docker_spec("b", "127.0.0.1", 9002);
        let config = BackendSpec {
            pool: "default".to_string(),
            source: BackendSource::Config,
            ..BackendSpec::new("127.0.0.1", 7000)
        };
        let api = BackendSpec {
            pool: "default".to_string(),
            ..BackendSpec::new("127.0.0.1", 7001)
        };
        let current = vec![kept.clone(), gone.clone(), config, api];
        let containers = vec![
            container("a", &[(PORT_LABEL, "9001")], "host"),
            container("c", &[(PORT_LABEL, "9003")], "host"),
        ];
        let plan = plan(&current, &containers);
        assert_eq!(plan.to_remove, vec![gone]);
        assert_eq!(plan.to_add, vec![docker_spec("c", "127.0.0.1", 9003)]);
        assert!(plan.skipped.is_empty());
    }

    #[test]
    fn no_containers_removes_only_docker_backends() {
        let current = vec![
            docker_spec("a", "127.0.0.1", 9001),
            BackendSpec {
                pool: "default".to_string(),
                ..BackendSpec::new("127.0.0.1", 7001)
            },
        ];
        let plan = plan(&current, &[]);
        assert_eq!(plan.to_remove, vec![current[0].clone()]);
        assert!(plan.to_add.is_empty());
    }

    #[test]
    fn a_changed_label_replaces_the_backend() {
        let current = vec![docker_spec("a", "127.0.0.1", 9001)];
        let containers = vec![container(
            "a",
            &[(PORT_LABEL, "9001"), (WEIGHT_LABEL, "5")],
            "host",
        )];
        let plan = plan(&current, &containers);
        assert_eq!(plan.to_remove, current);
        assert_eq!(plan.to_add.len(), 1);
        assert_eq!(plan.to_add[0].weight, 5);
    }

    #[test]
    fn collisions_and_bad_containers_are_skipped_with_reasons() {
        let api = BackendSpec {
            pool: "default".to_string(),
            ..BackendSpec::new("127.0.0.1", 7001)
        };
        let containers = vec![
            container("takes-api", &[(PORT_LABEL, "7001")], "host"),
            container("first", &[(PORT_LABEL, "9005")], "host"),
            container("second", &[(PORT_LABEL, "9005")], "host"),
            container("broken", &[(PORT_LABEL, "abc")], "host"),
            container("bridged", &[(PORT_LABEL, "80")], "bridge"),
        ];
        let plan = plan(std::slice::from_ref(&api), &containers);
        assert_eq!(plan.to_add, vec![docker_spec("first", "127.0.0.1", 9005)]);
        assert!(plan.to_remove.is_empty(), "an API backend is never removed");
        let reasons: Vec<&str> = plan.skipped.iter().map(|(_, r)| r.as_str()).collect();
        assert_eq!(reasons.len(), 4, "{reasons:?}");
        assert!(reasons[0].contains("takes-api") && reasons[0].contains("the API"));
        assert!(reasons[1].contains("second") && reasons[1].contains("first"));
        assert!(reasons[2].contains("broken") && reasons[2].contains(PORT_LABEL));
        assert!(reasons[3].contains("bridged") && reasons[3].contains("loopback"));
    }

    #[test]
    fn each_reason_is_reported_once_while_the_container_lives() {
        let mut reported = Reported::default();
        reported.warn_once("x", "bad");
        reported.warn_once("x", "bad");
        assert_eq!(reported.0["x"].len(), 1);
        reported.keep_only(&HashSet::new());
        assert!(reported.0.is_empty());
    }
}
