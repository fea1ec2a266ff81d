//! The coordinator's routes: the plan (`GET /api/agents`), and needs registered through the
//! API (`POST /api/agents`, `DELETE /api/agents/{agent}`), the original design's
//! `register_agent(agent_id, cpu_cores, memory_mb, priority, gpu_memory_mb)`.

use hyper::StatusCode;
use serde::Deserialize;

use super::{State, parse_json};
use crate::api::ops::{self, Failure, OpResult};
use crate::model::{CoordinatorSnapshot, Declaration, Need, Snapshot};

/// The longest agent name or id accepted.
const MAX_AGENT_LEN: usize = 128;
/// The most memory one agent may declare, in MiB (16 TiB).
const MAX_MEMORY_MB: u64 = 16 << 20;

/// `GET /api/agents`: the plan, each agent's declared, allocated and used side by side.
pub(super) fn agents(view: &CoordinatorSnapshot, snap: &Snapshot) -> serde_json::Value {
    let agents: Vec<serde_json::Value> = view
        .agents
        .iter()
        .map(|a| {
            let stat = snap.containers.agents.iter().find(|c| c.id == a.id);
            serde_json::json!({
                "id": a.id,
                "name": a.name,
                "priority": a.priority,
                "declared": a.need,
                "state": a.state.label(),
                "why": a.state.why(),
                "allocated": {
                    "cpus": crate::host::format_cpu_list(&a.cpus),
                    "mems": crate::host::format_cpu_list(&a.mems),
                    "cpu_shares": a.cpu_shares,
                    "memory_limit_bytes": a.memory_limit_bytes,
                },
                "in_place": a.in_place,
                // Exclusive CPUs changed by rebalancing: -1 lent, +1 given; 0 as declared.
                "rebalanced": a.rebalanced,
                "running": !a.waiting,
                "declared_through": declared_through(view, a, stat),
                // Plain processes from [[agents]]: what matched, and the cgroups that are
                // not theirs to change (why only some knobs are set).
                "process": stat.and_then(|c| c.process.as_ref()),
                "used": stat.map(|c| serde_json::json!({
                    "cpu_pct": c.cpu_pct,
                    "memory_bytes": c.mem_bytes,
                    "cpuset_cpus": c.cpuset_cpus,
                    "cpuset_mems": c.cpuset_mems,
                })),
                "gpu": a.need.as_ref().and_then(|n| n.gpu_memory_bytes).map(|_| {
                    "recorded; this host has no GPU to give"
                }),
            })
        })
        .collect();
    serde_json::json!({
        "enforce": view.enforce,
        "reserved": crate::host::format_cpu_list(&view.reserved),
        "shared": crate::host::format_cpu_list(&view.shared),
        "plan_us": view.plan_us,
        "agents": agents,
        "registered": view.declared,
    })
}

/// "api", "labels" ("config" for a process agent), or null when nothing is declared.
fn declared_through(
    view: &CoordinatorSnapshot,
    allocation: &crate::model::Allocation,
    stat: Option<&crate::model::ContainerStat>,
) -> Option<&'static str> {
    let by_api = stat.is_some_and(|s| {
        view.declared
            .iter()
            .any(|d| crate::coordinator::registry::names(&d.agent, s))
    });
    match (by_api, &allocation.need) {
        (true, _) => Some("api"),
        (false, Some(_)) if stat.is_some_and(|s| s.process.is_some()) => Some("config"),
        (false, Some(_)) => Some("labels"),
        (false, None) => None,
    }
}

/// `POST /api/agents`: check the body, register it, answer once the engine holds it.
pub(super) async fn declare(state: &State, body: &[u8]) -> OpResult<Declaration> {
    let declaration = declaration(body)?;
    ops::declare(&state.handle, declaration).await
}

/// `DELETE /api/agents/{agent}`.
pub(super) async fn undeclare(state: &State, params: &[String]) -> OpResult<serde_json::Value> {
    // Container names and ids need no escaping in a path segment.
    let agent = params.first().cloned().unwrap_or_default();
    ops::undeclare(&state.handle, &agent).await?;
    Ok(serde_json::json!({ "removed": agent }))
}

