//! Configuration: TOML, every key optional with a default, unknown keys rejected.
//!
//! Lookup order: `--config PATH`, then the user's config dir (`sutazai-top/config.toml`),
//! then `/etc/sutazai/config.toml`, else built-in defaults. CLI flags override the file.
//! Every error names the key and, where the file has it, the line.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

/// How far the engine may go when it fixes things (given teeth by the optimizer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Low-risk changes only.
    #[default]
    Conservative,
    /// Up to medium risk.
    Balanced,
    /// Everything.
    Aggressive,
}

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Mode::Conservative => "conservative",
            Mode::Balanced => "balanced",
            Mode::Aggressive => "aggressive",
        }
    }

    /// The key that selects this mode in the TUI.
    pub fn key(self) -> char {
        match self {
            Mode::Conservative => '1',
            Mode::Balanced => '2',
            Mode::Aggressive => '3',
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "1" | "conservative" => Ok(Mode::Conservative),
            "2" | "balanced" => Ok(Mode::Balanced),
            "3" | "aggressive" => Ok(Mode::Aggressive),
            other => Err(format!(
                "unknown mode '{other}': expected conservative, balanced or aggressive (or 1, 2, 3)"
            )),
        }
    }
}

/// The shortest tick the engine accepts; faster sampling costs more than it shows.
pub const MIN_INTERVAL_MS: u64 = 250;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Sampling tick in milliseconds (at least 250).
    #[serde(deserialize_with = "interval_ms")]
    pub interval_ms: u64,
    /// Minutes of history kept for sparklines and trends (1..=1440).
    #[serde(deserialize_with = "history_minutes")]
    pub history_minutes: u64,
    /// Mode at start.
    pub mode: Mode,
    /// How many of the busiest processes each snapshot keeps.
    #[serde(deserialize_with = "top_processes")]
    pub top_processes: usize,
    /// Directory where `e` writes reports.
    pub report_dir: PathBuf,
    pub host: HostConfig,
    pub docker: DockerConfig,
    pub optimizer: OptimizerConfig,
    pub detect: DetectConfig,
    pub log: LogConfig,
    pub api: ApiConfig,
    pub service: ServiceConfig,
    pub alerts: AlertsConfig,
    pub cache: CacheConfig,
    pub balancer: BalancerConfig,
}

/// The agents' cache (see `crate::cache`): three levels, sizes in bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Run the cache at all.
    pub enabled: bool,
    /// L1, values in memory as they are; 0 turns the level off.
    pub l1_bytes: u64,
    /// L2, values in memory compressed with lz4 (counted in compressed bytes); 0: off.
    pub l2_bytes: u64,
    /// L3, one file per value on disk; 0: off.
    pub l3_bytes: u64,
    /// Replacement policy per level: "adaptive" or one of `cache::policy::POLICY_NAMES`.
    #[serde(deserialize_with = "cache_policy")]
    pub l1_policy: String,
    #[serde(deserialize_with = "cache_policy")]
    pub l2_policy: String,
    #[serde(deserialize_with = "cache_policy")]
    pub l3_policy: String,
    /// How many successors the prefetcher fetches ahead (0 turns prefetch off, at most 16).
    #[serde(deserialize_with = "prefetch_depth")]
    pub prefetch_depth: u32,
    /// L3's directory; empty means `<optimizer.state_dir>/cache`.
    pub dir: PathBuf,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            l1_bytes: 256 << 20,
            l2_bytes: 1 << 30,
            l3_bytes: 4 << 30,
            l1_policy: "adaptive".to_string(),
            l2_policy: "adaptive".to_string(),
            l3_policy: "adaptive".to_string(),
            prefetch_depth: 3,
            dir: PathBuf::new(),
        }
    }
}

