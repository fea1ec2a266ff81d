//! Prometheus exposition of a snapshot (`GET /metrics`).
//!
//! The output is OpenMetrics 1.0 text, the format the prometheus-client crate writes (serve
//! it as `application/openmetrics-text; version=1.0.0; charset=utf-8`; Prometheus asks for
//! it first). Each scrape builds a plain list of families from the snapshot and hands it to
//! a fresh registry through a [`Collector`]: the snapshot is already the one consistent
//! picture of a tick, so there is no live metric state to keep in sync with it, and a scrape
//! costs one pass over the snapshot (measured by bench/api.sh).
//!
//! Names follow Prometheus conventions: `sutazai_` prefix, base units in the name
//! (`_seconds`, `_bytes`, `_ratio` for 0..1 fractions), `_total` on counters. A value that
//! is missing or not a finite number is left out rather than exported as a guess.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::hash::Hash;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabel, EncodeLabelSet, EncodeLabelValue, LabelSetEncoder,
    LabelValueEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::registry::{Registry, Unit};

use crate::balancer::{BackendSnapshot, BalancerSnapshot, CircuitState, Health};
use crate::config::Mode;
use crate::eliminator::BottleneckKind;
use crate::eliminator::proposals::ProposalStatus;
use crate::snapshot::{AgentClass, ContainerStat, DockerStatus, PsiLine, Snapshot};

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The snapshot as OpenMetrics text, ending with `# EOF`.
pub fn render(snap: &Snapshot) -> String {
    let mut families = Families::default();
    host_families(snap, &mut families);
    agent_families(snap, &mut families);
    engine_families(snap, &mut families);
    balancer_families(snap, &mut families);
    alert_families(&mut families);

    let mut registry = Registry::with_prefix("sutazai");
    registry.register_collector(Box::new(families));
    let mut out = String::with_capacity(64 * 1024);
    if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        // Only a value the encoder refuses gets here; the families filter those out.
        tracing::warn!(target: "sutazai_top::metrics", "encoding metrics failed: {err}");
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The intermediate model: families of (labels, value)
// ---------------------------------------------------------------------------------------------

/// A label value, escaped as the exposition format requires (the crate writes label values
/// verbatim, so a quote or newline in a container label would corrupt the output).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct LabelValue(String);

impl EncodeLabelValue for LabelValue {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        // Runs between escapes go out whole: every write crosses several `dyn Write` layers.
        let mut rest = self.0.as_str();
        while let Some(at) = rest.find(['\\', '"', '\n']) {
            encoder.write_str(&rest[..at])?;
            encoder.write_str(match rest.as_bytes()[at] {
                b'\\' => "\\\\",
                b'"' => "\\\"",
                _ => "\\n",
            })?;
            rest = &rest[at + 1..];
        }
        encoder.write_str(rest)
    }
}

/// A series' labels, shared between the families of one agent (cloning is a count bump).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Labels(Arc<[(&'static str, LabelValue)]>);

impl Labels {
    fn none() -> Labels {
        Labels(Arc::new([]))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl EncodeLabelSet for Labels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        for label in self.0.iter() {
            label.encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    Labels(
        pairs
            .into_iter()
            .map(|(k, v)| (k, LabelValue(v.to_string())))
            .collect(),
    )
}

#[derive(Debug, Clone, Copy)]
enum Value {
    Int(i64),
    Float(f64),
}

impl Value {
    fn usable(self, counter: bool) -> bool {
        match self {
            Value::Int(v) => !counter || v >= 0,
            Value::Float(v) => v.is_finite() && (!counter || v >= 0.0),
        }
    }
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        // Above i64::MAX is no real figure (a wrapped subtraction upstream): mark it unusable.
        i64::try_from(v).map_or(Value::Float(f64::NAN), Value::Int)
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::from(v as u64)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<f32> for Value {
    /// Through the shortest decimal that reads back as `v`: the snapshot's f32 figures
    /// (0.47) would otherwise be exported with the binary noise of the widening
    /// (0.4699999988079071).
    fn from(v: f32) -> Self {
        Value::Float(v.to_string().parse().unwrap_or(f64::NAN))
    }
}

#[derive(Debug)]
struct Family {
    /// Without the `sutazai_` prefix, the unit and `_total`: the encoder adds them.
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
    counter: bool,
    series: Vec<(Labels, Value)>,
}

impl Family {
    fn push(&mut self, labels: Labels, value: impl Into<Value>) {
        let value = value.into();
        if value.usable(self.counter) {
            self.series.push((labels, value));
        }
    }

    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let kind = if self.counter {
            MetricType::Counter
        } else {
            MetricType::Gauge
        };
        let mut metric =
            encoder.encode_descriptor(self.name, self.help, self.unit.as_ref(), kind)?;
        for (labels, value) in &self.series {
            if labels.is_empty() {
                encode_value(&mut metric, *value, self.counter)?;
            } else {
                let mut series = metric.encode_family(labels)?;
                encode_value(&mut series, *value, self.counter)?;
            }
        }
        Ok(())
    }
}

fn encode_value(
    metric: &mut prometheus_client::encoding::MetricEncoder,
    value: Value,
    counter: bool,
) -> Result<(), std::fmt::Error> {
    let no_exemplar: Option<&Exemplar<NoLabelSet, f64>> = None;
    match (value, counter) {
        (Value::Int(v), true) => {
            metric.encode_counter(&u64::try_from(v).map_err(|_| std::fmt::Error)?, no_exemplar)
        }
        (Value::Float(v), true) => metric.encode_counter(&v, no_exemplar),
        (Value::Int(v), false) => metric.encode_gauge(&v),
        (Value::Float(v), false) => metric.encode_gauge(&v),
    }
}

/// Every family of one scrape, in output order.
#[derive(Debug, Default)]
struct Families(Vec<Family>);

impl Families {
    fn add(
        &mut self,
        name: &'static str,
        unit: Option<Unit>,
        counter: bool,
        help: &'static str,
    ) -> &mut Family {
        self.0.push(Family {
            name,
            help,
            unit,
            counter,
            series: Vec::new(),
        });
        let last = self.0.len() - 1;
        &mut self.0[last]
    }

    fn gauge(&mut self, name: &'static str, unit: Option<Unit>, help: &'static str) -> &mut Family {
        self.add(name, unit, false, help)
    }

    fn counter(
        &mut self,
        name: &'static str,
        unit: Option<Unit>,
        help: &'static str,
    ) -> &mut Family {
        self.add(name, unit, true, help)
    }
}

impl Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // An empty family would only be a HELP line without data: leave it out.
        for family in self.0.iter().filter(|f| !f.series.is_empty()) {
            family.encode(&mut encoder)?;
        }
        Ok(())
    }
}

