//! The report's content: a view of one snapshot shaped for readers (assets/report.schema.json
//! describes it). The HTML page renders this same view, so both say the same thing.

use serde::Serialize;

use super::iso8601;
use crate::model::Mode;
use crate::model::{
    AgentClass, CgroupLayout, ContainerStat, DockerStatus, HostHistory, Pressure, Ring, Snapshot,
};
use crate::model::{Bottleneck, BottleneckKind, Evidence, Subject};
use crate::model::{Intent, IntentTarget, Risk};
use crate::model::{Proposal, ProposalStatus, Verdict};

/// Bumped when a field changes meaning or goes away (adding fields keeps it).
pub const REPORT_FORMAT: u32 = 1;

#[derive(Debug, Serialize)]
pub struct Report<'a> {
    pub tool: &'static str,
    pub version: &'static str,
    pub format: u32,
    /// ISO 8601 UTC time of the snapshot.
    pub taken_at: String,
    pub host: HostSection,
    pub mode: Mode,
    pub auto_fix: bool,
    pub window: Window,
    pub agents: Vec<AgentProfile<'a>>,
    pub bottlenecks: Vec<BottleneckEntry<'a>>,
    pub proposals: Vec<ProposalEntry<'a>>,
    pub changes: ChangesSection<'a>,
    /// The agents' cache: its figures when it runs.
    pub cache: CacheSection<'a>,
    /// The serving parts of the product this build does not have yet.
    pub pools: PoolsSection<'a>,
    /// The load balancer: its figures per pool and backend when it runs.
    pub balancer: BalancerSection<'a>,
    /// The resource coordinator: its plan when it runs.
    pub coordinator: CoordinatorSection<'a>,
    /// Everything the engine knew at that tick, history rings included.
    pub snapshot: &'a Snapshot,
}

#[derive(Debug, Serialize)]
pub struct HostSection {
    pub hostname: String,
    pub kernel: String,
    pub uptime_secs: u64,
    pub is_root: bool,
    pub cgroup_layout: CgroupLayout,
    pub packages: u32,
    pub physical_cores: u32,
    pub logical_cpus: usize,
    pub online_cpus: usize,
    pub numa_nodes: Vec<NodeSummary>,
    pub isolated_cpus: Vec<u32>,
    /// "L3 Unified 32768 KiB x1", one line per (level, kind, size).
    pub caches: Vec<String>,
    pub memory_total_kb: u64,
    pub swap_total_kb: u64,
    /// "connected", "unreachable", "connecting" or "disabled", with the endpoint when known.
    pub docker: String,
    pub containers_seen: usize,
}

#[derive(Debug, Serialize)]
pub struct NodeSummary {
    pub id: u32,
    pub cpus: usize,
    pub mem_total_kb: u64,
}

/// The span the history rings cover. The rings hold one point per tick without times, so
/// the first point's time is derived: the snapshot time minus (points - 1) ticks.
#[derive(Debug, Serialize)]
pub struct Window {
    pub taken_at_ms: u64,
    pub interval_ms: u64,
    pub points: usize,
    pub first_sample_ms: Option<u64>,
    pub last_sample_ms: Option<u64>,
    pub first_sample_at: Option<String>,
    pub last_sample_at: Option<String>,
    pub span_secs: f64,
    pub series: Series,
}

/// The host series over the window, oldest first, one point per tick.
#[derive(Debug, Serialize)]
pub struct Series {
    pub cpu_busy_pct: Vec<f32>,
    pub mem_used_pct: Vec<f32>,
    pub psi_cpu_some: Vec<f32>,
    pub psi_memory_some: Vec<f32>,
    pub psi_io_some: Vec<f32>,
}

