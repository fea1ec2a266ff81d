//! The load balancer (issue 6): an HTTP reverse proxy in front of agent replicas.
//!
//! [`Balancer::start`] binds the listen address and runs the proxy on a runtime of its own
//! (its own thread or threads), so the engine's sampling rounds never stall a request. The
//! request path ([`proxy`]) is lock-free apart from a read-lock clone of a pool's member
//! list; counters are atomics that [`Balancer::snapshot`] turns into rates once per tick.
//! Membership changes (config, API, Docker) replace a pool's member list whole.

pub mod snapshot;

pub mod config;
pub mod discovery;
pub mod ewma;
pub mod health;
pub mod histogram;
pub mod pick;

mod backend;
mod body;
mod pool;
mod proxy;

pub use snapshot::{
    BackendSnapshot, BackendSource, BalancerSnapshot, BusyPollSnapshot, CircuitState, Health,
    PoolSnapshot,
};

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hyper::header::{HeaderName, HeaderValue};
use tokio::sync::watch;

use backend::{Backend, BackendParts};
pub use config::{
    BalancerBackendConfig, BalancerBreakerConfig, BalancerConfig, BalancerHealthConfig,
    BalancerOutlierConfig, BalancerPoolConfig, DEFAULT_MAX_CONNECTIONS, MAX_BACKEND_WEIGHT,
};
use pool::{Pool, Rule};
use proxy::{BusyPoll, Counters, RetryBudget, Settings, Shared};

/// What `Balancer::change_backend` changes; `None` leaves it as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendUpdate {
    pub weight: Option<u32>,
    pub drain: Option<bool>,
}

/// A backend to add: where it is, how much it takes, which pool it serves.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendSpec {
    pub host: String,
    pub port: u16,
    pub weight: u32,
    pub max_connections: u32,
    /// The pool's name; empty means the default pool.
    pub pool: String,
    pub source: BackendSource,
}

