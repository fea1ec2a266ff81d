//! One small pure function per bottleneck kind: (snapshot, state) → the conditions that hold
//! on this tick. Hysteresis (how long a condition must hold) is the Detector's business, not
//! theirs; the only state they read is the trend series the Detector keeps.

use std::collections::{BTreeMap, VecDeque};

use super::config::DetectConfig;
use super::holt::{HoltParams, holt_linear, slope_t_statistic};
use crate::model::{AgentClass, ContainerStat, PsiResource, Snapshot};
use crate::model::{BottleneckKind, Evidence, Subject};

/// A condition seen on one tick, before hysteresis.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub kind: BottleneckKind,
    pub subject: Subject,
    pub evidence: Vec<Evidence>,
}

/// Every threshold the detectors use. The config keys (`[detect]`) set the usage fractions
/// and the horizon; the rest are the documented defaults, adjustable from code.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// Host busy percent at or above which the CPU is saturated.
    pub cpu_busy_pct: f64,
    pub psi_cpu_some_pct: f64,
    /// Runnable tasks per online CPU above which the run queue is saturated.
    pub runnable_per_cpu: f64,
    /// Used memory percent at or above which memory is under pressure.
    pub mem_used_pct: f64,
    pub psi_memory_some_pct: f64,
    pub swap_pages_per_sec: f64,
    pub major_faults_per_sec: f64,
    pub psi_io_full_pct: f64,
    pub disk_util_pct: f64,
    pub disk_await_ms: f64,
    /// A batch container above this percent of one CPU can be a noisy neighbour...
    pub noisy_batch_cpu_pct: f64,
    /// ...when a latency container's own PSI cpu some reaches this...
    pub noisy_latency_psi_cpu_pct: f64,
    /// ...or when it stalls at least this long per unit of CPU it gets (stall fraction over
    /// CPU fraction: 0.25 = a quarter of a second waiting for every second it runs), with at
    /// least `noisy_latency_min_psi_pct` of stall so an idle agent never counts. An agent
    /// busy a sixth of the time can be slowed down 1.5x while its PSI stays under 10 %...
    pub noisy_latency_stall_per_cpu: f64,
    pub noisy_latency_min_psi_pct: f64,
    /// ...or, where containers have no PSI, the host's reaches this.
    pub noisy_host_psi_cpu_pct: f64,
    /// A container above this many fair shares of the host CPU is a runaway.
    pub runaway_fair_shares: f64,
    /// NUMA imbalance: at least this percent of a container's memory on nodes its CPUs
    /// are not on...
    pub numa_remote_pct: f64,
    /// ...or CPUs spanning nodes with at least this percent of its memory on one node...
    pub numa_one_node_pct: f64,
    /// ...judged only for containers with at least this much memory (MiB) per node known.
    pub numa_min_memory_mib: f64,
    pub holt: HoltParams,
    pub predict_horizon_secs: f64,
    /// Points a series needs before it is forecast.
    pub trend_min_points: usize,
    /// Points kept per series (the newest).
    pub trend_window: usize,
    /// The least-squares slope must be this many standard errors above flat, so a noisy
    /// but flat series never forecasts exhaustion.
    pub trend_min_t: f64,
}

impl Thresholds {
    pub fn from_config(config: &DetectConfig) -> Self {
        Thresholds {
            cpu_busy_pct: config.max_cpu_usage * 100.0,
            psi_cpu_some_pct: 20.0,
            runnable_per_cpu: 2.0,
            mem_used_pct: config.max_memory_usage * 100.0,
            psi_memory_some_pct: 10.0,
            swap_pages_per_sec: 100.0,
            major_faults_per_sec: 1000.0,
            psi_io_full_pct: 10.0,
            disk_util_pct: 90.0,
            disk_await_ms: 50.0,
            noisy_batch_cpu_pct: 50.0,
            noisy_latency_psi_cpu_pct: 10.0,
            noisy_latency_stall_per_cpu: 0.25,
            noisy_latency_min_psi_pct: 2.0,
            noisy_host_psi_cpu_pct: 20.0,
            runaway_fair_shares: 3.0,
            numa_remote_pct: 50.0,
            numa_one_node_pct: 80.0,
            numa_min_memory_mib: 64.0,
            holt: HoltParams::default(),
            predict_horizon_secs: config.predict_horizon_secs as f64,
            trend_min_points: 10,
            trend_window: 60,
            trend_min_t: 3.0,
        }
    }
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds::from_config(&DetectConfig::default())
    }
}