#[derive(Debug, Serialize)]
pub struct AgentProfile<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub image: &'a str,
    pub state: &'a str,
    pub class: Option<AgentClass>,
    pub priority: Option<i32>,
    pub cpu_pct: f32,
    pub cpu_history: Vec<f32>,
    pub cpu_mean_pct: Option<f32>,
    pub cpu_max_pct: Option<f32>,
    pub mem_bytes: u64,
    pub mem_limit_bytes: Option<u64>,
    pub mem_of_limit_pct: Option<f64>,
    pub cpu_limit_cores: Option<f64>,
    pub throttled_periods_delta: u64,
    pub throttled_periods_total: u64,
    pub cpuset_cpus: &'a str,
    pub cpuset_mems: &'a str,
    pub cpu_weight: Option<u64>,
    pub pressure: &'a Pressure,
}

#[derive(Debug, Serialize)]
pub struct BottleneckEntry<'a> {
    pub kind: BottleneckKind,
    pub subject: String,
    pub since_seq: u64,
    pub evidence: &'a [Evidence],
}

#[derive(Debug, Serialize)]
pub struct ProposalEntry<'a> {
    pub id: u64,
    pub strategy: &'a str,
    pub summary: &'a str,
    pub risk: Risk,
    pub bottleneck: BottleneckKind,
    pub subject: String,
    pub status: &'static str,
    /// The batch, or why it went stale or failed.
    pub status_detail: Option<String>,
    pub changes: Vec<ChangeLine>,
    pub outcome: Outcome,
}

#[derive(Debug, Serialize)]
pub struct ChangeLine {
    pub target: String,
    pub knob: String,
    pub before: String,
    pub after: String,
}

/// Before and after figures of a proposal's validation (lower is better for all).
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub metric: String,
    pub baseline_readings: usize,
    pub baseline_mean: Option<f64>,
    pub window_readings: usize,
    pub window_mean: Option<f64>,
    pub applied_at: Option<String>,
    pub verdict: Option<&'static str>,
    pub verdict_text: Option<String>,
    pub guards: Vec<GuardLine>,
}

#[derive(Debug, Serialize)]
pub struct GuardLine {
    pub figure: String,
    pub baseline_mean: Option<f64>,
    pub window_mean: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct ChangesSection<'a> {
    pub state_dir: &'a str,
    pub journal_found: bool,
    pub active: Vec<BatchLine<'a>>,
    pub problems: &'a [String],
}

#[derive(Debug, Serialize)]
pub struct BatchLine<'a> {
    pub batch: u64,
    pub label: &'a str,
    pub at: String,
    pub applied: usize,
    pub total: usize,
    pub interrupted: bool,
}

/// The memory pools as the report shows them: "running" with the store's figures, or
/// "not served" and why.
#[derive(Debug, Serialize)]
pub struct PoolsSection<'a> {
    pub status: &'static str,
    pub note: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<&'a sutazai_pools::PoolsSnapshot>,
}

/// The cache as the report shows it: "running" with the engine's own figures, or "off".
#[derive(Debug, Serialize)]
pub struct CacheSection<'a> {
    pub status: &'static str,
    pub note: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<&'a sutazai_cache::CacheSnapshot>,
}

fn cache_section(snap: &Snapshot) -> CacheSection<'_> {
    match &snap.cache {
        Some(stats) => CacheSection {
            status: "running",
            note: "the engine's cache for agents: per level, per agent and in total",
            stats: Some(stats),
        },
        None => CacheSection {
            status: "off",
            note: "the cache is disabled ([cache] enabled = false) or this face has no engine",
            stats: None,
        },
    }
}

/// The load balancer as the report shows it: "running" with the engine's own figures, or
/// "off" (never invented numbers).
#[derive(Debug, Serialize)]
pub struct BalancerSection<'a> {
    pub status: &'static str,
    pub note: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<&'a sutazai_balancer::BalancerSnapshot>,
}

