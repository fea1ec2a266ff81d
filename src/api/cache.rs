//! `GET/PUT/DELETE /api/cache/{key}`: the agents' cache over the API, binary bodies.
//!
//! These routes need request headers (`X-Agent`, `X-Priority`, `X-Private`), a larger body
//! limit than the JSON routes and a response header (`X-Cache-Level`), so the server hands
//! them the whole request rather than going through `routes::dispatch`.
//!
//! The key is the path segment, percent-decoded to bytes (so any byte string can be a key:
//! `/` is `%2F`). The body limit for a PUT is L1's capacity, but at least the API's usual
//! 64 KiB and at most 64 MiB: a larger value would have to arrive whole in memory before the
//! cache could even refuse it.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};

use super::routes::{Action, Reply, State};
use sutazai_cache::CacheConfig;
use sutazai_cache::{Cache, CacheError, Level, MAX_AGENT_LEN, Priority};

/// The most a PUT body may be, whatever L1's size.
pub const MAX_VALUE_BODY: usize = 64 << 20;
/// The agent when a request names none.
pub const DEFAULT_AGENT: &str = "anonymous";
pub const X_AGENT: &str = "x-agent";
pub const X_PRIORITY: &str = "x-priority";
pub const X_PRIVATE: &str = "x-private";
pub const X_CACHE_LEVEL: &str = "x-cache-level";
const OCTET_STREAM: &str = "application/octet-stream";

/// The largest PUT body accepted for a cache so configured.
pub fn body_limit(config: &CacheConfig) -> usize {
    let l1 = usize::try_from(config.l1_bytes).unwrap_or(usize::MAX);
    l1.clamp(super::MAX_BODY, MAX_VALUE_BODY)
}

/// Whether the server hands this action's request to [`respond`].
pub fn is_cache_data(action: Action) -> bool {
    matches!(
        action,
        Action::CacheGet | Action::CachePut | Action::CacheDelete
    )
}

/// One request to a cache data route.
pub async fn respond(
    state: &State,
    action: Action,
    params: &[String],
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    match serve(state, action, params, req).await {
        Ok(response) => response,
        Err(reply) => plain(reply),
    }
}

async fn serve(
    state: &State,
    action: Action,
    params: &[String],
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Reply> {
    let cache = state.handle.cache.clone().ok_or_else(|| {
        Reply::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the cache is off ([cache] enabled = false)",
        )
    })?;
    let raw = params.first().map(String::as_str).unwrap_or_default();
    let key = percent_decode(raw).map_err(|why| bad(format!("key {raw:?}: {why}")))?;
    let agent = agent_of(&req)?;
    match action {
        Action::CacheGet => get(cache, key, agent).await,
        Action::CachePut => put(cache, key, agent, req).await,
        _ => delete(cache, key, agent).await,
    }
}

async fn get(
    cache: Arc<Cache>,
    key: Vec<u8>,
    agent: String,
) -> Result<Response<Full<Bytes>>, Reply> {
    // L3 reads files: off the async workers.
    let found = blocking(move || cache.get(&key, &agent)).await?;
    let (value, level) = found.ok_or_else(|| {
        Reply::error(
            StatusCode::NOT_FOUND,
            "no cache entry under this key for this agent",
        )
    })?;
    let mut response = plain(Reply {
        status: StatusCode::OK,
        content_type: OCTET_STREAM,
        body: value,
    });
    response.headers_mut().insert(
        HeaderName::from_static(X_CACHE_LEVEL),
        HeaderValue::from_static(level.label()),
    );
    Ok(response)
}

/// What a successful PUT answers.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Stored {
    pub level: Level,
    pub bytes: usize,
    pub private: bool,
}

async fn put(
    cache: Arc<Cache>,
    key: Vec<u8>,
    agent: String,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Reply> {
    let priority = priority_of(&req)?;
    let private = private_of(&req)?;
    let limit = body_limit(cache.config());
    let value = read_value(req, limit).await?;
    let bytes = value.len();
    let placed = blocking(move || cache.put(&key, value, &agent, priority, !private)).await?;
    match placed {
        Ok(level) => Ok(plain(Reply::json(
            StatusCode::OK,
            &Stored {
                level,
                bytes,
                private,
            },
        ))),
        Err(err @ CacheError::Refused { .. }) => Err(Reply::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &err.to_string(),
        )),
        Err(err) => Err(bad(err.to_string())),
    }
}

async fn delete(
    cache: Arc<Cache>,
    key: Vec<u8>,
    agent: String,
) -> Result<Response<Full<Bytes>>, Reply> {
    if blocking(move || cache.delete(&key, &agent)).await? {
        Ok(plain(Reply::json(
            StatusCode::OK,
            &serde_json::json!({ "deleted": true }),
        )))
    } else {
        Err(Reply::error(
            StatusCode::NOT_FOUND,
            "no cache entry under this key for this agent",
        ))
    }
}