/// Memory series the predictor forecasts: the host's used memory and each container's usage.
#[derive(Debug, Clone, Default)]
pub struct TrendState {
    pub host_used_bytes: Series,
    /// By container id; a container that disappears loses its series.
    pub containers: BTreeMap<String, Series>,
}

/// The newest points of one series, with the wall clock of each (ms) for the step length.
#[derive(Debug, Clone, Default)]
pub struct Series {
    points: VecDeque<(u64, f64)>,
}

impl Series {
    pub fn push(&mut self, at_ms: u64, value: f64, window: usize) {
        while self.points.len() >= window.max(1) {
            self.points.pop_front();
        }
        self.points.push_back((at_ms, value));
    }

    pub fn values(&self) -> Vec<f64> {
        self.points.iter().map(|&(_, v)| v).collect()
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Mean seconds between points, from their clocks; `fallback_secs` when the clocks say
    /// nothing (synthetic snapshots, a clock that stepped back).
    fn step_secs(&self, fallback_secs: f64) -> f64 {
        match (self.points.front(), self.points.back()) {
            (Some(&(first, _)), Some(&(last, _))) if last > first && self.points.len() > 1 => {
                (last - first) as f64 / 1000.0 / (self.points.len() - 1) as f64
            }
            _ => fallback_secs,
        }
    }
}

impl TrendState {
    /// Add this tick's points; forget containers that are gone.
    pub fn record(&mut self, snap: &Snapshot, window: usize) {
        let at_ms = snap.taken_at_ms;
        if snap.memory.total_kb > 0 {
            let used_kb = snap
                .memory
                .total_kb
                .saturating_sub(snap.memory.available_kb);
            self.host_used_bytes
                .push(at_ms, used_kb as f64 * 1024.0, window);
        }
        // A stopped container's old points would join a restarted one's new ones: drop them.
        self.containers.retain(|id, _| {
            snap.containers
                .agents
                .iter()
                .any(|c| &c.id == id && is_running(c))
        });
        for container in snap.containers.agents.iter().filter(|c| is_running(c)) {
            self.containers
                .entry(container.id.clone())
                .or_default()
                .push(at_ms, container.mem_bytes as f64, window);
        }
    }
}

/// Every condition that holds on this tick, in detector order (NUMA imbalance is added by
/// the `Detector`, since the NUMA module builds on this one).
pub fn all(snap: &Snapshot, trends: &TrendState, t: &Thresholds) -> Vec<Condition> {
    let mut found = Vec::new();
    found.extend(cpu_saturation(snap, t));
    found.extend(memory_pressure(snap, t));
    found.extend(io_saturation(snap, t));
    found.extend(throttled_containers(snap));
    found.extend(noisy_neighbours(snap, t));
    found.extend(runaway_agents(snap, t));
    found.extend(predicted_exhaustion(snap, trends, t));
    found
}

pub(super) fn evidence(
    metric: impl Into<String>,
    value: f64,
    threshold: f64,
    unit: &str,
) -> Evidence {
    Evidence {
        metric: metric.into(),
        value,
        threshold,
        unit: unit.to_string(),
    }
}

fn host_condition(kind: BottleneckKind, evidence: Vec<Evidence>) -> Option<Condition> {
    (!evidence.is_empty()).then_some(Condition {
        kind,
        subject: Subject::Host,
        evidence,
    })
}

fn container_subject(c: &ContainerStat) -> Subject {
    Subject::Container {
        id: c.id.clone(),
        name: c.name.clone(),
    }
}

fn is_running(c: &ContainerStat) -> bool {
    c.state == "running"
}

fn some_avg10(resource: Option<PsiResource>) -> Option<f64> {
    resource.map(|r| f64::from(r.some.avg10))
}

/// Online CPUs from the topology, else the CPUs the last interval measured; `None` when
/// neither says (then the per-CPU rules cannot be judged).
pub fn online_cpus(snap: &Snapshot) -> Option<u32> {
    let online = snap.topology.cpus.iter().filter(|c| c.online).count();
    let count = if online > 0 {
        online
    } else {
        snap.cpu.per_cpu.len()
    };
    u32::try_from(count).ok().filter(|&n| n > 0)
}

pub fn cpu_saturation(snap: &Snapshot, t: &Thresholds) -> Option<Condition> {
    let mut found = Vec::new();
    // No interval measured yet is "no data", not "idle" and not "busy".
    if snap.cpu.total.has_data() {
        let busy = f64::from(snap.cpu.total.busy());
        if busy >= t.cpu_busy_pct {
            found.push(evidence("cpu_busy_pct", busy, t.cpu_busy_pct, "%"));
        }
    }
    if let Some(psi) = some_avg10(snap.pressure.cpu).filter(|&v| v >= t.psi_cpu_some_pct) {
        found.push(evidence("psi_cpu_some_avg10", psi, t.psi_cpu_some_pct, "%"));
    }
    if let Some(cpus) = online_cpus(snap) {
        let limit = f64::from(cpus) * t.runnable_per_cpu;
        let runnable = f64::from(snap.cpu.runnable);
        if runnable > limit {
            found.push(evidence("runnable_tasks", runnable, limit, "tasks"));
        }
    }
    host_condition(BottleneckKind::CpuSaturation, found)
}

pub fn memory_pressure(snap: &Snapshot, t: &Thresholds) -> Option<Condition> {
    let mem = &snap.memory;
    let mut found = Vec::new();
    if mem.total_kb > 0 {
        let used_pct = mem.used_fraction() * 100.0;
        if used_pct >= t.mem_used_pct {
            found.push(evidence("mem_used_pct", used_pct, t.mem_used_pct, "%"));
        }
    }
    if let Some(psi) = some_avg10(snap.pressure.memory).filter(|&v| v >= t.psi_memory_some_pct) {
        found.push(evidence(
            "psi_memory_some_avg10",
            psi,
            t.psi_memory_some_pct,
            "%",
        ));
    }
    let swap = mem.swap_in_per_sec + mem.swap_out_per_sec;
    if swap > t.swap_pages_per_sec {
        found.push(evidence(
            "swap_pages_per_sec",
            swap,
            t.swap_pages_per_sec,
            "pages/s",
        ));
    }
    if mem.major_faults_per_sec > t.major_faults_per_sec {
        found.push(evidence(
            "major_faults_per_sec",
            mem.major_faults_per_sec,
            t.major_faults_per_sec,
            "faults/s",
        ));
    }
    host_condition(BottleneckKind::MemoryPressure, found)
}

pub fn io_saturation(snap: &Snapshot, t: &Thresholds) -> Option<Condition> {
    let mut found = Vec::new();
    let io_full = snap
        .pressure
        .io
        .and_then(|r| r.full)
        .map(|l| f64::from(l.avg10));
    if let Some(psi) = io_full.filter(|&v| v >= t.psi_io_full_pct) {
        found.push(evidence("psi_io_full_avg10", psi, t.psi_io_full_pct, "%"));
    }
    for disk in &snap.disks {
        let util = f64::from(disk.util_pct);
        let await_ms = f64::from(disk.await_ms);
        if util >= t.disk_util_pct && await_ms >= t.disk_await_ms {
            let name = &disk.name;
            found.push(evidence(
                format!("disk.{name}.util_pct"),
                util,
                t.disk_util_pct,
                "%",
            ));
            found.push(evidence(
                format!("disk.{name}.await_ms"),
                await_ms,
                t.disk_await_ms,
                "ms",
            ));
        }
    }
    host_condition(BottleneckKind::IoSaturation, found)
}

pub fn throttled_containers(snap: &Snapshot) -> Vec<Condition> {
    let running = snap.containers.agents.iter().filter(|c| is_running(c));
    running
        .filter(|c| c.throttled_periods_delta > 0)
        .map(|c| {
            let mut found = vec![evidence(
                "throttled_periods_delta",
                c.throttled_periods_delta as f64,
                0.0,
                "periods",
            )];
            if let Some(cores) = c.cpu_limit_cores {
                found.push(evidence(
                    "cpu_pct",
                    f64::from(c.cpu_pct),
                    cores * 100.0,
                    "%",
                ));
            }
            Condition {
                kind: BottleneckKind::ThrottledContainer,
                subject: container_subject(c),
                evidence: found,
            }
        })
        .collect()
}

/// Each latency container that is being starved, with the evidence: its own PSI cpu where
/// the kernel gives one, else the host's.
fn starved_latency_agents<'a>(
    snap: &'a Snapshot,
    t: &Thresholds,
) -> Vec<(&'a ContainerStat, Evidence)> {
    let host_psi = some_avg10(snap.pressure.cpu);
    let latency = snap
        .containers
        .agents
        .iter()
        .filter(|c| is_running(c) && c.class == Some(AgentClass::Latency));
    latency
        .filter_map(|c| {
            let found = psi_starvation(c, t)
                .or_else(|| run_delay_starvation(c, t))
                .or_else(|| {
                    // Neither cgroup PSI nor schedstat: the host's PSI stands in.
                    let no_own_figures = c.pressure.cpu.is_none() && c.run_delay.is_none();
                    host_psi
                        .filter(|&h| no_own_figures && h >= t.noisy_host_psi_cpu_pct)
                        .map(|h| {
                            evidence(
                                format!("{}.host_psi_cpu_some_avg10", c.name),
                                h,
                                t.noisy_host_psi_cpu_pct,
                                "%",
                            )
                        })
                });
            found.map(|e| (c, e))
        })
        .collect()
}