fn balancer_section(snap: &Snapshot) -> BalancerSection<'_> {
    match &snap.balancer {
        Some(stats) => BalancerSection {
            status: "running",
            note: "the engine's proxy in front of agent replicas: totals, and per pool each \
                   backend's health, circuit, load, latency and ejections",
            stats: Some(stats),
        },
        None => BalancerSection {
            status: "off",
            note: "the load balancer is disabled ([balancer] enabled = false) or this face has \
                   no engine",
            stats: None,
        },
    }
}

/// The coordinator as the report shows it: "running" with the plan (per agent: declared,
/// allocated, state and reason, in place), or "off".
#[derive(Debug, Serialize)]
pub struct CoordinatorSection<'a> {
    pub status: &'static str,
    pub note: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<&'a crate::model::CoordinatorSnapshot>,
}

fn coordinator_section(snap: &Snapshot) -> CoordinatorSection<'_> {
    match &snap.coordinator {
        Some(plan) => CoordinatorSection {
            status: "running",
            note: "the reserved CPUs, the shared pool, and per agent what it declared, what it \
                   was allocated, its state with the reason, and whether the host shows it",
            plan: Some(plan),
        },
        None => CoordinatorSection {
            status: "off",
            note: "the coordinator is disabled ([coordinator] enabled = false) or this face has \
                   no engine",
            plan: None,
        },
    }
}

fn pools_section(snap: &Snapshot) -> PoolsSection<'_> {
    match &snap.pools.serving {
        Some(store) => PoolsSection {
            status: "running",
            note: "per pool its space, objects, physical and logical bytes (deduplication), \
                   compressed objects, evictions and refusals; per agent what it holds and \
                   what sharing saves it"
                .into(),
            stats: Some(store),
        },
        None => PoolsSection {
            status: "not served",
            note: snap
                .pools
                .not_serving
                .clone()
                .unwrap_or_else(|| "this face has no engine serving the pools".into()),
            stats: None,
        },
    }
}

