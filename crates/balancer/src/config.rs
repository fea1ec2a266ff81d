//! The balancer's `[balancer]` config section, its pools and backends. Values are typed
//! while the TOML is parsed (an address, an algorithm, numbers in range), so a bad one is
//! refused naming its key and line; [`BalancerConfig::problem`] checks the rules across keys.

use std::net::SocketAddr;

use serde::{Deserialize, Deserializer, Serialize};
use sutazai_config_check::in_range;

use crate::pick::Algorithm;

/// The load balancer: an HTTP reverse proxy in front of agent
/// replicas. Times in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BalancerConfig {
    /// Run the proxy at all.
    pub enabled: bool,
    /// Where the proxy listens ("127.0.0.1:8080").
    #[serde(deserialize_with = "listen")]
    pub listen: SocketAddr,
    /// Threads of the proxy's own runtime (1..=64); 1 runs a single-threaded runtime.
    #[serde(deserialize_with = "worker_threads")]
    pub worker_threads: usize,
    /// With one thread: how long it polls for work before it sleeps, in microseconds
    /// (0..=1000; 0: never), while that pays (see `balancer::proxy::busy_poll`).
    #[serde(deserialize_with = "busy_poll_us")]
    pub busy_poll_us: u64,
    /// The default pool's algorithm (one of [`Algorithm::NAMES`]).
    pub algorithm: Algorithm,
    /// Sticky key for consistent-hash: this request header, else this cookie.
    #[serde(deserialize_with = "session_header")]
    pub session_header: String,
    pub session_cookie: String,
    /// Requests that may wait for a backend with room when every one is full (0: none).
    #[serde(deserialize_with = "max_queue")]
    pub max_queue: u32,
    /// How long a queued request waits before it is answered 503.
    #[serde(deserialize_with = "positive_ms")]
    pub queue_timeout_ms: u64,
    /// Retries allowed, as a percent of the requests of the last seconds (plus a few).
    #[serde(deserialize_with = "percent")]
    pub retry_budget_percent: u32,
    #[serde(deserialize_with = "positive_ms")]
    pub connect_timeout_ms: u64,
    /// Until the backend's response headers arrive.
    #[serde(deserialize_with = "positive_ms")]
    pub request_timeout_ms: u64,
    /// A client must send a request's headers within this time.
    #[serde(deserialize_with = "positive_ms")]
    pub header_timeout_ms: u64,
    /// A client connection with no bytes moving for this long is closed.
    #[serde(deserialize_with = "positive_ms")]
    pub idle_timeout_ms: u64,
    /// Peak-EWMA: the latency assumed for a backend not measured yet, and the decay time.
    #[serde(deserialize_with = "positive_ms")]
    pub default_rtt_ms: u64,
    #[serde(deserialize_with = "positive_secs")]
    pub ewma_decay_secs: u64,
    pub health: BalancerHealthConfig,
    pub outlier: BalancerOutlierConfig,
    pub breaker: BalancerBreakerConfig,
    pub backends: Vec<BalancerBackendConfig>,
    pub pools: Vec<BalancerPoolConfig>,
}

impl Default for BalancerConfig {
    fn default() -> Self {
        BalancerConfig {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            worker_threads: 1,
            busy_poll_us: 50,
            algorithm: Algorithm::PeakEwma,
            session_header: "x-session-id".to_string(),
            session_cookie: "session".to_string(),
            max_queue: 1024,
            queue_timeout_ms: 1000,
            retry_budget_percent: 20,
            connect_timeout_ms: 1000,
            request_timeout_ms: 30_000,
            header_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            default_rtt_ms: 30,
            ewma_decay_secs: 10,
            health: BalancerHealthConfig::default(),
            outlier: BalancerOutlierConfig::default(),
            breaker: BalancerBreakerConfig::default(),
            backends: Vec::new(),
            pools: Vec::new(),
        }
    }
}

/// Active health checks: GET `path` on every backend each interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BalancerHealthConfig {
    #[serde(deserialize_with = "check_path")]
    pub path: String,
    #[serde(deserialize_with = "positive_ms")]
    pub interval_ms: u64,
    #[serde(deserialize_with = "positive_ms")]
    pub timeout_ms: u64,
    /// Consecutive passes that bring a backend up, failures that take it down.
    #[serde(deserialize_with = "at_least_one")]
    pub rise: u32,
    #[serde(deserialize_with = "at_least_one")]
    pub fall: u32,
}

