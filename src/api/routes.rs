//! The routes: one table ([`ROUTES`]) that the router matches against and the OpenAPI test
//! compares with the document, and one handler per action.

mod agents;
mod balancer;
mod pools;

use std::time::Instant;

use bytes::Bytes;
use hyper::StatusCode;
use serde::{Deserialize, Serialize};

use super::ops::{self, Failure, OpResult};
use super::{StopChannel, StopRequest};
use crate::engine::EngineHandle;
use crate::model::Bottleneck;
use crate::model::Mode;
use crate::model::Snapshot;
use crate::model::{Proposal, ProposalStatus};
use agents::{agents, declare, undeclare};
use balancer::{balancer_add, balancer_change, balancer_remove};

pub use balancer::BackendChange;

/// What a route does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Health,
    Status,
    SnapshotJson,
    Proposals,
    Approve,
    Dismiss,
    Rollback,
    RollbackAll,
    Optimize,
    Eliminate,
    GetMode,
    PutMode,
    Report,
    Prometheus,
    Stop,
    OpenApi,
    CacheStats,
    CacheGet,
    CachePut,
    CacheDelete,
    BalancerStats,
    BalancerAdd,
    BalancerRemove,
    BalancerChange,
    Agents,
    Declare,
    Undeclare,
    Pools,
}

/// A method and a path pattern; `{name}` matches one path segment.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub action: Action,
}

const fn route(method: &'static str, path: &'static str, action: Action) -> Route {
    Route {
        method,
        path,
        action,
    }
}

/// Every route the API serves. Literal segments are listed before patterns that could
/// match them (the first match wins).
pub const ROUTES: &[Route] = &[
    route("GET", "/api/health", Action::Health),
    route("GET", "/api/status", Action::Status),
    route("GET", "/api/metrics", Action::SnapshotJson),
    route("GET", "/api/proposals", Action::Proposals),
    route("POST", "/api/proposals/{id}/approve", Action::Approve),
    route("POST", "/api/proposals/{id}/dismiss", Action::Dismiss),
    route("POST", "/api/changes/rollback-all", Action::RollbackAll),
    route("POST", "/api/changes/{id}/rollback", Action::Rollback),
    route("POST", "/api/optimize", Action::Optimize),
    route("POST", "/api/eliminate/{bottleneck_id}", Action::Eliminate),
    route("GET", "/api/mode", Action::GetMode),
    route("PUT", "/api/mode", Action::PutMode),
    route("GET", "/api/report", Action::Report),
    route("GET", "/metrics", Action::Prometheus),
    route("POST", "/api/stop", Action::Stop),
    route("GET", "/api/openapi.json", Action::OpenApi),
    route("GET", "/api/cache", Action::CacheStats),
    route("GET", "/api/cache/{key}", Action::CacheGet),
    route("PUT", "/api/cache/{key}", Action::CachePut),
    route("DELETE", "/api/cache/{key}", Action::CacheDelete),
    route("GET", "/api/balancer", Action::BalancerStats),
    route("GET", "/api/pools", Action::Pools),
    route("GET", "/api/agents", Action::Agents),
    route("POST", "/api/agents", Action::Declare),
    route("DELETE", "/api/agents/{agent}", Action::Undeclare),
    route("POST", "/api/balancer/backends", Action::BalancerAdd),
    route(
        "DELETE",
        "/api/balancer/backends/{backend}",
        Action::BalancerRemove,
    ),
    route(
        "PATCH",
        "/api/balancer/backends/{backend}",
        Action::BalancerChange,
    ),
];

/// The router's answer for a method and path.
#[derive(Debug, PartialEq)]
pub enum Matched {
    Found {
        action: Action,
        params: Vec<String>,
    },
    /// The path exists, not with this method; the methods it has.
    WrongMethod(Vec<&'static str>),
    NotFound,
}

/// The parameters if `path` fits `pattern`.
fn fit(pattern: &str, path: &str) -> Option<Vec<String>> {
    let mut want = pattern.split('/');
    let mut got = path.split('/');
    let mut params = Vec::new();
    loop {
        match (want.next(), got.next()) {
            (None, None) => return Some(params),
            (Some(w), Some(g)) if w.starts_with('{') && w.ends_with('}') && !g.is_empty() => {
                params.push(g.to_string());
            }
            (Some(w), Some(g)) if w == g => {}
            _ => return None,
        }
    }
}

pub fn find(method: &str, path: &str) -> Matched {
    let mut allowed = Vec::new();
    for r in ROUTES {
        if let Some(params) = fit(r.path, path) {
            if r.method == method {
                return Matched::Found {
                    action: r.action,
                    params,
                };
            }
            allowed.push(r.method);
        }
    }
    if allowed.is_empty() {
        Matched::NotFound
    } else {
        Matched::WrongMethod(allowed)
    }
}

/// A response before it becomes HTTP: status, content type, body.
pub struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Bytes,
}