/// A latency agent's own CPU pressure says it is starved: at the PSI threshold, or stalled
/// long per unit of CPU it gets (slowed down while mostly idle).
fn psi_starvation(c: &ContainerStat, t: &Thresholds) -> Option<Evidence> {
    let own = some_avg10(c.pressure.cpu)?;
    if own >= t.noisy_latency_psi_cpu_pct {
        return Some(evidence(
            format!("{}.psi_cpu_some_avg10", c.name),
            own,
            t.noisy_latency_psi_cpu_pct,
            "%",
        ));
    }
    let cpu = f64::from(c.cpu_pct);
    let per_cpu = if cpu > 0.0 { own / cpu } else { 0.0 };
    (own >= t.noisy_latency_min_psi_pct && per_cpu >= t.noisy_latency_stall_per_cpu).then(|| {
        evidence(
            format!("{}.stall_per_cpu", c.name),
            per_cpu,
            t.noisy_latency_stall_per_cpu,
            "x",
        )
    })
}

/// A latency agent's tasks waited on run queues (schedstat) at least as long per unit of
/// CPU as the stall threshold, and at least the stall floor of wall time (2 % = 20 ms/s).
/// Where cgroup PSI exists it speaks first; this also covers cgroup v1-only hosts.
fn run_delay_starvation(c: &ContainerStat, t: &Thresholds) -> Option<Evidence> {
    let delay = c.run_delay?;
    let floor_ms_per_sec = t.noisy_latency_min_psi_pct * 10.0;
    (delay.wait_per_run >= t.noisy_latency_stall_per_cpu
        && delay.wait_ms_per_sec >= floor_ms_per_sec)
        .then(|| {
            evidence(
                format!("{}.run_delay_per_cpu", c.name),
                delay.wait_per_run,
                t.noisy_latency_stall_per_cpu,
                "x",
            )
        })
}