/// The first item of each key. Odd input (two disks of one name, two containers with one
/// id) must never become a duplicate series, which Prometheus would reject; deduplicating
/// the inputs once is far cheaper than checking every series.
fn unique_by<'a, T, K: Eq + Hash>(
    items: impl IntoIterator<Item = &'a T>,
    key: impl Fn(&'a T) -> K,
) -> Vec<&'a T> {
    let mut seen = HashSet::new();
    items
        .into_iter()
        .filter(|item| seen.insert(key(item)))
        .collect()
}

fn ratio() -> Option<Unit> {
    Some(Unit::Other("ratio".to_string()))
}
fn bytes() -> Option<Unit> {
    Some(Unit::Bytes)
}
fn seconds() -> Option<Unit> {
    Some(Unit::Seconds)
}
fn bytes_per_second() -> Option<Unit> {
    Some(Unit::Other("bytes_per_second".to_string()))
}

const KB: u64 = 1024;

// ---------------------------------------------------------------------------------------------
// Host
// ---------------------------------------------------------------------------------------------

fn host_families(snap: &Snapshot, f: &mut Families) {
    host_identity(snap, f);
    cpu(snap, f);
    memory(snap, f);
    pressure(snap, f);
    disks(snap, f);
    nets(snap, f);
    hugepages_and_ksm(snap, f);
}

fn host_identity(snap: &Snapshot, f: &mut Families) {
    let layout = match snap.host.cgroup_layout {
        crate::snapshot::CgroupLayout::V1 => "v1",
        crate::snapshot::CgroupLayout::V2 => "v2",
        crate::snapshot::CgroupLayout::Hybrid => "hybrid",
        crate::snapshot::CgroupLayout::None => "none",
    };
    f.gauge("host", None, "The observed host (value 1); labels name it.")
        .push(
            labels([
                ("hostname", &snap.host.hostname),
                ("kernel", &snap.host.kernel),
                ("cgroup_layout", layout),
            ]),
            1u32,
        );
    f.gauge("host_uptime", seconds(), "Time since the host booted.")
        .push(Labels::none(), snap.host.uptime_secs);
    f.gauge("host_cpus", None, "Logical CPUs present.")
        .push(Labels::none(), snap.topology.cpus.len());
}

fn cpu(snap: &Snapshot, f: &mut Families) {
    let total = &snap.cpu.total;
    if total.has_data() {
        f.gauge(
            "host_cpu_busy",
            ratio(),
            "Share of all CPUs' time spent busy (not idle, not iowait) over the last tick.",
        )
        .push(Labels::none(), total.busy() / 100.0);
    }
    let per_cpu = f.gauge(
        "cpu_busy",
        ratio(),
        "Share of one CPU's time spent busy (not idle, not iowait) over the last tick.",
    );
    let usable = snap.cpu.per_cpu.iter().filter(|(_, t)| t.has_data());
    for (id, times) in unique_by(usable, |(id, _)| *id) {
        per_cpu.push(labels([("cpu", &id.to_string())]), times.busy() / 100.0);
    }
    f.gauge("load1", None, "Load average over 1 minute.")
        .push(Labels::none(), snap.cpu.load1);
    f.gauge("load5", None, "Load average over 5 minutes.")
        .push(Labels::none(), snap.cpu.load5);
    f.gauge("load15", None, "Load average over 15 minutes.")
        .push(Labels::none(), snap.cpu.load15);
    f.gauge("procs_running", None, "Runnable tasks (procs_running).")
        .push(Labels::none(), snap.cpu.runnable);
    f.gauge(
        "procs_blocked",
        None,
        "Tasks blocked on I/O (procs_blocked).",
    )
    .push(Labels::none(), snap.cpu.blocked);
}