/// The load balancer (see `crate::balancer`): an HTTP reverse proxy in front of agent
/// replicas. Times in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BalancerConfig {
    /// Run the proxy at all.
    pub enabled: bool,
    /// Where the proxy listens ("127.0.0.1:8080").
    #[serde(deserialize_with = "balancer_listen")]
    pub listen: String,
    /// Threads of the proxy's own runtime (1..=64); 1 runs a single-threaded runtime.
    #[serde(deserialize_with = "worker_threads")]
    pub worker_threads: usize,
    /// With one thread: how long it polls for work before it sleeps, in microseconds
    /// (0..=1000; 0: never), while that pays (see `balancer::proxy::busy_poll`).
    #[serde(deserialize_with = "busy_poll_us")]
    pub busy_poll_us: u64,
    /// The default pool's algorithm (one of `balancer::pick::Algorithm::NAMES`).
    #[serde(deserialize_with = "balancer_algorithm")]
    pub algorithm: String,
    /// Sticky key for consistent-hash: this request header, else this cookie.
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
            listen: "127.0.0.1:8080".to_string(),
            worker_threads: 1,
            busy_poll_us: 50,
            algorithm: "peak-ewma".to_string(),
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
    /// Empty means `[balancer] algorithm`.
    #[serde(default)]
    pub algorithm: String,
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
            if !pool.algorithm.is_empty()
                && crate::balancer::pick::Algorithm::parse(&pool.algorithm).is_none()
            {
                return Some(format!(
                    "{key}.algorithm = {:?}: expected one of {}",
                    pool.algorithm,
                    crate::balancer::pick::Algorithm::NAMES.join(", ")
                ));
            }
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
        }
        None
    }
}

/// The local REST API (see `crate::api`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Unix socket the API listens on (its directory is made 0700, the socket 0600).
    pub socket: PathBuf,
    /// Also listen on TCP at this address ("127.0.0.1:7878"); empty means no TCP.
    #[serde(deserialize_with = "listen_addr")]
    pub listen: String,
    /// Bearer token required on TCP; created (0600, random) when missing.
    pub token_file: PathBuf,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            socket: PathBuf::from("/run/sutazai-top/api.sock"),
            listen: String::new(),
            token_file: PathBuf::from("/var/lib/sutazai-top/api.token"),
        }
    }
}

/// `sutazai-top serve`: the engine as a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// Holds the pid file whose lock allows one engine per host.
    pub runtime_dir: PathBuf,
    /// Also append logs to this file; empty means stderr only.
    pub log_file: String,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            runtime_dir: PathBuf::from("/run/sutazai-top"),
            log_file: String::new(),
        }
    }
}

/// Bottleneck alerts posted to a webhook in Alertmanager's JSON shape (see `crate::alerts`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Receiver URL ("http://host:port/path"); empty turns alerts off. Only http:// is
    /// accepted: there is no TLS client in the binary, so https would fail at every alert.
    #[serde(deserialize_with = "webhook_url")]
    pub webhook_url: String,
    /// Alerts waiting for delivery; when full, the oldest is dropped (and counted).
    #[serde(deserialize_with = "alert_queue")]
    pub queue: usize,
    /// Extra attempts per alert after the first fails, with exponential backoff.
    #[serde(deserialize_with = "alert_retries")]
    pub retries: u32,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            webhook_url: String::new(),
            queue: 256,
            retries: 5,
        }
    }
}