impl Default for BalancerHealthConfig {
    fn default() -> Self {
        BalancerHealthConfig {
            path: "/health".to_string(),
            interval_ms: 2000,
            timeout_ms: 1000,
            rise: 2,
            fall: 3,
        }
    }
}

/// Passive outlier ejection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BalancerOutlierConfig {
    #[serde(deserialize_with = "at_least_one")]
    pub consecutive_failures: u32,
    #[serde(deserialize_with = "positive_ms")]
    pub base_ejection_ms: u64,
    #[serde(deserialize_with = "positive_ms")]
    pub max_ejection_ms: u64,
    #[serde(deserialize_with = "percent")]
    pub max_ejected_percent: u32,
}

impl Default for BalancerOutlierConfig {
    fn default() -> Self {
        BalancerOutlierConfig {
            consecutive_failures: 5,
            base_ejection_ms: 30_000,
            max_ejection_ms: 300_000,
            max_ejected_percent: 10,
        }
    }
}

/// The circuit breaker per backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BalancerBreakerConfig {
    #[serde(deserialize_with = "at_least_one")]
    pub failure_threshold: u32,
    #[serde(deserialize_with = "positive_ms")]
    pub open_ms: u64,
}

impl Default for BalancerBreakerConfig {
    fn default() -> Self {
        BalancerBreakerConfig {
            failure_threshold: 5,
            open_ms: 10_000,
        }
    }
}

/// One backend from the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalancerBackendConfig {
    pub host: String,
    pub port: u16,
    #[serde(default = "one")]
    pub weight: u32,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// The pool it serves; empty means the default pool.
    #[serde(default)]
    pub pool: String,
}

/// A pool for one request type: requests matching its rule go to its backends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalancerPoolConfig {
    pub name: String,
    /// None means `[balancer] algorithm`.
    #[serde(default)]
    pub algorithm: Option<Algorithm>,
    /// "name: value": requests carrying this header (value compared exactly).
    #[serde(default)]
    pub header: String,
    /// Requests whose path starts with this.
    #[serde(default)]
    pub path_prefix: String,
}

fn one() -> u32 {
    1
}

/// A backend's connection limit when none is given.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 1024;

fn default_max_connections() -> u32 {
    DEFAULT_MAX_CONNECTIONS
}

/// Weight bounds of a backend (so that smooth weighted round-robin sums cannot overflow).
pub const MAX_BACKEND_WEIGHT: u32 = 1000;

impl BalancerBackendConfig {
    /// Why this backend cannot be used (`key` names it, e.g. "balancer.backends[2]").
    pub fn problem(&self, key: &str) -> Option<String> {
        if self.host.trim().is_empty() {
            return Some(format!("{key}.host is empty"));
        }
        if self.port == 0 {
            return Some(format!("{key}.port = 0: expected 1..=65535"));
        }
        if !(1..=MAX_BACKEND_WEIGHT).contains(&self.weight) {
            return Some(format!(
                "{key}.weight = {} must be between 1 and {MAX_BACKEND_WEIGHT}",
                self.weight
            ));
        }
        if self.max_connections == 0 {
            return Some(format!("{key}.max_connections = 0 must be at least 1"));
        }
        None
    }
}

impl BalancerPoolConfig {
    /// The header rule as (lower-case name, value), or why it is not one.
    pub fn header_rule(&self) -> Result<Option<(String, String)>, String> {
        if self.header.trim().is_empty() {
            return Ok(None);
        }
        let Some((name, value)) = self.header.split_once(':') else {
            return Err(format!(
                "header = {:?}: expected \"name: value\" such as \"x-request-type: compute\"",
                self.header
            ));
        };
        let name = name.trim().to_ascii_lowercase();
        if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(format!(
                "header = {:?}: {name:?} is not a header name",
                self.header
            ));
        }
        Ok(Some((name, value.trim().to_string())))
    }
}

impl BalancerConfig {
    /// The pool every request matching no rule goes to.
    pub const DEFAULT_POOL: &'static str = "default";