impl BackendSpec {
    /// Weight 1, the default connection limit, the default pool, added through the API.
    pub fn new(host: &str, port: u16) -> BackendSpec {
        BackendSpec {
            host: host.to_string(),
            port,
            weight: 1,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            pool: String::new(),
            source: BackendSource::Api,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BalancerError {
    /// A config key or a backend field is wrong; the text names it.
    #[error("{0}")]
    Invalid(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the balancer's runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("no pool named {0:?}")]
    UnknownPool(String),
    #[error("backend {id} is already in pool {pool:?}")]
    Duplicate { id: String, pool: String },
    #[error("cannot resolve backend host {host:?}: {reason}")]
    Resolve { host: String, reason: String },
}

/// The running proxy.
pub struct Balancer {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    config: BalancerConfig,
    shutdown: watch::Sender<bool>,
    thread: Mutex<Option<JoinHandle<()>>>,
    last_tick: Mutex<(Instant, u64)>,
    /// Why labelled containers are not backends (set by Docker discovery each sync).
    docker_skipped: Mutex<Vec<String>>,
}

/// The balancer as configured: `Ok(None)` when `[balancer] enabled = false`; the reason,
/// also logged, when it is enabled but cannot start (the engine shows it in the header, so
/// an operator is not left reading an "off" pane).
pub fn start_for(config: &BalancerConfig) -> Result<Option<Arc<Balancer>>, String> {
    if !config.enabled {
        return Ok(None);
    }
    match Balancer::start(config) {
        Ok(balancer) => {
            tracing::info!(target: "sutazai_top::balancer", listen = %balancer.local_addr(),
                "load balancer listening");
            Ok(Some(balancer))
        }
        Err(err) => {
            tracing::error!(target: "sutazai_top::balancer", %err, "load balancer not started");
            Err(format!("load balancer not started: {err}"))
        }
    }
}

impl Balancer {
    /// Bind `listen`, add the configured backends and start serving on a runtime of its own.
    pub fn start(config: &BalancerConfig) -> Result<Arc<Balancer>, BalancerError> {
        if let Some(problem) = config.problem() {
            return Err(BalancerError::Invalid(problem));
        }
        let shared = Arc::new(shared_for(config)?);
        let bind_error = |source| BalancerError::Bind {
            addr: config.listen.to_string(),
            source,
        };
        let listener = std::net::TcpListener::bind(config.listen).map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let balancer = Arc::new(Balancer {
            shared: shared.clone(),
            local_addr,
            config: config.clone(),
            shutdown,
            thread: Mutex::new(None),
            last_tick: Mutex::new((Instant::now(), 0)),
            docker_skipped: Mutex::new(Vec::new()),
        });
        for backend in &config.backends {
            let added = balancer.add_backend(BackendSpec {
                host: backend.host.clone(),
                port: backend.port,
                weight: backend.weight,
                max_connections: backend.max_connections,
                pool: backend.pool.clone(),
                source: BackendSource::Config,
            });
            // One bad backend (a host name that does not resolve yet, a duplicate) must not
            // keep the proxy and the others from serving; it can be added later by the API.
            if let Err(err) = added {
                tracing::warn!(target: "sutazai_top::balancer", host = %backend.host,
                    port = backend.port, %err, "backend skipped");
            }
        }
        let runtime = runtime_for(config.worker_threads).map_err(BalancerError::Runtime)?;
        let health = health_config(config);
        let thread = std::thread::Builder::new()
            .name("sutazai-balancer".to_string())
            .spawn(move || {
                runtime.block_on(run(listener, shared, health, shutdown_rx));
                // Backend connection drivers and checks still running end here.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(BalancerError::Runtime)?;
        if let Ok(mut slot) = balancer.thread.lock() {
            *slot = Some(thread);
        }
        Ok(balancer)
    }

    /// Where the proxy listens, as bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The pools' names, the default pool first.
    pub fn pool_names(&self) -> Vec<String> {
        self.shared.pools().map(|pool| pool.name.clone()).collect()
    }

    /// Add a backend to its pool (empty pool: the default one).
    pub fn add_backend(&self, spec: BackendSpec) -> Result<(), BalancerError> {
        let as_config = BalancerBackendConfig {
            host: spec.host.clone(),
            port: spec.port,
            weight: spec.weight,
            max_connections: spec.max_connections,
            pool: spec.pool.clone(),
        };
        if let Some(problem) = as_config.problem("backend") {
            return Err(BalancerError::Invalid(problem));
        }
        let pool = self.pool(&spec.pool)?;
        let addrs = resolve(&spec.host, spec.port)?;
        let id = backend_id(&spec.host, spec.port);
        let backend = Arc::new(Backend::new(BackendParts {
            id: id.clone(),
            host: spec.host,
            port: spec.port,
            addrs,
            weight: spec.weight,
            max_connections: spec.max_connections,
            source: spec.source,
            ewma: ewma::PeakEwma::new(
                Duration::from_millis(self.config.default_rtt_ms),
                Duration::from_secs(self.config.ewma_decay_secs),
            ),
            health: backend_health(&self.config),
            waiters: pool.waiters.clone(),
            ejections: pool.ejections.clone(),
        }));
        pool.update(|backends| {
            // The same server under another name (127.1, localhost) is the same backend.
            let same =
                |b: &&Arc<Backend>| b.id == id || b.addrs.iter().any(|a| backend.addrs.contains(a));
            if let Some(existing) = backends.iter().find(same) {
                return Err(BalancerError::Duplicate {
                    id: match existing.id == id {
                        true => id.clone(),
                        false => format!("{id} (as {})", existing.id),
                    },
                    pool: pool.name.clone(),
                });
            }
            backends.push(backend);
            Ok(())
        })?;
        // A request queued for a full pool may use the newcomer at once.
        pool.waiters.notify.notify_waiters();
        Ok(())
    }

    /// Take a backend out of a pool; false when it was not there. Requests under way
    /// finish; its idle connections close; its ejection, if any, stops counting against
    /// the pool's budget.
    pub fn remove_backend(&self, pool: &str, host: &str, port: u16) -> Result<bool, BalancerError> {
        let pool = self.pool(pool)?;
        let id = backend_id(host, port);
        let removed = pool.update(|backends| {
            let Some(at) = backends.iter().position(|b| b.id == id) else {
                return false;
            };
            let gone = backends.remove(at);
            gone.removed.store(true, Ordering::Relaxed);
            gone.drop_idle();
            pool.ejections.release(gone.health.serial());
            true
        });
        // Queued requests look again: with that backend gone there may be none up, and
        // they should hear so now rather than at their queue timeout.
        pool.waiters.notify.notify_waiters();
        Ok(removed)
    }

    /// Change a backend at run time in `pool`: its weight (1 to 1000) and whether it drains
    /// (takes no new requests while its in-flight ones finish). `Ok(false)` when the pool
    /// has no such backend. Counters and health stay: it is the same backend.
    pub fn change_backend(
        &self,
        pool: &str,
        host: &str,
        port: u16,
        change: BackendUpdate,
    ) -> Result<bool, BalancerError> {
        if let Some(weight) = change.weight
            && !(1..=MAX_BACKEND_WEIGHT).contains(&weight)
        {
            return Err(BalancerError::Invalid(format!(
                "weight = {weight}: expected 1 to {MAX_BACKEND_WEIGHT}"
            )));
        }
        let pool = self.pool(pool)?;
        let id = backend_id(host, port);
        // Through `update`, so the generation moves and weighted pickers rebuild.
        let found = pool.update(|backends| {
            let Some(backend) = backends.iter().find(|b| b.id == id) else {
                return false;
            };
            if let Some(weight) = change.weight {
                backend.set_weight(weight);
            }
            if let Some(drain) = change.drain {
                backend.draining.store(drain, Ordering::Relaxed);
            }
            true
        });
        // Requests queued for this pool look again (a backend may have come back).
        pool.waiters.notify.notify_waiters();
        Ok(found)
    }

    /// Record why labelled containers are not backends (Docker discovery, each sync).
    pub(crate) fn set_discovery_skipped(&self, reasons: Vec<String>) {
        if let Ok(mut held) = self.docker_skipped.lock() {
            *held = reasons;
        }
    }

    /// Backend choices made in panic mode since start (every backend ejected or with an
    /// open circuit, so those were ignored), over all pools.
    pub fn panic_choices_total(&self) -> u64 {
        self.shared
            .pools()
            .map(|pool| pool.panics.load(Ordering::Relaxed))
            .sum()
    }

    fn pool(&self, name: &str) -> Result<&Arc<Pool>, BalancerError> {
        let name = if name.is_empty() {
            BalancerConfig::DEFAULT_POOL
        } else {
            name
        };
        self.shared
            .pools()
            .find(|pool| pool.name == name)
            .ok_or_else(|| BalancerError::UnknownPool(name.to_string()))
    }

    /// The counters as of now, with rates and latency quantiles over the time since the
    /// previous call (the engine calls it once per tick).
    pub fn snapshot(&self) -> BalancerSnapshot {
        let now = Instant::now();
        let counters = &self.shared.counters;
        let requests_total = counters.requests.load(Ordering::Relaxed);
        let secs = match self.last_tick.lock() {
            Ok(mut last) => {
                let secs = now.duration_since(last.0).as_secs_f64();
                let before = last.1;
                *last = (now, requests_total);
                Some((secs, before))
            }
            Err(_) => None,
        };
        let (elapsed, before) = secs.unwrap_or((0.0, requests_total));
        BalancerSnapshot {
            listen: self.local_addr.to_string(),
            requests_total,
            requests_per_sec: rate(requests_total.saturating_sub(before), elapsed),
            queued: self.shared.pools().map(|p| u64::from(p.queued())).sum(),
            rejected_total: counters.rejected.load(Ordering::Relaxed),
            retries_total: counters.retries.load(Ordering::Relaxed),
            retries_over_budget_total: counters.retries_over_budget.load(Ordering::Relaxed),
            bad_requests_total: counters.bad_requests.load(Ordering::Relaxed),
            general_path_connections_total: counters
                .general_path_connections
                .load(Ordering::Relaxed),
            busy_poll: self.shared.busy_poll.figures(),
            docker_skipped: self
                .docker_skipped
                .lock()
                .map(|reasons| reasons.clone())
                .unwrap_or_default(),
            pools: self
                .shared
                .pools()
                .map(|pool| PoolSnapshot {
                    name: pool.name.clone(),
                    algorithm: pool.algorithm.name().to_string(),
                    rule: pool.rule.describe(),
                    panic_choices_total: pool.panics.load(Ordering::Relaxed),
                    backends: pool
                        .members()
                        .backends
                        .iter()
                        .map(|b| backend_snapshot(b, elapsed))
                        .collect(),
                })
                .collect(),
        }
    }

    /// Stop accepting, let requests under way finish (a few seconds at most), stop the
    /// runtime and join its thread. Later calls do nothing.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        let thread = self.thread.lock().ok().and_then(|mut slot| slot.take());
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!(target: "sutazai_top::balancer", "the balancer's thread panicked");
        }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        // Without a join: the runtime's thread winds down on its own.
        let _ = self.shutdown.send(true);
    }
}

fn rate(count: u64, secs: f64) -> f64 {
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

fn backend_snapshot(backend: &Backend, elapsed: f64) -> BackendSnapshot {
    let now = Instant::now();
    let requests_total = backend.requests.load(Ordering::Relaxed);
    let counts = backend.latency.counts();
    let (requests_before, tick_counts) = match backend.last_tick.lock() {
        Ok(mut last) => {
            let delta = if last.latency_counts.len() == counts.len() {
                histogram::delta(&counts, &last.latency_counts)
            } else {
                counts.clone()
            };
            let before = last.requests;
            last.requests = requests_total;
            last.latency_counts = counts;
            (before, delta)
        }
        Err(_) => (requests_total, Vec::new()),
    };
    let ms = |q| histogram::quantile(&tick_counts, q).map(|d: Duration| d.as_secs_f64() * 1e3);
    BackendSnapshot {
        id: backend.id.clone(),
        host: backend.host.clone(),
        port: backend.port,
        weight: backend.weight(),
        max_connections: backend.max_connections,
        source: backend.source.clone(),
        health: backend.health.health(now),
        circuit: backend.health.circuit(now),
        in_flight: u64::from(backend.in_flight.load(Ordering::Relaxed)),
        requests_total,
        requests_per_sec: rate(requests_total.saturating_sub(requests_before), elapsed),
        errors_total: backend.errors.load(Ordering::Relaxed),
        latency_p50_ms: ms(0.5),
        latency_p99_ms: ms(0.99),
        ewma_ms: backend.ewma.estimate().as_secs_f64() * 1e3,
        ejections: backend.health.ejections(),
        ejected_for_secs: backend.health.ejected_for(now).map(|d| d.as_secs()),
        draining: backend.is_draining(),
    }
}

/// `host:port`, brackets around an IPv6 address.
fn backend_id(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Every address of `host`, in the resolver's order (connections try them in turn).
fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, BalancerError> {
    let unresolved = |reason: String| BalancerError::Resolve {
        host: host.to_string(),
        reason,
    };
    let mut addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|err| unresolved(err.to_string()))?
        .collect();
    addrs.dedup();
    if addrs.is_empty() {
        return Err(unresolved("no address".to_string()));
    }
    // 0.0.0.0 or :: means "every address" to a listener; as a target it is not one, and it
    // would reach the same server as 127.0.0.1 under another name.
    addrs.retain(|addr| !addr.ip().is_unspecified());
    if addrs.is_empty() {
        return Err(unresolved(
            "an unspecified address (0.0.0.0 or ::) is not one to connect to: name the \
             backend's own, e.g. 127.0.0.1"
                .to_string(),
        ));
    }
    Ok(addrs)
}

fn shared_for(config: &BalancerConfig) -> Result<Shared, BalancerError> {
    let default = Arc::new(Pool::new(
        BalancerConfig::DEFAULT_POOL.to_string(),
        config.algorithm,
        Rule {
            header: None,
            path_prefix: None,
        },
    ));
    let mut ruled = Vec::new();
    for pool in &config.pools {
        let header = match pool.header_rule().map_err(BalancerError::Invalid)? {
            None => None,
            Some((name, value)) => Some((
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|err| BalancerError::Invalid(format!("header {name:?}: {err}")))?,
                HeaderValue::from_str(&value).map_err(|err| {
                    BalancerError::Invalid(format!("header value {value:?}: {err}"))
                })?,
            )),
        };
        let rule = Rule {
            header,
            path_prefix: (!pool.path_prefix.is_empty()).then(|| pool.path_prefix.clone()),
        };
        let algorithm = pool.algorithm.unwrap_or(config.algorithm);
        ruled.push(Arc::new(Pool::new(pool.name.clone(), algorithm, rule)));
    }
    let session_header = (!config.session_header.is_empty())
        .then(|| HeaderName::from_bytes(config.session_header.to_ascii_lowercase().as_bytes()))
        .transpose()
        .map_err(|_| {
            BalancerError::Invalid(format!(
                "session_header = {:?} is not a header name",
                config.session_header
            ))
        })?;
    let queue_timeout = Duration::from_millis(config.queue_timeout_ms);
    // A 503 comes when the queue is full or its wait ran out: by one queue timeout from now
    // the requests ahead have been served or given up, so that is when trying again can
    // succeed (whole seconds, at least one, as Retry-After counts).
    let retry_after = HeaderValue::from(queue_timeout.as_secs().max(1));
    Ok(Shared {
        ruled,
        default,
        settings: Settings {
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            queue_timeout,
            header_timeout: Duration::from_millis(config.header_timeout_ms),
            idle_timeout: Duration::from_millis(config.idle_timeout_ms),
            max_queue: config.max_queue,
            session_header,
            session_cookie: config.session_cookie.as_bytes().to_vec(),
            retry_after,
        },
        counters: Counters::default(),
        budget: RetryBudget::new(config.retry_budget_percent),
        buffered_bytes: AtomicU64::new(0),
        // Only a single-threaded runtime runs the poller.
        busy_poll: BusyPoll::new(match config.worker_threads {
            0 | 1 => Duration::from_micros(config.busy_poll_us),
            _ => Duration::ZERO,
        }),
    })
}

fn runtime_for(worker_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    // One thread: a current-thread runtime has no work-stealing overhead.
    let mut builder = if worker_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(worker_threads);
        builder
    };
    builder.enable_all().thread_name("sutazai-balancer").build()
}

fn health_config(config: &BalancerConfig) -> health::HealthConfig {
    health::HealthConfig {
        path: config.health.path.clone(),
        interval: Duration::from_millis(config.health.interval_ms),
        timeout: Duration::from_millis(config.health.timeout_ms),
        rise: config.health.rise,
        fall: config.health.fall,
    }
}

fn backend_health(config: &BalancerConfig) -> health::BackendHealth {
    health::BackendHealth::new(
        health::OutlierConfig {
            consecutive_failures: config.outlier.consecutive_failures,
            base_ejection: Duration::from_millis(config.outlier.base_ejection_ms),
            max_ejection: Duration::from_millis(config.outlier.max_ejection_ms),
            max_ejected_percent: config.outlier.max_ejected_percent,
        },
        health::BreakerConfig {
            failure_threshold: config.breaker.failure_threshold,
            open_for: Duration::from_millis(config.breaker.open_ms),
        },
        config.health.rise,
        config.health.fall,
    )
}

/// The runtime's main task: health checks per pool, the retry budget's window, the proxy.
async fn run(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    health: health::HealthConfig,
    shutdown: watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(target: "sutazai_top::balancer", %err, "cannot serve the listener");
            return;
        }
    };
    let health = Arc::new(health);
    for pool in shared.pools() {
        tokio::spawn(check_pool(pool.clone(), health.clone(), shutdown.clone()));
    }
    tokio::spawn(roll_retry_budget(shared.clone(), shutdown.clone()));
    tokio::spawn(tick_coarse_clock(shutdown.clone()));
    tokio::spawn(sweep_idle_connections(shared.clone(), shutdown.clone()));
    if shared.busy_poll.enabled() {
        let shared = shared.clone();
        tokio::spawn(async move { shared.busy_poll.run().await });
    }
    proxy::serve(listener, shared, shutdown).await;
}

/// One sweep of active checks over the pool every interval, all backends at once.
async fn check_pool(
    pool: Arc<Pool>,
    config: Arc<health::HealthConfig>,
    mut shutdown: watch::Receiver<bool>,
) {
    // A zero interval (config built in code) would make `interval` panic.
    let mut ticker = tokio::time::interval(config.interval.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        let members = pool.members();
        let checks = members.backends.iter().map(|backend| {
            let config = &config;
            async move {
                // Up if any of its addresses answers, as requests try them all.
                let mut ok = false;
                for &addr in &backend.addrs {
                    if health::check_once(addr, &backend.id, config).await {
                        ok = true;
                        break;
                    }
                }
                backend.health.on_check(ok);
            }
        });
        tokio::select! {
            _ = futures_util::future::join_all(checks) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn roll_retry_budget(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = ticker.tick() => shared.budget.roll(&shared.counters),
            _ = shutdown.changed() => return,
        }
    }
}

/// Keeps the backends' coarse clock (idle connection ages) within 50 ms of the time.
/// Every second, close the idle backend connections that can no longer be reused, so the
/// descriptors a burst of load opened go back once the backends close their side.
async fn sweep_idle_connections(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                for pool in shared.pools() {
                    for backend in &pool.members().backends {
                        backend.sweep_idle();
                    }
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

async fn tick_coarse_clock(mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            _ = ticker.tick() => backend::tick_coarse_clock(),
            _ = shutdown.changed() => return,
        }
    }
}