/// Bottleneck detection thresholds (the original design's `max_cpu_usage` and
/// `max_memory_usage`) and how long a condition must hold before it counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    /// Host CPU busy fraction (0 < x <= 1) at which the CPU counts as saturated.
    #[serde(deserialize_with = "usage_fraction")]
    pub max_cpu_usage: f64,
    /// Used memory fraction (0 < x <= 1, cache counted as available) that counts as pressure.
    #[serde(deserialize_with = "usage_fraction")]
    pub max_memory_usage: f64,
    /// Consecutive ticks a condition must hold before it is reported, and be absent before
    /// it is cleared (at least 1), so a single spike or dip never flaps the verdict.
    #[serde(deserialize_with = "hold_ticks")]
    pub hold_ticks: u32,
    /// Report predicted exhaustion (memory reaching its limit) this many seconds ahead.
    pub predict_horizon_secs: u64,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            max_cpu_usage: 0.85,
            max_memory_usage: 0.8,
            hold_ticks: 3,
            predict_horizon_secs: 300,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerConfig {
    /// Where the journal of changes to the host lives (root-owned, not world-writable).
    pub state_dir: PathBuf,
    /// At start, what to do with a batch an earlier run left half applied (it crashed or
    /// was killed mid-batch): restore it, keep it, or ask (show it and let the operator
    /// decide).
    pub on_unclean_exit: UncleanExit,
    /// On quit, roll back every change still active.
    pub rollback_on_exit: bool,
    /// The scheduler policy proposed for batch agents' processes: SCHED_BATCH (low risk)
    /// or SCHED_IDLE (high risk: the process runs only when nothing else wants the CPU).
    #[serde(deserialize_with = "batch_policy")]
    pub scheduler_policy: String,
    /// Apply proposals the mode allows without asking (one per cooldown).
    pub auto_fix: bool,
    /// Seconds a fix's figure is watched after applying before it is kept or rolled back.
    pub validation_secs: u64,
    /// Seconds between two automatic actions.
    pub cooldown_secs: u64,
    /// Propose NUMA fixes (cpuset mems, page migration) where the host has more than one
    /// node.
    pub enable_numa: bool,
    /// Propose transparent huge page changes (madvise in balanced mode, always in
    /// aggressive); off by default, since THP can add latency spikes on some loads.
    pub enable_transparent_hugepages: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UncleanExit {
    Restore,
    Keep,
    #[default]
    Ask,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig {
            state_dir: PathBuf::from("/var/lib/sutazai-top"),
            on_unclean_exit: UncleanExit::Ask,
            rollback_on_exit: false,
            scheduler_policy: "SCHED_BATCH".to_string(),
            auto_fix: false,
            validation_secs: 10,
            cooldown_secs: 15,
            enable_numa: true,
            enable_transparent_hugepages: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    /// Where procfs is mounted.
    pub proc_root: PathBuf,
    /// Where sysfs is mounted.
    pub sys_root: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    /// Watch Docker containers at all.
    pub enabled: bool,
    /// Docker endpoint; empty means DOCKER_HOST, else the local socket.
    pub endpoint: String,
    /// A container is an agent when it carries this label.
    pub agent_label: String,
    /// Treat every container as an agent, labelled or not.
    pub all_containers_are_agents: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Log filter (tracing EnvFilter syntax), e.g. "info" or "sutazai_top=debug".
    pub level: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            interval_ms: 1000,
            history_minutes: 10,
            mode: Mode::Conservative,
            top_processes: 25,
            report_dir: PathBuf::from("."),
            host: HostConfig::default(),
            docker: DockerConfig::default(),
            optimizer: OptimizerConfig::default(),
            detect: DetectConfig::default(),
            log: LogConfig::default(),
            api: ApiConfig::default(),
            service: ServiceConfig::default(),
            alerts: AlertsConfig::default(),
            cache: CacheConfig::default(),
            balancer: BalancerConfig::default(),
        }
    }
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            proc_root: PathBuf::from("/proc"),
            sys_root: PathBuf::from("/sys"),
        }
    }
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            enabled: true,
            endpoint: String::new(),
            agent_label: "sutazai.agent".to_string(),
            all_containers_are_agents: false,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// toml's message names the key, the line and the column.
    #[error("invalid config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    /// Parse a config text; `path` only names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|err| ConfigError::Invalid {
            path: path.to_path_buf(),
            message: err.to_string().trim_end().to_string(),
        })?;
        // Rules across keys (a backend's pool must exist...) that serde cannot check per key.
        if let Some(message) = config.balancer.problem() {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                message,
            });
        }
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// The file to use: the explicit one, else the first that exists of the user's config dir
    /// and /etc/sutazai/config.toml; `None` means built-in defaults.
    pub fn locate(explicit: Option<&Path>) -> Option<PathBuf> {
        if let Some(path) = explicit {
            return Some(path.to_path_buf());
        }
        let user = directories::ProjectDirs::from("", "", "sutazai-top")
            .map(|dirs| dirs.config_dir().join("config.toml"));
        user.into_iter()
            .chain(std::iter::once(PathBuf::from("/etc/sutazai/config.toml")))
            .find(|p| p.is_file())
    }

    /// Number of history points kept at the configured tick.
    pub fn history_points(&self) -> usize {
        let secs = self.history_minutes.saturating_mul(60_000);
        (secs / self.interval_ms.max(1)).clamp(1, 1_000_000) as usize
    }
}

fn batch_policy<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = String::deserialize(d)?;
    match v.as_str() {
        "SCHED_BATCH" | "SCHED_IDLE" => Ok(v),
        _ => Err(serde::de::Error::custom(format!(
            "scheduler_policy = {v:?}: expected \"SCHED_BATCH\" or \"SCHED_IDLE\""
        ))),
    }
}