fn memory(snap: &Snapshot, f: &mut Families) {
    let m = &snap.memory;
    if m.total_kb == 0 {
        // No meminfo read yet: zeros would read as "no memory", not "unknown".
        return;
    }
    f.gauge("memory_total", bytes(), "Usable RAM (MemTotal).")
        .push(Labels::none(), m.total_kb.saturating_mul(KB));
    f.gauge(
        "memory_available",
        bytes(),
        "Memory available for new work without swapping (MemAvailable).",
    )
    .push(Labels::none(), m.available_kb.saturating_mul(KB));
    f.gauge(
        "memory_used",
        bytes(),
        "Memory in use: MemTotal minus MemAvailable (reclaimable cache counts as free).",
    )
    .push(
        Labels::none(),
        m.total_kb.saturating_sub(m.available_kb).saturating_mul(KB),
    );
    f.gauge("memory_cached", bytes(), "Page cache (Cached).")
        .push(Labels::none(), m.cached_kb.saturating_mul(KB));
    f.gauge(
        "memory_dirty",
        bytes(),
        "Dirty pages waiting for writeback.",
    )
    .push(Labels::none(), m.dirty_kb.saturating_mul(KB));
    f.gauge("swap_total", bytes(), "Swap space (SwapTotal).")
        .push(Labels::none(), m.swap_total_kb.saturating_mul(KB));
    f.gauge(
        "swap_used",
        bytes(),
        "Swap in use (SwapTotal minus SwapFree).",
    )
    .push(
        Labels::none(),
        m.swap_total_kb
            .saturating_sub(m.swap_free_kb)
            .saturating_mul(KB),
    );
}

fn pressure(snap: &Snapshot, f: &mut Families) {
    let resources = [
        ("cpu", snap.pressure.cpu),
        ("memory", snap.pressure.memory),
        ("io", snap.pressure.io),
    ];
    let line = |psi: &crate::snapshot::PsiResource, full: bool| -> Option<PsiLine> {
        if full { psi.full } else { Some(psi.some) }
    };
    for (full, avg_name, total_name, avg_help, total_help) in [
        (
            false,
            "pressure_some_avg10",
            "pressure_some_stall",
            "Share of wall time at least one task stalled on the resource, 10 s average (PSI some avg10).",
            "Time at least one task stalled on the resource (PSI some total).",
        ),
        (
            true,
            "pressure_full_avg10",
            "pressure_full_stall",
            "Share of wall time all non-idle tasks stalled on the resource, 10 s average (PSI full avg10).",
            "Time all non-idle tasks stalled on the resource (PSI full total).",
        ),
    ] {
        let lines: Vec<(&str, PsiLine)> = resources
            .iter()
            .filter_map(|(name, psi)| psi.as_ref().and_then(|p| line(p, full)).map(|l| (*name, l)))
            .collect();
        let avg = f.gauge(avg_name, ratio(), avg_help);
        for (resource, l) in &lines {
            avg.push(labels([("resource", resource)]), l.avg10 / 100.0);
        }
        let total = f.counter(total_name, seconds(), total_help);
        for (resource, l) in &lines {
            total.push(labels([("resource", resource)]), l.total_us as f64 / 1e6);
        }
    }
}

fn disks(snap: &Snapshot, f: &mut Families) {
    type Pick = fn(&crate::snapshot::DiskStat) -> Value;
    let figures: [(&'static str, Option<Unit>, &'static str, Pick); 6] = [
        (
            "disk_read",
            bytes_per_second(),
            "Bytes read per second over the last tick.",
            |d| d.read_bytes_per_sec.into(),
        ),
        (
            "disk_written",
            bytes_per_second(),
            "Bytes written per second over the last tick.",
            |d| d.write_bytes_per_sec.into(),
        ),
        (
            "disk_reads_per_second",
            None,
            "Read requests completed per second over the last tick.",
            |d| d.reads_per_sec.into(),
        ),
        (
            "disk_writes_per_second",
            None,
            "Write requests completed per second over the last tick.",
            |d| d.writes_per_sec.into(),
        ),
        (
            "disk_busy",
            ratio(),
            "Share of the last tick the device had I/O in flight.",
            |d| (d.util_pct / 100.0).into(),
        ),
        (
            "disk_await",
            seconds(),
            "Average time per completed request over the last tick.",
            |d| (d.await_ms / 1000.0).into(),
        ),
    ];
    for (name, unit, help, pick) in figures {
        let family = f.gauge(name, unit, help);
        for disk in unique_by(&snap.disks, |d| d.name.as_str()) {
            family.push(labels([("device", &disk.name)]), pick(disk));
        }
    }
    let depth = f.gauge(
        "disk_queue_depth",
        None,
        "Average requests in flight over the last tick.",
    );
    for disk in unique_by(&snap.disks, |d| d.name.as_str()) {
        depth.push(labels([("device", &disk.name)]), disk.queue_depth);
    }
}