const JSON: &str = "application/json";

impl Reply {
    pub fn json(status: StatusCode, value: &impl Serialize) -> Reply {
        match serde_json::to_vec(value) {
            Ok(body) => Reply {
                status,
                content_type: JSON,
                body: Bytes::from(body),
            },
            Err(err) => Reply::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot encode the answer: {err}"),
            ),
        }
    }

    pub fn error(status: StatusCode, message: &str) -> Reply {
        let body = serde_json::json!({ "error": message }).to_string();
        Reply {
            status,
            content_type: JSON,
            body: Bytes::from(body),
        }
    }

    fn from_result<T: Serialize>(result: OpResult<T>) -> Reply {
        match result {
            Ok(value) => Reply::json(StatusCode::OK, &value),
            Err(failure) => Reply::error(failure.status, &failure.message),
        }
    }
}

/// What every handler may use.
pub struct State {
    pub handle: EngineHandle,
    pub started: Instant,
    /// Where `POST /api/stop` goes; `None` when the engine is not a service.
    pub stop: Option<StopChannel>,
    /// The last snapshot's JSON and Prometheus bodies: a snapshot never changes, so scrapers
    /// polling faster than the tick get the same bytes without re-encoding them.
    pub rendered: std::sync::Mutex<Rendered>,
}

/// Bodies encoded from one snapshot (kept with it, so its identity cannot be reused).
#[derive(Default)]
pub struct Rendered {
    snapshot: Option<std::sync::Arc<Snapshot>>,
    json: Option<Bytes>,
    prometheus: Option<Bytes>,
}

impl State {
    /// The body `encode` makes of `snap`, encoded once per snapshot.
    fn cached(
        &self,
        snap: &std::sync::Arc<Snapshot>,
        pick: fn(&mut Rendered) -> &mut Option<Bytes>,
        encode: impl FnOnce(&Snapshot) -> Bytes,
    ) -> Bytes {
        let Ok(mut rendered) = self.rendered.lock() else {
            return encode(snap);
        };
        let same = rendered
            .snapshot
            .as_ref()
            .is_some_and(|held| std::sync::Arc::ptr_eq(held, snap));
        if !same {
            *rendered = Rendered {
                snapshot: Some(snap.clone()),
                ..Rendered::default()
            };
        }
        pick(&mut rendered)
            .get_or_insert_with(|| encode(snap))
            .clone()
    }
}