fn listen_addr<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = String::deserialize(d)?;
    if !v.is_empty() && v.parse::<std::net::SocketAddr>().is_err() {
        return Err(serde::de::Error::custom(format!(
            "listen = {v:?}: expected an address and port such as \"127.0.0.1:7878\", or \"\" for no TCP"
        )));
    }
    Ok(v)
}

fn interval_ms<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = u64::deserialize(d)?;
    if v < MIN_INTERVAL_MS {
        return Err(serde::de::Error::custom(format!(
            "interval_ms = {v} is below the floor of {MIN_INTERVAL_MS} ms"
        )));
    }
    Ok(v)
}

fn history_minutes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = u64::deserialize(d)?;
    if !(1..=1440).contains(&v) {
        return Err(serde::de::Error::custom(format!(
            "history_minutes = {v} must be between 1 and 1440"
        )));
    }
    Ok(v)
}

fn top_processes<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let v = usize::deserialize(d)?;
    if !(1..=10_000).contains(&v) {
        return Err(serde::de::Error::custom(format!(
            "top_processes = {v} must be between 1 and 10000"
        )));
    }
    Ok(v)
}

fn usage_fraction<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    // NaN fails both comparisons, so it is rejected too.
    if !(v > 0.0 && v <= 1.0) {
        return Err(serde::de::Error::custom(format!(
            "usage = {v} must be a fraction above 0 and at most 1"
        )));
    }
    Ok(v)
}

/// Why a webhook URL cannot be used, or `None` when it can (empty means "off").
pub fn webhook_url_problem(url: &str) -> Option<String> {
    if url.is_empty() {
        return None;
    }
    let Ok(uri) = url.parse::<hyper::Uri>() else {
        return Some(format!("webhook_url = {url:?} is not a URL"));
    };
    if uri.scheme_str() != Some("http") {
        return Some(format!(
            "webhook_url = {url:?}: only http:// URLs are supported (no TLS client is built in; \
             put a local relay in front of an https receiver)"
        ));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Some(format!("webhook_url = {url:?} names no host"));
    }
    None
}

fn webhook_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = String::deserialize(d)?;
    match webhook_url_problem(&v) {
        Some(problem) => Err(serde::de::Error::custom(problem)),
        None => Ok(v),
    }
}

fn alert_queue<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let v = usize::deserialize(d)?;
    if !(1..=100_000).contains(&v) {
        return Err(serde::de::Error::custom(format!(
            "queue = {v} must be between 1 and 100000"
        )));
    }
    Ok(v)
}

fn alert_retries<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = u32::deserialize(d)?;
    if v > 20 {
        return Err(serde::de::Error::custom(format!(
            "retries = {v} must be at most 20"
        )));
    }
    Ok(v)
}

fn cache_policy<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = String::deserialize(d)?;
    let names = crate::cache::policy::POLICY_NAMES;
    if !names.contains(&v.as_str()) {
        return Err(serde::de::Error::custom(format!(
            "policy = {v:?}: expected one of {}",
            names.join(", ")
        )));
    }
    Ok(v)
}

fn prefetch_depth<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = u32::deserialize(d)?;
    if v > 16 {
        return Err(serde::de::Error::custom(format!(
            "prefetch_depth = {v} must be at most 16"
        )));
    }
    Ok(v)
}

fn balancer_listen<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = String::deserialize(d)?;
    if v.parse::<std::net::SocketAddr>().is_err() {
        return Err(serde::de::Error::custom(format!(
            "listen = {v:?}: expected an address and port such as \"127.0.0.1:8080\""
        )));
    }
    Ok(v)
}

fn worker_threads<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let v = usize::deserialize(d)?;
    if !(1..=64).contains(&v) {
        return Err(serde::de::Error::custom(format!(
            "worker_threads = {v} must be between 1 and 64"
        )));
    }
    Ok(v)
}

fn busy_poll_us<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = u64::deserialize(d)?;
    if v > 1000 {
        return Err(serde::de::Error::custom(format!(
            "busy_poll_us = {v} must be between 0 (off) and 1000"
        )));
    }
    Ok(v)
}

fn balancer_algorithm<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = String::deserialize(d)?;
    if crate::balancer::pick::Algorithm::parse(&v).is_none() {
        return Err(serde::de::Error::custom(format!(
            "algorithm = {v:?}: expected one of {}",
            crate::balancer::pick::Algorithm::NAMES.join(", ")
        )));
    }
    Ok(v)
}