/// The declaration a body describes; 400 naming the bad field.
fn declaration(body: &[u8]) -> OpResult<Declaration> {
    const SHAPE: &str = "POST /api/agents expects {\"agent_id\": \"llm-1\", \"cpu_cores\": 2, \
        \"exclusive\": true, \"memory_mb\": 4096, \"numa\": 0, \"priority\": 5, \"gpu_memory_mb\": 0}";
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Register {
        agent_id: String,
        cpu_cores: Option<f64>,
        exclusive: Option<bool>,
        memory_mb: Option<u64>,
        numa: Option<u32>,
        priority: Option<i32>,
        gpu_memory_mb: Option<u64>,
    }
    let r: Register = parse_json(body, SHAPE)?;
    let bad = |message: String| Failure::new(StatusCode::BAD_REQUEST, message);
    let agent = r.agent_id.trim().to_string();
    if agent.is_empty() || agent.len() > MAX_AGENT_LEN || agent.chars().any(char::is_control) {
        return Err(bad(format!(
            "agent_id {:?}: give a container name or id (1 to {MAX_AGENT_LEN} characters)",
            r.agent_id
        )));
    }
    let mib = |field: &str, mb: Option<u64>| -> OpResult<Option<u64>> {
        match mb {
            None => Ok(None),
            Some(0) => Err(bad(format!(
                "{field} = 0: give at least 1, or leave it out"
            ))),
            Some(mb) if mb > MAX_MEMORY_MB => {
                Err(bad(format!("{field} = {mb}: at most {MAX_MEMORY_MB}")))
            }
            Some(mb) => Ok(Some(mb << 20)),
        }
    };
    let need = Need {
        cpus: r.cpu_cores,
        // Whole cores ask for cores of their own unless told otherwise.
        exclusive: r
            .exclusive
            .unwrap_or_else(|| r.cpu_cores.is_some_and(|c| c.fract() == 0.0)),
        memory_bytes: mib("memory_mb", r.memory_mb)?,
        numa: r.numa,
        gpu_memory_bytes: mib("gpu_memory_mb", r.gpu_memory_mb)?,
    };
    crate::model::need::check_need(&need).map_err(|why| bad(format!("cpu_cores: {why}")))?;
    if need == Need::default() {
        return Err(bad(
            "declare at least one of cpu_cores, memory_mb, numa, gpu_memory_mb".to_string(),
        ));
    }
    Ok(Declaration {
        agent,
        need,
        priority: r.priority,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(body: &str) -> String {
        declaration(body.as_bytes()).unwrap_err().message
    }

    #[test]
    fn bodies_are_checked_naming_the_field() {
        let d =
            declaration(br#"{"agent_id": "llm-1", "cpu_cores": 2, "memory_mb": 4096}"#).unwrap();
        assert!(d.need.exclusive, "whole cores are exclusive by default");
        assert_eq!(d.need.memory_bytes, Some(4 << 30));
        let shared = declaration(br#"{"agent_id": "a", "cpu_cores": 0.5}"#).unwrap();
        assert!(!shared.need.exclusive);
        assert!(refused(r#"{"agent_id": "", "cpu_cores": 1}"#).contains("agent_id"));
        assert!(refused(r#"{"agent_id": "a", "cpu_cores": -1}"#).contains("cpu_cores"));
        assert!(
            refused(r#"{"agent_id": "a", "cpu_cores": 1.5, "exclusive": true}"#).contains("whole")
        );
        assert!(refused(r#"{"agent_id": "a", "memory_mb": 0}"#).contains("memory_mb"));
        assert!(refused(r#"{"agent_id": "a"}"#).contains("at least one"));
        assert!(refused(r#"{"agent_id": "a", "cpus": 1}"#).contains("cpus"));
        assert!(refused(r#"{"agent_id": "a", "cpu_cores": "two"}"#).contains("POST /api/agents"));
    }
}
