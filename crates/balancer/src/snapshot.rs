//! What the balancer shows the faces (pane, API, Prometheus, report): plain data, one value
//! per tick, built from the lock-free counters on the request path.

use serde::{Deserialize, Serialize};

/// The whole balancer as of one tick.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct BalancerSnapshot {
    /// Where the proxy listens, as bound (`127.0.0.1:8080`).
    pub listen: String,
    /// Requests received since start, and per second over the last tick.
    pub requests_total: u64,
    pub requests_per_sec: f64,
    /// Requests waiting for a backend with room right now.
    pub queued: u64,
    /// Answered 503 because every backend was full past the queue, or none was up.
    pub rejected_total: u64,
    /// Retries sent, and retries refused by the retry budget.
    pub retries_total: u64,
    pub retries_over_budget_total: u64,
    /// Requests answered 400 / 431 / 408 before reaching a backend.
    pub bad_requests_total: u64,
    /// Client connections hyper served from some request on: h2c, and the HTTP/1.x
    /// requests the fast path leaves to it (HTTP/1.0, upgrades, Expect, chunked or large
    /// uploads, malformed or split heads). The rest never leave the fast path.
    #[serde(default)]
    pub general_path_connections_total: u64,
    pub pools: Vec<PoolSnapshot>,
    /// How the proxy's thread polled for work before sleeping.
    #[serde(default)]
    pub busy_poll: BusyPollSnapshot,
    /// Containers labelled `sutazai.backend.port` that are not backends, each with the
    /// reason (a bad label, reachable only on a bridge address, an address taken...).
    #[serde(default)]
    pub docker_skipped: Vec<String>,
}

/// Busy polling (`[balancer] busy_poll_us`): stretches of polling for work before sleeping.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default, PartialEq, Eq)]
pub struct BusyPollSnapshot {
    /// The longest stretch, in microseconds; 0: off (configured so, or more than one
    /// worker thread).
    pub window_us: u64,
    /// Stretches that ended with work.
    pub paid_total: u64,
    /// Stretches that ran out of time (the thread then slept).
    pub wasted_total: u64,
    /// Time from the start of each stretch to its end (work came, or the window ran out),
    /// in nanoseconds; wall clock, so other tasks' turns meanwhile are in it.
    pub polling_ns_total: u64,
}

/// A pool of backends for one request type, and how it picks among them.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct PoolSnapshot {
    pub name: String,
    /// The algorithm's name as in config (`round-robin`, `peak-ewma`, ...).
    pub algorithm: String,
    /// The rule sending requests here (`header x-request-type: compute`, `path /v1/embed*`,
    /// `default`).
    pub rule: String,
    pub backends: Vec<BackendSnapshot>,
    /// Backends chosen in panic mode since start: every backend was ejected or had an open
    /// circuit, so those were ignored rather than answering 503 (as Envoy does).
    #[serde(default)]
    pub panic_choices_total: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct BackendSnapshot {
    /// `host:port`, the backend's identity (and its place on the hash ring).
    pub id: String,
    pub host: String,
    pub port: u16,
    pub weight: u32,
    pub max_connections: u32,
    pub source: BackendSource,
    pub health: Health,
    pub circuit: CircuitState,
    pub in_flight: u64,
    pub requests_total: u64,
    pub requests_per_sec: f64,
    /// 5xx answers, connect failures and timeouts.
    pub errors_total: u64,
    /// Latency over the last tick's requests (`None` when there were none).
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    /// The peak-EWMA latency estimate the predictive algorithm uses.
    pub ewma_ms: f64,
    /// Times ejected as an outlier since start; `ejected_for_secs` while out.
    pub ejections: u32,
    pub ejected_for_secs: Option<u64>,
    /// Draining: no new requests (set through the API), in-flight ones finish.
    #[serde(default)]
    pub draining: bool,
}

/// Where a backend came from.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum BackendSource {
    #[default]
    Config,
    Api,
    /// A container carrying the `sutazai.backend.port` label.
    Docker {
        container: String,
    },
}

/// The active health check's verdict, or the outlier detector's.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// No check has finished yet (the backend takes traffic meanwhile).
    #[default]
    Unknown,
    Up,
    Down,
    /// Taken out by passive outlier detection for a while.
    Ejected,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    #[default]
    Closed,
    Open,
    /// One probe request is let through; its outcome closes or reopens the circuit.
    HalfOpen,
}

impl Health {
    pub fn name(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
            Health::Ejected => "ejected",
        }
    }
}

impl CircuitState {
    pub fn name(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half-open",
        }
    }
}