/// How long a cache operation may take before its request is answered 503: a read stuck on
/// a hung disk keeps its blocking thread, but not the client.
const CACHE_OP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Reply> {
    blocking_within(CACHE_OP_TIMEOUT, work).await
}

/// The cache's work on the blocking pool, given up after `limit`.
async fn blocking_within<T: Send + 'static>(
    limit: std::time::Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Reply> {
    match tokio::time::timeout(limit, tokio::task::spawn_blocking(work)).await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(err)) => Err(Reply::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("the cache operation failed: {err}"),
        )),
        Err(_) => Err(Reply::error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "the cache did not answer within {} s (a stalled disk?); try again later",
                limit.as_secs_f64()
            ),
        )),
    }
}

fn bad(message: String) -> Reply {
    Reply::error(StatusCode::BAD_REQUEST, &message)
}

fn header<'a>(req: &'a Request<Incoming>, name: &str) -> Result<Option<&'a str>, Reply> {
    match req.headers().get(name) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|v| Some(v.trim()))
            .map_err(|_| bad(format!("header {name} is not visible ASCII"))),
    }
}

/// `X-Agent`: 1 to 128 visible ASCII characters; absent means "anonymous".
fn agent_of(req: &Request<Incoming>) -> Result<String, Reply> {
    let Some(agent) = header(req, X_AGENT)? else {
        return Ok(DEFAULT_AGENT.to_string());
    };
    let visible = agent.bytes().all(|b| b.is_ascii_graphic());
    if agent.is_empty() || agent.len() > MAX_AGENT_LEN || !visible {
        return Err(bad(format!(
            "header {X_AGENT} must be 1 to {MAX_AGENT_LEN} visible ASCII characters without spaces"
        )));
    }
    Ok(agent.to_string())
}

/// `X-Priority`: low, normal (the default) or high.
fn priority_of(req: &Request<Incoming>) -> Result<Priority, Reply> {
    match header(req, X_PRIORITY)?
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("normal") => Ok(Priority::Normal),
        Some("low") => Ok(Priority::Low),
        Some("high") => Ok(Priority::High),
        Some(other) => Err(bad(format!(
            "header {X_PRIORITY} = {other:?}: expected low, normal or high"
        ))),
    }
}

/// `X-Private: 1` keeps the entry to the agent; absent or 0 shares it.
fn private_of(req: &Request<Incoming>) -> Result<bool, Reply> {
    match header(req, X_PRIVATE)?
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("0") | Some("false") => Ok(false),
        Some("1") | Some("true") => Ok(true),
        Some(other) => Err(bad(format!(
            "header {X_PRIVATE} = {other:?}: expected 1 (private) or 0 (shared)"
        ))),
    }
}

async fn read_value(req: Request<Incoming>, limit: usize) -> Result<Bytes, Reply> {
    let too_large = || {
        Reply::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the value is larger than the cache's body limit of {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(err) => Err(bad(format!("cannot read the request body: {err}"))),
    }
}

/// `%XX` escapes to bytes; everything else as it is.
pub fn percent_decode(text: &str) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .ok_or_else(|| format!("bad percent escape at byte {i}"))?;
        out.push(hex);
        i += 3;
    }
    Ok(out)
}

/// Every byte a path segment may not hold as it is, escaped.
pub fn percent_encode(key: &[u8]) -> String {
    key.iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn plain(reply: Reply) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(reply.body));
    *response.status_mut() = reply.status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache operation stuck on a hung disk answers 503 in time; its thread stays stuck,
    /// the client does not (issue 15).
    #[tokio::test]
    async fn a_stuck_cache_operation_is_answered_503_in_time() {
        let limit = std::time::Duration::from_millis(100);
        let stuck = blocking_within(limit, || {
            std::thread::sleep(std::time::Duration::from_secs(2))
        });
        let answered = tokio::time::timeout(std::time::Duration::from_secs(1), stuck)
            .await
            .expect("answered within the limit, not after the work");
        let reply = answered.expect_err("a 503, not the work's result");
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(blocking_within(limit, || 7).await.ok(), Some(7));
    }

    #[test]
    fn keys_roundtrip_through_percent_encoding() {
        let key: Vec<u8> = (0..=255).collect();
        assert_eq!(percent_decode(&percent_encode(&key)).unwrap(), key);
        assert_eq!(percent_decode("a%2Fb%00").unwrap(), b"a/b\0");
        assert!(percent_decode("a%2").is_err());
        assert!(percent_decode("%zz").is_err());
    }

    #[test]
    fn the_body_limit_follows_l1_within_bounds() {
        let with = |l1| {
            body_limit(&CacheConfig {
                l1_bytes: l1,
                ..CacheConfig::default()
            })
        };
        assert_eq!(with(256 << 20), 64 << 20);
        assert_eq!(with(1 << 20), 1 << 20);
        assert_eq!(with(0), 64 << 10);
    }
}