fn nets(snap: &Snapshot, f: &mut Families) {
    type Pick = fn(&crate::snapshot::NetStat) -> f64;
    let figures: [(&'static str, Option<Unit>, &'static str, Pick); 3] = [
        (
            "network_receive",
            bytes_per_second(),
            "Bytes received per second over the last tick.",
            |n| n.rx_bytes_per_sec,
        ),
        (
            "network_transmit",
            bytes_per_second(),
            "Bytes sent per second over the last tick.",
            |n| n.tx_bytes_per_sec,
        ),
        (
            "network_errors_per_second",
            None,
            "Errors and drops, both directions, per second over the last tick.",
            |n| n.errors_per_sec,
        ),
    ];
    for (name, unit, help, pick) in figures {
        let family = f.gauge(name, unit, help);
        for net in unique_by(&snap.nets, |n| n.name.as_str()) {
            family.push(labels([("device", &net.name)]), pick(net));
        }
    }
}

fn hugepages_and_ksm(snap: &Snapshot, f: &mut Families) {
    let m = &snap.memory;
    // THP modes as a state set: one series per known mode, 1 on the one in force.
    if let Some(mode) = &m.thp_enabled {
        f.gauge(
            "transparent_hugepage_enabled",
            None,
            "Transparent huge page mode in force (1 on the series whose mode label it is).",
        )
        .push(labels([("mode", mode)]), 1u32);
    }
    if let Some(mode) = &m.thp_defrag {
        f.gauge(
            "transparent_hugepage_defrag",
            None,
            "Transparent huge page defrag mode in force (1 on the series whose mode label it is).",
        )
        .push(labels([("mode", mode)]), 1u32);
    }
    if m.total_kb > 0 {
        f.gauge(
            "anon_hugepages",
            bytes(),
            "Anonymous memory backed by transparent huge pages.",
        )
        .push(Labels::none(), m.anon_huge_kb.saturating_mul(KB));
    }
    if let Some(ksm) = &m.ksm {
        f.gauge(
            "ksm_run",
            None,
            "KSM state: 0 stopped, 1 running, 2 unmerging.",
        )
        .push(Labels::none(), ksm.run);
        f.gauge("ksm_pages_shared", None, "KSM shared pages in use.")
            .push(Labels::none(), ksm.pages_shared);
        f.gauge(
            "ksm_pages_sharing",
            None,
            "Pages deduplicated by KSM (saved pages).",
        )
        .push(Labels::none(), ksm.pages_sharing);
        f.counter(
            "ksm_full_scans",
            None,
            "Full KSM scans of mergeable memory.",
        )
        .push(Labels::none(), ksm.full_scans);
    }
}

// ---------------------------------------------------------------------------------------------
// Agents
// ---------------------------------------------------------------------------------------------

fn agent_labels(agent: &ContainerStat) -> Labels {
    let class = match agent.class {
        Some(AgentClass::Latency) => "latency",
        Some(AgentClass::Batch) => "batch",
        None => "",
    };
    let priority = agent.priority.map(|p| p.to_string()).unwrap_or_default();
    let short_id: String = agent.id.chars().take(12).collect();
    labels([
        ("name", &agent.name),
        ("id", &short_id),
        ("class", class),
        ("priority", &priority),
    ])
}