impl<'a> Report<'a> {
    pub fn new(snap: &'a Snapshot) -> Report<'a> {
        Report {
            tool: "sutazai-top",
            version: env!("CARGO_PKG_VERSION"),
            format: REPORT_FORMAT,
            taken_at: iso8601(snap.taken_at_ms / 1000),
            host: host_section(snap),
            mode: snap.mode,
            auto_fix: snap.auto_fix,
            window: window(snap.taken_at_ms, snap.interval_ms, &snap.history),
            agents: snap.containers.agents.iter().map(agent_profile).collect(),
            bottlenecks: snap.bottlenecks.iter().map(bottleneck_entry).collect(),
            proposals: snap.proposals.iter().map(proposal_entry).collect(),
            changes: changes_section(snap),
            cache: cache_section(snap),
            pools: pools_section(snap),
            balancer: balancer_section(snap),
            coordinator: coordinator_section(snap),
            snapshot: snap,
        }
    }
}

fn host_section(snap: &Snapshot) -> HostSection {
    let topo = &snap.topology;
    let mut caches: Vec<String> = Vec::new();
    for cache in &topo.caches {
        let line = format!("L{} {} {} KiB", cache.level, cache.kind, cache.size_kb);
        caches.push(line);
    }
    caches.sort();
    let caches = count_repeats(caches);
    HostSection {
        hostname: snap.host.hostname.clone(),
        kernel: snap.host.kernel.clone(),
        uptime_secs: snap.host.uptime_secs,
        is_root: snap.host.is_root,
        cgroup_layout: snap.host.cgroup_layout,
        packages: topo.packages,
        physical_cores: topo.physical_cores,
        logical_cpus: topo.cpus.len(),
        online_cpus: topo.cpus.iter().filter(|c| c.online).count(),
        numa_nodes: topo
            .nodes
            .iter()
            .map(|n| NodeSummary {
                id: n.id,
                cpus: n.cpus.len(),
                mem_total_kb: n.mem_total_kb,
            })
            .collect(),
        isolated_cpus: topo.isolated.clone(),
        caches,
        memory_total_kb: snap.memory.total_kb,
        swap_total_kb: snap.memory.swap_total_kb,
        docker: docker_line(&snap.containers.status),
        containers_seen: snap.containers.total_seen,
    }
}

/// Sorted lines, each repeat run folded into "line xN".
fn count_repeats(sorted: Vec<String>) -> Vec<String> {
    let mut out: Vec<(String, usize)> = Vec::new();
    for line in sorted {
        match out.last_mut() {
            Some((last, n)) if *last == line => *n += 1,
            _ => out.push((line, 1)),
        }
    }
    out.into_iter().map(|(l, n)| format!("{l} x{n}")).collect()
}

fn docker_line(status: &DockerStatus) -> String {
    match status {
        DockerStatus::Disabled => "disabled".into(),
        DockerStatus::Connecting => "connecting".into(),
        DockerStatus::Connected { endpoint, version } => {
            format!("connected: Docker {version} at {endpoint}")
        }
        DockerStatus::Unreachable {
            endpoint, error, ..
        } => format!("unreachable at {endpoint}: {error}"),
    }
}

fn ring(r: &Ring) -> Vec<f32> {
    r.points.iter().copied().collect()
}

fn window(taken_at_ms: u64, interval_ms: u64, history: &HostHistory) -> Window {
    // The CPU ring skips the first tick (no interval yet); memory has a point every tick.
    let points = history
        .cpu_busy_pct
        .points
        .len()
        .max(history.mem_used_pct.points.len());
    let span_ms = interval_ms.saturating_mul(points.saturating_sub(1) as u64);
    let first = (points > 0).then(|| taken_at_ms.saturating_sub(span_ms));
    let last = (points > 0).then_some(taken_at_ms);
    Window {
        taken_at_ms,
        interval_ms,
        points,
        first_sample_ms: first,
        last_sample_ms: last,
        first_sample_at: first.map(|ms| iso8601(ms / 1000)),
        last_sample_at: last.map(|ms| iso8601(ms / 1000)),
        span_secs: span_ms as f64 / 1000.0,
        series: Series {
            cpu_busy_pct: ring(&history.cpu_busy_pct),
            mem_used_pct: ring(&history.mem_used_pct),
            psi_cpu_some: ring(&history.psi_cpu_some),
            psi_memory_some: ring(&history.psi_memory_some),
            psi_io_some: ring(&history.psi_io_some),
        },
    }
}

fn agent_profile(c: &ContainerStat) -> AgentProfile<'_> {
    let history: Vec<f32> = c.cpu_history.iter().copied().collect();
    let mean = (!history.is_empty()).then(|| history.iter().sum::<f32>() / history.len() as f32);
    let max = history.iter().copied().reduce(f32::max);
    AgentProfile {
        id: &c.id,
        name: &c.name,
        image: &c.image,
        state: &c.state,
        class: c.class,
        priority: c.priority,
        cpu_pct: c.cpu_pct,
        cpu_history: history,
        cpu_mean_pct: mean,
        cpu_max_pct: max,
        mem_bytes: c.mem_bytes,
        mem_limit_bytes: c.mem_limit_bytes,
        mem_of_limit_pct: c
            .mem_limit_bytes
            .filter(|&limit| limit > 0)
            .map(|limit| c.mem_bytes as f64 * 100.0 / limit as f64),
        cpu_limit_cores: c.cpu_limit_cores,
        throttled_periods_delta: c.throttled_periods_delta,
        throttled_periods_total: c.throttled_periods_total,
        cpuset_cpus: &c.cpuset_cpus,
        cpuset_mems: &c.cpuset_mems,
        cpu_weight: c.cpu_weight,
        pressure: &c.pressure,
    }
}

/// "host", "container agent-001", "process 4242 (python3)".
pub fn subject_label(subject: &Subject) -> String {
    match subject {
        Subject::Host => "host".into(),
        Subject::Container { name, .. } => format!("container {name}"),
        Subject::Process { id, comm } => format!("process {} ({comm})", id.pid),
    }
}