/// A latency agent starved while batch agents burn CPU. The starved agent is the subject —
/// one bottleneck per victim, whose fixes act on every batch agent at once — and the busy
/// batch agents are the evidence.
pub fn noisy_neighbours(snap: &Snapshot, t: &Thresholds) -> Vec<Condition> {
    let busy_batch: Vec<Evidence> = snap
        .containers
        .agents
        .iter()
        .filter(|c| is_running(c) && c.class == Some(AgentClass::Batch))
        .filter(|c| f64::from(c.cpu_pct) > t.noisy_batch_cpu_pct)
        .map(|c| {
            evidence(
                format!("{}.cpu_pct", c.name),
                f64::from(c.cpu_pct),
                t.noisy_batch_cpu_pct,
                "%",
            )
        })
        .collect();
    if busy_batch.is_empty() {
        return Vec::new();
    }
    starved_latency_agents(snap, t)
        .into_iter()
        .map(|(victim, starved)| {
            let mut found = vec![starved];
            found.extend(busy_batch.iter().cloned());
            Condition {
                kind: BottleneckKind::NoisyNeighbour,
                subject: container_subject(victim),
                evidence: found,
            }
        })
        .collect()
}

pub fn runaway_agents(snap: &Snapshot, t: &Thresholds) -> Vec<Condition> {
    let running: Vec<&ContainerStat> = snap
        .containers
        .agents
        .iter()
        .filter(|c| is_running(c))
        .collect();
    let Some(cpus) = online_cpus(snap) else {
        return Vec::new();
    };
    if running.is_empty() {
        return Vec::new();
    }
    let fair_share = f64::from(cpus) * 100.0 / running.len() as f64;
    let limit = fair_share * t.runaway_fair_shares;
    running
        .into_iter()
        .filter(|c| f64::from(c.cpu_pct) > limit)
        .map(|c| Condition {
            kind: BottleneckKind::RunawayAgent,
            subject: container_subject(c),
            evidence: vec![
                evidence("cpu_pct", f64::from(c.cpu_pct), limit, "%"),
                evidence(
                    "fair_shares",
                    f64::from(c.cpu_pct) / fair_share,
                    t.runaway_fair_shares,
                    "x",
                ),
            ],
        })
        .collect()
}

