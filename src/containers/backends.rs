//! The balancer's backends from Docker: the [`ServiceDiscovery`] the balancer crate follows,
//! listing the running containers labelled `sutazai.backend.port` on every tick and on every
//! membership event. What a container stands for is decided in the crate
//! (`sutazai_balancer::discovery`); this module only talks to the daemon.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerSummary, PortSummaryTypeEnum};
use bollard::query_parameters::ListContainersOptions;
use futures_util::{Stream, StreamExt};
use sutazai_balancer::discovery::{Candidate, PORT_LABEL, Published, ServiceDiscovery};

use super::docker::{self as docker_api, DockerError};

type Events = Pin<
    Box<dyn Stream<Item = Result<bollard::models::EventMessage, bollard::errors::Error>> + Send>,
>;

/// Docker as a source of backends: connected lazily, dropped on the first failure (the
/// balancer's loop backs off and asks again, which reconnects).
pub struct DockerBackends {
    endpoint: String,
    interval: Duration,
    connected: Option<(Docker, Events, tokio::time::Interval)>,
}

impl DockerBackends {
    pub fn new(endpoint: &str, interval: Duration) -> DockerBackends {
        DockerBackends {
            endpoint: docker_api::effective_endpoint(endpoint),
            interval,
            connected: None,
        }
    }
}

impl ServiceDiscovery for DockerBackends {
    async fn changed(&mut self) -> Result<(), String> {
        if self.connected.is_none() {
            let (client, _) = docker_api::connect(&self.endpoint)
                .await
                .map_err(|e| e.to_string())?;
            let events: Events = Box::pin(docker_api::container_events(&client));
            let mut ticker = tokio::time::interval(self.interval.max(Duration::from_millis(10)));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // A fresh connection syncs at once (the interval's first tick is immediate).
            self.connected = Some((client, events, ticker));
        }
        let Some((_, events, ticker)) = self.connected.as_mut() else {
            return Err("not connected".to_string());
        };
        let outcome = loop {
            tokio::select! {
                _ = ticker.tick() => break Ok(()),
                event = events.next() => match docker_api::take_event_burst(event, events) {
                    Ok(true) => break Ok(()),
                    Ok(false) => continue,
                    Err(why) => break Err(why),
                },
            }
        };
        if outcome.is_err() {
            self.connected = None;
        }
        outcome
    }

    async fn candidates(&mut self) -> Result<Vec<Candidate>, String> {
        let Some((client, _, _)) = self.connected.as_ref() else {
            return Err("not connected".to_string());
        };
        let listed = list_candidates(client).await;
        if listed.is_err() {
            self.connected = None;
        }
        listed.map_err(|e| e.to_string())
    }

    fn describe(&self) -> String {
        self.endpoint.clone()
    }
}

/// The running containers carrying the port label.
async fn list_candidates(client: &Docker) -> Result<Vec<Candidate>, DockerError> {
    let filters = HashMap::from([
        ("label".to_string(), vec![PORT_LABEL.to_string()]),
        ("status".to_string(), vec!["running".to_string()]),
    ]);
    let options = ListContainersOptions {
        all: false,
        filters: Some(filters),
        ..Default::default()
    };
    let listed = docker_api::timed(client.list_containers(Some(options))).await?;
    Ok(listed.into_iter().filter_map(candidate).collect())
}

fn candidate(summary: ContainerSummary) -> Option<Candidate> {
    let id = summary.id?;
    let name = docker_api::container_name(&id, summary.names);
    Some(Candidate {
        name,
        labels: summary.labels.unwrap_or_default().into_iter().collect(),
        network_mode: summary
            .host_config
            .and_then(|h| h.network_mode)
            .unwrap_or_default(),
        ports: summary
            .ports
            .unwrap_or_default()
            .into_iter()
            .map(|p| Published {
                host_ip: p.ip.unwrap_or_default(),
                container_port: p.private_port,
                host_port: p.public_port,
                tcp: matches!(p.typ, Some(PortSummaryTypeEnum::TCP) | None),
            })
            .collect(),
        id,
    })
}