/// Run one action. `body` has been read within the size limit.
pub async fn dispatch(state: &State, action: Action, params: &[String], body: &[u8]) -> Reply {
    let snap = state.handle.snapshots.borrow().clone();
    match action {
        Action::Health => Reply::json(
            StatusCode::OK,
            &serde_json::json!({ "status": "ok", "seq": snap.seq,
                "version": env!("CARGO_PKG_VERSION") }),
        ),
        Action::Status => Reply::json(StatusCode::OK, &status(state, &snap)),
        Action::SnapshotJson => Reply {
            status: StatusCode::OK,
            content_type: JSON,
            body: state.cached(
                &snap,
                |r| &mut r.json,
                |s| Bytes::from(serde_json::to_vec(s).unwrap_or_default()),
            ),
        },
        Action::Proposals => Reply::json(StatusCode::OK, &snap.proposals),
        Action::Approve => match id_param(params, "proposal") {
            Ok(id) => Reply::from_result(ops::approve(&state.handle, id).await),
            Err(reply) => reply,
        },
        Action::Dismiss => match id_param(params, "proposal") {
            Ok(id) => Reply::from_result(ops::dismiss(&state.handle, id).await),
            Err(reply) => reply,
        },
        Action::Rollback => match id_param(params, "batch") {
            Ok(id) => Reply::from_result(ops::rollback(&state.handle, id).await),
            Err(reply) => reply,
        },
        Action::RollbackAll => Reply::from_result(ops::rollback_all(&state.handle).await),
        Action::Optimize => Reply::from_result(optimize(&state.handle).await),
        Action::Eliminate => {
            let id = params.first().map(String::as_str).unwrap_or_default();
            Reply::from_result(eliminate(&state.handle, &snap, id).await)
        }
        Action::GetMode => Reply::json(StatusCode::OK, &ModeBody::of(&snap)),
        Action::PutMode => Reply::from_result(put_mode(&state.handle, body).await),
        Action::Report => match crate::report::to_json(&snap) {
            Ok(text) => Reply {
                status: StatusCode::OK,
                content_type: JSON,
                body: Bytes::from(text),
            },
            Err(err) => Reply::error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
        },
        Action::Prometheus => Reply {
            status: StatusCode::OK,
            content_type: crate::metrics::CONTENT_TYPE,
            body: state.cached(
                &snap,
                |r| &mut r.prometheus,
                |s| Bytes::from(crate::metrics::render(s)),
            ),
        },
        Action::Stop => Reply::from_result(stop(state, body).await),
        Action::OpenApi => Reply {
            status: StatusCode::OK,
            content_type: JSON,
            body: Bytes::from_static(super::OPENAPI.as_bytes()),
        },
        Action::CacheStats => match &state.handle.cache {
            Some(cache) => Reply::json(StatusCode::OK, &cache.snapshot()),
            None => Reply::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the cache is off ([cache] enabled = false)",
            ),
        },
        Action::Agents => match &snap.coordinator {
            Some(view) => Reply::json(StatusCode::OK, &agents(view, &snap)),
            None if snap.seq == 0 => Reply::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "no plan yet: the engine's first tick has not run; try again in a second",
            ),
            None => Reply::error(
                StatusCode::NOT_FOUND,
                "the coordinator is off ([coordinator] enabled = false)",
            ),
        },
        Action::Declare => match declare(state, body).await {
            Ok(declared) => Reply::json(StatusCode::CREATED, &declared),
            Err(failure) => Reply::error(failure.status, &failure.message),
        },
        Action::Undeclare => match undeclare(state, params).await {
            Ok(removed) => Reply::json(StatusCode::OK, &removed),
            Err(failure) => Reply::error(failure.status, &failure.message),
        },
        Action::BalancerStats => match &snap.balancer {
            Some(balancer) => Reply::json(StatusCode::OK, balancer),
            None => Reply::error(
                StatusCode::NOT_FOUND,
                "the load balancer is off ([balancer] enabled = false)",
            ),
        },
        Action::Pools => match pools::pools(&snap) {
            Ok(view) => Reply::json(StatusCode::OK, &view),
            Err(why) => Reply::error(StatusCode::NOT_FOUND, &why),
        },
        Action::BalancerAdd => match balancer_add(state, body).await {
            Ok(added) => Reply::json(StatusCode::CREATED, &added),
            Err(failure) => Reply::error(failure.status, &failure.message),
        },
        Action::BalancerRemove => {
            let backend = params.first().map(String::as_str).unwrap_or_default();
            Reply::from_result(balancer_remove(state, backend, body))
        }
        Action::BalancerChange => {
            let backend = params.first().map(String::as_str).unwrap_or_default();
            Reply::from_result(balancer_change(state, backend, body))
        }
        // Served by `api::cache` (they need the request's headers); never routed here.
        Action::CacheGet | Action::CachePut | Action::CacheDelete => Reply::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cache data routes are served by api::cache",
        ),
    }
}

fn id_param(params: &[String], what: &str) -> Result<u64, Reply> {
    let raw = params.first().map(String::as_str).unwrap_or_default();
    raw.parse().map_err(|_| {
        Reply::error(
            StatusCode::BAD_REQUEST,
            &format!("{what} id {raw:?} is not a number"),
        )
    })
}

/// `GET /api/status`: what `sutazai-top status` prints.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub pid: u32,
    pub version: String,
    pub mode: Mode,
    pub auto_fix: bool,
    pub uptime_secs: u64,
    pub seq: u64,
    pub agents: usize,
    pub open_bottlenecks: usize,
    pub open_proposals: usize,
    pub applied_fixes: usize,
    pub active_batches: usize,
    pub is_root: bool,
}