fn agent_families(snap: &Snapshot, f: &mut Families) {
    let c = &snap.containers;
    let docker_up = matches!(c.status, DockerStatus::Connected { .. });
    f.gauge(
        "docker_up",
        None,
        "1 when the Docker daemon answers, else 0.",
    )
    .push(Labels::none(), docker_up);
    if matches!(c.status, DockerStatus::Disabled) {
        return;
    }
    f.gauge("agents", None, "Containers that count as agents.")
        .push(Labels::none(), c.agents.len());
    f.gauge(
        "containers",
        None,
        "Containers Docker reports, agents or not.",
    )
    .push(Labels::none(), c.total_seen);

    let labelled: Vec<(Labels, &ContainerStat)> =
        c.agents.iter().map(|a| (agent_labels(a), a)).collect();
    let all: Vec<&(Labels, &ContainerStat)> = unique_by(&labelled, |(labels, _)| labels);
    type Pick = fn(&ContainerStat) -> Option<Value>;
    let figures: [(&'static str, Option<Unit>, bool, &'static str, Pick); 10] = [
        (
            "agent_up",
            None,
            false,
            "1 when the agent's container is running, else 0.",
            |a| Some((a.state == "running").into()),
        ),
        (
            "agent_cpu",
            ratio(),
            false,
            "CPU used over the last tick, as a share of one core (can exceed 1).",
            |a| Some((a.cpu_pct / 100.0).into()),
        ),
        (
            "agent_memory",
            bytes(),
            false,
            "Memory in use minus inactive file cache (as docker stats shows).",
            |a| Some(a.mem_bytes.into()),
        ),
        (
            "agent_memory_limit",
            bytes(),
            false,
            "Memory limit; absent when unlimited.",
            |a| a.mem_limit_bytes.map(Value::from),
        ),
        (
            "agent_cpu_limit_cores",
            None,
            false,
            "CPU quota in cores (quota / period); absent when unlimited.",
            |a| a.cpu_limit_cores.map(Value::from),
        ),
        (
            "agent_cpu_throttled_periods",
            None,
            true,
            "CFS periods in which the agent was throttled.",
            |a| Some(a.throttled_periods_total.into()),
        ),
        (
            "agent_pressure_cpu_some_avg10",
            ratio(),
            false,
            "Share of wall time the agent's tasks waited for CPU, 10 s average (cgroup PSI).",
            |a| a.pressure.cpu.map(|p| (p.some.avg10 / 100.0).into()),
        ),
        (
            "agent_cpu_weight",
            None,
            false,
            "cpu.weight (cgroup v2) or cpu.shares (v1) as read.",
            |a| a.cpu_weight.map(Value::from),
        ),
        (
            "agent_pids",
            None,
            false,
            "Tasks in the agent's cgroup.",
            |a| Some(a.pids.into()),
        ),
        (
            "agent_io_read",
            bytes_per_second(),
            false,
            "Block I/O bytes read per second over the last tick.",
            |a| Some(a.io_read_bytes_per_sec.into()),
        ),
    ];
    for (name, unit, counter, help, pick) in figures {
        let family = f.add(name, unit, counter, help);
        for (labels, agent) in &all {
            if let Some(value) = pick(agent) {
                family.push(labels.clone(), value);
            }
        }
    }
    let written = f.gauge(
        "agent_io_written",
        bytes_per_second(),
        "Block I/O bytes written per second over the last tick.",
    );
    for (labels, agent) in &all {
        written.push(labels.clone(), agent.io_write_bytes_per_sec);
    }
}

// ---------------------------------------------------------------------------------------------
// Engine
// ---------------------------------------------------------------------------------------------

const BOTTLENECK_KINDS: [BottleneckKind; 8] = [
    BottleneckKind::CpuSaturation,
    BottleneckKind::MemoryPressure,
    BottleneckKind::IoSaturation,
    BottleneckKind::ThrottledContainer,
    BottleneckKind::NoisyNeighbour,
    BottleneckKind::RunawayAgent,
    BottleneckKind::PredictedExhaustion,
    BottleneckKind::NumaImbalance,
];

/// The kind's name as the JSON API spells it. The match is exhaustive so that a new kind
/// fails to compile here until it is listed in `BOTTLENECK_KINDS` too.
pub fn kind_label(kind: BottleneckKind) -> &'static str {
    match kind {
        BottleneckKind::CpuSaturation => "cpu_saturation",
        BottleneckKind::MemoryPressure => "memory_pressure",
        BottleneckKind::IoSaturation => "io_saturation",
        BottleneckKind::ThrottledContainer => "throttled_container",
        BottleneckKind::NoisyNeighbour => "noisy_neighbour",
        BottleneckKind::RunawayAgent => "runaway_agent",
        BottleneckKind::PredictedExhaustion => "predicted_exhaustion",
        BottleneckKind::NumaImbalance => "numa_imbalance",
    }
}

const PROPOSAL_STATUSES: [&str; 7] = [
    "proposed",
    "applying",
    "applied",
    "rolled_back",
    "stale",
    "failed",
    "dismissed",
];

fn status_label(status: &ProposalStatus) -> &'static str {
    match status {
        ProposalStatus::Proposed => "proposed",
        ProposalStatus::Applying => "applying",
        ProposalStatus::Applied { .. } => "applied",
        ProposalStatus::RolledBack { .. } => "rolled_back",
        ProposalStatus::Stale { .. } => "stale",
        ProposalStatus::Failed { .. } => "failed",
        ProposalStatus::Dismissed => "dismissed",
    }
}