fn max_queue<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = u32::deserialize(d)?;
    if v > 1_000_000 {
        return Err(serde::de::Error::custom(format!(
            "max_queue = {v} must be at most 1000000"
        )));
    }
    Ok(v)
}

fn positive_ms<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = u64::deserialize(d)?;
    if !(1..=86_400_000).contains(&v) {
        return Err(serde::de::Error::custom(format!(
            "{v} ms must be between 1 and 86400000 (a day)"
        )));
    }
    Ok(v)
}

fn positive_secs<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = u64::deserialize(d)?;
    if !(1..=86_400).contains(&v) {
        return Err(serde::de::Error::custom(format!(
            "{v} s must be between 1 and 86400 (a day)"
        )));
    }
    Ok(v)
}

fn percent<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = u32::deserialize(d)?;
    if v > 100 {
        return Err(serde::de::Error::custom(format!(
            "{v} percent must be at most 100"
        )));
    }
    Ok(v)
}

fn at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = u32::deserialize(d)?;
    if v < 1 {
        return Err(serde::de::Error::custom(format!("{v} must be at least 1")));
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

fn hold_ticks<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = u32::deserialize(d)?;
    if v < 1 {
        return Err(serde::de::Error::custom(format!(
            "hold_ticks = {v} must be at least 1"
        )));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_is_the_defaults() {
        let text = include_str!("../config.toml.example");
        let parsed = Config::parse(text, Path::new("config.toml.example")).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err = Config::parse(
            "mode = \"balanced\"\n\ninterval_msec = 500\n",
            Path::new("x"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("interval_msec"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn bad_values_are_named_with_their_line() {
        let err = Config::parse("interval_ms = 100\n", Path::new("x"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("interval_ms = 100") && err.contains("line 1"),
            "{err}"
        );
        let err = Config::parse("[docker]\nenabled = \"yes\"\n", Path::new("x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("enabled"), "{err}");
        let err = Config::parse("mode = \"turbo\"\n", Path::new("x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("turbo") && err.contains("line 1"), "{err}");
    }

    #[test]
    fn detect_keys_are_validated() {
        let cfg = Config::parse(
            "[detect]\nmax_cpu_usage = 0.9\nmax_memory_usage = 1.0\nhold_ticks = 5\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(cfg.detect.max_cpu_usage, 0.9);
        assert_eq!(cfg.detect.max_memory_usage, 1.0);
        assert_eq!(cfg.detect.hold_ticks, 5);
        assert_eq!(cfg.detect.predict_horizon_secs, 300);
        for (text, key) in [
            ("[detect]\nmax_cpu_usage = 0.0\n", "max_cpu_usage"),
            ("[detect]\nmax_cpu_usage = 1.5\n", "max_cpu_usage"),
            ("[detect]\nmax_memory_usage = -0.2\n", "max_memory_usage"),
            ("[detect]\nhold_ticks = 0\n", "hold_ticks"),
        ] {
            let err = Config::parse(text, Path::new("x")).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains("line 2"), "{err}");
        }
    }

    #[test]
    fn history_points_follow_the_tick() {
        let cfg = Config {
            interval_ms: 500,
            ..Config::default()
        };
        assert_eq!(cfg.history_points(), 1200);
        assert_eq!(Config::default().history_points(), 600);
    }

    #[test]
    fn alerts_webhook_must_be_plain_http() {
        let ok = Config::parse(
            "[alerts]\nwebhook_url = \"http://127.0.0.1:9093/hook\"\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(ok.alerts.webhook_url, "http://127.0.0.1:9093/hook");
        for (bad, says) in [
            ("https://am.example/hook", "only http://"),
            ("ftp://x/y", "only http://"),
            ("not a url", "not a URL"),
            ("/just/a/path", "only http://"),
        ] {
            let text = format!("[alerts]\nwebhook_url = {bad:?}\n");
            let err = Config::parse(&text, Path::new("x"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(says) && err.contains("line 2"), "{bad}: {err}");
        }
        let err = Config::parse("[alerts]\nqueue = 0\n", Path::new("x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("queue = 0"), "{err}");
        let err = Config::parse("[alerts]\nretries = 99\n", Path::new("x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("retries = 99"), "{err}");
    }
}