    /// Why the keys together make no sense (a backend's unknown pool, a pool without a rule,
    /// a pool named twice), naming the key; `None` when they do.
    pub fn problem(&self) -> Option<String> {
        let mut names = vec![Self::DEFAULT_POOL];
        for (i, pool) in self.pools.iter().enumerate() {
            let key = format!("balancer.pools[{i}]");
            if pool.name.trim().is_empty() {
                return Some(format!("{key}.name is empty"));
            }
            if names.contains(&pool.name.as_str()) {
                return Some(format!(
                    "{key}.name = {:?} is used twice (\"default\" is the pool for unmatched requests)",
                    pool.name
                ));
            }
            names.push(&pool.name);
            match pool.header_rule() {
                Err(problem) => return Some(format!("{key}.{problem}")),
                Ok(None) if pool.path_prefix.is_empty() => {
                    return Some(format!(
                        "{key} ({:?}) has neither header nor path_prefix: no request would reach it",
                        pool.name
                    ));
                }
                Ok(_) => {}
            }
            if !pool.path_prefix.is_empty() && !pool.path_prefix.starts_with('/') {
                return Some(format!(
                    "{key}.path_prefix = {:?} must start with '/'",
                    pool.path_prefix
                ));
            }
        }
        for (i, backend) in self.backends.iter().enumerate() {
            let key = format!("balancer.backends[{i}]");
            if let Some(problem) = backend.problem(&key) {
                return Some(problem);
            }
            if !backend.pool.is_empty() && !names.contains(&backend.pool.as_str()) {
                return Some(format!(
                    "{key}.pool = {:?}: no such pool (pools: {})",
                    backend.pool,
                    names.join(", ")
                ));
            }
            // The API answers 409 to the same backend twice in a pool; so does the file.
            let pool_of = |b: &BalancerBackendConfig| match b.pool.as_str() {
                "" => Self::DEFAULT_POOL.to_string(),
                named => named.to_string(),
            };
            let same = |b: &&BalancerBackendConfig| {
                b.host.trim().eq_ignore_ascii_case(backend.host.trim())
                    && b.port == backend.port
                    && pool_of(b) == pool_of(backend)
            };
            if let Some(first) = self.backends[..i].iter().position(|b| same(&b)) {
                return Some(format!(
                    "{key} repeats balancer.backends[{first}] ({}:{} in pool {:?})",
                    backend.host.trim(),
                    backend.port,
                    pool_of(backend)
                ));
            }
        }
        if self.outlier.max_ejection_ms < self.outlier.base_ejection_ms {
            return Some(format!(
                "balancer.outlier.max_ejection_ms = {} is below base_ejection_ms = {}",
                self.outlier.max_ejection_ms, self.outlier.base_ejection_ms
            ));
        }
        None
    }
}

fn listen<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    sutazai_config_check::socket_addr(d, "listen")
}

fn worker_threads<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    in_range(d, "worker_threads", 1..=64)
}

fn busy_poll_us<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    in_range(d, "busy_poll_us", ..=1000)
}

fn max_queue<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    in_range(d, "max_queue", ..=1_000_000)
}

/// Milliseconds: at least one, at most a day.
fn positive_ms<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    in_range(d, "milliseconds", 1..=86_400_000)
}

/// Seconds: at least one, at most a day.
fn positive_secs<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    in_range(d, "seconds", 1..=86_400)
}

fn percent<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    in_range(d, "percent", ..=100)
}

fn at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    in_range(d, "count", 1..)
}

/// A header name (or "" for none): a newline or a space here would be refused only when the
/// proxy starts.
fn session_header<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = String::deserialize(d)?;
    if !v.is_empty()
        && hyper::header::HeaderName::from_bytes(v.to_ascii_lowercase().as_bytes()).is_err()
    {
        return Err(serde::de::Error::custom(format!(
            "session_header = {v:?} is not a header name"
        )));
    }
    Ok(v)
}

fn check_path<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = String::deserialize(d)?;
    if !v.starts_with('/') || v.parse::<hyper::http::uri::PathAndQuery>().is_err() {
        return Err(serde::de::Error::custom(format!(
            "path = {v:?}: expected a path such as \"/health\""
        )));
    }
    Ok(v)
}