fn engine_families(snap: &Snapshot, f: &mut Families) {
    f.counter(
        "engine_ticks",
        None,
        "Snapshots the engine has published since it started.",
    )
    .push(Labels::none(), snap.seq);
    f.gauge("engine_interval", seconds(), "The sampling tick in force.")
        .push(Labels::none(), snap.interval_ms as f64 / 1000.0);
    f.gauge(
        "snapshot_timestamp",
        seconds(),
        "When the exported snapshot was taken (Unix time).",
    )
    .push(Labels::none(), snap.taken_at_ms as f64 / 1000.0);
    let mode = f.gauge(
        "engine_mode",
        None,
        "The engine's mode (1 on the series whose mode label it is, else 0).",
    );
    for m in [Mode::Conservative, Mode::Balanced, Mode::Aggressive] {
        mode.push(labels([("mode", m.label())]), snap.mode == m);
    }
    f.gauge(
        "engine_auto_fix",
        None,
        "1 when fixes the mode allows are applied without asking.",
    )
    .push(Labels::none(), snap.auto_fix);
    samplers(snap, f);

    let bottlenecks = f.gauge(
        "bottlenecks",
        None,
        "Bottlenecks currently raised, by kind.",
    );
    for kind in BOTTLENECK_KINDS {
        let n = snap.bottlenecks.iter().filter(|b| b.kind == kind).count();
        bottlenecks.push(labels([("kind", kind_label(kind))]), n);
    }
    let proposals = f.gauge("proposals", None, "Proposals the engine holds, by status.");
    for status in PROPOSAL_STATUSES {
        let n = snap
            .proposals
            .iter()
            .filter(|p| status_label(&p.status) == status)
            .count();
        proposals.push(labels([("status", status)]), n);
    }
    f.gauge(
        "change_batches_active",
        None,
        "Batches of changes applied to the host and not rolled back (from the journal).",
    )
    .push(Labels::none(), snap.changes.active.len());
}

