//! The load balancer's routes: adding, removing and changing backends at run time
//! (`/api/balancer/backends`). The figures (`GET /api/balancer`) come from the snapshot.

use hyper::StatusCode;
use serde::{Deserialize, Serialize};

use super::{State, parse_json};
use crate::api::ops::{Failure, OpResult};

/// The answer to a backend added or removed through the API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackendChange {
    /// `host:port`.
    pub backend: String,
    /// The pools it was added to or removed from.
    pub pools: Vec<String>,
}

fn running_balancer(state: &State) -> OpResult<std::sync::Arc<sutazai_balancer::Balancer>> {
    state.handle.balancer.clone().ok_or_else(|| {
        Failure::new(
            StatusCode::CONFLICT,
            "the load balancer is off ([balancer] enabled = false); no backend can be changed",
        )
    })
}

/// The backend a `POST /api/balancer/backends` body describes; 400 naming the bad field.
fn backend_spec(body: &[u8]) -> OpResult<sutazai_balancer::BackendSpec> {
    const SHAPE: &str = "POST /api/balancer/backends expects {\"host\": \"127.0.0.1\", \"port\": 9001, \
         \"weight\": 1, \"max_connections\": 1024, \"pool\": \"default\"} (weight, max_connections, pool optional)";
    let bad = |message: String| Failure::new(StatusCode::BAD_REQUEST, message);
    let value: serde_json::Value = parse_json(body, SHAPE)?;
    let Some(fields) = value.as_object() else {
        return Err(bad(format!("{SHAPE}; the body is not a JSON object")));
    };
    for key in fields.keys() {
        if !["host", "port", "weight", "max_connections", "pool"].contains(&key.as_str()) {
            return Err(bad(format!("unknown field {key:?}; {SHAPE}")));
        }
    }
    let host = match fields.get("host") {
        Some(serde_json::Value::String(host)) if !host.trim().is_empty() => host.trim(),
        _ => return Err(bad("field \"host\" must be a non-empty string".to_string())),
    };
    let number = |key: &str, min: u64, max: u64| -> OpResult<Option<u64>> {
        match fields.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
                _ => Err(bad(format!(
                    "field {key:?} must be a whole number from {min} to {max}, not {v}"
                ))),
            },
        }
    };
    let Some(port) = number("port", 1, 65535)? else {
        return Err(bad("field \"port\" is missing".to_string()));
    };
    let mut spec = sutazai_balancer::BackendSpec::new(host, port as u16);
    if let Some(weight) = number("weight", 1, u64::from(sutazai_balancer::MAX_BACKEND_WEIGHT))? {
        spec.weight = weight as u32;
    }
    if let Some(max) = number("max_connections", 1, u64::from(u32::MAX))? {
        spec.max_connections = max as u32;
    }
    match fields.get("pool") {
        None => {}
        Some(serde_json::Value::String(pool)) => spec.pool = pool.clone(),
        Some(other) => return Err(bad(format!("field \"pool\" must be a string, not {other}"))),
    }
    Ok(spec)
}

pub(super) async fn balancer_add(state: &State, body: &[u8]) -> OpResult<BackendChange> {
    use sutazai_balancer::BalancerError;
    let balancer = running_balancer(state)?;
    let spec = backend_spec(body)?;
    let pool = if spec.pool.is_empty() {
        sutazai_balancer::BalancerConfig::DEFAULT_POOL.to_string()
    } else {
        spec.pool.clone()
    };
    let backend = format!("{}:{}", spec.host, spec.port);
    // Resolving a host name may block: not on the API's runtime threads.
    let added = tokio::task::spawn_blocking(move || balancer.add_backend(spec))
        .await
        .map_err(|err| Failure::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))?;
    match added {
        Ok(()) => Ok(BackendChange {
            backend,
            pools: vec![pool],
        }),
        Err(err @ BalancerError::Duplicate { .. }) => {
            Err(Failure::new(StatusCode::CONFLICT, err.to_string()))
        }
        Err(BalancerError::UnknownPool(name)) => Err(Failure::new(
            StatusCode::BAD_REQUEST,
            format!("field \"pool\": no pool named {name:?}"),
        )),
        Err(err @ BalancerError::Resolve { .. }) => Err(Failure::new(
            StatusCode::BAD_REQUEST,
            format!("field \"host\": {err}"),
        )),
        Err(err) => Err(Failure::new(StatusCode::BAD_REQUEST, err.to_string())),
    }
}