fn status(state: &State, snap: &Snapshot) -> Status {
    Status {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        mode: snap.mode,
        auto_fix: snap.auto_fix,
        uptime_secs: state.started.elapsed().as_secs(),
        seq: snap.seq,
        agents: snap.containers.agents.len(),
        open_bottlenecks: snap.bottlenecks.len(),
        open_proposals: snap.proposals.iter().filter(|p| p.status.is_open()).count(),
        applied_fixes: snap
            .proposals
            .iter()
            .filter(|p| matches!(p.status, ProposalStatus::Applied { .. }))
            .count(),
        active_batches: snap.changes.active.len(),
        is_root: snap.host.is_root,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModeBody {
    pub mode: Mode,
    pub auto_fix: bool,
}

impl ModeBody {
    fn of(snap: &Snapshot) -> ModeBody {
        ModeBody {
            mode: snap.mode,
            auto_fix: snap.auto_fix,
        }
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> OpResult<T> {
    serde_json::from_slice(body).map_err(|err| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            format!("{what}: the body is not valid JSON of the expected shape: {err}"),
        )
    })
}

async fn put_mode(handle: &EngineHandle, body: &[u8]) -> OpResult<ModeBody> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wanted {
        mode: String,
    }
    let wanted: Wanted = parse_json(body, "PUT /api/mode expects {\"mode\": \"balanced\"}")?;
    let mode: Mode = wanted
        .mode
        .parse()
        .map_err(|err: String| Failure::new(StatusCode::BAD_REQUEST, err))?;
    ops::set_mode(handle, mode).await?;
    let snap = handle.snapshots.borrow().clone();
    Ok(ModeBody::of(&snap))
}

/// A bottleneck with its id (for `/api/eliminate/{id}`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BottleneckView {
    pub id: String,
    #[serde(flatten)]
    pub bottleneck: Bottleneck,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Detection {
    pub seq: u64,
    pub bottlenecks: Vec<BottleneckView>,
    /// The open proposals (waiting for approval).
    pub proposals: Vec<Proposal>,
}

async fn optimize(handle: &EngineHandle) -> OpResult<Detection> {
    let snap = ops::next_tick(handle).await?;
    Ok(Detection {
        seq: snap.seq,
        bottlenecks: snap
            .bottlenecks
            .iter()
            .map(|b| BottleneckView {
                id: b.id(),
                bottleneck: b.clone(),
            })
            .collect(),
        proposals: snap
            .proposals
            .iter()
            .filter(|p| p.status.is_open())
            .cloned()
            .collect(),
    })
}

/// The strongest open proposal for the bottleneck (the rule auto-fix follows: the highest
/// risk the mode allows, the first proposed among equals).
pub fn strongest_for(snap: &Snapshot, bottleneck_id: &str) -> Option<Proposal> {
    let open = || {
        snap.proposals
            .iter()
            .filter(|p| p.status.is_open() && p.bottleneck.id() == bottleneck_id)
    };
    let strongest = open().map(|p| p.fix.risk).max()?;
    open().find(|p| p.fix.risk == strongest).cloned()
}

async fn eliminate(handle: &EngineHandle, snap: &Snapshot, id: &str) -> OpResult<Proposal> {
    let proposal = strongest_for(snap, id).ok_or_else(|| {
        Failure::new(
            StatusCode::NOT_FOUND,
            format!("no open proposal for bottleneck {id:?}"),
        )
    })?;
    ops::approve(handle, proposal.id).await
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Stopping {
    pub pid: u32,
    /// Whether the service rolls its changes back before it exits.
    pub rollback: bool,
}

async fn stop(state: &State, body: &[u8]) -> OpResult<Stopping> {
    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct Wanted {
        rollback: Option<bool>,
    }
    let wanted: Wanted = if body.iter().all(u8::is_ascii_whitespace) {
        Wanted::default()
    } else {
        parse_json(
            body,
            "POST /api/stop expects {\"rollback\": true|false} or nothing",
        )?
    };
    let stop = state.stop.as_ref().ok_or_else(|| {
        Failure::new(
            StatusCode::CONFLICT,
            "this engine is not a service; it cannot be stopped through the API",
        )
    })?;
    let rollback = wanted.rollback.unwrap_or(stop.rollback_on_exit);
    // A full queue means a stop is already on its way: that is success too.
    let _ = stop.sender.try_send(StopRequest { rollback });
    Ok(Stopping {
        pid: std::process::id(),
        rollback,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_paths_params_and_methods() {
        assert!(matches!(
            find("POST", "/api/changes/rollback-all"),
            Matched::Found {
                action: Action::RollbackAll,
                ..
            }
        ));
        assert_eq!(
            find("POST", "/api/changes/7/rollback"),
            Matched::Found {
                action: Action::Rollback,
                params: vec!["7".to_string()]
            }
        );
        assert_eq!(
            find("DELETE", "/api/mode"),
            Matched::WrongMethod(vec!["GET", "PUT"])
        );
        assert_eq!(find("GET", "/api/nothing"), Matched::NotFound);
        assert_eq!(find("POST", "/api/proposals//approve"), Matched::NotFound);
        assert_eq!(find("GET", "/api/health/"), Matched::NotFound);
    }

    /// The document and the router describe the same API: every (method, path) of one is
    /// in the other.
    #[test]
    fn openapi_document_and_router_agree() {
        let doc: serde_json::Value = serde_json::from_str(super::super::OPENAPI).unwrap();
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
        let mut documented = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                if ["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                    documented.push(format!("{} {path}", method.to_uppercase()));
                }
            }
        }
        let mut routed: Vec<String> = ROUTES
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        documented.sort();
        routed.sort();
        assert_eq!(documented, routed);
    }

    #[test]
    fn bad_ids_are_400_naming_the_value() {
        let reply = id_param(&["x1".to_string()], "proposal").err().unwrap();
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert!(String::from_utf8_lossy(&reply.body).contains("x1"));
    }

    #[test]
    fn kind_names_are_the_json_names() {
        for kind in crate::model::BottleneckKind::ALL {
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::json!(kind.name())
            );
        }
    }
}