fn bottleneck_entry(b: &Bottleneck) -> BottleneckEntry<'_> {
    BottleneckEntry {
        kind: b.kind,
        subject: subject_label(&b.subject),
        since_seq: b.since_seq,
        evidence: &b.evidence,
    }
}

fn status_detail(status: &ProposalStatus) -> Option<String> {
    match status {
        ProposalStatus::Applied { batch } | ProposalStatus::RolledBack { batch } => {
            Some(format!("batch {batch}"))
        }
        ProposalStatus::Stale { why } | ProposalStatus::Failed { why } => Some(why.clone()),
        _ => None,
    }
}

fn target_label(target: &IntentTarget) -> String {
    match target {
        IntentTarget::ContainerProcess { name, pid, .. } => {
            format!("container {name} (pid {pid})")
        }
        IntentTarget::Container { name, .. } => format!("container {name}"),
        IntentTarget::ProcessAgent { name, .. } => format!("agent {name}"),
        IntentTarget::Cgroup { path } => format!("cgroup {}", path.display()),
        IntentTarget::HostFile { path } => path.clone(),
    }
}

/// The knob's name as serde spells it ("container_cpu_shares"), with its file when it has one.
fn knob_label(intent: &Intent) -> String {
    let value = serde_json::to_value(&intent.knob).unwrap_or_default();
    let name = value["knob"].as_str().unwrap_or("knob").to_string();
    match value["path"].as_str().or(value["file"].as_str()) {
        Some(file) => format!("{name} {file}"),
        None => name,
    }
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

fn verdict_key(verdict: &Verdict) -> &'static str {
    match verdict {
        Verdict::Helped { .. } => "helped",
        Verdict::DidNotHelp { .. } => "did_not_help",
        Verdict::Regressed { .. } => "regressed",
        Verdict::Unmeasurable => "unmeasurable",
    }
}

fn outcome(p: &Proposal) -> Outcome {
    let v = &p.validation;
    Outcome {
        metric: p.fix.metric.clone(),
        baseline_readings: v.before.len(),
        baseline_mean: mean(&v.before),
        window_readings: v.after.len(),
        window_mean: mean(&v.after),
        applied_at: v.applied_at_ms.map(|ms| iso8601(ms / 1000)),
        verdict: v.verdict.as_ref().map(verdict_key),
        verdict_text: v.verdict.as_ref().map(Verdict::describe),
        guards: v
            .guards
            .iter()
            .map(|g| GuardLine {
                figure: g.figure.clone(),
                baseline_mean: mean(&g.before),
                window_mean: mean(&g.after),
            })
            .collect(),
    }
}

fn proposal_entry(p: &Proposal) -> ProposalEntry<'_> {
    ProposalEntry {
        id: p.id,
        strategy: &p.fix.strategy,
        summary: &p.fix.summary,
        risk: p.fix.risk,
        bottleneck: p.bottleneck.kind,
        subject: subject_label(&p.bottleneck.subject),
        status: p.status.label(),
        status_detail: status_detail(&p.status),
        changes: p
            .fix
            .intents
            .iter()
            .map(|i| ChangeLine {
                target: target_label(&i.target),
                knob: knob_label(i),
                before: i.expected_before.clone(),
                after: i.after.clone(),
            })
            .collect(),
        outcome: outcome(p),
    }
}

fn changes_section(snap: &Snapshot) -> ChangesSection<'_> {
    ChangesSection {
        state_dir: &snap.changes.state_dir,
        journal_found: snap.changes.journal_found,
        active: snap
            .changes
            .active
            .iter()
            .map(|b| BatchLine {
                batch: b.batch,
                label: &b.label,
                at: iso8601(b.at_ms / 1000),
                applied: b.applied,
                total: b.total,
                interrupted: b.interrupted,
            })
            .collect(),
        problems: &snap.changes.problems,
    }
}