/// `DELETE /api/balancer/backends/{host:port}`, from the pool named in an optional
/// `{"pool": "..."}` body, else from every pool holding it.
pub(super) fn balancer_remove(
    state: &State,
    backend: &str,
    body: &[u8],
) -> OpResult<BackendChange> {
    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct Wanted {
        pool: Option<String>,
    }
    let balancer = running_balancer(state)?;
    let bad = |message: String| Failure::new(StatusCode::BAD_REQUEST, message);
    let (host, port) = backend_address(backend)?;
    let wanted: Wanted = if body.iter().all(u8::is_ascii_whitespace) {
        Wanted::default()
    } else {
        parse_json(
            body,
            "DELETE /api/balancer/backends/{host:port} expects {\"pool\": \"name\"} or nothing",
        )?
    };
    let pools = match wanted.pool {
        Some(pool) => vec![pool],
        None => balancer.pool_names(),
    };
    let mut removed = Vec::new();
    for pool in pools {
        match balancer.remove_backend(&pool, host, port) {
            Ok(true) => removed.push(pool),
            Ok(false) => {}
            Err(err) => return Err(bad(format!("field \"pool\": {err}"))),
        }
    }
    if removed.is_empty() {
        return Err(Failure::new(
            StatusCode::NOT_FOUND,
            format!("backend {backend} is in no pool"),
        ));
    }
    Ok(BackendChange {
        backend: backend.to_string(),
        pools: removed,
    })
}

/// `host:port` (brackets around an IPv6 host) from a route's path.
fn backend_address(backend: &str) -> Result<(&str, u16), Failure> {
    let bad = |message: String| Failure::new(StatusCode::BAD_REQUEST, message);
    let Some((host, port)) = backend.rsplit_once(':') else {
        return Err(bad(format!("backend {backend:?}: expected host:port")));
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port
        .parse()
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| bad(format!("backend {backend:?}: the port is not 1 to 65535")))?;
    Ok((host, port))
}

/// `PATCH /api/balancer/backends/{host:port}` with `{"weight": n, "drain": bool, "pool":
/// "name"}` (weight and/or drain; pool optional): in the named pool, else in every pool
/// holding it. Counters and health stay: it is the same backend.
pub(super) fn balancer_change(
    state: &State,
    backend: &str,
    body: &[u8],
) -> OpResult<BackendChange> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wanted {
        weight: Option<u32>,
        drain: Option<bool>,
        pool: Option<String>,
    }
    let balancer = running_balancer(state)?;
    let bad = |message: String| Failure::new(StatusCode::BAD_REQUEST, message);
    let (host, port) = backend_address(backend)?;
    let usage = "PATCH /api/balancer/backends/{host:port} expects {\"weight\": 1..1000, \"drain\": true|false, \"pool\": \"name\"}";
    let wanted: Wanted = parse_json(body, usage)?;
    if wanted.weight.is_none() && wanted.drain.is_none() {
        return Err(bad(format!("nothing to change: {usage}")));
    }
    let update = sutazai_balancer::BackendUpdate {
        weight: wanted.weight,
        drain: wanted.drain,
    };
    let pools = match wanted.pool {
        Some(pool) => vec![pool],
        None => balancer.pool_names(),
    };
    let mut changed = Vec::new();
    for pool in pools {
        match balancer.change_backend(&pool, host, port, update) {
            Ok(true) => changed.push(pool),
            Ok(false) => {}
            Err(sutazai_balancer::BalancerError::UnknownPool(name)) => {
                return Err(bad(format!("field \"pool\": no pool named {name:?}")));
            }
            Err(err) => return Err(bad(format!("field \"weight\": {err}"))),
        }
    }
    if changed.is_empty() {
        return Err(Failure::new(
            StatusCode::NOT_FOUND,
            format!("backend {backend} is in no pool"),
        ));
    }
    Ok(BackendChange {
        backend: backend.to_string(),
        pools: changed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any body, and JSON objects of the right keys with any values: a backend or a 400
        /// naming the field, never a panic.
        #[test]
        fn fuzz_backend_bodies(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120),
            json in "\\{(\"(host|port|weight|max_connections|pool|x)\": ?(\"[ -~]{0,20}\"|-?[0-9]{0,25}(\\.[0-9]{1,3})?|null|true|\\[\\]|\\{\\}), ?){0,6}\"port\": ?[0-9]{0,6}\\}",
        ) {
            let _ = backend_spec(&bytes);
            if let Err(failure) = backend_spec(json.as_bytes()) {
                proptest::prop_assert_eq!(failure.status, StatusCode::BAD_REQUEST);
            }
        }
    }
}