/// Seconds until `series` reaches `limit` by Holt's forecast, when that is within the
/// horizon and the rise is real (significant slope); `None` otherwise.
pub fn exhaustion_eta_secs(
    series: &Series,
    limit: f64,
    fallback_step_secs: f64,
    t: &Thresholds,
) -> Option<f64> {
    if series.len() < t.trend_min_points.max(3) || limit <= 0.0 {
        return None;
    }
    let values = series.values();
    let significant = slope_t_statistic(&values).is_some_and(|t_stat| t_stat >= t.trend_min_t);
    if !significant {
        return None;
    }
    let fit = holt_linear(&values, t.holt)?;
    let eta = fit.steps_to_reach(limit)? * series.step_secs(fallback_step_secs);
    (eta <= t.predict_horizon_secs).then_some(eta)
}

fn exhaustion_condition(
    subject: Subject,
    series: &Series,
    limit: f64,
    fallback_step_secs: f64,
    t: &Thresholds,
) -> Option<Condition> {
    let eta = exhaustion_eta_secs(series, limit, fallback_step_secs, t)?;
    let now = series.values().last().copied().unwrap_or_default();
    Some(Condition {
        kind: BottleneckKind::PredictedExhaustion,
        subject,
        evidence: vec![
            evidence("eta_secs", eta, t.predict_horizon_secs, "s"),
            evidence("mem_bytes", now, limit, "bytes"),
        ],
    })
}

pub fn predicted_exhaustion(
    snap: &Snapshot,
    trends: &TrendState,
    t: &Thresholds,
) -> Vec<Condition> {
    let step = if snap.interval_ms > 0 {
        snap.interval_ms as f64 / 1000.0
    } else {
        1.0
    };
    let host_limit = snap.memory.total_kb as f64 * 1024.0;
    let host = exhaustion_condition(Subject::Host, &trends.host_used_bytes, host_limit, step, t);
    let containers = snap.containers.agents.iter().filter_map(|c| {
        let limit = c.mem_limit_bytes? as f64;
        let series = trends.containers.get(&c.id)?;
        exhaustion_condition(container_subject(c), series, limit, step, t)
    });
    host.into_iter().chain(containers).collect()
}