fn samplers(snap: &Snapshot, f: &mut Families) {
    type Pick = fn(&crate::snapshot::SamplerHealth) -> Value;
    let figures: [(&'static str, Option<Unit>, bool, &'static str, Pick); 5] = [
        (
            "sampler_cpu",
            seconds(),
            true,
            "CPU time the sampler's rounds have cost (its own overhead).",
            |s| Value::Float(s.total_cpu_us as f64 / 1e6),
        ),
        (
            "sampler_rounds",
            None,
            true,
            "Successful rounds of the sampler.",
            |s| s.rounds.into(),
        ),
        (
            "sampler_last_round_duration",
            seconds(),
            false,
            "Wall time of the sampler's last round.",
            |s| Value::Float(s.last_duration_us as f64 / 1e6),
        ),
        (
            "sampler_last_round_cpu",
            seconds(),
            false,
            "CPU time of the sampler's last round.",
            |s| Value::Float(s.last_cpu_us as f64 / 1e6),
        ),
        (
            "sampler_consecutive_failures",
            None,
            false,
            "Failed or overrun rounds in a row (0 when healthy).",
            |s| s.failures.into(),
        ),
    ];
    for (name, unit, counter, help, pick) in figures {
        let family = f.add(name, unit, counter, help);
        for s in unique_by(&snap.samplers, |s| s.name.as_str()) {
            family.push(labels([("sampler", &s.name)]), pick(s));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Load balancer
// ---------------------------------------------------------------------------------------------

const HEALTH_STATES: [Health; 4] = [Health::Unknown, Health::Up, Health::Down, Health::Ejected];
const CIRCUIT_STATES: [CircuitState; 3] = [
    CircuitState::Closed,
    CircuitState::Open,
    CircuitState::HalfOpen,
];

/// The circuit state as the JSON API spells it (`half_open`).
fn circuit_label(state: CircuitState) -> &'static str {
    match state {
        CircuitState::Closed => "closed",
        CircuitState::Open => "open",
        CircuitState::HalfOpen => "half_open",
    }
}

fn balancer_families(snap: &Snapshot, f: &mut Families) {
    f.gauge(
        "balancer_enabled",
        None,
        "1 when the load balancer runs ([balancer] enabled = true), else 0.",
    )
    .push(Labels::none(), snap.balancer.is_some());
    let Some(b) = &snap.balancer else {
        return;
    };
    type Total = fn(&BalancerSnapshot) -> u64;
    let totals: [(&'static str, &'static str, Total); 5] = [
        (
            "balancer_requests",
            "Requests the proxy received since it started.",
            |b| b.requests_total,
        ),
        (
            "balancer_rejected",
            "Requests answered 503 (every backend full past the queue, or none up).",
            |b| b.rejected_total,
        ),
        (
            "balancer_retries",
            "Retries sent to another backend (idempotent requests only).",
            |b| b.retries_total,
        ),
        (
            "balancer_retries_over_budget",
            "Retries not sent because the retry budget was spent.",
            |b| b.retries_over_budget_total,
        ),
        (
            "balancer_bad_requests",
            "Requests answered 400, 408 or 431 before reaching a backend.",
            |b| b.bad_requests_total,
        ),
    ];
    for (name, help, pick) in totals {
        f.counter(name, None, help).push(Labels::none(), pick(b));
    }
    f.gauge(
        "balancer_queued",
        None,
        "Requests waiting for a backend with room right now.",
    )
    .push(Labels::none(), b.queued);
    f.gauge(
        "balancer_docker_skipped",
        None,
        "Containers labelled sutazai.backend.port that are not backends (the pane and GET /api/balancer say why).",
    )
    .push(Labels::none(), b.docker_skipped.len() as u64);
    let panics = f.counter(
        "balancer_pool_panic_choices",
        None,
        "Backends chosen although ejected or with an open circuit, because every backend of the pool was (panic mode).",
    );
    for pool in unique_by(&b.pools, |pool| &pool.name) {
        panics.push(labels([("pool", &pool.name)]), pool.panic_choices_total);
    }
    balancer_backend_families(b, f);
}

fn balancer_backend_families(b: &BalancerSnapshot, f: &mut Families) {
    let labelled: Vec<(Labels, &BackendSnapshot)> = b
        .pools
        .iter()
        .flat_map(|pool| {
            pool.backends
                .iter()
                .map(move |x| (labels([("pool", &pool.name), ("backend", &x.id)]), x))
        })
        .collect();
    let all: Vec<&(Labels, &BackendSnapshot)> = unique_by(&labelled, |(labels, _)| labels);
    type Pick = fn(&BackendSnapshot) -> Option<Value>;
    let figures: [(&'static str, Option<Unit>, bool, &'static str, Pick); 11] = [
        (
            "balancer_backend_requests",
            None,
            true,
            "Requests sent to the backend since it joined.",
            |x| Some(x.requests_total.into()),
        ),
        (
            "balancer_backend_errors",
            None,
            true,
            "5xx answers, connect failures and timeouts of the backend.",
            |x| Some(x.errors_total.into()),
        ),
        (
            "balancer_backend_in_flight",
            None,
            false,
            "Requests the backend is serving right now.",
            |x| Some(x.in_flight.into()),
        ),
        (
            "balancer_backend_max_connections",
            None,
            false,
            "Requests the backend may serve at once (more wait in the queue).",
            |x| Some(x.max_connections.into()),
        ),
        (
            "balancer_backend_weight",
            None,
            false,
            "The backend's weight for the weighted algorithms.",
            |x| Some(x.weight.into()),
        ),
        (
            "balancer_backend_latency_p50",
            seconds(),
            false,
            "Median latency of the backend's requests over the last tick (absent without any).",
            |x| x.latency_p50_ms.map(|ms| Value::Float(ms / 1000.0)),
        ),
        (
            "balancer_backend_latency_p99",
            seconds(),
            false,
            "99th percentile latency of the backend's requests over the last tick.",
            |x| x.latency_p99_ms.map(|ms| Value::Float(ms / 1000.0)),
        ),
        (
            "balancer_backend_ewma",
            seconds(),
            false,
            "The peak-EWMA latency estimate the predictive algorithm ranks backends by.",
            |x| Some(Value::Float(x.ewma_ms / 1000.0)),
        ),
        (
            "balancer_backend_ejections",
            None,
            true,
            "Times the backend was ejected as an outlier.",
            |x| Some(x.ejections.into()),
        ),
        (
            "balancer_backend_ejected_remaining",
            seconds(),
            false,
            "Seconds until an ejected backend comes back (absent while it is in).",
            |x| x.ejected_for_secs.map(Value::from),
        ),
        (
            "balancer_backend_draining",
            None,
            false,
            "1 while the backend drains (set through the API): no new requests.",
            |x| Some(u64::from(x.draining).into()),
        ),
    ];
    for (name, unit, counter, help, pick) in figures {
        let family = f.add(name, unit, counter, help);
        for (labels, backend) in &all {
            if let Some(value) = pick(backend) {
                family.push(labels.clone(), value);
            }
        }
    }
    let health = f.gauge(
        "balancer_backend_health",
        None,
        "The backend's health (1 on the series whose state label it is, else 0).",
    );
    for (labels, backend) in &all {
        for state in HEALTH_STATES {
            health.push(with_state(labels, state.name()), backend.health == state);
        }
    }
    let circuit = f.gauge(
        "balancer_backend_circuit",
        None,
        "The backend's circuit breaker (1 on the series whose state label it is, else 0).",
    );
    for (labels, backend) in &all {
        for state in CIRCUIT_STATES {
            circuit.push(
                with_state(labels, circuit_label(state)),
                backend.circuit == state,
            );
        }
    }
}

/// `labels` plus `state="..."`, for one-hot state families.
fn with_state(labels: &Labels, state: &str) -> Labels {
    Labels(
        labels
            .0
            .iter()
            .cloned()
            .chain(std::iter::once(("state", LabelValue(state.to_string()))))
            .collect(),
    )
}

fn alert_families(f: &mut Families) {
    let counts = crate::alerts::counts();
    f.counter(
        "alerts_sent",
        None,
        "Bottleneck alerts the webhook receiver accepted.",
    )
    .push(Labels::none(), counts.sent);
    f.counter(
        "alerts_failed",
        None,
        "Bottleneck alerts given up on after every retry failed.",
    )
    .push(Labels::none(), counts.failed);
    f.counter(
        "alerts_dropped",
        None,
        "Bottleneck alerts dropped because the queue was full (oldest first).",
    )
    .push(Labels::none(), counts.dropped);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{ContainerStat, CpuTimes, DiskStat, PsiResource, SamplerHealth};

    fn odd_snapshot() -> Snapshot {
        let mut snap = Snapshot {
            seq: 3,
            ..Snapshot::default()
        };
        snap.memory.total_kb = 1024;
        snap.memory.available_kb = 4096; // more available than total: used saturates to 0
        snap.cpu.load1 = f32::NAN;
        snap.cpu.load5 = f32::INFINITY;
        snap.cpu.per_cpu = vec![
            (
                0,
                CpuTimes {
                    idle: f32::NAN,
                    user: 1.0,
                    ..CpuTimes::default()
                },
            ),
            (
                0,
                CpuTimes {
                    idle: 50.0,
                    user: 50.0,
                    ..CpuTimes::default()
                },
            ),
            (1, CpuTimes::default()),
        ];
        snap.pressure.cpu = Some(PsiResource {
            some: PsiLine {
                avg10: f32::NAN,
                total_us: 5_000_000,
                ..PsiLine::default()
            },
            full: None,
        });
        snap.disks = vec![DiskStat {
            name: "sd\"a\\\nb".into(),
            read_bytes_per_sec: f64::NEG_INFINITY,
            ..DiskStat::default()
        }];
        let odd = ContainerStat {
            id: "short".into(),
            name: "we\"ird\nname\\".into(),
            state: "exited".into(),
            cpu_pct: f32::NAN,
            mem_bytes: u64::MAX,
            ..ContainerStat::default()
        };
        snap.containers.agents = vec![odd.clone(), odd];
        snap.samplers = vec![SamplerHealth {
            name: "cpu".into(),
            total_cpu_us: u64::MAX,
            rounds: u64::MAX,
            ..SamplerHealth::default()
        }];
        snap
    }

    #[test]
    fn odd_values_are_left_out_and_labels_escaped() {
        let text = render(&odd_snapshot());
        assert!(text.ends_with("# EOF\n"), "{text}");
        for bad in ["NaN", "inf", "Inf"] {
            assert!(!text.contains(bad), "{bad} leaked:\n{text}");
        }
        // NaN load1 and infinite load5 are skipped; load15 (0) stays.
        assert!(!text.contains("sutazai_load1 "), "{text}");
        assert!(!text.contains("sutazai_load5 "), "{text}");
        assert!(text.contains("sutazai_load15 0.0\n"), "{text}");
        // Used memory saturates at 0 instead of wrapping.
        assert!(text.contains("sutazai_memory_used_bytes 0\n"), "{text}");
        // CPU 0 twice: one series (the first usable); CPU 1 has no data yet: none.
        assert_eq!(text.matches("sutazai_cpu_busy_ratio{").count(), 1, "{text}");
        assert!(
            text.contains("sutazai_cpu_busy_ratio{cpu=\"0\"} 0.5\n"),
            "{text}"
        );
        // PSI avg10 NaN skipped; the stall total is kept.
        assert!(
            !text.contains("sutazai_pressure_some_avg10_ratio{"),
            "{text}"
        );
        assert!(
            text.contains("sutazai_pressure_some_stall_seconds_total{resource=\"cpu\"} 5.0\n"),
            "{text}"
        );
        // Escaped label values, one series for the two identical agents.
        assert!(text.contains("name=\"we\\\"ird\\nname\\\\\""), "{text}");
        assert!(text.contains("device=\"sd\\\"a\\\\\\nb\""), "{text}");
        assert_eq!(text.matches("sutazai_agent_up{").count(), 1, "{text}");
        assert!(text.contains(",class=\"\",priority=\"\"} 0\n"), "{text}");
        // Memory above i64::MAX is no figure; the sampler total stays a (huge) counter.
        assert!(!text.contains("sutazai_agent_memory_bytes{"), "{text}");
        assert!(!text.contains("sutazai_sampler_rounds_total{"), "{text}");
        assert!(
            text.contains("sutazai_sampler_cpu_seconds_total{sampler=\"cpu\"} "),
            "{text}"
        );
        // No line is a half-written sample.
        for line in text.lines() {
            assert!(
                line.starts_with('#') || line.rsplit_once(' ').is_some(),
                "{line}"
            );
        }
    }

    #[test]
    fn empty_snapshot_renders_without_unknown_figures() {
        let text = render(&Snapshot::default());
        assert!(text.ends_with("# EOF\n"));
        assert!(!text.contains("sutazai_memory_total_bytes"), "{text}");
        assert!(!text.contains("sutazai_host_cpu_busy_ratio"), "{text}");
        assert!(
            text.contains("sutazai_engine_mode{mode=\"conservative\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("sutazai_docker_up 0\n"), "{text}");
        // No balancer: says so, and no balancer figure is invented.
        assert!(text.contains("sutazai_balancer_enabled 0\n"), "{text}");
        assert!(!text.contains("sutazai_balancer_requests"), "{text}");
    }
}
